"""cnnzoo: the classic convolutional networks on hand-written convolution and pooling."""

from . import nn, ops

__version__ = "0.1.0"
__all__ = ["nn", "ops", "__version__"]
