"""2-D convolution (cross-correlation, as in every deep learning library) written out by hand: the
reference implementation of the ``torch.ops.cnnzoo.conv2d*`` operators (see ``library.py``).

Forward is im2col: every output pixel's receptive window is a view of the padded input
(``Tensor.unfold``, no copy); a chunk of images' windows is copied into column order and multiplied
by the filters, one product per image and group, or one per group with the chunk's images folded
into the columns when the planes are small. The backward pass is written in the same terms:

* grad wrt input  = col2im of ``weight^T @ grad_out`` (each kernel tap's block added back in place),
  the adjoint of im2col;
* grad wrt weight = ``grad_out`` times the same columns, summed over images and pixels;
* grad wrt bias   = ``grad_out`` summed over images and pixels.

Every function here takes checked, normalised arguments (a batched input, padding as
``(top, bottom, left, right)``) and runs below autograd: the registered operators give them their
derivatives, and the three are each other's gradients (``library.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Padding4 = tuple[int, int, int, int]  # top, bottom, left, right


def windows(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> torch.Tensor:
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


def output_plane(input_hw, kernel, stride, padding: Padding4, dilation) -> tuple[int, int]:
    """Output height and width: how many windows fit along each axis of the padded input."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho = (input_hw[0] + padding[0] + padding[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (input_hw[1] + padding[2] + padding[3] - dw * (kw - 1) - 1) // sw + 1
    return ho, wo


