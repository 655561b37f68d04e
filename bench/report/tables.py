"""The analysis tables: throughput, step time, model families, VGG vs ResNet, scaling, best batch size,
accuracy, failures, provenance and --compare, each a pandas DataFrame.

A configuration is a `config_key` (bench.config): when several ok rows share one, the most
recent is used, unless it is one of a --repeats group with at least 3 ok runs: then the
configuration's figures are the median of those runs' figures, with a between-run 95% CI
(`latest_ok`, the one place that choice is made). Tables never merge two configurations: rows are grouped by every key field
the table does not lay out. A key field that varies across the data set is named in the title
of each model x batch table; a table that lists rows gains a column for any key field needed
to tell apart two rows that would otherwise look alike.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

import models
from bench.config.key import TOPOLOGY_KEY, config_key
from bench.config.schema import KEY_FIELDS
from bench.errors import Status
from bench.measure.memory import fits
from bench.measure.stats import MIN_RUNS_FOR_CI, Comparison, Side, across_runs, compare_runs, olympic_mean

KEY_COLUMNS = [*KEY_FIELDS, *TOPOLOGY_KEY]  # the fields of a config_key, in its order
# what a table's title spells out, in the order tables are listed
TITLE_FIELDS = ["mode", "strategy", "backend", "replicas", "workers", "data", "precision", "xla", "width", "image_size", "num_classes"]
# scaling compares replica counts, which the strategy, the workers and cpu_replicas set
TOPOLOGY_FIELDS = {"strategy", "replicas", "workers", "cpu_replicas"}
HARDWARE = ["hostname", "cpu_model", "gpu_names"]
VERSIONS = ["python_version", "tf_version", "keras_version", "horovod_version", "jax_version", "jaxlib_version"]


# ---- configurations -----------------------------------------------------------------------
def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a config_key column (load_results adds one; a hand-made frame may not)."""
    if "config_key" in df.columns:
        return df
    return df.assign(config_key=[config_key(r) for r in df.to_dict("records")])


def key_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The key fields of each row as columns, as config_key normalises them (None if missing)."""
    return pd.DataFrame(list(_keyed(df)["config_key"]), columns=KEY_COLUMNS, index=df.index, dtype=object)


def _latest_ok_rows(df: pd.DataFrame, diagnostics: bool = False) -> pd.DataFrame:
    ok = _keyed(df)[df["status"] == Status.OK].sort_values("timestamp_utc", kind="stable")
    if not diagnostics and "gradient_sync" in ok:
        ok = ok[ok["gradient_sync"].astype(object).ne(False)]
    return ok.drop_duplicates(subset="config_key", keep="last")


def latest_ok(df: pd.DataFrame, diagnostics: bool = False) -> pd.DataFrame:
    """One row per configuration (config_key): the most recent ok row; where that row is one
    of a --repeats group with at least MIN_RUNS_FOR_CI ok runs, its figures (ACROSS_RUNS) are
    the median over the group's ok runs, their CIs the between-run 95% CI of that median.
    Every row gains `runs` and `runs_failed` (how many repeats its figures rest on, and how
    many of its group did not end ok), `cv_across_runs` and `within_ci95_rel` (the runs'
    median relative half-width of their own CI of the median images/sec). Diagnostic runs
    (--no-gradient-sync) are no training results: left out unless `diagnostics`."""
    latest = _latest_ok_rows(df, diagnostics)
    return _across_runs(latest, repeat_groups(df, latest))


# ---- repeats (--repeats N: one configuration in N fresh processes) ------------------------
# the figures a group's median stands for, each with the columns of its 95% CI (None: no CI)
ACROSS_RUNS = {"images_per_sec_median": ("images_per_sec_median_ci95_low", "images_per_sec_median_ci95_high"),
               "images_per_sec": ("images_per_sec_ci95_low", "images_per_sec_ci95_high"),
               "step_time_median_s": ("step_time_median_ci95_low_s", "step_time_median_ci95_high_s"),
               "step_time_mean_s": ("step_time_ci95_low_s", "step_time_ci95_high_s"),
               **{c: None for c in ("images_per_sec_per_replica", "tflops", "latency_p50_ms", "latency_p90_ms",
                                    "latency_p95_ms", "latency_p99_ms", "latency_per_image_ms")}}


def _group_ids(df: pd.DataFrame) -> pd.Series:
    """Each row's repeat group as text ("" for a plain run, or a row older than schema 9)."""
    if "repeat_group" not in df:
        return pd.Series("", index=df.index, dtype=object)
    g = df["repeat_group"].astype(object)
    return g.where(g.notna(), "").astype(str)


def repeat_groups(df: pd.DataFrame, latest: pd.DataFrame | None = None) -> dict[Any, pd.DataFrame]:
    """For each configuration whose latest ok row (`latest`: one per config_key) is a repeat,
    every row of its group (any status), keyed by that latest row's index."""
    latest = _latest_ok_rows(df) if latest is None else latest
    keyed = _keyed(df)
    ids = _group_ids(keyed)
    out = {}
    for idx, gid in _group_ids(latest).items():
        if gid:
            key = latest.at[idx, "config_key"]
            out[idx] = keyed[(ids == gid) & keyed["config_key"].map(lambda k: k == key)]
    return out


