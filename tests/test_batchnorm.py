"""The fused BatchNorm (models.batchnorm) against Keras' own layer on TensorFlow: forward output,
gradients and moving statistics after a training step, in float32 and from half-precision
inputs, eagerly and under XLA.

Tolerances: float32 results agree to 2e-5 relative plus 2e-5 absolute (two summation orders of
the same float32 moments); half-precision outputs to one bfloat16/float16 rounding step of
their magnitude (2^-7 and 2^-10 relative), since both layers compute in float32 and round once."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from models.batchnorm import batch_norm_layer, fused  # noqa: E402

F32 = {"rtol": 2e-5, "atol": 2e-5}
SHAPES = [(2, 3, 3, 4), (8, 5, 5, 3)]  # n = 18: the Bessel factor n/(n-1) is 6% off, far beyond the tolerance


def _pair(shape, seed=0, momentum=0.9, epsilon=1e-3):
    """The fused layer and Keras' own, built with the same (non-trivial) weights."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    a = batch_norm_layer()(momentum=momentum, epsilon=epsilon)
    b = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
    for layer in (a, b):
        layer.build(shape)
    weights = [rng.uniform(0.5, 2.0, c), rng.normal(0, 0.5, c), rng.normal(0, 1, c), rng.uniform(0.5, 3, c)]
    for layer in (a, b):
        layer.set_weights([w.astype("float32") for w in weights])  # gamma, beta, moving mean, moving variance
    x = rng.normal(1.5, 2.0, shape).astype("float32")
    return a, b, x


def _step(layer, x, dy):
    """One training call: the output, and the gradients of sum(y * dy) w.r.t. x, gamma and beta."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]


@pytest.mark.parametrize("shape", SHAPES)
def test_training_step_matches_keras_output_gradients_and_moving_statistics(shape):
    a, b, x = _pair(shape)
    start_var = a.moving_variance.numpy().copy()
    dy = np.random.default_rng(1).normal(size=shape).astype("float32")
    for got, want in zip(_step(a, x, dy), _step(b, x, dy)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **F32)
    np.testing.assert_allclose(a.moving_mean.numpy(), b.moving_mean.numpy(), **F32)
    np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), **F32)
    # the moving variance takes the batch's biased variance, not the kernel's Bessel-corrected one
    n = np.prod(shape[:-1])
    biased = x.reshape(-1, shape[-1]).var(axis=0)
    np.testing.assert_allclose(a.moving_variance.numpy(), 0.9 * start_var + 0.1 * biased, rtol=1e-5)
    assert not np.allclose(a.moving_variance.numpy(), 0.9 * start_var + 0.1 * biased * n / (n - 1), rtol=1e-3)


@pytest.mark.parametrize("shape", SHAPES)
def test_inference_uses_the_moving_statistics_as_keras_does(shape):
    a, b, x = _pair(shape, seed=2, epsilon=1e-5)
    np.testing.assert_allclose(a(x, training=False).numpy(), b(x, training=False).numpy(), **F32)
    a.trainable = b.trainable = False  # a frozen layer normalises with its moving statistics even in training
    np.testing.assert_allclose(a(x, training=True).numpy(), b(x, training=True).numpy(), **F32)


@pytest.mark.parametrize("policy,rtol", [("mixed_bfloat16", 2**-7), ("mixed_float16", 2**-10)])
def test_half_precision_inputs_are_normalised_in_float32(policy, rtol):
    shape = (4, 4, 4, 8)
    a, b, x = _pair(shape, seed=3)
    for layer in (a, b):
        layer.dtype_policy = keras.DTypePolicy(policy)
    half = tf.cast(x, keras.DTypePolicy(policy).compute_dtype)
    ya, yb = a(half, training=True), b(half, training=True)
    assert ya.dtype == yb.dtype == half.dtype
    np.testing.assert_allclose(tf.cast(ya, tf.float32).numpy(), tf.cast(yb, tf.float32).numpy(),
                               rtol=rtol, atol=rtol * float(tf.reduce_max(tf.abs(tf.cast(yb, tf.float32)))))
    np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), rtol=1e-4)
    assert a.moving_variance.dtype == "float32"


def test_under_xla_the_fused_step_matches_keras():
    shape = (4, 6, 6, 5)
    a, b, x = _pair(shape, seed=4)
    dy = np.random.default_rng(5).normal(size=shape).astype("float32")
    for got, want in zip(tf.function(_step, jit_compile=True)(a, x, dy), _step(b, x, dy)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **F32)
    np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), **F32)


def _op_types(model, x) -> set[str]:
    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    return {op.type for op in train.get_concrete_function(x).graph.get_operations()}


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "googlenet", "densenet121"])
def test_every_batch_norm_model_runs_the_fused_kernel_on_tensorflow(name):
    import models

    x = tf.zeros((2, 32, 32, 3))
    model = models.build_model(name, num_classes=10, width=0.0625)
    ops = _op_types(model, x)
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= ops
    with fused(False):  # the same model on Keras' ops has neither
        plain = models.build_model(name, num_classes=10, width=0.0625)
    assert not {"FusedBatchNormV3", "FusedBatchNormGradV3"} & _op_types(plain, x)
    assert [w.shape for w in plain.weights] == [w.shape for w in model.weights]  # the same variables


def test_sgd_momentum_is_one_fused_op_per_variable_with_keras_own_results():
    """bench.train's SGD runs ResourceApplyKerasMomentum on TensorFlow: after 5 steps the
    weights equal Keras' SGD's exactly (the same formula in one op)."""
    from bench.backends.tensorflow.optimizers import momentum_sgd

    def run(cls):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        opt = cls(learning_rate=0.1, momentum=0.9)
        x = tf.random.stateless_normal((4, 8), seed=(1, 2))

        @tf.function
        def step():
            with tf.GradientTape() as t:
                loss = tf.reduce_sum(m(x) ** 2)
            opt.apply_gradients(zip(t.gradient(loss, m.trainable_variables), m.trainable_variables))
            return loss
        for _ in range(5):
            step()
        return [w.numpy() for w in m.weights], {o.type for o in step.get_concrete_function().graph.get_operations()}

    fused_w, fused_ops = run(momentum_sgd())
    keras_w, keras_ops = run(keras.optimizers.SGD)
    for a, b in zip(fused_w, keras_w):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert "ResourceApplyKerasMomentum" in fused_ops and "ResourceApplyKerasMomentum" not in keras_ops
