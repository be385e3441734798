"""Winograd's minimal filtering for 3x3, stride-1 convolutions (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016): the reference implementation of ``algorithm="winograd_f2"`` and
``"winograd_f4"``.

In one dimension, F(m, 3) computes ``m`` outputs of a 3-tap correlation from ``m + 2`` inputs ``d`` as

    y = A^T [ (G g) * (B^T d) ]        (* elementwise: m + 2 multiplications instead of 3m)

and nesting it gives the 2-D tile algorithm F(m x m, 3 x 3), for an (m + 2) x (m + 2) input tile ``d``
and a 3x3 filter ``g``:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

(m + 2)^2 multiplications for m^2 outputs, against 9 m^2 for the direct sum: 2.25x fewer for F(2x2, 3x3)
and 4x fewer for F(4x4, 3x3). Over a layer the transforms are shared: a filter is transformed once for
all tiles, a tile once for all filters, and the elementwise products summed over the input channels
become (m + 2)^2 matrix products, one per position in the transformed tile.

The price is precision: the transforms' entries (1/6, 1/24, 4, 8 for F(4x4)) grow the rounding errors,
more so for larger tiles. ``cnnzoo.report --algorithms`` measures how much, per layer.

The backward passes stay in the transformed domain:

* the input gradient of a 3x3 stride-1 convolution is itself one (the filters flipped, their input and
  output channels swapped, the padding ``2 - p``), so it runs the forward algorithm;
* the weight gradient comes from the same identity read the other way. ``<Y*, Y>`` for the output
  gradient ``Y*`` is ``sum (A Y* A^T) * (G g G^T) * (B^T d B)``, linear in ``g``, so

      dL/dg = G^T [ (A Y* A^T) * (B^T d B) ] G,

  summed over every tile: (m + 2)^2 matrix products over the tiles, then one transform per filter.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ._args import accumulation_dtype

# F(2, 3): interpolation at 0, 1, -1 and infinity (Lavin & Gray's equations (5)-(6))
_F2 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],  # B^T: (m + 2) x (m + 2)
    [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],  # G: (m + 2) x 3
    [[1, 1, 1, 0], [0, 1, -1, -1]],  # A^T: m x (m + 2)
)
# F(4, 3): interpolation at 0, 1, -1, 2, -2 and infinity (the paper's equation (7))
_F4 = (
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
TILES = {2: _F2, 4: _F4}


@functools.cache
def _transforms_cpu(m: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(t, dtype=torch.float64).to(dtype) for t in TILES[m])


def transforms(m: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B^T, G, A^T)`` of F(m x m, 3 x 3), in ``dtype`` on ``device``."""
    return tuple(t.to(device) for t in _transforms_cpu(m, dtype))


def _input_tiles(x: torch.Tensor, padding, m: int, tiles: tuple[int, int]) -> torch.Tensor:
    """The overlapping (m + 2) x (m + 2) tiles of the padded input, (N, C, tiles_h, tiles_w, m + 2, m + 2):
    tile (i, j) starts at padded pixel (i m, j m). Zeros below and right complete the last tiles;
    a negative padding crops."""
    top, bottom, left, right = padding
    (th, tw), (h, w) = tiles, x.shape[2:]
    extra_h = th * m + 2 - (h + top + bottom)
    extra_w = tw * m + 2 - (w + left + right)
    xp = F.pad(x, (left, right + extra_w, top, bottom + extra_h))
    return xp.unfold(2, m + 2, m).unfold(3, m + 2, m)


