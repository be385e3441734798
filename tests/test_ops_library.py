"""torch.ops.cnnzoo.*: the registered operators (cnnzoo/ops/library.py) against torch.library's checks,
torch's memory-format rule and zero-size tensors, direct calls with bad arguments, and each operator's
vmap, forward-mode and torch.func rules against torch.nn.functional."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

from cnnzoo import ops
from cnnzoo.ops import layout, library

from . import test_ops_noncontiguous as noncontiguous

# every test here runs with the reference kernels and with the compiled ones
pytestmark = pytest.mark.usefixtures("kernels")

L = torch.ops.cnnzoo
CL = torch.channels_last


def rand(*shape, channels_last=False, requires_grad=False, dtype=torch.float64):
    t = torch.randn(*shape, dtype=dtype)
    if channels_last:
        t = t.contiguous(memory_format=CL)
    return t.requires_grad_(requires_grad)


def is_cl(t: torch.Tensor) -> bool:
    return layout.is_channels_last(t)


# --- torch.library.opcheck ---------------------------------------------------------------------


def opcheck_samples():
    """(operator, args) for every operator: plain, strided and padded, grouped, channels_last."""
    for cl in (False, True):
        x, w, b = (
            rand(2, 4, 7, 6, channels_last=cl, requires_grad=True),
            rand(6, 2, 3, 2, requires_grad=True),
            rand(6, requires_grad=True),
        )
        conf = ([2, 1], [1, 0, 1, 1], [1, 2], 2)
        gy = rand(2, 6, 3, 6, channels_last=cl, requires_grad=True)
        yield L.conv2d, (x, w, b, *conf)
        yield L.conv2d, (x, w, None, [1, 1], [0, 1, 0, 1], [1, 1], 2)
        yield L.conv2d_input_grad, (gy, w, [2, 4, 7, 6], *conf, cl)
        yield L.conv2d_weight_grad, (x, gy, [6, 2, 3, 2], *conf, cl)
        yield L.conv_transpose2d, (gy, w, rand(4, requires_grad=True), [2, 1], [1, 0, 1, 1], [1, 0], 2, [1, 2])
        yield L.convolve2d, (x, w, b, *conf)
        wl, bl = rand(3, 6, 6, 2, 3, 2, requires_grad=True), rand(3, 6, 6, requires_grad=True)
        yield L.local_conv2d, (x, wl, bl, *conf)
        yield L.local_conv2d, (x, wl, b, *conf)
        yield L.local_conv2d_input_grad, (gy, wl, [2, 4, 7, 6], *conf, cl)
        yield L.local_conv2d_weight_grad, (x, gy, [3, 6, 6, 2, 3, 2], *conf)
        yield L.tiled_conv2d, (x, rand(2, 4, 6, 2, 3, 2, requires_grad=True), b, *conf)
        window = ([3, 2], [2, 1], [1, 1], [1, 1], True)
        yield L.max_pool2d, (x, *window)
        values, indices = L.max_pool2d(x.detach(), *window)
        yield L.max_pool2d_backward, (rand(*values.shape, channels_last=cl, requires_grad=True), indices, [2, 4, 7, 6])
        avg = ([3, 2], [2, 1], [1, 1], True, False, None)
        yield L.avg_pool2d, (x, *avg)
        yield L.avg_pool2d, (x, [2, 2], [2, 2], [0, 0], False, True, 3)
        yield L.avg_pool2d_backward, (rand(2, 4, 4, 7, channels_last=cl, requires_grad=True), [2, 4, 7, 6], *avg, cl)
        yield L.adaptive_avg_pool2d, (x, [3, 4])
        yield L.adaptive_avg_pool2d, (x, [1, 1])
        yield L.adaptive_avg_pool2d_backward, (rand(2, 4, 3, 4, channels_last=cl, requires_grad=True), [2, 4, 7, 6], cl)


OPCHECK = list(opcheck_samples())


@pytest.mark.parametrize("op,args", OPCHECK, ids=[f"{op._qualified_op_name}-{i}" for i, (op, _) in enumerate(OPCHECK)])
def test_opcheck(op, args):
    """Schema, autograd registration, fake kernel (shapes, dtypes, strides) and AOT dispatch with
    dynamic shapes, all as torch.library checks them."""
    results = torch.library.opcheck(op, args)
    assert set(results.values()) == {"SUCCESS"}, results


def test_every_operator_is_checked():
    registered = {op.name.split("::")[1] for op in library.OPERATORS}
    assert {op._qualified_op_name.split("::")[1] for op, _ in OPCHECK} == registered
    assert len(registered) == 15  # ten, then convolve2d, tiled_conv2d and local_conv2d with its two gradients


# --- direct calls with bad arguments --------------------------------------------------------------

X, W = rand(2, 3, 5, 5), rand(4, 3, 3, 3)
GY = rand(2, 4, 3, 3)
CONF = ([1, 1], [0, 0, 0, 0], [1, 1], 1)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: L.conv2d(X, rand(4, 2, 3, 3), None, *CONF), r"conv2d: .*expects input with 2 channels"),
        (lambda: L.conv2d(X[0], W, None, *CONF), r"conv2d: expected a 4D \(N, C, H, W\) input"),
        (lambda: L.conv2d(X, W, None, [1], [0, 0, 0, 0], [1, 1], 1), r"stride must have 2 elements"),
        (lambda: L.conv2d(X, W, None, [1, 1], [1, 1], [1, 1], 1), r"padding must have 4 elements"),
        (lambda: L.conv2d(X, W, None, [0, 1], [0, 0, 0, 0], [1, 1], 1), r"stride must be positive"),
        (lambda: L.conv2d(X, W, rand(5), *CONF), r"bias must be 1D with 4 elements"),
        (lambda: L.conv2d(X, W.float(), None, *CONF), r"same dtype"),
        (lambda: L.conv2d(X, rand(4, 3, 7, 7), None, *CONF), r"smaller than the dilated kernel"),
        (
            lambda: L.conv2d_input_grad(rand(2, 4, 4, 4), W, [2, 3, 5, 5], *CONF),
            r"expected grad_output of size \[2, 4, 3, 3\]",
        ),
        (lambda: L.conv2d_input_grad(GY, W, [2, 3, 5], *CONF), r"input_size must have 4 elements"),
        (lambda: L.conv2d_input_grad(GY, rand(4, 2, 3, 3), [2, 3, 5, 5], *CONF), r"expects input with 2 channels"),
        (lambda: L.conv2d_weight_grad(X, rand(2, 5, 3, 3), [4, 3, 3, 3], *CONF), r"expected grad_output of size"),
        (lambda: L.conv2d_weight_grad(X, GY, [4, 3, 3], *CONF), r"weight_size must have 4 elements"),
        (lambda: L.max_pool2d(X, [6, 6], [1, 1], [0, 0], [1, 1], False), r"too small for kernel_size=\(6, 6\)"),
        (lambda: L.max_pool2d(X, [3, 3], [1, 1], [2, 2], [1, 1], False), r"at most half of kernel_size"),
        (lambda: L.max_pool2d(X, [3], [1, 1], [0, 0], [1, 1], False), r"kernel_size must have 2 elements"),
        (lambda: L.max_pool2d_backward(GY, torch.zeros(2, 4, 3, 3), [2, 4, 5, 5]), r"indices must be int64"),
        (
            lambda: L.max_pool2d_backward(GY, torch.zeros(2, 4, 2, 3, dtype=torch.long), [2, 4, 5, 5]),
            r"expected indices of size \[2, 4, 3, 3\]",
        ),
        (
            lambda: L.max_pool2d_backward(GY, torch.zeros(2, 4, 3, 3, dtype=torch.long), [2, 3, 5, 5]),
            r"does not pool an input of size",
        ),
        (lambda: L.avg_pool2d(X, [2, 2], [2, 2], [0, 0], False, True, 0), r"divisor_override must not be zero"),
        (
            lambda: L.avg_pool2d_backward(GY, [2, 4, 5, 5], [2, 2], [2, 2], [0, 0], False, True, None),
            r"expected grad_output of size \[2, 4, 2, 2\]",
        ),
        (lambda: L.adaptive_avg_pool2d(X, [2, -1]), r"output_size must be non-negative"),
        (lambda: L.adaptive_avg_pool2d(X[:, :0], [2, 2]), r"non-zero channel"),
        (lambda: L.adaptive_avg_pool2d_backward(GY, [2, 3, 5, 5]), r"does not pool an input of size"),
    ],
)
def test_direct_calls_with_bad_arguments_get_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_bad_arguments_fail_in_the_fake_kernel_too():
    """torch.compile and torch.export run the fake kernels: the same check, the same message."""
    with torch._subclasses.fake_tensor.FakeTensorMode():
        x, w = torch.empty(2, 3, 5, 5), torch.empty(4, 2, 3, 3)
        with pytest.raises(ValueError, match="expects input with 2 channels"):
            L.conv2d(x, w, None, *CONF)


# --- zero-size tensors -------------------------------------------------------------------------


def test_conv2d_empty_batch():
    x, w, b = rand(0, 3, 5, 5, requires_grad=True), rand(4, 3, 3, 3, requires_grad=True), rand(4, requires_grad=True)
    out = ops.conv2d(x, w, b, padding=1)
    assert out.shape == F.conv2d(x, w, b, padding=1).shape == (0, 4, 5, 5)
    gx, gw, gb = torch.autograd.grad(out.sum(), (x, w, b))
    assert gx.shape == x.shape and not gw.any() and not gb.any()


def test_conv2d_zero_input_channels_gives_the_bias():
    """A weight of shape (O, 0, kH, kW) sums over nothing: every output pixel is the bias. (torch's own
    kernels return 0 channels here instead; the empty sum says O.)"""
    x, w, b = rand(2, 0, 5, 6, requires_grad=True), rand(3, 0, 3, 3, requires_grad=True), rand(3, requires_grad=True)
    out = ops.conv2d(x, w, b, stride=2)
    assert out.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out, b.detach().view(1, 3, 1, 1).expand(2, 3, 2, 2))
    g = rand(2, 3, 2, 2)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), g)
    assert gx.shape == x.shape and gw.shape == w.shape
    torch.testing.assert_close(gb, g.sum((0, 2, 3)))
    assert ops.conv2d(x, w).eq(0).all()


@pytest.mark.parametrize(
    "fn,ref",
    [
        (lambda x: ops.max_pool2d(x, 3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1)),
        (lambda x: ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True), lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
        (lambda x: ops.adaptive_avg_pool2d(x, (3, 2)), lambda x: F.adaptive_avg_pool2d(x, (3, 2))),
        (lambda x: ops.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1)),
    ],
    ids=["max", "avg", "adaptive", "global"],
)
def test_pooling_empty_batch(fn, ref):
    x = rand(0, 3, 7, 6, requires_grad=True)
    out = fn(x)
    assert out.shape == ref(x).shape
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert gx.shape == x.shape


def test_adaptive_pooling_to_nothing():
    x = rand(2, 3, 5, 5, requires_grad=True)
    out = ops.adaptive_avg_pool2d(x, 0)
    assert out.shape == F.adaptive_avg_pool2d(x, 0).shape == (2, 3, 0, 0)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert not gx.any()


# --- memory format -----------------------------------------------------------------------------


@pytest.mark.parametrize("x_cl,w_cl", [(True, False), (False, True), (True, True), (False, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_memory_format(x_cl, w_cl, dtype):
    """The output and both gradients are channels_last when the input or the weight is (torch's own
    kernels agree on the output; their gradients' formats vary with the algorithm they pick)."""
    x = rand(2, 4, 7, 7, channels_last=x_cl, requires_grad=True, dtype=dtype)
    w = rand(5, 4, 3, 3, channels_last=w_cl, requires_grad=True, dtype=dtype)
    results = []
    for conv in (ops.conv2d, F.conv2d):
        out = conv(x, w, padding=1, stride=2)
        gx, gw = torch.autograd.grad(out, (x, w), torch.ones_like(out))
        results.append((out, gx, gw))
    for mine, theirs in zip(*results):
        assert is_cl(mine) == (x_cl or w_cl)
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
    assert is_cl(results[1][0]) == (x_cl or w_cl)


@pytest.mark.parametrize(
    "fn,ref",
    [
        (lambda x: ops.max_pool2d(x, 3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1)),
        (lambda x: ops.avg_pool2d(x, 3, 2, 1), lambda x: F.avg_pool2d(x, 3, 2, 1)),
        (lambda x: ops.adaptive_avg_pool2d(x, 3), lambda x: F.adaptive_avg_pool2d(x, 3)),
        (lambda x: ops.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1)),
    ],
    ids=["max", "avg", "adaptive", "global"],
)
@pytest.mark.parametrize("channels_last", [True, False])
def test_pooling_memory_format_follows_torch(fn, ref, channels_last):
    x = rand(2, 4, 7, 7, channels_last=channels_last, requires_grad=True)
    mine, theirs = fn(x), ref(x)
    assert mine.stride() == theirs.stride()
    g = torch.randn(mine.shape, dtype=mine.dtype)
    (gx,) = torch.autograd.grad(mine, x, g)
    (ref_gx,) = torch.autograd.grad(theirs, x, g)
    assert is_cl(gx) == channels_last  # (torch's global pooling returns an expanded view, of no format)
    torch.testing.assert_close(gx, ref_gx)


