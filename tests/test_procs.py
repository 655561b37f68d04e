"""How a child ended, in words, from real child processes; and the sweep's own row for a child
that died without writing one."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.errors import meaningful_lines, tail
from bench.procs import describe_exit, stop_groups

TF_NOISE = [
    "2026-11-26 10:00:00.123456: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795739182.127571    6285 port.cc:153] oneDNN custom operations are on.",
    "2026-11-26 10:00:00.2: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
]


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sig,words", [(signal.SIGKILL, "killed by SIGKILL (out of memory?)"),
                                       (signal.SIGSEGV, "crashed with SIGSEGV"),
                                       (signal.SIGTERM, "killed by SIGTERM")])
def test_a_child_killed_by_a_signal_is_named_in_words(sig, words):
    r = _child(f"import os, signal; os.kill(os.getpid(), {int(sig)})")
    assert r.returncode == -sig
    assert describe_exit(r.returncode) == words


def test_exit_codes_and_shell_reported_signals():
    assert describe_exit(_child("import sys; sys.exit(3)").returncode) == "exit code 3"
    assert describe_exit(128 + signal.SIGKILL) == "exit code 137 (killed by SIGKILL (out of memory?))"


def test_start_up_noise_is_dropped_and_the_cause_kept():
    text = "\n".join(["$ python bench/run.py vgg11", *TF_NOISE, "Traceback (most recent call last):",
                      '  File "x.py", line 1', "ValueError: the real cause", *TF_NOISE[:2]])
    assert not any("oneDNN" in l or "absl" in l or "cpu_feature_guard" in l for l in meaningful_lines(text))
    assert tail(text, 2) == 'File "x.py", line 1 | ValueError: the real cause'
    assert tail("\n".join(f"[1]<stderr>:{l}" for l in [*TF_NOISE, "boom"]), 3) == "[1]<stderr>:boom"


def test_stop_groups_ends_a_child_and_its_children():
    p = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"],
                         start_new_session=True)
    time.sleep(1)
    t0 = time.monotonic()
    stop_groups([p], grace=5)
    assert p.returncode == -signal.SIGTERM and time.monotonic() - t0 < 5
    stop_groups([p])  # already gone: no error


@pytest.mark.slow
def test_the_sweep_row_for_a_child_that_died_names_the_signal_and_the_cause(tmp_path):
    """A real child that prints TensorFlow's start-up lines, then an error, then is SIGKILLed."""
    from bench.config.parse import parse_args
    from bench.results.columns import COLUMNS
    from bench.results.store import read_rows
    from bench.sweep.children import run_job
    from bench.sweep.grid import build_jobs

    out = tmp_path / "runs.csv"
    (job,) = build_jobs(["vgg11"], [8], ["single"], [1], {"width": 0.125}, str(out), 60)
    noise = "\n".join(TF_NOISE)
    job.command = [sys.executable, "-c", f"import os, signal, sys; print({noise!r}); print('allocating 90 GB'); "
                   f"sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)"]
    row = run_job(job, str(out), timeout=60, log_dir=tmp_path / "logs")
    assert row["status"] == "oom"
    assert row["error"] == "killed by SIGKILL (out of memory?): allocating 90 GB"
    df = read_rows(out)
    assert list(df.columns) == COLUMNS and len(df) == 1
    assert df.iloc[0]["model"] == "vgg11" and df.iloc[0]["batch_size"] == 8 and df.iloc[0]["source"] == "sweep"
    assert parse_args(["vgg11"]).strategy == df.iloc[0]["strategy"]


# ---- SIGTERM and SIGHUP stop the children as Ctrl-C does (issue 21) ---------------------------
# A worker that ignores SIGTERM, as TensorFlow's do while a multiworker start-up waits, and says
# who it is: the launcher must still leave no survivor.
STUBBORN = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open(sys.argv[1] + '/' + str(os.getpid()), 'w').close(); time.sleep(600)")


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, already dead but not reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for_files(folder, n: int, limit: float = 60) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = [int(p.name) for p in folder.iterdir()]
        if len(pids) >= n:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"only {len(list(folder.iterdir()))} of {n} workers started")


@contextlib.contextmanager
def _stubborn_cluster(tmp_path):
    """local_cluster -n 2 over workers that ignore SIGTERM and write their PIDs: the launcher's
    process and its workers' PIDs. Whatever the test does, nothing outlives it."""
    from helpers import REPO

    pids = tmp_path / "pids"
    pids.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "launch.local_cluster", "-n", "2", "--", sys.executable, "-c",
                          STUBBORN, str(pids)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        yield p, _wait_for_files(pids, 2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        for w in [int(f.name) for f in pids.iterdir()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_local_cluster_stops_every_worker(tmp_path, sig):
    with _stubborn_cluster(tmp_path) as (p, workers):
        assert all(_alive(w) for w in workers)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + sig, err  # as shells report it: 130, 143, 129
        assert "Traceback" not in err
        assert not [w for w in workers if _alive(w)], "a worker outlived local_cluster"


def test_a_second_signal_while_stopping_does_not_cut_the_stop_short(tmp_path):
    """The first signal starts the stop; a second (an impatient Ctrl-C, a supervisor's repeat)
    must not end the launcher before its workers."""
    with _stubborn_cluster(tmp_path) as (p, workers):
        p.send_signal(signal.SIGTERM)
        time.sleep(1)  # inside the grace period, while it waits for the stubborn workers
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err
        assert not [w for w in workers if _alive(w)], "a worker outlived local_cluster"
