"""The report's opening summary: what a reader came to learn, computed from the rows.

Each finding is one sentence with its 95% CI and the id of the section whose table it comes
from. Where a comparison holds in several settings, the finding names the setting with the
median ratio (a real row pair, with its own CI) and gives the range over all of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bench.config.schema import RunConfig
from bench.errors import Status
from bench.measure.stats import ALPHA, MIN_RUNS_FOR_CI, NO_DIFFERENCE, UNTESTED
from bench.report import tables
from models.registry import FAMILY_NAMES

# key fields a finding's configuration always names; others are named where the rows vary in
# them and a row's value is not the option's default, except the run's length and the classes
# (which the data set implies)
NAMED = ["batch_size", "strategy", "replicas", "backend", "data", "mode", "model", "workers"]
QUIET = ["num_classes", "steps", "warmup_steps", "epochs", "target_accuracy", "seed"]
MAX_NAMED_FAILURES = 6


@dataclass(frozen=True)
class Finding:
    kind: str      # best, family, scaling, backend, latency, input, repeats, failures, warning
    text: str      # one plain-text sentence
    section: str   # the id of the section it comes from ("" for none)


def num(x: float) -> str:
    """A figure as reports print it: three significant digits or more, thousands separated."""
    if not np.isfinite(x):
        return "n/a"
    ax = abs(x)
    return (f"{x:,.0f}" if ax >= 99.95 else f"{x:.1f}" if ax >= 9.995 else f"{x:.2f}" if ax >= 0.0995
            else f"{x:.3g}")


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _extras(rows: pd.DataFrame) -> list[str]:
    """The key fields, beyond the always named ones, that tell these rows apart."""
    return tables.varying(rows, shown=[*NAMED, *QUIET])


def ci(low: float, high: float) -> str:
    return f"[95% CI {num(low)}, {num(high)}]" if np.isfinite(low) and np.isfinite(high) else "[no CI]"


def _setting(r: pd.Series | dict, extra: Iterable[str], skip: Iterable[str] = ()) -> str:
    """A row's configuration in words: batch, strategy x replicas, backend, data, then `extra` key fields."""
    skip, default = set(skip), _defaults()
    parts = [] if "batch_size" in skip else [f"batch {r['batch_size']}"]
    if "strategy" not in skip:
        parts.append(f"{r['strategy']} ×{r['replicas']}")
    parts += [str(r[f]) for f in ("backend", "data") if f not in skip and f in r and pd.notna(r[f])]
    value = {f: (r[f] if pd.notna(r[f]) else None) for f in extra if f in r}  # an empty cell is None, not NA
    shown = [f for f in value if not (f in default and default[f] is not None and value[f] == default[f])]
    return ", ".join(parts + [tables.value_words(f, value[f]) for f in shown])


def significance(r: Any, than: str) -> str:
    """A comparison's test in words: its verdict at ALPHA against `than`, the p-value, the test and
    the runs on each side (tables.significance_cells)."""
    if r.get("verdict") in (None, "") or pd.isna(r.get("verdict")):
        return ""
    if r["verdict"] == UNTESTED:
        return "; untested: the rows have no step-time statistics"
    words = (f"no significant difference from {than}" if r["verdict"] == NO_DIFFERENCE
             else f"{r['verdict']} than {than}")
    return f"; {words} at {ALPHA:.0%}: p = {tables.p_text(r['p_value'])}, {r['test']}, {r['runs']} runs"


def _mode_word(mode: str) -> str:
    return "inference" if mode == "inference" else "training"


