"""cnnzoo: the classic convolutional networks on hand-written convolution and pooling."""

from . import nn, ops
from .models import create_model, list_models, register_model
from .models.common import count_parameters
from .nn import convert
from .onnx import export_onnx

__version__ = "0.1.0"
__all__ = [
    "nn",
    "ops",
    "create_model",
    "list_models",
    "register_model",
    "count_parameters",
    "convert",
    "export_onnx",
    "__version__",
]
