"""cnnbench model zoo: pure Keras builders behind a registry. No strategy, data or I/O here."""
from . import resnet as _resnet, vgg as _vgg  # noqa: F401  (importing registers the models)
from .describe import LayerInfo, ModelDescription, describe, describe_model
from .registry import build_model, get_entry, list_models, register_model
from .shapes import conv_output_size, pool_output_size, upsample_output_size

__all__ = ["build_model", "list_models", "describe", "describe_model", "register_model", "get_entry",
           "ModelDescription", "LayerInfo", "conv_output_size", "pool_output_size",
           "upsample_output_size"]