def _rel_halfwidth(median: Any, low: Any, high: Any) -> float:
    m, lo, hi = (pd.to_numeric(pd.Series([median, low, high]), errors="coerce")).tolist()
    return (hi - lo) / 2.0 / m if np.isfinite([m, lo, hi]).all() and m > 0 else np.nan


def _across_runs(latest: pd.DataFrame, groups: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    out = latest.copy()
    out["runs"], out["runs_failed"], out["cv_across_runs"] = 1, 0, np.nan
    out["within_ci95_rel"] = [_rel_halfwidth(r.get("images_per_sec_median"), r.get("images_per_sec_median_ci95_low"),
                                             r.get("images_per_sec_median_ci95_high")) for _, r in latest.iterrows()]
    for idx, members in groups.items():
        ok = members[members["status"] == Status.OK]
        out.at[idx, "runs"], out.at[idx, "runs_failed"] = len(ok), len(members) - len(ok)
        if len(ok) < MIN_RUNS_FOR_CI:
            continue
        out.at[idx, "within_ci95_rel"] = float(np.nanmedian([
            _rel_halfwidth(r.get("images_per_sec_median"), r.get("images_per_sec_median_ci95_low"),
                           r.get("images_per_sec_median_ci95_high")) for _, r in ok.iterrows()] or [np.nan]))
        for col, ci_cols in ACROSS_RUNS.items():
            if col not in ok:
                continue
            a = across_runs(pd.to_numeric(ok[col], errors="coerce").tolist())
            out.at[idx, col] = a.median
            if ci_cols is not None:
                out.at[idx, ci_cols[0]], out.at[idx, ci_cols[1]] = a.low, a.high
            if col == "images_per_sec_median":
                out.at[idx, "cv_across_runs"] = a.cv
    return out


def across_runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration run with --repeats (its latest group): the runs ok and failed, the
    median of the runs' median images/sec with its between-run 95% CI and the coefficient of
    variation across runs, beside the relative half-widths of the between-run CI and of a
    single run's own CI (the runs' median): where the first is wider, one run's CI understated
    the uncertainty."""
    latest = _latest_ok_rows(df)
    rows = []
    for idx, members in repeat_groups(df, latest).items():
        r = latest.loc[idx]
        ok = members[members["status"] == Status.OK]
        a = across_runs(pd.to_numeric(ok["images_per_sec_median"], errors="coerce").tolist())
        enough = a.runs >= MIN_RUNS_FOR_CI
        within = np.nanmedian([_rel_halfwidth(x.get("images_per_sec_median"), x.get("images_per_sec_median_ci95_low"),
                                              x.get("images_per_sec_median_ci95_high"))
                               for _, x in ok.iterrows()] or [np.nan])
        rows.append({"model": r["model"], "batch_size": r["batch_size"], "strategy": r["strategy"],
                     "replicas": r["replicas"], "backend": r["backend"], "mode": r["mode"],
                     "repeats": r.get("repeats"), "runs ok": a.runs, "runs failed": len(members) - len(ok),
                     "images/sec (median of runs)": a.median,
                     "between-run 95% CI": f"[{a.low:.1f}, {a.high:.1f}]" if enough else "n/a (< 3 runs)",
                     "CV %": 100.0 * a.cv,
                     "between-run ±%": 100.0 * (a.high - a.low) / 2.0 / a.median if enough else np.nan,
                     "within-run ±%": 100.0 * within, "_row": idx})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    idx = out.pop("_row")
    return _told_apart(out, latest.loc[idx], ["model", "batch_size", "strategy", "replicas", "backend", "mode"])


def time_to_train_table(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mode with --repeats and a target (MLPerf-style time to train), per configuration's
    latest group: how many runs reached the target, each run's time to it in run order, the
    olympic mean (MLPerf: the fastest and the slowest run dropped, a run that missed the
    target counting as the slowest; needs 3 runs) and the spread of the times that reached it."""
    latest = _latest_ok_rows(df)
    rows = []
    for idx, members in repeat_groups(df, latest).items():
        r = latest.loc[idx]
        if "target_accuracy" not in r or pd.isna(pd.to_numeric(r["target_accuracy"], errors="coerce")):
            continue
        ok = members[members["status"] == Status.OK].sort_values("repeat_index", kind="stable")
        times = [float(t) if str(hit) == "True" and pd.notna(t) else np.inf
                 for t, hit in zip(pd.to_numeric(ok["time_to_target_s"], errors="coerce"), ok["target_reached"])]
        reached = [t for t in times if np.isfinite(t)]
        spread = across_runs(reached)
        rows.append({"model": r["model"], "batch_size": r["batch_size"], "strategy": r["strategy"],
                     "replicas": r["replicas"], "data": r["data"], "target_accuracy": r["target_accuracy"],
                     "runs ok": len(ok), "runs failed": len(members) - len(ok), "reached": len(reached),
                     "time to target per run (s)": "; ".join(f"{t:.1f}" if np.isfinite(t) else "missed"
                                                             for t in times),
                     "olympic mean (s)": olympic_mean(times),
                     "fastest (s)": min(reached) if reached else np.nan,
                     "slowest (s)": max(reached) if reached else np.nan,
                     "CV %": 100.0 * spread.cv, "_row": idx})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    idx = out.pop("_row")
    return _told_apart(out, latest.loc[idx], ["model", "batch_size", "strategy", "replicas", "data"])


