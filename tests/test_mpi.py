"""Horovod under Open MPI: `mpirun -np 2 python bench/run.py` picks --strategy horovod from Open MPI's own
environment and hvd.init() uses MPI; across two emulated hosts mpirun reaches the second by ssh and the
gradients cross a real 100 Mbit/s link, counted on the hosts' interfaces. Hierarchical all-reduce, which
Horovod 0.28.1 has only in NCCL, is refused on this CPU build with one line per rank."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import REPO
from bench.errors import BenchInputError
from launch import check_environment, default_strategy, get_strategy
from tests.helpers import emulated_hosts, require

PY = sys.executable
RUN = [PY, str(REPO / "bench" / "run.py")]
TINY = ["lenet5", "--image-size", "32", "--batch-size", "8", "--warmup-steps", "1", "--no-progress", "--threads", "1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
# As root, Open MPI's mpirun refuses to start without --allow-run-as-root. It binds each of 2 ranks to a
# core of its own by default; --bind-to none lets each rank's threads use every core, as horovodrun --mpi does
MPIRUN = ["mpirun", "--allow-run-as-root", "--bind-to", "none"]

# what Open MPI 4.1's mpirun sets in each of 2 ranks on one host (seen here), less what no check reads
OMPI_RANK1 = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
              "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:5678",
              "PMIX_NAMESPACE": "1234,1", "PMIX_RANK": "1"}


def _environ(monkeypatch, env: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith(("OMPI_", "PMIX_", "PMI_", "HOROVOD_")) or k == "TF_CONFIG":
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_an_open_mpi_job_of_several_ranks_is_horovods(monkeypatch):
    _environ(monkeypatch, OMPI_RANK1)
    spec = get_strategy("horovod")
    assert default_strategy() == "horovod"
    assert (spec.env_rank(), spec.env_size(), spec.env_local_size(), spec.env_hosts()) == (1, 2, 2, 1)
    check_environment("horovod")  # a real launcher's variables: nothing refused
    # two ranks on each of two hosts: the hosts from ranks over ranks per host
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert spec.env_hosts() == 2
    # a lone `mpirun -np 1` is no distributed job; horovodrun --mpi marks its ranks with HOROVOD_* settings
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert default_strategy() == "single"
    monkeypatch.setenv("HOROVOD_CYCLE_TIME", "1")
    assert default_strategy() == "horovod" and spec.env_size() == 1


def test_open_mpi_ranks_set_by_hand_are_refused(monkeypatch):
    """Without mpirun around it, hvd.init() would start an MPI job of one that the row counts as two."""
    _environ(monkeypatch, {k: v for k, v in OMPI_RANK1.items() if not k.startswith(("OMPI_MCA", "PMIX"))})
    with pytest.raises(BenchInputError, match="OMPI_COMM_WORLD_RANK=1 is set, but no Horovod launcher"):
        check_environment("horovod")
    with pytest.raises(BenchInputError, match="no Horovod launcher"):
        check_environment("single")


def test_a_sweep_under_mpirun_is_refused(monkeypatch):
    _environ(monkeypatch, OMPI_RANK1)
    with pytest.raises(BenchInputError, match="one rank of a --strategy horovod job"):
        get_strategy("horovod").check_no_launcher()


@pytest.fixture(scope="module")
def mpi_build():  # asked once: the question imports TensorFlow (5 s here)
    require("root", "mpirun")
    code = "import horovod.tensorflow as hvd; print(int(hvd.mpi_built()))"
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=ENV)
    if r.returncode != 0 or r.stdout.strip() != "1":
        pytest.skip("needs Horovod built with MPI (hvd.mpi_built() is false; `bash scripts/setup.sh` builds it "
                    "where Open MPI's mpicxx is installed)")


def _row(out: Path, r: subprocess.CompletedProcess) -> pd.Series:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = pd.read_csv(out)
    assert len(rows) == 1, rows
    return rows.iloc[0]


@pytest.mark.cluster
@pytest.mark.distributed
@pytest.mark.usefixtures("mpi_build")
def test_mpirun_picks_horovod_over_mpi(tmp_path):
    """No --strategy: two Open MPI ranks are a Horovod job, and Horovod runs its MPI controller there."""
    out = tmp_path / "rows.csv"
    # Horovod's own log says which controller and CPU operations each rank's hvd.init() chose
    r = subprocess.run([*MPIRUN, "-np", "2", *RUN, *TINY, "--steps", "3", "--output", str(out)],
                       capture_output=True, text=True, timeout=180, env={**ENV, "HOROVOD_LOG_LEVEL": "debug"}, cwd=REPO)
    log = r.stdout + r.stderr
    assert log.count("MPI controller initialized") == 2 and log.count("Using MPI to perform CPU operations") == 2, log
    row = _row(out, r)
    assert row.status == "ok" and row.strategy == "horovod" and row.workers == 2 and row.replicas == 2
    assert row.hosts == 1 and not row.hvd_hierarchical and row.transport == "mpi"


@pytest.mark.cluster
@pytest.mark.distributed
@pytest.mark.usefixtures("mpi_build")
def test_hierarchical_allreduce_is_refused_where_horovod_has_none(tmp_path):
    """Horovod 0.28.1 turns HOROVOD_HIERARCHICAL_ALLREDUCE off without NCCL (operations.cc) and runs the flat
    all-reduce: under mpirun on CPUs every rank refuses it with one line, exit 2, and writes no row."""
    out = tmp_path / "rows.csv"
    r = subprocess.run([*MPIRUN, "-np", "2", *RUN, *TINY, "--steps", "3", "--hvd-hierarchical", "--output", str(out)],
                       capture_output=True, text=True, timeout=180, env=ENV, cwd=REPO)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and errors, r.stderr[-3000:]
    assert all("--hvd-hierarchical needs GPUs" in e and "hvd_hierarchical=True" in e for e in errors), errors
    assert "Traceback" not in r.stderr and not out.exists()


@pytest.mark.cluster
@pytest.mark.distributed
@pytest.mark.usefixtures("mpi_build")
def test_mpirun_across_two_emulated_hosts_crosses_the_shaped_link(tmp_path):
    """The command a user types on node 0, typed on h0: mpirun starts rank 1 on h1 through ssh; each rank of
    the ring sends 2(N-1)/N of the gradients per step over the 100 Mbit/s link."""
    out = tmp_path / "rows.csv"
    steps = 3
    # the docs' command as it is: each host has one interface besides lo, so Open MPI needs no
    # btl_tcp_if_include, and the ranks start the venv's python by its path, from the same folder, so
    # they need no -x PATH / PYTHONPATH (rank 1 gets sshd's environment on h1, not this one)
    cmd = [PY, "-m", "launch.hosts", "exec", "h0", "--", *MPIRUN, "-np", "2", "-H", "h0,h1", *RUN, *TINY,
           "--steps", str(steps), "--strategy", "horovod", "--output", str(out)]
    with emulated_hosts(2, "100mbit"):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV, cwd=REPO)
    row = _row(out, r)
    assert row.status == "ok" and row.workers == 2 and row.hosts == 2
    assert row.link_gbps == pytest.approx(0.1) and row.cores_per_replica == 1.0
    ring = 2 * (2 - 1) / 2 * row.gradient_bytes * row.timed_steps
    for counted in (row.net_tx_bytes, row.net_rx_bytes):
        assert 0.75 * ring <= counted <= 1.25 * ring, (counted, ring)
