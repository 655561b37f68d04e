"""Shared test setup: quiet TensorFlow, the repo on sys.path, and the `--benchmark` options."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist's workers ignore SIGINT (Ctrl-C belongs to the controller), and a child started with
    # SIGINT ignored keeps ignoring it: the tests that send Ctrl-C to a run, a sweep or a local
    # cluster need the children to start with Python's own handler, as from a shell.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # likewise for SIGHUP, which a child left ignored keeps ignoring
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from launch.base import BACKENDS  # noqa: E402 - after the repo is on the path

BENCH_DIR = Path(__file__).resolve().parent / "benchmarks"


def pytest_addoption(parser):
    """`pytest --benchmark` (pytest-benchmark has no such flag) and the suite's sizing options."""
    g = parser.getgroup("cnnbench", "cnnbench benchmark suite")
    g.addoption("--benchmark", action="store_true", default=False,
                help="also run the training-step benchmarks in tests/benchmarks/")
    g.addoption("--benchmark-models", default="vgg13,resnet18", help="comma-separated models")
    g.addoption("--benchmark-batch-sizes", default="16,32", help="comma-separated per-replica batch sizes")
    g.addoption("--benchmark-width", type=float, default=0.25, help="model width multiplier")
    g.addoption("--benchmark-modes", default="train",
                help="comma-separated modes (train: the training step; inference: the forward pass)")
    g.addoption("--benchmark-precisions", default="fp32",
                help="comma-separated precisions (fp32, mixed_bf16, mixed_fp16)")
    g.addoption("--benchmark-backends", default="tensorflow",
                help="comma-separated Keras backends (tensorflow, jax); a process runs one backend, so each "
                     "backend after the first runs in a child pytest over tests/benchmarks")
    g.addoption("--benchmark-rounds", type=int, default=10, help="timed rounds (one step each)")
    g.addoption("--benchmark-warmup-rounds", type=int, default=3, help="untimed rounds after the compile step")
    g.addoption("--benchmark-csv", default=None, metavar="PATH",
                help="append each benchmark as a row in bench/run.py's CSV schema (source=pytest)")
    g.addoption("--benchmark-network", default=None, metavar="DIR|new",
                help="tests/benchmarks/test_prediction.py (skipped without it): validate predictions against the "
                     "rows scripts/network.sh left in DIR (runs.csv, collectives.csv), or, with `new`, measure them "
                     "first (as root, about 11 minutes)")
    g.addoption("--extra-large", action="store_true", default=False,
                help="also run the tests marked extra_large (minutes each; the deepest models)")


def benchmark_backends(config) -> list[str]:
    names = [b.strip() for b in str(config.getoption("--benchmark-backends")).split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise pytest.UsageError(f"--benchmark-backends takes {' and/or '.join(BACKENDS)}. Received: {bad or names}")
    return names


def own_backend(config) -> str:
    """The backend benchmarks run on in this process: the first asked for."""
    return benchmark_backends(config)[0]


# JAX's persistent compilation cache, for this test session only: the suite starts dozens of JAX
# processes that compile the same tiny programs (a tiny vgg11 run: 12 s of CPU compiling, 3 s
# from the cache). Set before xdist starts its workers, whose children inherit it; the runs'
# own code never sets it, nor does `pytest --benchmark`, so a user's compile_s is never a cache's.
JAX_CACHE = {"JAX_COMPILATION_CACHE_DIR": "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def pytest_configure(config):
    if config.getoption("--benchmark"):
        os.environ.setdefault("KERAS_BACKEND", own_backend(config))
    own_session = not os.environ.get("PYTEST_XDIST_WORKER") and not config.getoption("--benchmark")
    if own_session and "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # a benchmark's compile_s is never a cache's
        import tempfile

        config.cnnbench_jax_cache = tempfile.mkdtemp(prefix="cnnbench-tests-jax-cache-")
        os.environ.update(JAX_CACHE, JAX_COMPILATION_CACHE_DIR=config.cnnbench_jax_cache)


def pytest_unconfigure(config):
    folder = getattr(config, "cnnbench_jax_cache", None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        for key in JAX_CACHE:
            os.environ.pop(key, None)


def pytest_sessionfinish(session, exitstatus):
    """Each further backend: the same benchmarks in a child pytest (one backend per process)."""
    config = session.config
    if not config.getoption("--benchmark") or os.environ.get("CNNBENCH_BENCHMARK_CHILD"):
        return
    import subprocess

    args = list(config.invocation_params.args)
    for backend in benchmark_backends(config)[1:]:
        child = [a for a in args if not a.startswith("--benchmark-backends")]
        if "--benchmark-backends" in args:  # the value follows the flag
            i = args.index("--benchmark-backends")
            child = [a for j, a in enumerate(args) if j not in (i, i + 1)]
        child = [f"{a}.{backend}.json" if a.startswith("--benchmark-json=") else a for a in child]
        r = subprocess.run([sys.executable, "-m", "pytest", *child, "--benchmark-backends", backend],
                           env={**os.environ, "KERAS_BACKEND": backend, "CNNBENCH_BENCHMARK_CHILD": "1"},
                           cwd=str(config.invocation_params.dir))
        if r.returncode != 0:
            session.exitstatus = r.returncode


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--extra-large"):
        big = pytest.mark.skip(reason="extra_large: run with `pytest --extra-large`")
        for item in items:
            if "extra_large" in item.keywords:
                item.add_marker(big)
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with `pytest --benchmark`")
    for item in items:
        if BENCH_DIR in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def described(tmp_path_factory):
    """described(name, num_classes=100, image_size=32, width=1.0) -> models.describe()'s answer,
    built once per session across xdist's workers (helpers.describe_once) and once per process."""
    import functools

    from helpers import describe_once

    return functools.lru_cache(maxsize=None)(functools.partial(describe_once, tmp_path_factory))


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_kb, name="disk", ro=False) -> a folder on a small tmpfs of its own: a real full
    disk (ENOSPC) or a real read-only folder, whoever runs the test (root passes every permission
    check). Unmounted at teardown; the test is skipped, saying why, where mounting is not allowed."""
    import subprocess

    mounted: list[Path] = []

    def mount(size_kb: int, name: str = "disk", ro: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        opts = f"size={size_kb}k" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"needs `mount -t tmpfs` (root): {(r.stderr.strip() or 'mount failed').splitlines()[-1]}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="session")
def profiled_runs(tmp_path_factory):
    """profiled_runs(backend) -> (the finished process, its CSV): vgg11 for 6 steps with steps 3-4
    profiled, run once per backend per session and shared (test_run: the trace; test_results: the row), its
    CSV in a folder whose name holds a carriage return, an equals sign and markup."""
    from helpers import run_once

    def get(backend: str):
        def command(d: Path) -> list[str]:
            out = d / "=1+1\rfolder <script>" / "runs.csv"
            return [sys.executable, "bench/run.py", "vgg11", "--backend", backend, "--width", "0.125", "--batch-size",
                    "8", "--steps", "6", "--warmup-steps", "1", "--profile-steps", "3-4", "--no-progress",
                    "--output", str(out)]
        r, d = run_once(tmp_path_factory, f"profiled-{backend}", command)
        return r, d / "=1+1\rfolder <script>" / "runs.csv"
    return get


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The bad-input corpus's count per command and per class, whenever it ran."""
    corpus = sys.modules.get("test_bad_input")
    lines = corpus.corpus_summary(terminalreporter.stats) if corpus is not None else []
    if lines:
        terminalreporter.section("bad-input corpus")
        for line in lines:
            terminalreporter.write_line(line)
