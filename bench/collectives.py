"""`python -m bench.collectives [options]`: all-reduce bandwidth per message size, as nccl-tests
reports it, through a strategy's own all-reduce (Horovod, tf.distribute's collectives, JAX's psum
over the mesh or the processes). Launched as a run is:

    horovodrun -np 2 -H localhost:2 --gloo python -m bench.collectives --strategy horovod
    python -m launch.local_cluster -n 2 -- python -m bench.collectives --strategy multiworker [--backend jax]
    python -m bench.collectives --strategy mirrored --backend jax       # every local GPU (or --cpu-replicas N)

Per message size (--min-bytes to --max-bytes, doubling) and dtype: warmup iterations, then timed
ones (as many as fit in --budget-s, at least 3, at most --iters), each one all-reduce waited for,
the slowest rank's time per iteration; one row per size in --output (default
results/collectives.csv): the median time with its 95% CI, algorithm bandwidth (size / time) and
bus bandwidth (algbw x 2(n-1)/n), in GB/s (10^9 bytes/s) as nccl-tests prints them. The chief
also prints nccl-tests' table. Besides these options it takes the run's strategy options
(--strategy, --backend, --cpu-replicas, --all-reduce, --hvd-compression, --collective-timeout, ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.backends import load, make_distribution, select  # noqa: E402
from bench.config.parse import OneLineParser, parse_value, read_argv, read_options  # noqa: E402
from bench.config.schema import Opt, RunConfig  # noqa: E402
from bench.errors import BenchInputError, ExitCode, error_line, input_error, interrupted  # noqa: E402
from bench.measure.collectives import (  # noqa: E402
    DTYPE_BYTES,
    SizeResult,
    message_sizes,
    parse_size,
    time_allreduce,
)
from bench.measure.probes import NetCounter  # noqa: E402
from bench.results.columns import COLLECTIVE_CONFIG, COLLECTIVES  # noqa: E402
from bench.results.provenance import provenance  # noqa: E402
from bench.results.store import OutputRefused, append_row, check_output  # noqa: E402
from bench.runner.session import placement  # noqa: E402
from bench.runner.validate import prepare  # noqa: E402
from launch import check_config, check_environment, emulated_host  # noqa: E402

log = logging.getLogger("cnnbench")
DEFAULT_OUTPUT = "results/collectives.csv"
DEFAULT_DTYPES = ("fp32", "bf16", "fp16")  # the first two a strategy supports
# RunConfig names a model; no model is built here, so any registered one stands in
PLACEHOLDER_MODEL = "lenet5"
OWN = {"min_bytes": "1K", "max_bytes": "256M", "dtypes": None, "iters": "20", "warmup_iters": "5",
       "budget_s": "10", "output": DEFAULT_OUTPUT}


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.collectives", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-bytes", default=OWN["min_bytes"], help="smallest message (default 1K)")
    p.add_argument("--max-bytes", default=OWN["max_bytes"], help="largest message (default 256M)")
    p.add_argument("--dtypes", default=OWN["dtypes"], help=f"comma-separated, of {', '.join(DTYPE_BYTES)} "
                   f"(default fp32 and bf16, or fp16 where the strategy has no bf16 all-reduce)")
    p.add_argument("--iters", default=OWN["iters"], help="most timed iterations per size (default 20)")
    p.add_argument("--warmup-iters", default=OWN["warmup_iters"], help="untimed iterations per size (default 5)")
    p.add_argument("--budget-s", default=OWN["budget_s"], help="seconds of timed iterations per size (default 10)")
    p.add_argument("--output", default=OWN["output"], help=f"CSV to append rows to (default {DEFAULT_OUTPUT})")
    return p


def parse(argv: list[str]) -> tuple[RunConfig, dict]:
    """The run's strategy options as a resolved RunConfig, and this command's own; BenchInputError
    naming a bad value."""
    own, rest = _parser().parse_known_args(argv)
    run_options = read_options(rest)  # each value checked as bench/run.py checks it
    foreign = [k for k in run_options if k not in COLLECTIVE_CONFIG]
    if foreign:
        raise BenchInputError(f"--{foreign[0].replace('_', '-')} is not an option of bench.collectives (it takes "
                              f"{', '.join('--' + k.replace('_', '-') for k in COLLECTIVE_CONFIG)}). "
                              f"Received: {foreign[0]}={run_options[foreign[0]]}")
    cfg = read_argv([PLACEHOLDER_MODEL, *rest])
    check_config(cfg)
    cfg = prepare(cfg)
    lo, hi = parse_size("min_bytes", own.min_bytes), parse_size("max_bytes", own.max_bytes)
    if lo > hi:
        raise BenchInputError(f"--min-bytes must not exceed --max-bytes. Received: min_bytes={own.min_bytes}, "
                              f"max_bytes={own.max_bytes}")
    if hi > 2**34:
        raise BenchInputError(f"--max-bytes must be at most 16G. Received: max_bytes={own.max_bytes}")
    dtypes = None if own.dtypes is None else [d.strip() for d in own.dtypes.split(",") if d.strip()]
    if dtypes is not None and (not dtypes or any(d not in DTYPE_BYTES for d in dtypes)):
        raise BenchInputError(f"--dtypes takes {', '.join(DTYPE_BYTES)}. Received: dtypes={own.dtypes!r}")
    values = {
        "sizes": message_sizes(lo, hi), "dtypes": dtypes,
        "iters": parse_value("iters", Opt("int", lo=1, hi=100_000), own.iters),
        "warmup_iters": parse_value("warmup_iters", Opt("int", lo=1, hi=10_000), own.warmup_iters),
        "budget_s": parse_value("budget_s", Opt("float", lo=0.0, hi=86400.0, lo_open=True), own.budget_s),
        "output": own.output}
    check_output(values["output"], COLLECTIVES)
    return cfg, values


def _table_line(c: dict) -> str:
    return (f"{c['size_bytes']:>12} {c['elements']:>12} {c['dtype']:>6} {1e6 * c['time_median_s']:>11.1f} "
            f"{c['algbw_gbs']:>8.3f} {c['busbw_gbs']:>8.3f} {c['iters']:>6}")


def run(cfg: RunConfig, values: dict) -> int:
    """Every rank times every size; the chief appends the rows and prints the table."""
    select(cfg.backend)
    check_environment(cfg.strategy)
    backend = load(cfg.backend)
    backend.configure(cfg)
    dist = make_distribution(cfg)
    dtypes = values["dtypes"] or [d for d in DEFAULT_DTYPES if d in dist.collective_dtypes][:2]
    unsupported = [d for d in dtypes if d not in dist.collective_dtypes]
    if unsupported:
        raise BenchInputError(f"--strategy {cfg.strategy} on --backend {cfg.backend} all-reduces "
                              f"{', '.join(dist.collective_dtypes)} only. Received: dtypes={','.join(dtypes)}")
    if dist.num_replicas < 2:
        raise BenchInputError(f"an all-reduce needs at least 2 replicas; --strategy {cfg.strategy} has "
                              f"{dist.num_replicas} here (launch several ranks, or --cpu-replicas 2)")
    gpus = backend.gpu_names()
    where = placement(cfg.strategy, dist, gpus)
    base = {**provenance(gpus, source="collectives", backend=cfg.backend), **backend.provenance(gpus),
            **{k: getattr(cfg, k) for k in COLLECTIVE_CONFIG}, **dataclasses.asdict(where),
            "op": "allreduce", "workers": dist.workers, "ranks": dist.num_replicas,
            "warmup_iters": values["warmup_iters"], "schema_version": COLLECTIVES.schema_version}
    if dist.is_chief:
        place = f", {where.hosts} hosts" if where.hosts > 1 else ""
        if where.hosts > 1 and emulated_host() is not None:
            place += ", unshaped links" if where.link_gbps is None else f", {where.link_gbps:g} Gbit/s links"
        over = f" over {dist.transport}" if dist.transport else ""
        print(f"# all-reduce, {dist.num_replicas} ranks, --strategy {cfg.strategy}{over} --backend {cfg.backend}{place}")
        print(f"{'size(B)':>12} {'count':>12} {'type':>6} {'time(us)':>11} {'algbw':>8} {'busbw':>8} {'iters':>6}",
              flush=True)
    failed = 0
    for dtype in dtypes:
        for size in values["sizes"]:
            elements = max(1, size // DTYPE_BYTES[dtype])
            row = {**base, "dtype": dtype, "size_bytes": elements * DTYPE_BYTES[dtype], "elements": elements}
            net = NetCounter()
            try:
                op = dist.allreduce_op(elements, dtype)
                net.start()
                times = time_allreduce(op, dist.gather, warmup=values["warmup_iters"], iters=values["iters"],
                                       budget_s=values["budget_s"])
                net.stop()
                row.update(SizeResult(row["size_bytes"], elements, times, dist.num_replicas).columns(),
                           net_tx_bytes=net.sent, net_rx_bytes=net.received, status="ok", error="")
            except Exception as e:  # noqa: BLE001 - a size that fails is a row; a lost peer ends the job below
                log.exception("the all-reduce of %d bytes (%s) failed", row["size_bytes"], dtype)
                row.update(status="failed", error=error_line(e))
                failed += 1
            if dist.is_chief:
                try:
                    append_row(values["output"], row, COLLECTIVES)
                except OutputRefused as e:  # the file became one that is not ours to grow meanwhile
                    raise BenchInputError(f"no row written: {e}") from None
                print(_table_line(row) if row["status"] == "ok"
                      else f"{row['size_bytes']:>12} {elements:>12} {dtype:>6} failed: {row['error']}", flush=True)
            if row["status"] != "ok" and dist.size > 1:
                return ExitCode.FAILED  # a peer may be gone: a collective would only wait for it
    dist.shutdown()
    return ExitCode.FAILED if failed else ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            cfg, values = parse(list(sys.argv[1:] if argv is None else argv))
            started = time.perf_counter()
            code = run(cfg, values)
        except BenchInputError as e:
            return input_error(e)
        print(f"# {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return interrupted("interrupted: the rows of the sizes done are kept")


if __name__ == "__main__":
    sys.exit(main())
