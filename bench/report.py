"""Turn result CSVs into tables, plots and comparisons.

    python bench/report.py results/runs.csv [more.csv ...] [--out results/report] [--format md,html]
    python bench/report.py --compare OLD.csv NEW.csv [--fail-on-regression]

In notebooks: `from bench.report import load_results` -> a typed pandas DataFrame.

When several ok rows share a configuration, tables use the most recent one.
"""
from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.errors import BenchInputError  # noqa: E402
from bench.results import (ACCURACY, COLUMNS, CONFIG, MODEL, PROVENANCE, SCHEMA_VERSION, TIMING,  # noqa: E402
                           TOPOLOGY, read_rows)

# the columns that say which configuration a row measured
KEY = ["model", "strategy", "batch_size", "replicas", "workers", "data", "precision", "xla", "width",
       "image_size", "num_classes"]
# what else must match for two rows to sit in one table (everything in KEY but model and batch)
CONTEXT = ["strategy", "replicas", "workers", "data", "precision", "xla", "width", "image_size", "num_classes"]
# the same, less the topology: rows that scaling efficiency compares
SCALING_CONTEXT = ["model", "batch_size", "data", "precision", "xla", "width", "image_size", "num_classes"]
REQUIRED = ["schema_version", "model", "strategy", "batch_size", "status"]
BOOL_COLS = ["xla", "augment", "normalize", "scale_lr", "git_dirty", "target_reached"]
TEXT_COLS = ["run_id", "timestamp_utc", "source", "git_commit", "hostname", "cpu_model", "gpu_names",
             "python_version", "tf_version", "keras_version", "horovod_version", "model", "strategy",
             "data", "precision", "optimizer", "status", "error", "rank_step_time_means_s",
             "top1_by_epoch", "epoch_end_s"]
HARDWARE = ["hostname", "cpu_model", "gpu_names"]
VERSIONS = ["python_version", "tf_version", "keras_version", "horovod_version"]


