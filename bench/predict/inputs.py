"""What a prediction is made from, found in measured rows: a replica's compute step (a
single-replica or --no-gradient-sync row of the same model, batch, precision and backend), the
share of it the backward pass takes (an inference row of the same configuration, where there is
one), the gradient bytes (the model's description), and a link fitted from collective rows.
Each choice says which rows it read; a choice the rows leave open is bad input, never a guess."""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping

import pandas as pd

import models
from bench.backends import select
from bench.config.key import normalise
from bench.config.schema import RunConfig, schema
from bench.errors import BenchInputError, Status
from bench.measure.collectives import DTYPE_BYTES
from bench.predict.model import BACKWARD_FRACTION, Compute, Link, fit_link
from bench.runner.aggregate import GRADIENT_BYTES

# what sets a replica's compute step: rows that differ here measured different work or machines
COMPUTE_FIELDS = ["model", "batch_size", "precision", "backend", "width", "image_size", "num_classes", "form", "data",
                  "xla", "optimizer"]
MACHINE_FIELDS = ["device_kind", "cores_per_replica"]  # the device: its own options choose among them
# what sets a collective series: one line of the collective-bandwidth plot
SERIES_FIELDS = ["strategy", "transport", "backend", "ranks", "hosts", "link_gbps", "cores_per_replica", "dtype"]
KINDS = {**{name: o.kind for name, o in schema().items()}, "device_kind": "str", "cores_per_replica": "float",
         "transport": "str", "ranks": "int", "hosts": "int", "link_gbps": "float", "dtype": "str"}
# own options that choose among rows, by column
OWN_FILTERS = {"device_kind": "--device-kind", "cores_per_replica": "--cores-per-replica"}


def _value(name: str, v: Any) -> Any:
    return normalise(KINDS.get(name, "str"), v)


def _matches(df: pd.DataFrame, wanted: Mapping[str, Any]) -> pd.Series:
    keep = pd.Series(True, index=df.index)
    for name, v in wanted.items():
        if v is None:
            continue
        column = df[name] if name in df else pd.Series(None, index=df.index, dtype=object)
        want = _value(name, v)
        keep &= column.map(lambda x, n=name: _value(n, x) == want).astype(bool)
    return keep


def _flag(name: str) -> str:
    return OWN_FILTERS.get(name, "--" + name.replace("_", "-"))


def _ambiguous(rows: pd.DataFrame, fields: list[str], what: str, where: str) -> None:
    """BenchInputError if `rows` differ in any of `fields`: the option that would choose is named."""
    for name in fields:
        if name not in rows:
            continue
        values = sorted({str(_value(name, v)) for v in rows[name]})
        if len(values) > 1:
            raise BenchInputError(f"{len(rows)} {what} in {where} differ in {name} ({', '.join(values)}): "
                                  f"choose one with {_flag(name)}")


def _files(rows: pd.DataFrame) -> str:
    return ", ".join(sorted(set(rows["source_file"]))) if "source_file" in rows and len(rows) else "the rows given"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False


def _run_command(model: str, wanted: Mapping[str, Any]) -> str:
    opts = {k: v for k, v in wanted.items() if k in schema() and k != "model" and v is not None}
    cfg = RunConfig(model=model, **{k: v for k, v in opts.items() if k != "strategy"})
    argv = [a for a in cfg.to_argv() if a not in ("--strategy", cfg.strategy)]
    return "python bench/run.py " + " ".join(argv)


