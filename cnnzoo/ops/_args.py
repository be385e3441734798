"""Argument parsing and validation shared by the ops.

Every check mirrors one that ``torch.nn.functional`` makes, so that a bad call fails here with a
message naming the argument and the shapes instead of deep inside an indexing operation.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence

import torch

IntPair = int | Sequence[int]


def as_int(value: object, name: str, fn: str) -> int:
    """``value`` as a Python int; bools, floats and other non-integers are a ``TypeError``."""
    if isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}") from None


def pair(value: IntPair, name: str, fn: str) -> tuple[int, int]:
    """An int or a sequence of one or two ints as ``(height, width)``."""
    if isinstance(value, (tuple, list, torch.Size)):
        items = [as_int(v, name, fn) for v in value]
        if len(items) == 1:
            return items[0], items[0]
        if len(items) == 2:
            return items[0], items[1]
        raise ValueError(f"{fn}: {name} must be a single int or a pair of ints, got {name}={list(value)}")
    v = as_int(value, name, fn)
    return v, v


def check_input(x: object, fn: str) -> bool:
    """Check a pooling or convolution input; returns True when it is unbatched ``(C, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{fn}: expected a 3D (C, H, W) or 4D (N, C, H, W) input, got input of size {list(x.shape)}"
        )
    check_float(x, "input", fn)
    return x.dim() == 3


def check_float(t: torch.Tensor, name: str, fn: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating point tensor, got dtype {t.dtype}")


def check_nonempty_planes(x: torch.Tensor, fn: str) -> None:
    """Pooling needs at least one channel and one pixel; only the batch may be empty."""
    if any(s == 0 for s in x.shape[1:]):
        raise ValueError(f"{fn}: expected non-zero channel, height and width, got input of size {list(x.shape)}")


def check_positive(values: tuple[int, int], name: str, fn: str) -> None:
    if min(values) <= 0:
        raise ValueError(f"{fn}: {name} must be positive, got {name}={values}")


def check_non_negative(values: tuple[int, ...], name: str, fn: str) -> None:
    if min(values) < 0:
        raise ValueError(f"{fn}: {name} must be non-negative, got {name}={values}")


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """Pooling output size; with ``ceil_mode`` the last window must still start inside the input or
    its left padding (torch's rule), otherwise it is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
        return out
    return span // stride + 1


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The lower precision ``torch.autocast`` runs convolutions in on ``t``'s device, or None outside it."""
    device = t.device.type
    try:
        enabled = torch.is_autocast_enabled(device)
    except RuntimeError:  # a device type autocast does not know (meta)
        return None
    return torch.get_autocast_dtype(device) if enabled else None


def autocast_cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """``t`` in ``dtype`` as autocast would cast it: floating tensors other than float64 only."""
    if dtype is None or not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def outside_autocast(t: torch.Tensor):
    """A context in which autocast does not touch the op's arithmetic: the ops compute in their
    inputs' dtype, as torch's own kernels do (convolution casts its inputs first)."""
    if autocast_dtype(t) is None:
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)
