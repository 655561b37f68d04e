"""MaxPooling2D whose gradient on JAX is built from shifted comparisons, not `select_and_scatter`.

JAX differentiates Keras' max-pool (`lax.reduce_window` with `max`) into XLA's
`select_and_scatter`, which GPUs run as one slow scatter: on an H200 the CIFAR ResNet stem's
2x2/1 pool's gradient was the most expensive single op of a resnet18 step (11% of it, 4x its
own forward). This layer keeps Keras' forward and gives exactly the gradient autodiff gives, as
one masked add per window offset (k*k of them), which XLA fuses into elementwise loops.

Tie rule (what `select_and_scatter` with JAX's `ge` selector does, checked in
tests/test_maxpool.py): of the elements of a window equal to its maximum, the *first* in the
window's row-major order (top row first, left first) gets the window's whole gradient; the
others get none from that window. Padding ('same') is -inf and never selected. Here: the window
offsets are visited in that same order, each output's gradient goes to the first offset whose
element equals the output, and a mask of windows already served keeps later ties out.

Anything else (TensorFlow, channels_first, the switch off) goes to Keras' own call; the layer has
the same config and no variables, so weights and saved models move between the two freely.
"""
from __future__ import annotations

import functools
from typing import Any, ContextManager

from .switches import set_while

_state = {"shifted": False}


def shifted_grad(enabled: bool) -> ContextManager[None]:
    """Max-pool layers made inside this block take the shifted-comparison gradient on JAX (True)
    or Keras' own (False, the default): the run's --jax-maxpool (models.common.step_switches) and tests."""
    return set_while(_state, "shifted", enabled)


@functools.cache
def max_pool_layer() -> type:
    """The layer class, defined on first use so that importing the zoo needs no Keras."""
    import keras

    @keras.saving.register_keras_serializable("cnnbench")
    class MaxPooling2D(keras.layers.MaxPooling2D):  # Keras' name: layer tables and summaries read the same
        """keras.layers.MaxPooling2D; on JAX, optionally with the shifted-comparison gradient."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.use_shifted = _state["shifted"]

        def call(self, inputs):
            if not (self.use_shifted and keras.backend.backend() == "jax" and self.data_format == "channels_last"):
                return super().call(inputs)
            return max_pool_shifted(inputs, tuple(self.pool_size), tuple(self.strides), self.padding)

    return MaxPooling2D


def max_pool_shifted(x: Any, pool: tuple[int, int], strides: tuple[int, int], padding: str) -> Any:
    """Keras' max-pool of NHWC `x` (JAX), differentiated by shifted comparisons (module docstring)."""
    return _shifted_op(pool, strides, padding.upper())(x)


@functools.cache
def _shifted_op(pool: tuple[int, int], strides: tuple[int, int], padding: str) -> Any:
    import jax
    import jax.numpy as jnp
    from jax import lax

    window, step = (1, *pool, 1), (1, *strides, 1)

    def forward(x):  # what keras.src.backend.jax.nn.max_pool computes
        return lax.reduce_window(x, -jnp.inf, lax.max, window, step, padding)

    @jax.custom_vjp
    def pool_op(x):
        return forward(x)

    def fwd(x):
        y = forward(x)
        return y, (x, y)

    def bwd(res, g):
        x, y = res
        (pt, pb), (pl, pr) = lax.padtype_to_pads(x.shape[1:3], pool, strides, padding)
        xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
        n, ho, wo, c = y.shape
        hp, wp = xp.shape[1], xp.shape[2]
        zero = jnp.zeros((), g.dtype)
        served = jnp.zeros(y.shape, bool)
        dxp = jnp.zeros(xp.shape, g.dtype)
        for di in range(pool[0]):  # row-major: the tie rule's order
            for dj in range(pool[1]):
                # the element at offset (di, dj) of every window
                xs = lax.slice(xp, (0, di, dj, 0), (n, di + (ho - 1) * strides[0] + 1, dj + (wo - 1) * strides[1] + 1, c),
                               (1, *strides, 1))
                take = (xs == y) & ~served
                served = served | take
                # back to where that element sits: strides become interior padding
                part = jnp.where(take, g, zero)
                dxp = dxp + lax.pad(part, zero, ((0, 0, 0), (di, hp - di - (ho - 1) * strides[0] - 1, strides[0] - 1),
                                                 (dj, wp - dj - (wo - 1) * strides[1] - 1, strides[1] - 1), (0, 0, 0)))
        return (dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2], :],)

    pool_op.defvjp(fwd, bwd)
    return pool_op