def _by_position(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Transformed tiles (N, C, th, tw, a, a) as (G, a*a, C/G, N*th*tw): one matrix per tile position."""
    n, c, th, tw, a, _ = t.shape
    return (
        t.reshape(n, groups, c // groups, th * tw, a * a).permute(1, 4, 2, 0, 3).reshape(groups, a * a, c // groups, -1)
    )


def conv2d_forward(x, weight, bias, padding, groups: int, m: int = 4) -> torch.Tensor:
    """out[n, o, y, x] = sum_{c, i, j} weight[o, c, i, j] * x_pad[n, c, y + i, x + j] for a 3x3, stride-1
    filter, tile by tile with F(m x m, 3 x 3). ``padding`` is ``(top, bottom, left, right)``; a negative
    entry crops (the input gradient uses that)."""
    dtype = accumulation_dtype(x.dtype)
    BT, G, AT = transforms(m, dtype, x.device)
    n, _, h, w = x.shape
    o, a = weight.shape[0], m + 2
    ho, wo = h + padding[0] + padding[1] - 2, w + padding[2] + padding[3] - 2
    th, tw = math.ceil(ho / m), math.ceil(wo / m)
    if x.numel() == 0 or weight.numel() == 0:  # no images, no channels or no filters: the empty sum
        out = x.new_zeros(n, o, ho, wo, dtype=dtype)
        return (out if bias is None else out + bias.to(dtype).view(1, -1, 1, 1)).to(x.dtype)
    d = _input_tiles(x.to(dtype), padding, m, (th, tw))
    V = BT @ d @ BT.mT  # each tile transformed: (N, C, th, tw, a, a)
    U = G @ weight.to(dtype) @ G.mT  # each filter transformed: (O, C/G, a, a)
    U = U.reshape(groups, o // groups, -1, a * a).permute(0, 3, 1, 2)  # (G, a*a, O/G, C/G)
    M = U @ _by_position(V, groups)  # summed over the channels: (G, a*a, O/G, N*th*tw)
    M = M.reshape(groups, a, a, o // groups, n, th, tw).permute(4, 0, 3, 5, 6, 1, 2).reshape(n, o, th, tw, a, a)
    Y = AT @ M @ AT.mT  # each tile's m x m outputs: (N, O, th, tw, m, m)
    out = Y.permute(0, 1, 2, 4, 3, 5).reshape(n, o, th * m, tw * m)[:, :, :ho, :wo]
    if bias is not None:
        out = out + bias.to(dtype).view(1, -1, 1, 1)
    return out.to(x.dtype)


def conv2d_input_grad(grad_out, weight, input_size, padding, groups: int, m: int = 4) -> torch.Tensor:
    """The input gradient, a 3x3 stride-1 convolution of the output gradient: the filters flipped, each
    group's input and output channels swapped, and the padding ``2 - p`` on every side (a crop where
    ``p > 2``: those input pixels met the filter's edge taps only)."""
    o, cg = weight.shape[:2]
    swapped = weight.reshape(groups, o // groups, cg, 3, 3).transpose(1, 2).reshape(groups * cg, o // groups, 3, 3)
    top, bottom, left, right = padding
    grad = conv2d_forward(grad_out, swapped.flip(2, 3), None, (2 - top, 2 - bottom, 2 - left, 2 - right), groups, m)
    assert grad.shape[2:] == tuple(input_size[2:])
    return grad


def conv2d_weight_grad(x, grad_out, padding, groups: int, m: int = 4) -> torch.Tensor:
    """dL/dg = G^T [ sum over images and tiles of (A Y* A^T) * (B^T d B) ] G, where ``Y*`` is an output
    tile's gradient (zeros past the last row and column) and ``d`` the input tile under it."""
    dtype = accumulation_dtype(x.dtype)
    BT, G, AT = transforms(m, dtype, x.device)
    n, o, ho, wo = grad_out.shape
    a, cg = m + 2, x.shape[1] // groups
    th, tw = math.ceil(ho / m), math.ceil(wo / m)
    if x.numel() == 0 or grad_out.numel() == 0:
        return x.new_zeros(o, cg, 3, 3)
    V = _by_position(BT @ _input_tiles(x.to(dtype), padding, m, (th, tw)) @ BT.mT, groups)  # (G, a*a, C/G, P)
    gy = F.pad(grad_out.to(dtype), (0, tw * m - wo, 0, th * m - ho))
    gy = gy.reshape(n, o, th, m, tw, m).permute(0, 1, 2, 4, 3, 5)  # the output tiles: (N, O, th, tw, m, m)
    Q = _by_position(AT.mT @ gy @ AT, groups)  # (G, a*a, O/G, P)
    M = Q @ V.mT  # summed over images and tiles: (G, a*a, O/G, C/G)
    M = M.permute(0, 2, 3, 1).reshape(o, cg, a, a)
    return (G.mT @ M @ G).to(x.dtype)
