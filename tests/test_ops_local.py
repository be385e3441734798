"""The neighbours of convolution in the Deep Learning book's section 9.5: true convolution
(convolve2d), unshared convolution (local_conv2d, LocallyConnected2d) and tiled convolution
(tiled_conv2d, TiledConv2d), each against an independent float64 formulation, with gradients of every
order, torch.func, bad arguments, the layers, and LeNet-5 built from them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacfwd, jacrev, vmap

import cnnzoo
import cnnzoo.nn as cnn
from cnnzoo import ops
from cnnzoo.ops import conv as reference_conv
from cnnzoo.ops.functional import resolve_padding

pytestmark = pytest.mark.usefixtures("kernels")
F64 = torch.float64


def book_convolution(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The book's S(i, j) = sum_{m, n} I(i - m, j - n) K(m, n) over every (i, j) where the two overlap,
    one channel, as plain loops (pixels outside the image are zero)."""
    (h, w), (kh, kw) = image.shape, kernel.shape
    out = torch.zeros(h + kh - 1, w + kw - 1, dtype=image.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for m in range(kh):
                for n in range(kw):
                    if 0 <= i - m < h and 0 <= j - n < w:
                        out[i, j] += image[i - m, j - n] * kernel[m, n]
    return out


def unfold_einsum(x, weight, bias, stride=1, padding=0, dilation=1, groups=1):
    """A locally connected layer the usual pure-PyTorch way: every window by ``F.unfold``, then one
    einsum against the kernel of its position. ``padding`` as F.unfold takes it (symmetric)."""
    ho, wo, o, c, kh, kw = weight.shape
    n = x.shape[0]
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride).view(
        n, groups, c * kh * kw, ho * wo
    )
    w = weight.reshape(ho * wo, groups, o // groups, c * kh * kw)
    out = torch.einsum("ngkl,lgok->ngol", cols, w).reshape(n, o, ho, wo)
    if bias is None:
        return out
    return out + (bias.view(1, -1, 1, 1) if bias.dim() == 1 else bias.permute(2, 0, 1).unsqueeze(0))


def expand_tiles(weight: torch.Tensor, plane) -> torch.Tensor:
    """A tiled weight (t_h, t_w, ...) as the locally connected weight it stands for: position (i, j)
    takes set (i mod t_h, j mod t_w)."""
    rows, columns = torch.arange(plane[0]) % weight.shape[0], torch.arange(plane[1]) % weight.shape[1]
    return weight[rows[:, None], columns[None, :]]


def _sym(padding):
    return padding if isinstance(padding, int) else tuple(padding)


# (input size, kernel (O, C/G, kh, kw), keyword arguments with symmetric integer padding)
CASES = [
    ((2, 3, 8, 7), (4, 3, 3, 3), {}),
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, groups=2)),
    ((1, 2, 10, 9), (3, 2, 3, 3), dict(stride=2, dilation=2, padding=(2, 1))),
    ((3, 1, 6, 6), (2, 1, 5, 5), dict(padding=4)),  # 'full' padding
    ((2, 6, 5, 5), (6, 1, 3, 3), dict(groups=6, padding=1)),  # depthwise
    ((2, 3, 7, 6), (5, 3, 1, 1), {}),  # 1x1
]


# --- convolve2d: true convolution ------------------------------------------------------------------


