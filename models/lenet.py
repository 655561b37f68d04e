"""LeNet-5 (LeCun et al. 1998) as the course draws it: two 5x5 convolutions with 6 and 16 maps,
each followed by 2x2/2 pooling, then 120-84-classes. Max pooling and ReLU stand in for the
paper's subsampling and tanh units, as in most modern re-implementations. With a 32x32x1 input
and 10 classes it has exactly 61,706 parameters. The paper's network is the CIFAR-sized one,
so the same table serves every input size."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .common import check_window, max_pool, scale_channels
from .registry import register_model

if TYPE_CHECKING:
    import keras

# ("conv", maps, kernel) or ("pool", window); then the hidden units of the classifier
LENET5_FEATURES: tuple[tuple, ...] = (("conv", 6, 5), ("pool", 2), ("conv", 16, 5), ("pool", 2))
LENET5_HIDDEN: tuple[int, ...] = (120, 84)


def build_lenet(*, num_classes: int, input_shape: tuple[int, int, int], width: float, name: str,
                form: str = "auto") -> "keras.Model":
    """Build LeNet-5 from LENET5_FEATURES and LENET5_HIDDEN ('valid' convolutions, as the paper)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x, conv, pool = inputs, 0, 0
    for spec in LENET5_FEATURES:
        if spec[0] == "conv":
            conv += 1
            check_window(x, spec[2], 1, "valid", f"conv{conv}", name, form)
            x = layers.Conv2D(scale_channels(spec[1], width), spec[2], activation="relu", name=f"conv{conv}")(x)
        else:
            pool += 1
            check_window(x, spec[1], spec[1], "valid", f"pool{pool}", name, form)
            x = max_pool(spec[1], name=f"pool{pool}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(LENET5_HIDDEN, start=1):
        x = layers.Dense(scale_channels(units, width), activation="relu", name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


register_model("lenet5", build_lenet, family="lenet")
