"""The convolution algorithms (``algorithm=``): each against torch.nn.functional.conv2d, with its
gradients, its transforms, its routing and its errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from cnnzoo import nn as cnn
from cnnzoo import ops
from cnnzoo.ops import algorithms, compiled, library, winograd
from cnnzoo.ops import fft as fft_module

from .helpers import TOL, assert_matches
from .test_ops_conv import SWEEP, f_conv2d_full

NAMED = ["im2col", "winograd_f2", "winograd_f4", "fft"]
# float32 tolerances, each from the algorithm's measured error on these inputs (outputs of size ~5)
# with a margin: Winograd's transforms grow the rounding errors, F(4x4) more than F(2x2)
FLOAT32_TOL = {"im2col": 1e-4, "winograd_f2": 1e-4, "winograd_f4": 5e-4, "fft": 1e-4}


def applies(algorithm, kernel, stride, dilation) -> bool:
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    return algorithms.unsuitable(algorithm, kernel, pair(stride), pair(dilation)) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("algorithm", NAMED)
def test_sweep_matches_functional(algorithm, groups, dtype):
    """The shapes of test_ops_conv's sweep (strides, paddings with 'same' and 'full', dilations, kernels),
    every one an algorithm applies to, outputs and both gradients."""
    gen = torch.Generator().manual_seed(99)
    tol = TOL[dtype] if dtype == torch.float64 else FLOAT32_TOL[algorithm]
    checked = 0
    for stride, padding, dilation, kernel in SWEEP:
        if not applies(algorithm, kernel, stride, dilation):
            continue
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if padding == 0 and (9 < dh * (kernel[0] - 1) + 1 or 8 < dw * (kernel[1] - 1) + 1):
            continue
        x = torch.randn(2, 4, 9, 8, generator=gen, dtype=dtype)
        w = torch.randn(6, 4 // groups, *kernel, generator=gen, dtype=dtype)
        b = torch.randn(6, generator=gen, dtype=dtype)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        custom = lambda *t, **kw: ops.conv2d(*t, **kw, algorithm=algorithm)  # noqa: E731
        assert_matches(custom, f_conv2d_full, [x, w, b], kwargs, tol=tol)
        checked += 1
    assert checked >= (6 if algorithm.startswith("winograd") else 150)


@pytest.mark.parametrize("algorithm", NAMED)
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((1, 1, 5, 5), (1, 1, 3, 3), {}),
        ((2, 8, 7, 5), (8, 2, 3, 3), dict(padding=1, groups=4)),
        ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
        ((2, 3, 3, 3), (4, 3, 3, 3), {}),  # one output pixel: one partial tile
        ((2, 3, 2, 2), (4, 3, 3, 3), dict(padding=(3, 2))),  # padding past the kernel: a crop in the input grad
        ((0, 3, 6, 6), (4, 3, 3, 3), dict(padding=1)),  # empty batch
        ((1, 3, 31, 29), (8, 3, 11, 11), dict(stride=4, padding=2)),  # AlexNet's stem, small
        ((2, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3
    ],
)
def test_named_shapes_match_functional(algorithm, x_shape, w_shape, kwargs):
    if not applies(algorithm, w_shape[2:], kwargs.get("stride", 1), 1):
        pytest.skip(f"{algorithm} does not apply")
    x, w, b = (torch.randn(s, dtype=torch.float64) for s in (x_shape, w_shape, w_shape[:1]))
    assert_matches(lambda *t, **kw: ops.conv2d(*t, **kw, algorithm=algorithm), F.conv2d, [x, w, b], kwargs)


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4", "fft"])
@pytest.mark.parametrize(
    "kwargs", [dict(padding=1), dict(padding=(0, 2), groups=2), dict(stride=2, dilation=(1, 2), padding=1)]
)
def test_gradcheck_and_gradgradcheck(algorithm, kwargs):
    if not applies(algorithm, (3, 3), kwargs.get("stride", 1), kwargs.get("dilation", 1)):
        pytest.skip(f"{algorithm} does not apply")
    # small, as second-order checks cost (inputs) x (outputs) calls: two channels, two filters, two tiles
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2 // kwargs.get("groups", 1), 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: ops.conv2d(x, w, b, **kwargs, algorithm=algorithm)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("algorithm", ["winograd", "fft", "im2col"])
def test_opcheck(algorithm):
    x, w, b = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(4)
    conf = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    opcheck(torch.ops.cnnzoo.conv2d, (x, w, b, *conf, algorithm))
    gy = torch.randn(2, 4, 6, 6)
    opcheck(torch.ops.cnnzoo.conv2d_input_grad, (gy, w, [2, 3, 6, 6], *conf, False, algorithm))
    opcheck(torch.ops.cnnzoo.conv2d_weight_grad, (x, gy, [4, 3, 3, 3], *conf, False, algorithm))


def test_the_transforms_compute_one_dimensional_correlation():
    """y = A^T [(G g) * (B^T d)] is the 3-tap correlation of d, for both tile sizes: the paper's matrices
    as written in winograd.py, checked on the unit vectors (so on every input)."""
    for m in (2, 4):
        BT, G, AT = winograd.transforms(m, torch.float64, "cpu")
        assert BT.shape == (m + 2, m + 2) and G.shape == (m + 2, 3) and AT.shape == (m, m + 2)
        for i in range(m + 2):
            for j in range(3):
                d, g = torch.zeros(m + 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
                d[i], g[j] = 1, 1
                direct = torch.stack([d[k : k + 3] @ g for k in range(m)])
                torch.testing.assert_close(AT @ ((G @ g) * (BT @ d)), direct, atol=1e-12, rtol=0)


def test_multiplications_per_tile():
    """(m + 2)^2 products for m^2 outputs: 16 for 4 outputs (against 36), 36 for 16 (against 144)."""
    for m, products, direct in ((2, 16, 36), (4, 36, 144)):
        BT, _, AT = winograd.transforms(m, torch.float64, "cpu")
        assert BT.shape[0] ** 2 == products and AT.shape[0] ** 2 * 9 == direct


def test_each_route_runs_its_own_kernels(monkeypatch):
    """A named algorithm reaches its implementation in the forward and in both gradients; ``direct``
    and ``auto`` never do."""
    calls = []
    names = ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]
    for module in (winograd, fft_module):
        for name in names:
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    for name in ("winograd_conv2d", "winograd_conv2d_input_grad", "winograd_conv2d_weight_grad"):
        original = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    for algorithm in ("direct", "auto"):
        ops.conv2d(x, w, padding=1, algorithm=algorithm).sum().backward()
    assert calls == []
    ops.conv2d(x, w, padding=1, algorithm="winograd").sum().backward()
    if compiled.library() is not None:  # float32 on the CPU: the compiled kernels
        assert sorted(calls) == ["winograd_conv2d", "winograd_conv2d_input_grad", "winograd_conv2d_weight_grad"]
        calls.clear()
    with compiled.use("reference"):
        ops.conv2d(x, w, padding=1, algorithm="winograd").sum().backward()
    # the reference's input gradient runs as a forward convolution of the output gradient
    assert sorted(calls) == ["conv2d_forward", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]
    calls.clear()
    ops.conv2d(x, w, padding=1, algorithm="fft").sum().backward()
    assert sorted(calls) == names
    # jvp, vmap, compile and double backward keep the route
    from torch.func import jvp, vmap

    calls.clear()
    jvp(lambda x: ops.conv2d(x, w.detach(), padding=1, algorithm="fft"), (x.detach(),), (torch.ones_like(x),))
    vmap(lambda x: ops.conv2d(x, w.detach(), padding=1, algorithm="fft"))(x.detach()[None])
    assert calls and set(calls) == {"conv2d_forward"}
    calls.clear()
    (gx,) = torch.autograd.grad(ops.conv2d(x, w, padding=1, algorithm="fft").sum(), x, create_graph=True)
    gx.sum().backward()
    assert "conv2d_input_grad" in calls and "conv2d_weight_grad" in calls and "conv2d_forward" in calls
    calls.clear()
    torch._dynamo.reset()
    compiled_fn = torch.compile(lambda x, w: ops.conv2d(x, w, padding=1, algorithm="fft"), backend="aot_eager")
    compiled_fn(x, w).sum().backward()
    assert sorted(set(calls)) == names


def test_fft_route_and_its_waste_at_stride_two(monkeypatch):
    """fft computes the stride-1 correlation and keeps every s-th output."""
    seen = []
    original = torch.fft.irfft2
    monkeypatch.setattr(torch.fft, "irfft2", lambda y, s=None: seen.append(tuple(s)) or original(y, s=s))
    x, w = torch.randn(1, 2, 9, 9, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    out = fft_module.conv2d_forward(x, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    assert out.shape == (1, 3, 5, 5) and seen == [(11, 11)]  # 9x9 stride-1 outputs computed, 25 kept
    torch.testing.assert_close(out, F.conv2d(x, w, stride=2, padding=1))


def test_direct_keeps_todays_numbers_exactly():
    """algorithm='direct' (and auto, on a 3x3 layer) is the compiled kernel called as before routes
    existed: bit for bit (the reference's, where no compiler is at hand)."""
    from cnnzoo.ops import compiled
    from cnnzoo.ops import conv as reference_conv

    x, w, b = torch.randn(2, 8, 12, 12), torch.randn(16, 8, 3, 3), torch.randn(16)
    conf = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    if compiled.library() is not None:
        before = compiled.conv2d(x, w, b, *conf, out=library.conv2d.rule(x, w, b, *conf))
    else:
        before = reference_conv.conv2d_forward(x, w, b, *conf)
    assert torch.equal(library.conv2d(x, w, b, *conf), before)
    assert torch.equal(library.conv2d(x, w, b, *conf, "direct"), before)
    assert torch.equal(ops.conv2d(x, w, b, padding=1, algorithm="direct"), before)


def test_algorithms_differ_in_rounding_but_agree():
    """Different algorithms round differently (they are not secretly one), within their tolerances."""
    x, w = torch.randn(2, 16, 20, 20), torch.randn(16, 16, 3, 3)
    exact = F.conv2d(x.double(), w.double(), padding=1)
    errors = {a: (ops.conv2d(x, w, padding=1, algorithm=a).double() - exact).abs().max().item() for a in NAMED}
    errors["direct"] = (ops.conv2d(x, w, padding=1, algorithm="direct").double() - exact).abs().max().item()
    assert len(set(errors.values())) >= 4, errors
    assert max(errors.values()) < 1e-3
    assert errors["winograd_f4"] > errors["winograd_f2"]  # larger tiles, larger transform entries


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), algorithm="fast"), "unknown algorithm"),
        (
            lambda: ops.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), stride=2, algorithm="winograd"),
            r"does not apply .* needs stride 1",
        ),
        (
            lambda: ops.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 5, 5), algorithm="winograd_f2"),
            r"needs a 3x3 kernel, got \(5, 5\)",
        ),
        (
            lambda: ops.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), dilation=2, algorithm="winograd"),
            r"needs dilation 1",
        ),
        (lambda: cnn.Conv2d(2, 2, 3, stride=2, algorithm="winograd"), r"Conv2d: algorithm='winograd' does not apply"),
        (lambda: cnn.set_algorithm(torch.nn.Sequential(), "wino"), "unknown algorithm 'wino'"),
    ],
)
def test_bad_algorithms_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_layer_algorithm_attribute_and_repr():
    layer = cnn.Conv2d(3, 4, 3, padding=1, algorithm="fft")
    assert "algorithm='fft'" in repr(layer) and "algorithm" not in repr(cnn.Conv2d(3, 4, 3))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    layer = layer.double()
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))


