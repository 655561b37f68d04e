"""The training step on Keras' JAX backend: one jitted pure function, as Keras' own `fit`
builds it (`model.stateless_call`, `jax.value_and_grad`, `optimizer.stateless_apply`), over a
mesh that shards the batch and replicates the state (bench.backends.jax.mesh). XLA is always on.

Imported only under --backend jax: nothing here imports TensorFlow or Horovod.
"""
from __future__ import annotations

import math
import queue
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from bench.backends.base import Trainer
from bench.backends.distribution import MeshDistribution
from bench.backends.keras_common import training_loss
from bench.data.source import synthetic_arrays
from models import main_output, output_weights

if TYPE_CHECKING:
    import keras

    from bench.data.source import DataSource
    from bench.measure.timing import WaitClock


class JaxTrainer(Trainer):
    """Owns the model's state as JAX arrays and the compiled step and evaluation."""

    def __init__(self, model: "keras.Model", optimizer, dist: MeshDistribution, *, global_batch: int,
                 track_accuracy: bool = True, preprocess: Callable = lambda images: images, mode: str = "train",
                 gradient_sync: bool = True):
        import jax
        import jax.numpy as jnp
        import keras

        self.model, self.optimizer, self.dist, self.mode = model, optimizer, dist, mode
        weights = output_weights(model)
        self.state = dist.replicate(([v.value for v in model.trainable_variables],
                                     [v.value for v in model.non_trainable_variables],
                                     [v.value for v in (optimizer.variables if optimizer else [])]))

        def evaluate(trainable, non_trainable, images, labels):
            outputs, _ = model.stateless_call(trainable, non_trainable, preprocess(images), training=False)
            logits, labels = main_output(outputs), labels.astype(jnp.int32)
            k = min(5, logits.shape[-1])
            top = jax.lax.top_k(logits.astype(jnp.float32), k)[1]
            top1 = jnp.sum(top[:, 0] == labels)
            top5 = jnp.sum(jnp.any(top == labels[:, None], axis=-1))
            return top1, top5

        self._eval = jax.jit(evaluate)
        if mode == "inference":
            def infer(state, images):
                trainable, non_trainable, _ = state
                outputs, _ = model.stateless_call(trainable, non_trainable, preprocess(images), training=False)
                logits = main_output(outputs)
                # per image, left sharded along the batch: summing here would be a collective
                return jnp.sum(logits.astype(jnp.float32), axis=-1)

            self._infer = jax.jit(infer, out_shardings=dist.batch_sharded)
            return
        scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def loss_fn(trainable, non_trainable, opt_vars, images, labels):
            # the host sends uint8 pixels; scaling them here lets XLA fuse it into the first layer
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, preprocess(images), training=True)
            per_example, logits = training_loss(outputs, labels, weights)
            # Scaled by the global batch, as on TensorFlow: the sum over replicas is the global mean.
            loss = jnp.sum(per_example) / global_batch
            scaled = loss
            if scales_loss:  # the dynamic scale lives in the optimizer's (stateless) variables
                with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, opt_vars))):
                    scaled = optimizer.scale_loss(loss)
            return scaled, (loss, logits, non_trainable)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(state, images, labels):
            trainable, non_trainable, opt_vars = state
            (_, (loss, logits, non_trainable)), grads = grad_fn(trainable, non_trainable, opt_vars, images, labels)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            if track_accuracy:
                correct = jnp.sum(jnp.argmax(logits, -1) == labels.astype(jnp.int32)).astype(jnp.float32)
            else:  # throughput runs time the bare training step, no metric work
                correct = jnp.zeros((), jnp.float32)
            return (trainable, non_trainable, opt_vars), loss, correct

        # State buffers are donated: the step updates them in place, so parameters are not held twice.
        if gradient_sync:
            self._step = jax.jit(step, donate_argnums=0, out_shardings=dist.replicated)
            return
        # --no-gradient-sync: under shard_map each device steps on its own shard alone, so XLA
        # places no all-reduce (of gradients, nor of BatchNorm's statistics, which then come from
        # the device's own shard). The state stays replicated in name while each device's copy
        # drifts from the others, unchecked; only the loss and the count are summed, as when synced.
        from jax.sharding import PartitionSpec as P

        axis = dist.batch_axis

        def own_step(state, images, labels):
            state, loss, correct = step(state, images, labels)
            return state, jax.lax.psum(loss, axis), jax.lax.psum(correct, axis)

        self._step = jax.jit(jax.shard_map(own_step, mesh=dist.mesh, in_specs=(P(), P(axis), P(axis)),
                                           out_specs=(P(), P(), P()), check_vma=False), donate_argnums=0)

    def step(self, batch: tuple) -> tuple:
        """One synchronous data-parallel step on a sharded batch; returns (loss, #correct). In
        inference mode, one forward pass: (this process's sum of the outputs, 0), read from its
        own shards, so fetching it waits for the batch without a collective."""
        if self.mode == "inference":
            out = self._infer(self.state, batch[0])
            return float(sum(np.asarray(shard.data, dtype=np.float64).sum() for shard in out.addressable_shards)), 0.0
        self.state, loss, correct = self._step(self.state, *batch)
        return loss, correct

    def sync(self) -> None:
        """Wait until every buffer of the state is computed."""
        import jax
        jax.block_until_ready(self.state)

    def local_state(self) -> tuple:
        """This process's copy of the (replicated) state, on one local device."""
        import jax
        return jax.tree.map(lambda a: a.addressable_shards[0].data, self.state)

    def evaluate(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        """Top-1 and top-5 accuracy of this process's weights on `batches` (BN in inference mode)."""
        import jax

        trainable, non_trainable, _ = self.local_state()
        device = self.dist.local_devices[0]
        top1 = top5 = n = 0.0
        for images, labels in batches:
            a, b = self._eval(trainable, non_trainable, jax.device_put(images, device), jax.device_put(labels, device))
            top1, top5, n = top1 + float(a), top5 + float(b), n + len(labels)
        return (top1 / n, top5 / n) if n else (math.nan, math.nan)

    def write_back(self) -> None:
        """Copy the state into the Keras variables (before saving weights)."""
        trainable, non_trainable, opt_vars = self.local_state()
        for variables, values in ((self.model.trainable_variables, trainable),
                                  (self.model.non_trainable_variables, non_trainable),
                                  (self.optimizer.variables, opt_vars)):
            for v, value in zip(variables, values):
                v.assign(value)


# ---- feeding the mesh -------------------------------------------------------------------------
def replica_ids(dist: MeshDistribution) -> list[int]:
    """The global indices of this process's replicas, in device order."""
    return [dist.rank * dist.local_replicas + i for i in range(dist.local_replicas)]


def fixed_batch(dist: MeshDistribution, source: "DataSource", per_replica_batch: int) -> tuple:
    """Synthetic data: each replica's fixed batch (the same numpy arrays TensorFlow's replicas
    get for this seed), placed on the devices once."""

    parts = [synthetic_arrays(per_replica_batch, source.image_size, source.num_classes, source.seed * 1000 + r)
             for r in replica_ids(dist)]
    return dist.shard(tuple(np.concatenate(xs) for xs in zip(*parts)))


def prefetched_batches(dist: MeshDistribution, source: "DataSource", per_replica_batch: int, depth: int = 2
                       ) -> Iterator[tuple]:
    """Real data: each replica reads its own shard from the host pipeline; a background thread
    assembles this process's part of every global batch and puts it on the devices, `depth`
    batches ahead (double-buffered), so the step never waits on the host when it keeps up."""
    shards = [source.host_batches(dist.num_replicas, r, per_replica_batch) for r in replica_ids(dist)]
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                parts = [next(s) for s in shards]
                ready.put(dist.shard(tuple(np.concatenate(xs) for xs in zip(*parts))))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            ready.put(e)

    threading.Thread(target=produce, daemon=True, name="cnnbench-prefetch").start()

    def batches() -> Iterator[tuple]:
        try:
            while True:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
    return batches()


def make_step(trainer: JaxTrainer, dist: MeshDistribution, source: "DataSource", per_replica_batch: int,
              data_wait: "WaitClock | None" = None) -> Callable[[], tuple]:
    """The step callable the harness times (`data_wait` times its waits for real batches)."""
    if source.fixed:
        batch = fixed_batch(dist, source, per_replica_batch)
        return lambda: trainer.step(batch)
    feed = _fed(dist, source, per_replica_batch, data_wait)
    return lambda: trainer.step(next(feed))


def make_input_step(dist: MeshDistribution, source: "DataSource", per_replica_batch: int,
                    data_wait: "WaitClock | None" = None) -> Callable[[], tuple]:
    """--mode input: the next batch the step would take, waited for until it is on the devices."""
    import jax

    feed = _fed(dist, source, per_replica_batch, data_wait)

    def run() -> tuple:
        jax.block_until_ready(next(feed))
        return 0.0, 0.0
    return run


def _fed(dist: MeshDistribution, source: "DataSource", per_replica_batch: int,
         data_wait: "WaitClock | None") -> Iterator[tuple]:
    """The prefetched device batches a step takes, their waits timed where `data_wait` is given."""
    feed = prefetched_batches(dist, source, per_replica_batch)
    return data_wait.wrap(feed) if data_wait is not None else feed


def versions() -> dict[str, Any]:
    """The JAX stack and the device kind, for the row."""
    import jax

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return ""
    return {"jax_version": jax.__version__, "jaxlib_version": version("jaxlib"),
            "device_kind": jax.local_devices()[0].device_kind}