def test_convolve2d_is_the_books_formula():
    """With full padding the operator is S(i, j) = sum I(i - m, j - n) K(m, n), computed by loops."""
    torch.manual_seed(0)
    image, kernel = torch.randn(5, 6, dtype=F64), torch.randn(3, 2, dtype=F64)
    expected = book_convolution(image, kernel)
    got = ops.convolve2d(image[None, None], kernel[None, None], padding="full")[0, 0]
    torch.testing.assert_close(got, expected)
    # several channels: one such sum per channel, added up
    images, kernels = torch.randn(3, 5, 6, dtype=F64), torch.randn(3, 3, 2, dtype=F64)
    expected = sum(book_convolution(i, k) for i, k in zip(images, kernels))
    torch.testing.assert_close(ops.convolve2d(images[None], kernels[None], padding="full")[0, 0], expected)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_convolve2d_is_cross_correlation_with_the_kernel_flipped(input_size, weight_size, kwargs, dtype):
    torch.manual_seed(0)
    x = torch.randn(input_size, dtype=dtype, requires_grad=True)
    w = torch.randn(weight_size, dtype=dtype, requires_grad=True)
    b = torch.randn(weight_size[0], dtype=dtype, requires_grad=True)
    mine, ref = ops.convolve2d(x, w, b, **kwargs), F.conv2d(x, w.flip(2, 3), b, **kwargs)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(mine, ref, **tol)
    cotangent = torch.randn_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(mine, (x, w, b), cotangent), torch.autograd.grad(ref, (x, w, b), cotangent), **tol
    )
    # the tap-by-tap reference, which reads the window backwards instead of flipping the kernel
    stride, dilation = [
        (v, v) if isinstance(v, int) else v for v in (kwargs.get("stride", 1), kwargs.get("dilation", 1))
    ]
    padding = resolve_padding(kwargs.get("padding", 0), weight_size[2:], stride, dilation)
    with torch.no_grad():
        tap = reference_conv.convolve2d(x, w, b, stride, padding, dilation, kwargs.get("groups", 1))
    torch.testing.assert_close(tap, ref.detach(), **tol)


def test_convolve2d_padding_strings():
    x, w = torch.randn(1, 2, 7, 6, dtype=F64), torch.randn(3, 2, 4, 3, dtype=F64)
    for padding in ("valid", "same", "full"):
        ref = F.conv2d(F.pad(x, _torch_pad(padding, (4, 3))), w.flip(2, 3))
        torch.testing.assert_close(ops.convolve2d(x, w, padding=padding), ref)
    assert ops.convolve2d(x, w, padding="same").shape[2:] == x.shape[2:]


def _torch_pad(padding: str, kernel) -> tuple[int, int, int, int]:
    top, bottom, left, right = resolve_padding(padding, kernel, (1, 1), (1, 1))
    return left, right, top, bottom


def test_convolution_commutes_and_cross_correlation_does_not():
    """The book's remark: convolution is commutative (flip the kernel and swap the roles); with one
    channel and full padding, convolve2d(x, w) equals convolve2d(w, x), and cross-correlation does not."""
    torch.manual_seed(0)
    x, w = torch.randn(1, 1, 6, 5, dtype=F64), torch.randn(1, 1, 3, 4, dtype=F64)
    torch.testing.assert_close(ops.convolve2d(x, w, padding="full"), ops.convolve2d(w, x, padding="full"))
    xw, wx = ops.conv2d(x, w, padding="full"), ops.conv2d(w, x, padding="full")
    assert xw.shape == wx.shape and not torch.allclose(xw, wx)
    torch.testing.assert_close(xw, wx.flip(2, 3))  # it is the other order read backwards


def test_convolve2d_gradients_of_every_order_and_torch_func():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 3, dtype=F64, requires_grad=True)
    w = torch.randn(2, 1, 3, 2, dtype=F64, requires_grad=True)
    b = torch.randn(2, dtype=F64, requires_grad=True)

    def fn(x, w, b):
        return ops.convolve2d(x, w, b, stride=(2, 1), padding=1, groups=2)

    def ref(x, w, b):
        return F.conv2d(x, w.flip(2, 3), b, stride=(2, 1), padding=1, groups=2)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    _check_torch_func(fn, ref, (x, w, b))


