"""A sweep's grid: configurations (model x batch x strategy x workers x backend x axes) as `Job`s, each with the command line that runs it under its strategy's launcher, and the keys of those already done."""
from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass
from typing import Any

from bench import REPO
from bench.config.key import config_key
from bench.config.parse import parse_value, read_options, validate
from bench.config.schema import DEFAULT_BACKEND, Opt, RunConfig, schema
from bench.errors import BenchInputError, Status
from bench.results.columns import predicted
from bench.results.provenance import new_run_id
from bench.runner.validate import prepare
from launch import Launch, get_strategy
from launch.base import STRATEGY_OPTIONS

# bench/run.py options the sweep sets itself for every configuration (a strategy's launch may add more)
OWNED = ("strategy", "backend", "batch_size", "output", "run_id", "source", "on_predicted_oom", "repeats",
         "repeat_index", "repeat_group")


@dataclass
class Job:
    """One configuration of the grid (checked and resolved: the child's command line is
    `cfg.to_argv()`, and its row's key is the configuration's) and how to launch it."""
    cfg: RunConfig
    workers: int
    launch: Launch
    command: list[str]
    replicas: int
    axes: tuple[tuple[str, str], ...] = ()   # (option, value) of each --axis, in order

    @property
    def model(self) -> str:
        return self.cfg.model or "input"  # --mode input: the pipeline alone

    @property
    def per_replica_batch(self) -> int:
        return self.cfg.batch_size

    @property
    def strategy(self) -> str:
        return self.cfg.strategy

    @property
    def backend(self) -> str:
        return self.cfg.backend

    @property
    def label(self) -> str:
        extra = "".join(f" {name}={value}" for name, value in self.axes)
        if self.cfg.repeat_index is not None:
            extra += f" #{self.cfg.repeat_index}"
        return f"{self.model} b{self.per_replica_batch} {self.strategy} x{self.workers} {self.backend}{extra}"

    @property
    def group_label(self) -> str:
        """The label without the batch size (a --find-max-batch search)."""
        extra = "".join(f" {name}={value}" for name, value in self.axes)
        return f"{self.model} {self.strategy} x{self.workers} {self.backend}{extra}"

    def key(self) -> tuple:
        """The configuration key its row will have."""
        return config_key(self.cfg, workers=self.launch.processes, replicas=self.replicas)

    def repeat(self, index: int, group: str) -> "Job":
        """Repeat `index` (from 0) of this configuration in group `group`: the same key and command
        line, plus the repeat's own index and group for its row."""
        cfg = dataclasses.replace(self.cfg, repeat_index=index, repeat_group=group)
        return dataclasses.replace(self, cfg=cfg, command=command_line(self.launch, cfg))

    def at_batch(self, per_replica_batch: int) -> "Job":
        """The same configuration at another per-replica batch (a --find-max-batch probe)."""
        cfg = dataclasses.replace(self.cfg, batch_size=per_replica_batch)
        return dataclasses.replace(self, cfg=cfg, command=command_line(self.launch, cfg))


