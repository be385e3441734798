"""conv_transpose2d and nn.ConvTranspose2d against torch's: forward, gradients (also second order),
torch.func, errors, and the layer as a drop-in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacfwd, jacrev, vmap

import cnnzoo.nn as cnn
from cnnzoo import ops

pytestmark = pytest.mark.usefixtures("kernels")

# (input size, weight size, keyword arguments)
CASES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), {}),
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 4, 5), (4, 2, 2, 3), dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2), groups=2)),
    ((2, 6, 3, 4), (6, 1, 3, 3), dict(stride=2, dilation=2, groups=6)),
    ((2, 3, 7, 7), (3, 5, 1, 1), {}),  # 1x1
    ((2, 3, 9, 10), (3, 5, 1, 1), dict(stride=2, output_padding=1)),
    ((2, 3, 4), (2, 3, 3, 3), dict(padding=1)),  # unbatched
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_size,weight_size,kwargs", CASES)
def test_conv_transpose2d_matches_torch(input_size, weight_size, kwargs, dtype):
    torch.manual_seed(0)
    x = torch.randn(input_size, dtype=dtype, requires_grad=True)
    w = torch.randn(weight_size, dtype=dtype, requires_grad=True)
    b = torch.randn(weight_size[1] * kwargs.get("groups", 1), dtype=dtype, requires_grad=True)
    mine, ref = ops.conv_transpose2d(x, w, b, **kwargs), F.conv_transpose2d(x, w, b, **kwargs)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(mine, ref, **tol)
    cotangent = torch.randn_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(mine, (x, w, b), cotangent), torch.autograd.grad(ref, (x, w, b), cotangent), **tol
    )


def test_conv_transpose2d_is_conv2d_input_gradient():
    """The definition: the transposed convolution of y is the gradient of a convolution's input."""
    x, w = (
        torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True),
        torch.randn(5, 3, 3, 3, dtype=torch.float64),
    )
    y = torch.randn(2, 5, 5, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(ops.conv2d(x, w, stride=2, padding=1), x, y)
    torch.testing.assert_close(ops.conv_transpose2d(y, w, stride=2, padding=1, output_padding=(0, 1)), grad)


def test_conv_transpose2d_gradgradcheck_and_torch_func():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return ops.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))

    def ref(x, w, b):
        return F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)

    for transform in (jacrev, jacfwd):
        for argnum in range(3):
            torch.testing.assert_close(transform(fn, argnums=argnum)(x, w, b), transform(ref, argnums=argnum)(x, w, b))
    xs, ws = torch.randn(3, 1, 2, 3, 4, dtype=torch.float64), torch.randn(3, 2, 2, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(vmap(fn, (0, 0, None))(xs, ws, b), vmap(ref, (0, 0, None))(xs, ws, b))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stride=2, output_padding=2), "output_padding must be smaller than stride"),
        (dict(groups=3), "expects input with 4 channels"),
        (dict(padding=5), "output size would be"),
    ],
)
def test_conv_transpose2d_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.conv_transpose2d(torch.randn(1, 4, 3, 3), torch.randn(4, 2, 3, 3), **kwargs)


def test_conv_transpose2d_layer_is_a_drop_in():
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    torch.manual_seed(0)
    mine = cnn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert isinstance(mine, nn.ConvTranspose2d) and repr(mine) == repr(ref)
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), ref.state_dict().values()))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(mine(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine(x, output_size=[10, 10]), ref(x, output_size=[10, 10]), atol=1e-5, rtol=1e-5)
    converted = cnn.convert(nn.Sequential(nn.ConvTranspose2d(3, 2, 2)))
    assert type(converted[0]) is cnn.ConvTranspose2d
