"""Max, average and adaptive average pooling written out by hand.

Max and average pooling walk the kernel taps: each tap is one strided block of the input (no copy,
no padding: taps that land in the padding are skipped). Max pooling keeps a running maximum and the
flat index of where it came from; its gradient is a scatter of ``grad_out`` to those indices.
Average pooling sums the taps (one reshape when the windows tile the input) and divides; its
gradient adds ``grad_out / divisor`` back onto every tap. Adaptive average pooling is separable:
averaging rows and then columns is a product with two small averaging matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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


def _first_valid_tap(out: int, stride: int, pad: int, dilation: int, device) -> torch.Tensor:
    """For each output position, the first kernel tap that lands inside the input (not in padding)."""
    start = torch.arange(out, device=device) * stride - pad
    return torch.clamp(-start + dilation - 1, min=0) // dilation


def _any(mask: torch.Tensor) -> bool:
    """``mask.any()`` for the rare-case fix-ups below; False on the meta device, which has no values
    (shapes still propagate there, for cost reports)."""
    return mask.device.type != "meta" and bool(mask.any())


def tap_span(out: int, size: int, stride: int, pad: int, offset: int) -> tuple[slice, slice]:
    """Along one axis, the output positions whose kernel tap at ``offset`` (a multiple of the dilation)
    lands inside the input, and the input positions it reads there: window ``y`` reads
    ``y * stride - pad + offset``. Taps in the padding are skipped, so nothing is ever padded."""
    first = max(0, -((offset - pad) // stride))  # the first y with y * stride - pad + offset >= 0
    end = min(out, (size - 1 + pad - offset) // stride + 1)  # past the last y that stays below size
    if end <= first:
        return slice(0, 0), slice(0, 0)
    start = first * stride - pad + offset
    return slice(first, end), slice(start, start + (end - first - 1) * stride + 1, stride)


def taps(x_shape, kernel, stride, padding, dilation, out):
    """Every kernel tap ``(i, j)`` with the output block it reaches and the strided input block it reads
    there: ``(i, j, out_rows, out_cols, in_rows, in_cols)``. Taps that only ever see padding are left out."""
    for i in range(kernel[0]):
        out_rows, in_rows = tap_span(out[0], x_shape[2], stride[0], padding[0], i * dilation[0])
        for j in range(kernel[1]):
            out_cols, in_cols = tap_span(out[1], x_shape[3], stride[1], padding[1], j * dilation[1])
            if out_rows.stop > out_rows.start and out_cols.stop > out_cols.start:
                yield i, j, out_rows, out_cols, in_rows, in_cols


PLANE_CHUNK_BYTES = 4 * 2**20  # max pooling runs over this much input at a time, so that it stays in cache


def max_pool2d_taps(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, kernel, stride, padding,
                    dilation, nan_aware: bool = False) -> None:
    """Max pooling of ``x`` into ``values`` and ``indices`` as a running maximum over the kernel taps,
    each tap one strided block of the input.

    A tap replaces the running maximum only where it is strictly larger, so ties keep the first
    maximum in window order, as torch's kernels do; ``nan_aware`` also lets every NaN replace it (torch
    keeps a window's last NaN). Indices start at each window's first tap inside the input, which is
    what torch reports for a window holding only ``-inf``.
    """
    w, out = x.shape[3], values.shape[2:]
    rows = torch.arange(out[0], device=x.device) * stride[0] - padding[0]  # each window's first row
    cols = torch.arange(out[1], device=x.device) * stride[1] - padding[1]
    first_row = rows + _first_valid_tap(out[0], stride[0], padding[0], dilation[0], x.device) * dilation[0]
    first_col = cols + _first_valid_tap(out[1], stride[1], padding[1], dilation[1], x.device) * dilation[1]
    values.fill_(float("-inf"))
    indices.copy_(first_row[:, None] * w + first_col[None, :])
    for i, j, out_rows, out_cols, in_rows, in_cols in taps(x.shape, kernel, stride, padding, dilation, out):
        tap = x[:, :, in_rows, in_cols]
        best, index = values[:, :, out_rows, out_cols], indices[:, :, out_rows, out_cols]
        take = tap > best
        if nan_aware:
            take |= tap.isnan()
        torch.maximum(best, tap, out=best)  # NaN wins here whatever its position
        position = (rows[out_rows, None] + i * dilation[0]) * w + cols[None, out_cols] + j * dilation[1]
        torch.where(take, position, index, out=index)


class MaxPool2dFunction(torch.autograd.Function):
    """Max pooling of a batched input; also returns torch-style flat indices into each input plane."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, out):
        n, c, h, w = x.shape
        values = x.new_empty(n, c, *out)
        indices = torch.empty(n, c, *out, dtype=torch.int64, device=x.device)
        planes = (x.reshape(n * c, 1, h, w), values.view(n * c, 1, *out), indices.view(n * c, 1, *out))
        # on a GPU there is no cache to stay in: one chunk
        step = max(1, PLANE_CHUNK_BYTES // max(1, h * w * x.element_size())) if x.device.type == "cpu" else n * c
        for start in range(0, n * c, step):
            chunk = [t[start:start + step] for t in planes]
            max_pool2d_taps(*chunk, kernel, stride, padding, dilation)
            if _any(chunk[1].isnan()):  # rare: find each window's last NaN
                max_pool2d_taps(*chunk, kernel, stride, padding, dilation, nan_aware=True)
        ctx.save_for_backward(indices)
        ctx.input_shape, ctx.dilated = x.shape, dilation != (1, 1)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_out, _grad_indices):
        (indices,) = ctx.saved_tensors
        return max_pool2d_backward(grad_out, indices, ctx.input_shape, ctx.dilated), None, None, None, None, None


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, input_shape: torch.Size,
                        dilated: bool = True) -> torch.Tensor:
    """Each output's gradient goes to the input pixel its maximum came from (summed where windows overlap)."""
    n, c, h, w = input_shape
    # NOTE: a dilated window may hold padding only; torch then reports an index past the plane and
    # its gradient goes nowhere. An undilated window always holds an input pixel (padding is at most
    # half the kernel).
    outside = indices >= h * w if dilated else None
    if outside is not None and _any(outside):
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


