"""The install: Horovod built against this TensorFlow, with Gloo, and importable alongside it; one
framework build per environment; the console scripts."""
import ast
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import REPO

from bench.cli import COMMANDS


def _horovodrun() -> str:
    exe = Path(sys.executable).with_name("horovodrun")
    return str(exe) if exe.exists() else shutil.which("horovodrun")


def test_horovod_is_built_with_tensorflow_and_gloo():
    """What `horovodrun --check-build` lists, asked in process (the command imports TensorFlow five
    times over); the distributed tests run horovodrun itself."""
    import horovod.tensorflow as hvd

    assert _horovodrun(), "horovodrun is not installed; run scripts/setup.sh"
    assert hvd.gloo_built() and hvd.gloo_enabled() is not None
    assert not hvd.nccl_built()  # the CPU build (see --hvd-hierarchical)
    # setup.sh adds MPI where Open MPI's compiler wrapper is found (mpirun, horovodrun --mpi)
    assert hvd.mpi_built() == bool(shutil.which("mpicxx"))


def test_horovod_tensorflow_ops_load_in_process():
    import horovod
    import horovod.tensorflow as hvd

    assert horovod.__version__ == "0.28.1"
    hvd.init()
    try:
        assert hvd.size() == 1 and hvd.rank() == 0
        assert hvd.gloo_built()
    finally:
        hvd.shutdown()


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_the_base_install_holds_no_framework_and_no_test_tool():
    """Frameworks come from exactly one of the `cpu` and `gpu` extras, test tools from `test`."""
    project = _project()
    extras = project["optional-dependencies"]
    base = {_name(r) for r in project["dependencies"]}
    frameworks = {_name(r) for r in extras["cpu"] + extras["gpu"]}
    assert {"tensorflow", "tensorflow-cpu", "jax", "keras"} <= frameworks and not base & frameworks
    # mlperf-logging: --mllog's package, whose compliance checker a test runs (tests/test_mllog.py)
    tools = {"pytest", "pytest-benchmark", "pytest-xdist", "hypothesis", "mlperf-logging"}
    assert {_name(r) for r in extras["test"]} == tools
    assert not base & tools


def test_this_environment_holds_one_tensorflow_build():
    """tensorflow-cpu and tensorflow install the same `tensorflow` module over each other; pip
    cannot forbid both extras, so scripts/setup.sh removes the other build before it installs one."""
    installed = []
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            metadata.version(dist)
            installed.append(dist)
        except metadata.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"TensorFlow builds installed here: {installed or 'none'}"


def test_console_scripts_are_the_dispatchers_commands():
    """`cnnbench-NAME` and `cnnbench NAME` start the same tool, each a module with a main()."""
    scripts = dict(_project()["scripts"])
    assert scripts.pop("cnnbench") == "bench.cli:main"
    assert scripts == {f"cnnbench-{name}": f"{module}:main" for name, module in COMMANDS.items()}
    for module in COMMANDS.values():
        path = REPO / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), f"{path} has no main()"
