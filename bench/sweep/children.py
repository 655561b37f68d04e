"""One configuration in its own child process: started under its launcher, its output logged, bounded by a timeout, stopped with everything it started, and a row kept whatever happens to it."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.errors import Status, one_line, tail
from bench.procs import describe_exit, killed_for_memory, stop_groups
from bench.results.provenance import new_run_id
from bench.results.row import Outcome, Topology, build_row
from bench.results.store import append_row, read_rows
from bench.sweep.grid import Job

ERROR_TAIL_LINES = 6


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


def _classify(returncode: int, output: str, timed_out: bool) -> Status:
    """The status of a child that left no row, from how it ended and what it printed."""
    if timed_out:
        return Status.TIMEOUT
    text = output.lower()
    if "resourceexhausted" in text or "out of memory" in text or "memoryerror" in text \
            or killed_for_memory(returncode):
        return Status.OOM
    return Status.FAILED


def run_job(job: Job, output: str, timeout: float, log_dir: Path,
            notes: list[str] | None = None) -> dict[str, Any]:
    """Run one configuration; make sure it leaves exactly one row (its own, or ours). A log
    folder that cannot be written is noted in `notes`; a CSV that cannot be written raises
    Unwritable."""

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
        status = Status.FAILED
    else:
        status = _classify(proc.returncode, output_text, timed_out)
        how = f"timed out after {timeout:g} s" if timed_out else describe_exit(proc.returncode)
    topology = Topology(workers=job.launch.processes, replicas=job.replicas, per_replica_batch=job.per_replica_batch,
                        global_batch=job.per_replica_batch * job.replicas)
    row = build_row(dataclasses.replace(job.cfg, run_id=run_id),
                    Outcome(status, f"{how}: {tail(output_text, ERROR_TAIL_LINES)}"), topology=topology,
                    wall_s=time.monotonic() - started)
    try:
        append_row(output, row)
    except OSError as e:
        raise Unwritable(f"could not write the row of {job.label} to {output}: {one_line(e)}") from None
    return row