def test_set_algorithm_takes_the_layers_it_applies_to():
    import cnnzoo

    model = cnnzoo.create_model("resnet20", num_classes=10)
    cnn.set_algorithm(model, "winograd")
    chosen = cnn.algorithms_in_use(model, torch.zeros(1, 3, 32, 32))
    layers = dict(model.named_modules())
    for name, algorithm in chosen.items():
        layer = layers[name]
        three_by_three = layer.kernel_size == (3, 3) and layer.stride == (1, 1)
        assert algorithm == ("winograd_f4" if three_by_three else "direct"), name
    assert sum(a == "winograd_f4" for a in chosen.values()) == 17  # the stem and 3x3 stride-1 convs: 1 + 6 + 5 + 5


def test_torch_func_and_compile_follow_the_algorithm():
    from torch.func import jacrev, jvp, vmap

    x, w = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    fn = lambda x, w: ops.conv2d(x, w, padding=1, algorithm="winograd_f2")  # noqa: E731
    ref = lambda x, w: F.conv2d(x, w, padding=1)  # noqa: E731
    tx, tw = torch.randn_like(x), torch.randn_like(w)
    torch.testing.assert_close(jvp(fn, (x, w), (tx, tw)), jvp(ref, (x, w), (tx, tw)))
    torch.testing.assert_close(
        vmap(fn, in_dims=(None, 0))(x, w[None].expand(3, -1, -1, -1, -1)), ref(x, w).expand(3, -1, -1, -1, -1)
    )
    torch.testing.assert_close(jacrev(fn, argnums=1)(x[:1], w), jacrev(ref, argnums=1)(x[:1], w))
    torch._dynamo.reset()
    compiled_fn = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled_fn(x, w), ref(x, w))


