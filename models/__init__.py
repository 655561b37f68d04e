"""cnnbench model zoo: pure Keras builders behind a registry. No strategy, data or I/O here."""
from . import alexnet as _alexnet, densenet as _densenet, googlenet as _googlenet  # noqa: F401
from . import lenet as _lenet, resnet as _resnet, vgg as _vgg  # noqa: F401  (importing registers the models)
from .common import FORMS, ModelShapeError, main_output, output_weights, step_switches
from .describe import LayerInfo, ModelDescription, describe, describe_model
from .registry import build_model, get_entry, list_models, register_model
from .shapes import conv_output_size, pool_output_size, upsample_output_size

__all__ = ["FORMS", "ModelShapeError", "main_output", "output_weights", "step_switches", "build_model", "list_models", "describe", "describe_model", "register_model", "get_entry",
           "ModelDescription", "LayerInfo", "conv_output_size", "pool_output_size",
           "upsample_output_size"]