def transposed_plane(input_hw, kernel, stride, padding: Padding4, output_padding, dilation) -> tuple[int, int]:
    """A transposed convolution's output height and width: the size of the input whose convolution
    (``output_plane``) gives ``input_hw``, with ``output_padding`` extra rows and columns at the end."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho = (input_hw[0] - 1) * sh - padding[0] - padding[1] + dh * (kh - 1) + output_padding[0] + 1
    wo = (input_hw[1] - 1) * sw - padding[2] - padding[3] + dw * (kw - 1) + output_padding[1] + 1
    return ho, wo


CHUNK_BYTES = 16 * 2**20  # column matrices are built for as many images at a time as fit in this
GPU_CHUNK_BYTES = 512 * 2**20  # on a GPU the caching allocator keeps buffers, and fewer launches pay


def image_chunks(x: torch.Tensor, column_elements_per_image: int) -> list[slice]:
    """Slices of the batch of ``x`` whose column matrices stay near ``CHUNK_BYTES``.

    A bounded chunk keeps the temporary small next to the batch (native convolutions need none), and
    on a CPU an allocator serves chunk-sized buffers from memory it already holds, where a buffer the
    size of the whole batch's windows costs a fresh round of page faults on every call.
    """
    budget = CHUNK_BYTES if x.device.type == "cpu" else GPU_CHUNK_BYTES
    n = x.shape[0]
    step = max(1, budget // max(1, column_elements_per_image * x.element_size()))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def fold_images(k: int, plane: int) -> bool:
    """Small planes (few output pixels against many rows per column) make thin per-image products;
    folding the images into the columns turns them into one wide product."""
    return 16 * plane <= k


def pointwise(kernel, stride, padding: Padding4) -> bool:
    """A 1x1, stride-1, unpadded convolution: every column is one input pixel, so the input is its own
    column matrix and the input gradient needs no col2im."""
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)


def im2col(x: torch.Tensor, kernel, stride, padding: Padding4, dilation, folded: bool) -> torch.Tensor:
    """The windows of ``x`` (b, C, H, W) copied into column order: (b, C, kh, kw, Ho, Wo), or
    (C, kh, kw, b, Ho, Wo) when ``folded``. Row (c, i, j) of a column lines up with ``weight[o, c, i, j]``.

    An unpadded 1x1 stride-1 convolution needs no copy: its columns are the input itself (made
    contiguous: a matrix product of other strides may round differently, and callers reshape).
    """
    if not folded and pointwise(kernel, stride, padding):
        return x.contiguous().unsqueeze(2).unsqueeze(3)
    win = windows(pad2d(x, padding), kernel, stride, dilation)  # b C Ho Wo kh kw, a view
    return win.permute((1, 4, 5, 0, 2, 3) if folded else (0, 1, 4, 5, 2, 3)).contiguous()


def col2im_add(grad_padded: torch.Tensor, cols: torch.Tensor, stride, dilation) -> None:
    """The adjoint of im2col: add ``cols`` (b, C, kh, kw, Ho, Wo) onto the padded input gradient, one
    strided slice per kernel tap (overlapping windows add up)."""
    kh, kw, ho, wo = cols.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            grad_padded[:, :, rows, columns] += cols[:, :, i, j]


def grouped(t: torch.Tensor, groups: int, folded: bool) -> torch.Tensor:
    """``grad_out`` or ``out`` rows of a chunk (b, O, Ho, Wo) as (b, G, O/G, L), or as (G, O/G, b*L) when
    ``folded`` (a copy then)."""
    b, o = t.shape[:2]
    t = t.contiguous().reshape(b, groups, o // groups, -1)  # other strides may round differently
    return t.permute(1, 2, 0, 3).reshape(groups, o // groups, -1) if folded else t


def conv2d_forward_gemm(
    x: torch.Tensor, weight: torch.Tensor, stride, padding: Padding4, dilation, groups: int
) -> torch.Tensor:
    """out[n, o, y, x] = sum_{c, i, j} weight[o, c, i, j] * x_pad[n, c, y*s + i*d, x*s + j*d], as the
    matrix product (O/G, C/G*kh*kw) @ (C/G*kh*kw, Ho*Wo) per image and group, or one product over all
    images' pixels of a chunk when the planes are small."""
    n, out_channels = x.shape[0], weight.shape[0]
    kernel, k = weight.shape[2:], weight[0].numel()
    ho, wo = output_plane(x.shape[2:], kernel, stride, padding, dilation)
    if k == 0:  # no input channels: every output is the empty sum
        return x.new_zeros(n, out_channels, ho, wo)
    folded = fold_images(k, ho * wo)
    w = weight.contiguous().reshape(groups, out_channels // groups, k)
    out = x.new_empty(n, out_channels, ho, wo)
    for part in image_chunks(x, k * groups * ho * wo):
        b = out[part].shape[0]
        cols = im2col(x[part], kernel, stride, padding, dilation, folded)
        if folded:
            products = torch.matmul(w, cols.view(groups, k, -1))  # G O/G b*L
            out[part] = products.view(out_channels, b, ho, wo).transpose(0, 1)
        else:
            torch.matmul(w, cols.reshape(b, groups, k, -1), out=out[part].view(b, groups, out_channels // groups, -1))
    return out


def conv2d_input_grad(
    grad_out: torch.Tensor,
    weight: torch.Tensor,
    input_shape: torch.Size,
    stride,
    padding: Padding4,
    dilation,
    groups: int,
) -> torch.Tensor:
    """col2im of ``weight^T @ grad_out``: each output pixel sends its gradient back to its window."""
    n, c, h, w = input_shape
    out_channels, _, kh, kw = weight.shape
    k, (ho, wo) = weight[0].numel(), grad_out.shape[2:]
    top, bottom, left, right = padding
    grad = grad_out.new_empty(input_shape)
    if k == 0:  # no input channels, nothing to send back to
        return grad
    folded = fold_images(k, ho * wo)
    wt = weight.contiguous().reshape(groups, out_channels // groups, k).transpose(1, 2)  # G C/G*kh*kw O/G
    for part in image_chunks(grad_out, k * groups * ho * wo):
        b = grad[part].shape[0]
        cols = torch.matmul(wt, grouped(grad_out[part], groups, folded))
        if folded:
            cols = cols.view(c, kh, kw, b, ho, wo).permute(3, 0, 1, 2, 4, 5)
        else:
            cols = cols.view(b, c, kh, kw, ho, wo)
        if pointwise((kh, kw), stride, padding):
            grad[part] = cols.reshape(b, c, h, w)
            continue
        grad_padded = grad_out.new_zeros(b, c, h + top + bottom, w + left + right)
        col2im_add(grad_padded, cols, stride, dilation)
        grad[part] = grad_padded[:, :, top : top + h, left : left + w]
    return grad


def conv2d_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size, stride, padding: Padding4, dilation, groups: int
) -> torch.Tensor:
    """grad_w[o, c, i, j] = sum_{n, y, x} grad_out[n, o, y, x] * x_pad[n, c, y*s + i*d, x*s + j*d]: per
    group ``grad_out @ cols^T`` summed over the images. The windows are gathered again rather than
    kept from the forward pass, so the op saves no more than its input."""
    out_channels = weight_shape[0]
    kernel, (ho, wo) = weight_shape[2:], grad_out.shape[2:]
    k = weight_shape[1] * kernel[0] * kernel[1]
    grad = grad_out.new_zeros(groups, out_channels // groups, k)
    if k == 0:  # a weight with no input channels has no entries
        return grad.view(weight_shape)
    folded = fold_images(k, ho * wo)
    for part in image_chunks(x, k * groups * ho * wo):
        cols = im2col(x[part], kernel, stride, padding, dilation, folded)
        g = grouped(grad_out[part], groups, folded)
        if folded:  # (G, O/G, b*L) @ (G, b*L, C/G*kh*kw)
            grad = grad + torch.matmul(g, cols.view(groups, k, -1).transpose(1, 2))
        elif out_channels // groups <= ho * wo:  # (O/G, L) @ (L, C/G*kh*kw) per image, then summed
            grad = grad + torch.matmul(g, cols.reshape(g.shape[0], groups, k, -1).transpose(2, 3)).sum(0)
        else:  # the same, accumulated image by image: the per-image products would outgrow the columns
            cols = cols.reshape(g.shape[0], groups, k, -1)
            grad = torch.stack([torch.addbmm(grad[i], g[:, i], cols[:, i].transpose(1, 2)) for i in range(groups)])
    return grad.view(weight_shape)


def conv2d_forward(x, weight, bias, stride, padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """The forward pass (``conv2d_forward_gemm``) plus the bias, broadcast over images and pixels."""
    out = conv2d_forward_gemm(x, weight, stride, padding, dilation, groups)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def conv_transpose2d(x, weight, bias, stride, padding: Padding4, output_padding, groups: int, dilation) -> torch.Tensor:
    """The transposed convolution: the input gradient of the convolution by ``weight`` whose output
    has ``x``'s size (``x`` in the place of that output's gradient), plus the bias."""
    plane = transposed_plane(x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    size = (x.shape[0], weight.shape[1] * groups, *plane)
    out = conv2d_input_grad(x, weight, size, stride, padding, dilation, groups)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def convolve2d(x, weight, bias, stride, padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """True convolution, the operation the mathematics names (Goodfellow et al., section 9.1):

        out[n, o, i, j] = sum_{c, m, l} x_pad[n, c, i*s + d*(kh-1-m), j*s + d*(kw-1-l)] * weight[o, c, m, l]

    With full padding and stride 1 this is the book's ``S(i, j) = sum_{m, l} I(i - m, j - l) K(m, l)``:
    the window is read backwards against the kernel. Written tap by tap: for kernel tap (m, l), every
    output reads the input pixel ``(kh-1-m, kw-1-l)`` taps into its window, so the flip is visible in
    the index, not hidden in the weight. Cross-correlation with the kernel flipped gives the same."""
    n, out_channels = x.shape[0], weight.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = weight.shape[2:], stride, dilation
    ho, wo = output_plane(x.shape[2:], (kh, kw), stride, padding, dilation)
    xp = pad2d(x, padding)
    c = xp.shape[1]
    out = x.new_zeros(n, groups, out_channels // groups, ho * wo)
    w = weight.reshape(groups, out_channels // groups, c // groups, kh, kw)
    for m in range(kh):
        for l in range(kw):  # noqa: E741 (the book's letters)
            top, left = dh * (kh - 1 - m), dw * (kw - 1 - l)
            pixels = xp[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]
            out += torch.matmul(w[:, :, :, m, l], pixels.reshape(n, groups, c // groups, ho * wo))
    out = out.view(n, out_channels, ho, wo)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))
