"""Run a grid of benchmark configurations, each in its own child process, into one CSV.

    python bench/sweep.py --models vgg13,resnet18 --batch-sizes 32,64 \\
        --strategies single,mirrored,horovod --workers 1,2 [RUN OPTIONS ...]
    python bench/sweep.py --config sweep.toml [--dry-run] [--force]

RUN OPTIONS are any bench/run.py options (e.g. --width 0.25 --steps 20), passed to every run.
Each configuration runs through its launcher (plain, `horovodrun`, or launch.local_cluster)
with a timeout; a crash, out-of-memory or hang becomes a row with status failed/oom/timeout
and the tail of its output, and the sweep goes on. Configurations that already have an `ok`
row in the CSV are skipped (unless --force), so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.config import DEFAULT_OUTPUT, STRATEGIES, OneLineParser, RunConfig, parse_args  # noqa: E402
from bench.errors import BenchInputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# bench/run.py options the sweep sets itself for every configuration
OWNED = ("--strategy", "--batch-size", "--output", "--cpu-replicas", "--run-id", "--source")
# columns that identify a configuration for resuming (the environment-only ones are left out)
IGNORED_FOR_RESUME = {"threads", "collective_timeout"}
ERROR_TAIL_LINES = 6


@dataclasses.dataclass
class Job:
    """One configuration of the grid and how to launch it."""
    model: str
    batch_size: int
    strategy: str
    workers: int
    run_args: list[str]
    cfg: RunConfig
    command: list[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def processes(self) -> int:
        return self.workers if self.strategy in ("horovod", "multiworker") else 1

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch_size} {self.strategy} x{self.workers}"


# ---- the grid ------------------------------------------------------------------------------
def _csv_list(text: str, kind=str) -> list:
    try:
        return [kind(x.strip()) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise BenchInputError(f"not a list of {kind.__name__}: {text!r}") from None


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


def gpu_count() -> int:
    """GPUs on this machine, without importing TensorFlow."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def launcher_prefix(strategy: str, workers: int, timeout: float) -> list[str]:
    """The launcher for a multi-process strategy (empty for in-process strategies)."""
    py = sys.executable
    if strategy == "horovod":
        hvdrun = Path(py).with_name("horovodrun")
        return [str(hvdrun) if hvdrun.exists() else "horovodrun", "-np", str(workers),
                "-H", f"localhost:{workers}", "--gloo"]
    if strategy == "multiworker":
        return [py, "-m", "launch.local_cluster", "-n", str(workers), "--timeout", f"{timeout:g}", "--"]
    return []


def build_jobs(models: list[str], batch_sizes: list[int], strategies: list[str], workers: list[int],
               run_args: list[str], output: str, timeout: float) -> list[Job]:
    """Expand the grid. `single` runs once, at one worker, whatever --workers says."""
    for s in strategies:
        if s not in STRATEGIES:
            raise BenchInputError(f"unknown strategy {s!r}; valid: {', '.join(STRATEGIES)}")
    for w in workers:
        if w < 1:
            raise BenchInputError(f"workers must be >= 1. Received: workers={w}")
    bad = [a for a in run_args if a.split("=")[0] in OWNED]
    if bad:
        raise BenchInputError(f"the sweep sets {bad[0].split('=')[0]} itself; use --strategies/--batch-sizes/"
                              f"--workers/--output instead")
    gpus = gpu_count()
    cores = os.cpu_count() or 1
    user_threads = any(a.split("=")[0] == "--threads" for a in run_args)
    jobs: list[Job] = []
    seen = set()
    for model in models:
        for batch in batch_sizes:
            for strategy in strategies:
                for w in workers:
                    w = 1 if strategy == "single" else w
                    if (model, batch, strategy, w) in seen:
                        continue
                    seen.add((model, batch, strategy, w))
                    args = [model, "--batch-size", str(batch), "--strategy", strategy, *run_args]
                    env = {}
                    if strategy == "mirrored":
                        if gpus:  # mirrored over the first w GPUs
                            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(min(w, gpus))))
                        else:
                            args += ["--cpu-replicas", str(w)]
                    if not user_threads:  # processes share the cores instead of oversubscribing them
                        per_proc = cores // w if strategy in ("horovod", "multiworker") else cores
                        args += ["--threads", str(max(1, per_proc))]
                    cfg = parse_args([*args, "--output", output])  # validates every run option
                    command = [*launcher_prefix(strategy, w, timeout), sys.executable,
                               str(REPO / "bench" / "run.py"), *args, "--output", output,
                               "--no-progress", "--source", "sweep"]
                    jobs.append(Job(model, batch, strategy, w, args, cfg, command, env))
    return jobs


