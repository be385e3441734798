"""Property tests: random arguments, valid or not, are either accepted by both cnnzoo.ops and
torch.nn.functional with equal results, or rejected by both (ours with a clear exception type)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnzoo import ops

from .helpers import assert_matches

# every test here runs with the reference kernels and with the compiled ones
pytestmark = pytest.mark.usefixtures("kernels")

CLEAR_ERRORS = (ValueError, TypeError, RuntimeError)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def small_int(lo, hi):
    return st.integers(lo, hi)


def int_or_pair(lo, hi):
    return st.one_of(small_int(lo, hi), st.tuples(small_int(lo, hi), small_int(lo, hi)))


def agree(custom, reference, tensors, kwargs, ref_kwargs=None):
    """Both reject, or both accept and agree; our rejection must be one of the clear error types."""
    try:
        reference(*tensors, **(kwargs if ref_kwargs is None else ref_kwargs))
        ref_error = None
    except Exception as exc:  # noqa: BLE001 -- whatever torch raises, it rejected the call
        ref_error = exc
    if ref_error is not None:
        try:
            custom(*tensors, **kwargs)
        except CLEAR_ERRORS as exc:
            assert str(exc), "an error without a message"
            return "rejected"
        raise AssertionError(f"torch rejects {kwargs} ({ref_error}) but cnnzoo accepts it")
    if tensors[0].numel() == 0:  # torch skips some argument checks (dilation) on empty inputs; cnnzoo does not
        try:
            custom(*tensors, **kwargs)
        except CLEAR_ERRORS as exc:
            assert str(exc), "an error without a message"
            return "rejected"
    assert_matches(custom, reference, tensors, kwargs, ref_kwargs)
    return "accepted"


def in_dtype(tensors, kernels: str):
    """The tensors in float32 for the compiled kernels (they serve float32 only), float64 otherwise."""
    dtype = torch.float32 if kernels == "compiled" else torch.float64
    return [None if t is None else t.to(dtype) for t in tensors]


def maybe_unbatched(x, unbatched):
    return x[0] if unbatched else x


@st.composite
def conv_calls(draw):
    groups = draw(small_int(0, 3))
    g = max(groups, 1)
    cin, cout = g * draw(small_int(1, 3)), g * draw(small_int(1, 2))
    cin_given = cin + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes a channel mismatch
    n, h, w = draw(small_int(0, 2)), draw(small_int(1, 9)), draw(small_int(1, 9))
    kh, kw = draw(small_int(1, 4)), draw(small_int(1, 4))
    x = maybe_unbatched(torch.randn(n, cin_given, h, w, dtype=torch.float64), n > 0 and draw(st.booleans()))
    weight = torch.randn(cout, cin // g, kh, kw, dtype=torch.float64)
    bias = torch.randn(cout, dtype=torch.float64) if draw(st.booleans()) else None
    kwargs = dict(
        stride=draw(int_or_pair(0, 3)),
        padding=draw(st.one_of(int_or_pair(-1, 3), st.sampled_from(["valid", "same", "full", "bogus"]))),
        dilation=draw(int_or_pair(0, 3)),
        groups=groups,
    )
    return [x, weight, bias], kwargs


def reference_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if padding == "full":  # torch has no 'full'; it is explicit padding dilation * (k - 1)
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        padding = (dh * (weight.shape[2] - 1), dw * (weight.shape[3] - 1))
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@SETTINGS
@given(call=conv_calls())
def test_conv2d_random_arguments(call, kernels):
    tensors, kwargs = call
    agree(ops.conv2d, reference_conv, in_dtype(tensors, kernels), kwargs)


def pool_input(draw):
    n, c, h, w = draw(small_int(0, 2)), draw(small_int(1, 3)), draw(small_int(1, 9)), draw(small_int(1, 9))
    return maybe_unbatched(torch.randn(n, c, h, w, dtype=torch.float64), n > 0 and draw(st.booleans()))


def window_kwargs(draw):
    """kernel_size, stride, padding and ceil_mode, valid or not."""
    return dict(
        kernel_size=draw(int_or_pair(0, 4)),
        stride=draw(st.one_of(st.none(), int_or_pair(0, 3))),
        padding=draw(int_or_pair(-1, 2)),
        ceil_mode=draw(st.booleans()),
    )


@SETTINGS
@given(data=st.data())
def test_max_pool2d_random_arguments(data, kernels):
    x = pool_input(data.draw)
    kwargs = dict(window_kwargs(data.draw), dilation=data.draw(int_or_pair(0, 3)), return_indices=True)
    agree(ops.max_pool2d, F.max_pool2d, in_dtype([x], kernels), kwargs)


@SETTINGS
@given(data=st.data())
def test_avg_pool2d_random_arguments(data, kernels):
    x = pool_input(data.draw)
    kwargs = dict(
        window_kwargs(data.draw),
        count_include_pad=data.draw(st.booleans()),
        divisor_override=data.draw(st.one_of(st.none(), small_int(-2, 4))),
    )
    agree(ops.avg_pool2d, F.avg_pool2d, in_dtype([x], kernels), kwargs)


@SETTINGS
@given(st.data())
def test_adaptive_avg_pool2d_random_arguments(data):
    draw = data.draw
    x = pool_input(draw)
    size = draw(
        st.one_of(
            small_int(-1, 10),
            st.tuples(st.one_of(st.none(), small_int(-1, 10)), st.one_of(st.none(), small_int(-1, 10))),
        )
    )
    agree(ops.adaptive_avg_pool2d, F.adaptive_avg_pool2d, [x], dict(output_size=size))
