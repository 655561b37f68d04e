"""bench/run.py end to end: one row per run for each data mode, accuracy mode, bad input."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_cli, run_once, write_cifar100

from bench.results.columns import COLUMNS
from bench.results.store import read_rows

TINY = ["--width", "0.125", "--steps", "4", "--warmup-steps", "1", "--batch-size", "8", "--no-progress"]


def _one_row(csv):
    df = read_rows(csv)
    assert list(df.columns) == COLUMNS and len(df) == 1
    return df.iloc[0]


def _check_ok_row(row, model, data):
    assert row["status"] == "ok", row["error"]
    assert row["model"] == model and row["data"] == data and row["strategy"] == "single"
    assert row["timed_steps"] == 4 and row["global_batch"] == 8 and row["replicas"] == 1
    assert row["images_per_sec"] > 0 and row["step_time_mean_s"] > 0 and row["compile_s"] > 0
    assert row["images_per_sec"] == pytest.approx(8 / row["step_time_mean_s"])
    assert row["step_time_min_s"] <= row["step_time_median_s"] <= row["step_time_max_s"]
    assert row["params"] > 0 and row["gflops_per_image"] > 0 and row["tflops"] > 0
    assert row["tf_version"].startswith("2.21") and isinstance(row["git_commit"], str)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """tiny_runs(data) -> (the finished process, its folder): vgg11 at TINY on one data mode, run
    once per session and shared; the synthetic run also saves its weights (w.weights.h5), a start for the
    --init-weights test."""
    def get(data: str):
        def command(d: Path) -> list[str]:
            extra = ["--save-weights", str(d / "w.weights.h5")] if data == "synthetic" else []
            if data == "cifar100":
                write_cifar100(d / "cifar-100-python.tar.gz", n_train=64, n_test=16)
                extra = ["--data-dir", str(d)]
            return [sys.executable, "bench/run.py", "vgg11", "--data", data, *extra, *TINY, "--output",
                    str(d / "runs.csv")]
        return run_once(tmp_path_factory, f"tiny-{data}", command)
    return get


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "digits", "cifar100"])
def test_tiny_run_writes_one_well_formed_row(tiny_runs, data):
    r, folder = tiny_runs(data)
    out = folder / "runs.csv"
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    _check_ok_row(row, "vgg11", data)
    if data == "synthetic":  # one fixed batch on the device: nothing to wait for
        assert pd.isna(row["data_wait_ms"])
    else:  # the input's share of the step, timed apart
        assert 0 <= row["data_wait_ms"] <= 1000 * row["step_time_max_s"]
    assert "images/sec" in r.stdout


def test_loss_falls_on_the_fixed_synthetic_batch(tmp_path):
    from bench.config.parse import parse_args
    from bench.runner.execute import execute
    from bench.runner.validate import prepare

    cfg = parse_args(["resnet18", "--width", "0.125", "--steps", "15", "--warmup-steps", "0",
                      "--batch-size", "8", "--no-progress", "--output", str(tmp_path / "r.csv")])
    row = execute(prepare(cfg)).row
    assert row["status"] == "ok"
    assert row["final_loss"] < 4.0  # ln(100) = 4.6 at the start


@pytest.mark.slow
def test_accuracy_mode_on_digits_beats_chance(tmp_path):
    out = tmp_path / "runs.csv"
    r = run_cli("vgg13", "--data", "digits", "--width", "0.25", "--epochs", "4", "--target-accuracy", "0.6",
                "--no-progress", "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok"
    assert row["top1"] >= 0.6 and row["top5"] >= row["top1"]  # chance is 0.1
    assert bool(row["target_reached"]) and 0 < row["time_to_target_s"] <= row["wall_s"]
    assert 1 <= row["epochs_run"] <= 4


@pytest.mark.slow
def test_an_epoch_shorter_than_the_warmup_still_times_a_step(tmp_path):
    """digits at global batch 512 is 2 steps an epoch: the first compiles, the default 10 warmup
    steps shrink to none, and one step is timed (it once timed none and crashed)."""
    out = tmp_path / "runs.csv"
    r = run_cli("lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "512", "--no-progress",
                "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok" and row["timed_steps"] == 1 and row["images_per_sec_median"] > 0


@pytest.mark.slow
def test_a_diverged_throughput_run_keeps_its_timing_and_is_flagged(tmp_path):
    out = tmp_path / "runs.csv"
    r = run_cli("resnet18", *TINY, "--optimizer", "sgd", "--lr", "1e6", "--output", str(out))
    assert r.returncode == 1
    row = _one_row(out)
    assert row["status"] == "diverged" and "non-finite" in row["error"] and "every step was run" in row["error"]
    # as tf_cnn_benchmarks does, every step still ran and was timed
    assert row["timed_steps"] == 4 and row["images_per_sec_median"] > 0 and row["step_time_median_s"] > 0
    assert "images/sec" in r.stdout and "flagged" in r.stdout
    import pandas as pd
    assert pd.read_csv(out)["status"].tolist() == ["diverged"]  # a plain reader sees a status, not a missing value
    # accuracy mode keeps its own rule: it stops at the first non-finite loss, with no timing
    r = run_cli("lenet5", "--data", "digits", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e6",
                "--no-progress", "--output", str(out))
    assert r.returncode == 1
    acc = pd.read_csv(out).iloc[-1]
    assert acc["status"] == "diverged" and pd.isna(acc["images_per_sec_median"]) and pd.isna(acc["top1"])


@pytest.mark.slow
def test_summary_prints_the_layer_table(tmp_path):
    r = run_cli("resnet18", "--summary", "--width", "0.5", "--output", str(tmp_path / "x.csv"))
    assert r.returncode == 0 and "stage4_block2_add" in r.stdout and "100 classes" in r.stdout
    assert not (tmp_path / "x.csv").exists()
    r = run_cli("vgg11", "--summary", "--data", "digits", "--width", "0.125")
    logits = next(l for l in r.stdout.splitlines() if l.startswith("logits"))
    assert logits.split()[2] == "10" and "10 classes" in r.stdout  # the data set's own class count


@pytest.mark.slow
def test_a_strategy_that_fails_to_start_still_leaves_a_failed_row(tmp_path):
    """The multiworker server cannot bind its port (another process holds it): a runtime failure
    before the model is built, not bad input, so the chief writes a row and exits 1."""
    import json
    import socket

    out = tmp_path / "runs.csv"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        tf_config = {"cluster": {"worker": [f"localhost:{held.getsockname()[1]}"]}, "task": {"type": "worker", "index": 0}}
        r = run_cli("vgg11", *TINY, "--strategy", "multiworker", "--output", str(out),
                    env={"TF_CONFIG": json.dumps(tf_config)})
    assert r.returncode == 1, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "failed" and "gRPC" in row["error"]
    assert row["model"] == "vgg11" and row["strategy"] == "multiworker" and row["batch_size"] == 8


def test_help_and_arg_errors_do_not_import_tensorflow():
    code = ("import sys; sys.argv=['run.py','--help']; import runpy\n"
            "try:\n  runpy.run_path('bench/run.py', run_name='__main__')\n"
            "except SystemExit as e: assert e.code == 0\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
            "from bench.run import main\n"
            "assert main(['resnet18', '--batch-size', '0']) == 2\n"
            "assert 'tensorflow' not in sys.modules\n"
            "import models.__main__ as m\n"  # a README it cannot rewrite: refused before Keras starts
            "assert m.main(['--update-readme', 'pyproject.toml']) == 2\n"
            "assert 'keras' not in sys.modules\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


BAD_ARGS = [
    (["resnet19"], "resnet19"),
    (["resnet18", "--batch-size", "-3"], "batch_size=-3"),
    (["resnet18", "--batch-size", "0"], "batch_size=0"),
    (["resnet18", "--width", "0"], "width=0"),
    (["resnet18", "--steps", "abc"], "steps='abc'"),
    (["resnet18", "--data", "imagenet"], "imagenet"),
    (["resnet18", "--precision", "fp8"], "fp8"),
    (["resnet18", "--data", "cifar100", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["resnet18", "--target-accuracy", "0.5"], "target_accuracy=0.5"),
    (["resnet18", "--target-accuracy", "1.5", "--epochs", "1", "--data", "digits"], "target_accuracy=1.5"),
    (["resnet18", "--lr", "-1"], "lr=-1"),
    (["resnet18", "--epochs", "2"], "data=synthetic"),
    (["resnet18", "--output", "/etc/hostname/runs.csv"], "/etc/hostname/runs.csv"),
    (["resnet18", "--data", "digits", "--data-dir", "/tmp"], "data=digits"),
    (["resnet18", "--out", "x.csv"], "--out"),  # no abbreviations
    (["resnet18", "--width", "inf"], "width=inf"),
    (["resnet18", "--lr", "nan"], "lr=nan"),
]


@pytest.mark.parametrize("args,named", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line_and_no_row(tmp_path, args, named):
    out = tmp_path / "runs.csv"
    out.write_text("sentinel\n")
    if "--output" not in args:
        args = [*args, "--output", str(out)]
    r = run_cli(*args)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert out.read_text() == "sentinel\n"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad_shape", "labels"])  # a truncated archive: the corpus's run-cifar-truncated
def test_bad_data_exits_2_with_one_line_and_no_row(tmp_path, case):
    out = tmp_path / "runs.csv"
    write_cifar100(tmp_path / "c.tar.gz", bad_shape=case == "bad_shape")
    args = ["--data", "cifar100", "--data-dir", str(tmp_path / "c.tar.gz"), "--output", str(out), *TINY]
    if case == "labels":
        args += ["--num-classes", "10"]
    r = run_cli("resnet18", *args)
    assert r.returncode == 2, r.stderr[-1500:]
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_and_no_row(tmp_path):
    import signal
    import time

    out = tmp_path / "runs.csv"
    p = subprocess.Popen([sys.executable, "bench/run.py", "vgg11", *TINY, "--steps", "100000", "--output", str(out)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # past start-up, into the timed steps
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists()


@pytest.fixture(scope="module")
def inference_runs(tmp_path_factory):
    """inference_runs(backend) -> (the finished process, its CSV): resnet18 (BatchNorm) forward
    passes at batch 1, run once per backend per session and shared; the TensorFlow run also saves its weights
    at the end (after.weights.h5 beside the CSV)."""
    def get(backend: str):
        def command(d: Path) -> list[str]:
            extra = ["--save-weights", str(d / "after.weights.h5")] if backend == "tensorflow" else []
            return [sys.executable, "bench/run.py", "resnet18", "--mode", "inference", "--backend", backend, "--width",
                    "0.125", "--batch-size", "1", "--warmup-steps", "2", "--no-progress", "--output",
                    str(d / "runs.csv"), *extra]
        r, d = run_once(tmp_path_factory, f"inference-{backend}", command)
        return r, d / "runs.csv"
    return get


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_inference_row_has_latency_percentiles_and_memory(inference_runs, backend):
    r, out = inference_runs(backend)
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok" and row["mode"] == "inference" and row["backend"] == backend
    assert row["timed_steps"] == 100 and row["steps"] == 100  # raised to the p99 minimum, and recorded
    p = [row[f"latency_p{q}_ms"] for q in (50, 90, 95, 99)]
    assert 0 < p[0] <= p[1] <= p[2] <= p[3] <= 1000 * row["step_time_max_s"] + 1e-9
    assert p[0] == pytest.approx(1000 * row["step_time_median_s"])
    assert row["latency_per_image_ms"] == pytest.approx(p[0])  # batch 1
    assert pd.isna(row["final_loss"])  # nothing is trained
    # forward only: one pass of FLOPs per image, not three
    assert row["tflops"] == pytest.approx(row["gflops_per_image"] * row["images_per_sec"] / 1e3)
    assert row["peak_mem_bytes"] > 0 and row["mem_source"] == "cpu_rss" and row["mem_estimate_bytes"] > 0
    assert "latency     p50" in r.stdout and "forward only" in r.stdout


@pytest.mark.slow
def test_inference_leaves_batchnorm_and_weights_alone(inference_runs):
    """Forward passes in inference mode change no variable, BatchNorm's statistics included: the
    weights resnet18 saved after 102 of them are the initial ones."""
    import numpy as np

    r, out = inference_runs("tensorflow")
    assert r.returncode == 0, r.stderr[-2000:]
    saved = out.parent / "after.weights.h5"
    code = ("import sys, numpy as np; sys.path.insert(0, '.'); import keras, models; keras.utils.set_random_seed(0); "
            "m = models.build_model('resnet18', width=0.125); a = [w.copy() for w in m.get_weights()]; "
            "assert any('moving_variance' in w.path for w in m.weights); "
            f"m.load_weights({str(saved)!r}); "
            "print(all(np.array_equal(x, y) for x, y in zip(a, m.get_weights())))")
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip().endswith("True"), check.stdout + check.stderr[-1500:]
    assert np.isfinite(read_rows(out).iloc[0]["latency_p99_ms"])


ESTIMATE_FACTOR = 2.0  # the README's stated bound: the process's measured peak / estimate within [1/2, 1]


@pytest.mark.slow
@pytest.mark.parametrize("model,args", [("resnet18", ["--batch-size", "64", "--steps", "2", "--warmup-steps", "1"]),
                                        ("vgg13", ["--mode", "inference", "--batch-size", "32", "--warmup-steps", "2"])],
                         ids=["resnet18-train-64", "vgg13-inference-32"])
def test_the_memory_estimate_is_within_its_stated_factor_of_the_measured_peak(tmp_path, model, args):
    out = tmp_path / "runs.csv"
    r = run_cli(model, *args, "--no-progress", "--output", str(out))  # full width: the model, not the runtime, dominates
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    ratio = row["process_peak_mem_bytes"] / row["mem_estimate_bytes"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= 1, (row["process_peak_mem_bytes"], row["mem_estimate_bytes"])



def _traced_steps(trace_dir) -> set[int]:
    """The step numbers marked in a profiler trace (TensorFlow's XSpace protobuf, which JAX's
    profiler writes too)."""
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    steps: set[int] = set()
    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    assert files, f"no trace in {trace_dir}"
    for f in files:
        space = xplane_pb2.XSpace()
        space.ParseFromString(open(f, "rb").read())
        for plane in space.planes:
            names = {i: m.name for i, m in plane.event_metadata.items()}
            stats = {i: m.name for i, m in plane.stat_metadata.items()}
            for line in plane.lines:
                for ev in line.events:
                    if names.get(ev.metadata_id) == "train":
                        steps |= {s.int64_value or s.uint64_value for s in ev.stats
                                  if stats.get(s.metadata_id) == "step_num"}
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_profile_steps_trace_exactly_those_steps_and_leave_them_out(profiled_runs, backend):
    r, out = profiled_runs(backend)  # in a folder whose name holds a carriage return (test_results)
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok" and row["profile_steps"] == "3-4"
    assert row["steps"] == 6 and row["timed_steps"] == 4  # the two profiled steps are not in the statistics
    assert row["trace_dir"] == str(out.parent / "traces" / row["run_id"])
    assert _traced_steps(row["trace_dir"]) == {3, 4}
    from bench.measure.traces import (
        summarize,  # the ops of those two steps, summed by kind
    )

    summary = summarize(row["trace_dir"])
    assert summary.steps == 2 and summary.source == "/host:CPU"
    assert summary.by_kind().get("convolution", 0) > 0 and sum(summary.op_count.values()) > 10


@pytest.mark.slow
def test_the_init_weights_checksum_is_of_the_file_read_not_of_the_one_saved_over_it(tmp_path, tiny_runs):
    """--init-weights W --save-weights W: the row's provenance names the start, taken when W was
    read, not the trained file that replaced it at the end."""
    import shutil

    from bench.results.provenance import file_sha256

    out, w = tmp_path / "runs.csv", tmp_path / "w.weights.h5"
    small = ["--width", "0.125", "--steps", "2", "--warmup-steps", "0", "--batch-size", "4", "--no-progress"]
    r, first = tiny_runs("synthetic")  # a vgg11 that saved its weights: the start
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.copy(first / "w.weights.h5", w)
    start = file_sha256(w)
    r = run_cli("vgg11", *small, "--output", str(out), "--init-weights", str(w), "--save-weights", str(w))
    assert r.returncode == 0, r.stderr[-2000:]
    assert file_sha256(w) != start  # trained and saved over the start
    assert _one_row(out)["init_weights_sha256"] == start


@pytest.mark.slow
def test_weights_that_cannot_be_written_at_the_end_fail_the_row_but_keep_its_timing_and_the_old_file(tmp_path,
                                                                                                        tmpfs):
    """A real full disk under --save-weights (checked writable before the run, full when the
    weights come): a failed row that keeps the measured timing, one line, exit 1; the file that
    was there stays whole and no temporary is left."""
    disk = tmpfs(48)
    w = disk / "w.weights.h5"
    w.write_bytes(b"an earlier file" * 100)
    before = w.read_bytes()
    out = tmp_path / "runs.csv"
    r = run_cli("vgg11", "--width", "0.125", "--steps", "2", "--warmup-steps", "0", "--batch-size", "4",
                "--no-progress", "--output", str(out), "--save-weights", str(w))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if "could not save the weights" in l]
    assert len(errors) == 1 and "No space left" in errors[0], r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "failed" and "could not save the weights" in row["error"]
    assert row["timed_steps"] == 2 and row["images_per_sec"] > 0
    assert w.read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["w.weights.h5"]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_warmup_is_found_by_default_and_a_ci_target_is_recorded(tmp_path, backend):
    """No --warmup-steps: MSER-5 finds the warmup among the timed steps (JAX's pipelined loop
    too) and the row says how many it dropped and why; --target-ci times on until the median's
    CI is that tight or --max-steps are kept, and says whether it got there."""
    out = tmp_path / "runs.csv"
    r = run_cli("lenet5", "--backend", backend, "--width", "0.125", "--batch-size", "8", "--steps", "10",
                "--no-progress", "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("lenet5", "--backend", backend, "--width", "0.125", "--batch-size", "8", "--steps", "10",
                "--warmup-steps", "3", "--target-ci", "0.5", "--max-steps", "30", "--no-progress", "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    found, fixed = read_rows(out).iloc[0], read_rows(out).iloc[1]
    assert found["status"] == "ok" and pd.isna(found["warmup_steps"]) and found["warmup_rule"] in ("mser5", "mser5-max")
    assert 2 <= found["warmup_dropped"] <= 50 and found["timed_steps"] >= 10 and pd.isna(found["target_met"])
    assert fixed["warmup_rule"] == "fixed" and fixed["warmup_dropped"] == 3 and fixed["warmup_steps"] == 3
    assert 10 <= fixed["timed_steps"] <= 30 and fixed["target_ci"] == 0.5 and fixed["max_steps"] == 30
    assert fixed["target_met"] == (fixed["step_time_median_ci95_rel"] <= 0.5)
    assert fixed["target_met"] or fixed["timed_steps"] == 30
