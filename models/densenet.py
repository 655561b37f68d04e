"""DenseNet-BC (Huang et al. 2017) as torchvision builds it: dense blocks of BN-ReLU-1x1 conv
(4 x growth maps)-BN-ReLU-3x3 conv (growth maps) layers whose outputs are concatenated,
joined by transitions (BN-ReLU-1x1 conv halving the maps, 2x2/2 average pool); growth rate 32,
compression 0.5. At 224 px the stem is a 7x7/2 convolution to 64 maps and a 3x3/2 max-pool;
below 64 px the usual CIFAR stem is one 3x3/1 convolution to 2 x growth maps, with no pool.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .common import bn_layer, max_pool, resolve_variant, scale_channels
from .registry import register_model

if TYPE_CHECKING:
    import keras

# depth -> dense layers per block
DENSENET_SPECS: dict[int, tuple[int, ...]] = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
GROWTH, BOTTLENECK, COMPRESSION, INIT_MAPS = 32, 4, 0.5, 64


def _bn_relu(x, name: str):
    from keras import layers

    x = bn_layer(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense_layer(x, growth: int, name: str):
    from keras import layers

    y = layers.Conv2D(BOTTLENECK * growth, 1, use_bias=False, name=f"{name}_1_conv")(_bn_relu(x, f"{name}_1"))
    y = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(_bn_relu(y, f"{name}_2"))
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, name: str):
    from keras import layers

    maps = int(x.shape[-1] * COMPRESSION)
    x = layers.Conv2D(maps, 1, use_bias=False, name=f"{name}_conv")(_bn_relu(x, name))
    return layers.AveragePooling2D(2, 2, name=f"{name}_pool")(x)


def build_densenet(depth: int, *, num_classes: int, input_shape: tuple[int, int, int], width: float,
                   name: str, form: str = "auto") -> "keras.Model":
    """Build DenseNet-`depth` (a key of DENSENET_SPECS)."""
    import keras
    from keras import layers

    growth = scale_channels(GROWTH, width)
    inputs = keras.Input(shape=input_shape, name="input")
    if resolve_variant(form, input_shape, "form") == "imagenet":
        x = layers.Conv2D(scale_channels(INIT_MAPS, width), 7, strides=2, padding="same", use_bias=False,
                          name="stem_conv")(inputs)
        x = max_pool(3, 2, padding="same", name="stem_pool")(_bn_relu(x, "stem"))
    else:
        x = layers.Conv2D(2 * growth, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    blocks = DENSENET_SPECS[depth]
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            x = _dense_layer(x, growth, f"block{b}_layer{i}")
        if b < len(blocks):
            x = _transition(x, f"transition{b}")
    x = _bn_relu(x, "final")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


for _depth in DENSENET_SPECS:
    register_model(f"densenet{_depth}", build_densenet, family="densenet", depth=_depth)
