"""Argument parsing and validation shared by the public functions and the registered operators.

Every check mirrors one that ``torch.nn.functional`` makes, so that a bad call fails here with a
message naming the argument and the shapes instead of deep inside an indexing operation.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence

import torch

from .conv import output_plane, transposed_plane

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


def is_unbatched(x: object, fn: str) -> bool:
    """Whether a pooling or convolution input is unbatched ``(C, H, W)`` (else ``(N, C, H, W)``); a
    TypeError or ValueError for anything else."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"{fn}: expected a 3D (C, H, W) or 4D (N, C, H, W) input, got input of size {list(x.shape)}")
    check_float(x, "input", fn)
    return x.dim() == 3


def check_float(t: torch.Tensor, name: str, fn: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating point tensor, got dtype {t.dtype}")


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


# --- the operators' own checks, on normalised arguments (``library.py``) -----------------------------


def ints(values: Sequence[int], count: int, name: str, fn: str) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != count:
        raise ValueError(f"{fn}: {name} must have {count} elements, got {name}={list(values)}")
    return values


def check_4d(t: torch.Tensor, name: str, fn: str) -> None:
    if t.dim() != 4:
        raise ValueError(f"{fn}: expected a 4D (N, C, H, W) {name}, got {name} of size {list(t.shape)}")
    check_float(t, name, fn)


def check_same_kind(fn: str, first: tuple[str, torch.Tensor], *others: tuple[str, torch.Tensor | None]) -> None:
    name, t = first
    for other, u in others:
        if u is not None and (u.dtype != t.dtype or u.device != t.device):
            raise TypeError(
                f"{fn}: {name} ({t.dtype}, {t.device}) and {other} ({u.dtype}, {u.device}) "
                f"must have the same dtype and device"
            )


def check_size(t: torch.Tensor, size: Sequence[int], name: str, fn: str) -> None:
    if tuple(t.shape) != tuple(size):
        raise ValueError(f"{fn}: expected {name} of size {list(size)}, got {list(t.shape)}")


def conv2d_output_size(
    fn: str,
    input_size: Sequence[int],
    weight_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> tuple[int, int, int, int]:
    """Check a convolution's sizes and arguments like torch does; its output size (N, O, Ho, Wo).

    ``padding`` is ``(top, bottom, left, right)``.
    """
    stride, dilation = ints(stride, 2, "stride", fn), ints(dilation, 2, "dilation", fn)
    padding = ints(padding, 4, "padding", fn)
    check_positive(stride, "stride", fn)
    check_positive(dilation, "dilation", fn)
    check_non_negative(padding, "padding", fn)
    if groups <= 0:
        raise ValueError(f"{fn}: groups must be positive, got groups={groups}")
    n, c, h, w = input_size
    out_channels, in_per_group, kh, kw = weight_size
    if out_channels == 0 or out_channels % groups:
        raise ValueError(
            f"{fn}: weight of size {list(weight_size)} has {out_channels} output channels, "
            f"which must be a positive multiple of groups={groups}"
        )
    if c != in_per_group * groups:
        raise ValueError(
            f"{fn}: weight of size {list(weight_size)} with groups={groups} expects input with "
            f"{in_per_group * groups} channels, got input of size {list(input_size)}"
        )
    if min(kh, kw) <= 0:
        raise ValueError(f"{fn}: kernel size must be positive, got weight of size {list(weight_size)}")
    hp, wp = h + padding[0] + padding[1], w + padding[2] + padding[3]
    if hp < dilation[0] * (kh - 1) + 1 or wp < dilation[1] * (kw - 1) + 1:
        raise ValueError(
            f"{fn}: padded input size per channel ({hp} x {wp}) is smaller than the dilated kernel "
            f"({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1}); input of size "
            f"{list(input_size)}, weight of size {list(weight_size)}, padding={list(padding)}"
        )
    ho, wo = output_plane((h, w), (kh, kw), stride, padding, dilation)
    return n, out_channels, ho, wo


def conv_transpose2d_output_size(
    fn: str,
    input_size: Sequence[int],
    weight_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> tuple[int, int, int, int]:
    """Check a transposed convolution's sizes and arguments; its output size (N, O, Ho, Wo), where
    ``Ho = (H - 1) * stride - top - bottom + dilation * (kH - 1) + output_padding + 1``: the size of the
    input whose convolution gives ``input_size``, the extra ``output_padding`` rows at the bottom.

    ``output_padding`` must be smaller than the stride (torch also accepts values under the dilation).
    """
    stride, dilation = ints(stride, 2, "stride", fn), ints(dilation, 2, "dilation", fn)
    padding, output_padding = ints(padding, 4, "padding", fn), ints(output_padding, 2, "output_padding", fn)
    check_positive(stride, "stride", fn)
    check_positive(dilation, "dilation", fn)
    check_non_negative(padding, "padding", fn)
    check_non_negative(output_padding, "output_padding", fn)
    if any(p >= s for p, s in zip(output_padding, stride)):
        raise ValueError(
            f"{fn}: output_padding must be smaller than stride, got output_padding={output_padding} and stride={stride}"
        )
    if groups <= 0:
        raise ValueError(f"{fn}: groups must be positive, got groups={groups}")
    n, c, h, w = input_size
    in_channels, out_per_group, kh, kw = weight_size
    if in_channels != c or c % groups:
        raise ValueError(
            f"{fn}: weight of size {list(weight_size)} with groups={groups} expects input with "
            f"{in_channels} channels (a multiple of groups), got input of size {list(input_size)}"
        )
    if min(kh, kw) <= 0:
        raise ValueError(f"{fn}: kernel size must be positive, got weight of size {list(weight_size)}")
    ho, wo = transposed_plane((h, w), (kh, kw), stride, padding, output_padding, dilation)
    if min(ho, wo) <= 0:
        raise ValueError(
            f"{fn}: output size would be ({ho}, {wo}) for input of size {list(input_size)}, weight "
            f"of size {list(weight_size)}, stride={stride}, padding={list(padding)}"
        )
    return n, out_per_group * groups, ho, wo


def pool2d_output_size(
    fn: str,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[int, int]:
    """Check a pooling window like torch does; the output plane (Ho, Wo)."""
    kernel, stride = ints(kernel_size, 2, "kernel_size", fn), ints(stride, 2, "stride", fn)
    padding, dilation = ints(padding, 2, "padding", fn), ints(dilation, 2, "dilation", fn)
    check_positive(kernel, "kernel_size", fn)
    check_positive(stride, "stride", fn)
    check_positive(dilation, "dilation", fn)
    check_non_negative(padding, "padding", fn)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{fn}: padding must be at most half of kernel_size, got padding={padding} and kernel_size={kernel}"
        )
    if any(s == 0 for s in input_size[1:]):
        raise ValueError(f"{fn}: expected non-zero channel, height and width, got input of size {list(input_size)}")
    h, w = input_size[2:]
    out = (
        pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], bool(ceil_mode)),
        pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], bool(ceil_mode)),
    )
    if min(out) < 1:
        raise ValueError(
            f"{fn}: input of size {list(input_size)} is too small for kernel_size={kernel}, "
            f"stride={stride}, padding={padding}, dilation={dilation}: output size would be {out}"
        )
    return out