def _check_torch_func(fn, ref, args):
    """jacrev and jacfwd with respect to every argument, and vmap over stacks of every argument."""
    for transform in (jacrev, jacfwd):
        for argnum in range(len(args)):
            torch.testing.assert_close(transform(fn, argnums=argnum)(*args), transform(ref, argnums=argnum)(*args))
    stacks = [torch.stack([a.detach(), 2 * a.detach() - 1]) for a in args]
    torch.testing.assert_close(vmap(fn)(*stacks), vmap(ref)(*stacks))
    torch.testing.assert_close(
        vmap(fn, (0, None, None))(stacks[0], *args[1:]), vmap(ref, (0, None, None))(stacks[0], *args[1:])
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(padding="same", stride=2), ValueError, r"convolve2d: padding='same' is not supported for strided"),
        (dict(padding="half"), ValueError, r"convolve2d: invalid padding string 'half'"),
        (dict(padding=-1), ValueError, r"convolve2d: padding must be non-negative"),
        (dict(padding=(1, 2, 3)), ValueError, r"convolve2d: padding must be a single int or a pair"),
        (dict(groups=2), ValueError, r"convolve2d: weight of size \[4, 3, 3, 3\] with groups=2 expects input with 6"),
    ],
)
def test_convolve2d_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.convolve2d(torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3), **kwargs)


# --- local_conv2d: unshared convolution ---------------------------------------------------------------


def _plane(input_size, weight_size, kwargs):
    return F.conv2d(torch.empty(input_size, device="meta"), torch.empty(weight_size, device="meta"), **kwargs).shape[2:]


@pytest.mark.parametrize("shared_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_local_conv2d_matches_unfold_and_einsum(input_size, weight_size, kwargs, dtype, shared_bias):
    torch.manual_seed(0)
    ho, wo = _plane(input_size, weight_size, kwargs)
    x = torch.randn(input_size, dtype=F64, requires_grad=True)
    w = torch.randn(ho, wo, *weight_size, dtype=F64, requires_grad=True)
    b = torch.randn(*(() if shared_bias else (ho, wo)), weight_size[0], dtype=F64, requires_grad=True)
    ref = unfold_einsum(x, w, b, **kwargs)  # float64, whatever the dtype under test
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
    mine = ops.local_conv2d(*leaves, **kwargs)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(mine.double(), ref, **tol)
    cotangent = torch.randn_like(ref)
    grads = torch.autograd.grad(mine, leaves, cotangent.to(dtype))
    for got, want in zip(grads, torch.autograd.grad(ref, (x, w, b), cotangent)):
        torch.testing.assert_close(got.double(), want, **tol)


@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_local_conv2d_with_one_kernel_everywhere_is_conv2d(input_size, weight_size, kwargs):
    torch.manual_seed(0)
    ho, wo = _plane(input_size, weight_size, kwargs)
    x = torch.randn(input_size, dtype=F64, requires_grad=True)
    kernel = torch.randn(weight_size, dtype=F64, requires_grad=True)
    b = torch.randn(weight_size[0], dtype=F64)
    shared = kernel.expand(ho, wo, *weight_size)  # every position the same kernel
    torch.testing.assert_close(ops.local_conv2d(x, shared, b, **kwargs), F.conv2d(x, kernel, b, **kwargs))
    # and the shared kernel's gradient is the sum of every position's
    g = torch.randn(x.shape[0], weight_size[0], ho, wo, dtype=F64)
    mine = torch.autograd.grad(ops.local_conv2d(x, shared, b, **kwargs), (x, kernel), g)
    torch.testing.assert_close(mine, torch.autograd.grad(F.conv2d(x, kernel, b, **kwargs), (x, kernel), g))


def test_local_conv2d_gradients_of_every_order_and_torch_func():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 4, dtype=F64, requires_grad=True)
    w = torch.randn(3, 2, 2, 1, 3, 2, dtype=F64, requires_grad=True)  # 3x2 positions
    b = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)

    def fn(x, w, b):
        return ops.local_conv2d(x, w, b, stride=2, padding=(1, 0), groups=2)

    def ref(x, w, b):
        return unfold_einsum(x, w, b, stride=2, padding=(1, 0), groups=2)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    _check_torch_func(fn, ref, (x, w, b))


