"""The TensorFlow training step (and evaluation) for every strategy, as the seed course writes
it: tf.function + GradientTape + sparse categorical cross-entropy from logits. The precision
policy, learning-rate schedule and optimizer here are backend-neutral (bench.train_jax uses them)."""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras
    from launch.base import Distribution
    from .config import RunConfig


def apply_precision_policy(precision: str) -> None:
    """Set Keras' global dtype policy before the model is built."""
    import keras

    keras.mixed_precision.set_global_policy(
        {"fp32": "float32", "mixed_bf16": "mixed_bfloat16", "mixed_fp16": "mixed_float16"}[precision])


def training_loss(outputs, labels, weights: tuple[float, ...]):
    """(per-example loss, the main head's float32 logits): sparse categorical cross-entropy from
    logits of each output, weighted (auxiliary heads, e.g. 0.3 each), in Keras ops for either backend."""
    import keras
    from keras import ops

    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    logits = [ops.cast(o, "float32") for o in outs]
    per_example = sum(w * keras.losses.sparse_categorical_crossentropy(labels, l, from_logits=True)
                      for w, l in zip(weights, logits))
    return per_example, logits[0]


def make_learning_rate(cfg: "RunConfig", num_replicas: int, steps_per_epoch: int | None):
    """cfg.lr, or with --scale-lr: lr x replicas, reached by a linear warmup (Goyal et al.)."""
    import keras

    if not cfg.scale_lr or num_replicas == 1:
        return cfg.lr
    target = cfg.lr * num_replicas
    if cfg.lr_warmup_epochs is not None and steps_per_epoch:
        warmup = max(1, int(cfg.lr_warmup_epochs * steps_per_epoch))
    elif steps_per_epoch:
        warmup = 5 * steps_per_epoch
    else:  # throughput mode: warm up over the first 10% of the run
        warmup = max(1, (cfg.warmup_steps + cfg.steps) // 10)

    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            from keras import ops  # backend-neutral: the schedule runs inside either backend's step
            frac = ops.minimum(1.0, ops.cast(step + 1, "float32") / warmup)
            return cfg.lr + (target - cfg.lr) * frac

        def get_config(self):
            return {"base": cfg.lr, "target": target, "warmup_steps": warmup}

    return LinearWarmup()


@functools.cache
def momentum_sgd() -> type:
    """Keras' SGD whose momentum update, on TensorFlow, is one fused ResourceApplyKerasMomentum op
    per variable (accum = momentum * accum - lr * grad; var += accum: Keras' own formula), where
    Keras 3 runs five element-wise ops that each read and write the whole variable (as the
    tf_cnn_benchmarks peer's ApplyMomentum does not). Only for plain variables: under a
    tf.distribute strategy's mirrored variables, and on JAX, it is Keras' own update."""
    import keras

    class MomentumSGD(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            if keras.backend.backend() != "tensorflow" or self.momentum == 0:  # under JAX, no TensorFlow
                return super().update_step(gradient, variable, learning_rate)
            import tensorflow as tf

            accum = self.momentums[self._get_variable_index(variable)].value
            if isinstance(gradient, tf.IndexedSlices) or not _plain(variable) or not _plain(accum):
                return super().update_step(gradient, variable, learning_rate)
            var = variable.value if isinstance(variable, keras.Variable) else variable
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=var.handle, accum=accum.handle, lr=tf.cast(learning_rate, var.dtype),
                grad=tf.cast(gradient, var.dtype), momentum=tf.cast(self.momentum, var.dtype),
                use_nesterov=bool(self.nesterov))

    return MomentumSGD


def _plain(v) -> bool:
    """A single-device TensorFlow resource variable (not a tf.distribute one)."""
    import keras
    import tensorflow as tf

    v = v.value if isinstance(v, keras.Variable) else v
    return isinstance(v, tf.Variable) and not isinstance(v, tf.distribute.DistributedValues) and hasattr(v, "handle")


def make_optimizer(cfg: "RunConfig", num_replicas: int = 1, steps_per_epoch: int | None = None):
    """Adam (default 1e-3) or SGD with momentum; weight decay via Keras' decoupled decay."""
    import keras

    lr = make_learning_rate(cfg, num_replicas, steps_per_epoch)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    else:
        opt = momentum_sgd()(learning_rate=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.precision == "mixed_fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


class Trainer:
    """Owns the compiled step and evaluation functions for one model under one distribution."""

    def __init__(self, model: "keras.Model", optimizer, dist: "Distribution", *, global_batch: int,
                 xla: bool, track_accuracy: bool = True, mode: str = "train", gradient_sync: bool = True):
        import tensorflow as tf

        from models import main_output, output_weights

        self.model, self.optimizer, self.dist = model, optimizer, dist
        self.global_batch = global_batch
        variables = model.trainable_variables
        weights = output_weights(model)

        def replica_eval(images, labels):
            logits = tf.cast(main_output(model(images, training=False)), tf.float32)
            labels = tf.cast(labels, tf.int32)
            k5 = min(5, logits.shape[-1])
            top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
            top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k5), tf.float32))
            return top1, top5, tf.cast(tf.shape(labels)[0], tf.float32)

        self._eval = tf.function(replica_eval, jit_compile=False)
        if mode == "inference":
            def replica_infer(images, labels):
                # The outputs' sum: fetching it waits for the batch, and a non-finite one shows a broken model.
                out = main_output(model(images, training=False))
                return tf.reduce_sum(tf.cast(out, tf.float32)), tf.constant(0.0)

            compiled_infer = tf.function(replica_infer, jit_compile=xla)
            # no collective: each rank's batches are its own, and the harness gathers the timings
            self._step = tf.function(lambda images, labels: dist.run_local(compiled_infer, (images, labels)))
            return

        def forward_backward(images, labels):
            with tf.GradientTape() as tape:
                per_example, logits = training_loss(model(images, training=True), labels, weights)
                # Scaled by the *global* batch: summing over replicas then gives the global mean.
                loss = tf.reduce_sum(per_example) / global_batch
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            if track_accuracy:
                correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                         tf.cast(labels, tf.int32)), tf.float32))
            else:  # throughput runs time the bare training step, no metric work
                correct = tf.constant(0.0)
            return loss, correct, grads

        # Like Keras' own trainer, XLA compiles the whole per-replica step (below) - unless the
        # adapter's all-reduce cannot live inside XLA: then only forward and backward are.
        split_xla = xla and not dist.jit_collectives
        fb = tf.function(forward_backward, jit_compile=True) if split_xla else forward_backward

        if not gradient_sync:  # the diagnostic run: each replica applies its own gradients
            dist.skip_gradient_sync(optimizer)

        def replica_step(images, labels):
            loss, correct, grads = fb(images, labels)
            optimizer.apply_gradients(zip(dist.allreduce_gradients(grads) if gradient_sync else grads, variables))
            return loss, correct

        compiled_step = tf.function(replica_step, jit_compile=xla and not split_xla)

        def distributed_step(images, labels):
            return dist.run(compiled_step, (images, labels))

        self._step = tf.function(distributed_step)

    def step(self, batch) -> tuple:
        """One synchronous-data-parallel training step; returns (global mean loss, #correct). In
        inference mode, one forward pass on every local replica: (sum of the outputs, 0)."""
        images, labels = batch
        return self._step(images, labels)

    def evaluate(self, dataset) -> tuple[float, float]:
        """Top-1 and top-5 accuracy of this replica's weights on `dataset` (BN in inference mode)."""
        top1 = top5 = n = 0.0
        for images, labels in dataset:
            a, b, c = self._eval(images, labels)
            top1, top5, n = top1 + float(a), top5 + float(b), n + float(c)
        return (top1 / n, top5 / n) if n else (math.nan, math.nan)
