"""The Keras backends cnnbench runs on, and the one place that chooses between them.

Each backend is one subpackage whose `backend` module implements the declared interface
bench.backends.base.Backend (bench.backends.tensorflow.backend, bench.backends.jax.backend):
configure the framework, name the GPUs, supply its SGD, build the `Step` a run times, serve
the test split, say which exceptions mean out-of-memory, measure peak memory and say how much a
device has, trace steps, give the row its provenance, and build each strategy it runs (its
table `ADAPTERS`). Adding a backend is one subpackage and one name in BACKENDS. Keras reads
KERAS_BACKEND when it is first imported, so `select` must run before anything imports keras;
one process runs one backend.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, cast

from bench.backends.base import Backend, backend_members
from bench.backends.distribution import Distribution
from bench.errors import BenchInputError, meaningful_lines
from launch import get_strategy
from launch.base import BACKENDS

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

INSTALL_HINT = {"tensorflow": "pip install tensorflow-cpu==2.21.*",
                "jax": "pip install 'jax[cpu]' (or run `bash scripts/setup.sh`, which installs it)"}


def check_installed(name: str) -> None:
    """BenchInputError, saying how to install it, if the backend's framework is missing."""
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BenchInputError(f"--backend {name} needs {name}, which is not installed: {INSTALL_HINT.get(name, f'pip install {name}')}")


def select(name: str) -> None:
    """Make `name` the Keras backend of this process. BenchInputError if Keras already runs
    on another one here (a process cannot hold two backends)."""
    if name not in BACKENDS:
        raise BenchInputError(f"invalid backend {name!r}; valid: {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise BenchInputError(f"this process already runs Keras on {current}; --backend {name} needs a "
                                  f"process of its own")
        return
    check_environment(name)
    os.environ["KERAS_BACKEND"] = name
    os.environ["CNNBENCH_BACKEND_SET"] = name  # children (launchers' ranks) inherit it: not a conflict


def check_environment(name: str, flag: str = "--backend") -> None:
    """BenchInputError where KERAS_BACKEND, set by hand, names another backend than `name`
    (`flag` is the option that asked for it, to name in the hint)."""
    env = os.environ.get("KERAS_BACKEND")
    if not env or env == name or "CNNBENCH_BACKEND_SET" in os.environ:
        return
    hint = (f"unset KERAS_BACKEND or pass {flag} {env}" if env in BACKENDS else
            f"cnnbench runs on {' and '.join(BACKENDS)} only: unset KERAS_BACKEND")
    raise BenchInputError(f"KERAS_BACKEND={env} is set in the environment but {flag} {name} was asked for; {hint}")


# Packages the frameworks import at start-up only for features a run never uses, each behind an
# `except ImportError` of theirs: Keras' scikit-learn wrappers (sklearn, ~0.8 s) and image-gallery
# plots (matplotlib, ~0.35 s, which also talks where HOME cannot be written), its array slicing's
# DataFrame inputs to fit() (pandas, ~0.25 s; a run appends its row with the csv module), and
# TFLite's JAX converter (jax, ~0.4 s, imported by TensorFlow). About 2 s of CPU of every
# TensorFlow run's start, a third of a small run's.
UNUSED_AT_IMPORT = ("sklearn", "matplotlib", "pandas")


def load(name: str) -> Backend:
    """The backend `name` (its module, checked against the Backend interface), with its
    framework imported, quietly, without the packages it would import for features no run uses
    (UNUSED_AT_IMPORT, and the other backends' frameworks)."""
    select(name)
    with hidden((*UNUSED_AT_IMPORT, *(b for b in BACKENDS if b != name))):
        quiet_import(name)
        quiet_import("keras")
    return implementation(name)


@contextlib.contextmanager
def hidden(modules: Iterable[str]) -> Iterator[None]:
    """Inside: importing any of `modules` (not yet imported) raises ImportError, as if it were not
    installed. After: each imports normally again, for whoever names it (the digits data set
    reads scikit-learn; a report draws with matplotlib); a module that took the absence in
    keeps it."""
    hide = [m for m in modules if m not in sys.modules]
    for m in hide:
        sys.modules[m] = None  # type: ignore[assignment]  # the import system's "not installed"
    try:
        yield
    finally:
        for m in hide:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def implementation(name: str) -> Backend:
    """The module that implements backend `name`, checked against the Backend interface; it
    imports no framework by itself (its functions do), so this selects nothing."""
    module = importlib.import_module(f"bench.backends.{name}.backend")
    if not isinstance(module, Backend):
        missing = [m for m in backend_members() if not hasattr(module, m)]
        raise TypeError(f"{module.__name__} does not implement bench.backends.base.Backend: it lacks {missing}")
    return cast(Backend, module)


def make_distribution(cfg: "RunConfig") -> Distribution:
    """The adapter of cfg.strategy on cfg.backend (a missing cell of the backend's ADAPTERS table
    is refused as the spec words it). Call before the framework creates any op (it configures devices)."""
    spec = get_strategy(cfg.strategy)
    factory = load(cfg.backend).ADAPTERS.get(spec.name)
    if factory is None:
        raise BenchInputError(spec.unsupported_backend(cfg.backend))
    return factory(cfg)


def quiet_import(module: str) -> None:
    """Import `module` with its start-up chatter on stderr (TensorFlow's absl and oneDNN lines,
    printed from C++ at load) held back; anything that says more is passed on. A one-line
    error after the import stays one line."""
    if module in sys.modules:
        return

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            importlib.import_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in meaningful_lines(held.read().decode(errors="replace")):
                print(line, file=sys.stderr)