def large_tiles(x_shape, kernel, stride, padding, out) -> bool:
    """Whether the windows tile the input (side by side, no padding, none overhanging the end; rows
    and columns that no window reaches are allowed) and are large enough (16 pixels or more) that one
    reshaped reduction beats a pass per tap. Global average pooling is the common case."""
    return (tuple(stride) == tuple(kernel) and not any(padding) and kernel[0] * kernel[1] >= 16
            and out[0] * kernel[0] <= x_shape[2] and out[1] * kernel[1] <= x_shape[3])


def window_sums(x: torch.Tensor, kernel, stride, padding, out) -> torch.Tensor:
    """The sum of every window: each kernel tap adds its strided block of the input (taps in the
    padding add zero, so they are skipped). Large tiling windows are one reshape and a sum."""
    n, c = x.shape[:2]
    if large_tiles(x.shape, kernel, stride, padding, out):
        x = x[:, :, :out[0] * kernel[0], :out[1] * kernel[1]]
        return x.reshape(n, c, out[0], kernel[0], out[1], kernel[1]).sum((3, 5))
    sums = x.new_zeros(n, c, *out)
    for _, _, out_rows, out_cols, in_rows, in_cols in taps(x.shape, kernel, stride, padding, (1, 1), out):
        sums[:, :, out_rows, out_cols] += x[:, :, in_rows, in_cols]
    return sums


def window_sums_backward(grad_sums: torch.Tensor, input_shape, kernel, stride, padding) -> torch.Tensor:
    """The adjoint of ``window_sums``: every pixel of a window receives the window's gradient."""
    n, c, h, w = input_shape
    out = grad_sums.shape[2:]
    grad = grad_sums.new_zeros(input_shape)
    if large_tiles(input_shape, kernel, stride, padding, out):
        grad[:, :, :out[0] * kernel[0], :out[1] * kernel[1]] = (
            grad_sums.reshape(n, c, out[0], 1, out[1], 1).expand(n, c, out[0], kernel[0], out[1], kernel[1])
            .reshape(n, c, out[0] * kernel[0], out[1] * kernel[1]))
        return grad
    for _, _, out_rows, out_cols, in_rows, in_cols in taps(input_shape, kernel, stride, padding, (1, 1), out):
        grad[:, :, in_rows, in_cols] += grad_sums[:, :, out_rows, out_cols]
    return grad


class AvgPool2dFunction(torch.autograd.Function):
    """Average pooling of a batched input; ``divisor`` holds each output's denominator (Ho, Wo)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, out, divisor):
        ctx.save_for_backward(divisor)
        ctx.conf = x.shape, kernel, stride, padding
        return window_sums(x, kernel, stride, padding, out).div_(divisor)

    @staticmethod
    def backward(ctx, grad_out):
        (divisor,) = ctx.saved_tensors
        shape, kernel, stride, padding = ctx.conf
        return window_sums_backward(grad_out / divisor, shape, kernel, stride, padding), None, None, None, None, None


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
    """out = A_h @ x @ A_w^T for the row and column averaging matrices A_h, A_w; when the output size
    divides the input size the bins are equal tiles, and this is plain average pooling."""

    @staticmethod
    def forward(ctx, x, out):
        h, w = x.shape[2:]
        ctx.input_shape = x.shape
        if min(out) > 0 and h % out[0] == 0 and w % out[1] == 0:
            ctx.tile = (h // out[0], w // out[1])
            return window_sums(x, ctx.tile, ctx.tile, (0, 0), out).div_(ctx.tile[0] * ctx.tile[1])
        ctx.tile = None
        a_h = adaptive_matrix(h, out[0], x.dtype, x.device)
        a_w = adaptive_matrix(w, out[1], x.dtype, x.device)
        ctx.save_for_backward(a_h, a_w)
        return torch.einsum("ih,nchw,jw->ncij", a_h, x, a_w)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.tile is not None:
            area = ctx.tile[0] * ctx.tile[1]
            return window_sums_backward(grad_out / area, ctx.input_shape, ctx.tile, ctx.tile, (0, 0)), None
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
