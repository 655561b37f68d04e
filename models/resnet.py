"""ResNet (He et al. 2016) from BasicBlocks and Bottlenecks, with stage depths as data."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .common import conv_bn, max_pool, resolve_variant, scale_channels
from .registry import register_model

if TYPE_CHECKING:
    import keras

# depth -> (block type, blocks per stage). Stage widths are STAGE_FILTERS.
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_FILTERS = (64, 128, 256, 512)
EXPANSION = {"basic": 1, "bottleneck": 4}


def _block(x, kind: str, filters: int, stride: int, name: str):
    """BasicBlock (3x3, 3x3) or Bottleneck (1x1 reduce, 3x3, 1x1 expand x4), plus shortcut."""
    from keras import layers

    out_channels = filters * EXPANSION[kind]
    if kind == "basic":
        y = conv_bn(x, filters, 3, stride, f"{name}_1", relu=True)
        y = conv_bn(y, out_channels, 3, 1, f"{name}_2", relu=False)
    else:
        y = conv_bn(x, filters, 1, 1, f"{name}_1", relu=True)
        y = conv_bn(y, filters, 3, stride, f"{name}_2", relu=True)
        y = conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = conv_bn(x, out_channels, 1, stride, f"{name}_proj", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet(depth: int, *, num_classes: int, input_shape: tuple[int, int, int], width: float,
                 name: str, stem: str = "auto") -> "keras.Model":
    """Build ResNet-`depth` (a key of RESNET_SPECS).

    stem='auto' picks the course's CIFAR stem (3x3/1 conv, 2x2/1 max-pool) below 64x64 inputs,
    else the paper's (7x7/2 conv, 3x3/2 max-pool).
    """
    import keras
    from keras import layers

    kind, depths = RESNET_SPECS[depth]
    stem = resolve_variant(stem, input_shape, "stem")
    inputs = keras.Input(shape=input_shape, name="input")
    if stem == "cifar":
        x = conv_bn(inputs, scale_channels(64, width), 3, 1, "stem", relu=True)
        x = max_pool(2, 1, padding="same", name="stem_pool")(x)
    else:
        x = conv_bn(inputs, scale_channels(64, width), 7, 2, "stem", relu=True)
        x = max_pool(3, 2, padding="same", name="stem_pool")(x)
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, depths), start=1):
        for b in range(1, blocks + 1):
            stride = 2 if (stage > 1 and b == 1) else 1
            x = _block(x, kind, scale_channels(filters, width), stride, f"stage{stage}_block{b}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


for _depth in RESNET_SPECS:
    register_model(f"resnet{_depth}", build_resnet, family="resnet", form_param="stem", depth=_depth)