@pytest.mark.parametrize("algorithm", ["fft", "winograd"])
def test_autocast_bfloat16(algorithm):
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.conv2d(x, w, padding=1, algorithm=algorithm)
        ref = F.conv2d(x, w, padding=1)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[torch.bfloat16] * 4, rtol=TOL[torch.bfloat16])


def test_config_key_reaches_the_layers_and_the_summary(tmp_path):
    from cnnzoo.train import main as train

    out = tmp_path / "run"
    args = ["--config", "configs/lenet5_digits.yaml", "--output-dir", str(out), "--quiet"]
    args += ["--set", "train.epochs=1", "--set", "sched.warmup_epochs=0", "--set", "model.conv_algorithm=fft"]
    assert train(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conv_algorithms"] == {"features.0": "fft", "features.3": "fft", "features.6": "fft"}
    assert "conv_algorithm: fft" in (out / "config.yaml").read_text()


def test_config_key_errors(tmp_path, capsys):
    from cnnzoo.train import main as train

    base = ["--config", "configs/lenet5_digits.yaml", "--output-dir", str(tmp_path / "r")]
    assert train([*base, "--set", "model.conv_algorithm=fast"]) == 2
    assert "model.conv_algorithm must be one of" in capsys.readouterr().err
    assert train([*base, "--set", "model.conv_algorithm=fft", "--set", "model.backend=torch"]) == 2
    assert "needs model.backend=custom" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_auto_takes_fft_for_large_stride_one_kernels_on_the_cpu(monkeypatch):
    """auto's rule (algorithms.auto): FFT from a 13x13 (dilated) kernel at stride 1 in float32 on the CPU,
    direct for smaller kernels, strides, float64 and any other device."""
    assert algorithms.resolve("auto", (13, 13), (1, 1), (1, 1)) == "fft"
    assert algorithms.resolve("auto", (7, 7), (1, 1), (2, 2)) == "fft"  # spans 13x13
    assert algorithms.resolve("auto", (11, 11), (1, 1), (1, 1)) == "direct"
    assert algorithms.resolve("auto", (13, 13), (2, 2), (1, 1)) == "direct"
    assert algorithms.resolve("auto", (13, 13), (1, 1), (1, 1), torch.float64) == "direct"
    assert algorithms.resolve("auto", (13, 13), (1, 1), (1, 1), torch.float32, "cuda") == "direct"
    inverse = []
    original = torch.fft.irfft2
    monkeypatch.setattr(torch.fft, "irfft2", lambda *a, **k: inverse.append(1) or original(*a, **k))
    x, w = torch.randn(1, 2, 16, 16, requires_grad=True), torch.randn(3, 2, 13, 13, requires_grad=True)
    out = ops.conv2d(x, w, padding=6)
    out.sum().backward()
    assert len(inverse) == 3  # the forward and both gradients ran by FFT
    torch.testing.assert_close(out, F.conv2d(x, w, padding=6), atol=1e-4, rtol=1e-4)
    ops.conv2d(x, w[:, :, :11, :11], padding=5).sum().backward()
    assert len(inverse) == 3
    layer = cnn.Conv2d(2, 3, 13)
    assert cnn.algorithms_in_use(torch.nn.Sequential(layer), torch.zeros(1, 2, 16, 16)) == {"0": "fft"}
    # what autocast computes in, the groups and the plane count too
    assert cnn.algorithms_in_use(torch.nn.Sequential(layer), torch.zeros(1, 2, 16, 16), torch.bfloat16) == {
        "0": "direct"
    }
    assert cnn.algorithms_in_use(torch.nn.Sequential(layer), torch.zeros(1, 2, 65, 65)) == {"0": "direct"}
    assert algorithms.resolve("auto", (13, 13), (1, 1), (1, 1), torch.float32, "cpu", 2) == "direct"
    before = len(inverse)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ops.conv2d(x, w, padding=6)
    assert len(inverse) == before  # bf16 under autocast: direct


# The compiled Winograd kernels (csrc/winograd.cpp): channel counts that are not whole vectors, two
# panels of filters, groups, paddings from 0 to 3 (3: a crop in the input gradient), partial tiles,
# layouts, and both ways of splitting the blocks over the threads (each thread its own blocks while
# the filters' transforms are small, all threads on each block for 256 channels and up)
WINOGRAD_CASES = [
    ((2, 17, 9, 7), (40, 17), dict(padding=1)),
    ((3, 12, 6, 11), (18, 4), dict(padding=2, groups=3)),
    ((1, 5, 4, 5), (33, 5), dict(padding=3)),
    ((2, 16, 10, 10), (16, 16), dict(padding=0)),
    ((1, 256, 6, 5), (256, 256), dict(padding=1)),
    ((2, 64, 9, 9), (64, 32), dict(padding=(0, 2), groups=2)),
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("x_shape,w_shape,kwargs", WINOGRAD_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "crop"])
def test_compiled_winograd_matches_functional(kernels_built, m, x_shape, w_shape, kwargs, layout):
    """Output, input gradient and weight gradient of the compiled kernels against float64, within the
    float32 error the reference reaches on the same inputs (with a margin)."""
    gen = torch.Generator().manual_seed(sum(x_shape) + m)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    w = torch.randn(w_shape[0], w_shape[1], 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(w_shape[0], generator=gen, dtype=torch.float64)
    out = F.conv2d(x, w, b, **kwargs)
    gy = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    expected = (out, *torch.autograd.grad(F.conv2d(*(t.requires_grad_() for t in (x, w, b)), **kwargs), (x, w), gy))
    xf = x.detach().float()
    if layout == "channels_last":
        xf = xf.contiguous(memory_format=torch.channels_last)
    elif layout == "crop":
        xf = torch.nn.functional.pad(xf, (1, 2, 0, 1))[..., :-1, 1:-2]
    leaves = [xf.requires_grad_(), w.detach().float().requires_grad_(), b.detach().float()]
    mine_out = ops.conv2d(*leaves, **kwargs, algorithm=f"winograd_f{m}")
    mine = (mine_out, *torch.autograd.grad(mine_out, leaves[:2], gy.float()))
    with compiled.use("reference"):
        ref_out = ops.conv2d(*leaves, **kwargs, algorithm=f"winograd_f{m}")
        reference = (ref_out, *torch.autograd.grad(ref_out, leaves[:2], gy.float()))
    for what, a, r, e in zip(("output", "grad input", "grad weight"), mine, reference, expected):
        scale = e.abs().max().item()
        error, reference_error = (a.double() - e).abs().max().item(), (r.double() - e).abs().max().item()
        assert error <= 4 * reference_error + 1e-6 * scale, (what, error, reference_error)
        assert error <= (2e-6 if m == 2 else 2e-5) * scale, (what, error / scale)


def test_auto_takes_winograd_for_wide_three_by_three_layers(monkeypatch):
    """auto's rule (algorithms.auto): F(4x4, 3x3) for ungrouped 3x3 stride-1 float32 layers on the CPU with
    at least 64 input and output channels and 32 or more 4x4 output tiles over the batch, when the
    compiled kernels serve."""
    three = ((3, 3), (1, 1), (1, 1), torch.float32, "cpu")
    expected = "winograd_f4" if compiled.library() is not None else "direct"
    assert algorithms.resolve("auto", *three, 1, (8, 8), (64, 64), 8) == expected  # 32 tiles
    assert algorithms.resolve("auto", *three, 1, (7, 7), (512, 512), 8) == expected
    assert algorithms.resolve("auto", *three, 1, (24, 24), (64, 128)) == expected  # 36 tiles in one image
    assert algorithms.resolve("auto", *three, 1, (8, 8), (64, 64), 7) == "direct"  # 28 tiles
    assert algorithms.resolve("auto", *three, 1, (2, 2), (64, 64), 128) == "direct"  # tiles of padding
    assert algorithms.resolve("auto", *three, 1, (5, 5), (64, 64), 128) == "direct"  # 1.6x fewer products
    assert algorithms.resolve("auto", *three, 1, (6, 6), (64, 64), 128) == expected  # 2.25x fewer
    assert algorithms.resolve("auto", *three, 1, (8, 8), (32, 64), 8) == "direct"
    assert algorithms.resolve("auto", *three, 1, (8, 8), (64, 32), 8) == "direct"
    assert algorithms.resolve("auto", *three, 2, (8, 8), (64, 64), 8) == "direct"
    wide = (1, (8, 8), (64, 64), 8)
    assert algorithms.resolve("auto", (3, 3), (1, 1), (1, 1), torch.float64, "cpu", *wide) == "direct"
    assert algorithms.resolve("auto", (3, 3), (1, 1), (2, 2), torch.float32, "cpu", *wide) == "direct"
    assert algorithms.resolve("auto", (3, 3), (2, 2), (1, 1), torch.float32, "cpu", *wide) == "direct"
    assert algorithms.resolve("auto", (3, 3), (1, 1), (1, 1), torch.float32, "cuda", *wide) == "direct"
    with compiled.use("reference"):  # the Python reference is slower than direct
        assert algorithms.resolve("auto", *three, *wide) == "direct"
    model = torch.nn.Sequential(cnn.Conv2d(64, 64, 3, padding=1), cnn.Conv2d(64, 16, 3, padding=1))
    # below 96 channels the weight gradient keeps direct (its Winograd products are too small to win)
    mixed = f"{expected} (weight gradient: direct)" if expected == "winograd_f4" else "direct"
    assert cnn.algorithms_in_use(model, torch.zeros(8, 64, 8, 8)) == {"0": mixed, "1": "direct"}
    assert cnn.algorithms_in_use(model, torch.zeros(1, 64, 8, 8)) == {"0": "direct", "1": "direct"}
    assert cnn.algorithms_in_use(model, torch.zeros(1, 64, 8, 8), batch=8) == {"0": mixed, "1": "direct"}
    wide = torch.nn.Sequential(cnn.Conv2d(96, 96, 3, padding=1))
    assert cnn.algorithms_in_use(wide, torch.zeros(8, 96, 8, 8)) == {"0": expected}
    for part, chosen in (("forward", expected), ("input_grad", expected), ("weight_grad", "direct")):
        assert algorithms.resolve("auto", *three, 1, (8, 8), (64, 64), 8, part) == chosen, part
    assert algorithms.resolve("auto", *three, 1, (8, 8), (96, 128), 8, "weight_grad") == expected
    assert algorithms.resolve("winograd", *three, 1, (8, 8), (64, 64), 8, "weight_grad") == "winograd_f4"  # named
    # a batch large enough takes the compiled kernels in the forward and the input gradient, and from
    # 96 channels in the weight gradient too
    calls = []
    for name in ("winograd_conv2d", "winograd_conv2d_input_grad", "winograd_conv2d_weight_grad"):
        original = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    x = torch.randn(8, 64, 8, 8, requires_grad=True)
    model(x).sum().backward()
    ops.conv2d(x[:1], model[0].weight, padding=1).sum().backward()  # one image: direct
    assert calls == (["winograd_conv2d", "winograd_conv2d_input_grad"] if expected == "winograd_f4" else [])
    calls.clear()
    wide(torch.randn(8, 96, 8, 8, requires_grad=True)).sum().backward()
    assert sorted(calls) == (
        ["winograd_conv2d", "winograd_conv2d_input_grad", "winograd_conv2d_weight_grad"]
        if expected == "winograd_f4"
        else []
    )
