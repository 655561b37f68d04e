"""The JAX backend: one jitted stateless step (bench.backends.jax.trainer) over a device mesh
(bench.backends.jax.mesh), fed by the host numpy pipeline. Nothing here imports TensorFlow or Horovod.
See bench.backends for the functions every backend has."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from bench.backends.jax.trainer import JaxTrainer, make_step, versions
from bench.measure.probes import DevicePeak, HostPeak
from bench.measure.timing import Tracer

if TYPE_CHECKING:
    from bench.config.schema import RunConfig
    from bench.runner.session import Session

NAME = "jax"


def configure(cfg: "RunConfig") -> None:
    """Keep TensorFlow out of this process. Keras imports it wherever it is installed, to seed
    it (keras.utils.set_random_seed) or to recognise its types when saving, so tell Keras'
    lazy loader that it is absent. (XLA:CPU sizes its own thread pool: --threads is a
    TensorFlow setting, and rows of JAX runs record 0, the framework's default.)"""
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False


def gpu_names() -> list[str]:
    import jax

    return [d.device_kind for d in jax.local_devices() if d.platform == "gpu"]


def build_step(s: "Session") -> None:
    """Replicate the state over the mesh (rank 0's, with several processes), compile lazily."""

    s.trainer = trainer = JaxTrainer(s.model, s.optimizer, s.dist, global_batch=s.global_batch,
                                     track_accuracy=s.cfg.accuracy_mode, preprocess=s.source.device_preprocess(),
                                     mode=s.cfg.mode, gradient_sync=s.cfg.gradient_sync)
    s.step = make_step(trainer, s.dist, s.source, s.per_replica_batch, s.data_wait)
    s.device_sync = trainer.sync
    # JAX dispatches asynchronously: a training step is queued before the host waits for the last
    # one, as Keras' fit does (an inference step is waited for alone: its time is its latency)
    s.pipelined = s.cfg.mode == "train"


def test_batches(s: "Session", test_batch: int) -> Iterable:
    return s.source.host_test_batches(test_batch)


def finish(s: "Session") -> None:
    """Copy the trained state into the Keras variables (for --save-weights)."""
    s.trainer.write_back()


def is_oom(e: BaseException) -> bool:
    """XLA reports an allocation failure as RESOURCE_EXHAUSTED in a JaxRuntimeError."""
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)


def _gpus(devices=None) -> list:
    import jax

    return [d for d in (devices if devices is not None else jax.local_devices()) if d.platform == "gpu"]


def memory_probe(s: "Session") -> Any:
    """XLA's peak counter on the GPUs (JAX cannot reset it: it covers the run since start-up);
    the process RSS on a CPU."""

    gpus = _gpus(s.dist.local_devices)
    if not gpus:
        return HostPeak()
    return DevicePeak("jax_gpu_peak", lambda: [int((d.memory_stats() or {}).get("peak_bytes_in_use", 0)) for d in gpus],
                      lambda: False)


def tracer(logdir: str) -> Any:
    """JAX's profiler (TensorBoard's trace), each step marked with its number."""
    import jax


    return Tracer(lambda: jax.profiler.start_trace(logdir), jax.profiler.stop_trace,
                  lambda k: jax.profiler.StepTraceAnnotation("train", step_num=k))


def device_memory() -> int | None:
    """What XLA's allocator may use on a local GPU, the smallest (None without GPUs). In use or
    not: the estimate already counts the weights the model holds by now."""
    limits = [int((d.memory_stats() or {}).get("bytes_limit", 0)) for d in _gpus()]
    return min(limits) if limits and min(limits) > 0 else None


def provenance(gpu_names: list[str]) -> dict[str, Any]:
    """What the row learns only once the backend runs: the versions JAX reports, the device kind."""

    return versions()