@pytest.mark.parametrize(
    "weight,bias,kwargs,match",
    [
        (
            (5, 5, 4, 3, 3, 3),
            None,
            {},
            r"local_conv2d: weight of size \[5, 5, 4, 3, 3, 3\] has kernels for a 5 x 5 output "
            r"plane, but input of size \[1, 3, 8, 8\] .* gives a 6 x 6 plane",
        ),
        ((6, 6, 4, 3, 3, 3), None, dict(stride=2), r"gives a 3 x 3 plane"),
        (
            (6, 6, 4, 3, 3, 3),
            (6, 6, 5),
            {},
            r"local_conv2d: bias must be of size \[4\] or \[6, 6, 4\] .* got \[6, 6, 5\]",
        ),
        ((6, 6, 4, 3, 3, 3), (36, 4), {}, r"bias must be of size"),
        ((4, 3, 3, 3), None, {}, r"local_conv2d: weight must be a 6D tensor \(out_height, out_width, out_channels"),
        ((6, 6, 4, 2, 3, 3), None, {}, r"expects input with 2 channels"),
        ((6, 6, 4, 3, 3, 3), None, dict(padding="same", stride=2), r"local_conv2d: padding='same' is not supported"),
    ],
)
def test_local_conv2d_bad_arguments(weight, bias, kwargs, match):
    b = None if bias is None else torch.randn(bias)
    with pytest.raises(ValueError, match=match):
        ops.local_conv2d(torch.randn(1, 3, 8, 8), torch.randn(weight), b, **kwargs)


# --- tiled_conv2d ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tile", [(torch.float32, (2, 2)), (F64, (2, 2)), (F64, (3, 2))])
@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_tiled_conv2d_cycles_its_kernel_sets(input_size, weight_size, kwargs, dtype, tile):
    """Position (i, j) uses set (i mod t_h, j mod t_w): the locally connected layer of the expanded
    weight, tiles that divide the plane and tiles that do not."""
    torch.manual_seed(0)
    plane = _plane(input_size, weight_size, kwargs)
    if tile[0] > plane[0] or tile[1] > plane[1]:
        pytest.skip("the tile does not fit this plane")
    x = torch.randn(input_size, dtype=F64, requires_grad=True)
    w = torch.randn(*tile, *weight_size, dtype=F64, requires_grad=True)
    b = torch.randn(weight_size[0], dtype=F64, requires_grad=True)
    ref = unfold_einsum(x, expand_tiles(w, plane), b, **kwargs)
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
    mine = ops.tiled_conv2d(*leaves, **kwargs)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(mine.double(), ref, **tol)
    cotangent = torch.randn_like(ref)
    for got, want in zip(
        torch.autograd.grad(mine, leaves, cotangent.to(dtype)), torch.autograd.grad(ref, (x, w, b), cotangent)
    ):
        torch.testing.assert_close(got.double(), want, **tol)


@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_tiled_conv2d_between_conv2d_and_local_conv2d(input_size, weight_size, kwargs):
    torch.manual_seed(0)
    x = torch.randn(input_size, dtype=F64)
    kernel, b = torch.randn(weight_size, dtype=F64), torch.randn(weight_size[0], dtype=F64)
    torch.testing.assert_close(ops.tiled_conv2d(x, kernel[None, None], b, **kwargs), F.conv2d(x, kernel, b, **kwargs))
    plane = _plane(input_size, weight_size, kwargs)
    w = torch.randn(*plane, *weight_size, dtype=F64)
    torch.testing.assert_close(ops.tiled_conv2d(x, w, b, **kwargs), ops.local_conv2d(x, w, b, **kwargs))


