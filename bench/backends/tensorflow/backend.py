"""The TensorFlow backend: tf.function + GradientTape step (bench.backends.tensorflow.trainer),
tf.data feeding, tf.distribute or Horovod adapters (bench.backends.tensorflow.distribute), the
fused momentum SGD. Implements bench.backends.base.Backend."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from bench.backends.base import AdapterFactory, Step
from bench.backends.distribution import Distribution, ReplicaDistribution
from bench.backends.tensorflow import distribute
from bench.backends.tensorflow.optimizers import momentum_sgd
from bench.backends.tensorflow.trainer import TensorFlowTrainer
from bench.measure.memory import HostTerms, MemoryTerms, MiB
from bench.measure.probes import DevicePeak, HostPeak, Peak
from bench.measure.timing import Tracer, WaitClock
from bench.procs import gpu_total_bytes

if TYPE_CHECKING:
    import keras

    from bench.config.schema import RunConfig
    from bench.data.source import DataSource

NAME = "tensorflow"
ADAPTERS: dict[str, AdapterFactory] = {
    "single": distribute.Single.from_config,
    "mirrored": distribute.Mirrored.from_config,
    "multiworker": distribute.MultiWorker.from_config,
    "horovod": distribute.Horovod.from_config,
}
# the estimate's terms per mode (bench.measure.memory.HostTerms says what each is): fitted to
# this backend's process peaks, docs/measurements/2026-12-02-cpu-memory-calibration.md
MEMORY: dict[str, MemoryTerms] = {
    "train": MemoryTerms(HostTerms(base=1030 * MiB, per_layer=int(1.50 * MiB), act=1.10, widest=1.95, patches=0.05,
                                   input=2.00, weights=2.5, lrn=16.0), gpu_runtime_bytes=80 * MiB),
    "inference": MemoryTerms(HostTerms(base=1030 * MiB, per_layer=int(0.30 * MiB), act=0.0, widest=3.20, patches=0.05,
                                       input=2.00, weights=1.5), gpu_runtime_bytes=80 * MiB),
}


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


def sgd() -> type:
    """Keras' SGD with TensorFlow's fused momentum update (bench.backends.tensorflow.optimizers)."""
    return momentum_sgd()


def build_step(cfg: "RunConfig", dist: Distribution, source: "DataSource", model: "keras.Model", optimizer: Any, *,
               global_batch: int, data_wait: WaitClock) -> Step:
    """Initial-state broadcast, the compiled step, and the step callable (fixed or fed data)."""
    assert isinstance(dist, ReplicaDistribution), dist  # this backend's ADAPTERS make no other kind
    dist.broadcast_initial_state(model, optimizer)
    trainer = TensorFlowTrainer(model, optimizer, dist, global_batch=global_batch, xla=cfg.xla,
                                track_accuracy=cfg.accuracy_mode, mode=cfg.mode, gradient_sync=cfg.gradient_sync)
    if source.fixed:  # made once, held on the device, reused every step
        fixed = dist.distribute_fixed(source.train_dataset, cfg.batch_size)
        run = lambda: trainer.step(fixed)  # noqa: E731
    else:
        batches = _fed(cfg, dist, source, data_wait)
        run = lambda: trainer.step(next(batches))  # noqa: E731
    return Step(run, trainer, device_sync=_device_sync())


def input_step(cfg: "RunConfig", dist: Distribution, source: "DataSource", *, data_wait: WaitClock) -> Step:
    """The batches the training step would take, taken alone: on CPUs each replica's own tf.data
    iterator (an eager batch is ready when `next` returns), on GPUs the distributed iterator,
    whose copies onto the devices the device sync waits for."""
    assert isinstance(dist, ReplicaDistribution), dist
    batches = _fed(cfg, dist, source, data_wait)

    def run() -> tuple:
        next(batches)
        return 0.0, 0.0
    return Step(run, None, device_sync=_device_sync())


def _fed(cfg: "RunConfig", dist: ReplicaDistribution, source: "DataSource", data_wait: WaitClock) -> Iterator:
    """The per-replica batches a step takes, their waits timed."""
    return data_wait.wrap(iter(dist.distribute(source.train_dataset, cfg.batch_size)))


def _device_sync() -> Callable[[], None] | None:
    """What waits for the device queues: on GPUs a step's work (or a batch's copies) may still be in flight."""
    import tensorflow as tf

    return tf.experimental.sync_devices if gpu_names() else None


def test_batches(source: "DataSource", test_batch: int) -> Iterable:
    return source.test_dataset(test_batch)


def is_oom(e: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(e, (tf.errors.ResourceExhaustedError, MemoryError))


def memory_probe(dist: Distribution) -> Peak:
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


def tracer(logdir: str) -> Tracer:
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
