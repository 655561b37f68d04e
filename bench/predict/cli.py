"""`cnnbench predict MODEL --rows CSV... [options]`: what N devices on a given network would do,
predicted from measured rows, and checked against measured rows with --validate.

    cnnbench predict resnet18 --rows results/runs.csv results/collectives.csv --batch-size 16
    cnnbench predict resnet18 --rows results/examples/gpu/h200.csv --batch-size 2048 \\
        --gpus-per-node 8 --intra-gbps 7200 --intra-latency-us 3 --link-gbps 400 --latency-us 6 \\
        --nodes 1,2,4,8,16,32,64 --algorithm ring,hierarchical
    cnnbench predict --validate --rows runs.csv collectives.csv     # every measured distributed row

Inputs, each from rows where rows exist: a replica's compute step (the most recent ok
single-replica or --no-gradient-sync training row of MODEL matching the run options given:
--batch-size, --precision, --backend, --width, ...; --compute-ms only where no row exists, as for a
published figure), the gradient bytes (the model's trainable parameters x 4, x 2 with
--hvd-compression fp16), and the links: the link between nodes fitted from collective rows
(`python -m bench.collectives`, at least 3 message sizes) measured across hosts, or given as
--link-gbps and --latency-us; within a node of --gpus-per-node devices, --intra-gbps and
--intra-latency-us (or collective rows measured on one host). Devices: powers of two up to
--max-devices, any --devices, and --nodes x --gpus-per-node.

For each device count and --algorithm: the step time as a band (no overlap of the all-reduce
with the backward pass at its high edge, full overlap at its low one, each edge widened by its
inputs' 95% CIs) and its midpoint, images/sec, scaling efficiency and the communication share.
The rows go to --output (default results/predictions.csv) with source=prediction: into a file
of measured rows only with --append, and reports keep them apart from measured ones.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

import models
from bench.config.parse import OneLineParser, parse_value, read_options
from bench.config.schema import Opt
from bench.errors import BenchInputError, ExitCode, input_error, interrupted
from bench.predict import inputs
from bench.predict.model import ALGORITHMS, Compute, Fabric, Link, Point, largest_efficient, predict_point
from bench.predict.model import device_counts as _device_counts
from bench.predict.validate import validation_table
from bench.report.render import markdown_table
from bench.results.columns import PREDICTION_SOURCE, RUNS
from bench.results.load import apart, load_results
from bench.results.provenance import provenance
from bench.results.store import OutputRefused, append_rows, check_output, read_rows
from launch import get_strategy

DEFAULT_OUTPUT = "results/predictions.csv"
MULTI_HOST = ("horovod", "multiworker")  # the strategies whose processes span hosts
# the run options that choose the compute row (and the strategy whose all-reduce is modelled)
RUN_FILTERS = (*inputs.COMPUTE_FIELDS[1:], "strategy", "hvd_compression")
GBPS = Opt("float", lo=0.0, hi=1e7, lo_open=True)
LATENCY_US = Opt("float", lo=0.0, hi=1e7)
COUNT = Opt("int", lo=1, hi=2**20)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="cnnbench predict", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="the model (with --validate: none)")
    p.add_argument("--rows", nargs="+", default=[], metavar="CSV",
                   help="measured rows: run CSVs (compute) and collective CSVs (links)")
    p.add_argument("--validate", action="store_true",
                   help="predict every measured distributed training row in --rows from its own inputs and "
                        "compare (nothing is written)")
    p.add_argument("--compute-ms", help="a replica's step in ms where no row measured it (a published figure)")
    p.add_argument("--backward-fraction", help="the share of the compute step that is the backward pass "
                                               "(default: from an inference row, else 2/3)")
    p.add_argument("--device-kind", help="choose compute rows of this device_kind")
    p.add_argument("--cores-per-replica", help="choose compute rows of this many cores per replica")
    p.add_argument("--link-gbps", help="the link between nodes, Gbit/s (instead of collective rows)")
    p.add_argument("--latency-us", help="its latency per message, microseconds (with --link-gbps)")
    p.add_argument("--gpus-per-node", default="1", help="devices per node (default 1)")
    p.add_argument("--intra-gbps", help="the link within a node, Gbit/s (with --gpus-per-node > 1)")
    p.add_argument("--intra-latency-us", help="its latency per message, microseconds")
    p.add_argument("--collectives-link", help="choose the collective series of this link: Gbit/s, unshaped "
                                              "(emulated hosts, no shaping) or loopback (one host)")
    p.add_argument("--transport", help="choose the collective series of this transport (gloo, mpi)")
    p.add_argument("--collectives-ranks", help="choose the collective series of this many ranks")
    p.add_argument("--algorithm", default="ring", help=f"comma-separated, of {', '.join(ALGORITHMS)} (default ring)")
    p.add_argument("--max-devices", default="64", help="predict 1, 2, 4, ... up to this many devices (default 64)")
    p.add_argument("--devices", help="comma-separated device counts to predict as well")
    p.add_argument("--nodes", help="comma-separated node counts to predict as well (x --gpus-per-node devices)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"CSV for the prediction rows (default {DEFAULT_OUTPUT}; "
                                                           "'-' for none)")
    p.add_argument("--append", action="store_true",
                   help="allow --output to be a CSV of measured rows (the predictions go in as source=prediction)")
    return p


@dataclasses.dataclass(frozen=True)
class Request:
    model: str | None
    rows: list[str]
    validate: bool
    run: dict[str, Any]           # run options given (filters)
    compute_ms: float | None
    backward_fraction: float | None
    machine: dict[str, Any]       # device_kind, cores_per_replica
    link: tuple[float, float] | None
    intra: tuple[float, float] | None
    gpus_per_node: int
    series: dict[str, Any]        # choices among collective series
    algorithms: list[str]
    devices: list[int]
    output: str | None
    append: bool


def _ints(name: str, text: str | None) -> list[int]:
    if text is None:
        return []
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise BenchInputError(f"--{name.replace('_', '-')} takes comma-separated counts. Received: {name}={text!r}")
    return [parse_value(name, Opt("int", lo=-2**31, hi=2**31), t) for t in parts]


def _link(gbps: str | None, latency: str | None, flag: str) -> tuple[float, float] | None:
    if gbps is None and latency is None:
        return None
    if gbps is None or latency is None:
        given, missing = (f"--{flag}-gbps", f"--{flag}-latency-us") if latency is None else \
            (f"--{flag}-latency-us", f"--{flag}-gbps")
        given, missing = (given.replace("--link-latency", "--latency"), missing.replace("--link-latency", "--latency"))
        raise BenchInputError(f"{given} needs {missing} too: a link is a bandwidth and a latency. Received: "
                              f"{flag}_gbps={gbps}, {flag}_latency_us={latency}")
    return (parse_value(f"{flag}_gbps", GBPS, gbps), parse_value(f"{flag}_latency_us", LATENCY_US, latency))


def parse(argv: list[str]) -> Request:
    own, rest = _parser().parse_known_args(argv)
    run = read_options(rest)
    foreign = [k for k in run if k not in RUN_FILTERS]
    if foreign:
        raise BenchInputError(f"--{foreign[0].replace('_', '-')} is not an option of cnnbench predict (of the run "
                              f"options it takes {', '.join('--' + k.replace('_', '-') for k in RUN_FILTERS)}). "
                              f"Received: {foreign[0]}={run[foreign[0]]}")
    if own.validate == bool(own.model):
        raise BenchInputError("give a model to predict, or --validate without one. Received: "
                              f"model={own.model!r}, validate={own.validate}")
    if own.model is not None and own.model not in models.list_models():
        raise BenchInputError(f"unknown model {own.model!r}; valid models: {', '.join(models.list_models())}")
    if not own.rows and (own.validate or own.compute_ms is None):
        raise BenchInputError("give the measured rows with --rows CSV [CSV ...] (or --compute-ms where no row "
                              "measured the compute step)")
    for f in own.rows:
        if not Path(f).is_file():
            raise BenchInputError(f"no such results file: {f}")
    g = parse_value("gpus_per_node", COUNT, own.gpus_per_node)
    link = _link(own.link_gbps, own.latency_us, "link")
    intra = _link(own.intra_gbps, own.intra_latency_us, "intra")
    if intra is not None and g == 1:
        raise BenchInputError(f"--intra-gbps describes the link within a node, but --gpus-per-node is 1. Received: "
                              f"intra_gbps={own.intra_gbps}, gpus_per_node={own.gpus_per_node}")
    algorithms = [a.strip() for a in own.algorithm.split(",") if a.strip()]
    if not algorithms or any(a not in ALGORITHMS for a in algorithms):
        raise BenchInputError(f"--algorithm takes {', '.join(ALGORITHMS)}. Received: algorithm={own.algorithm!r}")
    if "hierarchical" in algorithms and g == 1:
        raise BenchInputError("--algorithm hierarchical all-reduces within nodes, then across them: it needs "
                              f"--gpus-per-node > 1. Received: gpus_per_node={g}")
    max_devices = parse_value("max_devices", COUNT, own.max_devices)
    devices = _device_counts(max_devices, _ints("devices", own.devices), _ints("nodes", own.nodes), g)
    compute_ms = None if own.compute_ms is None else parse_value("compute_ms", GBPS, own.compute_ms)
    if compute_ms is not None and "batch_size" not in run:
        raise BenchInputError("--compute-ms is a step of one replica at some batch: give --batch-size too. "
                              f"Received: compute_ms={own.compute_ms}")
    fraction = None if own.backward_fraction is None else parse_value(
        "backward_fraction", Opt("float", lo=0.0, hi=1.0), own.backward_fraction)
    machine = {"device_kind": own.device_kind,
               "cores_per_replica": None if own.cores_per_replica is None else
               parse_value("cores_per_replica", Opt("float", lo=0.0, hi=1e6, lo_open=True), own.cores_per_replica)}
    series: dict[str, Any] = {}
    if own.collectives_link is not None:
        text = own.collectives_link
        if text == "loopback":
            series["hosts"] = 1
        elif text == "unshaped":
            series["link_gbps"] = None
        else:
            series["link_gbps"] = parse_value("collectives_link", GBPS, text)
    if own.transport is not None:
        series["transport"] = own.transport
    if own.collectives_ranks is not None:
        series["ranks"] = parse_value("collectives_ranks", Opt("int", lo=2, hi=2**20), own.collectives_ranks)
    output = None if own.output == "-" or own.validate else own.output
    if output is not None:
        _check_output(output, own.append)
    return Request(own.model, own.rows, own.validate, run, compute_ms, fraction, machine, link, intra, g, series,
                   algorithms, devices, output, own.append)


def _check_output(path: str, append: bool) -> None:
    """Refuse an output that is not ours to grow, and, without --append, one that holds measured rows."""
    check_output(path, RUNS)
    if append or not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    measured = read_rows(path)["source"].astype(str).ne(PREDICTION_SOURCE)
    if measured.any():
        raise BenchInputError(f"refusing output={path}: it holds {int(measured.sum())} measured row(s); a "
                              "prediction goes there only with --append (then as source=prediction rows)")


# ---- the inputs, from the rows ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Inputs:
    values: dict[str, Any]      # the configuration: the compute row's, or the options'
    row: pd.Series | None       # the compute row
    compute: Compute
    gradient_bytes: int
    gradient_basis: str
    strategy: str
    fabric: Fabric
    transport: str | None
    compression: str            # Horovod's gradient compression (none, fp16)


def _compute(req: Request, runs: pd.DataFrame) -> tuple[dict[str, Any], pd.Series | None, Compute]:
    wanted = {**{k: v for k, v in req.run.items() if k in inputs.COMPUTE_FIELDS}, **req.machine}
    if req.compute_ms is not None:
        try:
            inputs.compute_row(runs, req.model, wanted, req.run.get("strategy"))
            measured = True
        except BenchInputError:  # no row fits: the figure given is the only compute there is
            measured = False
        if measured:
            raise BenchInputError(f"--compute-ms contradicts a measured compute row of {req.model} in --rows: drop "
                                  "one of them")
        step = req.compute_ms / 1e3
        fraction = req.backward_fraction if req.backward_fraction is not None else inputs.BACKWARD_FRACTION
        return ({"model": req.model, **req.run}, None,
                Compute(step, step, step, fraction, f"compute {req.compute_ms:g} ms per step (given); backward "
                        f"{fraction:.2f} of it"))
    row = inputs.compute_row(runs, req.model, wanted, req.run.get("strategy"))
    compute = inputs.compute_from_row(row, runs)
    if req.backward_fraction is not None:
        compute = dataclasses.replace(compute, backward_fraction=req.backward_fraction,
                                      basis=compute.basis.split("; backward")[0] +
                                      f"; backward {req.backward_fraction:.2f} of it (given)")
    values = {f: row.get(f) for f in inputs.COMPUTE_FIELDS}
    return values, row, compute


def _links(req: Request, coll: pd.DataFrame, strategy: str | None, backend: str, dtype: str,
           devices: list[int]) -> tuple[Fabric, str | None, str | None]:
    """The fabric: links given, or fitted from the one collective series the choices leave."""
    inter = Link.given(*req.link) if req.link else None
    intra = Link.given(*req.intra) if req.intra else None
    transport = series_strategy = None
    if len(coll):
        wanted = {"backend": backend, "dtype": dtype, **req.series}
        if strategy:
            wanted["strategy"] = strategy
        rows = inputs.series(coll, wanted, "the all-reduce")
        fitted = inputs.link_from_series(rows)
        r = rows.iloc[0]
        transport = r["transport"] if isinstance(r.get("transport"), str) and r["transport"] else None
        series_strategy = r["strategy"]
        if int(r["hosts"]) > 1:
            if inter is not None:
                raise BenchInputError("--link-gbps contradicts the collective rows measured across hosts in --rows, "
                                      "which give the link between nodes: drop one of them")
            inter = fitted
        else:
            if intra is not None:
                raise BenchInputError("--intra-gbps contradicts the collective rows measured on one host in --rows, "
                                      "which give the link within a node: drop one of them")
            if req.gpus_per_node == 1:
                raise BenchInputError("the collective rows in --rows were measured on one host: they describe the "
                                      "link within a node, but --gpus-per-node is 1 (give it, or rows measured across "
                                      "hosts, or --link-gbps and --latency-us)")
            intra = fitted
    g = req.gpus_per_node
    if g > 1 and intra is None:
        raise BenchInputError(f"--gpus-per-node {g} needs the link within a node: --intra-gbps and "
                              "--intra-latency-us, or collective rows measured on one host")
    if any(n > g for n in devices) and inter is None:
        raise BenchInputError(f"predicting {max(devices)} devices on nodes of {g} needs the link between nodes: "
                              "--link-gbps and --latency-us, or collective rows (python -m bench.collectives) "
                              "measured across hosts in --rows")
    return Fabric(g, inter, intra), transport, series_strategy


def gather(req: Request, runs: pd.DataFrame, coll: pd.DataFrame) -> Inputs:
    values, row, compute = _compute(req, runs)
    compression = str(req.run.get("hvd_compression") or "none")
    strategy = req.run.get("strategy")
    dtype = "fp16" if compression == "fp16" else "fp32"
    backend = str(values.get("backend") or req.run.get("backend") or "tensorflow")
    fabric, transport, series_strategy = _links(req, coll, strategy, backend, dtype, req.devices)
    if strategy is None:
        compute_strategy = row["strategy"] if row is not None and row["strategy"] != "single" else None
        # a cluster of processes, one per device: the launchers' strategies, Horovod's first
        strategy = series_strategy or compute_strategy or next(
            s for s in MULTI_HOST if backend in get_strategy(s).backends)
    if backend not in get_strategy(strategy).backends:
        raise BenchInputError(get_strategy(strategy).unsupported_backend(backend))
    grad, grad_basis = inputs.gradient_bytes(values, row, compression)
    return Inputs(values, row, compute, grad, grad_basis, strategy, fabric, transport, compression)


# ---- rows and words -----------------------------------------------------------------------------
def basis_text(inp: Inputs) -> str:
    f = inp.fabric
    links = [f"between nodes: {f.inter.basis}" if f.inter else "",
             f"within nodes of {f.gpus_per_node}: {f.intra.basis}" if f.intra and f.gpus_per_node > 1 else ""]
    return "; ".join(x for x in [inp.compute.basis, f"gradients {inp.gradient_bytes:,} bytes ({inp.gradient_basis})",
                                 *links] if x)


def prediction_row(inp: Inputs, p: Point, run_id_base: str) -> dict[str, Any]:
    r = inp.row
    backend = str(inp.values.get("backend") or "tensorflow")
    row: dict[str, Any] = provenance((), source=PREDICTION_SOURCE, run_id=f"{run_id_base}-{p.algorithm}-{p.devices}",
                                     backend=backend)
    config = {k: v for k, v in (r.to_dict() if r is not None else {}).items() if k in RUNS.column_types}
    for k in ("schema_version", "run_id", "timestamp_utc", "source", "git_commit", "git_dirty", "python_version",
              "tf_version", "keras_version", "horovod_version", "jax_version", "jaxlib_version", "status", "error",
              "source_file", "config_key"):
        config.pop(k, None)
    keep = {k: v for k, v in config.items() if k in (*inputs.COMPUTE_FIELDS, "mode", "steps", "warmup_steps", "seed",
                                                       "lr", "momentum", "weight_decay", "augment", "normalize",
                                                       "hostname", "cpu_model", "cpu_count", "gpu_names",
                                                       "device_kind", "cores_per_replica", "params",
                                                       "gflops_per_image")}
    row.update(keep)
    row.update({k: v for k, v in inp.values.items() if v is not None and k in RUNS.column_types})
    fabric = inp.fabric
    row.update(
        mode="train", strategy=inp.strategy, gradient_sync=True, transport=inp.transport,
        hvd_compression=inp.compression,
        hvd_hierarchical=p.algorithm == "hierarchical" and inp.strategy == "horovod",
        workers=p.devices, replicas=p.devices, hosts=p.nodes,
        link_gbps=fabric.inter.gbps if fabric.inter is not None and p.nodes > 1 else None,
        per_replica_batch=p.per_replica_batch, global_batch=p.devices * p.per_replica_batch,
        gradient_bytes=inp.gradient_bytes,
        step_time_median_s=p.step_s, images_per_sec=p.images_per_sec, images_per_sec_median=p.images_per_sec,
        images_per_sec_per_replica=p.images_per_sec / p.devices,
        pred_algorithm=p.algorithm, pred_gpus_per_node=fabric.gpus_per_node,
        pred_intra_gbps=fabric.intra.gbps if fabric.intra is not None else None,
        pred_compute_s=p.compute_s, pred_allreduce_s=p.allreduce_s, pred_step_low_s=p.step_low_s,
        pred_step_high_s=p.step_high_s, pred_efficiency=p.efficiency, pred_efficiency_low=p.efficiency_low,
        pred_efficiency_high=p.efficiency_high, pred_comm_share=p.comm_share, pred_basis=basis_text(inp),
        status="ok", error="")
    # numpy scalars from the rows read back as text otherwise; a missing cell is an empty one
    return {k: None if _missing(v) else v.item() if hasattr(v, "item") else v for k, v in row.items()}


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _table(points: list[Point]) -> str:
    lines = [f"{'devices':>7} {'nodes':>5} {'algorithm':>12} {'step ms':>9} {'band ms':>19} {'images/s':>10} "
             f"{'efficiency':>10} {'band':>13} {'comm share':>10}"]
    for p in points:
        lines.append(f"{p.devices:>7} {p.nodes:>5} {p.algorithm:>12} {1e3 * p.step_s:>9.4g} "
                     f"{f'[{1e3 * p.step_low_s:.4g}, {1e3 * p.step_high_s:.4g}]':>19} {p.images_per_sec:>10.4g} "
                     f"{p.efficiency:>10.3f} {f'[{p.efficiency_low:.3f}, {p.efficiency_high:.3f}]':>13} "
                     f"{p.comm_share:>10.3f}")
    return "\n".join(lines)


def _load(paths: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not paths:
        return pd.DataFrame(), pd.DataFrame()
    df = load_results(paths)
    return df, apart(df, "collectives")


def predict(req: Request) -> int:
    runs, coll = _load(req.rows)
    inp = gather(req, runs, coll)
    batch = int(inp.values.get("batch_size") or req.run["batch_size"])
    points = [predict_point(inp.compute, inp.fabric, inp.gradient_bytes, n, a, batch)
              for a in req.algorithms for n in req.devices]
    print(f"# PREDICTION (not measured): {req.model}, {inp.strategy}/{inp.values.get('backend') or 'tensorflow'}, "
          f"batch {batch} per device, {inp.fabric.gpus_per_node} device(s) per node")
    print("\n".join(f"#   {part}" for part in basis_text(inp).split("; ")))
    print(_table(points))
    for a in req.algorithms:
        mine = [p for p in points if p.algorithm == a]
        mid, low = largest_efficient(mine), largest_efficient(mine, edge="low")
        print(f"# {a}: efficiency >= 90% up to {mid or 'no'} device(s) at the midpoint, "
              f"{low or 'no'} at the band's low edge (of those predicted)")
    if req.output:
        base = provenance()["run_id"]
        try:
            append_rows(req.output, [prediction_row(inp, p, base) for p in points], RUNS)
        except OutputRefused as e:
            raise BenchInputError(f"no row written: {e}") from None
        print(f"# {len(points)} prediction row(s) appended to {req.output}")
    return ExitCode.OK


# ---- validation: each measured distributed row against its own prediction ------------------------
def validate(req: Request) -> int:
    runs, coll = _load(req.rows)
    table, skipped = validation_table(runs, coll)
    if table.empty:
        raise BenchInputError("no measured distributed training row in --rows has the inputs of a prediction "
                              f"(a compute row and a collective series of its place){': ' + skipped[0] if skipped else ''}")
    print(markdown_table(table, ".3g"), end="")
    inside = int(table["inside"].eq("yes").sum())
    close = int((table["midpoint_error"].abs() <= 0.25).sum())
    print(f"\n{len(table)} measured row(s): {inside} inside the predicted band, {close} within 25% of its midpoint; "
          f"median |midpoint error| {100 * float(table['midpoint_error'].abs().median()):.1f}%")
    for s in skipped:
        print(f"# not predicted: {s}")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            req = parse(list(sys.argv[1:] if argv is None else argv))
            return validate(req) if req.validate else predict(req)
        except BenchInputError as e:
            return input_error(e)
    except KeyboardInterrupt:
        return interrupted()


if __name__ == "__main__":
    sys.exit(main())

