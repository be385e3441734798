"""2-D convolution (cross-correlation, as in every deep learning library) written out by hand.

Forward is im2col: every output pixel's receptive window is gathered as a view of the padded input
(``Tensor.unfold``, no copy) and contracted with the filters in one ``einsum``. The backward pass is
written in the same terms:

* grad wrt input  = col2im (``F.fold``) of ``weight^T @ grad_out``, the adjoint of im2col;
* grad wrt weight = the same windows of the input contracted with ``grad_out`` over batch and pixels;
* grad wrt bias   = ``grad_out`` summed over batch and pixels.

Both gradients are built from differentiable operations, so double backward works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._args import (
    IntPair,
    as_int,
    autocast_cast,
    autocast_dtype,
    check_float,
    check_input,
    check_non_negative,
    check_positive,
    outside_autocast,
    pair,
)

Padding4 = tuple[int, int, int, int]  # top, bottom, left, right
PaddingArg = str | IntPair


def windows(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int]) -> torch.Tensor:
    """All ``kernel``-sized windows of ``x`` (N, C, H, W) as a view (N, C, Ho, Wo, kh, kw).

    Window ``(i, j)`` starts at pixel ``(i * stride, j * stride)`` and takes every ``dilation``-th
    pixel. Trailing rows and columns that no window reaches are ignored.
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    x = x.unfold(2, dh * (kh - 1) + 1, sh)[..., ::dh]
    return x.unfold(3, dw * (kw - 1) + 1, sw)[..., ::dw]


def pad2d(x: torch.Tensor, padding: Padding4, value: float = 0.0) -> torch.Tensor:
    top, bottom, left, right = padding
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def im2col(x: torch.Tensor, kernel: tuple[int, int], stride, dilation) -> torch.Tensor:
    """Every ``kernel``-sized window of ``x`` (N, C, H, W) as one column: (N, C*kh*kw, Ho*Wo), rows
    ordered (c, i, j) like a filter's weights. One contiguous copy, laid out for a matrix product."""
    return F.unfold(x, kernel, dilation=dilation, stride=stride)


def col2im(cols: torch.Tensor, input_shape, kernel, stride, padding: Padding4, dilation) -> torch.Tensor:
    """The adjoint of im2col: add every column (N, C*kh*kw, L) back onto its window of the padded
    input, then drop the padding."""
    n, c, h, w = input_shape
    top, bottom, left, right = padding
    grad_padded = F.fold(cols, (h + top + bottom, w + left + right), kernel, dilation=dilation, stride=stride)
    return grad_padded[:, :, top:top + h, left:left + w]


