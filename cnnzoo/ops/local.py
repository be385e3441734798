"""Convolution without (or with less) parameter sharing, written out by hand: the reference of the
``torch.ops.cnnzoo.local_conv2d*`` and ``tiled_conv2d`` operators (see ``library.py``). These are the
neighbours the Deep Learning book (Goodfellow et al., section 9.5) sets beside convolution:

* the **locally connected layer** (unshared convolution): every output position ``(i, j)`` has a kernel
  of its own, ``weight[i, j]`` of shape (O, C/G, kh, kw), so the weight is (Ho, Wo, O, C/G, kh, kw).
  It keeps convolution's sparse connectivity (each output sees one window) and drops its parameter
  sharing:

      out[n, o, i, j] = sum_{c, m, l} weight[i, j, o, c, m, l] * x_pad[n, c, i*s + m*d, j*s + l*d]

  Computed as one small matrix product per output position: position (i, j)'s windows over the batch,
  (N, C/G*kh*kw), times its own kernels, (C/G*kh*kw, O/G), per group.

* **tiled convolution**: ``t_h x t_w`` kernel sets cycle over the output positions; position (i, j)
  uses set ``(i mod t_h, j mod t_w)`` (the book's figure 9.16). The positions of one set lie on a
  grid ``t`` times coarser, so each set is an ordinary convolution whose stride is ``t`` times the
  layer's, over the input shifted to the set's first window: ``t_h * t_w`` convolutions fill the
  output. Tile (1, 1) is a convolution; a tile as large as the output plane is a locally connected
  layer.

Every function takes checked, normalised arguments (a batched input, padding as ``(top, bottom, left,
right)``) and runs below autograd: the registered operators give them their derivatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .conv import Padding4, col2im_add, conv2d_forward, conv2d_input_grad, conv2d_weight_grad, pad2d, windows


def position_windows(x: torch.Tensor, kernel, stride, padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """Every output position's windows over the batch, copied out: (Ho*Wo, G, N, C/G*kh*kw). Row ``n``
    of position ``(i, j)`` lines up with ``weight[i, j, o, c, m, l]`` flattened over (c, m, l)."""
    win = windows(pad2d(x, padding), kernel, stride, dilation)  # N C Ho Wo kh kw, a view
    n, c, ho, wo, kh, kw = win.shape
    win = win.reshape(n, groups, c // groups, ho, wo, kh, kw).permute(3, 4, 1, 0, 2, 5, 6)
    return win.reshape(ho * wo, groups, n, -1)


def _per_position(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A locally connected weight (Ho, Wo, O, C/G, kh, kw) as (Ho*Wo, G, O/G, C/G*kh*kw)."""
    ho, wo, o = weight.shape[:3]
    return weight.reshape(ho * wo, groups, o // groups, -1)


def add_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``out`` (N, O, Ho, Wo) plus a bias shared by all positions (O,) or one per position (Ho, Wo, O)."""
    if bias is None:
        return out
    return out.add_(bias.view(1, -1, 1, 1) if bias.dim() == 1 else bias.permute(2, 0, 1).unsqueeze(0))


def local_conv2d(x, weight, bias, stride, padding: Padding4, dilation, groups: int) -> torch.Tensor:
    """The locally connected layer's forward pass: at each position, its windows times its kernels."""
    n, (ho, wo, o) = x.shape[0], weight.shape[:3]
    cols = position_windows(x, weight.shape[4:], stride, padding, dilation, groups)  # L G N K
    products = torch.matmul(cols, _per_position(weight, groups).transpose(2, 3))  # L G N O/G
    out = products.permute(2, 1, 3, 0).reshape(n, o, ho, wo)
    return add_bias(out, bias)


def _position_rows(grad_out: torch.Tensor, groups: int) -> torch.Tensor:
    """``grad_out`` (N, O, Ho, Wo) as (Ho*Wo, G, N, O/G), the rows of each position's product, copied
    out: a batch of matrix products over a dimension of stride 1 runs one product at a time."""
    n, o = grad_out.shape[:2]
    return grad_out.reshape(n, groups, o // groups, -1).permute(3, 1, 0, 2).contiguous()


def local_conv2d_input_grad(
    grad_out: torch.Tensor, weight: torch.Tensor, input_size, stride, padding: Padding4, dilation, groups: int
) -> torch.Tensor:
    """Each position sends its gradient back through its own kernels to its window: the windows'
    gradients, (N, G, O/G) @ (O/G, C/G*kh*kw) per position, added back in place (col2im)."""
    n, c, h, w = input_size
    ho, wo = weight.shape[:2]
    kh, kw = weight.shape[4:]
    top, bottom, left, right = padding
    cols = torch.matmul(_position_rows(grad_out, groups), _per_position(weight, groups))  # L G N K
    cols = cols.view(ho, wo, groups, n, c // groups, kh, kw).permute(3, 2, 4, 5, 6, 0, 1).reshape(n, c, kh, kw, ho, wo)
    grad_padded = grad_out.new_zeros(n, c, h + top + bottom, w + left + right)
    col2im_add(grad_padded, cols, stride, dilation)
    return grad_padded[:, :, top : top + h, left : left + w]


def local_conv2d_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, weight_size, stride, padding: Padding4, dilation, groups: int
) -> torch.Tensor:
    """Each position's kernels' gradient: its rows of ``grad_out`` times its windows, summed over the
    batch, (O/G, N) @ (N, C/G*kh*kw) per position and group."""
    cols = position_windows(x, weight_size[4:], stride, padding, dilation, groups)  # L G N K
    grad = torch.matmul(_position_rows(grad_out, groups).transpose(2, 3), cols)  # L G O/G K
    return grad.reshape(weight_size)


def tile_sets(tile: tuple[int, int], stride) -> list[tuple[int, int, tuple[int, int], slice, slice]]:
    """The kernel sets of a tiled convolution: ``(a, b, offset, rows, columns)`` for set (a, b), whose
    windows start at ``offset`` in the padded input, and whose outputs are ``out[..., rows, columns]``."""
    (th, tw), (sh, sw) = tile, stride
    return [(a, b, (a * sh, b * sw), slice(a, None, th), slice(b, None, tw)) for a in range(th) for b in range(tw)]


def tiled_conv2d(x, weight, bias, stride, padding: Padding4, dilation, groups: int, conv=None) -> torch.Tensor:
    """The tiled convolution's forward pass: each kernel set is a convolution with ``tile`` times the
    stride over the padded input shifted to its first window. ``conv(x, w, None, stride, padding,
    dilation, groups)`` computes each (the reference convolution by default)."""
    conv = conv or conv2d_forward
    (th, tw), (sh, sw) = weight.shape[:2], stride
    xp = pad2d(x, padding)
    ho = (xp.shape[2] - dilation[0] * (weight.shape[4] - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dilation[1] * (weight.shape[5] - 1) - 1) // sw + 1
    out = x.new_empty(x.shape[0], weight.shape[2], ho, wo)
    coarse = (th * sh, tw * sw)
    for a, b, (top, left), rows, columns in tile_sets((th, tw), stride):
        out[:, :, rows, columns] = conv(xp[:, :, top:, left:], weight[a, b], None, coarse, (0,) * 4, dilation, groups)
    return add_bias(out, bias)


def tiled_conv2d_input_grad(grad_out, weight, input_size, stride, padding: Padding4, dilation, groups: int, grad=None):
    """Each kernel set's convolution sends its outputs' gradient back to the shifted input it read, and
    the sets' gradients add up; ``grad(gy, w, size, stride, padding, dilation, groups)`` is a
    convolution's input gradient. Written without writing in place, so that it is its own formula for
    every order of derivative (``library.py``)."""
    grad = grad or conv2d_input_grad
    n, c, h, w = input_size
    top, bottom, left, right = padding
    th, tw = weight.shape[:2]
    coarse = (th * stride[0], tw * stride[1])
    hp, wp = h + top + bottom, w + left + right
    total = None
    for a, b, (y, x), rows, columns in tile_sets((th, tw), stride):
        part = grad(
            grad_out[:, :, rows, columns], weight[a, b], (n, c, hp - y, wp - x), coarse, (0,) * 4, dilation, groups
        )
        part = F.pad(part, (x, 0, y, 0))
        total = part if total is None else total + part
    return total[:, :, top : top + h, left : left + w]


def tiled_conv2d_weight_grad(x, grad_out, weight_size, stride, padding: Padding4, dilation, groups: int, grad=None):
    """Each kernel set's gradient is its convolution's weight gradient, over the outputs it makes;
    ``grad(x, gy, size, stride, padding, dilation, groups)`` is a convolution's weight gradient."""
    grad = grad or conv2d_weight_grad
    th, tw = weight_size[:2]
    coarse = (th * stride[0], tw * stride[1])
    xp = pad2d(x, padding)
    sets = [
        grad(xp[:, :, y:, x_:], grad_out[:, :, rows, columns], weight_size[2:], coarse, (0,) * 4, dilation, groups)
        for _, _, (y, x_), rows, columns in tile_sets((th, tw), stride)
    ]
    return torch.stack(sets).reshape(weight_size)