# ---- resuming ------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and a != a) or a == "":
        return b is None or (isinstance(b, float) and b != b) or b == ""
    if isinstance(a, bool) or str(a) in ("True", "False"):
        return str(a) == str(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def expected_columns(job: Job, has_gpu: bool) -> dict[str, Any]:
    from bench.results import CONFIG

    cfg = job.cfg.resolved(has_gpu=has_gpu)
    cols = {k: getattr(cfg, k) for k in CONFIG if k not in IGNORED_FOR_RESUME}
    cols["workers"] = job.processes
    if job.strategy == "mirrored":
        cols["replicas"] = job.workers
    return cols


def already_done(job: Job, rows, has_gpu: bool) -> bool:
    """True if the CSV has an ok row for exactly this configuration."""
    if rows is None or rows.empty:
        return False
    want = expected_columns(job, has_gpu)
    ok = rows[rows["status"] == "ok"]
    for _, row in ok.iterrows():
        if all(k in row and _same(v, row[k]) for k, v in want.items()):
            return True
    return False


# ---- running one configuration ---------------------------------------------------------------
def _classify(returncode: int, output: str, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    text = output.lower()
    if "resourceexhausted" in text or "out of memory" in text or "memoryerror" in text \
            or returncode in (-signal.SIGKILL, 137):
        return "oom"
    return "failed"


def _tail(text: str, n: int = ERROR_TAIL_LINES) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return " | ".join(lines[-n:])[-1500:]


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # the group may already be gone
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_job(job: Job, output: str, timeout: float, log_dir: Path) -> dict[str, Any]:
    """Run one configuration; make sure it leaves exactly one row (its own, or ours)."""
    from bench.results import append_row, new_run_id, read_rows
    from bench.runner import base_row

    run_id = new_run_id()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{run_id}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "PYTHONUNBUFFERED": "1", **job.env}
    timed_out = False
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(job.command)} --run-id {run_id}\n")
        log.flush()
        proc = subprocess.Popen([*job.command, "--run-id", run_id], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        except BaseException:  # Ctrl-C: stop the child, keep what is written, re-raise
            _stop(proc)
            raise
    output_text = log_path.read_text(errors="replace")
    rows = read_rows(output) if Path(output).exists() else None
    mine = rows[rows["run_id"] == run_id] if rows is not None and "run_id" in rows else None
    if mine is not None and not mine.empty:
        return mine.iloc[-1].to_dict()  # its own row (ok, nan, oom or failed)
    status = _classify(proc.returncode, output_text, timed_out)
    error = (f"timed out after {timeout:g} s: " if timed_out else f"exit code {proc.returncode}: ") + _tail(output_text)
    row = base_row(job.cfg)
    row.update(run_id=run_id, workers=job.processes, replicas=job.workers, per_replica_batch=job.batch_size,
               global_batch=job.batch_size * job.workers, status=status, error=error,
               wall_s=time.monotonic() - started)
    append_row(output, row)
    return row


# ---- the command line --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="bench/sweep.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a TOML file with models, batch_sizes, strategies, workers, "
                   "timeout, output and a [run] table of shared run options")
    p.add_argument("--models")
    p.add_argument("--batch-sizes")
    p.add_argument("--strategies")
    p.add_argument("--workers")
    p.add_argument("--output")
    p.add_argument("--timeout", type=float, help="seconds per configuration (default 1800)")
    p.add_argument("--force", action="store_true", help="rerun configurations that already have an ok row")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and commands, run nothing")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    args, run_args = build_parser().parse_known_args(argv)
    file: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                file = tomllib.load(f)
        except OSError as e:
            raise BenchInputError(f"cannot read config={args.config}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise BenchInputError(f"config={args.config} is not valid TOML: {e}") from None
        unknown = set(file) - {"models", "batch_sizes", "strategies", "workers", "timeout", "output", "run"}
        if unknown:
            raise BenchInputError(f"unknown key(s) in config={args.config}: {', '.join(sorted(unknown))}")

    def pick(name: str, kind=str, default=None) -> list:
        """A list option: the command line's comma list, else the file's list (or comma string)."""
        value = getattr(args, name)
        if value is None:
            value = file.get(name, default)
        if value is None:
            return []
        return _csv_list(",".join(map(str, value)) if isinstance(value, list) else value, kind)

    args.models = pick("models")
    args.batch_sizes = pick("batch_sizes", int)
    args.strategies = pick("strategies", str, ["single"])
    args.workers = pick("workers", int, [1])
    if not args.models or not args.batch_sizes:
        raise BenchInputError("a sweep needs --models and --batch-sizes (or models/batch_sizes in --config)")
    for b in args.batch_sizes:
        if int(b) < 1:
            raise BenchInputError(f"batch sizes must be >= 1. Received: batch_size={b}")
    args.timeout = args.timeout if args.timeout is not None else float(file.get("timeout", 1800))
    if args.timeout <= 0:
        raise BenchInputError(f"timeout must be > 0. Received: timeout={args.timeout:g}")
    args.output = args.output or file.get("output", DEFAULT_OUTPUT)
    run_args = toml_to_args(file.get("run", {})) + run_args
    return args, run_args


def main(argv: list[str] | None = None) -> int:
    """Run (or list) the sweep. Bad input: one line, exit 2. Interrupted: exit 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, run_args = parse(argv)
        jobs = build_jobs(args.models, [int(b) for b in args.batch_sizes], args.strategies,
                          [int(w) for w in args.workers], run_args, args.output, args.timeout)
        from bench.results import check_writable, read_rows
        check_writable(args.output)
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write results to output={args.output}: {e}", file=sys.stderr)
        return 2
    has_gpu = gpu_count() > 0
    rows = read_rows(args.output) if Path(args.output).exists() and Path(args.output).stat().st_size else None
    todo = [(j, not args.force and already_done(j, rows, has_gpu)) for j in jobs]
    if args.dry_run:
        for j, skip in todo:
            print(f"{'skip (ok row exists)' if skip else 'run'}: {j.label}\n    {shlex.join(j.command)}")
        print(f"{len(jobs)} configuration(s): {sum(not s for _, s in todo)} to run, {sum(s for _, s in todo)} to skip")
        return 0
    results: list[tuple[Job, str, Any]] = []
    log_dir = Path(args.output).parent / "logs"
    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="config", file=sys.stderr, dynamic_ncols=True)
    interrupted = False
    try:
        for job, skip in todo:
            if bar:
                bar.set_description(job.label)
            if skip:
                results.append((job, "skipped", None))
            else:
                row = run_job(job, args.output, args.timeout, log_dir)
                results.append((job, row["status"], row.get("images_per_sec")))
                msg = f"{job.label}: {row['status']}"
                if row["status"] == "ok":
                    msg += f", {float(row['images_per_sec']):.1f} images/sec"
                else:
                    msg += f" ({str(row.get('error', ''))[:200]})"
                (bar.write if bar else print)(msg)
            if bar:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar:
            bar.close()
    print(summary(results, len(jobs), args.output, interrupted))
    if interrupted:
        return 130
    return 0 if all(s in ("ok", "skipped") for _, s, _ in results) else 1


def summary(results: list, total: int, output: str, interrupted: bool) -> str:
    counts = {"ok": 0, "skipped": 0}
    for _, status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    failed = sum(v for k, v in counts.items() if k not in ("ok", "skipped"))
    lines = ["", f"{'configuration':<40} {'status':<9} {'images/sec':>11}"]
    for job, status, ips in results:
        lines.append(f"{job.label:<40} {status:<9} {'' if ips is None or ips != ips else f'{float(ips):.1f}':>11}")
    lines.append(f"\nsweep: {total} configuration(s): {counts['ok']} ran ok, {counts['skipped']} skipped "
                 f"(ok row exists), {failed} failed" +
                 (f", {total - len(results)} not started (interrupted; rerun to resume)" if interrupted else "") +
                 f". Rows in {output}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
