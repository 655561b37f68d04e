"""AlexNet (Krizhevsky et al. 2012) in torchvision's single-tower form: five convolutions
(64-192-384-256-256), three overlapping 3x3/2 max-pools, then dropout and 4096-4096-classes.
`alexnet_lrn` adds the paper's local response normalisation after the first two convolutions.

At 224 px it is torchvision's network: an 11x11/4 first convolution with 2 pixels of padding,
'valid' pools, and an adaptive average pool to 6x6 (61,100,840 parameters with 1000 classes).
The CIFAR form below 64 px changes the stem only: the first convolution is 3x3/1, the pools
are 3x3/2 'same', and the 4x4x256 map at 32 px goes to the classifier without the 6x6 pool.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .common import (
    adaptive_avg_pool_layer,
    check_window,
    local_response_norm_layer,
    max_pool,
    resolve_variant,
    scale_channels,
)
from .registry import register_model

if TYPE_CHECKING:
    import keras

# (name, maps, kernel, stride, padding) per convolution, or (name,) for a 3x3/2 max-pool, per
# form; the CIFAR form differs only in the first convolution (and pads 'same' throughout).
ALEXNET_FEATURES: dict[str, tuple[tuple, ...]] = {
    "imagenet": (("conv1", 64, 11, 4, 2), ("pool1",), ("conv2", 192, 5, 1, 2), ("pool2",), ("conv3", 384, 3, 1, 1),
                 ("conv4", 256, 3, 1, 1), ("conv5", 256, 3, 1, 1), ("pool5",)),
    "cifar": (("conv1", 64, 3, 1, 1), ("pool1",), ("conv2", 192, 5, 1, 2), ("pool2",), ("conv3", 384, 3, 1, 1),
              ("conv4", 256, 3, 1, 1), ("conv5", 256, 3, 1, 1), ("pool5",)),
}
ALEXNET_HIDDEN = (4096, 4096)
LRN_AFTER = ("conv1", "conv2")  # the paper normalises the first two convolutions' responses
POOLED = 6  # torchvision's adaptive average pool at the paper's size


def build_alexnet(*, num_classes: int, input_shape: tuple[int, int, int], width: float, name: str,
                  form: str = "auto", lrn: bool = False, dropout: float = 0.5) -> "keras.Model":
    """Build AlexNet from ALEXNET_FEATURES; ModelShapeError names the layer where the map vanishes."""
    import keras
    from keras import layers

    form_used = resolve_variant(form, input_shape, "form")
    pad = "valid" if form_used == "imagenet" else "same"
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for spec in ALEXNET_FEATURES[form_used]:
        if len(spec) == 1:
            check_window(x, 3, 2, pad, spec[0], name, form)
            x = max_pool(3, 2, padding=pad, name=spec[0])(x)
            continue
        layer, maps, kernel, stride, padding = spec
        if pad == "valid":  # torchvision pads each convolution explicitly
            x = layers.ZeroPadding2D(padding, name=f"{layer}_pad")(x)
        check_window(x, kernel, stride, pad, layer, name, form)
        x = layers.Conv2D(scale_channels(maps, width), kernel, strides=stride, padding=pad, activation="relu",
                          name=layer)(x)
        if lrn and layer in LRN_AFTER:
            x = local_response_norm_layer()(name=f"{layer}_lrn")(x)
    if form_used == "imagenet" and (x.shape[1], x.shape[2]) != (POOLED, POOLED):
        x = adaptive_avg_pool_layer()(POOLED, name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(ALEXNET_HIDDEN, start=6):
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = layers.Dense(scale_channels(units, width), activation="relu", name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


register_model("alexnet", build_alexnet, family="alexnet")
register_model("alexnet_lrn", build_alexnet, family="alexnet", lrn=True)