def compute_row(runs: pd.DataFrame, model: str, wanted: Mapping[str, Any], strategy: str | None) -> pd.Series:
    """The measured compute step of one replica: the most recent ok training row of `model` that
    ran one replica, or ran without gradient sync, matching every value in `wanted`. Preferred, in
    order: an unsynced row of `strategy` (the same processes' compute, the strategy's own
    overheads in it), a one-replica row, any unsynced row. BenchInputError naming the run that
    would make one if none fits, or the option that would choose if the rows differ."""
    where = _files(runs)
    rows = runs[(runs["status"] == Status.OK) & (runs["model"] == model) & (runs["mode"] == "train")] \
        if len(runs) else runs
    if len(rows):
        rows = rows[rows["step_time_median_s"].map(_finite)]
        unsynced = rows["gradient_sync"].astype(object).eq(False)
        rows = rows[unsynced | (rows["replicas"] == 1)]
        rows = rows[_matches(rows, wanted)]
    if not len(rows):
        said = ", ".join(f"{k}={v}" for k, v in wanted.items() if v is not None)
        raise BenchInputError(f"no measured compute row for {model}{' (' + said + ')' if said else ''} in {where}: "
                              f"a single-replica (or --no-gradient-sync) training row makes one, e.g. "
                              f"`{_run_command(model, wanted)}`")
    _ambiguous(rows, [f for f in COMPUTE_FIELDS + MACHINE_FIELDS if wanted.get(f) is None], "compute rows", where)
    rows = rows.sort_values("timestamp_utc", kind="stable")
    unsynced = rows["gradient_sync"].astype(object).eq(False)
    for pick in (unsynced & (rows["strategy"] == strategy), ~unsynced, unsynced):
        if pick.any():
            return rows[pick].iloc[-1]
    raise AssertionError("unreachable: rows is not empty")


def row_words(r: pd.Series) -> str:
    """A measured row as a prediction's inputs name it."""
    how = "without gradient sync" if r.get("gradient_sync") is False or str(r.get("gradient_sync")) == "False" \
        else "one replica"
    return (f"{r['model']} {r['strategy']}/{r['backend']} {how}, batch {int(r['batch_size'])}, {r['precision']}, "
            f"width {r['width']:g}, run {r['run_id']} of {r['source_file']}")


def compute_from_row(r: pd.Series, runs: pd.DataFrame) -> Compute:
    """A Compute from a measured row: its median step and 95% CI; the backward share from an
    inference row of the same configuration (1 - forward/step), else 2/3."""
    step = float(r["step_time_median_s"])
    lo, hi = (float(r.get(c)) if _finite(r.get(c)) else step
              for c in ("step_time_median_ci95_low_s", "step_time_median_ci95_high_s"))
    fraction, how = BACKWARD_FRACTION, "2/3 of it, as the FLOPs say (no inference row of this configuration)"
    if len(runs):
        same = runs[(runs["status"] == Status.OK) & (runs["mode"] == "inference")
                    & _matches(runs, {f: r.get(f) for f in COMPUTE_FIELDS if f not in ("optimizer",)})
                    & runs["step_time_median_s"].map(_finite)]
        if len(same):
            fwd = same.sort_values("timestamp_utc", kind="stable").iloc[-1]
            fraction = min(1.0, max(0.0, 1.0 - float(fwd["step_time_median_s"]) / step))
            how = f"{fraction:.2f} of it: 1 - forward/step, the forward from inference run {fwd['run_id']}"
    basis = (f"compute {1e3 * step:.4g} ms per step [95% CI {1e3 * lo:.4g}, {1e3 * hi:.4g}] from {row_words(r)}; "
             f"backward {how}")
    return Compute(step, min(lo, step), max(hi, step), fraction, basis)


def gradient_bytes(cfg_values: Mapping[str, Any], row: pd.Series | None, compression: str) -> tuple[int, str]:
    """The bytes one step all-reduces: trainable parameters x 4 (float32 gradients under every
    precision), halved by Horovod's fp16 compression; the row's own count where it has one (the
    run's description of the model), else the model described now."""
    if row is not None and _finite(row.get("gradient_bytes")):
        fp32, how = int(row["gradient_bytes"]), f"{int(row['gradient_bytes']) // GRADIENT_BYTES:,} trainable params"
    else:
        desc = describe(cfg_values)
        fp32, how = GRADIENT_BYTES * desc.trainable_params, f"{desc.trainable_params:,} trainable params"
    if compression == "fp16":
        return fp32 * DTYPE_BYTES["fp16"] // GRADIENT_BYTES, f"{how} x 2 bytes (fp16 compression)"
    return fp32, f"{how} x {GRADIENT_BYTES} bytes (fp32 gradients)"


