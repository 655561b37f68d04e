"""Small helpers and layers shared by the model families."""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

from .batchnorm import batch_norm_layer, one_pass
from .maxpool import max_pool_layer, shifted_grad
from .shapes import conv_output_size

# Moving-statistics momentum of every BatchNorm layer: 0.9 (PyTorch's 0.1) rather than Keras'
# 0.99, so that short benchmark runs evaluate with statistics that have caught up with training
# (with 0.99, 4 epochs of digits left resnet18 at 16% test top-1; the init still weighed 17%).
BN_MOMENTUM = 0.9
FORMS = ("auto", "cifar", "imagenet")


class ModelShapeError(ValueError):
    """The input is too small for the model's form: some layer's window no longer fits."""


def output_weights(model: Any) -> tuple[float, ...]:
    """Each output's weight in the training loss; the first output is the main head (a model with
    auxiliary heads, such as googlenet_aux, sets `output_loss_weights`)."""
    return tuple(getattr(model, "output_loss_weights", (1.0,) * len(model.outputs)))


def main_output(outputs: Any) -> Any:
    """The main head's output of a model call (the only one, or the first of several)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def scale_channels(channels: int, width: float) -> int:
    """Scale a channel (or unit) count by the width multiplier: rounded, at least 1."""
    return max(1, int(round(channels * width)))


def is_small_input(input_shape: tuple[int, int, int]) -> bool:
    """CIFAR-sized inputs get the course's CIFAR head/stem; larger ones get the paper's."""
    return min(input_shape[0], input_shape[1]) < 64


def resolve_variant(value: str, input_shape: tuple[int, int, int], what: str) -> str:
    """'auto' -> 'cifar' for small inputs, else 'imagenet'; validates explicit choices."""
    if value == "auto":
        return "cifar" if is_small_input(input_shape) else "imagenet"
    if value not in ("cifar", "imagenet"):
        raise ValueError(f"{what} must be 'auto', 'cifar' or 'imagenet'. Received: {what}={value!r}")
    return value


def check_window(x: Any, kernel: int, stride: int, padding: str, layer: str, model: str, form: str) -> None:
    """ModelShapeError naming `layer` if its window does not fit the feature map `x` (NHWC)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    try:
        conv_output_size(min(h, w), kernel, stride, padding)
    except ValueError:
        where = f"form={form!r}" if form != "auto" else "this model"
        raise ModelShapeError(f"{model}: the feature map vanishes at {layer}: its {kernel}x{kernel} window does "
                              f"not fit the {h}x{w} map there; the input is too small for {where}") from None


def conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True, padding: str = "same"):
    """Conv (no bias) -> BatchNorm -> ReLU: ResNet's and GoogLeNet's basic unit."""
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = bn_layer(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def bn_layer(name: str) -> Any:
    """Every model's BatchNorm layer: Keras' semantics, TensorFlow's fused kernel on TensorFlow
    (models.batchnorm)."""
    return batch_norm_layer()(momentum=BN_MOMENTUM, name=name)


def max_pool(pool: int, stride: int | None = None, padding: str = "valid", name: str | None = None) -> Any:
    """Every model's max-pool: keras.layers.MaxPooling2D, with the shifted-comparison gradient on
    JAX where `step_switches` asks for it (models.maxpool)."""
    return max_pool_layer()(pool, stride, padding=padding, name=name)


@contextlib.contextmanager
def step_switches(*, shifted_maxpool: bool = False, one_pass_batchnorm: bool = False) -> Iterator[None]:
    """Models built inside this block take the JAX step's switches (bench.config.schema.JAX_SWITCHES):
    max-pools with the shifted-comparison gradient, BatchNorm with the one-reduction backward.
    Both are the plain layers on TensorFlow."""
    with shifted_grad(shifted_maxpool), one_pass(one_pass_batchnorm):
        yield


@functools.cache
def local_response_norm_layer() -> type:
    """The LRN layer class (backend-neutral Keras ops), defined on first use so that importing
    the zoo needs no Keras."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable("cnnbench")
    class LocalResponseNorm(keras.layers.Layer):
        """Krizhevsky et al.'s LRN across channels: x / (bias + alpha * sum of x^2 over the 2r+1
        neighbouring channels)^beta, zero beyond the edges; n=5, k=2, alpha=1e-4, beta=0.75 as in
        AlexNet and VGG A-LRN. alpha is not divided by n, as in the paper and tf.nn's LRN."""

        def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4,
                     beta: float = 0.75, **kwargs):
            super().__init__(**kwargs)
            self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

        def call(self, x):
            r, c = self.depth_radius, x.shape[-1]
            sq = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [r, r]])
            window = sum(sq[..., i:i + c] for i in range(2 * r + 1))
            return x / ops.power(self.bias + self.alpha * window, self.beta)

        def get_config(self):
            return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                    "alpha": self.alpha, "beta": self.beta}

    return LocalResponseNorm


@functools.cache
def adaptive_avg_pool_layer() -> type:
    """torchvision's AdaptiveAvgPool2d as a Keras layer: window i along an axis of n covers
    [floor(i*n/m), ceil((i+1)*n/m)) for m outputs."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable("cnnbench")
    class AdaptiveAvgPool2D(keras.layers.Layer):
        def __init__(self, output_size: int, **kwargs):
            super().__init__(**kwargs)
            self.output_size = output_size

        def call(self, x):
            m, (h, w) = self.output_size, x.shape[1:3]
            rows = [ops.mean(x[:, (i * h) // m:-(-(i + 1) * h // m)], axis=1, keepdims=True) for i in range(m)]
            x = ops.concatenate(rows, axis=1)
            cols = [ops.mean(x[:, :, (j * w) // m:-(-(j + 1) * w // m)], axis=2, keepdims=True) for j in range(m)]
            return ops.concatenate(cols, axis=2)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], self.output_size, self.output_size, input_shape[3])

        def get_config(self):
            return {**super().get_config(), "output_size": self.output_size}

    return AdaptiveAvgPool2D
