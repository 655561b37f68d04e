"""BatchNorm with Keras' semantics that runs TensorFlow's fused kernel on TensorFlow.

Keras 3's BatchNormalization on TensorFlow computes the moments and applies
`tf.nn.batch_normalization` as separate ops; Keras 2 and tf_cnn_benchmarks used the fused
kernel (FusedBatchNormV3), which was 10-20% of a ResNet step on this CPU. This layer keeps
every bit of Keras' behaviour that the models use: momentum and epsilon, moving statistics
from the batch's *biased* variance (the fused kernel returns the Bessel-corrected one, which is
corrected back here), float16/bfloat16 inputs computed in float32, and the same variables, so
weights move between the two freely. Anything the fused kernel does not cover (JAX, masks,
renorm, synchronized statistics, an axis other than the channels of a 4-D NHWC tensor) goes to
Keras' own call.

On JAX the layer can instead (`one_pass(True)`, the run's --jax-batchnorm onepass) train through
a custom VJP: the same forward ops as Keras' (jnp.mean, jnp.var, then Keras' affine form), and a
backward that takes sum(dy) and sum(dy * xhat) in one variadic reduction and forms dx, dgamma and
dbeta from them, where autodiff of Keras' ops differentiates through the mean and the variance
separately (more reductions over the activation). The batch statistics leave it under
stop_gradient: they feed only the moving averages, which no loss differentiates.
"""
from __future__ import annotations

import functools
from typing import Any, ContextManager

from .switches import set_while

FUSED_MIN_EPSILON = 1.001e-5  # the fused kernel's (cuDNN's) lower bound
_state = {"fused": True, "one_pass": False}


def fused(enabled: bool) -> ContextManager[None]:
    """Layers made inside this block use the fused kernel (True, the default) or Keras' own ops
    (False): for side-by-side benchmarks (bench/lab/bn_compare.py) and equivalence tests."""
    return set_while(_state, "fused", enabled)


def one_pass(enabled: bool) -> ContextManager[None]:
    """Layers made inside this block train through the one-reduction custom VJP on JAX (True) or
    through autodiff of Keras' own ops (False, the default)."""
    return set_while(_state, "one_pass", enabled)


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
            self.use_one_pass = _state["one_pass"]

        def _fusable(self, inputs: Any, mask: Any) -> bool:
            axis = self.axis if isinstance(self.axis, int) else None
            return (self.use_fused and keras.backend.backend() == "tensorflow" and self._plain_4d(inputs, mask)
                    and self.epsilon >= FUSED_MIN_EPSILON)

        def _plain_4d(self, inputs: Any, mask: Any) -> bool:
            axis = self.axis if isinstance(self.axis, int) else None
            return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                    and axis in (-1, 3))

        def call(self, inputs, training=None, mask=None):
            if (self.use_one_pass and keras.backend.backend() == "jax" and training and self.trainable
                    and self._plain_4d(inputs, mask)):
                return _one_pass_call(self, inputs)
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


def _one_pass_call(layer: Any, inputs: Any) -> Any:
    """Keras' BatchNormalization.call in training (JAX), through `_one_pass_op`'s custom VJP."""
    import jax
    import jax.numpy as jnp

    x = inputs.astype(jnp.float32)  # as Keras: float16/bfloat16 inputs are normalised in float32
    channels = x.shape[-1]
    gamma = jnp.asarray(layer.gamma.value, jnp.float32) if layer.scale else jnp.ones((channels,), jnp.float32)
    beta = jnp.asarray(layer.beta.value, jnp.float32) if layer.center else jnp.zeros((channels,), jnp.float32)
    y, mean, variance = _one_pass_op(float(layer.epsilon))(x, gamma, beta)
    mean, variance = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(variance)
    m = layer.momentum
    moving_mean = jnp.asarray(layer.moving_mean.value, jnp.float32)
    moving_variance = jnp.asarray(layer.moving_variance.value, jnp.float32)
    layer.moving_mean.assign((moving_mean * m + mean * (1.0 - m)).astype(layer.moving_mean.dtype))
    layer.moving_variance.assign((moving_variance * m + variance * (1.0 - m)).astype(layer.moving_variance.dtype))
    return y.astype(layer.compute_dtype)


@functools.cache
def _one_pass_op(epsilon: float) -> Any:
    """(x, gamma, beta) -> (y, batch mean, batch biased variance), channels last, float32."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def forward(x, gamma, beta):  # Keras' ops (keras.src.backend.jax.nn moments, batch_normalization)
        axes = tuple(range(x.ndim - 1))
        mean, variance = jnp.mean(x, axes), jnp.var(x, axis=axes)
        inv = lax.rsqrt(variance + epsilon) * gamma
        return x * inv + (-mean * inv + beta), mean, variance

    @jax.custom_vjp
    def op(x, gamma, beta):
        return forward(x, gamma, beta)

    def fwd(x, gamma, beta):
        y, mean, variance = forward(x, gamma, beta)
        return (y, mean, variance), (x, gamma, mean, variance)

    def bwd(res, cotangents):
        x, gamma, mean, variance = res
        dy = cotangents[0]  # the statistics' cotangents are zero: the caller stops their gradient
        axes = tuple(range(x.ndim - 1))
        n = x.size // x.shape[-1]
        rstd = lax.rsqrt(variance + epsilon)
        xhat = (x - mean) * rstd
        dbeta, dgamma = lax.reduce((dy, dy * xhat), (jnp.float32(0), jnp.float32(0)),
                                   lambda a, b: (a[0] + b[0], a[1] + b[1]), axes)
        dx = (gamma * rstd) * (dy - dbeta / n - xhat * (dgamma / n))
        return dx, dgamma, dbeta

    op.defvjp(fwd, bwd)
    return op
