"""Distribution: the same training math under single, mirrored, multiworker and Horovod,
proven with real processes on loopback (horovodrun, launch.local_cluster). Nothing mocked."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, made_once

from bench.results.store import read_rows
from launch import get_strategy

pytestmark = pytest.mark.distributed
PY = sys.executable
ONE_STEP = str(REPO / "tests" / "dist" / "one_step.py")
# the scripts in tests/dist/ import the project from the repo (PYTHONPATH), not from an install
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def launcher(strategy: str, n: int = 2) -> list[str]:
    """The strategy's own launcher command prefix for n workers on this machine."""
    return get_strategy(strategy).launcher(n, timeout=240)


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def one_step(strategy: str, out: Path, model: str = "vgg11", steps: int = 2, extra: tuple[str, ...] = ()
             ) -> list[dict]:
    """Every replica's weights after `steps` steps: [{key: array}] over all ranks and replicas."""
    extra = [*extra, *(["--cpu-replicas", "2"] if strategy == "mirrored" else [])]
    run([*launcher(strategy), PY, ONE_STEP, "--strategy", strategy, "--out", str(out), "--model", model,
         "--steps", str(steps), *extra])
    return _replicas(out)


def _replicas(out: Path) -> list[dict]:
    replicas = []
    for f in sorted(out.glob("rank*.npz")):
        z = np.load(f)
        n = len({k.split("/")[0] for k in z.files if k.startswith("r")})
        for r in range(n):
            replicas.append({k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"r{r}/")}
                            | {"losses": z["losses"]})
    return replicas


@pytest.fixture(scope="module")
def single_reference(tmp_path_factory):
    """The single-device weights and losses, run once per session (whichever worker asks first)."""
    return _replicas(made_once(tmp_path_factory, "single", lambda d: one_step("single", d)))[0]


