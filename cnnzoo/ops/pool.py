"""Max, average and adaptive average pooling written out by hand.

Max and average pooling read the same windows as the convolution (a view of the padded input);
their gradients are the adjoints: a scatter of ``grad_out`` to the recorded argmax positions for max
pooling, col2im (``F.fold``) of ``grad_out / divisor`` for average pooling. Adaptive average pooling
is separable: averaging rows and then columns is a product with two small averaging matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._args import (
    IntPair,
    as_int,
    check_input,
    check_non_negative,
    check_nonempty_planes,
    check_positive,
    outside_autocast,
    pair,
    pool_out_size,
)
from .conv import pad2d, windows


def _pool_args(fn: str, x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair,
               dilation: IntPair, ceil_mode: bool) -> tuple:
    """Validate pooling arguments like torch does; returns kernel, stride, padding, dilation, out size."""
    kernel = pair(kernel_size, "kernel_size", fn)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride = kernel if no_stride else pair(stride, "stride", fn)
    padding, dilation = pair(padding, "padding", fn), pair(dilation, "dilation", fn)
    check_positive(kernel, "kernel_size", fn)
    check_positive(stride, "stride", fn)
    check_positive(dilation, "dilation", fn)
    check_non_negative(padding, "padding", fn)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{fn}: padding must be at most half of kernel_size, got padding={padding} "
                         f"and kernel_size={kernel}")
    check_nonempty_planes(x, fn)
    h, w = x.shape[-2:]
    out = (pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], bool(ceil_mode)),
           pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], bool(ceil_mode)))
    if min(out) < 1:
        raise ValueError(f"{fn}: input of size {list(x.shape)} is too small for kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}, dilation={dilation}: output size would be {out}")
    return kernel, stride, padding, dilation, out


def _window_padding(size: tuple[int, int], kernel, stride, padding, dilation, out) -> tuple[int, int, int, int]:
    """Top/bottom/left/right padding that makes all ``out`` windows fit (ceil_mode may need more at the end)."""
    ends = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, stride, dilation, kernel)]
    bottom, right = (max(e - n - p, 0) for e, n, p in zip(ends, size, padding))
    return padding[0], bottom, padding[1], right


def _first_valid_tap(out: int, stride: int, pad: int, dilation: int, device) -> torch.Tensor:
    """For each output position, the first kernel tap that lands inside the input (not in padding)."""
    start = torch.arange(out, device=device) * stride - pad
    return torch.clamp(-start + dilation - 1, min=0) // dilation


def _any(mask: torch.Tensor) -> bool:
    """``mask.any()`` for the rare-case fix-ups below; False on the meta device, which has no values
    (shapes still propagate there, for cost reports)."""
    return mask.device.type != "meta" and bool(mask.any())


class MaxPool2dFunction(torch.autograd.Function):
    """Max pooling of a batched input; also returns torch-style flat indices into each input plane."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, out):
        n, c, h, w = x.shape
        pads = _window_padding((h, w), kernel, stride, padding, dilation, out)
        win = windows(pad2d(x, pads, float("-inf")), kernel, stride, dilation).flatten(-2)
        values, tap = win.max(-1)  # the first maximum on ties, as torch's kernels pick
        nan = values.isnan()
        if _any(nan):  # torch keeps the last NaN of a window
            last_nan = win.shape[-1] - 1 - win.isnan().flip(-1).to(torch.uint8).argmax(-1)
            tap = torch.where(nan, last_nan, tap)
        if padding != (0, 0) or pads[1] or pads[3]:
            # a window holding only -inf: torch points at its first tap inside the input, not into padding
            all_inf = values == float("-inf")
            if _any(all_inf):
                first_row = _first_valid_tap(out[0], stride[0], padding[0], dilation[0], x.device)
                first_col = _first_valid_tap(out[1], stride[1], padding[1], dilation[1], x.device)
                first = first_row[:, None] * kernel[1] + first_col[None, :]
                tap = torch.where(all_inf, first, tap)
        row_start = torch.arange(out[0], device=x.device) * stride[0] - padding[0]
        col_start = torch.arange(out[1], device=x.device) * stride[1] - padding[1]
        rows = row_start[:, None] + tap.div(kernel[1], rounding_mode="floor") * dilation[0]
        cols = col_start[None, :] + tap.remainder(kernel[1]) * dilation[1]
        indices = rows * w + cols
        ctx.save_for_backward(indices)
        ctx.input_shape = x.shape
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_out, _grad_indices):
        (indices,) = ctx.saved_tensors
        return max_pool2d_backward(grad_out, indices, ctx.input_shape), None, None, None, None, None


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """Each output's gradient goes to the input pixel its maximum came from (summed where windows overlap)."""
    n, c, h, w = input_shape
    # NOTE: a dilated window may hold padding only; torch then reports an index past the plane and
    # its gradient goes nowhere
    outside = indices >= h * w
    if _any(outside):
        grad_out, indices = grad_out.masked_fill(outside, 0), indices.masked_fill(outside, 0)
    grad = grad_out.new_zeros(n, c, h * w)
    return grad.scatter_add(2, indices.flatten(2), grad_out.flatten(2)).view(n, c, h, w)


