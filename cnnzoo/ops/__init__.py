"""Hand-written convolution and pooling, in three layers a reader can follow:

* ``conv.py``, ``pool.py``: the reference implementation, forward and backward written out;
* ``library.py``: the registered operators ``torch.ops.cnnzoo.*`` around it (fake kernels, autograd,
  forward-mode and vmap rules), so that torch.compile, torch.export and torch.func see them;
* ``functional.py``: the public functions, with ``torch.nn.functional``'s signatures.
"""

from .functional import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from .library import AdaptiveAvgPool2dFunction, AvgPool2dFunction, Conv2dFunction, MaxPool2dFunction

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "Conv2dFunction", "MaxPool2dFunction", "AvgPool2dFunction", "AdaptiveAvgPool2dFunction",
]