def latest_timed(df: pd.DataFrame) -> pd.DataFrame:
    """latest_ok, plus throughput runs whose loss went non-finite but that timed every step
    (status diverged, with images/sec): a measurement, flagged. For the throughput and step-time
    tables; everything else takes only ok rows."""
    keyed = _keyed(df)
    timed = keyed[(keyed["status"] == Status.DIVERGED) & keyed["images_per_sec_median"].notna()]
    both = pd.concat([latest_ok(df), timed]) if not timed.empty else latest_ok(df)
    both = both[both["gradient_sync"].astype(object).ne(False)] if "gradient_sync" in both else both
    return both.sort_values("timestamp_utc", kind="stable").drop_duplicates(subset="config_key", keep="last")


def row_words(r: Any) -> str:
    """A row in words, for a note that names it: model, batch size, strategy x replicas, run id."""
    def get(c: str) -> Any:
        v = r.get(c) if hasattr(r, "get") else None
        return "n/a" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v

    run = get("run_id")
    return (f"{get('model')} batch {get('batch_size')} {get('strategy')} ×{get('replicas')}"
            + (f" (run {run})" if run != "n/a" else ""))


def is_diverged(rows: pd.DataFrame) -> pd.Series:
    return rows["status"] == Status.DIVERGED


def varying(df: pd.DataFrame, shown: Iterable[str] = ()) -> list[str]:
    """Key fields, other than `shown`, that take more than one value across `df`'s rows."""
    keys = key_frame(df)
    return [f for f in KEY_COLUMNS if f not in set(shown) and len(set(keys[f])) > 1]


def _order(value: Any) -> tuple:
    """A sort key for a normalised key value: numbers, then text, then missing."""
    # plain sorting fails: None, and text beside numbers (a cell that did not parse), compare with nothing
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def groups(df: pd.DataFrame, exclude: Iterable[str], lead: Iterable[str] = TITLE_FIELDS
           ) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """(key values, rows) for each set of rows that share every key field but `exclude`,
    ordered by the `lead` fields first."""
    lead = [f for f in lead if f in KEY_COLUMNS]
    fields = [f for f in [*lead, *(k for k in KEY_COLUMNS if k not in lead)] if f not in set(exclude)]
    buckets: dict[tuple, list] = {}
    for label, values in zip(df.index, key_frame(df)[fields].itertuples(index=False, name=None)):
        buckets.setdefault(values, []).append(label)
    for values in sorted(buckets, key=lambda t: tuple(map(_order, t))):
        yield dict(zip(fields, values)), df.loc[buckets[values]]


def value_words(name: str, v: Any) -> str:
    """A key field's value in words, e.g. 'xla on', 'lr 0.01'."""
    if v is None:
        return f"{name} n/a"
    if isinstance(v, (bool, np.bool_)):
        return f"{name} {'on' if v else 'off'}"
    return f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}"


def title(values: dict[str, Any], extra: Iterable[str] = ()) -> str:
    """A table's title: its strategy, topology and setting, then the `extra` key fields."""
    v = {k: ("" if x is None else x) for k, x in values.items()}
    width = f"{v['width']:g}" if isinstance(v["width"], float) else v["width"]
    head = (f"{v['mode']}, {v['strategy']}, {v['backend']}, {v['replicas']} replica(s) on {v['workers']} worker(s), {v['data']}, "
            f"{v['precision']}{', xla' if v['xla'] is True else ''}, width {width}, "
            f"{v['image_size']}px, {v['num_classes']} classes")
    return head + "".join(f", {value_words(f, values[f])}" for f in extra)


def short_title(values: dict[str, Any], extra: Iterable[str] = ()) -> str:
    """A plot title that fits: strategy x replicas, data, precision, width, then `extra`."""
    width = f"{values['width']:g}" if isinstance(values["width"], float) else values["width"]
    head = (f"{values['mode']}: {values['strategy']} x{values['replicas']} {values['backend']}, {values['data']}, {values['precision']}"
            f"{' xla' if values['xla'] is True else ''}, w{width}")
    return head + "".join(f", {value_words(f, values[f])}" for f in extra)


def model_batch_groups(df: pd.DataFrame, short: bool = False) -> Iterator[tuple[str, pd.DataFrame]]:
    """(title, latest timed rows) per model x batch-size table: rows that differ only in model and
    per-replica batch size (diverged throughput runs included: see latest_timed)."""
    ok = latest_timed(df)
    extra = varying(ok, shown=["model", "batch_size", *TITLE_FIELDS])
    for values, g in groups(ok, exclude=["model", "batch_size"]):
        yield (short_title if short else title)(values, extra), g


def _telling_apart(ident: pd.DataFrame, keys: pd.DataFrame, shown: Iterable[str]) -> list[str]:
    """The key fields, other than `shown`, that differ between rows whose `ident` cells match:
    what a table must add so that no two of its configurations look alike."""
    alike: dict[tuple, list[int]] = {}
    for i, sig in enumerate(ident.astype(str).itertuples(index=False, name=None)):
        alike.setdefault(sig, []).append(i)
    clashes = [rows for rows in alike.values() if len(rows) > 1]
    hidden = [f for f in KEY_COLUMNS if f not in set(shown)]
    return [f for f in hidden if any(len({keys[f].iat[i] for i in rows}) > 1 for rows in clashes)]