def test_max_pool2d_indices_follow_the_input_format():
    x = rand(2, 4, 6, 6, channels_last=True)
    values, indices = ops.max_pool2d(x, 2, return_indices=True)
    ref_values, ref_indices = F.max_pool2d(x, 2, return_indices=True)
    assert indices.stride() == ref_indices.stride() and torch.equal(indices, ref_indices)


# --- vmap rules --------------------------------------------------------------------------------


def loop(fn, *batches):
    return torch.stack([fn(*items) for items in zip(*batches)])


@pytest.mark.parametrize("groups", [1, 2])
def test_vmap_conv2d_over_inputs_weights_and_both(groups):
    x, w, b = rand(3, 2, 4, 6, 6), rand(3, 6, 4 // groups, 3, 3), rand(3, 6)

    def conv(x, w, b):
        return ops.conv2d(x, w, b, stride=(2, 1), padding=1, groups=groups)

    torch.testing.assert_close(vmap(conv, (0, None, None))(x, w[0], b[0]), loop(lambda x: conv(x, w[0], b[0]), x))
    torch.testing.assert_close(vmap(conv, (None, 0, 0))(x[0], w, b), loop(lambda w, b: conv(x[0], w, b), w, b))
    torch.testing.assert_close(vmap(conv, (None, 0, None))(x[0], w, None), loop(lambda w: conv(x[0], w, None), w))
    torch.testing.assert_close(vmap(conv)(x, w, b), loop(conv, x, w, b))
    moved = vmap(conv, (1, None, None), out_dims=1)(x.transpose(0, 1), w[0], b[0])
    torch.testing.assert_close(moved, loop(lambda x: conv(x, w[0], b[0]), x).transpose(0, 1))


def input_grad(gy, w):
    return L.conv2d_input_grad(gy, w, [2, 4, 6, 6], [2, 1], [1, 1, 1, 1], [1, 1], 2)


def weight_grad(x, gy):
    return L.conv2d_weight_grad(x, gy, [6, 2, 3, 3], [2, 1], [1, 1, 1, 1], [1, 1], 2)


@pytest.mark.parametrize("batched", [(0, None), (None, 0), (0, 0)], ids=["first", "second", "both"])
@pytest.mark.parametrize(
    "fn,shapes",
    [(input_grad, [(3, 2, 6, 3, 6), (3, 6, 2, 3, 3)]), (weight_grad, [(3, 2, 4, 6, 6), (3, 2, 6, 3, 6)])],
    ids=["input_grad", "weight_grad"],
)
def test_vmap_conv2d_gradients(fn, shapes, batched):
    """Either tensor or both vmapped, as the same operator called slice by slice."""
    stacks = [rand(*shape) for shape in shapes]
    args = [t if d == 0 else t[0] for t, d in zip(stacks, batched)]
    expected = torch.stack([fn(*[a[i] if d == 0 else a for a, d in zip(args, batched)]) for i in range(3)])
    torch.testing.assert_close(vmap(fn, batched)(*args), expected)


def test_vmap_pooling_and_their_backwards():
    x = rand(3, 2, 4, 7, 7)
    window = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    values, indices = vmap(lambda x: L.max_pool2d(x, *window))(x)
    ref = [L.max_pool2d(xi, *window) for xi in x]
    assert torch.equal(values, torch.stack([r[0] for r in ref]))
    assert torch.equal(indices, torch.stack([r[1] for r in ref]))
    g = rand(*values.shape)
    size = [2, 4, 7, 7]
    torch.testing.assert_close(
        vmap(lambda g, i: L.max_pool2d_backward(g, i, size))(g, indices),
        loop(lambda g, i: L.max_pool2d_backward(g, i, size), g, indices),
    )
    torch.testing.assert_close(
        vmap(lambda g: L.max_pool2d_backward(g, indices[0], size))(g),
        loop(lambda g: L.max_pool2d_backward(g, indices[0], size), g),
    )
    avg = ([3, 3], [2, 2], [1, 1], True, False, None)
    torch.testing.assert_close(vmap(lambda x: L.avg_pool2d(x, *avg))(x), loop(lambda x: L.avg_pool2d(x, *avg), x))
    torch.testing.assert_close(
        vmap(lambda g: L.avg_pool2d_backward(g, size, *avg))(g), loop(lambda g: L.avg_pool2d_backward(g, size, *avg), g)
    )
    torch.testing.assert_close(
        vmap(lambda x: L.adaptive_avg_pool2d(x, [3, 5]))(x), loop(lambda x: L.adaptive_avg_pool2d(x, [3, 5]), x)
    )
    g = rand(3, 2, 4, 3, 5)
    torch.testing.assert_close(
        vmap(lambda g: L.adaptive_avg_pool2d_backward(g, size))(g),
        loop(lambda g: L.adaptive_avg_pool2d_backward(g, size), g),
    )


# --- torch.func: grad, jacrev, grad(grad), jvp, hessian ----------------------------------------------

FUNCS = [
    (
        "conv2d",
        lambda x, w: ops.conv2d(x, w, padding=(1, 0), stride=2, dilation=(1, 2)),
        lambda x, w: F.conv2d(x, w, padding=(1, 0), stride=2, dilation=(1, 2)),
    ),
    ("conv2d-same", lambda x, w: ops.conv2d(x, w, padding="same"), lambda x, w: F.conv2d(x, w, padding="same")),
    ("max_pool2d", lambda x, w: ops.max_pool2d(x, 3, 2, 1), lambda x, w: F.max_pool2d(x, 3, 2, 1)),
    (
        "avg_pool2d",
        lambda x, w: ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda x, w: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    ),
    (
        "avg_pool2d-divisor",
        lambda x, w: ops.avg_pool2d(x, 2, divisor_override=1),
        lambda x, w: F.avg_pool2d(x, 2, divisor_override=1),
    ),
    (
        "adaptive_avg_pool2d",
        lambda x, w: ops.adaptive_avg_pool2d(x, (2, 3)),
        lambda x, w: F.adaptive_avg_pool2d(x, (2, 3)),
    ),
]


def scalar(fn):
    """A smooth scalar function of the op's output whose second derivative is not zero."""
    return lambda x, w: fn(x, w).sin().sum()


@pytest.mark.parametrize("name,mine,ref", FUNCS, ids=[f[0] for f in FUNCS])
def test_torch_func_transforms_match_functional(name, mine, ref):
    x, w = rand(2, 3, 6, 5), rand(4, 3, 3, 2)
    for transform in (lambda f: grad(f, argnums=(0, 1)), lambda f: jacrev(f, argnums=(0, 1))):
        a, b = transform(scalar(mine))(x, w), transform(scalar(ref))(x, w)
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v)
    second = lambda f: grad(lambda x, w: grad(f, argnums=(0, 1))(x, w)[0].square().sum(), argnums=(0, 1))  # noqa: E731
    for u, v in zip(second(scalar(mine))(x, w), second(scalar(ref))(x, w)):
        torch.testing.assert_close(u, v)
    tangents = (rand(*x.shape), rand(*w.shape))
    out, tangent = jvp(lambda x, w: mine(x, w), (x, w), tangents)
    ref_out, ref_tangent = jvp(lambda x, w: ref(x, w), (x, w), tangents)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(tangent, ref_tangent)


