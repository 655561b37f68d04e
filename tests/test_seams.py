"""The declared seams between the run layer and the backends: each backend module implements
bench.backends.base.Backend, its trainer fills in the Trainer base, its step is a frozen value,
and its ADAPTERS table and the strategy specs agree on which strategy runs where. Nothing here
imports a framework (the backend modules defer theirs into their functions)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

import bench.backends
from bench.backends import BACKENDS, implementation, make_distribution
from bench.backends.base import Backend, Step, Trainer, backend_members
from bench.backends.distribution import (
    Distribution,
    MeshDistribution,
    ReplicaDistribution,
)
from bench.backends.jax.trainer import JaxTrainer
from bench.backends.tensorflow.trainer import TensorFlowTrainer
from bench.config.schema import MODEL_MODES, RunConfig
from bench.errors import BenchInputError
from bench.measure.memory import MemoryTerms
from launch import STRATEGIES


def _shape(fn) -> list[tuple]:
    """A signature's parameters as (name, kind, default), without `self`."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("name", BACKENDS)
def test_each_backend_implements_the_declared_interface(name):
    module = implementation(name)
    assert isinstance(module, Backend) and module.NAME == name
    for member in backend_members():
        assert hasattr(module, member), f"{name} lacks {member}"
        declared = getattr(Backend, member, None)
        if callable(declared):
            assert _shape(getattr(module, member)) == _shape(declared), f"{name}.{member}: {_shape(declared)}"
    # the memory estimate's terms come from the backend, for every mode a run can take
    assert set(module.MEMORY) == set(MODEL_MODES) and all(isinstance(t, MemoryTerms) for t in module.MEMORY.values())


def test_a_module_missing_a_member_is_not_a_backend(monkeypatch):
    module = implementation("jax")
    monkeypatch.delattr(module, "tracer")
    assert not isinstance(module, Backend)
    with pytest.raises(TypeError, match=r"lacks \['tracer'\]"):
        implementation("jax")


@pytest.mark.parametrize("name", BACKENDS)
def test_the_adapter_tables_and_the_specs_agree_on_where_each_strategy_runs(name):
    adapters = implementation(name).ADAPTERS
    assert set(adapters) <= set(STRATEGIES), f"{name} adapts strategies nobody registered"
    for strategy, spec in STRATEGIES.items():
        assert (strategy in adapters) == (name in spec.backends), (strategy, name)
        assert callable(adapters.get(strategy, callable))


def test_a_missing_cell_is_refused_with_the_specs_own_line(monkeypatch):
    monkeypatch.setattr(bench.backends, "load", implementation)  # the table, without starting JAX here
    with pytest.raises(BenchInputError, match=r"^--strategy horovod does not run on --backend jax: Horovod has no "
                                              r"JAX binding; use --strategy mirrored"):
        make_distribution(RunConfig(model="vgg11", backend="jax", strategy="horovod"))


def test_trainers_fill_in_the_common_base_and_adapters_the_interfaces():
    for cls in (TensorFlowTrainer, JaxTrainer):
        assert issubclass(cls, Trainer) and not inspect.isabstract(cls), cls
    assert {"step", "evaluate", "write_back"} <= Trainer.__abstractmethods__
    assert issubclass(ReplicaDistribution, Distribution) and issubclass(MeshDistribution, Distribution)
    assert MeshDistribution.__abstractmethods__ == {"shard", "replicate"}


def test_a_step_is_a_frozen_value():
    class Nothing(Trainer):
        def step(self, batch):
            return 0.0, 0.0

        def evaluate(self, batches):
            return 1.0, 1.0

        def write_back(self):
            pass

    step = Step(lambda: (0.0, 0.0), Nothing())
    assert step.device_sync is None and step.pipelined is False and step.run() == (0.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.pipelined = True  # type: ignore[misc]


def test_a_hidden_module_cannot_be_imported_inside_and_imports_normally_after(tmp_path, monkeypatch):
    import importlib
    import sys

    # a module of the test's own, which nothing else in this worker can have imported before
    (tmp_path / "cnnbench_hidden_probe.py").write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cnnbench_hidden_probe", raising=False)
    with bench.backends.hidden(["cnnbench_hidden_probe", "sys"]):  # an imported one stays as it is
        with pytest.raises(ImportError):
            importlib.import_module("cnnbench_hidden_probe")
        assert sys.modules["sys"] is sys
    assert importlib.import_module("cnnbench_hidden_probe").ANSWER == 42
    del sys.modules["cnnbench_hidden_probe"]


@pytest.mark.slow
def test_a_run_imports_its_framework_without_what_it_imports_for_nothing():
    """TensorFlow and Keras import scikit-learn, matplotlib and JAX for features no run uses;
    a run's load() leaves them out, and the digits data set can still import scikit-learn."""
    import subprocess
    import sys

    from helpers import REPO

    code = ("import sys; from bench.backends import load, UNUSED_AT_IMPORT\n"
            "load('tensorflow')\n"
            "assert 'tensorflow' in sys.modules and 'keras' in sys.modules\n"
            "left = [m for m in (*UNUSED_AT_IMPORT, 'jax') if m in sys.modules]\n"
            "assert not left, left\n"
            "from sklearn.datasets import load_digits\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