# ---- loading -------------------------------------------------------------------------------
def _to_bool(s: pd.Series) -> pd.Series:
    m = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    return s.map(lambda v: m.get(str(v).strip().lower(), pd.NA) if pd.notna(v) and str(v) != "" else pd.NA
                 ).astype("boolean")


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read one or more cnnbench CSVs into one DataFrame with typed columns.

    Files from an older schema load with the newer columns empty; a file that is not a
    cnnbench CSV, or is from a newer schema, raises BenchInputError naming it."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise BenchInputError(f"no such results file: {path}")
        try:
            df = read_rows(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise BenchInputError(f"{path} is not a readable CSV: {str(e).splitlines()[0]}") from None
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise BenchInputError(f"{path} is not a cnnbench results file (no {', '.join(missing)} column)")
        versions = pd.to_numeric(df["schema_version"], errors="coerce")
        if versions.isna().any():
            raise BenchInputError(f"{path}: unreadable schema_version values")
        if (versions > SCHEMA_VERSION).any():
            raise BenchInputError(f"{path} was written by a newer cnnbench (schema "
                                  f"{int(versions.max())} > {SCHEMA_VERSION}); upgrade to read it")
        df["source_file"] = str(path)
        frames.append(df)
    if not frames:
        raise BenchInputError("no results files given")
    df = pd.concat(frames, ignore_index=True, sort=False)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = pd.NA  # older schema: newer columns are empty
    numeric = [c for c in CONFIG + MODEL + TOPOLOGY + TIMING + ACCURACY + PROVENANCE
               if c not in TEXT_COLS and c not in BOOL_COLS]
    for c in numeric:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in BOOL_COLS:
        df[c] = _to_bool(df[c])
    for c in TEXT_COLS:
        df[c] = df[c].astype("string")
    df["status"] = df["status"].fillna("")
    df["timestamp_utc"] = pd.to_datetime(df["timestamp_utc"], utc=True, errors="coerce")
    for c in ("batch_size", "replicas", "workers", "global_batch", "timed_steps", "epochs_run", "params"):
        df[c] = df[c].astype("Int64")
    return df


def latest_ok(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the most recent ok row."""
    ok = df[df["status"] == "ok"].sort_values("timestamp_utc", kind="stable")
    return ok.drop_duplicates(subset=KEY, keep="last")


# ---- tables --------------------------------------------------------------------------------
def _title(values: dict) -> str:
    v = {k: ("" if pd.isna(x) else x) for k, x in values.items()}
    return (f"{v['strategy']}, {v['replicas']} replica(s) on {v['workers']} worker(s), {v['data']}, "
            f"{v['precision']}{', xla' if v['xla'] is True else ''}, width {v['width']:g}, "
            f"{v['image_size']}px, {v['num_classes']} classes")


def _short_title(values: dict) -> str:
    """A plot title that fits: strategy x replicas, data, precision, width."""
    return (f"{values['strategy']} x{values['replicas']}, {values['data']}, {values['precision']}"
            f"{' xla' if values['xla'] is True else ''}, w{values['width']:g}")


def _groups(df: pd.DataFrame, short: bool = False):
    """(title, rows) per table: rows that differ only in model and batch size."""
    for values, g in df.groupby(CONTEXT, sort=True, dropna=False):
        v = dict(zip(CONTEXT, values))
        yield (_short_title(v) if short else _title(v)), g


def throughput_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """images/sec (median-based) as model x per-replica batch, per strategy and replica count."""
    return {title: g.pivot_table(index="model", columns="batch_size", values="images_per_sec_median",
                                 aggfunc="first")
            for title, g in _groups(latest_ok(df))}


def throughput_ci_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The same layout as text: 'median [95% CI of the median]'."""
    out = {}
    for title, g in _groups(latest_ok(df)):
        g = g.assign(cell=[f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in
                           zip(g["images_per_sec_median"], g["images_per_sec_median_ci95_low"],
                               g["images_per_sec_median_ci95_high"])])
        out[title] = g.pivot_table(index="model", columns="batch_size", values="cell", aggfunc="first")
    return out


def step_time_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Median step time in ms, same layout."""
    return {title: g.pivot_table(index="model", columns="batch_size", aggfunc="first",
                                 values="step_time_median_s") * 1000.0
            for title, g in _groups(latest_ok(df))}


def vgg_vs_resnet(df: pd.DataFrame) -> pd.DataFrame:
    """For each VGG x ResNet pair at each batch size (same strategy and replicas): the ratio
    of images/sec and of test top-1 (VGG / ResNet)."""
    ok = latest_ok(df)
    rows = []
    for values, g in ok.groupby(["batch_size", *CONTEXT], sort=True, dropna=False):
        batch, strategy, replicas = values[0], values[1], values[2]
        vggs = g[g["model"].str.startswith("vgg")]
        resnets = g[g["model"].str.startswith("resnet")]
        for _, v in vggs.iterrows():
            for _, r in resnets.iterrows():
                rows.append({"strategy": strategy, "replicas": replicas, "data": v["data"], "batch_size": batch,
                             "vgg": v["model"], "resnet": r["model"],
                             "images_per_sec_ratio": v["images_per_sec_median"] / r["images_per_sec_median"],
                             "top1_ratio": (v["top1"] / r["top1"]) if pd.notna(v["top1"]) and pd.notna(r["top1"])
                             and r["top1"] else np.nan})
    return pd.DataFrame(rows, columns=["strategy", "replicas", "data", "batch_size", "vgg", "resnet",
                                       "images_per_sec_ratio", "top1_ratio"])


def scaling_efficiency(df: pd.DataFrame) -> pd.DataFrame:
    """images/sec(N) / (N x images/sec(1)) per model, strategy and per-replica batch, with N the
    replica count. The baseline is the same strategy at one replica, else `single`."""
    ok = latest_ok(df)
    rows = []
    for values, g in ok.groupby(SCALING_CONTEXT, sort=True, dropna=False):
        model, batch = values[0], values[1]
        single = g[(g["strategy"] == "single") & (g["replicas"] == 1)]
        for strategy, gs in g.groupby("strategy", sort=True):
            base = gs[gs["replicas"] == 1]
            base = base if not base.empty else single
            if base.empty:
                continue
            one = float(base["images_per_sec_median"].iloc[-1])
            for _, r in gs.sort_values("replicas").iterrows():
                n = int(r["replicas"])
                rows.append({"model": model, "strategy": strategy, "data": values[2], "batch_size": batch,
                             "replicas": n,
                             "images_per_sec": r["images_per_sec_median"], "baseline_images_per_sec": one,
                             "speedup": r["images_per_sec_median"] / one,
                             "efficiency": r["images_per_sec_median"] / (n * one)})
    return pd.DataFrame(rows, columns=["model", "strategy", "data", "batch_size", "replicas", "images_per_sec",
                                       "baseline_images_per_sec", "speedup", "efficiency"])


def best_batch_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """The per-replica batch size with the most images/sec, per model and table context."""
    ok = latest_ok(df)
    cols = ["model", "strategy", "replicas", "data", "batch_size", "images_per_sec_median"]
    if ok.empty:
        return pd.DataFrame(columns=cols).rename(columns={"images_per_sec_median": "images_per_sec"})
    idx = ok.groupby(["model", *CONTEXT], dropna=False)["images_per_sec_median"].idxmax()
    best = ok.loc[idx, cols]
    return best.rename(columns={"images_per_sec_median": "images_per_sec"}).reset_index(drop=True)


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    ok = latest_ok(df)
    acc = ok[ok["top1"].notna()]
    cols = ["model", "strategy", "replicas", "batch_size", "data", "epochs_run", "top1", "top5",
            "target_accuracy", "target_reached", "time_to_target_s", "wall_s"]
    return acc[cols].reset_index(drop=True)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
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


# ---- comparison ----------------------------------------------------------------------------
def compare(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Per configuration in both: change in median images/sec; a regression (improvement)
    where the new median's 95% CI lies wholly below (above) the old one's."""
    a, b = latest_ok(old), latest_ok(new)
    m = a.merge(b, on=KEY, suffixes=("_old", "_new"))
    out = m[KEY].copy()
    out["images_per_sec_old"] = m["images_per_sec_median_old"]
    out["images_per_sec_new"] = m["images_per_sec_median_new"]
    out["change_pct"] = 100.0 * (m["images_per_sec_median_new"] / m["images_per_sec_median_old"] - 1.0)
    below = m["images_per_sec_median_ci95_high_new"] < m["images_per_sec_median_ci95_low_old"]
    above = m["images_per_sec_median_ci95_low_new"] > m["images_per_sec_median_ci95_high_old"]
    out["verdict"] = np.where(below, "regression", np.where(above, "improvement", "within noise"))
    return out.reset_index(drop=True)


# ---- plots ---------------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, ax, path: Path, has_lines: bool) -> Path:
    """Legend (if anything was drawn), grid, save as PNG, close."""
    if has_lines:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def plot_throughput(df: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    groups = list(_groups(latest_ok(df), short=True))
    cols = min(3, max(1, len(groups)))
    rows = max(1, -(-len(groups) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (title, g) in zip(axes.flat, groups):
        for model, gm in g.sort_values("batch_size").groupby("model"):
            ax.plot(gm["batch_size"].astype(int), gm["images_per_sec_median"], marker="o", label=model)
        ax.set(xlabel="per-replica batch size", ylabel="images/sec (median)", xscale="log")
        ax.set_title(title, fontsize="medium")
        ax.set_xticks(sorted(g["batch_size"].astype(int).unique()))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scaling(df: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    eff = scaling_efficiency(df)
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for (model, strategy, data, batch), g in eff.groupby(["model", "strategy", "data", "batch_size"]):
        if len(g) > 1:  # a line needs more than the baseline point
            ax.plot(g["replicas"], g["efficiency"], marker="o", label=f"{model} {strategy} b{batch} {data}")
            drawn = True
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="replicas (workers)", ylabel="scaling efficiency", title="images/sec(N) / (N x images/sec(1))")
    return _finish(fig, ax, path, drawn)


def plot_accuracy(df: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    acc = latest_ok(df)
    acc = acc[acc["top1_by_epoch"].notna() & (acc["top1_by_epoch"] != "")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, r in acc.iterrows():
        top1 = [float(x) for x in str(r["top1_by_epoch"]).split(";")]
        t = [float(x) for x in str(r["epoch_end_s"]).split(";")]
        ax.plot(t, top1, marker="o", label=f"{r['model']} {r['strategy']} x{r['replicas']} b{r['batch_size']}")
    ax.set(xlabel="wall time (s)", ylabel="test top-1", title="accuracy against wall time")
    return _finish(fig, ax, path, not acc.empty)


# ---- rendering -----------------------------------------------------------------------------
def _md(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    if df is None or df.empty:
        return "_none_\n"
    d = df.copy()
    d.columns = [str(c) for c in d.columns]
    d = d.reset_index() if d.index.name else d
    cells = [[("" if pd.isna(v) else format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v))
              for v in row] for row in d.itertuples(index=False)]
    head = "| " + " | ".join(d.columns) + " |\n|" + "---|" * len(d.columns) + "\n"
    return head + "".join("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |\n"
                          for row in cells)


def build_report(df: pd.DataFrame, out: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Write the markdown/HTML report and its PNG plots into `out`; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {"images/sec against batch size": plot_throughput(df, out / "throughput.png"),
             "scaling efficiency against workers": plot_scaling(df, out / "scaling.png"),
             "accuracy against wall time": plot_accuracy(df, out / "accuracy.png")}
    shared, warnings = provenance_summary(df)
    sections: list[tuple[str, str]] = []
    for title, t in throughput_ci_tables(df).items():
        sections.append((f"Throughput: images/sec, median [95% CI] ({title})", _md(t)))
    for title, t in step_time_tables(df).items():
        sections.append((f"Step time: median ms ({title})", _md(t)))
    sections += [
        ("VGG vs ResNet (ratio VGG / ResNet)", _md(vgg_vs_resnet(df), ".3f")),
        ("Scaling efficiency", _md(scaling_efficiency(df), ".3f")),
        ("Best batch size (by images/sec)", _md(best_batch_sizes(df))),
        ("Accuracy and time to accuracy", _md(accuracy_table(df), ".4f")),
        ("Failures", _md(failures(df))),
    ]
    prov = "".join(f"- {k}: {v}\n" for k, v in shared.items()) + "".join(f"- **warning: {w}**\n" for w in warnings)
    n_ok = int((df["status"] == "ok").sum())
    intro = f"{len(df)} row(s), {n_ok} ok, from {', '.join(sorted(df['source_file'].unique()))}.\n"
    written = list(plots.values())
    if "md" in formats:
        md = [f"# cnnbench report\n\n{intro}\n## Provenance\n\n{prov or '_none_'}\n"]
        md += [f"## {t}\n\n{body}\n" for t, body in sections]
        md += [f"## Plots\n\n"] + [f"![{t}]({p.name})\n\n" for t, p in plots.items()]
        (out / "report.md").write_text("".join(md))
        written.append(out / "report.md")
    if "html" in formats:
        parts = [f"<h1>cnnbench report</h1><p>{html.escape(intro)}</p><h2>Provenance</h2><ul>"]
        parts += [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in shared.items()]
        parts += [f"<li><b>warning: {html.escape(w)}</b></li>" for w in warnings]
        parts.append("</ul>")
        for t, body in sections:
            parts.append(f"<h2>{html.escape(t)}</h2>{_md_to_html(body)}")
        parts.append("<h2>Plots</h2>")
        for t, p in plots.items():
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(t)}</h3><img alt='{html.escape(t)}' src='data:image/png;base64,{data}'>")
        style = "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
        (out / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>cnnbench report</title>{style}</head><body>{''.join(parts)}</body></html>")
        written.append(out / "report.html")
    return written


def _md_to_html(table: str) -> str:
    lines = [l for l in table.strip().splitlines() if l.startswith("|")]
    if len(lines) < 2:
        return f"<p>{html.escape(table.strip())}</p>"
    cells = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[2:])
    return f"<table><tr>{head}</tr>{body}</table>"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="*", help="result CSVs")
    p.add_argument("--out", default="results/report", help="folder for report.md/report.html and plots")
    p.add_argument("--format", default="md,html")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    p.add_argument("--fail-on-regression", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.compare:
            table = compare(load_results([args.compare[0]]), load_results([args.compare[1]]))
            print(_md(table, ".2f"))
            n_reg = int((table["verdict"] == "regression").sum())
            print(f"{len(table)} configuration(s) in both: {n_reg} regression(s), "
                  f"{int((table['verdict'] == 'improvement').sum())} improvement(s)")
            return 1 if n_reg and args.fail_on_regression else 0
        if not args.csv:
            raise BenchInputError("give at least one results CSV (or --compare OLD NEW)")
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        bad = [f for f in formats if f not in ("md", "html")]
        if bad or not formats:
            raise BenchInputError(f"--format takes md and/or html. Received: format={args.format}")
        files = build_report(load_results(args.csv), Path(args.out), formats)
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
