"""The declared seam between the run layer and a backend: the `Backend` interface each backend
module implements (bench.backends.tensorflow.backend, bench.backends.jax.backend), the `Step`
value its `build_step` returns, and the `Trainer` base its trainer fills in.

A backend module is itself the implementation (as Keras' own backends are sibling modules with
the same names): `bench.backends.load` checks it against `Backend` before handing it out.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Mapping,
    Protocol,
    runtime_checkable,
)

from bench.backends.distribution import Distribution
from bench.measure.memory import MemoryTerms
from bench.measure.probes import Peak
from bench.measure.timing import Tracer, WaitClock

if TYPE_CHECKING:
    import keras

    from bench.config.schema import RunConfig
    from bench.data.source import DataSource

AdapterFactory = Callable[["RunConfig"], Distribution]


class Trainer(abc.ABC):
    """Owns one model's compiled step and evaluation under one distribution (what the harness
    calls on a trainer, whatever the backend)."""

    @abc.abstractmethod
    def step(self, batch: Any) -> tuple:
        """One synchronous data-parallel training step on a distributed batch: (global mean loss,
        #correct). In inference mode, one forward pass: (this process's sum of the outputs, 0)."""

    @abc.abstractmethod
    def evaluate(self, batches: Iterable) -> tuple[float, float]:
        """Top-1 and top-5 accuracy of this process's weights on `batches` (BN in inference mode)."""

    @abc.abstractmethod
    def write_back(self) -> None:
        """Make the Keras model's variables hold the trained state (before saving weights)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """What `Backend.build_step` returns: the callable the harness times, and how to time it."""
    run: Callable[[], tuple]                    # one step on the next batch: (loss, #correct)
    trainer: Trainer | None                     # its evaluation and state (None: --mode input has no model)
    device_sync: Callable[[], None] | None = None  # waits for every queued device op (None: fetching suffices)
    pipelined: bool = False                     # keep one timed step in flight (bench.measure.timing.run_steps)


@runtime_checkable
class Backend(Protocol):
    """What every backend module provides. Keras reads KERAS_BACKEND when first imported, so a
    backend is only loaded through bench.backends.load, which selects it first."""

    NAME: str
    # strategy name -> the adapter factory; a strategy missing here does not run on this backend
    ADAPTERS: Mapping[str, AdapterFactory]
    # mode (train, inference) -> the memory estimate's terms, calibrated on this backend's runs
    MEMORY: Mapping[str, MemoryTerms]

    def configure(self, cfg: "RunConfig") -> None:
        """Process-wide framework settings that must precede the first op."""

    def gpu_names(self) -> list[str]:
        """The local GPUs' names (empty on a CPU-only machine)."""

    def sgd(self) -> type:
        """The momentum SGD class this backend trains with (a keras.optimizers.SGD)."""

    def build_step(self, cfg: "RunConfig", dist: Distribution, source: "DataSource", model: "keras.Model",
                   optimizer: Any, *, global_batch: int, data_wait: WaitClock) -> Step:
        """Initial-state broadcast, the compiled step and the step callable, fed from `source`
        (`data_wait` times its waits for real batches); `optimizer` is None for inference."""

    def input_step(self, cfg: "RunConfig", dist: Distribution, source: "DataSource", *,
                   data_wait: WaitClock) -> Step:
        """--mode input: a step that takes the next batch from `source` exactly as `build_step`'s
        training step is fed (the same per-replica pipelines, the same prefetch) and waits until it
        is where that step would read it; no model, no device compute. Returns (0, 0)."""

    def test_batches(self, source: "DataSource", test_batch: int) -> Iterable:
        """The test split in batches of `test_batch` images, as this backend's trainer evaluates them."""

    def is_oom(self, e: BaseException) -> bool:
        """Whether `e` means the device ran out of memory."""

    def memory_probe(self, dist: Distribution) -> Peak:
        """The run's peak-memory counter (the device's, or the process RSS on a CPU)."""

    def tracer(self, logdir: str) -> Tracer:
        """The framework's profiler for --profile-steps, each step marked with its number."""

    def device_memory(self) -> int | None:
        """How much memory a device has for the run (None without GPUs)."""

    def provenance(self, gpu_names: list[str]) -> dict[str, Any]:
        """What the row learns only once the backend runs."""


def backend_members() -> list[str]:
    """The names every Backend implementation must define (its attributes and functions)."""
    return sorted({*Backend.__annotations__,
                   *(n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_"))})
