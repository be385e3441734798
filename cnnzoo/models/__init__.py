"""The model zoo. Importing this package registers every family with :func:`create_model`."""

from . import alexnet, googlenet, lenet, resnet, vgg  # noqa: F401  (registers the builders)
from .factory import create_model
from .registry import list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
