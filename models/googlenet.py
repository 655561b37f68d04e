"""GoogLeNet (Inception v1, Szegedy et al. 2015) in torchvision's form: BatchNorm after every
convolution (which the paper did not have), and a 3x3 convolution in the branch the paper gave
5x5, as torchvision builds it. 6,624,904 trainable parameters at 224 px with 1000 classes.

The Inception module is one function driven by a row of INCEPTION (its branch widths). The
auxiliary heads of the paper are off by default (`googlenet_aux` turns them on; their losses
weigh 0.3 each in training, and inference uses the main head only).

Below 64 px the CIFAR form replaces the stem (7x7/2 conv, pool, 1x1 and 3x3 convs, pool) by
one 3x3/1 convolution to 192 maps, as the common CIFAR GoogLeNet does; the Inception table
and its pools are unchanged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .common import adaptive_avg_pool_layer, conv_bn, max_pool, resolve_variant, scale_channels
from .registry import register_model

if TYPE_CHECKING:
    import keras

# name -> (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (3x3 in torchvision), pool projection)
INCEPTION: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
# the body after the stem: Inception modules by name, and (name, window) 'same' max-pools of stride 2
BODY: tuple = ("3a", "3b", ("pool3", 3), "4a", "4b", "4c", "4d", "4e", ("pool4", 2), "5a", "5b")
AUX_AFTER = ("4a", "4d")  # where the paper's auxiliary classifiers branch off
AUX_WEIGHT = 0.3  # each auxiliary loss's weight in training


def inception(x, widths: tuple[int, ...], width: float, name: str):
    """One Inception module: 1x1 | 1x1-3x3 | 1x1-3x3 | 3x3/1 max-pool-1x1, concatenated."""
    from keras import layers

    c1, c3r, c3, c5r, c5, pool = (scale_channels(c, width) for c in widths)
    b1 = conv_bn(x, c1, 1, 1, f"{name}_1x1")
    b2 = conv_bn(conv_bn(x, c3r, 1, 1, f"{name}_3x3_reduce"), c3, 3, 1, f"{name}_3x3")
    b3 = conv_bn(conv_bn(x, c5r, 1, 1, f"{name}_5x5_reduce"), c5, 3, 1, f"{name}_5x5")
    b4 = max_pool(3, 1, padding="same", name=f"{name}_pool")(x)
    b4 = conv_bn(b4, pool, 1, 1, f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def _aux_head(x, num_classes: int, width: float, name: str):
    """The paper's auxiliary classifier as torchvision has it: 4x4 average pool, 1x1 conv 128,
    1024 units, dropout 0.7, logits."""
    from keras import layers

    x = adaptive_avg_pool_layer()(4, name=f"{name}_pool")(x)
    x = conv_bn(x, scale_channels(128, width), 1, 1, f"{name}_proj")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(scale_channels(1024, width), activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(num_classes, name=f"{name}_logits")(x)


def build_googlenet(*, num_classes: int, input_shape: tuple[int, int, int], width: float, name: str,
                    form: str = "auto", aux_heads: bool = False, dropout: float = 0.2) -> "keras.Model":
    """Build GoogLeNet from INCEPTION and BODY. With `aux_heads` the model has three outputs:
    the main logits, then the auxiliary heads' (after 4a and 4d)."""
    import keras
    from keras import layers

    form_used = resolve_variant(form, input_shape, "form")
    inputs = keras.Input(shape=input_shape, name="input")
    if form_used == "imagenet":
        x = conv_bn(inputs, scale_channels(64, width), 7, 2, "conv1")
        x = max_pool(3, 2, padding="same", name="pool1")(x)
        x = conv_bn(x, scale_channels(64, width), 1, 1, "conv2")
        x = conv_bn(x, scale_channels(192, width), 3, 1, "conv3")
        x = max_pool(3, 2, padding="same", name="pool2")(x)
    else:
        x = conv_bn(inputs, scale_channels(192, width), 3, 1, "conv1")
    aux = []
    for item in BODY:
        if isinstance(item, tuple):
            x = max_pool(item[1], 2, padding="same", name=item[0])(x)
            continue
        x = inception(x, INCEPTION[item], width, f"inception{item}")
        if aux_heads and item in AUX_AFTER:
            aux.append(_aux_head(x, num_classes, width, f"aux{len(aux) + 1}"))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    if not aux:
        return keras.Model(inputs, outputs, name=name)
    model = keras.Model(inputs, [outputs, *aux], name=name)
    model.output_loss_weights = (1.0, *(AUX_WEIGHT,) * len(aux))
    return model


register_model("googlenet", build_googlenet, family="googlenet")
register_model("googlenet_aux", build_googlenet, family="googlenet", aux_heads=True)
