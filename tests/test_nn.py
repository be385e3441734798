"""cnnzoo.nn modules are drop-ins for their torch.nn namesakes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo.nn as cnn

CONV_ARGS = [
    ((3, 6, 5), {}),
    ((4, 8, (3, 2)), dict(stride=2, padding=1, dilation=(1, 2), groups=2, bias=False)),
    ((3, 6, 4), dict(padding="same", padding_mode="reflect")),
    ((3, 6, 3), dict(padding="valid", padding_mode="circular")),
    ((2, 4, (4, 3)), dict(padding=(1, 2), padding_mode="replicate")),
    ((4, 4, 3), dict(padding=1, groups=4)),
]


@pytest.mark.parametrize("args,kwargs", CONV_ARGS)
def test_conv2d_matches_torch(args, kwargs):
    torch.manual_seed(0)
    ref = nn.Conv2d(*args, **kwargs)
    torch.manual_seed(0)
    mine = cnn.Conv2d(*args, **kwargs)
    assert repr(mine) == repr(ref)
    assert list(mine.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(mine.state_dict()[key], value), f"default initialisation differs for {key}"
    for attr in (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
        "transposed",
        "output_padding",
    ):
        assert getattr(mine, attr) == getattr(ref, attr), attr
    assert list(mine._reversed_padding_repeated_twice) == list(ref._reversed_padding_repeated_twice)
    x = torch.randn(2, args[0], 9, 10)
    torch.testing.assert_close(mine(x), ref(x), atol=1e-5, rtol=1e-5)


def test_state_dicts_load_both_ways():
    ref, mine = nn.Conv2d(3, 5, 3, padding=1), cnn.Conv2d(3, 5, 3, padding=1)
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(mine(x), ref(x))
    mine.reset_parameters()
    ref.load_state_dict(mine.state_dict(), strict=True)
    torch.testing.assert_close(mine(x), ref(x))


def test_full_padding_module():
    layer = cnn.Conv2d(1, 1, 3, padding="full")
    assert layer(torch.randn(1, 1, 5, 5)).shape == (1, 1, 7, 7)
    assert "padding=full" in repr(layer)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "divisible by groups"),
        (dict(in_channels=3, out_channels=3, kernel_size=3, groups=0), "groups must be a positive"),
        (dict(in_channels=3, out_channels=3, kernel_size=3, padding="middle"), "Invalid padding string"),
        (dict(in_channels=3, out_channels=3, kernel_size=3, padding="same", stride=2), "strided"),
        (dict(in_channels=3, out_channels=3, kernel_size=3, padding_mode="mirror"), "padding_mode"),
    ],
)
def test_conv2d_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn.Conv2d(**kwargs)


POOLS = [
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3, 2, 1), dict(ceil_mode=True, dilation=1)),
    ("MaxPool2d", ((3, 2),), dict(stride=(2, 1), padding=(1, 0), return_indices=True)),
    ("AvgPool2d", (2,), {}),
    ("AvgPool2d", (3, 2, 1), dict(ceil_mode=True, count_include_pad=False)),
    ("AvgPool2d", (2,), dict(divisor_override=3)),
    ("AdaptiveAvgPool2d", ((6, 6),), {}),
    ("AdaptiveAvgPool2d", (1,), {}),
    ("AdaptiveAvgPool2d", ((None, 3),), {}),
]


@pytest.mark.parametrize("name,args,kwargs", POOLS)
def test_pools_match_torch(name, args, kwargs):
    ref, mine = getattr(nn, name)(*args, **kwargs), getattr(cnn, name)(*args, **kwargs)
    assert repr(mine) == repr(ref)
    public = {k: v for k, v in vars(ref).items() if not k.startswith("_") and k != "training"}
    assert {k: getattr(mine, k) for k in public} == public
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    out, expected = mine(x), ref(x)
    out, expected = (out, expected) if isinstance(out, tuple) else ((out,), (expected,))
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b)


def test_modules_inside_a_network_train():
    torch.manual_seed(0)
    model = nn.Sequential(
        cnn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        cnn.MaxPool2d(2),
        cnn.Conv2d(4, 8, 3),
        cnn.AvgPool2d(2),
        cnn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
