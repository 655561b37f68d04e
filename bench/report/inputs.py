"""The report's input-pipeline part: each input ceiling (rows of --mode input, the pipeline
alone, which load_results keeps in `apart(df, "inputs")`, away from every training table) beside
the training throughput of the same pipeline, and the finding that names the training runs the
input bounds.

A training row and an input row are the same pipeline when they agree in every key field except
the model's own options (bench.config.schema.MODEL_OPTIONS), the model and the mode, and what
changes only the run's length or its labels: the same data, image size, batch size, backend,
data workers, preprocessing, strategy and replicas."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.config.schema import MODEL_OPTIONS
from bench.errors import Status
from bench.measure.stats import ratio_ci95
from bench.report import tables
from bench.report.findings import Finding, ci, num
from bench.results.load import apart

SECTION = "input-pipeline"
# the rule: a training step that waits more than WAIT_SHARE of itself for its batch, or that runs at
# more than CEILING_SHARE of what the pipeline alone delivers, is bound by its input
WAIT_SHARE = 0.05
CEILING_SHARE = 0.90
LIKELY, POSSIBLY, NOT_BOUND = "likely input-bound", "possibly input-bound", "not input-bound"
RULE = (f"the rule: the training step waits more than {WAIT_SHARE:.0%} of its time for its batch, or training "
        f"reaches more than {CEILING_SHARE:.0%} of the input ceiling of the same pipeline with the ratio's 95% CI "
        f"above {CEILING_SHARE:.0%}; above {CEILING_SHARE:.0%} with a CI reaching below it is only 'possibly'")
NOT_PIPELINE = {"model", "mode", "steps", "num_classes", "seed", *MODEL_OPTIONS}
SAME = [k for k in tables.KEY_COLUMNS if k not in NOT_PIPELINE]
SHOWN = ["data", "image_size", "batch_size", "backend", "data_workers", "strategy", "replicas"]
MAX_NAMED = 6


def verdict(wait_share: float, ratio: float, ratio_low: float) -> str:
    """The rule (RULE) on one training row against its ceiling. NaN compares false: a figure that
    is missing is no evidence."""
    if wait_share > WAIT_SHARE or ratio_low > CEILING_SHARE:
        return LIKELY
    return POSSIBLY if ratio > CEILING_SHARE else NOT_BOUND


def _pipeline_keys(rows: pd.DataFrame) -> list[tuple]:
    keys = tables.key_frame(rows)
    return [tuple(r) for r in keys[SAME].itertuples(index=False)]


def _f(v: Any) -> float:
    v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return float(v) if pd.notna(v) else np.nan


def ceilings(df: pd.DataFrame) -> pd.DataFrame:
    """The input rows, the most recent ok one per configuration (the median of its repeats' where
    it has 3 or more: tables.latest_ok)."""
    inp = apart(df, "inputs")
    return tables.latest_ok(inp) if len(inp) else pd.DataFrame()


def pairs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per input ceiling and training row of the same pipeline (a ceiling with none keeps
    a row of its own, its training columns empty): the figures of both, the ratio training /
    ceiling with its 95% CI, the training step's input wait as a share of its mean, and the verdict."""
    ceil = ceilings(df)
    if ceil.empty:
        return pd.DataFrame()
    train = tables.latest_ok(df) if len(df) else pd.DataFrame()
    if not train.empty:  # throughput runs only: accuracy mode's steps include evaluation waits
        train = train[(train["mode"].astype(object) == "train")
                      & (pd.to_numeric(train["epochs"], errors="coerce").fillna(0) == 0)]
    by_key: dict[tuple, list] = {}
    if not train.empty:
        for key, (_, t) in zip(_pipeline_keys(train), train.iterrows()):
            by_key.setdefault(key, []).append(t)
    rows = []
    for key, (_, c) in zip(_pipeline_keys(ceil), ceil.iterrows()):
        base = {**dict(zip(SAME, key)),
                "ceiling": _f(c["images_per_sec_median"]), "ceiling_low": _f(c["images_per_sec_median_ci95_low"]),
                "ceiling_high": _f(c["images_per_sec_median_ci95_high"]), "ceiling_p99_ms": _f(c["latency_p99_ms"]),
                "ceiling_runs": c.get("runs")}
        matched = sorted(by_key.get(key, []), key=lambda t: str(t["model"]))
        if not matched:
            rows.append({**base, "model": None})
        for t in matched:
            ips, low, high = (_f(t[k]) for k in ("images_per_sec_median", "images_per_sec_median_ci95_low",
                                                   "images_per_sec_median_ci95_high"))
            ratio, r_low, r_high = ratio_ci95(ips, low, high, base["ceiling"], base["ceiling_low"],
                                              base["ceiling_high"])
            share = _f(t.get("data_wait_ms")) / (1000.0 * _f(t["step_time_mean_s"]))
            rows.append({**base, "model": t["model"], "train": ips, "train_low": low, "train_high": high,
                         "ratio": ratio, "ratio_low": r_low, "ratio_high": r_high, "wait_share": share,
                         "verdict": verdict(share, ratio, r_low)})
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> pd.DataFrame:
    """The section's table: each ceiling with its 95% CI and p99 batch latency, and each training
    row of its pipeline with its images/sec, the ratio to the ceiling, its input wait and the verdict."""
    p = pairs(df)
    if p.empty:
        return p
    extra = [f for f in SAME if f not in SHOWN and p[f].map(repr).nunique() > 1]  # what else tells rows apart

    out = pd.DataFrame({
        **{f: p[f].map(workers) if f == "data_workers" else p[f] for f in [*SHOWN, *extra]},
        "input images/sec": p["ceiling"],
        "input 95% CI": [ci(lo, hi) for lo, hi in zip(p["ceiling_low"], p["ceiling_high"])],
        "input p99 ms/batch": p["ceiling_p99_ms"],
        "model": p["model"],
    })
    if "train" in p:
        out["training images/sec"] = p["train"]
        out["training / ceiling"] = p["ratio"]
        out["ratio 95% CI"] = [ci(lo, hi) if pd.notna(m) else "" for m, lo, hi in
                               zip(p["model"], p["ratio_low"], p["ratio_high"])]
        out["input wait % of step"] = 100.0 * p["wait_share"]
        out["verdict"] = p["verdict"]
    return out


