"""Shared test setup: quiet TensorFlow, the repo on sys.path, and the `--benchmark` options."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


BENCH_DIR = Path(__file__).resolve().parent / "benchmarks"


def pytest_addoption(parser):
    """`pytest --benchmark` (pytest-benchmark has no such flag) and the suite's sizing options."""
    g = parser.getgroup("cnnbench", "cnnbench benchmark suite")
    g.addoption("--benchmark", action="store_true", default=False,
                help="also run the training-step benchmarks in tests/benchmarks/")
    g.addoption("--benchmark-models", default="vgg13,resnet18", help="comma-separated models")
    g.addoption("--benchmark-batch-sizes", default="16,32", help="comma-separated per-replica batch sizes")
    g.addoption("--benchmark-width", type=float, default=0.25, help="model width multiplier")
    g.addoption("--benchmark-precisions", default="fp32",
                help="comma-separated precisions (fp32, mixed_bf16, mixed_fp16)")
    g.addoption("--benchmark-rounds", type=int, default=10, help="timed rounds (one step each)")
    g.addoption("--benchmark-warmup-rounds", type=int, default=3, help="untimed rounds after the compile step")
    g.addoption("--benchmark-csv", default=None, metavar="PATH",
                help="append each benchmark as a row in bench/run.py's CSV schema (source=pytest)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with `pytest --benchmark`")
    for item in items:
        if BENCH_DIR in Path(str(item.fspath)).parents:
            item.add_marker(skip)
