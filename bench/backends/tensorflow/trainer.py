"""The TensorFlow training step (and evaluation) for every strategy, as the seed course writes
it: tf.function + GradientTape + sparse categorical cross-entropy from logits."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.backends.base import Trainer
from bench.backends.distribution import ReplicaDistribution
from bench.backends.keras_common import training_loss
from models import main_output, output_weights

if TYPE_CHECKING:
    import keras


class TensorFlowTrainer(Trainer):
    """Owns the compiled step and evaluation functions for one model under one distribution."""

    def __init__(self, model: "keras.Model", optimizer, dist: ReplicaDistribution, *, global_batch: int,
                 xla: bool, track_accuracy: bool = True, mode: str = "train", gradient_sync: bool = True):
        import tensorflow as tf

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

    def write_back(self) -> None:
        """Nothing to copy back: the Keras variables are the state."""
