"""cnnzoo.ops pooling against torch.nn.functional."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import ops
from cnnzoo.ops import pool as pool_module

from .helpers import assert_matches

# every test here runs with the reference kernels and with the compiled ones
pytestmark = pytest.mark.usefixtures("kernels")

MAX_CASES = [
    dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=c)
    for k, s, p, d, c in itertools.product(
        [2, 3, (3, 2), (1, 4)], [None, 1, 2, (2, 3)], [0, 1, (1, 0)], [1, 2, (2, 1)], [False, True]
    )
    if (p if isinstance(p, int) else max(p)) <= (k if isinstance(k, int) else min(k)) // 2
]
AVG_CASES = [
    dict(kernel_size=k, stride=s, padding=p, ceil_mode=c, count_include_pad=i, divisor_override=o)
    for k, s, p, c, i, o in itertools.product(
        [2, 3, (3, 2), 4], [None, 1, 2, (3, 2)], [0, 1], [False, True], [True, False], [None, 5]
    )
]


def sweep_size() -> int:
    return 2 * (len(MAX_CASES) * 2 + len(AVG_CASES) + len(ADAPTIVE_SIZES) * 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_max_pool_sweep(dtype, device):
    gen = torch.Generator().manual_seed(7)
    for kwargs, shape in itertools.product(MAX_CASES, [(2, 3, 9, 8), (1, 1, 7, 11)]):
        x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        assert_matches(ops.max_pool2d, F.max_pool2d, [x], dict(kwargs, return_indices=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_avg_pool_sweep(dtype, device):
    gen = torch.Generator().manual_seed(8)
    for kwargs in AVG_CASES:
        x = torch.randn(2, 3, 9, 8, generator=gen, dtype=dtype).to(device)
        assert_matches(ops.avg_pool2d, F.avg_pool2d, [x], kwargs)


ADAPTIVE_SIZES = [1, 2, 3, 5, (4, 3), (7, 6), (None, 2), (3, None), (12, 13), (9, 8), 0, (0, 2)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adaptive_avg_pool_sweep(dtype, device):
    gen = torch.Generator().manual_seed(9)
    for size, shape in itertools.product(ADAPTIVE_SIZES, [(2, 3, 9, 8), (1, 2, 13, 5)]):
        x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        assert_matches(ops.adaptive_avg_pool2d, F.adaptive_avg_pool2d, [x], dict(output_size=size))


@pytest.mark.parametrize(
    "op,kwargs",
    [
        (ops.max_pool2d, dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
        (ops.avg_pool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        (ops.adaptive_avg_pool2d, dict(output_size=(3, 4))),
    ],
)
@pytest.mark.parametrize("layout", ["unbatched", "channels_last", "transposed", "sliced", "empty_batch"])
def test_layouts_and_unbatched(op, kwargs, layout, device):
    reference = getattr(F, op.__name__)
    base = torch.randn(2, 3, 11, 10, dtype=torch.float64, device=device)
    x = {
        "unbatched": base[0],
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "sliced": base[:, :, ::2, 1:],
        "empty_batch": base[:0],
    }[layout]
    mine, ref = op(x, **kwargs), reference(x, **kwargs)
    mine, ref = (mine, ref) if isinstance(mine, tuple) else ((mine,), (ref,))
    for a, b in zip(mine, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    if x.numel():
        xm, xr = x.detach().requires_grad_(), x.detach().requires_grad_()
        first = op(xm, **kwargs)
        (first[0] if isinstance(first, tuple) else first).square().sum().backward()
        first = reference(xr, **kwargs)
        (first[0] if isinstance(first, tuple) else first).square().sum().backward()
        torch.testing.assert_close(xm.grad, xr.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pools(dtype, device):
    x = torch.randn(2, 3, 9, 9, device=device).to(dtype)
    for op, kwargs in (
        (ops.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
        (ops.avg_pool2d, dict(kernel_size=2)),
        (ops.adaptive_avg_pool2d, dict(output_size=4)),
    ):
        out = op(x, **kwargs)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), getattr(F, op.__name__)(x.double(), **kwargs), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "op,kwargs",
    [
        (ops.max_pool2d, dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True)),
        (ops.avg_pool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
        (ops.avg_pool2d, dict(kernel_size=(2, 3), divisor_override=4)),
        (ops.adaptive_avg_pool2d, dict(output_size=(4, 3))),
    ],
)
def test_gradcheck_and_gradgradcheck(op, kwargs):
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op(t, **kwargs), (x,))
    assert torch.autograd.gradgradcheck(lambda t: op(t, **kwargs), (x,))


def test_max_pool_ties_follow_torch():
    # integer-valued inputs make many ties; the argmax and so the gradient must go where torch sends it
    gen = torch.Generator().manual_seed(3)
    for kwargs in MAX_CASES[::3]:
        x = torch.randint(0, 3, (2, 2, 8, 9), generator=gen).double()
        assert_matches(ops.max_pool2d, F.max_pool2d, [x], dict(kwargs, return_indices=True))
        xl = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(
            ops.max_pool2d(xl, return_indices=True, **kwargs)[1], F.max_pool2d(xl, return_indices=True, **kwargs)[1]
        )


@pytest.mark.parametrize("chunk_bytes", [1, 2**30], ids=["plane-by-plane", "one-chunk"])
def test_max_pool_nan_and_negative_infinity_follow_torch(chunk_bytes, monkeypatch):
    """Max pooling runs over chunks of planes; a NaN in one chunk must not disturb the others."""
    monkeypatch.setattr(pool_module, "PLANE_CHUNK_BYTES", chunk_bytes)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = float("nan")
    x[0, 1] = float("-inf")
    x[1, 1, 4, 5] = float("nan")
    for kwargs in (
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
    ):
        values, indices = ops.max_pool2d(x, return_indices=True, **kwargs)
        ref_values, ref_indices = F.max_pool2d(x, return_indices=True, **kwargs)
        torch.testing.assert_close(values, ref_values, equal_nan=True)
        assert torch.equal(indices, ref_indices), kwargs


def test_indices_feed_max_unpool():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    values, indices = ops.max_pool2d(x, 2, return_indices=True)
    restored = F.max_unpool2d(values, indices, 2)
    torch.testing.assert_close(restored, F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2))
    assert torch.equal(restored.ne(0), x.eq(F.interpolate(values, scale_factor=2)))


def test_textbook_max_pool_example():
    grid = torch.tensor([[0, 1, 3, 9], [4, 8, 6, 2], [7, 4, 2, 0], [4, 3, 5, 1]], dtype=torch.float32)
    out = ops.max_pool2d(grid.view(1, 1, 4, 4), kernel_size=2, stride=2)
    assert torch.equal(out.view(2, 2), torch.tensor([[8.0, 9.0], [7.0, 5.0]]))


def test_textbook_avg_pool_example():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert torch.equal(ops.avg_pool2d(x, 2, stride=1), torch.tensor([[[[2.0, 3.0], [5.0, 6.0]]]]))


def test_adaptive_bins_that_do_not_divide():
    # 5 inputs into 3 bins: [0, 2), [1, 4), [3, 5) -- bins overlap when the sizes do not divide
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]])
    out = ops.adaptive_avg_pool2d(x, (1, 3))
    torch.testing.assert_close(out.flatten(), torch.tensor([1.5, 3.0, 4.5]))


X = torch.randn(2, 3, 5, 5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.max_pool2d(X[0, 0], 2), r"3D .* or 4D .* input, got input of size \[5, 5\]"),
        (lambda: ops.max_pool2d(X, 0), r"kernel_size must be positive"),
        (lambda: ops.max_pool2d(X, 2, stride=0), r"stride must be positive"),
        (lambda: ops.max_pool2d(X, 2, dilation=0), r"dilation must be positive"),
        (lambda: ops.max_pool2d(X, 2, padding=-1), r"padding must be non-negative"),
        (lambda: ops.max_pool2d(X, 3, padding=2), r"at most half of kernel_size"),
        (lambda: ops.max_pool2d(X, 6), r"too small for kernel_size=\(6, 6\).*output size would be \(0, 0\)"),
        (lambda: ops.max_pool2d(X, (2, 3, 4)), r"kernel_size must be a single int or a pair"),
        (lambda: ops.max_pool2d(X, 2.0), r"kernel_size must be an int"),
        (lambda: ops.max_pool2d(X[:, :0], 2), r"non-zero channel, height and width"),
        (lambda: ops.max_pool2d(X.long(), 2), r"floating point"),
        (lambda: ops.avg_pool2d(X, 3, padding=2), r"at most half of kernel_size"),
        (lambda: ops.avg_pool2d(X, 2, divisor_override=0), r"divisor_override must not be zero"),
        (lambda: ops.avg_pool2d(X, 2, divisor_override=1.5), r"divisor_override must be an int"),
        (lambda: ops.avg_pool2d(X, -2), r"kernel_size must be positive"),
        (lambda: ops.avg_pool2d(X, 6), r"too small"),
        (lambda: ops.adaptive_avg_pool2d(X, -1), r"output_size must be non-negative"),
        (lambda: ops.adaptive_avg_pool2d(X, (1, 2, 3)), r"output_size must be an int or a pair"),
        (lambda: ops.adaptive_avg_pool2d(X, 2.0), r"output_size must be an int"),
        (lambda: ops.adaptive_avg_pool2d(X[:, :, :0], 2), r"non-zero channel, height and width"),
        (lambda: ops.adaptive_avg_pool2d(X[0, 0], 2), r"3D .* or 4D"),
    ],
)
def test_bad_arguments_are_rejected_with_a_message(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