def _told_apart(out: pd.DataFrame, rows: pd.DataFrame, ident: list[str], shown: Iterable[str] = ()
                ) -> pd.DataFrame:
    """`out` (one row per row of `rows`, in order), plus a column for each key field needed to
    tell apart rows that the `ident` columns alone would show as one configuration."""
    out = out.reset_index(drop=True)
    keys = key_frame(rows).reset_index(drop=True)
    extra = _telling_apart(out[ident], keys, [*out.columns, *shown])
    return pd.concat([out, keys[extra]], axis=1) if extra else out


# ---- tables -------------------------------------------------------------------------------
def run_medians(df: pd.DataFrame, latest: pd.DataFrame) -> dict[Any, tuple[float, ...]]:
    """For each row of `latest` (by label): the median images/sec of each run it rests on, oldest
    first. A row with a repeat_group (--repeats) rests on the ok rows of its configuration in
    that group (`repeat_groups`); a row without one on itself alone, as every table takes the
    latest row (an older row may predate a fix, and pooling it would blur the comparison)."""
    groups = repeat_groups(df, latest)
    out = {}
    for label, r in latest.iterrows():
        members = groups.get(label)
        if members is None:
            out[label] = (float(r["images_per_sec_median"]),)
            continue
        ok = members[members["status"] == Status.OK].sort_values("timestamp_utc", kind="stable")
        out[label] = tuple(ok["images_per_sec_median"].astype(float))
    return out


def side(r: pd.Series, runs: tuple[float, ...]) -> Side:
    """A row and its runs as bench.measure.stats compares them."""
    def get(c: str) -> float:
        v = r.get(c)
        return float(v) if v is not None and pd.notna(v) else np.nan

    steps = get("timed_steps")
    return Side(runs, step_mean_s=get("step_time_mean_s"), step_std_s=get("step_time_std_s"),
                timed_steps=int(steps) if np.isfinite(steps) else 0, global_batch=get("global_batch"),
                median_ci95=(get("images_per_sec_median_ci95_low"), get("images_per_sec_median_ci95_high")))


def throughput_comparison(a: pd.Series, b: pd.Series, runs: dict[Any, tuple[float, ...]]) -> Comparison:
    """Row a's images/sec against row b's (a / b), tested (bench.measure.stats.compare_runs);
    `runs` is run_medians' answer for the rows' frame."""
    return compare_runs(side(b, runs[b.name]), side(a, runs[a.name]))


SIGNIFICANCE = ["p_value", "test", "runs", "verdict"]


def p_text(p: float) -> str:
    """A p-value as reports print it: three decimals, or two significant digits below 0.001."""
    return "n/a" if not np.isfinite(p) else f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def significance_cells(c: Comparison) -> dict[str, Any]:
    """A comparison's p-value, test, run counts and verdict as table cells (SIGNIFICANCE)."""
    return dict(zip(SIGNIFICANCE, (c.p_value, c.test, f"{c.runs_old} vs {c.runs_new}", c.verdict)))


def _pivot(g: pd.DataFrame, values: str) -> pd.DataFrame:
    # pivot, not pivot_table: each (model, batch) is one configuration here, and pivot raises
    # rather than keep the first of two
    return g.pivot(index="model", columns="batch_size", values=values)


def throughput_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """images/sec (median-based) as model x per-replica batch, one table per setting."""
    return {t: _pivot(g, "images_per_sec_median") for t, g in model_batch_groups(df)}


def _ci_cell(median: float, low: float, high: float, runs: Any = 1) -> str:
    """'median [low, high]'; a missing CI is left out, a missing median leaves the cell empty.
    A figure over MIN_RUNS_FOR_CI or more runs (its CI between runs) says over how many."""
    if pd.isna(median):
        return ""
    cell = f"{median:.1f} [{low:.1f}, {high:.1f}]" if pd.notna(low) and pd.notna(high) else f"{median:.1f}"
    return cell + (f" ({int(runs)} runs)" if pd.notna(runs) and runs >= MIN_RUNS_FOR_CI else "")


def throughput_ci_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The same layout as text: 'median [95% CI of the median]', and 'diverged' after a run whose
    loss went non-finite (timed all the same)."""
    out = {}
    for t, g in model_batch_groups(df):
        runs = g["runs"] if "runs" in g else pd.Series(1, index=g.index)
        g = g.assign(cell=[_ci_cell(m, lo, hi, n) + (" diverged" if bad else "") for m, lo, hi, n, bad in
                           zip(g["images_per_sec_median"], g["images_per_sec_median_ci95_low"],
                               g["images_per_sec_median_ci95_high"], runs, is_diverged(g))])
        out[t] = _pivot(g, "cell")
    return out


def step_time_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Median step time in ms, same layout."""
    return {t: _pivot(g, "step_time_median_s") * 1000.0 for t, g in model_batch_groups(df)}


def _family(model: str) -> str:

    try:
        return models.get_entry(model).family
    except ValueError:  # a model this version does not know: neither VGG nor ResNet
        return ""


