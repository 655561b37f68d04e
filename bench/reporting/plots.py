"""The report's PNG plots: images/sec against batch size (with the median's 95% CI), inference
latency against batch size, scaling efficiency against workers, and test accuracy against wall
time.

Figures are made with matplotlib's object API (no pyplot), so no backend or global state is
touched and nothing needs a display.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .tables import latency_table, latest_ok, model_batch_groups, scaling_efficiency

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(**kwargs) -> "Figure":
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def _save(fig: "Figure", path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


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


def throughput_figure(df: pd.DataFrame) -> "Figure":
    """images/sec (median, with its 95% CI) against per-replica batch size, one panel per setting."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = list(model_batch_groups(df, short=True))
    cols = min(2, max(1, len(panels)))  # two panels a row stay legible when the page scales them down
    rows = max(1, -(-len(panels) // cols))
    fig = _figure(figsize=(5.5 * cols, 3.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, g) in zip(axes.flat, panels):
        g = g[g["batch_size"].notna()].sort_values("batch_size")
        for model, gm in g.groupby("model", sort=True):
            ax.errorbar(gm["batch_size"].astype(int), gm["images_per_sec_median"], yerr=median_ci_errors(gm),
                        marker="o", capsize=3, label=model)
        ax.set(xlabel="per-replica batch size", ylabel="images/sec (median, 95% CI)", xscale="log")
        ax.set_ylim(bottom=0)  # heights compare as ratios only from zero
        ax.set_title(textwrap.fill(title, 52), fontsize="medium")  # a long setting wraps, never crops
        ax.set_xticks(sorted(g["batch_size"].astype(int).unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        _style(ax, not g.empty)
    return fig


def plot_throughput(df: pd.DataFrame, path: Path) -> Path:
    return _save(throughput_figure(df), path)


def _label(column: str, value: object) -> str:
    if column == "batch_size":
        return f"b{value}"
    value = "n/a" if pd.isna(value) else value
    return str(value) if column in ("model", "strategy", "data") else f"{column}={value}"


def plot_scaling(df: pd.DataFrame, path: Path) -> Path:
    """Scaling efficiency (with its 95% CI) against replica count, one line per model, strategy
    and batch size, from the one-replica baseline at 1.0."""
    eff = scaling_efficiency(df)
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    extra = [c for c in eff.columns if c not in ("images_per_sec", "baseline_images_per_sec", "speedup",
                                                   "efficiency", "efficiency_ci95_low", "efficiency_ci95_high",
                                                   "replicas")]
    drawn = False
    for values, g in eff.groupby(extra, sort=True, dropna=False):
        if len(g) > 1:  # a line needs more than the baseline point
            label = " ".join(_label(c, v) for c, v in zip(extra, values))
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
    return _save(fig, path)


def plot_accuracy(df: pd.DataFrame, path: Path) -> Path:
    """Test top-1 at the end of each epoch against wall time, one line per configuration."""
    acc = latest_ok(df)
    acc = acc[acc["top1_by_epoch"].notna() & (acc["top1_by_epoch"] != "")]
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    for _, r in acc.iterrows():
        top1 = [float(x) for x in str(r["top1_by_epoch"]).split(";")]
        t = [float(x) for x in str(r["epoch_end_s"]).split(";")]
        ax.plot(t, top1, marker="o", label=f"{r['model']} {r['strategy']} x{r['replicas']} b{r['batch_size']}")
    ax.set(xlabel="wall time (s)", ylabel="test top-1", title="accuracy against wall time")
    _style(ax, not acc.empty)
    return _save(fig, path)


def plot_latency(df: pd.DataFrame, path: Path) -> Path:
    """Inference: per-batch latency p50 (solid) and p99 (dashed) against batch size, per model."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    lat = latency_table(df)
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    keys = ["model", "strategy", "replicas", "backend"]
    for (model, strategy, replicas, backend), g in lat.groupby(keys, sort=True):
        g = g.sort_values("batch_size")
        label = f"{model} {strategy} x{replicas} {backend}"
        line, = ax.plot(g["batch_size"].astype(int), g["latency_p50_ms"], marker="o", label=f"{label} p50")
        ax.plot(g["batch_size"].astype(int), g["latency_p99_ms"], marker="x", linestyle="--",
                color=line.get_color(), label=f"{label} p99")
    ax.set(xlabel="batch size", ylabel="latency per batch (ms)", xscale="log", yscale="log",
           title="inference latency against batch size")
    if not lat.empty:
        ax.set_xticks(sorted(lat["batch_size"].astype(int).unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    _style(ax, not lat.empty)
    return _save(fig, path)
