"""The JAX step's layer switches against Keras' own layers, on Keras' JAX backend (a process of its
own: a test process may hold Keras on TensorFlow). Exits 1 with the first disagreement.

- models.maxpool (shifted gradient) against keras.layers.MaxPooling2D: output and gradient, on
  random, integer-valued (many ties) and constant inputs, for each pool the zoo uses.
- models.batchnorm under one_pass(True) against keras.layers.BatchNormalization in training:
  output, gradients of x, gamma and beta, and the moving statistics, from float32 and bfloat16.

    KERAS_BACKEND=jax PYTHONPATH=. python tests/dist/jax_switch_layers.py
"""
from __future__ import annotations

import functools
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

# (pool, stride, padding) of every max-pool in models/ (grep max_pool models/)
ZOO_POOLS = [(2, 1, "same"), (3, 2, "same"), (2, 2, "same"), (3, 1, "same"), (3, 2, "valid"), (2, 2, "valid")]
# float32 BatchNorm: the custom backward sums in another order than autodiff's; half precision:
# one rounding step of the output's type
F32 = {"rtol": 1e-5, "atol": 1e-5}


def traced(fn, *args) -> str:
    import jax

    return str(jax.make_jaxpr(fn)(*args))


def check_max_pools() -> None:
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    from models.maxpool import max_pool_layer, shifted_grad

    rng = np.random.default_rng(0)
    for pool, stride, padding in ZOO_POOLS:
        plain = keras.layers.MaxPooling2D(pool, stride, padding=padding)
        with shifted_grad(True):
            shifted = max_pool_layer()(pool, stride, padding=padding)
        assert shifted.get_config() | {"name": plain.name} == plain.get_config(), (shifted.get_config(), plain.get_config())
        for kind in ("random", "integer", "constant"):
            shape = (2, 9, 9, 3)
            x = {"random": rng.normal(size=shape), "integer": rng.integers(0, 3, size=shape),
                 "constant": np.full(shape, 0.5)}[kind].astype(np.float32)
            # integer cotangents: every sum of them is exact, so the gradients compare exactly
            g = rng.integers(-4, 5, size=plain.compute_output_shape(shape)).astype(np.float32)
            losses = [lambda x, layer=layer: jnp.sum(layer(x) * g) for layer in (plain, shifted)]
            # the switch's path: a custom VJP, and no select_and_scatter in the gradient
            assert ["custom_vjp_call" in traced(f, x) for f in losses] == [False, True]
            assert ["select_and_scatter" in traced(jax.grad(f), x) for f in losses] == [True, False]
            grads = [jax.jit(jax.grad(f))(x) for f in losses]
            np.testing.assert_array_equal(np.asarray(shifted(x)), np.asarray(plain(x)))
            np.testing.assert_array_equal(np.asarray(grads[1]), np.asarray(grads[0]),
                                          err_msg=f"{pool}x{pool}/{stride} {padding}, {kind} input")


def check_batchnorm() -> None:
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    from models.batchnorm import batch_norm_layer, one_pass

    rng = np.random.default_rng(1)
    for dtype, tol in (("float32", F32), ("bfloat16", {"rtol": 2**-7, "atol": 2**-7})):
        shape, c = (8, 5, 5, 6), 6
        plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype)
        with one_pass(True):
            fast = batch_norm_layer()(momentum=0.9, epsilon=1e-3, dtype=dtype)
        weights = [rng.uniform(0.5, 2.0, c), rng.normal(0, 0.5, c), rng.normal(0, 1, c), rng.uniform(0.5, 3, c)]
        for layer in (plain, fast):
            layer.build(shape)
            layer.set_weights([w.astype("float32") for w in weights])
        x = jnp.asarray(rng.normal(1.5, 2.0, shape), dtype)
        dy = jnp.asarray(rng.normal(size=shape), jnp.float32)

        def step(layer, x, gamma, beta):
            trainable = [gamma, beta]
            y, non_trainable = layer.stateless_call(trainable, [v.value for v in layer.non_trainable_variables], x,
                                                    training=True)
            return jnp.sum(y.astype(jnp.float32) * dy), (y, non_trainable)

        results = []
        for layer in (plain, fast):
            loss = functools.partial(step, layer)
            assert ("custom_vjp_call" in traced(loss, x, layer.gamma.value, layer.beta.value)) == (layer is fast)
            grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
            (dx, dgamma, dbeta), (y, stats) = grad(x, layer.gamma.value, layer.beta.value)
            results.append([y, dx, dgamma, dbeta, *stats])
        for what, got, want in zip(("output", "dx", "dgamma", "dbeta", "moving mean", "moving variance"), *results[::-1]):
            np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol,
                                       err_msg=f"BatchNorm {what}, {dtype}")


def main() -> int:
    check_max_pools()
    check_batchnorm()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
