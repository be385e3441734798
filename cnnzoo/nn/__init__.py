"""Layers built on :mod:`cnnzoo.ops`: subclasses of their ``torch.nn`` namesakes that change only the
computation, and :func:`convert` to swap them into (or out of) any model; and the layers torch.nn lacks
(``LocallyConnected2d``, ``TiledConv2d``, ``Convolve2d``, in ``local.py``)."""

from .conv import Conv2d, ConvTranspose2d, algorithms_in_use, set_algorithm
from .convert import convert
from .local import Convolve2d, LocallyConnected2d, TiledConv2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "Convolve2d",
    "LocallyConnected2d",
    "TiledConv2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "convert",
    "set_algorithm",
    "algorithms_in_use",
]
