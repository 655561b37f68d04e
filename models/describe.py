"""Parameter and FLOP accounting per layer.

FLOPs count the forward pass for one image, with a multiply-add as 2 FLOPs, over Conv2D,
DepthwiseConv2D and Dense layers (bias adds included). BatchNorm, activations, pooling and
residual additions are left out, as in the papers' and tf_cnn_benchmarks' figures; they add
well under 1% for these networks.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from .registry import build_model
from .shapes import conv_output_size, pool_output_size, upsample_output_size

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int


@dataclass(frozen=True)
class ModelDescription:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    width: float
    params: int
    flops: int
    layers: list[LayerInfo] = field(default_factory=list)
    trainable_params: int = -1  # -1: not counted (then all of params)

    def __post_init__(self) -> None:
        if self.trainable_params < 0:
            object.__setattr__(self, "trainable_params", self.params)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def table(self) -> str:
        """A fixed-width per-layer table with totals, for people."""
        rows = [(l.name, l.kind, "x".join(map(str, l.output_shape)), f"{l.params:,}", f"{l.flops:,}")
                for l in self.layers]
        head = ("layer", "type", "output", "params", "FLOPs")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in rows]
        lines.append(f"{self.name}: {self.params:,} params, {self.gflops:.3f} GFLOPs/image forward "
                     f"(input {'x'.join(map(str, self.input_shape))}, {self.num_classes} classes, "
                     f"width {self.width:g})")
        return "\n".join(lines)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _spatial(layer: "keras.layers.Layer", in_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """Output (H, W) predicted by the shape helper, or None for layers it does not model."""
    from keras import layers

    if len(in_shape) != 3:
        return None
    h, w = in_shape[0], in_shape[1]
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        (kh, kw), (sh, sw), (dh, dw) = _pair(layer.kernel_size), _pair(layer.strides), _pair(layer.dilation_rate)
        return (conv_output_size(h, kh, sh, layer.padding, dh), conv_output_size(w, kw, sw, layer.padding, dw))
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        (ph, pw), (sh, sw) = _pair(layer.pool_size), _pair(layer.strides)
        return pool_output_size(h, ph, sh, layer.padding), pool_output_size(w, pw, sw, layer.padding)
    if isinstance(layer, layers.UpSampling2D):
        fh, fw = _pair(layer.size)
        return upsample_output_size(h, fh), upsample_output_size(w, fw)
    return None


def _flops(layer: "keras.layers.Layer", in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    from keras import layers

    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = _pair(layer.kernel_size)
        macs = kh * kw * out_shape[0] * out_shape[1] * out_shape[2]
    elif isinstance(layer, layers.Conv2D):
        kh, kw = _pair(layer.kernel_size)
        macs = kh * kw * (in_shape[-1] // layer.groups) * out_shape[-1] * out_shape[0] * out_shape[1]
    elif isinstance(layer, layers.Dense):
        macs = in_shape[-1] * out_shape[-1]
    else:
        return 0
    bias = _numel(out_shape) if getattr(layer, "use_bias", False) else 0
    return 2 * macs + bias


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def describe_model(model: "keras.Model", *, name: str | None = None, width: float = 1.0) -> ModelDescription:
    """Describe a built (functional) Keras model layer by layer."""
    from keras import layers

    infos: list[LayerInfo] = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        in_shape = tuple(ins[0].shape[1:])
        out_shape = tuple(layer.output.shape[1:])
        predicted = _spatial(layer, in_shape)
        if predicted is not None and predicted != tuple(out_shape[:2]):
            raise AssertionError(f"shape rule disagrees with Keras at {layer.name}: "
                                 f"{predicted} vs {out_shape[:2]}")
        infos.append(LayerInfo(layer.name, type(layer).__name__, out_shape,
                               int(layer.count_params()), _flops(layer, in_shape, out_shape)))
    in_shape = tuple(model.input.shape[1:])
    trainable = sum(_numel(tuple(w.shape)) for w in model.trainable_weights)
    return ModelDescription(name or model.name, in_shape, int(model.outputs[0].shape[-1]), width,
                            int(model.count_params()), sum(i.flops for i in infos), infos, trainable)


@contextmanager
def _shapes_only() -> Iterator[None]:
    """Variables created inside have shapes and no values. Drawing VGG-16's 138 M initial weights
    took 2.5 s of a 2.6 s description at 224 px (JAX: a compiled random op per variable), and a
    description reads only shapes. Keras initializes such variables when the next outermost
    StatelessScope closes (in a JAX run, the optimizer step), so ours leave its pending list here:
    the list is private to Keras (keras.src), the one way to keep them out of a later run."""
    import keras
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    global_state.set_global_attribute("uninitialized_variables", [])  # ours go to a list of their own
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def describe(name: str, *, num_classes: int = 100, input_shape: tuple[int, int, int] = (32, 32, 3),
             width: float = 1.0, **overrides: Any) -> ModelDescription:
    """Build registered model `name` (shapes only, no weights drawn) and return its params, forward
    FLOPs/image and layer table."""
    with _shapes_only():
        model = build_model(name, num_classes=num_classes, input_shape=input_shape, width=width, **overrides)
        return describe_model(model, name=name, width=width)
