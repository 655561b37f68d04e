"""Run a grid of benchmark configurations, each in its own child process, into one CSV.

    python bench/sweep.py --models vgg13,resnet18 --batch-sizes 32,64 \\
        --strategies STRATEGY,... --workers 1,2 [--backends tensorflow,jax] [RUN OPTIONS ...]
    python bench/sweep.py --config sweep.toml [--dry-run] [--force]
    python bench/sweep.py --models resnet18 --find-max-batch [--memory-cap-gb X] [--batch-granularity G]

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
import contextlib
import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.config import (DEFAULT_OUTPUT, OneLineParser, Opt, RunConfig, config_key, parse_args,  # noqa: E402
                          parse_value, schema)
from bench.errors import BenchInputError, input_error, one_line  # noqa: E402
from bench.procs import exit_code, stop_on_signals  # noqa: E402
from launch import STRATEGIES, Launch, get_strategy, strategy_names  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# bench/run.py options the sweep sets itself for every configuration (a strategy's launch may add more)
OWNED = ("--strategy", "--backend", "--batch-size", "--output", "--run-id", "--source")
ERROR_TAIL_LINES = 6


@dataclass
class Job:
    """One configuration of the grid and how to launch it."""
    model: str
    batch_size: int
    strategy: str
    workers: int
    cfg: RunConfig
    launch: Launch
    command: list[str]
    replicas: int
    backend: str = "tensorflow"
    axes: tuple[tuple[str, str], ...] = ()   # (option, value) of each --axis, in order
    run_args: tuple[str, ...] = ()           # the bench/run.py options of this point, axis values included

    @property
    def label(self) -> str:
        extra = "".join(f" {name}={value}" for name, value in self.axes)
        return f"{self.model} b{self.batch_size} {self.strategy} x{self.workers} {self.backend}{extra}"

    @property
    def group_label(self) -> str:
        """The label without the batch size (a --find-max-batch search)."""
        extra = "".join(f" {name}={value}" for name, value in self.axes)
        return f"{self.model} {self.strategy} x{self.workers} {self.backend}{extra}"

    def key(self, has_gpu: bool) -> tuple:
        """The configuration key its row will have."""
        return config_key(self.cfg.resolved(has_gpu=has_gpu), workers=self.launch.processes, replicas=self.replicas)


# ---- the grid ------------------------------------------------------------------------------
def toml_to_args(options: dict[str, Any]) -> list[str]:
    """A [run] table of a sweep file -> bench/run.py flags (true -> --flag, false -> --no-flag)."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


def _flags(args: list[str]) -> set[str]:
    return {a.split("=")[0] for a in args if a.startswith("--")}


# RunConfig fields the sweep sets itself: its own axes, or what it owns per configuration
SWEEP_FIELDS = {"model": "--models", "batch_size": "--batch-sizes", "strategy": "--strategies",
                "backend": "--backends", "output": "--output", "run_id": "", "source": "", "progress": "",
                "summary": "", "find_max_batch": "--find-max-batch", "memory_cap_gb": "--memory-cap-gb"}
Axes = list[tuple[str, list[Any]]]


def parse_axis(name: str, values: str | list) -> tuple[str, list[Any]]:
    """One `--axis NAME=V1,V2` (or a TOML axes entry): a bench/run.py option and its typed values."""
    name = name.strip().replace("-", "_")
    opts = schema()
    if name in SWEEP_FIELDS:
        own = SWEEP_FIELDS[name]
        raise BenchInputError(f"--axis {name}: the sweep sets {name} itself" + (f"; use {own}" if own else "")
                              + f". Received: axis={name}")
    if name not in opts or not opts[name].cli or opts[name].hidden:
        raise BenchInputError(f"--axis {name}: not a bench/run.py option. Received: axis={name}")
    if not opts[name].key:
        raise BenchInputError(f"--axis {name}: {name} is not part of a configuration's key, so the points of this "
                              f"axis would share one key (resume would skip all but one, the report would merge "
                              f"them); pass --{name.replace('_', '-')} as a plain run option, one sweep per value. "
                              f"Received: axis={name}")
    items = values if isinstance(values, list) else [v.strip() for v in str(values).split(",") if v.strip()]
    if not items:
        raise BenchInputError(f"--axis {name} has no values. Received: axis={name}=")
    o = opts[name]
    typed = [_axis_value(name, o, v) for v in items]
    if len(set(map(str, typed))) != len(typed):
        raise BenchInputError(f"--axis {name} repeats a value. Received: {name}={','.join(map(str, items))}")
    return name, typed


