"""The report's predicted-scaling part (rows of `cnnbench predict`, which load_results keeps in
`apart(df, "predictions")`, away from every measured row): per predicted series, the step band
against the device count with the measured points of the same configuration on it, a table, and
a finding naming the largest device count whose efficiency stays at or above 90%."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.errors import Status
from bench.report.findings import Finding, num
from bench.report.plots import _figure, _label, plain_text
from bench.results.load import apart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THRESHOLD = 0.9
# one prediction's inputs and algorithm make a series; rerunning it replaces it
SERIES = ["pred_basis", "pred_algorithm", "strategy"]
# what a measured row shares with the prediction it is drawn on: the compute and where it ran
SAME = ["model", "batch_size", "precision", "backend", "width", "image_size", "strategy"]


def rows(df: pd.DataFrame) -> pd.DataFrame:
    """The prediction rows, the most recent per series and device count."""
    pred = apart(df, "predictions")
    if len(pred) == 0:
        return pd.DataFrame()
    pred = pred[pred["status"] == Status.OK].sort_values("timestamp_utc", kind="stable")
    pred = pred.drop_duplicates([*SERIES, "replicas"], keep="last")
    return pred.sort_values([*SERIES, "replicas"], kind="stable")


def label(r: Any) -> str:
    link = ""
    if pd.notna(r.get("link_gbps")):
        link = f", {r['link_gbps']:g} Gbit/s between nodes"
    per = int(r["pred_gpus_per_node"]) if pd.notna(r.get("pred_gpus_per_node")) else 1
    node = f", {per} per node" if per > 1 else ""
    return (f"{r['model']} w{r['width']:g} b{int(r['batch_size'])} {r['strategy']}/{r['backend']} {r['precision']}, "
            f"{r['pred_algorithm']}{node}{link}")


def _same(a: Any, b: Any) -> bool:
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def measured_points(df: pd.DataFrame, r: Any) -> pd.DataFrame:
    """The measured synced training rows of the prediction row's configuration and place: the
    same compute (model, batch, precision, backend, width, image size), strategy, device count,
    hosts and link."""
    if not len(df):
        return df
    ok = df[(df["status"] == Status.OK) & (df["mode"] == "train") & df["gradient_sync"].astype(object).ne(False)]
    keep = [all(_same(m.get(c), r.get(c)) for c in [*SAME, "replicas", "hosts", "link_gbps"])
            for m in ok.to_dict("records")]
    return ok[keep].sort_values("timestamp_utc", kind="stable").tail(1)


def _series(df: pd.DataFrame):
    pred = rows(df)
    if pred.empty:
        return
    for _, g in pred.groupby(SERIES, sort=False, dropna=False):
        yield g.sort_values("replicas")


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per predicted device count: the band, the midpoint's images/sec and efficiency,
    the communication share, and the measured step of the same configuration where there is one."""
    out = []
    for g in _series(df):
        name = label(g.iloc[-1])
        for r in g.to_dict("records"):
            m = measured_points(df, r)
            measured = 1e3 * float(m.iloc[0]["step_time_median_s"]) if len(m) else np.nan
            out.append({"prediction": name, "devices": int(r["replicas"]), "nodes": int(r["hosts"]),
                        "step_ms": 1e3 * r["step_time_median_s"], "band_low_ms": 1e3 * r["pred_step_low_s"],
                        "band_high_ms": 1e3 * r["pred_step_high_s"], "images_per_sec": r["images_per_sec_median"],
                        "efficiency": r["pred_efficiency"], "efficiency_low": r["pred_efficiency_low"],
                        "efficiency_high": r["pred_efficiency_high"], "comm_share": r["pred_comm_share"],
                        "measured_step_ms": measured})
    return pd.DataFrame(out)


def largest(g: pd.DataFrame, column: str) -> int | None:
    best = None
    for r in g.sort_values("replicas").to_dict("records"):
        if not r[column] >= THRESHOLD:
            break
        best = int(r["replicas"])
    return best


def prediction_findings(df: pd.DataFrame) -> list[Finding]:
    out = []
    for g in _series(df):
        top = g.iloc[-1]
        mid, low = largest(g, "pred_efficiency"), largest(g, "pred_efficiency_low")
        span = f"of the {len(g)} device counts predicted, up to {int(top['replicas'])}"
        if mid is None or mid == int(g.iloc[0]["replicas"]) and len(g) > 1:
            first = g[g["pred_efficiency"] < THRESHOLD].iloc[0]
            said = (f"efficiency falls below 90% from {int(first['replicas'])} devices "
                    f"({num(first['pred_efficiency'])} there; {span})")
        else:
            said = (f"efficiency stays at or above 90% up to {mid} devices at the band's midpoint, up to "
                    f"{low} at its pessimistic edge" if low else
                    f"efficiency stays at or above 90% up to {mid} devices at the band's midpoint (its pessimistic "
                    f"edge is below 90% from the first)")
            said += f" ({span}; at {int(top['replicas'])}: {num(top['pred_efficiency'])})"
        out.append(Finding("prediction", f"Predicted, not measured: {label(top)}: {said}.", "predicted-scaling"))
    return out


@plain_text
def band_figure(df: pd.DataFrame, notes: list[str] | None = None) -> "Figure":
    """Predicted scaling efficiency (band and midpoint) against devices, one line per series, with
    the measured points of the same configuration on it (the one-device step over the measured
    median step, with its 95% CI); devices on a logarithmic axis."""
    series = list(_series(df))
    fig = _figure(figsize=(7.5, 4.2 + 0.22 * len(series)))
    ax = fig.subplots()
    for g in series:
        x = g["replicas"].astype(float).to_numpy()
        line = ax.plot(x, g["pred_efficiency"].astype(float), marker=".", label=_label(label(g.iloc[-1])))[0]
        ax.fill_between(x, g["pred_efficiency_low"].astype(float), g["pred_efficiency_high"].astype(float),
                        color=line.get_color(), alpha=0.18)
        for r in g.to_dict("records"):
            m = measured_points(df, r)
            if not len(m):
                continue
            base = float(r["pred_compute_s"])
            step = float(m.iloc[0]["step_time_median_s"])
            lo, hi = (float(m.iloc[0].get(c, np.nan)) for c in ("step_time_median_ci95_low_s",
                                                                  "step_time_median_ci95_high_s"))
            eff = base / step
            err = np.clip([[eff - base / hi], [base / lo - eff]], 0, None) if np.isfinite(lo) and np.isfinite(hi) \
                else None
            ax.errorbar([r["replicas"]], [eff], yerr=err, color=line.get_color(), marker="s", ms=6, mec="black",
                        capsize=3, ls="none")
    if series:
        ax.set_xscale("log", base=2)
        # plain labels: with math text off (plain_text) the log axis' own would print as markup
        ticks = sorted({int(n) for g in series for n in g["replicas"]})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    ax.axhline(THRESHOLD, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set(xlabel="devices", ylabel="scaling efficiency",
           title="PREDICTED efficiency: band from no to full overlap; squares measured")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
