"""Max, average and adaptive average pooling written out by hand.

Max and average pooling walk the kernel taps: each tap is one strided block of the input (no copy,
no padding: taps that land in the padding are skipped). Max pooling keeps a running maximum and the
flat index of where it came from; its gradient is a scatter of ``grad_out`` to those indices.
Average pooling sums the taps (one reshape when the windows tile the input) and divides; its
gradient adds ``grad_out / divisor`` back onto every tap. Adaptive average pooling is separable:
averaging rows and then columns is a product with two small averaging matrices.

This is the reference implementation of the ``torch.ops.cnnzoo.*pool2d*`` operators (``library.py``):
the functions take checked arguments and a batched input, and run below autograd.
"""

from __future__ import annotations

import torch


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


def max_pool2d_taps(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    kernel,
    stride,
    padding,
    dilation,
    nan_aware: bool = False,
) -> None:
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


def max_pool2d_forward(x: torch.Tensor, kernel, stride, padding, dilation, out) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling of a batched input: the maxima and torch-style flat indices into each input plane."""
    n, c, h, w = x.shape
    values = x.new_empty(n, c, *out)
    indices = torch.empty(n, c, *out, dtype=torch.int64, device=x.device)
    planes = (x.reshape(n * c, 1, h, w), values.view(n * c, 1, *out), indices.view(n * c, 1, *out))
    # on a GPU there is no cache to stay in: one chunk
    step = max(1, PLANE_CHUNK_BYTES // max(1, h * w * x.element_size())) if x.device.type == "cpu" else n * c
    for start in range(0, n * c, step):
        chunk = [t[start : start + step] for t in planes]
        max_pool2d_taps(*chunk, kernel, stride, padding, dilation)
        if _any(chunk[1].isnan()):  # rare: find each window's last NaN
            max_pool2d_taps(*chunk, kernel, stride, padding, dilation, nan_aware=True)
    return values, indices


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, input_shape) -> torch.Tensor:
    """Each output's gradient goes to the input pixel its maximum came from (summed where windows overlap)."""
    n, c, h, w = input_shape
    # NOTE: a dilated window may hold padding only; torch then reports an index past the plane and
    # its gradient goes nowhere. An undilated window always holds an input pixel (padding is at most
    # half the kernel). Indices outside the plane the other way (from a caller) go nowhere as well.
    outside = (indices >= h * w) | (indices < 0)
    if _any(outside):
        grad_out, indices = grad_out.masked_fill(outside, 0), indices.masked_fill(outside, 0)
    grad = grad_out.new_zeros(n, c, h * w)
    return grad.scatter_add(2, indices.flatten(2), grad_out.flatten(2)).view(n, c, h, w)


