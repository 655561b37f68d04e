"""VGG configurations A-E (Simonyan & Zisserman 2015, Table 1) as one table and one builder.

Table entries: an int is a 3x3 conv with that many filters, ("1x1", n) a 1x1 conv (config C),
"M" a 2x2/2 max-pool, "LRN" local response normalisation (config A-LRN).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from .common import bn_layer, local_response_norm_layer, max_pool, resolve_variant, scale_channels
from .registry import register_model

if TYPE_CHECKING:
    import keras

Spec = Union[int, str, tuple]

VGG_CONFIGS: dict[str, list[Spec]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("1x1", 256), "M",
          512, 512, ("1x1", 512), "M", 512, 512, ("1x1", 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# Classifier heads: the paper's for ImageNet-sized inputs, the seed course's for CIFAR.
VGG_HEADS: dict[str, tuple[int, ...]] = {"imagenet": (4096, 4096), "cifar": (256, 128)}


def build_vgg(config: str, *, num_classes: int, input_shape: tuple[int, int, int], width: float,
              name: str, batch_norm: bool = False, head: str = "auto", dropout: float | None = None
              ) -> "keras.Model":
    """Build VGG configuration `config` (a key of VGG_CONFIGS).

    head='auto' picks the course's CIFAR head (256-128) below 64x64 inputs, else the paper's
    4096-4096 head with dropout 0.5. With batch_norm, each conv is conv -> BN -> ReLU.
    """
    import keras
    from keras import layers

    head = resolve_variant(head, input_shape, "head")
    if dropout is None:
        dropout = 0.5 if head == "imagenet" else 0.0
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    conv_i, unit = 0, 1
    for spec in VGG_CONFIGS[config]:
        if spec == "M":
            x = max_pool(2, 2, padding="same", name=f"unit{unit}_pool")(x)
            unit, conv_i = unit + 1, 0
            continue
        if spec == "LRN":
            x = local_response_norm_layer()(name=f"unit{unit}_lrn")(x)
            continue
        kernel, filters = (1, spec[1]) if isinstance(spec, tuple) else (3, spec)
        conv_i += 1
        prefix = f"unit{unit}_conv{conv_i}"
        x = layers.Conv2D(scale_channels(filters, width), kernel, padding="same",
                          use_bias=not batch_norm, activation=None if batch_norm else "relu",
                          name=prefix)(x)
        if batch_norm:
            x = bn_layer(name=f"{prefix}_bn")(x)
            x = layers.ReLU(name=f"{prefix}_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(VGG_HEADS[head], start=1):
        x = layers.Dense(scale_channels(units, width), activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


_VGG_NAMES = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16_c": "C", "vgg16": "D", "vgg19": "E"}

for _name, _config in _VGG_NAMES.items():
    register_model(_name, build_vgg, family="vgg", form_param="head", config=_config)
    if _config != "A-LRN":  # LRN and BN are alternative normalisations; one at a time
        register_model(f"{_name}_bn", build_vgg, family="vgg", form_param="head", config=_config, batch_norm=True)
