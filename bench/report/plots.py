"""The report's PNG plots: images/sec against batch size (with the median's 95% CI), inference
latency against batch size, scaling efficiency against workers, and test accuracy against wall
time.

Figures are made with matplotlib's object API (no pyplot), so no backend is touched and
nothing needs a display. Text from the rows (model names, strategies, settings) is drawn as
it is: math text is off while a figure is made, so `$x^{$` is a name, not a parse error.

Each figure function takes a `notes` list and appends one line per row it leaves out (no batch
size, a batch size the logarithmic axis cannot show, no images/sec), so that the report can
name every row a plot does not show.
"""
from __future__ import annotations

import functools
import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from bench.report.tables import (
    SHARED_CORES,
    SIGNIFICANCE,
    latency_table,
    latest_ok,
    model_batch_groups,
    row_words,
    scaling_efficiency,
)
from bench.report.text import visible

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# a figure grows with its panels, and matplotlib refuses an image over 2**16 pixels a side:
# 40 panels, two a row, stay far below that and still legible
MAX_PANELS = 40


def _figure(**kwargs) -> "Figure":
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def plain_text(make: Callable[..., "Figure"]) -> Callable[..., "Figure"]:
    """Make the figure with math text off: every Text keeps the setting it was made with."""
    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return make(*args, **kwargs)
    return wrapper


def _label(text: object) -> str:
    """Text from the rows as a title or legend label: control characters shown, not obeyed, and
    a leading underscore kept (matplotlib leaves labels that start with one out of the legend)."""
    s = visible(text)
    return " " + s if s.startswith("_") else s