def _median_pick(rows: list[Any], ratio: str) -> tuple[Any, float, float]:
    """The row with the median ratio (the lower of two middles), and the range of the ratios."""
    ordered = sorted(rows, key=lambda r: r[ratio])
    return ordered[(len(ordered) - 1) // 2], ordered[0][ratio], ordered[-1][ratio]


def runs_words(r: pd.Series | dict) -> str:
    """' over N runs (between-run CI)' for a figure that is the median of N >= 3 repeats, with
    how many of its group failed; '' for a single run's figure."""
    n = r.get("runs") if hasattr(r, "get") else None
    if n is None or pd.isna(n) or n < MIN_RUNS_FOR_CI:
        return ""
    failed = r.get("runs_failed")
    return (f" over {int(n)} runs (between-run CI" + (f"; {int(failed)} more failed" if failed and failed > 0 else "")
            + ")")


def _range(lo: float, hi: float, n: int, what: str, unit: str = "") -> str:
    return f"; {num(lo)}{unit} to {num(hi)}{unit} over {n} {what}" if n > 1 else ""


def best_per_model(df: pd.DataFrame) -> list[Finding]:
    """The fastest configuration of each model (training and inference apart) and how far
    ahead of the next best it is."""
    ok = tables.latest_timed(df)
    ok = ok[ok["images_per_sec_median"].notna()]
    out = []
    for (model, mode), g in ok.groupby(["model", "mode"], sort=True):
        g = g.sort_values("images_per_sec_median", ascending=False, kind="stable")
        extra = _extras(g)
        best = g.iloc[0]
        text = (f"{model}, {_mode_word(mode)}: fastest at "
                f"{num(best['images_per_sec_median'])} images/sec "
                f"{ci(best['images_per_sec_median_ci95_low'], best['images_per_sec_median_ci95_high'])}"
                f"{runs_words(best)} with {_setting(best, extra)}"
                + (" (flagged: its loss went non-finite; every step was timed)"
                   if best["status"] == Status.DIVERGED else ""))
        if len(g) > 1:
            nxt = g.iloc[1]
            gap = 100.0 * (1.0 - nxt["images_per_sec_median"] / best["images_per_sec_median"])
            apart = best["images_per_sec_median_ci95_low"] > nxt["images_per_sec_median_ci95_high"]
            text += (f"; the next best ({_setting(nxt, extra)}) is {gap:.1f}% slower"
                     f"{', CIs apart' if apart else ', within the CIs'}")
        out.append(Finding("best", text + ".", "throughput"))
    return out


def family_ratios(df: pd.DataFrame) -> list[Finding]:
    """Each family's fastest model against ResNet's at equal batch size and setting."""

    every = tables.family_comparison(df)
    fam = every[every["images_per_sec_vs_resnet"].notna() & (every["family"] != "resnet")]
    out = []
    group_cols = [c for c in fam.columns if c in tables.KEY_COLUMNS and c not in ("model", "family")]
    by_mode = fam["mode"].nunique() > 1  # training and inference ratios are not pooled
    order = {f: i for i, f in enumerate(FAMILY_NAMES)}
    for (family, mode), g in sorted(fam.groupby(["family", "mode"], sort=False),
                                    key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] != "train")):
        rows = g.to_dict("records")
        pick, lo, hi = _median_pick(rows, "images_per_sec_vs_resnet")
        same = every[(every["family"] == "resnet")
                     & np.logical_and.reduce([every[c].astype(str) == str(pick[c]) for c in group_cols])]
        resnet = same["model"].iloc[0] if not same.empty else "ResNet"
        extra = [c for c in group_cols if c not in NAMED + QUIET]
        name = FAMILY_NAMES.get(family, family)
        out.append(Finding("family", (
            f"{name} vs ResNet{f' ({_mode_word(mode)})' if by_mode else ''}: {pick['model']} runs at {num(pick['images_per_sec_vs_resnet'])}× "
            f"{ci(pick['vs_resnet_ci95_low'], pick['vs_resnet_ci95_high'])} the images/sec of {resnet} "
            f"({_setting(pick, extra)}{significance(pick, resnet)})"
            + _range(lo, hi, len(rows), "settings at equal batch size", "×") + "."),
            "model-families"))
    return out


def scaling(df: pd.DataFrame) -> list[Finding]:
    """Scaling efficiency at each strategy's largest replica count."""
    eff = tables.scaling_efficiency(df, baselines=False)
    out = []
    extra = [c for c in eff.columns if c in tables.KEY_COLUMNS and c not in NAMED + QUIET]
    for strategy, g in eff.groupby("strategy", sort=True):
        top = g[g["replicas"] == g["replicas"].max()]
        rows = top.to_dict("records")
        pick, lo, hi = _median_pick(rows, "efficiency")
        out.append(Finding("scaling", (
            f"{strategy} at {pick['replicas']} replicas: scaling efficiency {num(pick['efficiency'])} "
            f"{ci(pick['efficiency_ci95_low'], pick['efficiency_ci95_high'])} "
            f"({pick['model']}, {_setting(pick, extra, skip=['strategy'])}; "
            f"{num(pick['images_per_sec'])} against {num(pick['baseline_images_per_sec'])} images/sec on one"
            f"{significance(pick, 'one replica')})"
            + _range(lo, hi, len(rows), "configurations") + "."
            + (f" Its replicas shared CPU cores ({num(pick['cores_per_replica'])} per replica against "
               f"{num(pick['baseline_cores_per_replica'])} for the one): this measures their contention for the "
               f"cores as much as communication, not how the strategy scales." if tables.shared_cores(pick) else "")),
            "scaling-efficiency"))
    return out


def backends(df: pd.DataFrame) -> list[Finding]:
    """JAX against TensorFlow where the rows differ only in backend."""
    cmp = tables.backend_comparison(df)
    cmp = cmp[cmp["jax_tensorflow_ratio"].notna()]
    if cmp.empty:
        return []
    rows = cmp.to_dict("records")
    pick, lo, hi = _median_pick(rows, "jax_tensorflow_ratio")
    xla = ", TensorFlow with XLA" if pick["tensorflow_xla"] is True else ""
    return [Finding("backend", (
        f"JAX vs TensorFlow: JAX runs at {num(pick['jax_tensorflow_ratio'])}× "
        f"{ci(pick['ratio_ci95_low'], pick['ratio_ci95_high'])} TensorFlow's images/sec "
        f"({pick['model']}, {_setting(pick, [], skip=['backend'])}{xla}{significance(pick, 'TensorFlow')})"
        + _range(lo, hi, len(rows), "pairs", "×") + "."), "tensorflow-vs-jax")]


