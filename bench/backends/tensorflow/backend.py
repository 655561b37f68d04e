"""The TensorFlow backend: tf.function + GradientTape step (bench.train), tf.data feeding,
tf.distribute or Horovod adapters. See bench.backends for the functions every backend has."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from bench.backends.tensorflow.trainer import Trainer
from bench.measure.hardware import gpu_total_bytes
from bench.measure.probes import DevicePeak, HostPeak
from bench.measure.timing import Tracer

if TYPE_CHECKING:
    from bench.config.schema import RunConfig
    from bench.runner.session import Session

NAME = "tensorflow"


def configure(cfg: "RunConfig") -> None:
    """Process-wide TensorFlow settings that must precede the first op."""
    import tensorflow as tf

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)


def gpu_names() -> list[str]:
    import tensorflow as tf

    return [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]


def build_step(s: "Session") -> None:
    """Initial-state broadcast, the compiled step, and the step callable (fixed or fed data)."""
    import tensorflow as tf


    cfg, dist = s.cfg, s.dist
    dist.broadcast_initial_state(s.model, s.optimizer)
    s.trainer = trainer = Trainer(s.model, s.optimizer, dist, global_batch=s.global_batch, xla=cfg.xla,
                                  track_accuracy=cfg.accuracy_mode, mode=cfg.mode, gradient_sync=cfg.gradient_sync)
    if s.source.fixed:  # made once, held on the device, reused every step
        fixed = dist.distribute_fixed(s.source.train_dataset, s.per_replica_batch)
        s.step = lambda: trainer.step(fixed)
    else:
        batches = s.data_wait.wrap(iter(dist.distribute(s.source.train_dataset, s.per_replica_batch)))
        s.step = lambda: trainer.step(next(batches))
    s.device_sync = tf.experimental.sync_devices if s.gpu_names else None


def test_batches(s: "Session", test_batch: int) -> Iterable:
    return s.source.test_dataset(test_batch)


def finish(s: "Session") -> None:
    """Nothing to copy back: the Keras variables are the state."""


def is_oom(e: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(e, (tf.errors.ResourceExhaustedError, MemoryError))


def memory_probe(s: "Session") -> Any:
    """TensorFlow's own peak counter on the GPUs (reset after warmup); the process RSS on a CPU."""
    import tensorflow as tf


    gpus = [d.name.replace("/device:", "") for d in tf.config.list_logical_devices("GPU")]
    if not gpus:
        return HostPeak()

    def read() -> list[int]:
        return [int(tf.config.experimental.get_memory_info(g)["peak"]) for g in gpus]

    def reset() -> bool:
        for g in gpus:
            tf.config.experimental.reset_memory_stats(g)
        return True
    return DevicePeak("tf_gpu_peak", read, reset)


def tracer(logdir: str) -> Any:
    """TensorFlow's profiler (TensorBoard's trace), each step marked with its number."""
    import tensorflow as tf


    return Tracer(lambda: tf.profiler.experimental.start(logdir), tf.profiler.experimental.stop,
                  lambda k: tf.profiler.experimental.Trace("train", step_num=k, _r=1))


def device_memory() -> int | None:
    """A GPU's memory size, as nvidia-smi says (None without GPUs). Not what is free: TensorFlow
    reserves the free memory for its own allocator when it starts, and reports no total."""

    return gpu_total_bytes() if gpu_names() else None


def provenance(gpu_names: list[str]) -> dict[str, Any]:
    """What the row learns only once the backend runs (the versions come from package metadata)."""
    return {"device_kind": gpu_names[0] if gpu_names else "cpu"}
