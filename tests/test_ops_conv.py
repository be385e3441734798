"""cnnzoo.ops.conv2d against torch.nn.functional.conv2d."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import ops
from cnnzoo.ops import conv as conv_module

from .helpers import assert_matches

# every test here runs with the reference kernels and with the compiled ones
pytestmark = pytest.mark.usefixtures("kernels")

STRIDES = [1, 2, (2, 1), (1, 3)]
PADDINGS = [0, 1, (2, 1), "valid", "same", "full"]
DILATIONS = [1, 2, (1, 2)]
KERNELS = [(3, 3), (2, 3), (1, 1), (5, 4)]


def f_conv2d_full(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """The reference for padding='full': explicit padding dilation * (k - 1) on each side."""
    if padding == "full":
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        padding = (dh * (w.shape[2] - 1), dw * (w.shape[3] - 1))
    return F.conv2d(x, w, b, stride, padding, dilation, groups)


def conv_cases():
    for stride, padding, dilation, kernel in itertools.product(STRIDES, PADDINGS, DILATIONS, KERNELS):
        if padding == "same" and stride != 1:
            continue
        yield stride, padding, dilation, kernel


SWEEP = list(conv_cases())


def sweep_size() -> int:
    return len(SWEEP) * 2 * 2 * 2  # x groups x bias x dtypes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_sweep_matches_functional(dtype, groups, bias, device):
    gen = torch.Generator().manual_seed(1234)
    checked = 0
    for stride, padding, dilation, kernel in SWEEP:
        x = torch.randn(2, 4, 9, 8, generator=gen, dtype=dtype).to(device)
        w = torch.randn(6, 4 // groups, *kernel, generator=gen, dtype=dtype).to(device)
        b = torch.randn(6, generator=gen, dtype=dtype).to(device) if bias else None
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if padding == 0 and (9 < dh * (kernel[0] - 1) + 1 or 8 < dw * (kernel[1] - 1) + 1):
            continue
        assert_matches(ops.conv2d, f_conv2d_full, [x, w, b], kwargs)
        checked += 1
    assert checked > 150


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((1, 1, 5, 5), (1, 1, 3, 3), {}),  # batch 1, one channel
        ((3, 1, 32, 32), (6, 1, 5, 5), {}),  # LeNet C1
        ((2, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3
        ((1, 3, 31, 29), (8, 3, 11, 11), dict(stride=4, padding=2)),  # AlexNet conv1 on a small input
        ((2, 8, 7, 5), (8, 2, 3, 3), dict(padding=1, groups=4)),
        ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
        ((2, 3, 6, 9), (4, 3, 2, 4), dict(padding="same", dilation=(2, 1))),  # even kernel: uneven 'same' split
        ((0, 3, 6, 6), (4, 3, 3, 3), dict(padding=1)),  # empty batch
        ((2, 3, 1, 1), (4, 3, 1, 1), {}),
        ((2, 3, 3, 3), (4, 3, 3, 3), {}),  # kernel as big as the input
    ],
)
def test_named_shapes_match_functional(x_shape, w_shape, kwargs, device):
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(x_shape, dtype=dtype, device=device)
        w = torch.randn(w_shape, dtype=dtype, device=device)
        b = torch.randn(w_shape[0], dtype=dtype, device=device)
        assert_matches(ops.conv2d, F.conv2d, [x, w, b], kwargs)


def test_unbatched_input(device):
    x = torch.randn(3, 7, 6, dtype=torch.float64, device=device)
    w = torch.randn(5, 3, 3, 2, dtype=torch.float64, device=device)
    out = ops.conv2d(x, w, padding=1, stride=2)
    assert out.shape == F.conv2d(x, w, padding=1, stride=2).shape == (5, 4, 4)
    assert_matches(ops.conv2d, F.conv2d, [x, w], dict(padding=1, stride=2))


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded"])
def test_memory_layouts(layout, device):
    base = torch.randn(2, 4, 10, 11, dtype=torch.float64, device=device)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x, w = base.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = base.transpose(2, 3)
    elif layout == "sliced":
        x = base[:, :, 1::2, ::3]
    else:
        x = base[:1, :, :1].expand(3, 4, 5, 11)
    assert not x.is_contiguous()
    for kwargs in ({}, dict(padding=1, stride=2), dict(padding="same", dilation=2)):
        # assert_matches clones its inputs; the layouts must reach the op as they are
        out = ops.conv2d(x, w, **kwargs)
        torch.testing.assert_close(out, F.conv2d(x, w, **kwargs), atol=1e-9, rtol=1e-9)
        xg = x.detach().requires_grad_()
        ops.conv2d(xg, w, **kwargs).square().sum().backward()
        xr = x.detach().requires_grad_()
        F.conv2d(xr, w, **kwargs).square().sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, device):
    x = torch.randn(2, 4, 8, 8, device=device)
    w = torch.randn(6, 2, 3, 3, device=device) / 4
    b = torch.randn(6, device=device)
    kwargs = dict(padding=1, groups=2)
    out = ops.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), **kwargs)
    assert out.dtype == dtype
    exact = F.conv2d(x.double(), w.double(), b.double(), **kwargs)
    # the inputs were rounded to dtype, so compare against the exact result with dtype's precision
    torch.testing.assert_close(out.double(), exact, atol=0.1, rtol=0.05)
    xg, wg = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    ops.conv2d(xg, wg, None, **kwargs).sum().backward()
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    F.conv2d(xr, wr, None, **kwargs).sum().backward()
    torch.testing.assert_close(xg.grad.double(), xr.grad, atol=0.1, rtol=0.05)
    torch.testing.assert_close(wg.grad.double(), wr.grad, atol=0.5, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(stride=2, padding=1),
        dict(padding="same", dilation=2),
        dict(padding="full"),
        dict(groups=2, stride=(1, 2), padding=(0, 1)),
    ],
)
def test_gradcheck_and_gradgradcheck(kwargs):
    # small, as second-order checks cost (inputs) x (outputs) calls; two images, so the batch is summed
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2 // kwargs.get("groups", 1), 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return ops.conv2d(x, w, b, **kwargs)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_backward_computes_only_requested_gradients(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("computed a gradient nobody asked for")

    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    b = torch.randn(3)
    monkeypatch.setattr(conv_module, "conv2d_weight_grad", forbidden)
    ops.conv2d(x, w.detach(), b).sum().backward()
    assert x.grad is not None
    monkeypatch.undo()
    monkeypatch.setattr(conv_module, "conv2d_input_grad", forbidden)
    ops.conv2d(x.detach(), w, b).sum().backward()
    assert w.grad is not None


# --- the textbook ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,k,p,s,d",
    [
        (7, 3, 0, 1, 1),
        (7, 3, 1, 2, 1),
        (32, 5, 0, 1, 1),
        (224, 11, 2, 4, 1),
        (10, 3, 2, 3, 2),
        (10, 4, 0, 1, 3),
        (6, 3, 2, 1, 1),
    ],
)
def test_output_size_formula(n, k, p, s, d):
    out = ops.conv2d(torch.randn(1, 1, n, n), torch.randn(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert out.shape[-1] == out.shape[-2] == (n + 2 * p - d * (k - 1) - 1) // s + 1


def test_valid_same_full_sizes():
    x, w = torch.randn(1, 1, 6, 6), torch.randn(1, 1, 3, 3)
    assert ops.conv2d(x, w, padding="valid").shape[-2:] == (4, 4)  # n - k + 1
    assert ops.conv2d(x, w, padding="same").shape[-2:] == (6, 6)  # n
    assert ops.conv2d(x, w, padding="full").shape[-2:] == (8, 8)  # n + k - 1


def test_full_padding_is_the_true_convolution():
    """'full' cross-correlation with the flipped kernel is the full discrete convolution of signal
    processing: for a one-row signal, numpy-style ``convolve``."""
    signal = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    kernel = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    out = ops.conv2d(signal.view(1, 1, 1, 4), kernel.flip(0).view(1, 1, 1, 3), padding=(0, 2))
    expected = [sum(signal[m] * kernel[n - m] for m in range(4) if 0 <= n - m < 3) for n in range(6)]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected, dtype=torch.float64))
    full = ops.conv2d(signal.view(1, 1, 2, 2), torch.ones(1, 1, 2, 2, dtype=torch.float64), padding="full")
    assert full.shape[-2:] == (3, 3) and full[0, 0, 1, 1] == signal.sum()


def test_cross_correlation_by_hand():
    """D2L's example: [[0,1,2],[3,4,5],[6,7,8]] correlated with [[0,1],[2,3]] is [[19,25],[37,43]]."""
    x = torch.arange(9.0).view(1, 1, 3, 3)
    k = torch.arange(4.0).view(1, 1, 2, 2)
    assert torch.equal(ops.conv2d(x, k), torch.tensor([[[[19.0, 25.0], [37.0, 43.0]]]]))


