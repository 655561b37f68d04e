"""BatchNorm with Keras' semantics that runs TensorFlow's fused kernel on TensorFlow.

Keras 3's BatchNormalization on TensorFlow computes the moments and applies
`tf.nn.batch_normalization` as separate ops; Keras 2 and tf_cnn_benchmarks used the fused
kernel (FusedBatchNormV3), which was 10-20% of a ResNet step on this CPU. This layer keeps
every bit of Keras' behaviour that the models use: momentum and epsilon, moving statistics
from the batch's *biased* variance (the fused kernel returns the Bessel-corrected one, which is
corrected back here), float16/bfloat16 inputs computed in float32, and the same variables, so
weights move between the two freely. Anything the fused kernel does not cover (JAX, masks,
renorm, synchronized statistics, an axis other than the channels of a 4-D NHWC tensor) goes to
Keras' own call; on JAX, XLA fuses Keras' ops anyway.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

FUSED_MIN_EPSILON = 1.001e-5  # the fused kernel's (cuDNN's) lower bound
_state = {"fused": True}


@contextlib.contextmanager
def fused(enabled: bool) -> Iterator[None]:
    """Layers made inside this block use the fused kernel (True, the default) or Keras' own ops
    (False): for side-by-side benchmarks (bench/lab/bn_compare.py) and equivalence tests."""
    before, _state["fused"] = _state["fused"], enabled
    try:
        yield
    finally:
        _state["fused"] = before


@functools.cache
def batch_norm_layer() -> type:
    """The layer class, defined on first use so that importing the zoo needs no Keras."""
    import keras

    @keras.saving.register_keras_serializable("cnnbench")
    class BatchNorm(keras.layers.BatchNormalization):
        """keras.layers.BatchNormalization; on TensorFlow, TensorFlow's fused kernel."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.use_fused = _state["fused"]

        def _fusable(self, inputs: Any, mask: Any) -> bool:
            axis = self.axis if isinstance(self.axis, int) else None
            return (self.use_fused and keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                    and not self.synchronized and len(inputs.shape) == 4 and axis in (-1, 3)
                    and self.epsilon >= FUSED_MIN_EPSILON)

        def call(self, inputs, training=None, mask=None):
            if not self._fusable(inputs, mask):
                return super().call(inputs, training=training, mask=mask)
            return _fused_call(self, inputs, bool(training and self.trainable))

    return BatchNorm


def _fused_call(layer: Any, inputs: Any, training: bool) -> Any:
    """Keras' BatchNormalization.call through tf.raw_ops.FusedBatchNormV3 (NHWC)."""
    import tensorflow as tf

    x = tf.cast(inputs, tf.float32)  # as Keras: float16/bfloat16 inputs are normalised in float32
    channels = x.shape[-1]
    gamma = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels], tf.float32)
    beta = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels], tf.float32)
    moving_mean = tf.cast(layer.moving_mean, tf.float32)
    moving_variance = tf.cast(layer.moving_variance, tf.float32)
    if training:
        empty = tf.constant([], tf.float32)
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=layer.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # the kernel's variance is Bessel-corrected (n / (n - 1)); Keras keeps the biased one
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * tf.maximum(n - 1.0, 0.0) / n
        m = layer.momentum
        layer.moving_mean.assign(tf.cast(moving_mean * m + tf.stop_gradient(mean) * (1.0 - m),
                                         layer.moving_mean.dtype))
        layer.moving_variance.assign(tf.cast(moving_variance * m + tf.stop_gradient(variance) * (1.0 - m),
                                             layer.moving_variance.dtype))
    else:
        y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance, epsilon=layer.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
    return tf.cast(y, layer.compute_dtype)