@pytest.fixture(scope="module")
def synced_steps(tmp_path_factory):
    """synced_steps(strategy) -> {model: replicas}: vgg11 (2 steps) and resnet18 (3 steps) from
    one launch of the strategy's processes per session, shared by the two tests below."""
    def get(strategy: str) -> dict[str, list[dict]]:
        d = made_once(tmp_path_factory, f"synced-{strategy}",
                      lambda d: one_step(strategy, d, extra=("--also", "resnet18:3")))
        return {"vgg11": _replicas(d), "resnet18": _replicas(d / "resnet18")}
    return get


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker", "horovod"])
def test_one_step_matches_single_device(strategy, single_reference, synced_steps):
    """BN-free vgg11: two SGD+momentum steps on a fixed global batch of 8 split over 2 replicas,
    from rank-dependent seeds, give the single-device weights within float32 tolerance."""
    replicas = synced_steps(strategy)["vgg11"]
    assert len(replicas) == 2
    weights = [k for k in single_reference if k.startswith("T/")]
    assert len(weights) == 22  # 8 conv + 3 dense layers, kernel and bias each
    assert not [k for k in single_reference if k.startswith("N/")]  # BN-free: no statistics
    for rep in replicas:
        np.testing.assert_allclose(rep["losses"], single_reference["losses"], rtol=1e-5)
        for k in weights:
            np.testing.assert_allclose(rep[k], single_reference[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the steps really moved every layer's weights far beyond the tolerance, so agreement is not trivial
    for k in weights:
        moved = np.abs(single_reference[k] - single_reference["I/" + k[2:]]).max()
        assert moved > 1e-4, (k, moved)
    assert single_reference["losses"][1] != single_reference["losses"][0]


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker", "horovod"])
def test_batchnorm_model_replicas_end_identical(strategy, synced_steps):
    """resnet18 (BatchNorm): after 3 steps every replica holds identical trainable weights.
    BN moving statistics are per replica (see README), so only their shapes are compared."""
    replicas = synced_steps(strategy)["resnet18"]
    assert len(replicas) == 2
    base = replicas[0]
    trainable = [k for k in base if k.startswith("T/")]
    assert any("_bn/gamma" in k for k in trainable)
    for rep in replicas[1:]:
        for k in trainable:
            np.testing.assert_array_equal(rep[k], base[k], err_msg=k)
        for k in base:
            if k.startswith("N/"):
                assert rep[k].shape == base[k].shape


TINY = ["--width", "0.125", "--steps", "6", "--warmup-steps", "1", "--batch-size", "8", "--no-progress",
        "--threads", "1"]


def _assert_one_row_from_all_ranks(row: dict, stdout: str, strategy: str) -> None:
    """A 2-process run's row: both ranks in it, its step the slowest rank's, printed by the chief only."""
    assert row["status"] == "ok" and row["strategy"] == strategy
    assert row["workers"] == 2 and row["replicas"] == 2 and row["global_batch"] == 16
    rank_means = [float(x) for x in row["rank_step_time_means_s"].split(";")]
    assert len(rank_means) == 2
    # steps last as long as their slowest rank: the mean of per-step maxima >= every rank's mean
    assert row["step_time_mean_s"] >= max(rank_means) * (1 - 1e-5)  # the means are written to 6 digits
    assert row["images_per_sec"] == pytest.approx(16 / row["step_time_mean_s"])
    assert stdout.count("images/sec") == 1  # only the chief prints the summary


# Horovod's 2-process rows are checked the same way in the timeline test below, whose runs also
# set its knobs
def test_multi_process_run_writes_one_row_from_all_ranks(tmp_path):
    out = tmp_path / "runs.csv"
    r = run([*launcher("multiworker"), PY, "bench/run.py", "resnet18", *TINY, "--strategy", "multiworker",
             "--all-reduce", "ring", "--output", str(out)])
    df = read_rows(out)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["all_reduce"] == "ring"  # the knob is recorded (and part of the configuration key)
    _assert_one_row_from_all_ranks(row, r.stdout, "multiworker")


def test_mirrored_run_on_cpu_replicas(tmp_path):
    out = tmp_path / "runs.csv"
    run([PY, "bench/run.py", "vgg11", *TINY, "--strategy", "mirrored", "--cpu-replicas", "2",
         "--all-reduce", "one-device", "--output", str(out)])
    row = read_rows(out).iloc[0]
    assert row["status"] == "ok" and row["workers"] == 1 and row["replicas"] == 2 and row["all_reduce"] == "one-device"
    assert row["global_batch"] == 16 and row["images_per_sec_per_replica"] == pytest.approx(
        row["images_per_sec"] / 2)


def _pids_of_rank(rank: int, out: Path) -> list:
    """This job's rank `rank`: its command names `out`, so no other test's run is taken for it."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):  # processes come and go while we look
            cmd = " ".join(p.info["cmdline"] or [])
            if "bench/run.py" in cmd and str(out) in cmd and p.environ().get("HOROVOD_RANK") == str(rank):
                found.append(p)
    return found


def test_killing_a_horovod_rank_ends_the_job_without_an_ok_row(tmp_path):
    out = tmp_path / "runs.csv"
    cmd = [*launcher("horovod"), PY, "bench/run.py", "resnet18", "--width", "0.125", "--steps", "100000",
           "--warmup-steps", "1", "--batch-size", "8", "--no-progress", "--threads", "1",
           "--collective-timeout", "30", "--output", str(out)]
    job = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        victims = []
        while not victims and time.monotonic() < deadline:
            time.sleep(1)
            victims = _pids_of_rank(1, out)
        assert victims, "rank 1 never started"
        time.sleep(12)  # let it get past model building, into the timed steps
        assert job.poll() is None, "the job ended before the kill"
        for v in victims:
            v.kill()
        killed_at = time.monotonic()
        output, _ = job.communicate(timeout=90)
        elapsed = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end after the kill"
    assert "Process 1 exit with status code" in output or "process 1" in output.lower(), output[-3000:]
    if out.exists():
        assert "ok" not in set(read_rows(out)["status"])


def test_local_cluster_names_the_failed_worker_and_stops_the_rest():
    code = ("import json, os, sys, time\n"
            "i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
            "print('hello from', i, flush=True)\n"
            "sys.exit(3) if i == 1 else time.sleep(120)")
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "launch.local_cluster", "-n", "2", "--", PY, "-c", code], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "worker 1 failed with exit code 3" in r.stderr
    assert "[worker 0] hello from 0" in r.stdout and "[worker 1] hello from 1" in r.stdout
    assert time.monotonic() - t0 < 30


def test_local_cluster_timeout_stops_hung_workers():
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "launch.local_cluster", "-n", "2", "--timeout", "2", "--",
                        PY, "-c", "import time; time.sleep(120)"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 124 and "timeout after 2 s" in r.stderr
    assert time.monotonic() - t0 < 20


def test_local_cluster_gives_each_worker_its_tf_config():
    code = "import os; print(os.environ['TF_CONFIG'])"
    r = subprocess.run([PY, "-m", "launch.local_cluster", "-n", "2", "--", PY, "-c", code], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    import json
    configs = {int(l.split("]")[0].split()[-1]): json.loads(l.split("] ", 1)[1])
               for l in r.stdout.splitlines() if l.startswith("[worker")}
    assert configs[0]["cluster"] == configs[1]["cluster"]
    assert [configs[i]["task"] for i in (0, 1)] == [{"type": "worker", "index": 0}, {"type": "worker", "index": 1}]
    ports = {a.split(":")[1] for a in configs[0]["cluster"]["worker"]}
    assert len(ports) == 2


@pytest.mark.parametrize("index", [0, 1])  # 0 waits for a peer that never comes; 1 for a chief that never comes
def test_a_multiworker_rank_alone_ends_within_its_collective_timeout(tmp_path, index):
    """TensorFlow's strategy waits in C++ for every task of the cluster, past any collective
    timeout and deaf to SIGTERM; the run must end by itself, with one line and exit 1."""
    from launch.local_cluster import free_ports, tf_config

    out = tmp_path / "runs.csv"
    env = {**ENV, "TF_CONFIG": tf_config(free_ports(2), index)}
    r = subprocess.run([PY, "bench/run.py", "vgg11", "--strategy", "multiworker", "--width", "0.125", "--steps", "2",
                        "--warmup-steps", "1", "--batch-size", "4", "--no-progress", "--collective-timeout", "5",
                        "--output", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1, r.stderr[-2000:]
    assert len(lines) == 1 and "not every task of TF_CONFIG's cluster" in lines[0] and \
        "within --collective-timeout 5 s" in lines[0] and f"worker {index} gave up" in lines[0], r.stderr[-2000:]
    assert not out.exists()


def test_a_one_process_strategy_under_horovodrun_is_refused_on_every_rank(tmp_path):
    """Two `single` runs side by side would each write an ok row, timed while disturbing each other."""
    out = tmp_path / "runs.csv"
    r = subprocess.run([*launcher("horovod"), PY, "bench/run.py", "vgg11", "--strategy", "single", "--output",
                        str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    # horovodrun stops the other rank as soon as the first exits, so one or both get to say it
    errors = {l.split("<", 1)[0]: l for l in text.splitlines() if "]<stderr>:error:" in l}
    assert errors and all("one of 2 processes started for --strategy horovod" in l for l in errors.values()), text
    assert re.search(r"Process \d exit with status code 2", text), text[-3000:]
    assert "<stderr>:Traceback" not in text  # none from a rank (horovodrun's own report is its own)
    assert not out.exists()
    # each rank decides alone, from the environment horovodrun gives it: rank 1 too
    env = {**ENV, "HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2"}
    r1 = subprocess.run([PY, "bench/run.py", "vgg11", "--strategy", "mirrored", "--output", str(out)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=60)
    assert r1.returncode == 2 and r1.stderr.strip().count("\n") == 0 and "one of 2 processes" in r1.stderr
    assert not out.exists()


@pytest.mark.parametrize("strategy,backend", [("horovod", "tensorflow"), ("multiworker", "tensorflow"),
                                              ("mirrored", "jax")])
def test_inference_under_each_strategy_counts_every_rank(strategy, backend, tmp_path):
    """Forward passes with no collective between ranks; the row still takes the slowest rank per
    batch and the largest peak memory of any rank."""
    out = tmp_path / "runs.csv"
    args = [PY, "bench/run.py", "vgg11", "--mode", "inference", "--backend", backend, "--width", "0.125",
            "--batch-size", "4", "--warmup-steps", "2", "--no-progress", "--threads", "1", "--output", str(out)]
    if strategy == "mirrored":
        args += ["--strategy", "mirrored", "--cpu-replicas", "2"]
    elif strategy == "multiworker":
        args += ["--strategy", "multiworker"]
    r = run([*(launcher(strategy) if get_strategy(strategy).processes(2) > 1 else []), *args])
    row = read_rows(out).iloc[0]
    assert len(read_rows(out)) == 1 and row["status"] == "ok" and row["mode"] == "inference"
    assert row["replicas"] == 2 and row["global_batch"] == 8 and row["timed_steps"] == 100
    rank_means = [float(x) for x in str(row["rank_step_time_means_s"]).split(";")]
    assert len(rank_means) == row["workers"]
    assert row["step_time_mean_s"] >= max(rank_means) * (1 - 1e-5)  # the means are written to 6 digits
    assert row["latency_p50_ms"] <= row["latency_p99_ms"] and row["peak_mem_bytes"] > 0
    assert r.stdout.count("latency     p50") == 1


# fp16 keeps 11 significant bits: each gradient is rounded to within 2**-11 (about 5e-4) of
# itself before the sum, so after two SGD steps at lr 0.05 the weights agree to about 1e-3
FP16_RTOL, FP16_ATOL = 1e-2, 1e-3


def test_horovod_fp16_compression_matches_the_uncompressed_math_within_fp16_tolerance(single_reference, tmp_path):
    (a, b) = one_step("horovod", tmp_path, extra=("--hvd-compression", "fp16"))
    weights = [k for k in single_reference if k.startswith("T/")]
    exact = 0
    for rep in (a, b):
        np.testing.assert_allclose(rep["losses"], single_reference["losses"], rtol=FP16_RTOL)
        for k in weights:
            np.testing.assert_allclose(rep[k], single_reference[k], rtol=FP16_RTOL, atol=FP16_ATOL, err_msg=k)
            exact += np.array_equal(rep[k], single_reference[k])
    assert exact < len(weights), "no weight differs from fp32: the gradients were not compressed"
    for k in weights:  # both ranks applied the same (compressed) sum
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# Horovod's unsynced run is checked through its timeline, which holds no gradient all-reduce
# (test_hvd_timeline_...), and JAX's through its trace (test_backends)
@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
def test_without_gradient_sync_each_replica_steps_on_its_own_gradients(strategy, single_reference, tmp_path):
    """--no-gradient-sync: the replicas start from the same weights (the broadcast still runs)
    and take the same first loss, then each applies its own shard's gradients, so their weights
    part: from each other, and from the synced run's."""
    a, b = one_step(strategy, tmp_path, extra=("--no-gradient-sync",))
    weights = [k for k in single_reference if k.startswith("T/")]
    np.testing.assert_allclose(a["losses"][0], single_reference["losses"][0], rtol=1e-5)
    apart = [k for k in weights if not np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5)]
    assert len(apart) == len(weights), f"replicas still agree on {sorted(set(weights) - set(apart))}"
    assert not np.allclose(a[weights[0]], single_reference[weights[0]], rtol=1e-4, atol=1e-5)


def test_hvd_timeline_has_every_tensors_all_reduce_in_every_timed_step_and_autotune_keeps_its_log(tmp_path):
    """horovodrun -np 2, resnet18: one row from both ranks; the chief's timeline covers exactly
    the timed steps (each gradient tensor all-reduced once per step), its per-step times go into
    the row, and the autotuner's log is kept and its best sample named. Without gradient sync
    (and with the fusion buffer and cycle time set) the timeline holds no gradient's all-reduce:
    only the loss and the count are summed."""
    from bench.measure.traces import AUTOTUNE_LOG, TIMELINE_FILE, read_timeline

    out, steps = tmp_path / "runs.csv", 16
    env = {**ENV, "HOROVOD_AUTOTUNE_WARMUP_SAMPLES": "1", "HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE": "1"}
    args = [*launcher("horovod"), PY, "bench/run.py", "resnet18", "--strategy", "horovod", "--width", "0.125",
            "--batch-size", "8", "--steps", str(steps), "--warmup-steps", "1", "--no-progress", "--threads", "1",
            "--horovod-timeline", "--output", str(out)]
    r = subprocess.run([*args, "--hvd-autotune"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r_bare = run([*args, "--no-gradient-sync", "--hvd-fusion-mb", "16", "--hvd-cycle-ms", "2"])
    synced, unsynced = read_rows(out).to_dict("records")
    for row, stdout in ((synced, r.stdout), (unsynced, r_bare.stdout)):
        _assert_one_row_from_all_ranks(row, stdout, "horovod")
    # the knobs are recorded (and part of the configuration key)
    assert (unsynced["hvd_fusion_mb"], unsynced["hvd_cycle_ms"], unsynced["hvd_compression"]) == (16, 2, "none")
    # one folder per run, the chief's: the other rank leaves none behind
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == sorted([synced["run_id"], unsynced["run_id"]])
    assert r.stdout.count("timeline    per step") == 1 and r.stdout.count("autotune    best") == 1
    timeline = read_timeline(Path(synced["trace_dir"]) / TIMELINE_FILE, steps)
    grads = {t: n for t, n in timeline.allreduces.items() if "gradient_tape" in t}
    assert len(grads) >= 20 and set(grads.values()) == {steps}, grads  # every tensor, every step, nothing more
    assert synced["hvd_allreduce_ms"] > 0 and synced["hvd_negotiate_ms"] > 0 and synced["hvd_queue_ms"] >= 0
    assert synced["hvd_allreduce_ms"] < 1e3 * synced["step_time_mean_s"]
    assert (Path(synced["trace_dir"]) / AUTOTUNE_LOG).exists()
    assert "tensor_fusion_threshold=" in synced["hvd_autotune_best"] and "best of" in synced["hvd_autotune_best"]
    bare = read_timeline(Path(unsynced["trace_dir"]) / TIMELINE_FILE, steps)
    assert not unsynced["gradient_sync"] and not [t for t in bare.allreduces if "gradient_tape" in t]
    assert sum(bare.allreduces.values()) == 2 * steps, bare.allreduces  # the loss and the count, once a step


def test_a_breakdown_sweep_gives_the_exposed_communication_with_its_ci_for_horovod_and_multiworker(tmp_path):
    """sweep --breakdown at 2 processes, real launchers: each strategy runs synced and unsynced,
    and the report's "where the time goes" table has the difference with its CI for both."""
    from bench.report.tables import where_time_goes
    from bench.results.load import load_results

    out = tmp_path / "runs.csv"
    r = subprocess.run([PY, "-m", "bench.sweep", "--no-progress", "--models", "resnet18", "--batch-sizes", "8",
                        "--strategies", "horovod,multiworker", "--workers", "2", "--breakdown", "--width", "0.125",
                        "--steps", "6", "--warmup-steps", "1", "--output", str(out)],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    df = load_results([out])
    assert len(df) == 4 and (df["status"] == "ok").all() and sorted(df["gradient_sync"]) == [False, False, True, True]
    t = where_time_goes(df).set_index("strategy")
    assert sorted(t.index) == ["horovod", "multiworker"]
    for strategy, row in t.iterrows():
        lo, hi = (float(x) for x in row["exposed_comm_ci95"].strip("[]").split(","))
        assert lo <= round(row["exposed_comm_ms"], 1) <= hi, (strategy, row)
        assert row["compute_ms"] + row["exposed_comm_ms"] + row["input_wait_ms"] == pytest.approx(row["step_ms"])


@pytest.mark.parametrize("strategy", ["multiworker", "horovod"])
def test_a_found_warmup_and_a_ci_target_end_alike_on_every_rank(tmp_path, strategy):
    """Each rank's own clock differs; the warmup's end and the last timed step are decided from
    every rank's slowest step, gathered, so both ranks run the same steps (else the collectives
    hang): one row, with the rule, the steps dropped and whether the target was met."""
    out = tmp_path / "runs.csv"
    r = run([*launcher(strategy), PY, "bench/run.py", "lenet5", "--strategy", strategy, "--batch-size", "8",
             "--steps", "10", "--target-ci", "0.001", "--max-steps", "25", "--no-progress", "--threads", "1",
             "--output", str(out)])
    df = read_rows(out)
    assert len(df) == 1
    row = df.iloc[0]
    _assert_one_row_from_all_ranks(row, r.stdout, strategy)
    assert row["warmup_rule"] in ("mser5", "mser5-max") and row["warmup_dropped"] >= 2
    assert 10 <= row["timed_steps"] <= 25 + 1 and row["target_ci"] == 0.001 and row["max_steps"] == 25
    assert row["target_met"] == (row["step_time_median_ci95_rel"] <= 0.001)