def png_bytes(fig: "Figure") -> bytes:
    """The figure as PNG bytes: the report writes every file at once, or none."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _save(fig: "Figure", path: Path) -> Path:
    Path(path).write_bytes(png_bytes(fig))
    return path


def _left_out(notes: list[str] | None, rows: pd.DataFrame, why: str) -> None:
    if notes is not None:
        notes.extend(f"{row_words(r)}: {why}" for r in rows.to_dict("records"))


def _on_log_axis(g: pd.DataFrame, notes: list[str] | None, value: str, what: str) -> pd.DataFrame:
    """The rows of `g` a logarithmic batch axis can show with a finite `value`; the others noted."""
    batch = pd.to_numeric(g["batch_size"], errors="coerce").astype(float)
    y = pd.to_numeric(g[value], errors="coerce").astype(float)
    no_batch, bad_batch = batch.isna(), batch.notna() & (batch <= 0)
    no_y = ~no_batch & ~bad_batch & ~np.isfinite(y)
    _left_out(notes, g[no_batch], "not plotted: no batch size")
    _left_out(notes, g[bad_batch], "not plotted: its batch size is not positive (the batch axis is logarithmic)")
    _left_out(notes, g[no_y], f"not plotted: no finite {what}")
    return g[~(no_batch | bad_batch | no_y)]


def _style(ax: "Axes", legend: bool) -> None:
    if legend:  # an empty legend only draws a warning
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def median_ci_errors(rows: pd.DataFrame) -> np.ndarray:
    """Error bars for images/sec: a (2, n) array of (median - CI low, CI high - median), the
    95% CI of the median; NaN where a row has no CI."""
    median = rows["images_per_sec_median"].to_numpy(dtype=float)
    low = rows["images_per_sec_median_ci95_low"].to_numpy(dtype=float)
    high = rows["images_per_sec_median_ci95_high"].to_numpy(dtype=float)
    # clipped: rounding in a CSV can put a median a hair outside its own CI, and matplotlib
    # refuses negative error bars
    return np.clip(np.vstack([median - low, high - median]), 0.0, None)


@plain_text
def throughput_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """images/sec (median, with its 95% CI) against per-replica batch size, one panel per setting."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = list(model_batch_groups(df, short=True))
    if len(panels) > MAX_PANELS and notes is not None:
        notes.extend(f"setting {visible(title)}: not plotted: the plot shows the first {MAX_PANELS} settings "
                     "(its table shows them all)" for title, _ in panels[MAX_PANELS:])
    panels = panels[:MAX_PANELS]
    cols = min(2, max(1, len(panels)))  # two panels a row stay legible when the page scales them down
    rows = max(1, -(-len(panels) // cols))
    fig = _figure(figsize=(5.5 * cols, 3.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, g) in zip(axes.flat, panels):
        g = _on_log_axis(g, notes, "images_per_sec_median", "images/sec").sort_values("batch_size")
        for model, gm in g.groupby("model", sort=True, dropna=False):
            ax.errorbar(gm["batch_size"].astype(int), gm["images_per_sec_median"], yerr=median_ci_errors(gm),
                        marker="o", capsize=3, label=_label(model))
        ax.set(xlabel="per-replica batch size", ylabel="images/sec (median, 95% CI)")
        ax.set_title(textwrap.fill(_label(title), 52), fontsize="medium")  # a long setting wraps, never crops
        if not g.empty:  # a log axis with nothing on it has no ticks to set
            ax.set_xscale("log")
            ax.set_xticks(sorted(g["batch_size"].astype(int).unique()))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(bottom=0)  # heights compare as ratios only from zero
        _style(ax, not g.empty)
    return fig


def plot_throughput(df: pd.DataFrame, path: Path) -> Path:
    return _save(throughput_figure(df), path)


def _key_label(column: str, value: object) -> str:
    if column == "batch_size":
        return f"b{value}"
    value = "n/a" if pd.isna(value) else value
    return str(value) if column in ("model", "strategy", "data") else f"{column}={value}"


@plain_text
def scaling_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """Scaling efficiency (with its 95% CI) against replica count, one line per model, strategy
    and batch size, from the one-replica baseline at 1.0."""
    eff = scaling_efficiency(df)
    finite = np.isfinite(eff["efficiency"].astype(float))
    _left_out(notes, eff[~finite], "not plotted: no finite scaling efficiency")
    eff = eff[finite]
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    # a line per setting: every column that is a figure of one point (its test against the baseline
    # included) would split the line into points
    extra = [c for c in eff.columns if c not in ("images_per_sec", "baseline_images_per_sec", "speedup",
                                                   "efficiency", "efficiency_ci95_low", "efficiency_ci95_high",
                                                   "replicas", *SHARED_CORES, *SIGNIFICANCE)]
    drawn = False
    for values, g in eff.groupby(extra, sort=True, dropna=False):
        if len(g) > 1:  # a line needs more than the baseline point
            label = _label(" ".join(_key_label(c, v) for c, v in zip(extra, values)))
            err = np.clip(np.vstack([g["efficiency"] - g["efficiency_ci95_low"],
                                     g["efficiency_ci95_high"] - g["efficiency"]]).astype(float), 0.0, None)
            ax.errorbar(g["replicas"], g["efficiency"], yerr=err, marker="o", capsize=3, label=label)
            drawn = True
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_ylim(bottom=0)
    if drawn:
        ax.set_xticks(sorted(eff["replicas"].astype(int).unique()))
    ax.set(xlabel="replicas (workers)", ylabel="scaling efficiency (95% CI)", title="images/sec(N) / (N x images/sec(1))")
    _style(ax, drawn)
    return fig


def plot_scaling(df: pd.DataFrame, path: Path) -> Path:
    return _save(scaling_figure(df), path)


def _series(text: object) -> list[float] | None:
    """A `;`-separated list of numbers (top1_by_epoch, epoch_end_s), or None if it is not one."""
    try:
        values = [float(x) for x in str(text).split(";")]
    except ValueError:
        return None
    return values if all(np.isfinite(values)) else None


@plain_text
def accuracy_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """Test top-1 at the end of each epoch against wall time, one line per configuration."""
    acc = latest_ok(df)
    acc = acc[acc["top1_by_epoch"].notna() & (acc["top1_by_epoch"] != "")]
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    drawn = False
    for r in acc.to_dict("records"):
        top1, t = _series(r["top1_by_epoch"]), _series(r["epoch_end_s"])
        if top1 is None or t is None or len(top1) != len(t):
            _left_out(notes, pd.DataFrame([r]), "not plotted: top1_by_epoch and epoch_end_s are not two "
                      "equally long lists of finite numbers")
            continue
        ax.plot(t, top1, marker="o", label=_label(f"{r['model']} {r['strategy']} x{r['replicas']} b{r['batch_size']}"))
        drawn = True
    ax.set(xlabel="wall time (s)", ylabel="test top-1", title="accuracy against wall time")
    _style(ax, drawn)
    return fig


def plot_accuracy(df: pd.DataFrame, path: Path) -> Path:
    return _save(accuracy_figure(df), path)


@plain_text
def latency_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """Inference: per-batch latency p50 (solid) and p99 (dashed) against batch size, per model."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    lat = latency_table(df)
    lat = _on_log_axis(lat, notes, "latency_p50_ms", "p50 latency")
    positive = (lat["latency_p50_ms"] > 0) & ~(lat["latency_p99_ms"] <= 0)  # the latency axis is logarithmic too
    _left_out(notes, lat[~positive], "not plotted: its latency is not positive (the latency axis is logarithmic)")
    lat = lat[positive]
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    keys = ["model", "strategy", "replicas", "backend"]
    for (model, strategy, replicas, backend), g in lat.groupby(keys, sort=True, dropna=False):
        g = g.sort_values("batch_size")
        label = _label(f"{model} {strategy} x{replicas} {backend}")
        line, = ax.plot(g["batch_size"].astype(int), g["latency_p50_ms"], marker="o", label=f"{label} p50")
        ax.plot(g["batch_size"].astype(int), g["latency_p99_ms"], marker="x", linestyle="--",
                color=line.get_color(), label=f"{label} p99")
    ax.set(xlabel="batch size", ylabel="latency per batch (ms)", title="inference latency against batch size")
    if not lat.empty:
        ax.set(xscale="log", yscale="log")
        ax.set_xticks(sorted(lat["batch_size"].astype(int).unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    _style(ax, not lat.empty)
    return fig


def plot_latency(df: pd.DataFrame, path: Path) -> Path:
    return _save(latency_figure(df), path)
