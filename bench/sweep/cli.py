r"""Run a grid of benchmark configurations, each in its own child process, into one CSV.

    python -m bench.sweep --models vgg13,resnet18 --batch-sizes 32,64 \
        --strategies STRATEGY,... --workers 1,2 [--backends tensorflow,jax] [RUN OPTIONS ...]
    python -m bench.sweep --config sweep.toml [--dry-run] [--force]
    python -m bench.sweep --models resnet18 --find-max-batch [--memory-cap-gb X] [--batch-granularity G]
    python -m bench.sweep --models vgg13,resnet18 --batch-sizes 32 --repeats 5

--repeats N runs every configuration N times, each in a fresh process, interleaved (all
configurations once, then all again, ...: drift hits every configuration alike); each row
records its repeat index (from 0) and its group (one id per configuration's N repeats). Resume
counts repeats: a configuration whose latest group of N has k ok rows runs only the N - k missing.

RUN OPTIONS are any bench/run.py options (e.g. --width 0.25 --steps 20), passed to every run.
Each configuration runs through its strategy's launcher (see launch/) with a timeout; a crash, out-of-memory or hang becomes a row with status failed/oom/timeout
and the tail of its output, and the sweep goes on; one whose memory estimate exceeds the memory
available becomes an `oom_predicted` row within seconds. Configurations that already have an `ok`
row in the CSV are skipped (unless --force), so an interrupted sweep resumes where it stopped.

--axis OPTION=V1,V2 takes options that are part of a configuration's key (those the report
and resume tell runs apart by: lr, precision, seed, ...). Options outside the key (threads,
force, data_dir, init_weights, save_weights, collective_timeout) are refused as axes: their
points would share one key, so resume would skip all but one and the report would merge them.
Pass such an option as a plain run option (one value for the whole sweep), or run one sweep per value.
With --find-max-batch every probe carries the axis values and run options of its point.

Ctrl-C, SIGTERM and SIGHUP stop the running child (and everything it started) and keep every
finished row; the sweep prints its summary and exits 128 + the signal's number (130, 143, 129).
A log folder that cannot be written (read-only, full) does not stop the sweep: each child's
output is then kept in a temporary file for its row. A CSV that cannot be written does: the
summary names the configurations not started. Either way the sweep ends with one line on
stderr and exit 1. The environment is checked before any child starts: KERAS_BACKEND naming
another backend, TF_CONFIG (the sweep gives each multiworker rank its own) and a launcher's
rank variables (HOROVOD_RANK, ...) are refused with one line, exit 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import tomllib

from bench.backends import check_environment as check_backend
from bench.config.parse import OneLineParser, parse_value, read_options
from bench.config.schema import DEFAULT_BACKEND, DEFAULT_OUTPUT, Opt, schema
from bench.errors import BenchInputError, ExitCode, Status, input_error
from bench.procs import exit_code, gpu_count, stop_on_signals
from bench.results.columns import INPUT_MODE
from bench.results.store import check_output, read_rows
from bench.sweep import max_batch
from bench.sweep.children import Unwritable, run_job
from bench.sweep.grid import (
    Job,
    build_jobs,
    done_keys,
    parse_axis,
    repeat_plan,
    toml_options,
    unsupported,
)
from launch import DEFAULT_STRATEGY, STRATEGIES, strategy_names
from launch.base import BACKENDS, MAX_TIMEOUT_S


def check_environment(backends: list[str]) -> None:
    """BenchInputError for an environment every child would inherit and fail on, found once
    here instead of as a failed row per configuration: KERAS_BACKEND naming another backend
    than the grid's, and any strategy launcher's variables (e.g. TF_CONFIG, HOROVOD_RANK): the
    sweep starts each configuration's processes through their launchers itself."""

    for backend in backends:
        check_backend(backend, flag="--backends")
    for strategy in STRATEGIES.values():
        strategy.check_no_launcher()