@pytest.mark.parametrize("name,mine,ref", FUNCS[:2] + FUNCS[3:4], ids=["conv2d", "conv2d-same", "avg_pool2d"])
def test_hessian_matches_functional(name, mine, ref):
    x, w = rand(1, 2, 4, 4), rand(2, 2, 3, 2)
    h = hessian(scalar(mine), argnums=(0, 1))(x, w)
    ref_h = hessian(scalar(ref), argnums=(0, 1))(x, w)
    for row, ref_row in zip(h, ref_h):
        for u, v in zip(row, ref_row):
            torch.testing.assert_close(u, v)


def test_forward_mode_ad_outside_torch_func():
    x, w, t = rand(2, 3, 6, 6), rand(4, 3, 3, 3), rand(2, 3, 6, 6)
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level():
        out = ops.max_pool2d(ops.conv2d(fwad.make_dual(x, t), w, padding=1), 2)
        tangent = fwad.unpack_dual(out).tangent
    ref_tangent = jvp(lambda x: F.max_pool2d(F.conv2d(x, w, padding=1), 2), (x,), (t,))[1]
    torch.testing.assert_close(tangent, ref_tangent)


def test_jacfwd_of_a_pooling_chain():
    x = rand(1, 2, 6, 6)
    chain = lambda x: ops.adaptive_avg_pool2d(ops.avg_pool2d(ops.max_pool2d(x, 2, 1), 2, 1), 2)  # noqa: E731
    ref = lambda x: F.adaptive_avg_pool2d(F.avg_pool2d(F.max_pool2d(x, 2, 1), 2, 1), 2)  # noqa: E731
    torch.testing.assert_close(jacfwd(chain)(x), jacrev(ref)(x))