def check_divisor(divisor_override: int | None, fn: str) -> None:
    if divisor_override == 0:
        raise ValueError(f"{fn}: divisor_override must not be zero")


def adaptive_output_size(fn: str, input_size: Sequence[int], output_size: Sequence[int]) -> tuple[int, int]:
    out = ints(output_size, 2, "output_size", fn)
    if min(out) < 0:
        raise ValueError(f"{fn}: output_size must be non-negative, got output_size={out}")
    if any(s == 0 for s in input_size[1:]):
        raise ValueError(f"{fn}: expected non-zero channel, height and width, got input of size {list(input_size)}")
    return out


def check_weight(fn: str, weight: torch.Tensor, bias: torch.Tensor | None, bias_size: int, layout: str) -> None:
    """A convolution's weight (4D, ``layout`` names its dimensions) and its bias of ``bias_size``."""
    if weight.dim() != 4:
        raise ValueError(f"{fn}: weight must be a 4D tensor ({layout}), got {list(weight.shape)}")
    check_float(weight, "weight", fn)
    if bias is not None and tuple(bias.shape) != (bias_size,):
        raise ValueError(
            f"{fn}: bias must be 1D with {bias_size} elements for weight of size "
            f"{list(weight.shape)}, got {list(bias.shape)}"
        )


def check_conv2d_grad(fn: str, grad_output, other: tuple[str, torch.Tensor], input_size, weight_size, conf) -> None:
    """A convolution gradient's arguments: ``other`` is ``('weight', weight)`` or ``('input', input)``,
    ``conf`` the convolution's (stride, padding, dilation, groups)."""
    check_4d(grad_output, "grad_output", fn)
    check_4d(other[1], other[0], fn)
    ints(input_size, 4, "input_size", fn)
    ints(weight_size, 4, "weight_size", fn)
    check_same_kind(fn, ("grad_output", grad_output), other)
    out = conv2d_output_size(fn, input_size, weight_size, *conf)
    check_size(grad_output, out, "grad_output", fn)


def check_pool2d_grad(fn: str, grad_output: torch.Tensor, input_size: Sequence[int]) -> None:
    """A pooling gradient's ``grad_output`` pools an input of ``input_size``: same images and channels."""
    if tuple(grad_output.shape[:2]) != tuple(input_size[:2]) or any(s == 0 for s in input_size[1:]):
        raise ValueError(
            f"{fn}: grad_output of size {list(grad_output.shape)} does not pool an input of size {list(input_size)}"
        )