# ---- the command line --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.sweep", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a TOML file with models, batch_sizes, strategies, workers, "
                   "timeout, output and a [run] table of shared run options")
    p.add_argument("--models")
    p.add_argument("--batch-sizes")
    p.add_argument("--strategies", help=f"comma list of: {', '.join(strategy_names())} (default: {DEFAULT_STRATEGY})")
    p.add_argument("--workers")
    p.add_argument("--backends", help=f"comma list of: {', '.join(BACKENDS)} (default: {DEFAULT_BACKEND})")
    p.add_argument("--axis", action="append", default=[], metavar="OPTION=V1,V2",
                   help="make any bench/run.py option an axis of the grid (repeatable), e.g. "
                   "--axis lr=0.1,0.01 --axis precision=fp32,mixed_bf16 --axis xla=true,false")
    p.add_argument("--output")
    p.add_argument("--timeout", help="seconds per configuration (default 1800)")
    p.add_argument("--force", action="store_true", help="rerun configurations that already have an ok row")
    p.add_argument("--find-max-batch", action="store_true",
                   help="for each model, strategy, worker count and backend, find the largest per-replica batch "
                   "that fits: double from the default batch, then bisect; one child per probe")
    p.add_argument("--batch-granularity", help="with --find-max-batch: stop bisecting when the largest batch that "
                   "fits and the smallest that does not are this close, probing multiples of it (default 1: exact)")
    p.add_argument("--memory-cap-gb", help="with --find-max-batch: a probe whose measured peak memory exceeds "
                   "this many GiB does not fit (a stand-in for a smaller device, e.g. on a CPU machine)")
    p.add_argument("--breakdown", action="store_true",
                   help="run each configuration of more than one replica twice: as asked, and with "
                   "--no-gradient-sync; the report then splits its step time into input wait, exposed "
                   "communication (their difference, with its CI) and compute")
    p.add_argument("--repeats", help="run each configuration N times, each in a fresh process, interleaved "
                   "across configurations (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and commands, run nothing")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


# The sweep's own options: (TOML type check, a description for errors). Lists may also be a comma string.
_FILE_KEYS = {
    "models": (lambda v: _is_list_of(v, str), "a list of model names"),
    "batch_sizes": (lambda v: _is_list_of(v, int), "a list of integers"),
    "strategies": (lambda v: _is_list_of(v, str), "a list of strategy names"),
    "workers": (lambda v: _is_list_of(v, int), "a list of integers"),
    "backends": (lambda v: _is_list_of(v, str), "a list of backend names"),
    "timeout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number of seconds"),
    "output": (lambda v: isinstance(v, str), "a path string"),
    "find_max_batch": (lambda v: isinstance(v, bool), "true or false"),
    "breakdown": (lambda v: isinstance(v, bool), "true or false"),
    "repeats": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "memory_cap_gb": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number of GiB"),
    "batch_granularity": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "axes": (lambda v: isinstance(v, dict) and all(isinstance(x, (list, str)) and
                                                   all(isinstance(i, (bool, int, float, str)) for i in
                                                       (x if isinstance(x, list) else [x])) for x in v.values()),
             "a table of bench/run.py options, each with a list of values"),
    "run": (lambda v: isinstance(v, dict) and all(isinstance(x, (bool, int, float, str)) for x in v.values()),
            "a table of bench/run.py options with plain values"),
}
TIMEOUT = Opt("float", lo=0.0, hi=MAX_TIMEOUT_S, lo_open=True)
WORKERS = Opt("int", lo=1, hi=1024)
GRANULARITY = Opt("int", lo=1, hi=2**20)


def _is_list_of(value: Any, kind: type) -> bool:
    if isinstance(value, str):
        return True  # a comma list, checked item by item below
    return isinstance(value, list) and all(isinstance(x, kind) and not isinstance(x, bool) for x in value)