def test_trailing_defaults_may_be_left_out():
    """The dispatcher (under torch.compile, say) drops trailing arguments equal to their defaults: each
    route fills them in again."""
    gy, w = rand(2, 4, 3, 3), rand(4, 3, 3, 3)
    full = L.conv2d_input_grad(gy, w, [2, 3, 5, 5], *CONF, False)
    assert torch.equal(library.conv2d_input_grad.run(gy, w, [2, 3, 5, 5], *CONF), full)
    assert torch.equal(library.conv2d_input_grad(gy, w, [2, 3, 5, 5], *CONF), full)
    gy.requires_grad_()
    assert torch.equal(library.conv2d_input_grad(gy, w, [2, 3, 5, 5], *CONF), full)


# --- what autograd keeps: nothing that outlives the graph -------------------------------------------


@pytest.fixture
def gc_disabled():
    """Reference cycles are left uncollected, so that anything kept alive only by a cycle shows."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.usefixtures("kernels", "gc_disabled")
@pytest.mark.parametrize("after", ["forward", "backward"])
@pytest.mark.parametrize("name", list(noncontiguous.SAMPLES))
def test_outputs_are_freed_with_their_graph(name, after):
    """An operator's outputs die with the last reference to them, before or after the backward pass:
    a ``ctx`` that held an output would keep it and its whole graph alive through a cycle (which, on
    a training step, leaked every activation, each step)."""
    op, args = noncontiguous.SAMPLES[name]
    args = [a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args]
    outputs = op(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if after == "backward":
        outputs[0].sum().backward()
    alive = [weakref.ref(t) for t in outputs]
    del outputs
    assert [ref() is None for ref in alive] == [True] * len(alive)