def vgg_vs_resnet(df: pd.DataFrame) -> pd.DataFrame:
    """For each VGG x ResNet pair (by registry family) in one setting and batch size: the ratio
    of images/sec and of test top-1 (VGG / ResNet)."""
    ok = latest_ok(df)
    runs = run_medians(df, ok)
    family = {m: _family(m) for m in ok["model"].dropna().unique()}
    cols = ["strategy", "replicas", "data", "batch_size", "vgg", "resnet", "images_per_sec_ratio",
            "images_per_sec_ratio_ci95_low", "images_per_sec_ratio_ci95_high", "top1_ratio"]
    rows, pairs = [], []
    for _, g in groups(ok, exclude=["model"], lead=["batch_size", *TITLE_FIELDS]):
        fam = g["model"].map(family)
        for _, v in g[fam == "vgg"].iterrows():
            for _, r in g[fam == "resnet"].iterrows():
                top1 = v["top1"] / r["top1"] if pd.notna(v["top1"]) and pd.notna(r["top1"]) and r["top1"] else np.nan
                c = throughput_comparison(v, r, runs)
                ratio, lo, hi = c.ratio, c.ci95_low, c.ci95_high
                rows.append({"strategy": v["strategy"], "replicas": v["replicas"], "data": v["data"],
                             "batch_size": v["batch_size"], "vgg": v["model"], "resnet": r["model"],
                             "images_per_sec_ratio": ratio, "images_per_sec_ratio_ci95_low": lo,
                             "images_per_sec_ratio_ci95_high": hi, "top1_ratio": top1})
                pairs.append(v.name)
    return _told_apart(pd.DataFrame(rows, columns=cols), ok.loc[pairs], cols[:6], shown=["model"])


def family_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """The model families side by side, per setting and per-replica batch size: for each family
    (the registry's `family`) its fastest model's images/sec and test top-1, its forward GFLOPs
    per image, the work rate that achieves (GFLOP/s: images/sec x GFLOPs/image x 3 passes in
    training, 1 in inference), and its images/sec relative to ResNet's fastest model."""
    ok = latest_ok(df)
    cols = ["mode", "strategy", "replicas", "data", "batch_size", "family", "model", "images_per_sec", "top1",
            "gflops_per_image", "gflop_per_sec", "images_per_sec_vs_resnet", "vs_resnet_ci95_low", "vs_resnet_ci95_high",
            *SIGNIFICANCE]
    runs = run_medians(df, ok)
    rows, used = [], []
    for _, g in groups(ok, exclude=["model"], lead=["batch_size", *TITLE_FIELDS]):
        g = g[g["images_per_sec_median"].notna()]  # a family's fastest model is one that was timed
        fam = g["model"].map(_family)
        best = {f: g.loc[gf["images_per_sec_median"].idxmax()] for f, gf in g[fam != ""].groupby(fam[fam != ""])}
        if len(best) < 2:
            continue
        resnet = best.get("resnet")
        for f, r in sorted(best.items(), key=lambda kv: -kv[1]["images_per_sec_median"]):
            passes = 1 if r.get("mode") == "inference" else 3
            c = throughput_comparison(r, resnet, runs) if resnet is not None and f != "resnet" else None
            vs, lo, hi = (c.ratio, c.ci95_low, c.ci95_high) if c else (1.0, 1.0, 1.0) if f == "resnet" else (np.nan,) * 3
            rows.append({"mode": r["mode"], "strategy": r["strategy"], "replicas": r["replicas"], "data": r["data"],
                         "batch_size": r["batch_size"], "family": f, "model": r["model"],
                         "images_per_sec": r["images_per_sec_median"], "top1": r["top1"],
                         "gflops_per_image": r["gflops_per_image"],
                         "gflop_per_sec": r["images_per_sec_median"] * r["gflops_per_image"] * passes,
                         "images_per_sec_vs_resnet": vs, "vs_resnet_ci95_low": lo, "vs_resnet_ci95_high": hi,
                         **(significance_cells(c) if c else {})})
            used.append(r.name)
    return _told_apart(pd.DataFrame(rows, columns=cols), ok.loc[used], cols[:7], shown=["model"])


def backend_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """TensorFlow vs JAX: for rows that differ only in backend, images/sec on each and the
    ratio JAX / TensorFlow (above 1: JAX is faster). JAX always compiles with XLA, so each
    TensorFlow row, with XLA or without, is paired with the JAX row of its configuration."""
    ok = latest_ok(df)
    cols = ["model", "strategy", "replicas", "batch_size", "precision", "data", "tensorflow_xla",
            "tensorflow_images_per_sec", "jax_images_per_sec", "jax_tensorflow_ratio", "ratio_ci95_low", "ratio_ci95_high",
            *SIGNIFICANCE]
    runs = run_medians(df, ok)
    rows, used = [], []
    for _, g in groups(ok, exclude=["backend", "xla"]):
        jax_rows = g[g["backend"] == "jax"]
        if jax_rows.empty:
            continue
        j = jax_rows.iloc[-1]
        for _, t in g[g["backend"] == "tensorflow"].iterrows():
            c = throughput_comparison(j, t, runs)
            rows.append({**{f: t[f] for f in cols[:6]}, "tensorflow_xla": t["xla"],
                         "tensorflow_images_per_sec": t["images_per_sec_median"],
                         "jax_images_per_sec": j["images_per_sec_median"], "jax_tensorflow_ratio": c.ratio,
                         "ratio_ci95_low": c.ci95_low, "ratio_ci95_high": c.ci95_high, **significance_cells(c)})
            used.append(t.name)
    return _told_apart(pd.DataFrame(rows, columns=cols), ok.loc[used], cols[:7])