# ---- the grid ------------------------------------------------------------------------------
def toml_options(table: dict[str, Any]) -> dict[str, Any]:
    """A [run] table of a sweep file as RunConfig fields, each value checked as bench/run.py
    checks its option (the counterpart of bench.config.parse.read_options for the command line)."""
    opts = schema()
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        o = opts.get(name)
        if o is None or not o.cli or o.positional:
            raise BenchInputError(f"[run] {key} is not a bench/run.py option. Received: {key}={value!r}")
        if o.kind == "bool":
            if not isinstance(value, bool):
                raise BenchInputError(f"{name} must be true or false. Received: {name}={value!r}")
            out[name] = value
        else:
            out[name] = parse_value(name, o, str(value))
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# RunConfig fields the sweep sets itself: its own axes, or what it owns per configuration
SWEEP_FIELDS = {"model": "--models", "batch_size": "--batch-sizes", "strategy": "--strategies",
                "backend": "--backends", "output": "--output", "run_id": "", "source": "",
                "on_predicted_oom": "", "progress": "", "repeats": "--repeats", "repeat_index": "", "repeat_group": "",
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

    return any(name in STRATEGY_OPTIONS and name not in strategy.options and value != STRATEGY_OPTIONS[name]
               for name, value in chosen)


def unsupported(strategies: list[str], backends: list[str]) -> list[tuple[str, str]]:
    """The (strategy, backend) cells of the grid that cannot run (e.g. Horovod on JAX)."""
    return [(s, b) for s in strategies for b in backends if b not in get_strategy(s).backends]


def build_jobs(models: list[str], per_replica_batches: list[int | None], strategies: list[str], workers: list[int],
               shared: dict[str, Any], output: str, timeout: float, gpus: int = 0,
               backends: tuple[str, ...] | list[str] = (DEFAULT_BACKEND,), axes: Axes = (),
               breakdown: bool = False, settings: dict[str, Any] | None = None) -> list[Job]:
    """Expand the grid: models x batch sizes x strategies x backends x workers x every --axis.
    A batch of None is the run's default (what --find-max-batch starts from). `shared` holds
    the run options every configuration shares, as RunConfig fields (`toml_options`,
    bench.config.parse.read_options); `settings` are fields the sweep itself sets on every one
    (e.g. find_max_batch). With `breakdown`, each configuration of more than one replica is
    followed by its twin run with --no-gradient-sync (the report's exposed communication is
    their difference). A strategy that does not scale runs once, at one worker, whatever
    --workers says. Each strategy says how it is launched, how the cores are split and which
    backends it runs on: the cells it cannot run are left out (see `unsupported`)."""
    classes = [get_strategy(s) for s in strategies]
    for b in backends:
        parse_value("backend", schema()["backend"], b)
    for w in workers:
        if w < 1:
            raise BenchInputError(f"workers must be >= 1. Received: workers={w}")
    bad = sorted(set(shared) & set(OWNED))
    if bad and bad[0].startswith("repeat"):
        raise BenchInputError(f"{bad[0]} is the sweep's own: give --repeats N (or repeats = N) to the sweep, not as a "
                              f"run option, which would make each child start its own copies. "
                              f"Received: {bad[0]}={shared[bad[0]]}")
    if bad:
        raise BenchInputError(f"the sweep sets {_flag(bad[0])} itself; use --strategies/--backends/--batch-sizes/"
                              f"--workers/--output instead")
    names = [name for name, _ in axes]
    for name in names:
        if names.count(name) > 1 or name in shared:
            raise BenchInputError(f"--axis {name} is given twice (as two axes, or as an axis and a run option). "
                                  f"Received: axis={name}")
    combos = list(itertools.product(*(values for _, values in axes)))
    fixed = {"output": output, "source": "sweep", "on_predicted_oom": "row", "progress": False, **(settings or {})}
    jobs: list[Job] = []
    seen = set()
    for model in models:
        for batch in per_replica_batches:
            for strategy, backend in ((c, b) for c in classes for b in backends if b in c.backends):
                for w in workers:
                    w = w if strategy.scalable else 1
                    for combo in combos:
                        chosen = tuple(zip(names, combo))
                        if (model, batch, strategy.name, w, backend, combo) in seen or _not_for(strategy, chosen):
                            continue
                        seen.add((model, batch, strategy.name, w, backend, combo))
                        values = {**fixed, "model": model, "batch_size": batch, "strategy": strategy.name,
                                  "backend": backend, **dict(chosen)}
                        job = make_job(values, w, shared, timeout, gpus, axes=tuple((n, str(v)) for n, v in chosen))
                        jobs.append(job)
                        if breakdown and job.replicas > 1:
                            jobs.append(make_job({**values, "gradient_sync": False}, w, shared, timeout, gpus,
                                                 axes=(*job.axes, ("gradient_sync", "False"))))
    return jobs


def make_job(values: dict[str, Any], workers: int, shared: dict[str, Any], timeout: float, gpus: int = 0,
             axes: tuple[tuple[str, str], ...] = ()) -> Job:
    """One configuration: its strategy's launch options, the run options every configuration
    shares (`shared`, read by bench.config.parse.read_options) and its own `values`, checked and
    resolved (bench.runner.validate), and its command line under its strategy's launcher."""
    strategy = get_strategy(values["strategy"])
    launch = strategy.launch(workers, timeout=timeout, gpus=gpus, cores=os.cpu_count() or 1)
    launched = read_options(launch.run_args)
    clash = sorted(set(shared) & set(launched))
    if clash:
        raise BenchInputError(f"the sweep sets {_flag(clash[0])} itself for --strategies {strategy.name}; "
                              f"use --workers instead")
    # threads: unless asked, the launch's share of the cores, so that processes do not oversubscribe them
    cfg = RunConfig(**{"threads": launch.threads, **launched, **shared, **values})
    validate(cfg)
    cfg = prepare(cfg)
    return Job(cfg, workers, launch, command_line(launch, cfg), strategy.replicas(workers, gpus), axes)


def command_line(launch: Launch, cfg: RunConfig) -> list[str]:
    return [*launch.prefix, sys.executable, str(REPO / "bench" / "run.py"), *cfg.to_argv()]


# ---- resuming ------------------------------------------------------------------------------
def done_keys(rows) -> set[tuple]:
    """The configuration keys that already have an ok measured row (a prediction measured nothing)."""
    if rows is None or rows.empty:
        return set()
    return {config_key(r) for r in rows[(rows["status"] == Status.OK) & ~predicted(rows)].to_dict("records")}


def repeat_plan(jobs: list[Job], repeats: int, rows, force: bool = False) -> list[tuple[Job, bool]]:
    """Every repeat of every configuration, interleaved (A B C A B C ...: drift over the sweep
    hits each configuration alike), each with whether it is already done. A repeat is done when
    the configuration's latest group of `repeats` repeats (the same key and --repeats N) has an
    ok measured row at that index: resume completes that group, under its own id, with only the
    missing indices. Without such a group (or with `force`), a new group of all N."""
    ok = None
    if rows is not None and not rows.empty and not force and "repeat_group" in rows:
        ok = rows[(rows["status"] == Status.OK) & ~predicted(rows) & rows["repeat_group"].notna()
                  & (rows["repeat_group"].astype(object) != "")]
        ok = ok[[_int(v) == repeats for v in ok["repeats"]]].sort_values("timestamp_utc", kind="stable")
    plans = []
    for job in jobs:
        group, done = new_run_id(), set()
        if ok is not None and not ok.empty:
            mine = ok[[config_key(r) == job.key() for r in ok.to_dict("records")]]
            if not mine.empty:
                group = str(mine["repeat_group"].iloc[-1])
                done = {_int(i) for i in mine.loc[mine["repeat_group"].astype(str) == group, "repeat_index"]}
        plans.append((job, group, done))
    return [(job.repeat(i, group), i in done) for i in range(repeats) for job, group, done in plans]


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None
