"""The report's collective-bandwidth part (rows of `python -m bench.collectives`, which
load_results keeps apart: `apart(df, "collectives")`): bus bandwidth against message size per series
(strategy, backend, ranks, where they ran, dtype), its plot, and a finding per series naming the
peak bus bandwidth and the smallest message that reaches half of it, as nccl-tests users read it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.report.findings import Finding, ci, num
from bench.report.plots import _figure, _label, _style
from bench.results.load import apart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SERIES = ["strategy", "transport", "backend", "ranks", "hosts", "link_gbps", "dtype", "cores_per_replica"]


def rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ok collective rows, the most recent per series and size."""
    coll = apart(df, "collectives")
    if len(coll) == 0:
        return pd.DataFrame()
    ok = coll[coll["status"] == "ok"].sort_values("timestamp_utc", kind="stable")
    return ok.drop_duplicates([*SERIES, "size_bytes"], keep="last").sort_values([*SERIES, "size_bytes"], kind="stable")


def where(r: Any) -> str:
    """Where a series' ranks ran, in words: on one host they shared its cores (and talked over
    loopback), so the figure is not a network's."""
    if int(r["hosts"]) > 1:
        link = r["link_gbps"]
        return f"{int(r['hosts'])} hosts, " + ("unshaped links" if pd.isna(link) else f"{link:g} Gbit/s links")
    shared = "" if pd.isna(r["cores_per_replica"]) else f", {r['cores_per_replica']:g} core(s) per rank"
    return f"one host (loopback{shared})"


def label(r: Any) -> str:
    over = "" if pd.isna(r["transport"]) or not r["transport"] else f" over {r['transport']}"
    return f"{r['strategy']}{over}/{r['backend']}, {int(r['ranks'])} ranks, {where(r)}, {r['dtype']}"


def size_text(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{int(n)} B"


def bus_bandwidth_table(df: pd.DataFrame) -> pd.DataFrame:
    """Bus bandwidth (GB/s) by message size, one column per series."""
    ok = rows(df)
    if ok.empty:
        return ok
    ok = ok.assign(series=[label(r) for r in ok.to_dict("records")])
    table = ok.pivot_table(index="size_bytes", columns="series", values="busbw_gbs", aggfunc="last", sort=True)
    table.index = [size_text(s) for s in table.index]
    table.index.name = "message"
    table.columns.name = None
    return table


def peaks(df: pd.DataFrame) -> list[dict]:
    """Per series: the peak bus bandwidth with its CI and size, and the smallest size at half of it."""
    out: list[dict] = []
    ok = rows(df)
    if ok.empty:
        return out
    for _, g in ok.groupby(SERIES, sort=True, dropna=False):
        g = g.sort_values("size_bytes")
        top = g.loc[g["busbw_gbs"].idxmax()]
        half = g[g["busbw_gbs"] >= top["busbw_gbs"] / 2].iloc[0]
        out.append({"series": label(top), "peak": top["busbw_gbs"], "low": top["busbw_ci95_low_gbs"],
                    "high": top["busbw_ci95_high_gbs"], "at": top["size_bytes"], "half_at": half["size_bytes"],
                    "largest": g["size_bytes"].max(), "hosts": int(top["hosts"])})
    return out


def collective_findings(df: pd.DataFrame) -> list[Finding]:
    out = []
    for p in peaks(df):
        edge = " (the largest size measured: it may rise further)" if p["at"] == p["largest"] else ""
        shared = "" if p["hosts"] > 1 else "; on one host the ranks share its cores and memory, so this is not a network's figure"
        out.append(Finding("collectives", (
            f"{p['series']}: peak all-reduce bus bandwidth {num(p['peak'])} GB/s {ci(p['low'], p['high'])} at "
            f"{size_text(p['at'])}{edge}; half of it from {size_text(p['half_at'])}{shared}."), "collective-bandwidth"))
    return out


def bus_bandwidth_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """Bus bandwidth (95% CI) against message size, one line per series, both axes logarithmic."""
    ok = rows(df)
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drawn = False
    for _, g in ok.groupby(SERIES, sort=True, dropna=False):
        g = g.sort_values("size_bytes")
        err = np.clip(np.vstack([g["busbw_gbs"] - g["busbw_ci95_low_gbs"],
                                 g["busbw_ci95_high_gbs"] - g["busbw_gbs"]]).astype(float), 0.0, None)
        ax.errorbar(g["size_bytes"], g["busbw_gbs"], yerr=err, marker="o", ms=3, capsize=2,
                    label=_label(label(g.iloc[0])))
        drawn = True
    if drawn:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set(xlabel="message size (bytes)", ylabel="bus bandwidth, GB/s (95% CI)",
           title="all-reduce bus bandwidth = size / time x 2(n-1)/n")
    _style(ax, drawn)
    return fig
