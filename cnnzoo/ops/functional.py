"""The public functions: ``torch.nn.functional``'s signatures and semantics on cnnzoo's operators.

Each function reads its arguments as torch does (an int or a pair, ``stride=None``, padding strings,
unbatched input, autocast), checks them, and makes one call into ``torch.ops.cnnzoo.*`` (an operator
of :mod:`cnnzoo.ops.library`, which picks the cheapest route into autograd). The operators check what
they are given again, so a direct call to them fails just as clearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import library
from ._args import IntPair, as_int, autocast_cast, autocast_dtype, check_float, check_non_negative, is_unbatched, pair

Padding4 = tuple[int, int, int, int]  # top, bottom, left, right
PaddingArg = str | IntPair


def resolve_padding(
    padding: PaddingArg, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], fn: str = "conv2d"
) -> Padding4:
    """``padding`` as ``(top, bottom, left, right)``.

    'valid' is no padding; 'same' pads ``d(k-1)`` in total, the odd one at the bottom/right as torch
    does, and needs stride 1; 'full' pads ``d(k-1)`` on every side, so that every input pixel meets
    every kernel tap (output size ``n + d(k-1)``).
    """
    if isinstance(padding, str):
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' is not supported for strided convolutions, got stride={stride}")
            (th, tw) = totals
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        if padding == "full":
            return totals[0], totals[0], totals[1], totals[1]
        raise ValueError(f"{fn}: invalid padding string {padding!r}, expected 'valid', 'same' or 'full'")
    ph, pw = pair(padding, "padding", fn)
    check_non_negative((ph, pw), "padding", fn)
    return ph, ph, pw, pw


def _conv_tensors(fn: str, input: torch.Tensor, weight, bias, layout: str, transposed_groups: int = 0, dims: int = 4):
    """A convolution's weight checked (a ``dims``-D floating point tensor of ``layout``) and its bias (a
    tensor or None); under torch.autocast, all three in its lower precision, as torch's convolutions
    run. A transposed convolution's weight counts its output channels per group, in dimension 1; a
    locally connected or tiled one (6D), in dimension 2."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != dims:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{fn}: weight must be a {dims}D tensor ({layout}), got {shape}")
    check_float(weight, "weight", fn)
    if bias is not None and not isinstance(bias, torch.Tensor):
        count = weight.shape[1] * transposed_groups or weight.shape[dims - 4]
        raise ValueError(
            f"{fn}: bias must be 1D with {count} elements for weight of size {list(weight.shape)}, "
            f"got {type(bias).__name__}"
        )
    cast = autocast_dtype(input)
    return tuple(autocast_cast(t, cast) for t in (input, weight, bias))


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: PaddingArg = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """2-D cross-correlation with ``torch.nn.functional.conv2d``'s signature and semantics.

    ``padding`` also accepts ``'full'``: ``dilation * (k - 1)`` zeros on every side. A weight with zero
    input channels gives the bias, broadcast to every pixel (the empty sum is zero).

    ``algorithm`` chooses how it is computed, for this call and its gradients: ``'direct'``,
    ``'im2col'``, ``'winograd'`` (``'winograd_f4'``), ``'winograd_f2'``, ``'fft'``, or ``'auto'``, the
    fastest that applies (see :mod:`cnnzoo.ops.algorithms`). One that does not apply to the call (Winograd
    on a strided convolution) is a ValueError.
    """
    fn = "conv2d"
    unbatched = is_unbatched(input, fn)
    input, weight, bias = _conv_tensors(fn, input, weight, bias, "out_channels, in_channels/groups, kH, kW")
    stride, dilation = pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    groups = as_int(groups, "groups", fn)
    pads = resolve_padding(padding, weight.shape[2:], stride, dilation)
    x = input.unsqueeze(0) if unbatched else input
    out = library.conv2d(x, weight, bias, stride, pads, dilation, groups, algorithm)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """2-D transposed convolution with ``torch.nn.functional.conv_transpose2d``'s signature and semantics:
    the gradient of ``conv2d`` with respect to its input, each input pixel spreading its values over a
    window of the output. ``weight`` is (in_channels, out_channels/groups, kH, kW). ``output_padding``
    must be smaller than the stride."""
    fn = "conv_transpose2d"
    unbatched = is_unbatched(input, fn)
    groups = as_int(groups, "groups", fn)
    input, weight, bias = _conv_tensors(fn, input, weight, bias, "in_channels, out_channels/groups, kH, kW", groups)
    stride, dilation = pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    (ph, pw), output_padding = pair(padding, "padding", fn), pair(output_padding, "output_padding", fn)
    x = input.unsqueeze(0) if unbatched else input
    out = library.conv_transpose2d(x, weight, bias, stride, (ph, ph, pw, pw), output_padding, groups, dilation)
    return out.squeeze(0) if unbatched else out