def latency_at_batch_1(df: pd.DataFrame) -> list[Finding]:
    """Each model's lowest median inference latency at batch 1, with its CI and p99."""
    ok = tables.latest_ok(df)
    one = ok[(ok["mode"] == "inference") & (ok["batch_size"] == 1) & ok["latency_p50_ms"].notna()]
    extra = _extras(one)
    out = []
    for model, g in one.groupby("model", sort=True):
        r = g.loc[g["latency_p50_ms"].idxmin()]
        low, high = 1e3 * float(r["step_time_median_ci95_low_s"]), 1e3 * float(r["step_time_median_ci95_high_s"])
        out.append(Finding("latency", (
            f"{model} inference at batch 1: p50 latency {num(r['latency_p50_ms'])} ms {ci(low, high)}, "
            f"p99 {num(r['latency_p99_ms'])} ms ({_setting(r, extra, skip=['batch_size'])})."), "inference-latency"))
    return out


def failure_count(df: pd.DataFrame) -> list[Finding]:
    """How many runs did not end ok, by status, and which."""
    bad = tables.failures(df)
    if bad.empty:
        return [Finding("failures", f"No failures: all {len(df)} runs ended ok.", "")]
    by_status = ", ".join(f"{n} {s or 'without a status'}" for s, n in bad["status"].value_counts().items())
    named = [f"{r['model']} b{r['batch_size']} {r['strategy']} ×{r['replicas']} ({r['status'] or 'no status'})"
             for r in bad.head(MAX_NAMED_FAILURES).to_dict("records")]
    more = f" and {len(bad) - MAX_NAMED_FAILURES} more" if len(bad) > MAX_NAMED_FAILURES else ""
    return [Finding("failures", f"{len(bad)} of {len(df)} runs did not end ok ({by_status}): "
                    f"{'; '.join(named)}{more}.", "failures")]


def across_runs(df: pd.DataFrame) -> list[Finding]:
    """Whether a single run's CI held: over the configurations with at least MIN_RUNS_FOR_CI ok
    repeats, how many had a between-run 95% CI of the median images/sec wider (relative
    half-width) than a single run's own CI (the runs' median), naming the widest."""
    ok = tables.latest_ok(df)
    if "runs" not in ok:
        return []
    rep = ok[ok["runs"] >= MIN_RUNS_FOR_CI]
    if rep.empty:
        return []
    between = (rep["images_per_sec_median_ci95_high"] - rep["images_per_sec_median_ci95_low"]) / 2.0 \
        / rep["images_per_sec_median"]
    wider = rep[between > rep["within_ci95_rel"]]
    n, runs = len(rep), f"{int(rep['runs'].min())}" + (f" to {int(rep['runs'].max())}"
                                                       if rep["runs"].max() > rep["runs"].min() else "")
    if wider.empty:
        return [Finding("repeats", f"Across runs: in all {n} configuration(s) with {runs} repeats, the spread "
                        "between runs stayed within a single run's 95% CI.", "across-runs")]
    worst = wider.loc[(between[wider.index] / wider["within_ci95_rel"]).idxmax()]
    extra = _extras(rep)
    return [Finding("repeats", f"Across runs: in {len(wider)} of {n} configuration(s) with {runs} repeats the "
                    f"spread between runs exceeded a single run's 95% CI, so the single-run CI understated the "
                    f"uncertainty; most of all {worst['model']} ({_setting(worst, extra)}): "
                    f"{num(worst['images_per_sec_median'])} images/sec "
                    f"{ci(worst['images_per_sec_median_ci95_low'], worst['images_per_sec_median_ci95_high'])} over "
                    f"{int(worst['runs'])} runs (±{100 * between[worst.name]:.1f}%, CV "
                    f"{100 * worst['cv_across_runs']:.1f}%) against ±{100 * worst['within_ci95_rel']:.1f}% within "
                    f"one run. Figures over {MIN_RUNS_FOR_CI} or more repeats use the between-run CI.",
                    "across-runs")]


def mixed_provenance(df: pd.DataFrame) -> list[Finding]:
    _, warnings = tables.provenance_summary(df)
    return [Finding("warning", f"Compare with care: the {w}.", "provenance") for w in warnings]


FINDERS = (best_per_model, family_ratios, scaling, backends, latency_at_batch_1, across_runs, failure_count,
           mixed_provenance)


def findings(df: pd.DataFrame) -> list[Finding]:
    """The report's findings, in the order the page shows them."""
    return [f for make in FINDERS for f in make(df)]
