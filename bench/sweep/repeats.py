"""`bench/run.py --repeats N`: the configuration run N times, each in a fresh child process (the
sweep's children, bench.sweep.children), one row each, and the spread between the runs."""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from bench.config.schema import RunConfig
from bench.errors import BenchInputError, ExitCode, Status
from bench.measure.stats import MIN_RUNS_FOR_CI, across_runs, olympic_mean
from bench.procs import exit_code, gpu_count, stop_on_signals
from bench.results.provenance import new_run_id
from bench.sweep.children import Unwritable, run_job
from bench.sweep.grid import Job, command_line
from launch import STRATEGIES, Launch, get_strategy
from launch.base import MAX_TIMEOUT_S


def check_not_launched(cfg: RunConfig) -> None:
    """One rank of a launched job (horovodrun, a local cluster: its launcher's variables set) cannot
    start N fresh copies of itself soundly: each rank would start its own, and the peers of a
    child would be the other ranks' children of another index. Refused; the sweep launches each
    repeat under its launcher instead."""
    for strategy in STRATEGIES.values():
        try:
            strategy.check_no_launcher()
        except BenchInputError:
            raise BenchInputError(f"--repeats {cfg.repeats} starts a fresh process per repeat, which one rank of a "
                                  f"launched job (--strategy {strategy.name}'s launcher variables are set) cannot do: "
                                  f"run bench/run.py --repeats outside the launcher, or python -m bench.sweep "
                                  f"--strategies {strategy.name} --repeats {cfg.repeats}. "
                                  f"Received: repeats={cfg.repeats}") from None


def repeat_jobs(cfg: RunConfig) -> list[Job]:
    """The N repeats of `cfg`, one group: each a child `bench/run.py` started as this process was
    (no launcher), its row marked with its index and the group, its progress bars off, and a
    predicted out-of-memory kept as a row (as a sweep's children do) rather than refused."""
    child = dataclasses.replace(cfg, progress=False, on_predicted_oom="row")
    launch = Launch(prefix=[], env={}, run_args=[], processes=1, threads=cfg.threads)
    job = Job(child, 1, launch, command_line(launch, child), get_strategy(cfg.strategy).replicas(1, gpu_count()))
    group = new_run_id()
    return [job.repeat(i, group) for i in range(cfg.repeats)]


def run_repeats(cfg: RunConfig, timeout: float = MAX_TIMEOUT_S) -> int:
    """Run the repeats one after another, print each and then the spread between them. A repeat
    that fails is its own failed row; the others still run. Exit 0 when every repeat is ok, 1
    otherwise; Ctrl-C, SIGTERM, SIGHUP: the running child stopped, the summary, 128 + the signal."""
    jobs = repeat_jobs(cfg)
    log_dir = Path(cfg.output).parent / "logs"
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    stop = None
    try:
        with stop_on_signals():
            for job in jobs:
                row = run_job(job, cfg.output, timeout, log_dir, notes)
                rows.append(row)
                print(_run_line(job, row), flush=True)
    except KeyboardInterrupt as e:
        stop = e
    except Unwritable as e:
        print(between_runs_text(rows, cfg.repeats, cfg.output))
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.FAILED
    print(between_runs_text(rows, cfg.repeats, cfg.output))
    if stop is not None:
        print(f"interrupted after {len(rows)} of {cfg.repeats} repeats", file=sys.stderr)
        return exit_code(stop)
    return ExitCode.OK if all(r["status"] == Status.OK for r in rows) else ExitCode.FAILED


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _run_line(job: Job, row: dict[str, Any]) -> str:
    head = f"repeat {job.cfg.repeat_index + 1} of {job.cfg.repeats}: {row['status']}"
    if row["status"] != Status.OK:
        return f"{head} ({str(row.get('error', ''))[:200]})"
    low, high = _float(row.get("images_per_sec_median_ci95_low")), _float(row.get("images_per_sec_median_ci95_high"))
    text = f"{head}, {_float(row.get('images_per_sec_median')):.1f} images/sec (within-run 95% CI {low:.1f}-{high:.1f})"
    if _float(row.get("time_to_target_s")) == _float(row.get("time_to_target_s")):
        text += f", {_float(row['time_to_target_s']):.1f} s to the target"
    return text


def between_runs_text(rows: list[dict[str, Any]], repeats: int, output: str) -> str:
    """The spread between the repeats: the median of their median images/sec, its 95% CI across
    runs and the coefficient of variation; in accuracy mode with a target, each run's time to it
    and MLPerf's olympic mean."""
    ok = [r for r in rows if r.get("status") == Status.OK]
    lines = [f"\nrepeats: {len(ok)} of {repeats} ok, {len(rows) - len(ok)} failed, "
             f"{repeats - len(rows)} not run. Rows in {output}"]
    a = across_runs([_float(r.get("images_per_sec_median")) for r in ok])
    if a.runs:
        ci = (f"between-run 95% CI {a.low:.1f}-{a.high:.1f}" if a.runs >= MIN_RUNS_FOR_CI
              else f"too few runs for a between-run CI (needs {MIN_RUNS_FOR_CI})")
        cv = f", CV {100 * a.cv:.1f}%" if a.cv == a.cv else ""
        lines.append(f"  images/sec  {a.median:.1f} median of {a.runs} run medians ({ci}{cv})")
    if any(r.get("target_accuracy") not in (None, "") and _float(r.get("target_accuracy")) > 0 for r in ok):
        times = [_float(r.get("time_to_target_s")) if str(r.get("target_reached")) == "True" else math.inf
                 for r in ok]
        reached = sum(math.isfinite(t) for t in times)
        each = ", ".join(f"{t:.1f}" if math.isfinite(t) else "not reached" for t in times)
        score = olympic_mean(times)
        lines.append(f"  time to target  {reached} of {len(ok)} runs reached it: {each} s; olympic mean "
                     + (f"{score:.1f} s (fastest and slowest dropped)" if score == score
                        else "n/a (needs 3 runs, at most one not reaching the target)"))
    return "\n".join(lines)
