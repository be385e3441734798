"""Layers built on :mod:`cnnzoo.ops`: subclasses of their ``torch.nn`` namesakes that change only the
computation, and :func:`convert` to swap them into (or out of) any model."""

from .conv import Conv2d, ConvTranspose2d, algorithms_in_use, set_algorithm
from .convert import convert
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "convert",
    "set_algorithm",
    "algorithms_in_use",
]
