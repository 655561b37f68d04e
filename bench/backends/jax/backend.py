"""The JAX backend: one jitted stateless step (bench.backends.jax.trainer) over a device mesh
(bench.backends.jax.mesh), fed by the host numpy pipeline. Nothing here imports TensorFlow or Horovod.
Implements bench.backends.base.Backend."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from bench.backends.base import AdapterFactory, Step
from bench.backends.distribution import Distribution, MeshDistribution
from bench.backends.jax import mesh
from bench.backends.jax.trainer import JaxTrainer, make_input_step, make_step, versions
from bench.measure.memory import HostTerms, MemoryTerms, MiB
from bench.measure.probes import DevicePeak, HostPeak, Peak
from bench.measure.timing import Tracer, WaitClock

if TYPE_CHECKING:
    import keras

    from bench.config.schema import RunConfig
    from bench.data.source import DataSource

NAME = "jax"
# No horovod: Horovod has no JAX binding (launch.strategies.Horovod.backend_hint says what to use)
ADAPTERS: dict[str, AdapterFactory] = {"single": mesh.single, "mirrored": mesh.mirrored, "multiworker": mesh.multiworker}
# the estimate's terms per mode (bench.measure.memory.HostTerms says what each is): fitted to
# this backend's process peaks, docs/measurements/2026-12-02-cpu-memory-calibration.md
MEMORY: dict[str, MemoryTerms] = {
    "train": MemoryTerms(HostTerms(base=680 * MiB, per_layer=int(6.30 * MiB), act=1.15, widest=11.05, patches=1.20,
                                   input=3.40, weights=1.0, lrn=16.0), gpu_runtime_bytes=400 * MiB),
    "inference": MemoryTerms(HostTerms(base=620 * MiB, per_layer=int(0.65 * MiB), act=0.0, widest=13.40, patches=0.0,
                                       input=2.00, weights=1.5), gpu_runtime_bytes=200 * MiB),
}


def configure(cfg: "RunConfig") -> None:
    """Keep TensorFlow out of this process. Keras imports it wherever it is installed, to seed
    it (keras.utils.set_random_seed) or to recognise its types when saving, so tell Keras'
    lazy loader that it is absent. (XLA:CPU sizes its own thread pool: --threads is a
    TensorFlow setting, and rows of JAX runs record 0, the framework's default.)"""
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False
    set_xla_flags(cfg)


# The XLA options of the JAX step's switches (bench.config.schema.JAX_SWITCHES): each value's flag in
# XLA_FLAGS ("plain": none, XLA's own setting). They are GPU options, but the CPU jaxlib parses them
# too (jaxlib 0.10.2: an unknown flag in XLA_FLAGS aborts the process; these start it), so a CPU run
# with them set runs, and records them, unchanged.
XLA_SWITCH_FLAGS: dict[str, dict[str, str]] = {
    "xla_autotune": {level: f"--xla_gpu_autotune_level={level}" for level in ("0", "1", "2", "3", "4")},
    "xla_command_buffer": {"off": "--xla_gpu_enable_command_buffer="},
}


def xla_flags(cfg: "RunConfig") -> list[str]:
    """The XLA_FLAGS entries the run's switches ask for (none where every switch is plain)."""
    return [XLA_SWITCH_FLAGS[name][getattr(cfg, name)] for name in XLA_SWITCH_FLAGS
            if getattr(cfg, name) not in (None, "plain")]


def set_xla_flags(cfg: "RunConfig") -> None:
    """Put the switches' flags into XLA_FLAGS, which XLA reads once, when JAX starts its first
    backend (after this, in the adapter). A process whose backend already started cannot take other
    flags: that is a programming error (bench/lab/gpu_check.py runs such configurations in children)."""
    from jax._src import xla_bridge

    wanted = xla_flags(cfg)
    names = [f.split("=")[0] for flags in XLA_SWITCH_FLAGS.values() for f in flags.values()]
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=")[0] not in names]
    value = " ".join([*kept, *wanted])
    if value == os.environ.get("XLA_FLAGS", ""):
        return
    if xla_bridge.backends_are_initialized():
        raise RuntimeError(f"XLA already started in this process; the XLA flags {wanted or 'of the plain path'} "
                           f"need a process of their own")
    os.environ["XLA_FLAGS"] = value


def gpu_names() -> list[str]:
    import jax

    return [d.device_kind for d in jax.local_devices() if d.platform == "gpu"]


def sgd() -> type:
    """Keras' own SGD: XLA fuses its momentum update into the jitted step."""
    import keras

    return keras.optimizers.SGD


def build_step(cfg: "RunConfig", dist: Distribution, source: "DataSource", model: "keras.Model", optimizer: Any, *,
               global_batch: int, data_wait: WaitClock) -> Step:
    """Replicate the state over the mesh (rank 0's, with several processes), compile lazily."""
    assert isinstance(dist, MeshDistribution), dist  # this backend's ADAPTERS make no other kind
    trainer = JaxTrainer(model, optimizer, dist, global_batch=global_batch, track_accuracy=cfg.accuracy_mode,
                         preprocess=source.device_preprocess(), mode=cfg.mode, gradient_sync=cfg.gradient_sync)
    # JAX dispatches asynchronously: a training step is queued before the host waits for the last
    # one, as Keras' fit does (an inference step is waited for alone: its time is its latency)
    return Step(make_step(trainer, dist, source, cfg.batch_size, data_wait), trainer, device_sync=trainer.sync,
                pipelined=cfg.mode == "train")


def input_step(cfg: "RunConfig", dist: Distribution, source: "DataSource", *, data_wait: WaitClock) -> Step:
    """The host pipeline as the trainer takes it, transfer included: a training step cannot start
    before its batch is on the devices, so that is where an input step waits for it."""
    assert isinstance(dist, MeshDistribution), dist
    return Step(make_input_step(dist, source, cfg.batch_size, data_wait), None)


def test_batches(source: "DataSource", test_batch: int) -> Iterable:
    return source.host_test_batches(test_batch)


def is_oom(e: BaseException) -> bool:
    """XLA reports an allocation failure as RESOURCE_EXHAUSTED in a JaxRuntimeError."""
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)


def _gpus(devices=None) -> list:
    import jax

    return [d for d in (devices if devices is not None else jax.local_devices()) if d.platform == "gpu"]


def memory_probe(dist: Distribution) -> Peak:
    """XLA's peak counter on the GPUs (JAX cannot reset it: it covers the run since start-up);
    the process RSS on a CPU."""
    assert isinstance(dist, MeshDistribution), dist
    gpus = _gpus(dist.local_devices)
    if not gpus:
        return HostPeak()
    return DevicePeak("jax_gpu_peak", lambda: [int((d.memory_stats() or {}).get("peak_bytes_in_use", 0)) for d in gpus],
                      lambda: False)


def tracer(logdir: str) -> Tracer:
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
