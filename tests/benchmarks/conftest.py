"""Parametrize the training-step benchmarks from the --benchmark-* options."""
from __future__ import annotations


def _list(config, name: str, kind=str) -> list:
    return [kind(x) for x in str(config.getoption(name)).split(",") if x.strip()]


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "model" in metafunc.fixturenames:
        metafunc.parametrize("model", _list(config, "--benchmark-models"))
    if "batch_size" in metafunc.fixturenames:
        metafunc.parametrize("batch_size", _list(config, "--benchmark-batch-sizes", int))
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", _list(config, "--benchmark-modes"))
    if "precision" in metafunc.fixturenames:
        metafunc.parametrize("precision", _list(config, "--benchmark-precisions"))
    if "backend" in metafunc.fixturenames:  # one backend per process: the others run in child pytests
        metafunc.parametrize("backend", _list(config, "--benchmark-backends")[:1])