def max_pool2d_gather(grad_input: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``max_pool2d_backward``: each output reads the pixel its maximum came from (a
    window of padding only, whose index lies past the plane, reads zero)."""
    plane = grad_input.shape[2] * grad_input.shape[3]
    flat = indices.flatten(2)
    inside = flat < plane
    taken = grad_input.flatten(2).gather(2, torch.where(inside, flat, 0))
    return torch.where(inside, taken, 0).view(indices.shape)


def avg_divisor(
    input_hw,
    kernel,
    stride,
    padding,
    out,
    count_include_pad: bool,
    divisor_override: int | None,
    dtype: torch.dtype,
    device,
) -> torch.Tensor | int:
    """Each output's denominator, (Ho, Wo): ``divisor_override`` if given, else the window's area,
    counting the padding or not (windows overhang padding only in ceil_mode, and that never counts).
    When every window has the same one (the common case), it is that number."""
    if divisor_override is not None:
        return divisor_override
    inside = all((o - 1) * s - p + k <= n + p for n, o, k, s, p in zip(input_hw, out, kernel, stride, padding))
    if inside and (count_include_pad or not any(padding)):  # no window overhangs, or there is no padding
        return kernel[0] * kernel[1]
    sides = []
    for size, o, k, s, p in zip(input_hw, out, kernel, stride, padding):
        start = torch.arange(o, device=device) * s - p
        end = torch.clamp(start + k, max=size + p)
        sides.append(end - start if count_include_pad else torch.clamp(end, max=size) - torch.clamp(start, min=0))
    return (sides[0][:, None] * sides[1][None, :]).to(dtype)


def avg_pool2d_forward(
    x: torch.Tensor, kernel, stride, padding, out, count_include_pad: bool, divisor_override: int | None
) -> torch.Tensor:
    """Average pooling: every window's sum over its divisor."""
    divisor = avg_divisor(
        x.shape[2:], kernel, stride, padding, out, count_include_pad, divisor_override, x.dtype, x.device
    )
    return window_sums(x, kernel, stride, padding, out).div_(divisor)


def avg_pool2d_backward(
    grad_out: torch.Tensor, input_shape, kernel, stride, padding, count_include_pad: bool, divisor_override: int | None
) -> torch.Tensor:
    """The adjoint: every pixel of a window receives the window's gradient over its divisor."""
    divisor = avg_divisor(
        input_shape[2:],
        kernel,
        stride,
        padding,
        grad_out.shape[2:],
        count_include_pad,
        divisor_override,
        grad_out.dtype,
        grad_out.device,
    )
    return window_sums_backward(grad_out / divisor, input_shape, kernel, stride, padding)


def large_tiles(x_shape, kernel, stride, padding, out) -> bool:
    """Whether the windows tile the input (side by side, no padding, none overhanging the end; rows
    and columns that no window reaches are allowed) and are large enough (16 pixels or more) that one
    reshaped reduction beats a pass per tap. Global average pooling is the common case."""
    return (
        tuple(stride) == tuple(kernel)
        and not any(padding)
        and kernel[0] * kernel[1] >= 16
        and out[0] * kernel[0] <= x_shape[2]
        and out[1] * kernel[1] <= x_shape[3]
    )


def window_sums(x: torch.Tensor, kernel, stride, padding, out) -> torch.Tensor:
    """The sum of every window: each kernel tap adds its strided block of the input (taps in the
    padding add zero, so they are skipped). Large tiling windows are one reshape and a sum."""
    n, c = x.shape[:2]
    if large_tiles(x.shape, kernel, stride, padding, out):
        x = x[:, :, : out[0] * kernel[0], : out[1] * kernel[1]]
        return x.reshape(n, c, out[0], kernel[0], out[1], kernel[1]).sum((3, 5))
    sums = x.new_zeros(n, c, *out)
    for _, _, out_rows, out_cols, in_rows, in_cols in taps(x.shape, kernel, stride, padding, (1, 1), out):
        sums[:, :, out_rows, out_cols] += x[:, :, in_rows, in_cols]
    return sums


def window_sums_backward(grad_sums: torch.Tensor, input_shape, kernel, stride, padding) -> torch.Tensor:
    """The adjoint of ``window_sums``: every pixel of a window receives the window's gradient."""
    n, c, h, w = input_shape
    out = grad_sums.shape[2:]
    if large_tiles(input_shape, kernel, stride, padding, out):
        tiled = (
            grad_sums.reshape(n, c, out[0], 1, out[1], 1)
            .expand(n, c, out[0], kernel[0], out[1], kernel[1])
            .reshape(n, c, out[0] * kernel[0], out[1] * kernel[1])
        )
        if tiled.shape == input_shape:  # the tiles cover the input (global pooling): nothing stays zero
            return tiled
        grad = grad_sums.new_zeros(input_shape)
        grad[:, :, : out[0] * kernel[0], : out[1] * kernel[1]] = tiled
        return grad
    grad = grad_sums.new_zeros(input_shape)
    for _, _, out_rows, out_cols, in_rows, in_cols in taps(input_shape, kernel, stride, padding, (1, 1), out):
        grad[:, :, in_rows, in_cols] += grad_sums[:, :, out_rows, out_cols]
    return grad


def adaptive_matrix(size: int, out: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The (out, size) matrix that averages bin ``i`` = ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    i = torch.arange(out, device=device)
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    pos = torch.arange(size, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def adaptive_tile(input_hw, out) -> tuple[int, int] | None:
    """When the output size divides the input size, every bin is the same tile: its (height, width)."""
    if min(out) > 0 and input_hw[0] % out[0] == 0 and input_hw[1] % out[1] == 0:
        return input_hw[0] // out[0], input_hw[1] // out[1]
    return None


def adaptive_avg_pool2d_forward(x: torch.Tensor, out) -> torch.Tensor:
    """out = A_h @ x @ A_w^T for the row and column averaging matrices A_h, A_w; when the output size
    divides the input size the bins are equal tiles, and this is plain average pooling."""
    h, w = x.shape[2:]
    tile = adaptive_tile((h, w), out)
    if tile is not None:
        return window_sums(x, tile, tile, (0, 0), out).div_(tile[0] * tile[1])
    a_h = adaptive_matrix(h, out[0], x.dtype, x.device)
    a_w = adaptive_matrix(w, out[1], x.dtype, x.device)
    return (a_h @ x) @ a_w.T  # (matmuls in this order give a contiguous result, and fastest)


def adaptive_avg_pool2d_backward(grad_out: torch.Tensor, input_shape) -> torch.Tensor:
    """The adjoint: each bin's gradient spread evenly over the pixels of the bin."""
    h, w = input_shape[2:]
    out = grad_out.shape[2:]
    tile = adaptive_tile((h, w), out)
    if tile is not None:
        return window_sums_backward(grad_out / (tile[0] * tile[1]), input_shape, tile, tile, (0, 0))
    a_h = adaptive_matrix(h, out[0], grad_out.dtype, grad_out.device)
    a_w = adaptive_matrix(w, out[1], grad_out.dtype, grad_out.device)
    return a_h.T @ (grad_out @ a_w)