def workers(v: Any) -> str:
    """--data-workers as the row says it: a count, or auto (the pipeline's own choice)."""
    return "auto" if v is None or pd.isna(v) else str(int(v))


def _words(r: Any) -> str:
    dw = workers(r["data_workers"])
    return (f"{r['model']} (batch {r['batch_size']}, {r['strategy']} ×{r['replicas']}, {r['backend']}, {r['data']} "
            f"at {r['image_size']} px, data workers {dw}): {num(r['train'])} images/sec against a ceiling of "
            f"{num(r['ceiling'])}, {num(r['ratio'])}× {ci(r['ratio_low'], r['ratio_high'])}, waiting "
            f"{100 * r['wait_share']:.1f}% of the step" if np.isfinite(r["wait_share"]) else
            f"{r['model']} (batch {r['batch_size']}, {r['strategy']} ×{r['replicas']}, {r['backend']}, {r['data']} "
            f"at {r['image_size']} px, data workers {dw}): {num(r['train'])} images/sec against a ceiling of "
            f"{num(r['ceiling'])}, {num(r['ratio'])}× {ci(r['ratio_low'], r['ratio_high'])}, its wait not timed")


def _named(rows: pd.DataFrame) -> str:
    more = f"; and {len(rows) - MAX_NAMED} more" if len(rows) > MAX_NAMED else ""
    return "; ".join(_words(r) for r in rows.head(MAX_NAMED).to_dict("records")) + more


def input_findings(df: pd.DataFrame) -> list[Finding]:
    """Which training configurations their input bounds (RULE), naming each; where none is, the
    closest to its ceiling."""
    p = pairs(df)
    if p.empty or "verdict" not in p:
        return []
    p = p[p["model"].notna()]
    likely, possibly = p[p["verdict"] == LIKELY], p[p["verdict"] == POSSIBLY]
    out = []
    if not likely.empty:
        out.append(Finding("input", f"Input-bound training: {len(likely)} of {len(p)} configuration(s) with an input "
                           f"ceiling are likely input-bound ({RULE}): {_named(likely)}.", SECTION))
    if not possibly.empty:
        out.append(Finding("input", f"Possibly input-bound: {len(possibly)} configuration(s) reach more than "
                           f"{CEILING_SHARE:.0%} of their input ceiling, but the ratio's 95% CI reaches below "
                           f"{CEILING_SHARE:.0%} and the step waits at most {WAIT_SHARE:.0%} for input ({RULE}): "
                           f"{_named(possibly)}.", SECTION))
    if likely.empty and possibly.empty:
        closest = p.loc[p["ratio"].fillna(-np.inf).idxmax()]
        out.append(Finding("input", f"No training run is input-bound ({RULE}) in the {len(p)} configuration(s) with "
                           f"an input ceiling; the closest: {_words(closest)}.", SECTION))
    return out


def failed(df: pd.DataFrame) -> list[str]:
    """The input rows that did not end ok, one line each (the failures section sees only training
    and inference rows)."""
    inp = apart(df, "inputs")
    if not len(inp):
        return []
    bad = inp[inp["status"] != Status.OK]
    return [f"input pipeline {r['data']} batch {r['batch_size']} {r['strategy']} ×{r['replicas']} {r['backend']}: "
            f"status {r['status'] or 'none'}: {r['error']}" for r in bad.to_dict("records")]