def _read_config(path: str) -> dict[str, Any]:
    """A sweep TOML, its keys and their types checked; BenchInputError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            file = tomllib.load(f)
    except OSError as e:
        raise BenchInputError(f"cannot read config={path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BenchInputError(f"config={path} is not valid TOML: {e}") from None
    unknown = sorted(set(file) - set(_FILE_KEYS))
    if unknown:
        raise BenchInputError(f"unknown key(s) in config={path}: {', '.join(unknown)}; valid: {', '.join(_FILE_KEYS)}")
    for key, value in file.items():
        ok, what = _FILE_KEYS[key]
        if not ok(value):
            raise BenchInputError(f"config={path}: {key} must be {what}. Received: {key}={value!r}")
    return file


def _split_axis(text: str) -> tuple[str, str]:
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise BenchInputError(f"--axis takes OPTION=V1,V2,... Received: axis={text!r}")
    return name, values


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The sweep's options, and the run options every configuration shares (the [run] table's,
    then the command line's, as RunConfig fields)."""
    args, run_args = build_parser().parse_known_args(argv)
    file = _read_config(args.config) if args.config else {}

    def pick(name: str, parse_item=str, default=None) -> list:
        """A list option: the command line's comma list, else the file's list (or comma string)."""
        value = getattr(args, name)
        if value is None:
            value = file.get(name, default)
        if value is None:
            return []
        items = [x.strip() for x in (",".join(map(str, value)) if isinstance(value, list) else value).split(",")]
        return [parse_item(x) for x in items if x]

    args.models = pick("models")
    args.batch_sizes = pick("batch_sizes", lambda x: parse_value("batch_size", schema()["batch_size"], x))
    args.find_max_batch = args.find_max_batch or file.get("find_max_batch", False)
    if args.find_max_batch and args.batch_sizes:
        raise BenchInputError(f"--find-max-batch searches the batch size itself: drop --batch-sizes. "
                              f"Received: batch_sizes={','.join(map(str, args.batch_sizes))}")

    def search_option(name: str, o: Opt, default: Any) -> Any:
        """An option of --find-max-batch: the command line's, else the file's; refused without it."""
        raw = getattr(args, name)
        raw = file.get(name) if raw is None else raw
        if raw is None:
            return default
        value = parse_value(name, o, str(raw))
        if not args.find_max_batch:
            raise BenchInputError(f"--{name.replace('_', '-')} applies to --find-max-batch. Received: {name}={raw}")
        return value

    args.memory_cap_gb = search_option("memory_cap_gb", schema()["memory_cap_gb"], None)
    args.batch_granularity = search_option("batch_granularity", GRANULARITY, 1)
    axes = [parse_axis(*_split_axis(a)) for a in args.axis] if args.axis else \
        [parse_axis(name, values) for name, values in file.get("axes", {}).items()]
    args.axes = axes
    args.breakdown = args.breakdown or file.get("breakdown", False)
    if args.breakdown and args.find_max_batch:
        raise BenchInputError("--breakdown and --find-max-batch are two kinds of sweep: run them apart. "
                              "Received: breakdown=True, find_max_batch=True")
    repeats = args.repeats if args.repeats is not None else file.get("repeats", 1)
    args.repeats = parse_value("repeats", schema()["repeats"], str(repeats))
    if args.repeats > 1 and args.find_max_batch:
        raise BenchInputError(f"--find-max-batch probes each batch once: drop --repeats. Received: repeats={repeats}")
    args.strategies = pick("strategies", str, [DEFAULT_STRATEGY])
    args.workers = pick("workers", lambda x: parse_value("workers", WORKERS, x), [1])
    args.backends = pick("backends", lambda x: parse_value("backend", schema()["backend"], x), [DEFAULT_BACKEND])
    timeout = args.timeout if args.timeout is not None else file.get("timeout", 1800)
    args.timeout = parse_value("timeout", TIMEOUT, str(timeout))
    args.output = args.output or file.get("output", DEFAULT_OUTPUT)
    shared = {**toml_options(file.get("run", {})), **read_options(run_args)}  # the command line's win
    if shared.get("mode") == INPUT_MODE:  # the pipeline alone: its configurations name no model
        if args.models:
            raise BenchInputError(f"--mode input times the input pipeline alone, with no model: drop --models. "
                                  f"Received: models={','.join(args.models)}")
        args.models = [None]
    if not args.models or not (args.batch_sizes or args.find_max_batch):
        raise BenchInputError("a sweep needs --models and --batch-sizes or --find-max-batch "
                              "(or models/batch_sizes in --config)")
    if args.breakdown and ("gradient_sync" in [n for n, _ in axes] or "gradient_sync" in shared):
        raise BenchInputError("--breakdown runs each configuration with and without gradient sync itself: "
                              "drop the gradient_sync axis or option. Received: breakdown=True")
    return args, shared