def avg_pool2d_plane(fn: str, t, input_size, kernel_size, stride, padding, ceil_mode, divisor_override) -> tuple:
    """Average pooling's output plane, ``t`` its input (or the gradient of its output)."""
    check_4d(t, "input" if fn == "avg_pool2d" else "grad_output", fn)
    check_divisor(divisor_override, fn)
    return pool2d_output_size(fn, input_size, kernel_size, stride, padding, (1, 1), ceil_mode)


def adaptive_plane(fn: str, t: torch.Tensor, input_size, output_size) -> tuple[int, int]:
    """Adaptive average pooling's output plane, ``t`` its input (or the gradient of its output)."""
    check_4d(t, "input" if fn == "adaptive_avg_pool2d" else "grad_output", fn)
    return adaptive_output_size(fn, input_size, output_size)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a reference computes a dtype in: float16 and bfloat16 in float32, as every cnnzoo kernel
    accumulates (and torch's CPU FFT has no 16-bit types); float32 and float64 as they are."""
    return torch.promote_types(dtype, torch.float32)


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


# --- unshared and tiled convolutions (``local.py``) -------------------------------------------------

LOCAL_LAYOUT = "out_height, out_width, out_channels, in_channels/groups, kH, kW"
TILED_LAYOUT = "tile_height, tile_width, out_channels, in_channels/groups, kH, kW"


def local_output_size(fn: str, input_size, weight_size, conf, tiled: bool) -> tuple[int, int, int, int]:
    """Check a locally connected (or, ``tiled``, a tiled) convolution's sizes; its output size
    (N, O, Ho, Wo). ``weight_size`` is (Ho, Wo, O, C/G, kh, kw) (or (t_h, t_w, ...)), ``conf`` the
    convolution's (stride, padding, dilation, groups)."""
    if len(weight_size) != 6:
        raise ValueError(
            f"{fn}: weight must be a 6D tensor ({TILED_LAYOUT if tiled else LOCAL_LAYOUT}), got {list(weight_size)}"
        )
    size = conv2d_output_size(fn, input_size, weight_size[2:], *conf)
    plane, lead = tuple(size[2:]), tuple(weight_size[:2])
    if tiled and not (1 <= lead[0] <= plane[0] and 1 <= lead[1] <= plane[1]):
        raise ValueError(
            f"{fn}: a tile of {lead[0]} x {lead[1]} kernel sets (weight of size {list(weight_size)}) must be "
            f"at least 1 x 1 and fit the {plane[0]} x {plane[1]} output plane of input of size "
            f"{list(input_size)}: a set that owns no output position would never be used"
        )
    if not tiled and lead != plane:
        raise ValueError(
            f"{fn}: weight of size {list(weight_size)} has kernels for a {lead[0]} x {lead[1]} output plane, but "
            f"input of size {list(input_size)} with stride={list(conf[0])}, padding={list(conf[1])}, "
            f"dilation={list(conf[2])} gives a {plane[0]} x {plane[1]} plane"
        )
    return size


def check_local(fn: str, input: torch.Tensor, weight: torch.Tensor, bias, conf, tiled: bool) -> tuple:
    """A locally connected or tiled convolution's arguments (see :func:`local_output_size`), and its
    bias: (O,), shared by every position, or for a locally connected one also (Ho, Wo, O), one per
    position. Returns the output size."""
    check_4d(input, "input", fn)
    check_float(weight, "weight", fn)
    check_same_kind(fn, ("input", input), ("weight", weight), ("bias", bias))
    size = local_output_size(fn, input.shape, weight.shape, conf, tiled)
    n, o, ho, wo = size
    shapes = [(o,)] if tiled else [(o,), (ho, wo, o)]
    if bias is not None and tuple(bias.shape) not in shapes:
        allowed = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(
            f"{fn}: bias must be of size {allowed} for weight of size {list(weight.shape)}, got {list(bias.shape)}"
        )
    return size


def check_local_grad(fn: str, grad_output, other: tuple[str, torch.Tensor], input_size, weight_size, conf) -> None:
    """A locally connected convolution gradient's arguments: ``other`` is ``('weight', weight)`` or
    ``('input', input)``."""
    check_4d(grad_output, "grad_output", fn)
    check_float(other[1], other[0], fn)
    ints(input_size, 4, "input_size", fn)
    ints(weight_size, 6, "weight_size", fn)
    check_same_kind(fn, ("grad_output", grad_output), other)
    check_size(grad_output, local_output_size(fn, input_size, weight_size, conf, False), "grad_output", fn)
