"""Memory format: which tensors are channels_last, and outputs allocated in a given format.

torch's rule, which cnnzoo's operators follow: an output and the gradients are channels_last when
the input (or, for a convolution, the input or the weight) is.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format  # private: torch's own memory-format rule


def is_channels_last(t: Tensor) -> bool:
    """torch's ``suggest_memory_format`` rule. A plain tensor with exactly the contiguous strides (most
    of them) is answered at once; others, and tensor subclasses (the compiler's fake tensors, with
    symbolic sizes), by the full rule. (``is_contiguous()`` would not do: it ignores the strides of
    size-1 dimensions, and a one-channel weight made channels_last is contiguous by it.)"""
    if type(t) in (Tensor, torch.nn.Parameter) and t.dim() == 4 and t.stride() == strides(t.shape, False):
        return False
    return suggest_memory_format(t) == torch.channels_last


def strides(size: Sequence[int], channels_last: bool) -> tuple[int, ...]:
    """The strides ``torch.empty(size, memory_format=...)`` gives a 4D tensor."""
    c, h, w = max(size[1], 1), max(size[2], 1), max(size[3], 1)
    return (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)


def empty(like: Tensor, size: Sequence[int], channels_last: bool, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised 4D tensor on ``like``'s device, in ``dtype`` (default ``like``'s) and the given
    memory format: the outputs of the kernels and the answers of the fake kernels."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(tuple(size), dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def in_format(t: Tensor, channels_last: bool) -> Tensor:
    """``t`` with exactly the strides ``empty`` gives, copied only if it has others."""
    if t.stride() == strides(t.shape, channels_last):
        return t
    return empty(t, t.shape, channels_last).copy_(t)
