"""Convolution by the Fourier transform (Goodfellow et al., section 9.8): the reference implementation of
``algorithm="fft"``, for any kernel size, stride, padding, dilation and groups.

The correlation theorem turns the sliding sum into pointwise products. For signals of length L with
circular indexing,

    y[u] = sum_i x[u + i] w[i]   <=>   Y = X * conj(W)      (capitals: discrete Fourier transforms)

so a layer costs one transform per input plane and per filter plane, one complex product per frequency,
summed over the input channels, and one inverse transform per output plane: O(L log L) per plane,
whatever the kernel size, where the direct sum costs L times the kernel's taps. The transforms are as
large as the padded input, so the kernel (dilated: zeros between its taps) is padded to that size too.

Circular indexing is harmless here: with L the padded input's length, every output pixel ``u`` that
exists has ``u + i < L`` for every tap, so no sum wraps around. A stride keeps every s-th output of the
stride-1 correlation: the others are computed and thrown away, s_h * s_w times the work it needs.

The gradients are the same theorem with the roles swapped (``G`` the transformed output gradient,
spread back to stride 1 with zeros between its pixels):

* input:  dL/dx_pad = irfft(sum_o G * W)          (a convolution: the filter flipped)
* weight: dL/dw     = irfft(sum_n conj(G) * X)    (a correlation of the input with the gradient),
  read at the kernel's taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._args import accumulation_dtype


def _dilated(weight: torch.Tensor, dilation) -> torch.Tensor:
    """The kernel with ``d - 1`` zeros between its taps: the filter the dilated convolution applies."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return weight
    o, c, kh, kw = weight.shape
    out = weight.new_zeros(o, c, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[:, :, ::dh, ::dw] = weight
    return out


def _spread(grad_out: torch.Tensor, stride, size) -> torch.Tensor:
    """The output gradient at stride 1: each pixel at (y s_h, x s_w) of a zero plane of ``size``."""
    (sh, sw), (n, o, ho, wo) = stride, grad_out.shape
    out = grad_out.new_zeros(n, o, *size)
    out[:, :, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw] = grad_out
    return out


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(A, B, ...) -> (A, G, B/G, ...)."""
    return t.unflatten(1, (groups, t.shape[1] // groups))


def _products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One complex matrix product per frequency: ``a`` (G, U, V, I, K) @ ``b`` (G, U, V, K, J), the sum over
    the channels K. Both are made contiguous first: a batched complex product of strided operands
    takes a path about ten times slower."""
    return a.contiguous() @ b.contiguous()


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups: int) -> torch.Tensor:
    """out[n, o] = sum_c irfft2(X[n, c] * conj(W[o, c])), kept at the stride's pixels."""
    dtype = accumulation_dtype(x.dtype)
    top, bottom, left, right = padding
    xp = F.pad(x.to(dtype), (left, right, top, bottom))
    size, w = xp.shape[2:], _dilated(weight.to(dtype), dilation)
    ho = (size[0] - w.shape[2]) // stride[0] + 1
    wo = (size[1] - w.shape[3]) // stride[1] + 1
    if xp.numel() == 0 or w.numel() == 0:  # no images or no channels (oneMKL refuses empty transforms)
        out = xp.new_zeros(xp.shape[0], w.shape[0], ho, wo)
        return (out if bias is None else out + bias.to(dtype).view(1, -1, 1, 1)).to(x.dtype)
    X = _grouped(torch.fft.rfft2(xp), groups)  # (N, G, C/G, H, W/2 + 1)
    W = torch.fft.rfft2(w, s=size).unflatten(0, (groups, -1))  # (G, O/G, C/G, H, W/2 + 1)
    Y = _products(X.permute(1, 3, 4, 0, 2), W.conj().permute(0, 3, 4, 2, 1))  # (G, H, W/2 + 1, N, O/G)
    Y = Y.permute(3, 0, 4, 1, 2).flatten(1, 2).contiguous()  # (a strided inverse transform is slower)
    out = torch.fft.irfft2(Y, s=size)
    out = out[:, :, : stride[0] * (ho - 1) + 1 : stride[0], : stride[1] * (wo - 1) + 1 : stride[1]]
    if bias is not None:
        out = out + bias.to(dtype).view(1, -1, 1, 1)
    return out.to(x.dtype)


def conv2d_input_grad(grad_out, weight, input_size, stride, padding, dilation, groups: int) -> torch.Tensor:
    """dL/dx[n, c] = irfft2(sum_o G[n, o] * W[o, c]), cropped from the padded plane to the input's."""
    dtype = accumulation_dtype(grad_out.dtype)
    top, bottom, left, right = padding
    h, w = input_size[2:]
    size = (h + top + bottom, w + left + right)
    if grad_out.numel() == 0 or weight.numel() == 0:
        return grad_out.new_zeros(input_size)
    G = _grouped(torch.fft.rfft2(_spread(grad_out.to(dtype), stride, size)), groups)  # (N, G, O/G, ...)
    W = torch.fft.rfft2(_dilated(weight.to(dtype), dilation), s=size).unflatten(0, (groups, -1))
    GX = _products(G.permute(1, 3, 4, 0, 2), W.permute(0, 3, 4, 1, 2))  # (G, H, W/2 + 1, N, C/G)
    grad = torch.fft.irfft2(GX.permute(3, 0, 4, 1, 2).flatten(1, 2).contiguous(), s=size)
    return grad[:, :, top : top + h, left : left + w].to(grad_out.dtype)


def conv2d_weight_grad(x, grad_out, weight_size, stride, padding, dilation, groups: int) -> torch.Tensor:
    """dL/dw[o, c] = irfft2(sum_n conj(G[n, o]) * X[n, c]) at the kernel's taps."""
    dtype = accumulation_dtype(x.dtype)
    top, bottom, left, right = padding
    (kh, kw), (dh, dw) = weight_size[2:], dilation
    if x.numel() == 0 or grad_out.numel() == 0:
        return x.new_zeros(weight_size)
    xp = F.pad(x.to(dtype), (left, right, top, bottom))
    size = xp.shape[2:]
    X = _grouped(torch.fft.rfft2(xp), groups)  # (N, G, C/G, ...)
    G = _grouped(torch.fft.rfft2(_spread(grad_out.to(dtype), stride, size)), groups)  # (N, G, O/G, ...)
    GW = _products(G.conj().permute(1, 3, 4, 2, 0), X.permute(1, 3, 4, 0, 2))  # (G, H, W/2 + 1, O/G, C/G)
    grad = torch.fft.irfft2(GW.permute(0, 3, 4, 1, 2).flatten(0, 1).contiguous(), s=size)
    return grad[:, :, : dh * (kh - 1) + 1 : dh, : dw * (kw - 1) + 1 : dw].to(x.dtype)