def _axis_value(name: str, o: Opt, value: Any) -> Any:
    if o.kind == "bool":
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise BenchInputError(f"{name} must be true or false. Received: {name}={value!r}")
        return text == "true"
    return parse_value(name, o, str(value))


def _not_for(strategy: Any, chosen: tuple[tuple[str, Any], ...]) -> bool:
    """Whether an axis point sets a strategy option (e.g. hvd_compression=fp16) that `strategy`
    does not take: that cell of the grid is left out, as a backend a strategy cannot run is."""
    from launch.base import STRATEGY_OPTIONS

    return any(name in STRATEGY_OPTIONS and name not in strategy.options and value != STRATEGY_OPTIONS[name]
               for name, value in chosen)


def axis_args(name: str, value: Any) -> list[str]:
    """The bench/run.py flags that set option `name` to `value`."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        action = schema()[name].action
        if action == "toggle":
            return [flag] if value else ["--no-" + name.replace("_", "-")]
        return [flag] if value else []
    return [flag, str(value)]


def unsupported(strategies: list[str], backends: list[str]) -> list[tuple[str, str]]:
    """The (strategy, backend) cells of the grid that cannot run (e.g. Horovod on JAX)."""
    return [(s, b) for s in strategies for b in backends if b not in get_strategy(s).backends]


def build_jobs(models: list[str], batch_sizes: list[int], strategies: list[str], workers: list[int],
               run_args: list[str], output: str, timeout: float, gpus: int = 0,
               backends: tuple[str, ...] | list[str] = ("tensorflow",), axes: Axes = (),
               breakdown: bool = False) -> list[Job]:
    """Expand the grid: models x batch sizes x strategies x backends x workers x every --axis.
    With `breakdown`, each configuration of more than one replica is followed by its twin
    run with --no-gradient-sync (the report's exposed communication is their difference).
    A strategy that does not scale runs once, at one worker, whatever --workers says. Each
    strategy says how it is launched, how the cores are split and which backends it runs on:
    the cells it cannot run are left out (see `unsupported`)."""
    classes = [get_strategy(s) for s in strategies]
    for b in backends:
        parse_value("backend", schema()["backend"], b)
    for w in workers:
        if w < 1:
            raise BenchInputError(f"workers must be >= 1. Received: workers={w}")
    bad = sorted(_flags(run_args) & set(OWNED))
    if bad:
        raise BenchInputError(f"the sweep sets {bad[0]} itself; use --strategies/--backends/--batch-sizes/--workers/--output instead")
    names = [name for name, _ in axes]
    for name in names:
        flags = {"--" + name.replace("_", "-"), "--no-" + name.replace("_", "-")}
        if names.count(name) > 1 or flags & _flags(run_args):
            raise BenchInputError(f"--axis {name} is given twice (as two axes, or as an axis and a run option). "
                                  f"Received: axis={name}")
    combos = list(itertools.product(*(values for _, values in axes)))
    jobs: list[Job] = []
    seen = set()
    for model in models:
        for batch in batch_sizes:
            for strategy, backend in ((c, b) for c in classes for b in backends if b in c.backends):
                for w in workers:
                    w = w if strategy.scalable else 1
                    for combo in combos:
                        chosen = tuple(zip(names, combo))
                        if (model, batch, strategy.name, w, backend, combo) in seen or _not_for(strategy, chosen):
                            continue
                        seen.add((model, batch, strategy.name, w, backend, combo))
                        extra = [a for name, value in chosen for a in axis_args(name, value)]
                        job = make_job(model, batch, strategy.name, w, backend, [*run_args, *extra], output, timeout,
                                       gpus)
                        jobs.append(dataclasses.replace(job, axes=tuple((n, str(v)) for n, v in chosen)))
                        if breakdown and job.replicas > 1 and strategy.name != "single":
                            twin = make_job(model, batch, strategy.name, w, backend,
                                            [*run_args, *extra, "--no-gradient-sync"], output, timeout, gpus)
                            jobs.append(dataclasses.replace(twin, axes=(*jobs[-1].axes, ("gradient_sync", "False"))))
    return jobs


def make_job(model: str, batch: int, strategy_name: str, workers: int, backend: str, run_args: list[str],
             output: str, timeout: float, gpus: int = 0) -> Job:
    """One configuration: its command line under its strategy's launcher, validated."""
    strategy = get_strategy(strategy_name)
    launch = strategy.launch(workers, timeout=timeout, gpus=gpus, cores=os.cpu_count() or 1)
    clash = sorted(_flags(run_args) & _flags(launch.run_args))
    if clash:
        raise BenchInputError(f"the sweep sets {clash[0]} itself for --strategies {strategy.name}; "
                              f"use --workers instead")
    args = [model, "--batch-size", str(batch), "--strategy", strategy.name, "--backend", backend,
            *launch.run_args, *run_args]
    if "--threads" not in _flags(run_args):  # processes share the cores instead of oversubscribing them
        args += ["--threads", str(launch.threads)]
    cfg = parse_args([*args, "--output", output])  # validates every run option
    command = [*launch.prefix, sys.executable, str(REPO / "bench" / "run.py"), *args,
               "--output", output, "--no-progress", "--source", "sweep"]
    return Job(model, batch, strategy.name, workers, cfg, launch, command, strategy.replicas(workers, gpus), backend,
               run_args=tuple(run_args))


def check_environment(backends: list[str]) -> None:
    """BenchInputError for an environment every child would inherit and fail on, found once
    here instead of as a failed row per configuration: KERAS_BACKEND naming another backend
    than the grid's, and any strategy launcher's variables (e.g. TF_CONFIG, HOROVOD_RANK): the
    sweep starts each configuration's processes through their launchers itself."""
    from bench.backends import check_environment as check_backend

    for backend in backends:
        check_backend(backend, flag="--backends")
    for strategy in STRATEGIES.values():
        strategy.check_no_launcher()


# ---- resuming ------------------------------------------------------------------------------
def done_keys(rows) -> set[tuple]:
    """The configuration keys that already have an ok row."""
    if rows is None or rows.empty:
        return set()
    return {config_key(r) for r in rows[rows["status"] == "ok"].to_dict("records")}


# ---- running one configuration ---------------------------------------------------------------
class Unwritable(Exception):
    """The sweep could not write a row to its CSV (read-only, disk full): later rows would be lost too."""


def _open_log(log_dir: Path, run_id: str, header: str, notes: list[str]):
    """The child's log file with `header` written; where its folder cannot be written (read-only,
    full), an anonymous temporary file instead (the reason goes into `notes`), so that the child
    still runs and its row still gets the tail of its output."""
    path = log_dir / f"{run_id}.log"
    log = None
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(path, "w+", encoding="utf-8", errors="replace")
        log.write(header)
        log.flush()
        return log
    except OSError as e:
        notes.append(f"could not write the logs in {log_dir}: {one_line(e)}")
        if log is not None:
            with contextlib.suppress(OSError):  # closing flushes the same failed write again
                log.close()
            with contextlib.suppress(OSError):
                path.unlink()
    log = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    log.write(header)
    log.flush()
    return log


def _classify(returncode: int, output: str, timed_out: bool) -> str:
    from bench.procs import killed_for_memory

    if timed_out:
        return "timeout"
    text = output.lower()
    if "resourceexhausted" in text or "out of memory" in text or "memoryerror" in text \
            or killed_for_memory(returncode):
        return "oom"
    return "failed"


def run_job(job: Job, output: str, timeout: float, log_dir: Path, gpus: int = 0,
            notes: list[str] | None = None) -> dict[str, Any]:
    """Run one configuration; make sure it leaves exactly one row (its own, or ours). A log
    folder that cannot be written is noted in `notes`; a CSV that cannot be written raises
    Unwritable."""
    from bench.procs import describe_exit, stop_groups, tail
    from bench.results import Outcome, Topology, append_row, build_row, new_run_id, read_rows

    run_id = new_run_id()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "PYTHONUNBUFFERED": "1", **job.launch.env}
    timed_out = False
    started = time.monotonic()
    with _open_log(log_dir, run_id, f"$ {shlex.join(job.command)} --run-id {run_id}\n",
                   notes if notes is not None else []) as log:
        try:
            proc = subprocess.Popen([*job.command, "--run-id", run_id], cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:  # the launcher itself is missing or cannot run
            proc, how = None, f"could not start {job.command[0]}: {one_line(e)}"
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # past its timeout, or Ctrl-C, SIGTERM, SIGHUP (re-raised): stop it, keep what is written
                stop_groups([proc])
        log.seek(0)
        output_text = log.read()
    rows = read_rows(output) if Path(output).exists() else None
    mine = rows[rows["run_id"] == run_id] if rows is not None and "run_id" in rows else None
    if mine is not None and not mine.empty:
        return mine.iloc[-1].to_dict()  # its own row (ok, diverged, oom or failed)
    if proc is None:
        status = "failed"
    else:
        status = _classify(proc.returncode, output_text, timed_out)
        how = f"timed out after {timeout:g} s" if timed_out else describe_exit(proc.returncode)
    cfg = job.cfg.resolved(has_gpu=gpus > 0)
    topology = Topology(workers=job.launch.processes, replicas=job.replicas, per_replica_batch=cfg.batch_size,
                        global_batch=cfg.batch_size * job.replicas)
    row = build_row(dataclasses.replace(cfg, run_id=run_id, source="sweep"),
                    Outcome(status, f"{how}: {tail(output_text, ERROR_TAIL_LINES)}"), topology=topology,
                    wall_s=time.monotonic() - started)
    try:
        append_row(output, row)
    except OSError as e:
        raise Unwritable(f"could not write the row of {job.label} to {output}: {one_line(e)}") from None
    return row


# ---- the command line --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="bench/sweep.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a TOML file with models, batch_sizes, strategies, workers, "
                   "timeout, output and a [run] table of shared run options")
    p.add_argument("--models")
    p.add_argument("--batch-sizes")
    p.add_argument("--strategies", help=f"comma list of: {', '.join(strategy_names())} (default: single)")
    p.add_argument("--workers")
    p.add_argument("--backends", help="comma list of: tensorflow, jax (default: tensorflow)")
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
    "memory_cap_gb": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number of GiB"),
    "batch_granularity": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "axes": (lambda v: isinstance(v, dict) and all(isinstance(x, (list, str)) and
                                                   all(isinstance(i, (bool, int, float, str)) for i in
                                                       (x if isinstance(x, list) else [x])) for x in v.values()),
             "a table of bench/run.py options, each with a list of values"),
    "run": (lambda v: isinstance(v, dict) and all(isinstance(x, (bool, int, float, str)) for x in v.values()),
            "a table of bench/run.py options with plain values"),
}
TIMEOUT = Opt("float", lo=0.0, hi=7 * 86400.0, lo_open=True)
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


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
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
    args.strategies = pick("strategies", str, ["single"])
    args.workers = pick("workers", lambda x: parse_value("workers", WORKERS, x), [1])
    args.backends = pick("backends", lambda x: parse_value("backend", schema()["backend"], x), ["tensorflow"])
    if not args.models or not (args.batch_sizes or args.find_max_batch):
        raise BenchInputError("a sweep needs --models and --batch-sizes or --find-max-batch "
                              "(or models/batch_sizes in --config)")
    timeout = args.timeout if args.timeout is not None else file.get("timeout", 1800)
    args.timeout = parse_value("timeout", TIMEOUT, str(timeout))
    args.output = args.output or file.get("output", DEFAULT_OUTPUT)
    run_args = toml_to_args(file.get("run", {})) + run_args
    if args.breakdown and ("gradient_sync" in [n for n, _ in axes] or
                           {"--no-gradient-sync", "--gradient-sync"} & _flags(run_args)):
        raise BenchInputError("--breakdown runs each configuration with and without gradient sync itself: "
                              "drop the gradient_sync axis or option. Received: breakdown=True")
    return args, run_args


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
        args, run_args = parse(argv)
        check_environment(args.backends)
        from bench.hardware import gpu_count
        gpus = gpu_count()
        from bench import max_batch
        batch_sizes = [max_batch.start_batch(gpus)] if args.find_max_batch else [int(b) for b in args.batch_sizes]
        if args.find_max_batch:  # what "fits" means goes into each probe's row
            run_args = [*run_args, "--find-max-batch",
                        *(["--memory-cap-gb", f"{args.memory_cap_gb:g}"] if args.memory_cap_gb else [])]
        jobs = build_jobs(args.models, batch_sizes, args.strategies, [int(w) for w in args.workers], run_args,
                          args.output, args.timeout, gpus, args.backends, args.axes, args.breakdown)
        for strategy, backend in unsupported(args.strategies, args.backends):
            print(f"note: --strategies {strategy} does not run on {backend}; those configurations are left out")
        from bench.results import check_output, read_rows
        check_output(args.output)
        rows = read_rows(args.output) if Path(args.output).exists() and Path(args.output).stat().st_size else None
    except BenchInputError as e:
        return input_error(e)
    log_dir = Path(args.output).parent / "logs"
    if args.find_max_batch:
        return _find_max_batch(args, jobs, rows, gpus, log_dir)
    done = done_keys(rows)
    todo = [(j, not args.force and j.key(gpus > 0) in done) for j in jobs]
    if args.dry_run:
        for j, skip in todo:
            print(f"{'skip (ok row exists)' if skip else 'run'}: {j.label}\n    {shlex.join(j.command)}")
        print(f"{len(jobs)} configuration(s): {sum(not s for _, s in todo)} to run, {sum(s for _, s in todo)} to skip")
        return 0
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
                    row = run_job(job, args.output, args.timeout, log_dir, gpus, notes)
                except Unwritable as e:  # every later row would be lost as well: stop here
                    unwritable = e
                    results.append((job, "unwritten", None))
                    break
                results.append((job, row["status"], row.get("images_per_sec")))
                msg = f"{job.label}: {row['status']}"
                if row["status"] == "ok":
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
    print(summary(results, len(jobs), args.output, why))
    if stop is not None:
        return exit_code(stop)
    if _write_problems(unwritable, notes):
        return 1
    return 0 if all(s in ("ok", "skipped") for _, s, _ in results) else 1


