"""``convert``: move any model between torch.nn's convolution and pooling and cnnzoo's."""

from __future__ import annotations

from torch import nn

from ..ops.functional import resolve_padding
from .conv import Conv2d, ConvTranspose2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

TWINS = {
    nn.Conv2d: Conv2d,
    nn.ConvTranspose2d: ConvTranspose2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
}


def convert(model: nn.Module, backend: str = "custom") -> nn.Module:
    """Swap every ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d`` of
    ``model`` in place: to cnnzoo's (``backend='custom'``) or to torch.nn's (``'torch'``). Returns ``model``.

    cnnzoo's layers are subclasses of torch's that only change the computation, so a swap changes each
    layer's class and nothing else: parameters, buffers, hooks and attributes stay as they are (a
    ``'full'``-padded layer gets the explicit padding torch.nn takes). Only layers of exactly these
    classes are swapped; other subclasses are left alone.
    """
    if backend not in ("custom", "torch"):
        raise ValueError(f"unknown backend {backend!r}, expected 'custom' or 'torch'")
    swap = TWINS if backend == "custom" else {mine: theirs for theirs, mine in TWINS.items()}
    for module in model.modules():
        target = swap.get(type(module))
        if target is None:
            continue
        if target is nn.Conv2d and module.padding == "full":  # 'full' is symmetric: (top, left) say it all
            top, _, left, _ = resolve_padding("full", module.kernel_size, module.stride, module.dilation)
            module.padding = (top, left)
        module.__class__ = target
    return model