def _unusual_conv(operator, fn: str, layout: str, dims: int, input, weight, bias, stride, padding, dilation, groups):
    """The common body of ``convolve2d``, ``local_conv2d`` and ``tiled_conv2d``: conv2d's argument handling
    around one call to ``operator``."""
    unbatched = is_unbatched(input, fn)
    input, weight, bias = _conv_tensors(fn, input, weight, bias, layout, dims=dims)
    stride, dilation = pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    groups = as_int(groups, "groups", fn)
    pads = resolve_padding(padding, weight.shape[-2:], stride, dilation, fn)
    x = input.unsqueeze(0) if unbatched else input
    out = operator(x, weight, bias, stride, pads, dilation, groups)
    return out.squeeze(0) if unbatched else out


def convolve2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: PaddingArg = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """True 2-D convolution, ``out[i, j] = sum_{m, n} x[i - m, j - n] w[m, n]``, with ``conv2d``'s
    arguments: the cross-correlation that ``conv2d`` (and every library) computes, with each kernel
    flipped in both axes. With ``padding='full'`` and stride 1 it is the formula of Goodfellow et al.,
    section 9.1, over the whole overlap, and commutative for one channel: ``convolve2d(x, w, padding=
    'full')`` equals ``convolve2d(w, x, padding='full')`` (cross-correlation is not)."""
    layout = "out_channels, in_channels/groups, kH, kW"
    return _unusual_conv(
        library.convolve2d, "convolve2d", layout, 4, input, weight, bias, stride, padding, dilation, groups
    )


def local_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: PaddingArg = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Unshared convolution (the locally connected layer) with ``conv2d``'s arguments: each output position
    (i, j) has a kernel of its own, ``weight[i, j]``. ``weight`` is (Ho, Wo, out_channels, in_channels /
    groups, kH, kW), where (Ho, Wo) must be the output plane; ``bias`` is (out_channels,), shared by every
    position, or (Ho, Wo, out_channels), one per position."""
    layout = "out_height, out_width, out_channels, in_channels/groups, kH, kW"
    return _unusual_conv(
        library.local_conv2d, "local_conv2d", layout, 6, input, weight, bias, stride, padding, dilation, groups
    )


def tiled_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: PaddingArg = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Tiled convolution with ``conv2d``'s arguments: ``weight`` is (t_h, t_w, out_channels, in_channels /
    groups, kH, kW), t_h x t_w kernel sets that cycle over the output positions, (i, j) using set
    (i mod t_h, j mod t_w) (Goodfellow et al., figure 9.16). The tile need not divide the output plane
    but must fit in it; ``bias`` is (out_channels,). Tile (1, 1) is ``conv2d``; a tile the size of the
    output plane is ``local_conv2d``."""
    layout = "tile_height, tile_width, out_channels, in_channels/groups, kH, kW"
    return _unusual_conv(
        library.tiled_conv2d, "tiled_conv2d", layout, 6, input, weight, bias, stride, padding, dilation, groups
    )


def _window(fn: str, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, dilation: IntPair):
    """A pooling window's arguments as pairs; ``stride`` defaults to the kernel size."""
    kernel = pair(kernel_size, "kernel_size", fn)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride = kernel if no_stride else pair(stride, "stride", fn)
    return kernel, stride, pair(padding, "padding", fn), pair(dilation, "dilation", fn)


def max_pool2d(
    input: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """Max pooling with ``torch.nn.functional.max_pool2d``'s signature and semantics.

    Indices are flat positions in each input plane (``h * W + w``), so ``F.max_unpool2d`` takes them.
    """
    fn = "max_pool2d"
    unbatched = is_unbatched(input, fn)
    window = _window(fn, kernel_size, stride, padding, dilation)
    x = input.unsqueeze(0) if unbatched else input
    values, indices = library.max_pool2d(x, *window, bool(ceil_mode))
    if unbatched:
        values, indices = values.squeeze(0), indices.squeeze(0)
    return (values, indices) if return_indices else values


def avg_pool2d(
    input: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> torch.Tensor:
    """Average pooling with ``torch.nn.functional.avg_pool2d``'s signature and semantics."""
    fn = "avg_pool2d"
    unbatched = is_unbatched(input, fn)
    kernel, stride, padding, _ = _window(fn, kernel_size, stride, padding, 1)
    if divisor_override is not None:
        divisor_override = as_int(divisor_override, "divisor_override", fn)
    x = input.unsqueeze(0) if unbatched else input
    out = library.avg_pool2d(x, kernel, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override)
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool2d(input: torch.Tensor, output_size: int | None | Sequence[int | None]) -> torch.Tensor:
    """Adaptive average pooling with ``torch.nn.functional.adaptive_avg_pool2d``'s semantics.

    ``output_size`` is an int or a pair; ``None`` in the pair keeps that input dimension.
    """
    fn = "adaptive_avg_pool2d"
    unbatched = is_unbatched(input, fn)
    h, w = input.shape[-2:]
    if isinstance(output_size, (tuple, list, torch.Size)):
        if len(output_size) != 2:
            raise ValueError(f"{fn}: output_size must be an int or a pair, got output_size={output_size}")
        sizes = tuple(d if s is None else as_int(s, "output_size", fn) for s, d in zip(output_size, (h, w)))
    else:
        sizes = (as_int(output_size, "output_size", fn),) * 2
    x = input.unsqueeze(0) if unbatched else input
    out = library.adaptive_avg_pool2d(x, sizes)
    return out.squeeze(0) if unbatched else out
