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
from bench.config.parse import parse_args, parse_value
from bench.config.schema import Opt, RunConfig, schema
from bench.errors import BenchInputError, Status
from launch import Launch, get_strategy
from launch.base import STRATEGY_OPTIONS

# bench/run.py options the sweep sets itself for every configuration (a strategy's launch may add more)
OWNED = ("--strategy", "--backend", "--batch-size", "--output", "--run-id", "--source", "--on-predicted-oom")


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
                "backend": "--backends", "output": "--output", "run_id": "", "source": "",
                "on_predicted_oom": "", "progress": "",
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
               "--output", output, "--no-progress", "--source", "sweep", "--on-predicted-oom", "row"]
    return Job(model, batch, strategy.name, workers, cfg, launch, command, strategy.replicas(workers, gpus), backend,
               run_args=tuple(run_args))


# ---- resuming ------------------------------------------------------------------------------
def done_keys(rows) -> set[tuple]:
    """The configuration keys that already have an ok row."""
    if rows is None or rows.empty:
        return set()
    return {config_key(r) for r in rows[rows["status"] == Status.OK].to_dict("records")}