def _baselines(ok: pd.DataFrame) -> dict[Any, Any]:
    """Each row's one-replica row (by label): the same strategy at one replica, else `single`,
    with every other key field equal (rows without a baseline are left out)."""
    out: dict[Any, Any] = {}
    lead = ["model", "batch_size", "data", "precision", "xla", "width", "image_size", "num_classes"]
    for _, g in groups(ok, exclude=TOPOLOGY_FIELDS, lead=lead):
        single = g[(g["strategy"] == "single") & (g["replicas"] == 1)]
        for _, gs in g.groupby("strategy", sort=True):
            base = gs[gs["replicas"] == 1]
            base = base if not base.empty else single
            if not base.empty:
                out.update(dict.fromkeys(gs.index, base.index[-1]))
    return out


# the CPU cores each replica had at N replicas and in the baseline: fewer at N means the replicas shared
# the baseline's cores, and the efficiency measures that contention as well as communication
SHARED_CORES = ["cores_per_replica", "baseline_cores_per_replica"]


def shared_cores(r: Any) -> bool:
    """Whether a scaling row's replicas had fewer CPU cores each than its baseline's one replica."""
    mine, base = r.get("cores_per_replica"), r.get("baseline_cores_per_replica")
    return bool(pd.notna(mine) and pd.notna(base) and float(mine) < float(base))


def scaling_efficiency(df: pd.DataFrame, baselines: bool = True) -> pd.DataFrame:
    """images/sec(N) / (N x images/sec(1)) per model, strategy and per-replica batch, with N the
    replica count and the efficiency's 95% CI, and the cores per replica at N and at one (see
    SHARED_CORES). The baseline is the same strategy at one replica, else `single`. Without
    `baselines`, the one-replica rows (each its own baseline, 1.000) are left out."""
    ok = latest_ok(df)
    ok = ok[ok["replicas"].notna() & (ok["replicas"] >= 1)]  # a row without replicas has no place on the scale
    cols = ["model", "strategy", "data", "batch_size", "replicas", "images_per_sec", "baseline_images_per_sec",
            "speedup", "efficiency", "efficiency_ci95_low", "efficiency_ci95_high", *SHARED_CORES, *SIGNIFICANCE]
    base = _baselines(ok)
    runs = run_medians(df, ok)
    rows, used = [], []
    for label, r in ok.loc[list(base)].sort_values(["model", "batch_size", "strategy", "replicas"],
                                                    kind="stable").iterrows():
        n = int(r["replicas"])
        if n == 1 and not baselines:
            continue
        one = ok.loc[base[label]]
        # a baseline is exactly its own: no CI around 1
        c = None if base[label] == label else throughput_comparison(r, one, runs)
        speedup, lo, hi = (c.ratio, c.ci95_low, c.ci95_high) if c else (1.0, 1.0, 1.0)
        rows.append({"model": r["model"], "strategy": r["strategy"], "data": r["data"], "batch_size": r["batch_size"],
                     "replicas": n, "images_per_sec": r["images_per_sec_median"],
                     "baseline_images_per_sec": one["images_per_sec_median"], "speedup": speedup,
                     "efficiency": speedup / n, "efficiency_ci95_low": lo / n, "efficiency_ci95_high": hi / n,
                     "cores_per_replica": r.get("cores_per_replica"),
                     "baseline_cores_per_replica": one.get("cores_per_replica"), **(significance_cells(c) if c else {})})
        used.append(label)
    return _told_apart(pd.DataFrame(rows, columns=cols), ok.loc[used], cols[:5])