def test_one_by_one_convolution_is_a_matrix_product_over_channels():
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    w = torch.randn(7, 5, 1, 1, dtype=torch.float64)
    per_pixel = torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    torch.testing.assert_close(ops.conv2d(x, w), per_pixel)


def test_multiple_input_channels_sum_and_filters_stack():
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    out = ops.conv2d(x, w)
    for o in range(2):
        per_channel = sum(ops.conv2d(x[:, c : c + 1], w[o : o + 1, c : c + 1]) for c in range(3))
        torch.testing.assert_close(out[:, o : o + 1], per_channel)


def test_translation_equivariance():
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(1, 1), dims=(2, 3))
    out, out_shifted = ops.conv2d(x, w), ops.conv2d(shifted, w)
    # away from the border, shifting the input by one pixel shifts the output by one pixel
    torch.testing.assert_close(out_shifted[:, :, 1:, 1:], out[:, :, :-1, :-1])


# --- bad input ---------------------------------------------------------------------------------

X = torch.randn(2, 3, 5, 5)
W = torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.conv2d(X[0, 0], W), r"3D .* or 4D .* input, got input of size \[5, 5\]"),
        (lambda: ops.conv2d(X, W[0]), r"weight must be a 4D tensor.*\[3, 3, 3\]"),
        (lambda: ops.conv2d(X, torch.randn(4, 2, 3, 3)), r"expects input with 2 channels.*\[2, 3, 5, 5\]"),
        (lambda: ops.conv2d(X, torch.randn(4, 1, 3, 3), groups=2), r"expects input with 2 channels"),
        (lambda: ops.conv2d(X, torch.randn(3, 1, 3, 3), groups=2), r"positive multiple of groups=2"),
        (lambda: ops.conv2d(X, torch.randn(0, 3, 3, 3)), r"0 output channels"),
        (lambda: ops.conv2d(X, W, groups=0), r"groups must be positive"),
        (lambda: ops.conv2d(X, torch.randn(4, 3, 6, 6)), r"padded input size per channel \(5 x 5\).*\(6 x 6\)"),
        (lambda: ops.conv2d(X, W, dilation=3), r"smaller than the dilated kernel \(7 x 7\)"),
        (lambda: ops.conv2d(X, W, stride=0), r"stride must be positive"),
        (lambda: ops.conv2d(X, W, stride=(1, -1)), r"stride must be positive"),
        (lambda: ops.conv2d(X, W, dilation=0), r"dilation must be positive"),
        (lambda: ops.conv2d(X, W, padding=-1), r"padding must be non-negative"),
        (lambda: ops.conv2d(X, W, padding="same", stride=2), r"'same' is not supported for strided"),
        (lambda: ops.conv2d(X, W, padding="SAME"), r"invalid padding string 'SAME'"),
        (lambda: ops.conv2d(X, W, stride=(1, 2, 3)), r"stride must be a single int or a pair"),
        (lambda: ops.conv2d(X, W, torch.randn(3)), r"bias must be 1D with 4 elements.*\[3\]"),
        (lambda: ops.conv2d(X, W.double()), r"same dtype"),
        (lambda: ops.conv2d(X, W, torch.randn(4).double()), r"same dtype"),
        (lambda: ops.conv2d(X.long(), W.long()), r"floating point"),
        (lambda: ops.conv2d(X, W, stride=1.5), r"stride must be an int"),
        (lambda: ops.conv2d(X, W, groups=True), r"groups must be an int"),
        (lambda: ops.conv2d(X.numpy(), W), r"input must be a torch.Tensor"),
    ],
)
def test_bad_arguments_are_rejected_with_a_message(call, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        call()


def test_autocast_casts_like_torch():
    """Under torch.autocast, convolution runs in bf16 as torch's does (gradients reach the fp32 leaves in
    fp32), and pooling keeps its input's dtype; float64 is never cast."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 12, generator=gen)
    w = torch.randn(4, 3, 3, 3, generator=gen)
    b = torch.randn(4, generator=gen)
    results = []
    for conv, pool, avg, adaptive in (
        (ops.conv2d, ops.max_pool2d, ops.avg_pool2d, ops.adaptive_avg_pool2d),
        (F.conv2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d),
    ):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(*leaves[:2], leaves[2], padding=1)
            outs = [
                y,
                pool(y, 2),
                avg(leaves[0], 2),
                adaptive(leaves[0], 3),
                conv(leaves[0].double(), leaves[1].double(), padding=1),
            ]
        # (not through the max pool: bf16 rounding may move its argmax, and with it the gradient)
        ((outs[0].float() * torch.linspace(-1, 1, 12)).sum() + outs[2].sum() + outs[3].sum()).backward()
        results.append((outs, [t.grad for t in leaves]))
    (mine, my_grads), (ref, ref_grads) = results
    for a, r in zip(mine, ref):
        assert a.dtype == r.dtype
        torch.testing.assert_close(a.float(), r.float(), atol=0.1, rtol=0.02)
    assert [g.dtype for g in my_grads] == [torch.float32] * 3
    for a, r in zip(my_grads, ref_grads):
        torch.testing.assert_close(a, r, atol=0.1, rtol=0.02)


@pytest.mark.parametrize("folded", [False, True], ids=["per-image", "folded"])
@pytest.mark.parametrize("chunk_bytes", [1, 2**30], ids=["image-by-image", "one-chunk"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=1),
        dict(stride=2, padding=(2, 1), dilation=(1, 2), groups=2),
        dict(padding="same", dilation=2),
        dict(padding="full"),
        dict(stride=4),
    ],
)
def test_both_layouts_match_torch(folded, chunk_bytes, kwargs, monkeypatch):
    """Each product layout (chosen per shape by ``fold_images``) is exact on its own, whether the batch
    is split into chunks or not."""
    monkeypatch.setattr(conv_module, "fold_images", lambda k, plane: folded)
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", chunk_bytes)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 9, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4 // kwargs.get("groups", 1), 3, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    if kwargs.get("padding") == "full":
        ref_kwargs = {**kwargs, "padding": (2, 1)}
    else:
        ref_kwargs = kwargs
    assert_matches(ops.conv2d, F.conv2d, [x, w, b], kwargs, ref_kwargs=ref_kwargs)
    if chunk_bytes > 1:  # double backward once per layout (image by image it is the same code, only slower)
        leaves = [x[:1, :, :5, :5].clone(), w[:2].clone(), b[:2].clone()]  # small: second order is costly
        leaves = [t.requires_grad_() for t in leaves]
        assert torch.autograd.gradgradcheck(lambda *t: ops.conv2d(*t, **kwargs), leaves)
