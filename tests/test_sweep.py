"""Sweeps: grid expansion, real child processes per configuration, failures as rows, resume,
Ctrl-C, and CSV reliability under concurrent writers, kills and a full disk."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO

from bench.errors import BenchInputError
from bench.results.columns import COLUMNS
from bench.results.store import append_row, read_rows
from launch import get_strategy, strategy_names

STRATEGY_NAMES = strategy_names()

PY = sys.executable
TINY = ["--width", "0.125", "--steps", "3", "--warmup-steps", "1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "bench.sweep", "--no-progress", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _sets(command: str, *options: str) -> bool:
    """Whether a command line holds every option (with its value) as whole words."""
    padded = f" {command.strip()} "
    return all(f" {o} " in padded for o in options)


# ---- grid, dry run and bad input (no TensorFlow involved) -------------------------------------
def test_dry_run_lists_configurations_and_launchers(tmp_path):
    models, batches, strategies, workers = ["vgg13", "resnet18"], [32, 64], STRATEGY_NAMES, [1, 2]
    r = sweep("--models", ",".join(models), "--batch-sizes", ",".join(map(str, batches)), "--strategies",
              ",".join(strategies), "--workers", "1,2", "--dry-run", *TINY, "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    runs = [l for l in r.stdout.splitlines() if l.startswith("run: ")]
    # a strategy that does not scale runs once per model x batch, the others once per worker count
    per_cell = sum(len(workers) if get_strategy(s).scalable else 1 for s in strategies)
    n = len(models) * len(batches) * per_cell
    assert len(runs) == n
    assert f"{n} configuration(s): {n} to run, 0 to skip" in r.stdout
    cores = os.cpu_count() or 1
    lines = r.stdout.splitlines()
    for s in strategies:
        strategy = get_strategy(s)
        w = 2 if strategy.scalable else 1
        launch = strategy.launch(w, timeout=1800, gpus=0, cores=cores)
        command = lines[lines.index(f"run: vgg13 b32 {s} x{w} tensorflow") + 1]
        assert command.strip().startswith(" ".join(launch.prefix))  # the strategy's own launcher
        assert " ".join(launch.run_args) in command
        assert f"--threads {max(1, cores // launch.processes)}" in command  # processes share the cores
    assert not (tmp_path / "r.csv").exists()


def test_toml_config_with_shared_run_options(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('models = ["vgg11"]\nbatch_sizes = [8, 16]\nstrategies = ["single"]\ntimeout = 60\n'
                   '[run]\nwidth = 0.125\nsteps = 3\nxla = false\ndata = "digits"\n')
    r = sweep("--config", str(cfg), "--dry-run", "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run: vgg11") == 2
    commands = [l for l in r.stdout.splitlines() if l.startswith("    ")]
    # each child's command line is its configuration's RunConfig.to_argv(), in the schema's order
    assert len(commands) == 2 and all(_sets(c, "--width 0.125", "--steps 3", "--no-xla", "--data digits")
                                      for c in commands)


def test_a_toml_run_table_becomes_run_config_fields():
    """[run] values are checked as bench/run.py checks its options, and never turned into text:
    false for a flag (force) is simply the default, not a --no-force the parser would refuse."""
    from bench.errors import BenchInputError
    from bench.sweep.grid import toml_options

    assert toml_options({"width": 0.125, "xla": False, "force": False, "hvd-autotune": True, "steps": 3}) == {
        "width": 0.125, "xla": False, "force": False, "hvd_autotune": True, "steps": 3}
    for table, named in [({"widht": 1}, "widht"), ({"xla": "no"}, "xla"), ({"width": 0}, "width=0"),
                         ({"model": "vgg11"}, "model")]:
        with pytest.raises(BenchInputError, match=named):
            toml_options(table)


def test_any_run_option_is_an_axis_on_the_command_line_and_in_toml(tmp_path):
    r = sweep("--models", "vgg11", "--batch-sizes", "8", "--axis", "lr=0.1,0.01", "--axis", "xla=true,false",
              "--axis", "precision=fp32,mixed_bf16", "--dry-run", *TINY, "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    runs = [l for l in r.stdout.splitlines() if l.startswith("run: ")]
    assert len(runs) == 8 and "8 configuration(s): 8 to run" in r.stdout
    assert "run: vgg11 b8 single x1 tensorflow lr=0.01 xla=False precision=mixed_bf16" in runs
    commands = r.stdout.split("\n    ")[1:]
    assert sum(_sets(c, "--lr 0.01", "--no-xla", "--precision mixed_bf16") for c in commands) == 1
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('models = ["vgg11"]\nbatch_sizes = [8]\n[axes]\nlr = [0.1, 0.01]\naugment = [true, false]\n'
                   '[run]\nwidth = 0.125\ndata = "digits"\n')
    r = sweep("--config", str(cfg), "--dry-run", "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run: vgg11") == 4 and "lr=0.1 augment=True" in r.stdout
    # a child's command names what differs from bench/run.py's defaults: augment=False is the default
    commands = [l for l in r.stdout.splitlines() if l.startswith("    ")]
    assert sum(_sets(c, "--augment") for c in commands) == 2 and "--no-augment" not in r.stdout


def test_a_strategy_option_axis_leaves_out_the_cells_of_strategies_without_it():
    import bench.sweep.grid as sw

    jobs = sw.build_jobs(["vgg11"], [8], ["single", "horovod"], [2], {"width": 0.125}, "r.csv", 60,
                         axes=[sw.parse_axis("hvd_compression", "none,fp16")])
    assert sorted((j.strategy, j.cfg.hvd_compression) for j in jobs) == [
        ("horovod", "fp16"), ("horovod", "none"), ("single", "none")]


def test_breakdown_follows_each_multi_replica_configuration_with_its_unsynced_twin():
    import bench.sweep.grid as sw

    jobs = sw.build_jobs(["vgg11"], [8], ["single", "horovod", "multiworker"], [1, 2], {"width": 0.125}, "r.csv",
                         60, axes=[sw.parse_axis("hvd_compression", "none,fp16")], breakdown=True)
    got = [(j.strategy, j.workers, j.cfg.hvd_compression, j.cfg.gradient_sync) for j in jobs]
    assert got == [("single", 1, "none", True),
                   ("horovod", 1, "none", True), ("horovod", 1, "fp16", True),
                   ("horovod", 2, "none", True), ("horovod", 2, "none", False),
                   ("horovod", 2, "fp16", True), ("horovod", 2, "fp16", False),
                   ("multiworker", 1, "none", True), ("multiworker", 2, "none", True),
                   ("multiworker", 2, "none", False)]
    assert len({j.key() for j in jobs}) == len(jobs)
    assert all("--no-gradient-sync" in j.command for j in jobs if not j.cfg.gradient_sync)


def test_a_child_keeps_a_row_of_a_predicted_oom_and_the_option_is_no_column_nor_key():
    """A sweep's child asks for an oom_predicted row (bench/run.py alone refuses, exit 2); the
    request is the sweep's own, outside the row and the configuration's key."""
    import bench.sweep.grid as sw
    from bench.config.parse import parse_args
    from bench.config.schema import CONFIG_COLUMNS, KEY_FIELDS

    (job,) = sw.build_jobs(["vgg11"], [8], ["single"], [1], {"width": 0.125}, "r.csv", 60)
    assert "--on-predicted-oom" in job.command and job.cfg.on_predicted_oom == "row"
    assert parse_args(job.command[job.command.index("vgg11"):]).on_predicted_oom == "row"
    assert parse_args(["vgg11"]).on_predicted_oom == "refuse"
    assert "on_predicted_oom" not in CONFIG_COLUMNS and "on_predicted_oom" not in KEY_FIELDS
    with pytest.raises(BenchInputError, match="on-predicted-oom"):
        sw.build_jobs(["vgg11"], [8], ["single"], [1], {"on_predicted_oom": "refuse"}, "r.csv", 60)


def test_axis_values_make_distinct_configurations():
    """Each point of an axis is its own configuration key: resume and the report keep them apart."""
    import bench.sweep.grid as sw

    jobs = sw.build_jobs(["vgg11"], [8], ["single"], [1], {"width": 0.125}, "r.csv", 60,
                         axes=[sw.parse_axis("lr", "0.1,0.01"), sw.parse_axis("seed", "0,1")])
    assert len({j.key() for j in jobs}) == 4
    assert sorted((j.cfg.lr, j.cfg.seed) for j in jobs) == [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]


@pytest.mark.parametrize("args,named", [
    (["--models", "vgg13", "--batch-sizes", "32", "--axis", "batch_size=8,16"], "--batch-sizes"),
    (["--models", "vgg13", "--batch-sizes", "32", "--axis", "summary=true"], "axis=summary"),
    (["--models", "vgg13", "--batch-sizes", "32", "--axis", "lr=0.1", "--lr", "0.2"], "axis=lr"),
    (["--models", "vgg13", "--batch-sizes", "32", "--axis", "width=0"], "width=0"),
    (["--models", "vgg13", "--batch-sizes", "32", "--strategies", "ring"], "ring"),
    (["--models", "vgg13", "--batch-sizes", "32", "--batch-size", "8"], "--batch-size"),
    (["--models", "vgg13", "--batch-sizes", "32", "--width", "0"], "width=0"),
    (["--models", "vgg99", "--batch-sizes", "32"], "vgg99"),
    (["--models", "vgg13", "--batch-sizes", "0"], "batch_size=0"),
    (["--models", "vgg13"], "--batch-sizes"),
    (["--config", "/nonexistent/sweep.toml"], "/nonexistent/sweep.toml"),
    (["--models", "vgg13", "--batch-sizes", "32", "--breakdown", "--axis", "gradient_sync=true,false"],
     "breakdown=True"),
    (["--models", "vgg13", "--batch-sizes", "32", "--breakdown", "--no-gradient-sync"], "breakdown=True"),
    # options outside the configuration key: their points would share one key (issue 21)
    *[(["--models", "vgg13", "--batch-sizes", "32", "--axis", axis], f"axis={axis.split('=')[0]}")
      for axis in ("threads=1,2", "force=true,false", "collective_timeout=5,10", "data_dir=/a,/b",
                   "init_weights=a.weights.h5,b.weights.h5", "save_weights=a.weights.h5,b.weights.h5")],
])
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, args, named):
    r = sweep(*args, "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and named in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.csv").exists()


def test_every_axis_is_part_of_the_configuration_key():
    """What an axis may be swept over: exactly the options that tell configurations apart."""
    import bench.sweep.grid as sw
    from bench.config.schema import KEY_FIELDS, schema

    for name, o in schema().items():
        if not o.cli or o.hidden or name in sw.SWEEP_FIELDS:
            continue
        if name in KEY_FIELDS:  # "1,2" may be out of its bounds, but the option is never refused as an axis
            try:
                sw.parse_axis(name, "1,2")
            except sw.BenchInputError as e:
                assert "configuration's key" not in str(e)
        else:
            with pytest.raises(sw.BenchInputError, match="not part of a configuration's key"):
                sw.parse_axis(name, "1,2")


@pytest.mark.parametrize("env,named", [
    ({"KERAS_BACKEND": "torch"}, "KERAS_BACKEND=torch"),
    ({"KERAS_BACKEND": "jax"}, "--backends jax"),
    ({"TF_CONFIG": '{"cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}, '
                   '"task": {"type": "worker", "index": 0}}'}, "TF_CONFIG"),
    ({"TF_CONFIG": '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}'},
     "TF_CONFIG"),
    ({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}, "HOROVOD_RANK=0"),
])
def test_a_bad_environment_is_refused_before_any_child(tmp_path, env, named):
    """Not a failed row per configuration: one line, exit 2, no child, no row, no log folder."""
    out = tmp_path / "runs.csv"
    r = subprocess.run([PY, "-m", "bench.sweep", "--no-progress", "--models", "vgg11", "--batch-sizes", "2,4", *TINY,
                        "--output", str(out)], cwd=REPO, env={**ENV, **env}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and named in r.stderr and "Traceback" not in r.stderr
    assert "--backend torch" not in r.stderr  # a value --backend refuses is no hint
    assert sorted(os.listdir(tmp_path)) == []


def _answer_rows(out: Path, lrs: list[float], fits_up_to: int) -> None:
    """Rows that answer every probe of a vgg11 search at these learning rates: ok up to
    `fits_up_to`, oom above, as a finished search would have left them."""
    from bench.config.parse import parse_args
    from bench.results.row import Outcome, Topology, build_row

    for lr in lrs:
        for batch in (fits_up_to, 2 * fits_up_to):
            cfg = parse_args(["vgg11", "--batch-size", str(batch), "--lr", str(lr), *TINY, "--find-max-batch",
                              "--output", str(out), "--source", "sweep"]).resolved(has_gpu=False)
            ok = batch == fits_up_to
            row = build_row(cfg, Outcome("ok" if ok else "oom", "" if ok else "ResourceExhausted"),
                            topology=Topology(1, 1, batch, batch))
            append_row(out, {**row, "images_per_sec": 10.0, "peak_mem_bytes": 2**20} if ok else row)


def test_find_max_batch_carries_every_axis_value_into_its_probes(tmp_path):
    """Each search's probes are its axis point's configurations: the dry run lists them, and rows
    of exactly those configurations answer them (none of the default learning rate's)."""
    out = tmp_path / "runs.csv"
    args = ["--models", "vgg11", "--find-max-batch", "--batch-granularity", "32", "--axis", "lr=0.1,0.01", *TINY,
            "--timeout", "1",
            "--output", str(out)]
    dry = sweep(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    commands = [l.strip() for l in dry.stdout.splitlines() if l.startswith("    ")]
    assert len(commands) == 2 and "2 search(es)" in dry.stdout
    for lr, command in zip(("0.1", "0.01"), commands):
        assert f"--lr {lr}" in command and "--find-max-batch" in command and "--batch-size 32" in command
    assert "search: vgg11 single x1 tensorflow lr=0.01," in dry.stdout
    _answer_rows(out, [0.1, 0.01], fits_up_to=32)
    before = out.read_bytes()
    r = sweep(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert r.stdout.count("[row reused]") == 4 and out.read_bytes() == before  # no probe ran
    assert "vgg11 single x1 tensorflow lr=0.1: largest batch that fits 32" in r.stdout
    assert "vgg11 single x1 tensorflow lr=0.01: largest batch that fits 32" in r.stdout


# ---- real sweeps ------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_sweep_then_resume_skips_what_is_done(tmp_path):
    out = tmp_path / "runs.csv"
    grid = ["--models", "vgg11", "--batch-sizes", "4", "--strategies", "single,horovod",
            "--workers", "2", *TINY, "--output", str(out)]
    r = sweep(*grid)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = read_rows(out)
    assert len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["source"] == "sweep").all() and df["run_id"].nunique() == 2
    assert sorted(zip(df["strategy"], df["workers"])) == [("horovod", 2), ("single", 1)]
    assert set(df["global_batch"]) == {4, 8}
    assert "2 ran ok, 0 skipped" in r.stdout
    again = sweep(*grid)
    assert again.returncode == 0 and "0 ran ok, 2 skipped" in again.stdout
    assert len(read_rows(out)) == 2
    forced = sweep(*grid[:-2], "--strategies", "single", "--output", str(out), "--force")
    assert "1 ran ok, 0 skipped" in forced.stdout and len(read_rows(out)) == 3


@pytest.mark.slow
def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "runs.csv"
    # an impossible batch size: larger than the digits training split in accuracy mode
    r = sweep("--models", "vgg11", "--batch-sizes", "4096,8", "--data", "digits", "--epochs", "1",
              "--width", "0.125", "--output", str(out))
    assert r.returncode == 1
    df = read_rows(out)
    assert len(df) == 2
    bad = df[df["batch_size"] == 4096].iloc[0]
    assert bad["status"] == "failed" and "exceeds the digits training split" in bad["error"]
    assert df[df["batch_size"] == 8].iloc[0]["status"] == "ok"
    # a configuration that runs past its timeout
    t0 = time.monotonic()
    r = sweep("--models", "resnet18", "--batch-sizes", "8", *TINY, "--steps", "100000", "--timeout", "8",
              "--output", str(out))
    assert r.returncode == 1 and time.monotonic() - t0 < 60
    df = read_rows(out)
    assert list(df.columns) == COLUMNS  # the sweep's own row has the run's columns
    row = df.iloc[-1]
    assert row["status"] == "timeout" and "timed out after 8 s" in row["error"]
    assert "oneDNN" not in row["error"]
    assert (Path(out).parent / "logs").is_dir()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_rows_and_the_next_run_resumes(tmp_path):
    out = tmp_path / "runs.csv"
    grid = ["--models", "vgg11", "--batch-sizes", "2,4,6", "--strategies", "single", *TINY,
            "--output", str(out)]
    p = subprocess.Popen([PY, "-m", "bench.sweep", "--no-progress", *grid], cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(read_rows(out)) >= 1):
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    stdout, _ = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "interrupted; rerun to resume" in stdout
    done = read_rows(out)
    assert list(done.columns) == COLUMNS and 1 <= len(done) < 3 and (done["status"] == "ok").all()
    r = sweep(*grid)
    assert r.returncode == 0
    final = read_rows(out)
    assert len(final) == 3 and sorted(final["batch_size"]) == [2, 4, 6]
    assert f"{len(done)} skipped" in r.stdout


def _processes_naming(text: str) -> dict[int, str]:
    """Every live process whose command line names `text`, and every process in their sessions
    (a child's own children: launchers, ranks, watchdogs), with their command lines. Zombies
    (dead, not yet reaped) are left out."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if entry.isdigit() and stat[0] != "Z":
                procs[int(entry)] = (int(stat[3]), Path(f"/proc/{entry}/cmdline").read_text(errors="replace"))
    # the children's own sessions (each started with start_new_session), never this test's, nor init's
    sessions = {sid for pid, (sid, cmd) in procs.items() if text in cmd and sid == pid}
    return {pid: cmd.replace("\0", " ") for pid, (sid, cmd) in procs.items() if sid in sessions or text in cmd}


@pytest.mark.slow
@pytest.mark.parametrize("sig,strategy", [(signal.SIGTERM, "multiworker"), (signal.SIGHUP, "single")])
def test_sigterm_or_sighup_stops_the_sweep_and_every_child_as_ctrl_c_does(tmp_path, sig, strategy):
    """No survivor by PID (the child, its launcher and every rank), no row appended after the
    sweep is gone, the summary, and 128 + the signal's number."""
    out = tmp_path / "runs.csv"
    p = subprocess.Popen([PY, "-m", "bench.sweep", "--no-progress", "--models", "vgg11", "--batch-sizes", "2,4",
                          "--strategies", strategy, "--workers", "2", *TINY, "--steps", "100000",
                          "--output", str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    ranks = 2 if strategy == "multiworker" else 1
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and \
                sum("bench/run.py" in cmd for pid, cmd in children.items() if pid != p.pid) < ranks:
            time.sleep(0.5)
            children = _processes_naming(str(out))
        assert sum("bench/run.py" in cmd for pid, cmd in children.items() if pid != p.pid) >= ranks, children
        time.sleep(15)  # into the framework's start-up, where TensorFlow catches SIGTERM
        children = _processes_naming(str(out))
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 128 + sig, stdout[-2000:] + stderr[-2000:]
        assert "Traceback" not in stderr
        assert "2 not started (interrupted; rerun to resume)" in stdout
        survivors = {pid: cmd for pid, cmd in _processes_naming(str(out)).items()}
        survivors.update({pid: cmd for pid, cmd in children.items() if _alive(pid)})
        assert not survivors, f"children outlived the sweep: {survivors}"
        assert not out.exists()  # the interrupted configuration has no row, nor will it
        time.sleep(3)
        assert not out.exists()
    finally:
        if p.poll() is None:
            p.kill()
        for c, cmd in _processes_naming(str(out)).items():
            if str(out) in cmd:  # it names this test's folder: surely ours
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow
def test_two_sweeps_appending_at_once(tmp_path):
    out = tmp_path / "runs.csv"
    procs = [subprocess.Popen([PY, "-m", "bench.sweep", "--no-progress", "--models", m, "--batch-sizes", "2,4",
                               *TINY, "--threads", "1", "--output", str(out)], cwd=REPO, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for m in ("vgg11", "resnet18")]
    assert [p.wait(300) for p in procs] == [0, 0]
    df = read_rows(out)
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert sorted(df["model"]) == ["resnet18", "resnet18", "vgg11", "vgg11"]


# ---- CSV reliability ---------------------------------------------------------------------------
WRITER = """
import sys
sys.path.insert(0, {repo!r})
from bench.results.store import append_row
i = 0
while True:
    append_row({out!r}, {{"schema_version": 1, "model": "m%d" % i, "status": "ok", "error": "x" * 20000}})
    i += 1
"""


@pytest.mark.slow
def test_a_writer_killed_mid_row_never_leaves_a_torn_row(tmp_path):
    out = tmp_path / "runs.csv"
    code = WRITER.format(repo=str(REPO), out=str(out))
    for k in range(6):
        rows_before = out.stat().st_size if out.exists() else 0
        p = subprocess.Popen([PY, "-c", code])
        deadline = time.monotonic() + 60
        # a loaded machine can take longer than any fixed delay just to import: kill it only once it writes
        while (not out.exists() or out.stat().st_size <= rows_before) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05 + 0.07 * k)
        p.kill()
        p.wait()
        df = read_rows(out)
        assert list(df.columns) == COLUMNS
        assert (df["status"] == "ok").all() and (df["error"].str.len() == 20000).all()
    assert len(read_rows(out)) > 0


class TinyDisk:
    """A real 'no space' condition: a small tmpfs where we may mount one (root), else a
    file-size limit (RLIMIT_FSIZE, EFBIG) applied to the child processes that write."""

    def __init__(self, path: Path, size_kb: int):
        self.path, self.limit_bytes = path, size_kb * 1024
        path.mkdir()
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                                      capture_output=True).returncode == 0

    def preexec(self):
        if not self.mounted:
            import resource
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_bytes, self.limit_bytes))

    def fill(self, keep: Path) -> None:
        """Leave no room for `keep` to grow by even one byte."""
        if self.mounted:
            with contextlib.suppress(OSError), open(self.path / "ballast", "wb") as f:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
        else:
            self.limit_bytes = keep.stat().st_size


@contextlib.contextmanager
def tiny_disk(path: Path, size_kb: int = 96):
    disk = TinyDisk(path, size_kb)
    try:
        yield disk
    finally:
        if disk.mounted:
            subprocess.run(["umount", str(path)], check=False)


FILLER = """
import errno, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from bench.results.store import append_row
out, good = Path({out!r}), None
try:
    for i in range(10000):
        append_row(out, {{"schema_version": 1, "model": "m%d" % i, "status": "ok", "error": "y" * 3000}})
        good = out.read_bytes()
except OSError as e:
    assert e.errno in (errno.ENOSPC, errno.EFBIG), e
    assert good is not None and out.read_bytes() == good, "the CSV changed on a failed append"
    print("full after", i, "rows")
    sys.exit(0)
sys.exit("the disk never filled")
"""


@pytest.mark.slow
def test_a_full_disk_leaves_every_row_whole(tmp_path):
    disk = tmp_path / "disk"
    with tiny_disk(disk) as d:
        out = disk / "runs.csv"
        r = subprocess.run([PY, "-c", FILLER.format(repo=str(REPO), out=str(out))], preexec_fn=d.preexec,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "full after" in r.stdout, r.stderr[-2000:]
        good = out.read_bytes()
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]
        df = read_rows(out)
        assert len(df) >= 1 and (df["status"] == "ok").all() and (df["error"].str.len() == 3000).all()
        # the CLI: the run completes, its row cannot be written, the CSV stays as it was
        d.fill(keep=out)
        r = subprocess.run([PY, "bench/run.py", "vgg11", *TINY, "--batch-size", "2", "--no-progress",
                            "--output", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=300, preexec_fn=d.preexec)
        assert r.returncode == 1 and "could not write the result row" in r.stderr, r.stderr[-2000:]
        assert out.read_bytes() == good


@pytest.mark.slow
def test_a_full_disk_stops_the_sweep_with_its_summary_and_one_line(tmp_path):
    """Neither the log nor the row can be written: the child still runs (its output kept in a
    temporary file), the sweep stops at the first row it cannot write, prints its summary and
    ends with one line and exit 1, the CSV as it was."""
    disk = tmp_path / "disk"
    with tiny_disk(disk, 64) as d:
        if not d.mounted:
            pytest.skip("mounting a tmpfs is not permitted here (a real full disk is needed)")
        out = disk / "runs.csv"
        append_row(out, {"schema_version": 1, "model": "m0", "status": "ok"})
        d.fill(keep=out)
        good = out.read_bytes()
        r = sweep("--models", "vgg11", "--batch-sizes", "2,4", *TINY, "--output", str(out))
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
        assert lines[0].startswith("error: could not write the row of vgg11 b2 ") and "No space left" in lines[0]
        assert "could not write the logs in" in lines[0]
        assert "1 not started (the CSV cannot be written)" in r.stdout
        assert out.read_bytes() == good


@pytest.mark.slow
def test_a_log_folder_that_cannot_be_written_loses_no_row(tmp_path):
    out = tmp_path / "runs.csv"
    (tmp_path / "logs").write_text("a file where the log folder would be")
    r = sweep("--models", "vgg11", "--batch-sizes", "2", *TINY, "--output", str(out))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(lines) == 1 and "could not write the logs in" in lines[0], r.stderr
    df = read_rows(out)
    assert len(df) == 1 and (df["status"] == "ok").all()
    assert "1 ran ok" in r.stdout


def test_backends_are_a_sweep_axis_and_unsupported_cells_are_left_out(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('models = ["vgg11"]\nbatch_sizes = [8]\nstrategies = ["single", "horovod"]\nworkers = [2]\n'
                   'backends = ["tensorflow", "jax"]\n')
    r = sweep("--config", str(cfg), "--dry-run", "--output", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    runs = [l for l in r.stdout.splitlines() if l.startswith("run: ")]
    assert runs == ["run: vgg11 b8 single x1 tensorflow", "run: vgg11 b8 single x1 jax",
                    "run: vgg11 b8 horovod x2 tensorflow"]
    assert "horovod does not run on jax" in r.stdout
    assert r.stdout.count("--backend jax") == 1


# ---- memory: predicted out-of-memory rows, and the largest batch that fits ----------------------
@pytest.mark.slow
def test_an_absurd_batch_becomes_oom_predicted_rows_in_seconds(tmp_path):
    out = tmp_path / "runs.csv"
    started = time.monotonic()
    r = sweep("--models", "resnet18,vgg13", "--batch-sizes", "100000", "--output", str(out), timeout=300)
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]  # nothing ran ok
    df = read_rows(out)
    assert sorted(df["model"]) == ["resnet18", "vgg13"] and (df["status"] == "oom_predicted").all()
    for row in df.to_dict("records"):
        assert row["error"].startswith("estimated memory ") and "exceeds available RAM" in row["error"], row["error"]
        assert row["mem_estimate_bytes"] > 100 * 2**30 and pd.isna(row["images_per_sec"])
    assert elapsed < 120, elapsed  # two child start-ups, not minutes of swapping
    assert "oom_predicted" in r.stdout


@pytest.mark.slow
def test_find_max_batch_under_a_memory_cap_then_resumes_from_its_rows(tmp_path):
    from bench.report.tables import max_batch_table
    from bench.results.load import load_results

    out = tmp_path / "runs.csv"
    # 128 px images make each image cost a few MiB here, so the 0.3 GiB cap falls between batch 32
    # and a few hundred: a few probes, how many depends on the machine's exact figures
    cap = 0.3
    args = ["--models", "resnet18", "--find-max-batch", "--memory-cap-gb", str(cap), "--batch-granularity", "32",
            "--width", "0.25", "--image-size", "128", "--steps", "2", "--warmup-steps", "1", "--output", str(out)]
    r = sweep(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    df = read_rows(out)
    assert df["find_max_batch"].all() and (df["memory_cap_gb"] == cap).all()
    probes = [l for l in r.stdout.splitlines() if l.strip().startswith("probe ")]
    assert df["batch_size"].is_unique and len(df) == len(probes) >= 2, r.stdout[-3000:]  # every probe is a row
    fit = {int(r["batch_size"]): r["status"] == "ok" and r["peak_mem_bytes"] <= cap * 2**30
           for r in df.to_dict("records")}
    largest = max(b for b, ok in fit.items() if ok)
    misfit = min(b for b, ok in fit.items() if not ok and b > largest)
    assert misfit - largest <= 32
    assert f"largest batch that fits {largest}," in r.stdout and f"batch {misfit} does not fit" in r.stdout
    table = max_batch_table(load_results([out]))
    assert table[["largest_batch", "first_misfit_batch", "probes"]].iloc[0].tolist() == [largest, misfit, len(df)]
    # a second search answers from the rows: no child runs, no row is added
    again = sweep(*args)
    assert again.returncode == 0 and len(read_rows(out)) == len(df)
    assert again.stdout.count("[row reused]") == len(df)


@pytest.mark.slow
def test_an_axis_sweep_writes_a_row_per_value_and_resumes(tmp_path):
    out = tmp_path / "runs.csv"
    args = ["--models", "vgg11", "--batch-sizes", "8", "--axis", "lr=0.1,0.01", *TINY, "--output", str(out)]
    r = sweep(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = read_rows(out)
    assert sorted(df["lr"]) == [0.01, 0.1] and (df["status"] == "ok").all()
    again = sweep(*args)
    assert again.returncode == 0 and len(read_rows(out)) == 2
    assert "2 skipped" in again.stdout


@pytest.mark.slow
def test_a_new_family_runs_on_jax_through_a_sweep(tmp_path):
    """AlexNet with LRN (Keras ops) trains through the JAX harness from a sweep, an ok row. (On
    TensorFlow every registered model trains 60 steps at 224 px in test_models, GoogLeNet's
    auxiliary heads included; XLA:CPU takes about a minute to compile GoogLeNet or DenseNet.)"""
    out = tmp_path / "runs.csv"
    r = sweep("--models", "alexnet_lrn", "--batch-sizes", "4", "--backends", "jax", "--width", "0.125",
              "--steps", "2", "--warmup-steps", "1", "--output", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = read_rows(out)
    assert len(df) == 1 and (df["status"] == "ok").all() and df["backend"].tolist() == ["jax"]
    assert (df["final_loss"] > 0).all() and (df["params"] > 0).all()