def _diff_ci(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """median(a) - median(b) in ms, with a 95% CI from the two medians' own CIs (their half-widths
    added in quadrature on each side: the runs are independent)."""
    ms = 1e3
    ma, la, ha = (float(a[c]) * ms for c in ("step_time_median_s", "step_time_median_ci95_low_s",
                                              "step_time_median_ci95_high_s"))
    mb, lb, hb = (float(b[c]) * ms for c in ("step_time_median_s", "step_time_median_ci95_low_s",
                                              "step_time_median_ci95_high_s"))
    d = ma - mb
    return d, d - float(np.hypot(ma - la, hb - mb)), d + float(np.hypot(ha - ma, mb - lb))


def where_time_goes(df: pd.DataFrame) -> pd.DataFrame:
    """For each distributed configuration run both ways (sweep --breakdown): its median step
    time split into input wait, exposed communication (synced minus --no-gradient-sync, with
    its 95% CI) and the remaining compute, each with its share of the step, beside the
    configuration's scaling efficiency."""
    ok = latest_ok(df, diagnostics=True)
    ok = ok[ok["replicas"].notna() & (ok["replicas"] > 1)]
    keys = key_frame(ok)
    sync_at = KEY_COLUMNS.index("gradient_sync")
    unsynced = {k[:sync_at] + k[sync_at + 1:]: label for label, k, s in
                zip(ok.index, ok["config_key"], keys["gradient_sync"]) if s is not None and not s}
    synced = latest_ok(df)
    base, base_ips = _baselines(synced), synced["images_per_sec_median"]
    cols = ["model", "strategy", "backend", "batch_size", "replicas", "step_ms", "input_wait_ms", "exposed_comm_ms",
            "exposed_comm_ci95", "compute_ms", "input_share", "comm_share", "compute_share", "efficiency"]
    rows, used = [], []
    for label, k, s in zip(ok.index, ok["config_key"], keys["gradient_sync"]):
        pair = unsynced.get(k[:sync_at] + k[sync_at + 1:])
        if (s is not None and not s) or pair is None:
            continue
        r, n = ok.loc[label], ok.loc[pair]
        step = 1e3 * float(r["step_time_median_s"])
        wait = float(r["data_wait_ms"]) if pd.notna(r.get("data_wait_ms")) else 0.0
        comm, lo, hi = _diff_ci(r, n)
        compute = step - comm - wait
        share = (lambda x: x / step) if step > 0 else (lambda x: np.nan)  # a zero step time shares nothing
        eff = (r["images_per_sec_median"] / (int(r["replicas"]) * base_ips[base[label]])) if label in base else np.nan
        rows.append({"model": r["model"], "strategy": r["strategy"], "backend": r["backend"],
                     "batch_size": r["batch_size"], "replicas": int(r["replicas"]), "step_ms": step,
                     "input_wait_ms": wait, "exposed_comm_ms": comm, "exposed_comm_ci95": f"[{lo:.1f}, {hi:.1f}]",
                     "compute_ms": compute, "input_share": share(wait), "comm_share": share(comm),
                     "compute_share": share(compute), "efficiency": eff})
        used.append(label)
    return _told_apart(pd.DataFrame(rows, columns=cols), ok.loc[used], cols[:5])


def best_batch_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """The per-replica batch size with the most images/sec, per model and setting."""
    ok = latest_ok(df)
    timed = ok[ok["images_per_sec_median"].notna()]
    best = [g["images_per_sec_median"].idxmax()
            for _, g in groups(timed, exclude=["batch_size"], lead=["model", *TITLE_FIELDS])]
    cols = ["model", "strategy", "replicas", "data", "batch_size", "images_per_sec_median"]
    out = ok.loc[best, cols].rename(columns={"images_per_sec_median": "images_per_sec"})
    return _told_apart(out, ok.loc[best], ["model", "strategy", "replicas", "data"])


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Test top-1/top-5 and time to accuracy of the configurations that measured accuracy."""
    ok = latest_ok(df)
    acc = ok[ok["top1"].notna()]
    cols = ["model", "strategy", "replicas", "batch_size", "data", "epochs_run", "top1", "top5",
            "target_accuracy", "target_reached", "time_to_target_s", "wall_s"]
    return _told_apart(acc[cols], acc, cols[:5])


LATENCY_COLUMNS = ["latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_per_image_ms"]


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Inference: images/sec and per-batch latency percentiles (ms) per model and batch size."""
    ok = latest_ok(df)
    inf = ok[(ok["mode"] == "inference") & ok["latency_p50_ms"].notna()]
    inf = inf.sort_values(["model", "strategy", "backend", "replicas", "batch_size"], kind="stable")
    cols = ["model", "strategy", "backend", "replicas", "batch_size", "images_per_sec_median", *LATENCY_COLUMNS]
    out = inf[cols].rename(columns={"images_per_sec_median": "images_per_sec"})
    return _told_apart(out, inf, cols[:5])


def memory_table(df: pd.DataFrame) -> pd.DataFrame:
    """Peak memory beside images/sec, with the estimate made before the run and their ratio."""
    ok = latest_ok(df)
    m = ok[ok["peak_mem_bytes"].notna()]
    m = m.sort_values(["mode", "model", "strategy", "backend", "replicas", "batch_size"], kind="stable")
    cols = ["model", "mode", "strategy", "backend", "replicas", "batch_size"]
    out = m[cols].assign(images_per_sec=m["images_per_sec_median"],
                         peak_mib=m["peak_mem_bytes"].astype(float) / 2**20,
                         estimate_mib=m["mem_estimate_bytes"].astype(float) / 2**20,
                         measured_over_estimate=m["peak_mem_bytes"].astype(float) / m["mem_estimate_bytes"].astype(float),
                         mem_source=m["mem_source"])
    return _told_apart(out, m, cols)


def energy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Images per joule beside images/sec, with the mean power, the joules per step and their
    source, for the rows that measured energy (empty where none did: the section is then left out)."""
    ok = latest_ok(df)
    if "images_per_joule" not in ok:
        return pd.DataFrame()
    m = ok[ok["images_per_joule"].notna()]
    m = m.sort_values(["mode", "model", "strategy", "backend", "replicas", "batch_size"], kind="stable")
    cols = ["model", "mode", "strategy", "backend", "replicas", "batch_size"]
    out = m[cols].assign(device_kind=m["device_kind"], images_per_sec=m["images_per_sec_median"],
                         images_per_joule=m["images_per_joule"], power_mean_w=m["power_mean_w"],
                         energy_per_step_j=m["energy_per_step_j"], energy_source=m["energy_source"],
                         energy_samples=m["energy_samples"])
    return _told_apart(out, m, cols)


def max_batch_table(df: pd.DataFrame) -> pd.DataFrame:
    """`sweep --find-max-batch`: per searched configuration, the largest batch that fit, its
    images/sec and peak memory, and the smallest larger batch that did not fit, with why."""

    probes = df[df["find_max_batch"].fillna(False).astype(bool) & df["batch_size"].notna()]  # see unusable_rows
    cols = ["model", "mode", "strategy", "backend", "replicas", "memory_cap_gb", "probes", "largest_batch",
            "images_per_sec", "peak_mib", "first_misfit_batch", "why"]
    rows, firsts = [], []
    for _, g in groups(probes, exclude=["batch_size"], lead=["model", *TITLE_FIELDS]):
        g = g.sort_values("timestamp_utc", kind="stable").drop_duplicates("batch_size", keep="last")
        cap = g["memory_cap_gb"].dropna()
        cap = float(cap.iloc[-1]) if not cap.empty else None
        verdict = {int(r["batch_size"]): fits(r, cap) for r in g.to_dict("records")}
        fitting = [b for b, v in verdict.items() if v]
        best = max(fitting) if fitting else None
        above = [b for b, v in verdict.items() if not v and (best is None or b > best)]
        misfit = min(above) if above else None
        r_best = g[g["batch_size"] == best].iloc[0] if best is not None else None
        why = ""
        if misfit is not None:
            r = g[g["batch_size"] == misfit].iloc[0]
            why = (r["status"] if r["status"] != Status.OK else "no peak recorded" if pd.isna(r["peak_mem_bytes"]) else
                   f"peak {float(r['peak_mem_bytes']) / 2**30:.2f} GiB > cap {cap:g} GiB")
        first = g.iloc[0]
        rows.append({"model": first["model"], "mode": first["mode"], "strategy": first["strategy"],
                     "backend": first["backend"], "replicas": first["replicas"], "memory_cap_gb": cap,
                     "probes": len(g), "largest_batch": best,
                     "images_per_sec": r_best["images_per_sec_median"] if r_best is not None else np.nan,
                     "peak_mib": float(r_best["peak_mem_bytes"]) / 2**20
                     if r_best is not None and pd.notna(r_best["peak_mem_bytes"]) else np.nan,
                     "first_misfit_batch": misfit, "why": why})
        firsts.append(first.name)
    return _told_apart(pd.DataFrame(rows, columns=cols), probes.loc[firsts], cols[:5], shown=["batch_size"])


def unusable_rows(df: pd.DataFrame) -> dict[str, list[str]]:
    """Rows a table must leave out, by the id of the report section that would show them, each
    named in a line: a max-batch probe without a batch size, a run with fewer than one replica."""
    probes = df[df["find_max_batch"].fillna(False).astype(bool)]
    ok = latest_ok(df)
    return {"largest-batch": [f"{row_words(r)}: left out: a --find-max-batch probe without a batch size"
                              for r in probes[probes["batch_size"].isna()].to_dict("records")],
            "scaling-efficiency": [f"{row_words(r)}: left out: fewer than one replica"
                                   for r in ok[ok["replicas"] < 1].to_dict("records")]}


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Every row that did not end ok, with its error."""
    bad = df[df["status"] != Status.OK]
    return bad[["timestamp_utc", "model", "strategy", "replicas", "batch_size", "status", "error"]].reset_index(drop=True)


def provenance_summary(df: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """The provenance values all rows share, and warnings where rows mix hardware or versions."""
    shared, warnings = {}, []
    for c in HARDWARE + VERSIONS + ["git_commit"]:
        values = sorted({str(v) for v in df[c].dropna().unique() if str(v) != ""})
        if len(values) == 1:
            shared[c] = values[0]
        elif len(values) > 1:
            kind = "hardware" if c in HARDWARE else "versions" if c in VERSIONS else "code"
            warnings.append(f"rows mix {kind}: {c} = {', '.join(values)}")
    return shared, warnings


# ---- comparison ---------------------------------------------------------------------------
COMPARE_SHOWN = ["model", "strategy", "batch_size", "replicas", "workers", "data", "precision", "xla", "width",
                 "image_size", "num_classes"]


def compare(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (config_key) in both: median images/sec on each side, the ratio new / old
    with its 95% CI, the p-value, the test, the runs on each side and the verdict at 5%
    (bench.measure.stats.compare_runs), and whether the test can decide a regression gate
    (`decisive`). Key fields needed to tell two rows apart follow the shown ones; config_key
    comes last."""
    a, b = latest_ok(old), latest_ok(new)
    runs_a, runs_b = run_medians(old, a), run_medians(new, b)
    b_by_key = {k: label for label, k in zip(b.index, b["config_key"])}
    pairs = [(label, b_by_key[k]) for label, k in zip(a.index, a["config_key"]) if k in b_by_key]
    m = a.loc[[p for p, _ in pairs]]
    out = _told_apart(m[COMPARE_SHOWN], m, COMPARE_SHOWN)
    tests = [compare_runs(side(a.loc[i], runs_a[i]), side(b.loc[j], runs_b[j])) for i, j in pairs]
    out["images_per_sec_old"] = [float(np.median(runs_a[i])) for i, _ in pairs]
    out["images_per_sec_new"] = [float(np.median(runs_b[j])) for _, j in pairs]
    out["ratio"] = [c.ratio for c in tests]
    out["ratio_ci95"] = [f"[{c.ci95_low:.3f}, {c.ci95_high:.3f}]" for c in tests]
    out["change_pct"] = [100.0 * (c.ratio - 1.0) for c in tests]
    for col, values in zip(SIGNIFICANCE, zip(*[significance_cells(c).values() for c in tests]) if tests else
                           [[] for _ in SIGNIFICANCE]):
        out[col] = list(values)
    out["decisive"] = [c.decisive for c in tests]
    out["config_key"] = list(m["config_key"])
    return out.reset_index(drop=True)