def max_pool2d(input: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               dilation: IntPair = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Max pooling with ``torch.nn.functional.max_pool2d``'s signature and semantics.

    Indices are flat positions in each input plane (``h * W + w``), so ``F.max_unpool2d`` takes them.
    """
    fn = "max_pool2d"
    unbatched = check_input(input, fn)
    kernel, stride, padding, dilation, out = _pool_args(fn, input, kernel_size, stride, padding, dilation, ceil_mode)
    x = input.unsqueeze(0) if unbatched else input
    with outside_autocast(x):
        values, indices = MaxPool2dFunction.apply(x, kernel, stride, padding, dilation, out)
    if unbatched:
        values, indices = values.squeeze(0), indices.squeeze(0)
    return (values, indices) if return_indices else values


def _avg_divisor(size: int, out: int, kernel: int, stride: int, pad: int, count_include_pad: bool,
                 device) -> torch.Tensor:
    """Per output position along one axis, how many window positions the average divides by."""
    start = torch.arange(out, device=device) * stride - pad
    end = torch.clamp(start + kernel, max=size + pad)  # windows may overhang padding only in ceil_mode
    if count_include_pad:
        return end - start
    return torch.clamp(end, max=size) - torch.clamp(start, min=0)


class AvgPool2dFunction(torch.autograd.Function):
    """Average pooling of a batched input; ``divisor`` holds each output's denominator (Ho, Wo)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, out, divisor):
        pads = _window_padding(x.shape[-2:], kernel, stride, padding, (1, 1), out)
        sums = windows(pad2d(x, pads), kernel, stride, (1, 1)).sum((-1, -2))
        ctx.save_for_backward(divisor)
        ctx.conf = x.shape, kernel, stride, pads
        return sums / divisor

    @staticmethod
    def backward(ctx, grad_out):
        (divisor,) = ctx.saved_tensors
        shape, kernel, stride, pads = ctx.conf
        return avg_pool2d_backward(grad_out / divisor, shape, kernel, stride, pads), None, None, None, None, None


def avg_pool2d_backward(grad_sums: torch.Tensor, input_shape, kernel, stride, pads) -> torch.Tensor:
    """Adjoint of a window sum: every window pixel receives its window's gradient (col2im)."""
    n, c, h, w = input_shape
    top, bottom, left, right = pads
    taps = kernel[0] * kernel[1]
    cols = grad_sums.reshape(n * c, 1, -1).expand(-1, taps, -1)
    grad = F.fold(cols, (h + top + bottom, w + left + right), kernel, stride=stride)
    return grad.view(n, c, *grad.shape[-2:])[:, :, top:top + h, left:left + w]


def avg_pool2d(input: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> torch.Tensor:
    """Average pooling with ``torch.nn.functional.avg_pool2d``'s signature and semantics."""
    fn = "avg_pool2d"
    unbatched = check_input(input, fn)
    kernel, stride, padding, _, out = _pool_args(fn, input, kernel_size, stride, padding, 1, ceil_mode)
    x = input.unsqueeze(0) if unbatched else input
    if divisor_override is not None:
        divisor_override = as_int(divisor_override, "divisor_override", fn)
        if divisor_override == 0:
            raise ValueError(f"{fn}: divisor_override must not be zero")
        divisor = torch.full(out, divisor_override, dtype=x.dtype, device=x.device)
    else:
        size = x.shape[-2:]
        rows, cols = (_avg_divisor(size[i], out[i], kernel[i], stride[i], padding[i], count_include_pad, x.device)
                      for i in (0, 1))
        divisor = (rows[:, None] * cols[None, :]).to(x.dtype)
    with outside_autocast(x):
        result = AvgPool2dFunction.apply(x, kernel, stride, padding, out, divisor)
    return result.squeeze(0) if unbatched else result


def adaptive_matrix(size: int, out: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The (out, size) matrix that averages bin ``i`` = ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    i = torch.arange(out, device=device)
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    pos = torch.arange(size, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


class AdaptiveAvgPool2dFunction(torch.autograd.Function):
    """out = A_h @ x @ A_w^T for the row and column averaging matrices A_h, A_w."""

    @staticmethod
    def forward(ctx, x, out):
        a_h = adaptive_matrix(x.shape[2], out[0], x.dtype, x.device)
        a_w = adaptive_matrix(x.shape[3], out[1], x.dtype, x.device)
        ctx.save_for_backward(a_h, a_w)
        return torch.einsum("ih,nchw,jw->ncij", a_h, x, a_w)

    @staticmethod
    def backward(ctx, grad_out):
        a_h, a_w = ctx.saved_tensors
        return torch.einsum("ih,ncij,jw->nchw", a_h, grad_out, a_w), None


def adaptive_avg_pool2d(input: torch.Tensor, output_size: int | None | Sequence[int | None]) -> torch.Tensor:
    """Adaptive average pooling with ``torch.nn.functional.adaptive_avg_pool2d``'s semantics.

    ``output_size`` is an int or a pair; ``None`` in the pair keeps that input dimension.
    """
    fn = "adaptive_avg_pool2d"
    unbatched = check_input(input, fn)
    check_nonempty_planes(input, fn)
    h, w = input.shape[-2:]
    if isinstance(output_size, (tuple, list, torch.Size)):
        if len(output_size) != 2:
            raise ValueError(f"{fn}: output_size must be an int or a pair, got output_size={output_size}")
        sizes = tuple(d if s is None else as_int(s, "output_size", fn) for s, d in zip(output_size, (h, w)))
    else:
        sizes = (as_int(output_size, "output_size", fn),) * 2
    if min(sizes) < 0:
        raise ValueError(f"{fn}: output_size must be non-negative, got output_size={sizes}")
    x = input.unsqueeze(0) if unbatched else input
    with outside_autocast(x):
        result = AdaptiveAvgPool2dFunction.apply(x, sizes)
    return result.squeeze(0) if unbatched else result
