"""Layers built on :mod:`cnnzoo.ops`, drop-in replacements for their ``torch.nn`` namesakes."""

from .conv import Conv2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
