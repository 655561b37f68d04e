"""Small helpers shared by the model families."""
from __future__ import annotations


# Moving-statistics momentum of every BatchNorm layer: 0.9 (PyTorch's 0.1) rather than Keras'
# 0.99, so that short benchmark runs evaluate with statistics that have caught up with training
# (with 0.99, 4 epochs of digits left resnet18 at 16% test top-1; the init still weighed 17%).
BN_MOMENTUM = 0.9


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