def main(argv: list[str] | None = None) -> int:
    """Run (or list) the sweep. Bad input: one line, exit 2. Ctrl-C, SIGTERM, SIGHUP: the running
    child stopped, the summary, exit 128 + the signal's number. A CSV or log that cannot be
    written: the summary, one line, exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with stop_on_signals():
            return _main(argv)
    except KeyboardInterrupt as stop:  # before any child started (or after the last ended)
        return exit_code(stop)


def _main(argv: list[str]) -> int:
    try:
        args, shared = parse(argv)
        check_environment(args.backends)
        gpus = gpu_count()
        # --find-max-batch starts each search from the run's default batch (None: resolved per configuration)
        per_replica_batches = [None] if args.find_max_batch else args.batch_sizes
        # what "fits" means goes into each probe's row
        settings = {"find_max_batch": True, "memory_cap_gb": args.memory_cap_gb} if args.find_max_batch else {}
        if args.repeats > 1:
            settings["repeats"] = args.repeats
        jobs = build_jobs(args.models, per_replica_batches, args.strategies, args.workers, shared,
                          args.output, args.timeout, gpus, args.backends, args.axes, args.breakdown, settings)
        for strategy, backend in unsupported(args.strategies, args.backends):
            print(f"note: --strategies {strategy} does not run on {backend}; those configurations are left out")
        check_output(args.output)
        rows = read_rows(args.output) if Path(args.output).exists() and Path(args.output).stat().st_size else None
    except BenchInputError as e:
        return input_error(e)
    log_dir = Path(args.output).parent / "logs"
    if args.find_max_batch:
        return _find_max_batch(args, jobs, rows, log_dir)
    if args.repeats > 1:
        todo = repeat_plan(jobs, args.repeats, rows, args.force)
    else:
        done = done_keys(rows)
        todo = [(j, not args.force and j.key() in done) for j in jobs]
    if args.dry_run:
        for j, skip in todo:
            print(f"{'skip (ok row exists)' if skip else 'run'}: {j.label}\n    {shlex.join(j.command)}")
        runs = f" x {args.repeats} repeats" if args.repeats > 1 else ""
        print(f"{len(jobs)} configuration(s){runs}: {sum(not s for _, s in todo)} to run, "
              f"{sum(s for _, s in todo)} to skip")
        return ExitCode.OK
    results: list[tuple[Job, str, Any]] = []
    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="config", file=sys.stderr, dynamic_ncols=True)
    stop: KeyboardInterrupt | None = None
    unwritable: Unwritable | None = None
    notes: list[str] = []
    try:
        for job, skip in todo:
            if bar:
                bar.set_description(job.label)
            if skip:
                results.append((job, "skipped", None))
            else:
                try:
                    row = run_job(job, args.output, args.timeout, log_dir, notes)
                except Unwritable as e:  # every later row would be lost as well: stop here
                    unwritable = e
                    results.append((job, "unwritten", None))
                    break
                results.append((job, row["status"], row.get("images_per_sec")))
                msg = f"{job.label}: {row['status']}"
                if row["status"] == Status.OK:
                    msg += f", {float(row['images_per_sec']):.1f} images/sec"
                else:
                    msg += f" ({str(row.get('error', ''))[:200]})"
                (bar.write if bar else print)(msg)
            if bar:
                bar.update(1)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP (bench.procs.Stopped)
        stop = e
    finally:
        if bar:
            bar.close()
    why = "interrupted; rerun to resume" if stop is not None else \
        "the CSV cannot be written" if unwritable is not None else ""
    print(summary(results, len(todo), args.output, why))
    if stop is not None:
        return exit_code(stop)
    if _write_problems(unwritable, notes):
        return ExitCode.FAILED
    return ExitCode.OK if all(s in (Status.OK, "skipped") for _, s, _ in results) else ExitCode.FAILED


def _write_problems(unwritable: Exception | None, notes: list[str]) -> bool:
    """One line on stderr for whatever could not be written (the CSV first, then the logs)."""
    problems = [str(e) for e in (unwritable,) if e is not None] + sorted(set(notes))[:1]
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
    return bool(problems)


def _find_max_batch(args: argparse.Namespace, groups: list[Job], rows, log_dir: Path) -> int:
    """The --find-max-batch sweep: exit 0 when every group found a batch that fits. Each group
    is the first probe of its search, run options and axis values included."""

    if args.dry_run:
        for g in groups:
            print(f"search: {g.group_label}, doubling from batch {g.per_replica_batch} (first probe below; the others "
                  f"differ only in --batch-size)\n    {shlex.join(g.command)}")
        print(f"{len(groups)} search(es)")
        return ExitCode.OK
    results: list = []
    notes: list[str] = []
    try:
        max_batch.run(groups, output=args.output, timeout=args.timeout, rows=rows, force=args.force,
                      cap_gb=args.memory_cap_gb, log_dir=log_dir, step=args.batch_granularity, results=results,
                      notes=notes)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP
        print(max_batch.summary(results, args.output))
        print("interrupted: the probes so far are rows in " + args.output)
        return exit_code(stop)
    except Unwritable as e:
        print(max_batch.summary(results, args.output))
        _write_problems(e, notes)
        return ExitCode.FAILED
    print(max_batch.summary(results, args.output))
    if _write_problems(None, notes):
        return ExitCode.FAILED
    return ExitCode.OK if all(r.largest is not None for r in results) else ExitCode.FAILED


def summary(results: list, total: int, output: str, stopped: str = "") -> str:
    """The table of configurations and the counts; `stopped` says why the rest did not start."""
    counts = {Status.OK: 0, "skipped": 0}
    for _, status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    failed = sum(v for k, v in counts.items() if k not in (Status.OK, "skipped"))
    lines = ["", f"{'configuration':<40} {'status':<9} {'images/sec':>11}"]
    for job, status, ips in results:
        lines.append(f"{job.label:<40} {status:<9} {'' if ips is None or ips != ips else f'{float(ips):.1f}':>11}")
    lines.append(f"\nsweep: {total} configuration(s): {counts[Status.OK]} ran ok, {counts['skipped']} skipped "
                 f"(ok row exists), {failed} failed" +
                 (f", {total - len(results)} not started ({stopped})" if stopped else "") +
                 f". Rows in {output}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
