"""Hand-written convolution and pooling: ``torch.autograd.Function`` s with forward and backward
written out, and functional wrappers with ``torch.nn.functional``'s signatures."""

from .conv import Conv2dFunction, conv2d
from .pool import (
    AdaptiveAvgPool2dFunction,
    AvgPool2dFunction,
    MaxPool2dFunction,
    adaptive_avg_pool2d,
    avg_pool2d,
    max_pool2d,
)

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "Conv2dFunction", "MaxPool2dFunction", "AvgPool2dFunction", "AdaptiveAvgPool2dFunction",
]
