"""The strategy registry: each strategy is one framework-free class in launch/ that answers
everything about itself before anything runs, and nothing outside launch/ and the backends'
adapters names a strategy. No processes are started here (but one, marked slow)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

import launch
from bench.config.parse import parse_args
from bench.config.schema import schema
from bench.errors import BenchInputError
from launch import (
    STRATEGIES,
    Launch,
    Strategy,
    default_strategy,
    get_strategy,
    strategy_names,
)


def test_every_strategy_answers_for_itself():
    assert strategy_names() == list(STRATEGIES)
    for name, cls in STRATEGIES.items():
        assert cls.name == name and issubclass(cls, Strategy)
        assert "tensorflow" in cls.backends
        for w in (1, 3):
            launch = cls.launch(w, timeout=60, gpus=0, cores=4)
            assert isinstance(launch, Launch)
            assert launch.processes == cls.processes(w) >= 1
            assert launch.threads == max(1, 4 // launch.processes)
            assert cls.replicas(w, 0) >= 1


def test_process_and_replica_counts():
    assert [get_strategy(s).processes(4) for s in ("single", "mirrored", "multiworker", "horovod")] == [1, 1, 4, 4]
    assert get_strategy("mirrored").replicas(4, gpus=0) == 4  # logical CPU devices
    assert get_strategy("mirrored").replicas(4, gpus=2) == 2  # no more than the GPUs
    assert not get_strategy("single").scalable
    m = get_strategy("mirrored").launch(2, timeout=60, gpus=0, cores=2)
    assert m.run_args == ["--cpu-replicas", "2"] and m.env == {}
    g = get_strategy("mirrored").launch(2, timeout=60, gpus=4, cores=2)
    assert g.env == {"CUDA_VISIBLE_DEVICES": "0,1"} and g.run_args == []
    assert get_strategy("horovod").launcher(2, 60)[-4:] == ["2", "-H", "localhost:2", "--gloo"]
    assert get_strategy("multiworker").launcher(3, 60)[-5:] == ["-n", "3", "--timeout", "60", "--"]


def test_ranks_and_default_strategy_come_from_the_launchers_environment(monkeypatch):
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "TF_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert default_strategy() == "single"
    monkeypatch.setenv("HOROVOD_RANK", "1")
    assert default_strategy() == "horovod" and get_strategy("horovod").env_rank() == 1
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert get_strategy("multiworker").env_rank() == 2


def test_unknown_strategy_and_misplaced_options_are_input_errors():
    with pytest.raises(BenchInputError, match="ring"):
        get_strategy("ring")
    with pytest.raises(BenchInputError, match="--cpu-replicas applies to --strategy mirrored"):
        parse_args(["vgg11", "--cpu-replicas", "2", "--strategy", "horovod"])
    assert parse_args(["vgg11", "--cpu-replicas", "2", "--strategy", "mirrored"]).cpu_replicas == 2


def test_a_new_strategy_is_one_class_and_one_registry_line(monkeypatch, tmp_path):
    """A throwaway strategy: the CLI accepts it and the sweep launches it, with no other change."""
    class Pipes(Strategy):
        name = "pipes"

        @classmethod
        def processes(cls, workers):
            return workers

        @classmethod
        def launcher(cls, workers, timeout):
            return ["pipesrun", "-n", str(workers)]

    monkeypatch.setitem(STRATEGIES, "pipes", Pipes)
    assert parse_args(["vgg11", "--strategy", "pipes"]).strategy == "pipes"
    from bench.sweep.grid import build_jobs
    jobs = build_jobs(["vgg11"], [8], ["pipes"], [3], {}, str(tmp_path / "r.csv"), 60, gpus=0)
    (job,) = jobs
    assert job.command[:3] == ["pipesrun", "-n", "3"] and job.launch.processes == 3
    assert "--threads" in job.command and job.key()[-4:] == (3, 3, 1, None)  # workers, replicas, hosts, link


def _code_without_comments(path: Path) -> str:
    """The module's code with comments and docstrings removed."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@pytest.mark.parametrize("path", ["bench/sweep/grid.py", "bench/sweep/cli.py", "bench/config/schema.py", "bench/config/parse.py",
                                  "bench/runner/session.py", "bench/runner/execute.py", "bench/run.py"])
def test_no_strategy_is_named_outside_launch(path):
    code = _code_without_comments(REPO / path)
    for name in ("horovod", "multiworker", "mirrored"):
        assert name not in code.lower(), f"{path} names {name}"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (module level and inside functions), as absolute names."""
    pkg = ".".join(path.parent.relative_to(REPO).parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{pkg}.{base}" if base else pkg
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_bench_imports_nothing_from_launch_but_the_registry_and_the_interface():
    """...and a backend's adapters, the specs they implement (bench/backends/<name>/)."""
    for path in sorted((REPO / "bench").rglob("*.py")):
        used = {m for m in _imports(path) if m == "launch" or m.startswith("launch.")}
        registry = {f"launch.{n}" for n in launch.__all__}
        allowed = {"launch", "launch.base", *registry}
        prefixes = ("launch.base.", "launch.strategies") if path.parent.parent == REPO / "bench" / "backends" \
            else ("launch.base.",)
        bad = [m for m in used if m not in allowed and not m.startswith(prefixes)]
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_launch_imports_no_framework_and_nothing_from_bench_but_errors_and_procs():
    """The specs are framework-free: every import of the registry and the specs (inside functions
    too) names no framework, and nothing of bench but bench.errors, bench.procs and the
    configuration's type (for annotations only). (launch.local_cluster is a command, not a spec.)"""
    for path in (REPO / "launch" / name for name in ("__init__.py", "base.py", "strategies.py")):
        for m in _imports(path):
            top = m.split(".")[0]
            assert top not in ("tensorflow", "keras", "jax", "horovod"), f"{path.name} imports {m}"
            if top == "bench":
                assert m in ("bench", "bench.errors", "bench.procs", "bench.config.schema") \
                    or m.startswith(("bench.errors.", "bench.procs.", "bench.config.schema.RunConfig")), \
                    f"{path.name} imports {m}"
    code = ("import sys, launch\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'horovod', 'jax') "
            "or m.startswith('bench.') and m not in ('bench.errors', 'bench.procs'))\n"
            "assert not bad, bad\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_the_registry_config_and_sweep_import_no_framework():
    code = ("import sys, launch, bench.config.parse, bench.sweep.cli, bench.results.load\n"
            "bad = [m for m in ('tensorflow', 'keras', 'horovod', 'jax') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_strategy_choices_come_from_the_registry():
    assert schema()["strategy"].allowed() == tuple(strategy_names())


@pytest.mark.slow
def test_the_pack_size_and_all_reduce_reach_multiworker_strategy():
    """--all-reduce-pack-mb and --all-reduce set MultiWorkerMirroredStrategy's communication options."""
    import json

    code = ("from bench.config.schema import RunConfig\nfrom bench.backends import make_distribution\n"
            "d = make_distribution(RunConfig(model='vgg11', strategy='multiworker', all_reduce='ring', "
            "all_reduce_pack_mb=2.5, collective_timeout=60))\n"
            "o = d.strategy.extended._communication_options\n"
            "print(o.bytes_per_pack, o.implementation.name, o.timeout_seconds)\n")
    from launch.local_cluster import free_ports

    tf_config = {"cluster": {"worker": [f"localhost:{free_ports(1)[0]}"]}, "task": {"type": "worker", "index": 0}}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-3:] == [str(int(2.5 * 2**20)), "RING", "60"]
