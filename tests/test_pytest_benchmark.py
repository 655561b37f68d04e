"""`pytest --benchmark`: the suite runs, records extra_info, writes CSV rows; plain pytest skips it."""
import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

from bench.results.columns import COLUMNS
from bench.results.load import load_results
from bench.results.store import read_rows

# pytest-benchmark switches itself off inside an xdist worker (it reads PYTEST_XDIST_WORKER):
# the inner run is a plain, serial pytest
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_benchmark_flag_runs_the_suite_with_extra_info_and_csv_rows(tmp_path):
    js, csv = tmp_path / "bench.json", tmp_path / "rows.csv"
    r = _pytest("tests/benchmarks", "--benchmark", "--benchmark-models", "vgg11", "--benchmark-batch-sizes",
                "4", "--benchmark-width", "0.125", "--benchmark-rounds", "5", "--benchmark-warmup-rounds", "1",
                f"--benchmark-json={js}", "--benchmark-csv", str(csv), "--benchmark-backends", "tensorflow,jax",
                "--benchmark-modes", "train,inference", "-q")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert r.stdout.count("2 passed") == 2  # tensorflow here, jax in its own child pytest
    assert js.with_name(js.name + ".jax.json").exists()
    benches = {x["extra_info"]["mode"]: x for x in json.loads(js.read_text())["benchmarks"]}
    assert sorted(benches) == ["inference", "train"]
    b = benches["train"]
    assert b["group"] == "vgg11" and b["stats"]["rounds"] == 5
    extra = b["extra_info"]
    for key in ("images_per_sec", "tflops", "global_batch", "params", "gflops_per_image"):
        assert extra[key] > 0, key
    assert extra["global_batch"] == 4
    assert extra["images_per_sec"] == __import__("pytest").approx(4 / b["stats"]["median"], rel=1e-6)
    rows = read_rows(csv)
    assert list(rows.columns) == COLUMNS  # the same columns as bench/run.py's rows
    assert sorted(zip(rows["backend"], rows["mode"])) == [("jax", "inference"), ("jax", "train"),
                                                         ("tensorflow", "inference"), ("tensorflow", "train")]
    assert (rows["source"] == "pytest").all() and (rows["status"] == "ok").all()
    assert (rows["timed_steps"] == 5).all() and (rows["model"] == "vgg11").all()
    inference = rows[rows["mode"] == "inference"]
    assert (inference["latency_p99_ms"] >= inference["latency_p50_ms"]).all() and inference["final_loss"].isna().all()
    loaded = load_results([csv])
    mine = loaded[(loaded["backend"] == "tensorflow") & (loaded["mode"] == "train")]
    assert mine["images_per_sec_median"].iloc[0] == extra["images_per_sec"]


@pytest.mark.slow
def test_plain_pytest_skips_the_benchmarks():
    r = _pytest("tests/benchmarks", "-q", "-rs")
    assert r.returncode == 0, r.stdout[-2000:]
    # models x batch sizes in one mode, and the check of predictions against measurement
    assert "5 skipped" in r.stdout and "passed" not in r.stdout
    assert "benchmarks run only with `pytest --benchmark`" in r.stdout