def _write_problems(unwritable: Exception | None, notes: list[str]) -> bool:
    """One line on stderr for whatever could not be written (the CSV first, then the logs)."""
    problems = [str(e) for e in (unwritable,) if e is not None] + sorted(set(notes))[:1]
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
    return bool(problems)


def _find_max_batch(args: argparse.Namespace, groups: list[Job], rows, gpus: int, log_dir: Path) -> int:
    """The --find-max-batch sweep: exit 0 when every group found a batch that fits. Each group
    is the first probe of its search, run options and axis values included."""
    from bench import max_batch

    if args.dry_run:
        for g in groups:
            print(f"search: {g.group_label}, doubling from batch {g.batch_size} (first probe below; the others "
                  f"differ only in --batch-size)\n    {shlex.join(g.command)}")
        print(f"{len(groups)} search(es)")
        return 0
    results: list = []
    notes: list[str] = []
    try:
        max_batch.run(groups, output=args.output, timeout=args.timeout, gpus=gpus, rows=rows, force=args.force,
                      cap_gb=args.memory_cap_gb, log_dir=log_dir, step=args.batch_granularity, results=results,
                      notes=notes)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP
        print(max_batch.summary(results, args.output))
        print("interrupted: the probes so far are rows in " + args.output)
        return exit_code(stop)
    except Unwritable as e:
        print(max_batch.summary(results, args.output))
        _write_problems(e, notes)
        return 1
    print(max_batch.summary(results, args.output))
    if _write_problems(None, notes):
        return 1
    return 0 if all(r.largest is not None for r in results) else 1


def summary(results: list, total: int, output: str, stopped: str = "") -> str:
    """The table of configurations and the counts; `stopped` says why the rest did not start."""
    counts = {"ok": 0, "skipped": 0}
    for _, status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    failed = sum(v for k, v in counts.items() if k not in ("ok", "skipped"))
    lines = ["", f"{'configuration':<40} {'status':<9} {'images/sec':>11}"]
    for job, status, ips in results:
        lines.append(f"{job.label:<40} {status:<9} {'' if ips is None or ips != ips else f'{float(ips):.1f}':>11}")
    lines.append(f"\nsweep: {total} configuration(s): {counts['ok']} ran ok, {counts['skipped']} skipped "
                 f"(ok row exists), {failed} failed" +
                 (f", {total - len(results)} not started ({stopped})" if stopped else "") +
                 f". Rows in {output}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