def describe(values: Mapping[str, Any]) -> "models.describe.ModelDescription":
    """The model's description (shapes only) for a configuration's values."""
    if "keras" not in sys.modules:
        select(str(values.get("backend") or "tensorflow"))
    plain = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}  # numpy scalars from rows
    cfg = RunConfig(**{k: v for k, v in plain.items() if k in schema() and v is not None and v == v}
                    ).resolved(has_gpu=False)
    try:
        return models.describe(cfg.model, num_classes=cfg.num_classes, width=cfg.width,
                               input_shape=(cfg.image_size, cfg.image_size, 3), form=cfg.form)
    except models.ModelShapeError as e:
        raise BenchInputError(f"{e}. Received: image_size={cfg.image_size}, form={cfg.form}") from None


def series(coll: pd.DataFrame, wanted: Mapping[str, Any], where_words: str) -> pd.DataFrame:
    """The one collective series (all its sizes, the most recent row per size) matching `wanted`;
    BenchInputError if none does, or naming what would choose between several."""
    where = _files(coll)
    rows = coll[(coll["status"] == Status.OK) & (coll["op"] == "allreduce")] if len(coll) else coll
    if len(rows):
        rows = rows[_matches(rows, {k: v for k, v in wanted.items() if k != "link_gbps"})]
        if "link_gbps" in wanted:  # a number, or None for an unshaped link: both are a choice here
            want = _value("link_gbps", wanted["link_gbps"])
            rows = rows[rows["link_gbps"].map(lambda x: _value("link_gbps", x) == want).astype(bool)]
    if not len(rows):
        said = ", ".join(f"{k}={v}" for k, v in wanted.items())
        raise BenchInputError(f"no collective rows for {where_words} ({said}) in {where}: "
                              f"`python -m bench.collectives` measures them")
    for name in SERIES_FIELDS:
        if name in wanted or name not in rows:
            continue
        values = sorted({str(_value(name, v)) for v in rows[name]})
        if len(values) > 1:
            choose = {"link_gbps": "--collectives-link", "transport": "--transport", "hosts": "--collectives-link",
                      "ranks": "--collectives-ranks"}.get(name, "--rows with one series")
            raise BenchInputError(f"the collective rows in {where} hold several series that differ in {name} "
                                  f"({', '.join(values)}): choose one with {choose}")
    rows = rows.sort_values("timestamp_utc", kind="stable").drop_duplicates("size_bytes", keep="last")
    return rows.sort_values("size_bytes")


def link_from_series(rows: pd.DataFrame) -> Link:
    """The link a collective series measured, fitted (bench.predict.model.fit_link)."""
    r = rows.iloc[0]
    hosts = int(r["hosts"]) if _finite(r.get("hosts")) else 1
    gbps = float(r["link_gbps"]) if _finite(r.get("link_gbps")) else None
    place = (f"{hosts} hosts, " + (f"{gbps:g} Gbit/s links" if gbps else "unshaped links")) if hosts > 1 \
        else "one host"
    over = f" over {r['transport']}" if isinstance(r.get("transport"), str) and r["transport"] else ""
    basis = (f"{r['strategy']}{over}/{r['backend']} all-reduce, {int(r['ranks'])} ranks, {place}, {r['dtype']} "
             f"({_files(rows)})")
    def edge(column: str) -> list[float]:
        return list(rows[column].where(rows[column].map(_finite), rows["time_median_s"]).astype(float))

    return fit_link(list(rows["size_bytes"].astype(float)), list(rows["time_median_s"].astype(float)),
                    int(r["ranks"]), basis, lows=edge("time_median_ci95_low_s"), highs=edge("time_median_ci95_high_s"),
                    gbps=gbps)
