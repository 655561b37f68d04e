"""Model registry: names -> builder functions with fixed keyword defaults (timm-style)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # keras is imported lazily so that `list_models()` and CLIs stay instant
    import keras

Builder = Callable[..., "keras.Model"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    form_param: str = "form"  # the builder's parameter that picks its CIFAR or paper form


_REGISTRY: dict[str, ModelEntry] = {}
# how reports spell each family
FAMILY_NAMES = {"lenet": "LeNet", "alexnet": "AlexNet", "vgg": "VGG", "googlenet": "GoogLeNet", "resnet": "ResNet",
                "densenet": "DenseNet"}


def register_model(name: str, builder: Builder, *, family: str = "", form_param: str = "form",
                   **defaults: Any) -> None:
    """Register `builder(**defaults)` under `name`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, builder, dict(defaults), family, form_param)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in natural order (resnet18 < resnet101)."""
    def natural(name: str) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=natural)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; ValueError naming the valid models if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None


def build_model(name: str, *, num_classes: int = 100, input_shape: tuple[int, int, int] = (32, 32, 3),
                width: float = 1.0, form: str = "auto", **overrides: Any) -> "keras.Model":
    """Build a registered model. `form` picks the CIFAR form ('cifar') or the paper's ('imagenet');
    'auto' takes the CIFAR form below 64 px. `overrides` replace the registered defaults (e.g.
    batch_norm). A model's form that the input is too small for raises ModelShapeError."""
    entry = get_entry(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer. Received: num_classes={num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0. Received: width={width!r}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape!r}")
    kwargs = {**entry.defaults, **overrides}
    if form != "auto":
        kwargs[entry.form_param] = form
    return entry.builder(num_classes=num_classes, input_shape=tuple(input_shape), width=width,
                         name=name, **kwargs)
