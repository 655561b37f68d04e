"""A real one-node Slurm (launch.slurm): munged, slurmctld and slurmd started once for this module,
jobs submitted with sbatch and srun, their states read back from Slurm, their rows from the CSV."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import launch
from bench import REPO
from bench.config.parse import parse_args
from bench.errors import BenchInputError
from launch import get_strategy, slurm, strategies
from tests.helpers import require

PY = sys.executable
SLURM_LOCK = Path("/tmp/cnnbench-slurm.lock")  # the local Slurm is machine-wide: one module at a time
TINY_TF = "--batch-size 8 --steps 3 --warmup-steps 1 --no-progress"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "SLURM_CONF": str(slurm.conf_path()),
            "PYTHON": PY, **extra}


def slurm_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "launch.slurm", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env or _env())


def _one_line_exit_2(r: subprocess.CompletedProcess, named: str) -> None:
    assert r.returncode == 2, r.stderr
    assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ---- without a cluster ----------------------------------------------------------------------------
@pytest.mark.parametrize("args, named", [
    (["up", "--reserve-mb", "-1"], "reserve_mb"),
    (["up", "--reserve-mb", "lots"], "reserve_mb"),
    (["up", "--reserve-mb", str(slurm.mem_total_mb())], "reserve_mb"),
    (["exec"], "no command"),
    (["bogus"], "bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args, named):
    _one_line_exit_2(slurm_cli(*args), named)


def test_exec_refuses_when_the_local_slurm_is_not_up(tmp_path):
    # a state folder no run made: nothing of it is up
    r = slurm_cli("exec", "--", "srun", "true", env=_env(CNNBENCH_SLURM_DIR=str(tmp_path / "none")))
    _one_line_exit_2(r, "not up")
    assert "launch.slurm up" in r.stderr


# what srun sets in task 3 of a step of 4 tasks on two nodes, 2 per node (see srun(1))
STEP_ENV = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_NODES": "2",
            "SLURM_NNODES": "2", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "1", "SLURM_LOCALID": "1",
            "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}


def _step(monkeypatch, **extra: str) -> None:
    for k in [k for k in os.environ if k.startswith("SLURM_") or k in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES")]:
        monkeypatch.delenv(k)
    for k, v in {**STEP_ENV, **extra}.items():
        monkeypatch.setenv(k, v)


def test_multiworker_reads_its_place_from_the_slurm_step(monkeypatch):
    _step(monkeypatch)
    mw = get_strategy("multiworker")
    assert (mw.env_rank(), mw.env_size(), mw.env_local_size(), mw.env_hosts()) == (3, 4, 2, 2)
    mw.check_environment()
    assert strategies.slurm_tasks_per_node() == [2, 2]
    _step(monkeypatch, SLURM_STEP_TASKS_PER_NODE="3,1", SLURM_NODEID="0", SLURM_PROCID="0")
    assert (mw.env_rank(), mw.env_local_size()) == (0, 3)


def test_tf_config_wins_over_the_slurm_step(monkeypatch):
    _step(monkeypatch, TF_CONFIG='{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}')
    mw = get_strategy("multiworker")
    assert (mw.env_rank(), mw.env_size(), mw.env_hosts()) == (0, 2, 2)


def test_a_batch_script_or_a_one_task_step_is_not_a_cluster(monkeypatch):
    _step(monkeypatch, SLURM_STEP_NUM_TASKS="1", SLURM_NTASKS="1")
    assert not strategies.in_slurm_step() and get_strategy("multiworker").env_size() == 1
    with pytest.raises(BenchInputError, match="more than one task"):
        get_strategy("multiworker").check_environment()
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS")  # a batch script has no step variables
    assert not strategies.in_slurm_step()


def test_a_one_process_strategy_under_srun_is_refused(monkeypatch):
    _step(monkeypatch)
    with pytest.raises(BenchInputError, match="--strategy multiworker"):
        launch.check_config(parse_args(["resnet18"]))
    launch.check_config(parse_args(["resnet18", "--strategy", "multiworker"]))
    with pytest.raises(BenchInputError, match="one rank"):  # a sweep in one of the step's tasks
        get_strategy("multiworker").check_no_launcher()


@pytest.mark.parametrize("visible, extra, mine", [
    (0, {}, []),                                                       # a CPU node
    (4, {"SLURM_GPUS_ON_NODE": "4"}, [2, 3]),                          # --gpus-per-node 4, 2 tasks: a half each
    (1, {"SLURM_GPUS_ON_NODE": "2"}, [0]),                             # --gpus-per-task 1: its own
    (4, {"SLURM_GPUS_ON_NODE": "4", "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_NODEID": "3"}, [0, 1, 2, 3]),
])
def test_each_task_takes_its_share_of_the_gpus_slurm_gave(monkeypatch, visible, extra, mine):
    _step(monkeypatch, **extra)
    assert strategies.slurm_task_gpus(visible) == mine


# ---- with the local Slurm up ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    require("root", "slurmctld", "slurmd", "munged", "sbatch")
    SLURM_LOCK.touch()
    with open(SLURM_LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with slurm.local_slurm() as node:
                yield node
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sbatch_template(tmp_path: Path, timeout: float = 240, **env: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "job.log"
    job = subprocess.Popen(["sbatch", "--parsable", "--wait", "-o", str(log), "launch/templates/slurm.sbatch"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=_env(OUTPUT=str(tmp_path / "runs.csv"), **env))
    return job, log


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["status"])


@pytest.mark.cluster
@pytest.mark.distributed
def test_status_names_the_node_and_the_export_line(cluster):
    r = slurm_cli("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "node state: idle" in r.stdout and f"export SLURM_CONF={slurm.conf_path()}" in r.stdout
    conf = slurm.conf_path().read_text()
    assert f"NodeName={cluster.name} " in conf and f"CPUs={os.cpu_count()}" in conf and "Default=YES" in conf


@pytest.mark.cluster
@pytest.mark.distributed
def test_the_template_runs_tensorflow_multiworker_and_the_chief_writes_one_ok_row(cluster, tmp_path):
    job, log = _sbatch_template(tmp_path, MODEL="lenet5", BENCH_ARGS=TINY_TF)
    out, err = job.communicate(timeout=240)
    text = log.read_text() if log.exists() else ""
    assert job.returncode == 0, err + text
    assert slurm.final_state(out.strip().split(";")[0]) == "COMPLETED"
    rows = _rows(tmp_path / "runs.csv")
    assert len(rows) == 1, text  # rank 0 only
    row = rows.iloc[0]
    assert (row["status"], row["strategy"], row["backend"], row["model"]) == ("ok", "multiworker", "tensorflow", "lenet5")
    assert (row["workers"], row["replicas"], row["hosts"]) == (2, 2, 1)


@pytest.mark.cluster
@pytest.mark.distributed
def test_srun_runs_jax_multiworker(cluster, tmp_path):
    csv = tmp_path / "runs.csv"
    r = subprocess.run(["srun", "-n", "2", "--kill-on-bad-exit=1", PY, "bench/run.py", "lenet5", "--backend", "jax",
                        "--strategy", "multiworker", "--batch-size", "8", "--steps", "3", "--warmup-steps", "1",
                        "--no-progress", "--collective-timeout", "120", "--output", str(csv)],
                       cwd=REPO, capture_output=True, text=True, timeout=240, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(csv)
    assert len(rows) == 1 and rows.iloc[0]["status"] == "ok", r.stderr[-3000:]
    assert (rows.iloc[0]["backend"], rows.iloc[0]["workers"], rows.iloc[0]["replicas"]) == ("jax", 2, 2)


@pytest.mark.cluster
@pytest.mark.distributed
def test_a_job_refused_at_start_fails_without_a_row(cluster, tmp_path):
    job, log = _sbatch_template(tmp_path, MODEL="resnet18", BENCH_ARGS="--steps 0")
    out, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert slurm.final_state(out.strip().split(";")[0]) == "FAILED"
    assert "steps" in log.read_text()  # each rank's one-line refusal
    assert not (tmp_path / "runs.csv").exists()


def _task_pid(job_id: str, rank: int) -> int | None:
    """The pid of bench/run.py for task `rank` of a job, by the environment srun gave it."""
    want = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            env = set(Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"bench/run.py" in cmd and want <= env:
            return int(p)
    return None


@pytest.mark.cluster
@pytest.mark.distributed
def test_a_crashed_rank_fails_the_job_without_an_ok_row(cluster, tmp_path):
    # long enough to be killed mid-run
    job, log = _sbatch_template(tmp_path, MODEL="lenet5", BENCH_ARGS=TINY_TF.replace("--steps 3", "--steps 100000"))
    try:
        job_id, pid, deadline = None, None, time.monotonic() + 60
        while pid is None and time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-n", "cnnbench"], capture_output=True, text=True,
                                 env=_env()).stdout.split()
            job_id = out[0] if out else None
            pid = _task_pid(job_id, 1) if job_id else None
            time.sleep(0.5)
        assert pid is not None, "rank 1 never started"
        time.sleep(3)  # into its start-up (imports, the strategy)
        os.kill(pid, signal.SIGKILL)
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert slurm.final_state(job_id) == "FAILED"
    assert "ok" not in set(_rows(tmp_path / "runs.csv")["status"])


@pytest.mark.cluster
@pytest.mark.distributed
def test_up_again_replaces_a_killed_run_and_down_leaves_nothing(cluster):
    # the last test of the module: it leaves the cluster down, and the fixture's own down is then a no-op
    os.kill(slurm.daemons()["slurmctld"], signal.SIGKILL)  # a run killed half-way
    r = slurm_cli("up")
    assert r.returncode == 0 and "export SLURM_CONF=" in r.stdout, r.stderr
    assert slurm.node_state() == "idle"
    r = slurm_cli("down")
    assert r.returncode == 0, r.stderr
    assert not slurm.STATE_DIR.exists() and slurm.our_processes() == []
    _one_line_exit_2(slurm_cli("exec", "--", "sinfo"), "not up")