def conv2d_forward_im2col(x: torch.Tensor, weight: torch.Tensor, stride, padding: Padding4, dilation,
                          groups: int) -> torch.Tensor:
    """out[n, o, y, x] = sum_{c, i, j} weight[o, c, i, j] * x_pad[n, c, y*s + i*d, x*s + j*d],
    as matrix products per group: (O/G, C/G*kh*kw) @ (C/G*kh*kw, Ho*Wo) for every image."""
    n, out_channels = x.shape[0], weight.shape[0]
    xp = pad2d(x, padding)
    (kh, kw), (sh, sw), (dh, dw) = weight.shape[2:], stride, dilation
    ho, wo = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1, (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    if n == 0:
        return x.new_zeros(0, out_channels, ho, wo)
    cols = im2col(xp, (kh, kw), stride, dilation).unflatten(1, (groups, -1))  # N G C/G*kh*kw L
    out = torch.matmul(weight.reshape(groups, out_channels // groups, -1), cols)  # N G O/G L
    return out.reshape(n, out_channels, ho, wo)


def conv2d_input_grad_im2col(grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size, stride,
                             padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """col2im of ``weight^T @ grad_out``: each output pixel sends its gradient back to its window."""
    n, c = input_shape[:2]
    out_channels, _, kh, kw = weight.shape
    if n == 0:
        return grad_out.new_zeros(input_shape)
    g = grad_out.reshape(n, groups, out_channels // groups, -1)  # N G O/G L
    cols = torch.matmul(weight.reshape(groups, out_channels // groups, -1).transpose(1, 2), g)  # N G C/G*k*k L
    return col2im(cols.reshape(n, c * kh * kw, -1), input_shape, (kh, kw), stride, padding, dilation)


def conv2d_weight_grad_im2col(x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size, stride,
                              padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """grad_w[o, c, i, j] = sum_{n, y, x} grad_out[n, o, y, x] * x_pad[n, c, y*s + i*d, x*s + j*d]: per
    group ``grad_out @ cols^T`` over all images and pixels. The windows are gathered again rather than
    kept from the forward pass, so the op saves no more than its input."""
    n, out_channels = x.shape[0], weight_shape[0]
    if n == 0:
        return grad_out.new_zeros(weight_shape)
    cols = im2col(pad2d(x, padding), weight_shape[2:], stride, dilation).unflatten(1, (groups, -1))
    g = grad_out.reshape(n, groups, out_channels // groups, -1)
    return torch.matmul(g, cols.transpose(-1, -2)).sum(0).reshape(weight_shape)


def conv2d_forward_windows(x: torch.Tensor, weight: torch.Tensor, stride, padding: Padding4, dilation,
                           groups: int) -> torch.Tensor:
    """out[n, o, y, x] = sum_{c, i, j} weight[o, c, i, j] * x_pad[n, c, y*s + i*d, x*s + j*d]."""
    out_channels = weight.shape[0]
    cols = windows(pad2d(x, padding), weight.shape[2:], stride, dilation)  # N C Ho Wo kh kw
    cols = cols.unflatten(1, (groups, -1))
    w = weight.unflatten(0, (groups, out_channels // groups))
    return torch.einsum("ngcyxij,gocij->ngoyx", cols, w).flatten(1, 2)


def conv2d_input_grad_windows(grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size, stride,
                              padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """col2im of ``weight^T @ grad_out``: each output pixel sends its gradient back to its window."""
    n, c = input_shape[:2]
    out_channels, _, kh, kw = weight.shape
    g = grad_out.unflatten(1, (groups, out_channels // groups))
    wg = weight.unflatten(0, (groups, out_channels // groups))
    cols = torch.einsum("ngoyx,gocij->ngcijyx", g, wg).reshape(n, c * kh * kw, -1)
    return col2im(cols, input_shape, (kh, kw), stride, padding, dilation)


def conv2d_weight_grad_windows(x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size, stride,
                               padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """grad_w[o, c, i, j] = sum_{n, y, x} grad_out[n, o, y, x] * x_pad[n, c, y*s + i*d, x*s + j*d]."""
    out_channels = weight_shape[0]
    cols = windows(pad2d(x, padding), weight_shape[2:], stride, dilation).unflatten(1, (groups, -1))
    g = grad_out.unflatten(1, (groups, out_channels // groups))
    return torch.einsum("ngoyx,ngcyxij->gocij", g, cols).flatten(0, 1)


PER_IMAGE_PIXELS = 256  # output pixels per image from which the im2col algorithm is the faster one


def conv2d_forward(x, weight, bias, stride, padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """The forward pass by the algorithm that suits the shape (see ``use_im2col``), plus the bias."""
    algorithm = conv2d_forward_im2col if use_im2col(x.shape, weight.shape, stride, padding, dilation) \
        else conv2d_forward_windows
    out = algorithm(x, weight, stride, padding, dilation, groups)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv2d_input_grad(grad_out, weight, input_shape, stride, padding: Padding4, dilation, groups: int):
    algorithm = conv2d_input_grad_im2col if grad_out.shape[2] * grad_out.shape[3] >= PER_IMAGE_PIXELS \
        else conv2d_input_grad_windows
    return algorithm(grad_out, weight, input_shape, stride, padding, dilation, groups)


def conv2d_weight_grad(x, grad_out, weight_shape, stride, padding: Padding4, dilation, groups: int):
    algorithm = conv2d_weight_grad_im2col if grad_out.shape[2] * grad_out.shape[3] >= PER_IMAGE_PIXELS \
        else conv2d_weight_grad_windows
    return algorithm(x, grad_out, weight_shape, stride, padding, dilation, groups)


def use_im2col(input_shape, weight_shape, stride, padding: Padding4, dilation) -> bool:
    """Large output planes: im2col (one contiguous copy of the windows, then a product per image)
    keeps the products large and the copy cheap. Small planes: contracting the window view with
    ``einsum`` lets it fold images and pixels into one product per group."""
    (kh, kw), (sh, sw), (dh, dw) = weight_shape[2:], stride, dilation
    ho = (input_shape[2] + padding[0] + padding[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (input_shape[3] + padding[2] + padding[3] - dw * (kw - 1) - 1) // sw + 1
    return ho * wo >= PER_IMAGE_PIXELS


class Conv2dFunction(torch.autograd.Function):
    """Convolution with explicit ``(top, bottom, left, right)`` padding on a batched input."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, dilation, groups
        return conv2d_forward(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = conv2d_input_grad(grad_out, weight, x.shape, stride, padding, dilation, groups) if need_x else None
        grad_w = conv2d_weight_grad(x, grad_out, weight.shape, stride, padding, dilation, groups) if need_w else None
        grad_b = grad_out.sum((0, 2, 3)) if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None


def resolve_padding(padding: PaddingArg, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> Padding4:
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
                raise ValueError(
                    f"conv2d: padding='same' is not supported for strided convolutions, got stride={stride}")
            (th, tw) = totals
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        if padding == "full":
            return totals[0], totals[0], totals[1], totals[1]
        raise ValueError(f"conv2d: invalid padding string {padding!r}, expected 'valid', 'same' or 'full'")
    ph, pw = pair(padding, "padding", "conv2d")
    check_non_negative((ph, pw), "padding", "conv2d")
    return ph, ph, pw, pw


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: IntPair = 1,
           padding: PaddingArg = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """2-D cross-correlation with ``torch.nn.functional.conv2d``'s signature and semantics.

    ``padding`` also accepts ``'full'``: ``dilation * (k - 1)`` zeros on every side.
    """
    fn = "conv2d"
    unbatched = check_input(input, fn)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{fn}: weight must be a 4D tensor (out_channels, in_channels/groups, kH, kW), got {shape}")
    check_float(weight, "weight", fn)
    cast = autocast_dtype(input)  # under torch.autocast, convolution runs in its lower precision, as torch's does
    input, weight, bias = (autocast_cast(t, cast) for t in (input, weight, bias))
    stride, dilation = pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    groups = as_int(groups, "groups", fn)
    check_positive(stride, "stride", fn)
    check_positive(dilation, "dilation", fn)
    if groups <= 0:
        raise ValueError(f"{fn}: groups must be positive, got groups={groups}")
    x = input.unsqueeze(0) if unbatched else input
    out_channels, in_per_group, kh, kw = weight.shape
    if out_channels == 0 or out_channels % groups:
        raise ValueError(f"{fn}: weight of size {list(weight.shape)} has {out_channels} output channels, "
                         f"which must be a positive multiple of groups={groups}")
    if x.shape[1] != in_per_group * groups:
        raise ValueError(f"{fn}: weight of size {list(weight.shape)} with groups={groups} expects input with "
                         f"{in_per_group * groups} channels, got input of size {list(input.shape)}")
    if min(kh, kw) <= 0:
        raise ValueError(f"{fn}: kernel size must be positive, got weight of size {list(weight.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (out_channels,):
            shape = list(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"{fn}: bias must be 1D with {out_channels} elements for weight of size "
                             f"{list(weight.shape)}, got {shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != input.dtype or t.device != input.device):
            raise TypeError(f"{fn}: input ({input.dtype}, {input.device}) and {name} ({t.dtype}, {t.device}) "
                            f"must have the same dtype and device")
    pads = resolve_padding(padding, (kh, kw), stride, dilation)
    h, w = x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3]
    if h < dilation[0] * (kh - 1) + 1 or w < dilation[1] * (kw - 1) + 1:
        raise ValueError(f"{fn}: padded input size per channel ({h} x {w}) is smaller than the dilated kernel "
                         f"({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1}); input of size "
                         f"{list(input.shape)}, weight of size {list(weight.shape)}, padding={padding}")
    with outside_autocast(x):
        out = Conv2dFunction.apply(x, weight, bias, stride, pads, dilation, groups)
    return out.squeeze(0) if unbatched else out


__all__ = ["conv2d", "Conv2dFunction"]
