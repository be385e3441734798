"""Hand-written convolution and pooling, in four layers a reader can follow:

* ``conv.py``, ``local.py``, ``pool.py``: the reference implementation, forward and backward written out;
* ``library.py``: the operator declarations, ``torch.ops.cnnzoo.*`` (output rules, implementations,
  gradient, tangent and vmap formulas), made into operators by ``declare.py``, so that torch.compile,
  torch.export and torch.func see them;
* the kernels per device: ``compiled.py`` loads the C++ CPU kernels of ``cnnzoo/csrc/``;
* ``functional.py``: the public functions, with ``torch.nn.functional``'s signatures.
"""

from .functional import (
    adaptive_avg_pool2d,
    avg_pool2d,
    conv2d,
    conv_transpose2d,
    convolve2d,
    local_conv2d,
    max_pool2d,
    tiled_conv2d,
)
from .library import AdaptiveAvgPool2dFunction, AvgPool2dFunction, Conv2dFunction, MaxPool2dFunction

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "convolve2d",
    "local_conv2d",
    "tiled_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "Conv2dFunction",
    "MaxPool2dFunction",
    "AvgPool2dFunction",
    "AdaptiveAvgPool2dFunction",
]