def test_tiled_conv2d_gradients_of_every_order_and_torch_func():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=F64, requires_grad=True)
    w = torch.randn(2, 2, 2, 1, 3, 2, dtype=F64, requires_grad=True)
    b = torch.randn(2, dtype=F64, requires_grad=True)

    def fn(x, w, b):
        return ops.tiled_conv2d(x, w, b, padding=(1, 0), dilation=(1, 2), groups=2)

    def ref(x, w, b):
        plane = (4, 3)
        return unfold_einsum(x, expand_tiles(w, plane), b, padding=(1, 0), dilation=(1, 2), groups=2)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    _check_torch_func(fn, ref, (x, w, b))


@pytest.mark.parametrize(
    "weight,bias,match",
    [
        (
            (7, 2, 4, 3, 3, 3),
            None,
            r"tiled_conv2d: a tile of 7 x 2 kernel sets .* must be at least 1 x 1 and fit the "
            r"6 x 6 output plane",
        ),
        ((0, 2, 4, 3, 3, 3), None, r"a tile of 0 x 2 kernel sets"),
        ((2, 2, 4, 3, 3, 3), (6, 6, 4), r"tiled_conv2d: bias must be of size \[4\] for weight"),
        ((2, 2, 4, 3, 3), None, r"tiled_conv2d: weight must be a 6D tensor \(tile_height, tile_width"),
    ],
)
def test_tiled_conv2d_bad_arguments(weight, bias, match):
    b = None if bias is None else torch.randn(bias)
    with pytest.raises(ValueError, match=match):
        ops.tiled_conv2d(torch.randn(1, 3, 8, 8), torch.randn(weight), b)


# --- the layers --------------------------------------------------------------------------------------


def test_locally_connected_layer():
    torch.manual_seed(0)
    layer = cnn.LocallyConnected2d(1, 6, 5, input_size=32)
    assert layer.weight.shape == (28, 28, 6, 1, 5, 5) and layer.bias.shape == (28, 28, 6)
    assert sum(p.numel() for p in layer.parameters()) == 28 * 28 * (6 * 25 + 6) == 122_304
    bound = 1 / 25**0.5  # torch.nn.Conv2d's default initialisation, per kernel
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(layer(x), unfold_einsum(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.kernel_at(3, 7), layer.weight[3, 7])
    with pytest.raises(ValueError, match=r"LocallyConnected2d: built for 32 x 32 inputs .* 28 x 28 output positions"):
        layer(torch.randn(1, 1, 28, 28))
    shared = cnn.LocallyConnected2d(4, 6, 3, input_size=(9, 8), stride=2, padding="valid", groups=2, shared_bias=True)
    assert shared.weight.shape == (4, 3, 6, 2, 3, 3) and shared.bias.shape == (6,)
    assert "shared_bias=True" in repr(shared) and "input_size=(9, 8)" in repr(shared)
    assert cnn.LocallyConnected2d(3, 4, 3, 8, padding="same", bias=False).weight.shape[:2] == (8, 8)
    state = layer.state_dict()
    assert set(state) == {"weight", "bias"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_size=4), r"LocallyConnected2d: input_size=\(4, 4\) .* leaves no output position"),
        (dict(input_size=8, groups=2), r"must be positive multiples of groups=2"),
        (dict(input_size=8, padding="same", stride=2), r"LocallyConnected2d: padding='same' is not supported"),
        (dict(input_size=8, stride=0), r"must be positive"),
    ],
)
def test_locally_connected_layer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn.LocallyConnected2d(3, 4, 5, **kwargs)


def test_tiled_layer():
    torch.manual_seed(0)
    layer = cnn.TiledConv2d(6, 16, 5, tile_size=2)
    assert layer.weight.shape == (2, 2, 16, 6, 5, 5) and layer.bias.shape == (16,)
    assert sum(p.numel() for p in layer.parameters()) == 4 * 16 * 150 + 16 == 9_616
    x = torch.randn(2, 6, 14, 14)
    ref = unfold_einsum(x, expand_tiles(layer.weight, (10, 10)), layer.bias)
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(layer.kernel_at(5, 2), layer.weight[1, 0])
    with pytest.raises(ValueError, match=r"TiledConv2d: tile_size must be positive"):
        cnn.TiledConv2d(6, 16, 5, tile_size=(2, 0))
    with pytest.raises(ValueError, match=r"tiled_conv2d: a tile of 2 x 2 kernel sets .* fit the 1 x 1 output plane"):
        layer(torch.randn(1, 6, 5, 5))


def test_true_convolution_layer():
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 3, padding=1)
    torch.manual_seed(0)
    layer = cnn.Convolve2d(3, 4, 3, padding=1)
    assert isinstance(layer, nn.Conv2d) and torch.equal(layer.weight, ref.weight)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(
        layer(x), F.conv2d(x, layer.weight.flip(2, 3), layer.bias, padding=1), atol=1e-5, rtol=1e-5
    )
    assert torch.equal(layer.kernel_at(0, 0), layer.weight.flip(2, 3))
    positional = cnn.Convolve2d(4, 6, 3, 1, 2, 2, 2, False)  # torch.nn.Conv2d's order: dilation, groups, bias
    assert (positional.dilation, positional.groups, positional.bias) == ((2, 2), 2, None)
    full = cnn.Convolve2d(1, 1, (2, 3), padding="full")
    assert full(torch.randn(1, 1, 4, 4)).shape == (1, 1, 5, 6)
    with pytest.raises(ValueError, match=r"Convolve2d: only padding_mode='zeros'"):
        cnn.Convolve2d(1, 1, 3, padding=1, padding_mode="reflect")


# --- LeNet-5 with unshared and tiled C1 and C3 -----------------------------------------------------------


def test_lenet5_connectivity():
    counts = {}
    for connectivity in ("conv", "tiled", "local"):
        model = cnnzoo.create_model("lenet5", connectivity=connectivity)
        counts[connectivity] = sum(p.numel() for p in model.parameters())
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    # C1 and C3 change: 156 + 2,416 as convolutions; 606 + 9,616 tiled; 122,304 + 241,600 unshared
    assert counts == {"conv": 61_706, "tiled": 69_356, "local": 423_038}
    local = cnnzoo.create_model("lenet5", connectivity="local")
    assert [type(m).__name__ for m in local.features if hasattr(m, "weight")] == [
        "LocallyConnected2d",
        "LocallyConnected2d",
        "Conv2d",
    ]
    with pytest.raises(ValueError, match=r"input of size \[1, 1, 34, 34\]|34"):
        local(torch.randn(1, 1, 34, 34))
    with pytest.raises(ValueError, match=r"connectivity must be one of \['conv', 'tiled', 'local'\], got 'dense'"):
        cnnzoo.create_model("lenet5", connectivity="dense")
    with pytest.raises(ValueError, match=r"connectivity='local' needs backend='custom'"):
        cnnzoo.create_model("lenet5", connectivity="local", backend="torch")


def test_compile_and_export_take_the_new_layers():
    """torch.compile (one graph, forward and backward) and torch.export see the operators, not a break."""
    torch.manual_seed(0)
    model = nn.Sequential(
        cnn.LocallyConnected2d(2, 3, 3, input_size=8, padding=1),
        cnn.TiledConv2d(3, 4, 3, tile_size=2, stride=2),
        cnn.Convolve2d(4, 2, 2),
    )
    x = torch.randn(2, 2, 8, 8)
    expected = model(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), model[0].weight)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.sum(), model[0].weight)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, expected_grad)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"cnnzoo.local_conv2d.default", "cnnzoo.tiled_conv2d.default", "cnnzoo.convolve2d.default"} <= targets
    torch.testing.assert_close(exported.module()(x), expected)
