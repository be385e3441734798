"""The Triton kernels (the CUDA implementation) without a GPU: run by Triton's CPU interpreter on tiny
shapes, against torch's float64 results, through the operators (``gpu.on_cpu`` sends CPU tensors to
them). Every kernel runs with every entry of the tile table; the cases cover strides 1-3, padding
(asymmetric included), dilation, groups and depthwise, odd sizes, few channels, channels_last,
non-contiguous arguments, NaN and ties in max pooling, and half precision.

The interpreter must be on before Triton is first imported: ``conftest.py`` switches it on where there
is no GPU. With one, the CUDA tests of the operator modules run the real kernels, and this module is
skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cnnzoo.nn as cnn
from cnnzoo import ops
from cnnzoo.ops import gpu, library

# With a GPU the same tests run the compiled kernels on it (make gpu-check runs this module there);
# without one, the interpreter runs them on CPU tensors.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not gpu.available() or (DEVICE == "cpu" and not gpu.interpreting()), reason="neither a GPU nor Triton's interpreter"
)
interpreter_only = pytest.mark.skipif(DEVICE != "cpu", reason="about the interpreter's CPU route")


@pytest.fixture(autouse=True)
def triton_on_cpu():
    if DEVICE != "cpu":
        yield
        return
    with gpu.on_cpu():
        yield


def rand(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(DEVICE)


def close(mine: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert mine.shape == ref.shape
    err = (mine.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    scale = max(1.0, ref.double().abs().max().item()) if ref.numel() else 1.0
    assert err <= tol * scale, f"max error {err:.3g} (tolerance {tol * scale:.3g})"


def conv_case(fn, x, w, b, kwargs, dtype, tol, layout=lambda t: t):
    """``fn`` (cnnzoo) on ``x, w, b`` in ``dtype`` against torch in float64 on the same (rounded)
    values: the output and the three gradients."""
    args = [None if t is None else layout(t.to(dtype)).requires_grad_() for t in (x, w, b)]
    ref_args = [None if t is None else t.to(dtype).double().requires_grad_() for t in (x, w, b)]
    out = fn(*args, **kwargs)
    ref = getattr(F, fn.__name__)(*ref_args, **kwargs)
    close(out, ref, tol)
    grad = rand(*ref.shape, seed=1).to(dtype)
    mine = torch.autograd.grad(out, [a for a in args if a is not None], grad)
    theirs = torch.autograd.grad(ref, [a for a in ref_args if a is not None], grad.double())
    for m, t in zip(mine, theirs):
        close(m, t, tol)
    return out


CONV_CASES = {
    "3x3-pad1": ((2, 4, 7, 6), (6, 4, 3, 3), {"padding": 1}),
    "stride2": ((2, 5, 9, 8), (4, 5, 3, 3), {"stride": 2, "padding": 1}),
    "stride3-odd": ((1, 3, 11, 10), (5, 3, 4, 2), {"stride": 3}),
    "stride-2x1-dilated": ((1, 17, 9, 7), (20, 17, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)}),
    "same-even": ((2, 6, 7, 8), (5, 6, 4, 2), {"padding": "same"}),
    "groups": ((2, 8, 6, 5), (6, 4, 3, 3), {"padding": 1, "groups": 2}),
    "depthwise": ((2, 6, 7, 7), (6, 1, 3, 3), {"padding": 1, "groups": 6, "stride": 2}),
    "pointwise": ((2, 20, 5, 6), (24, 20, 1, 1), {}),
    "pointwise-strided": ((2, 18, 7, 6), (17, 18, 1, 1), {"stride": 2}),
    "stem": ((2, 3, 15, 13), (16, 3, 7, 7), {"stride": 2, "padding": 3}),
    "wide-channels": ((1, 40, 5, 5), (36, 40, 3, 3), {"padding": 1, "bias": False}),
}


@pytest.mark.parametrize("tiles", list(gpu.TILES))
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_and_its_gradients_every_tile(case, tiles):
    shape, wshape, kwargs = CONV_CASES[case]
    kwargs = dict(kwargs)
    bias = None if kwargs.pop("bias", True) is False else rand(wshape[0], seed=3)
    with gpu.tiles(tiles):
        conv_case(ops.conv2d, rand(*shape), rand(*wshape, seed=2), bias, kwargs, torch.float32, 1e-5)


LAYOUTS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t,
    "cropped": lambda t: torch.nn.functional.pad(t, (1, 2, 1, 0))[..., 1:, 1:-2] if t.dim() == 4 else t,
    "interleaved": lambda t: torch.stack([t, t * 0], -1)[..., 0],
    "transposed": lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() == 4 else t,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", ["stride2", "groups", "pointwise", "stem"])
def test_conv2d_reads_any_strides(case, layout):
    shape, wshape, kwargs = CONV_CASES[case]
    x, w, b = rand(*shape), rand(*wshape, seed=2), rand(wshape[0], seed=3)
    out = conv_case(ops.conv2d, x, w, b, kwargs, torch.float32, 1e-5, LAYOUTS[layout])
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["stride2", "groups", "stem"])
def test_conv2d_half_precision_accumulates_in_float32(case, dtype):
    """Against float64 arithmetic on the same rounded inputs: only the output's rounding differs."""
    shape, wshape, kwargs = CONV_CASES[case]
    out = conv_case(ops.conv2d, rand(*shape), rand(*wshape, seed=2), rand(wshape[0], seed=3), kwargs, dtype, 1e-2)
    assert out.dtype == dtype


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_weight_gradient_split_is_exact_and_deterministic(chunks):
    x, gy = rand(3, 4, 9, 9).float(), rand(3, 6, 5, 5, seed=1).float()
    ref = torch.nn.grad.conv2d_weight(x.double(), (6, 4, 3, 3), gy.double(), stride=2, padding=1)
    with gpu.split(chunks):
        first = library.conv2d_weight_grad(x, gy, [6, 4, 3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1)
        again = library.conv2d_weight_grad(x, gy, [6, 4, 3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1)
    close(first, ref, 1e-5)
    assert torch.equal(first, again)


def test_conv_transpose2d():
    x, w, b = rand(2, 6, 4, 5), rand(6, 2, 3, 3, seed=2), rand(4, seed=3)
    kwargs = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}
    conv_case(ops.conv_transpose2d, x, w, b, kwargs, torch.float32, 1e-5)


def test_int64_offsets_give_the_same_results(monkeypatch):
    """The ``BIG`` variants (int64 offsets, for tensors of 2^31 elements or more) on a small case."""
    shape, wshape, kwargs = CONV_CASES["stride2"]
    monkeypatch.setattr(gpu, "big", lambda *tensors: True)
    conv_case(ops.conv2d, rand(*shape), rand(*wshape, seed=2), rand(wshape[0], seed=3), kwargs, torch.float32, 1e-5)
    x = rand(2, 3, 9, 8).float().requires_grad_()
    values, indices = ops.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(indices, F.max_pool2d(x.detach(), 3, 2, 1, return_indices=True)[1])
    values.sum().backward()


def test_big_is_decided_by_reach():
    """int64 offsets for 2^31 elements, or for a view whose strides reach that far (a channel slice of
    a large tensor has few elements but large offsets)."""
    small, huge = torch.empty(4), torch.empty(2**31, dtype=torch.bool, device="meta")
    sliced = torch.empty_strided((3, 3, 4, 4), (2**30, 16, 4, 1), device="meta")  # 48 elements
    assert not gpu.big(small) and gpu.big(small, huge) and gpu.big(sliced)


# --- pooling ------------------------------------------------------------------------------------


def pool_case(fn, x, kwargs, layout=lambda t: t, dtype=torch.float32, tol=1e-6):
    mine = layout(x.to(dtype)).requires_grad_()
    ref = x.to(dtype).double().requires_grad_()
    out, expected = getattr(ops, fn)(mine, **kwargs), getattr(F, fn)(ref, **kwargs)
    close(out, expected, tol)
    grad = rand(*expected.shape, seed=1).to(dtype)
    (g,) = torch.autograd.grad(out, mine, grad)
    (e,) = torch.autograd.grad(expected, ref, grad.double())
    close(g, e, tol)
    return out


POOLS = {
    "max 3x3/2 pad1": ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
    "max 2x2 ceil dilated": ("max_pool2d", {"kernel_size": 2, "stride": 2, "dilation": 2, "ceil_mode": True}),
    "max 3x2/(1,2)": ("max_pool2d", {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
    "avg 3x3/2 ceil no-pad-count": (
        "avg_pool2d",
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
    ),
    "avg 3x3/2 ceil pad-count": ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "avg 2x2": ("avg_pool2d", {"kernel_size": 2}),
    "avg divisor override": ("avg_pool2d", {"kernel_size": (3, 2), "stride": 1, "padding": 1, "divisor_override": 5}),
    "adaptive 1x1": ("adaptive_avg_pool2d", {"output_size": 1}),
    "adaptive 4x3": ("adaptive_avg_pool2d", {"output_size": (4, 3)}),
    "adaptive up 11x9": ("adaptive_avg_pool2d", {"output_size": (11, 9)}),
}


@pytest.mark.parametrize("layout", ["contiguous", *LAYOUTS])
@pytest.mark.parametrize("case", list(POOLS))
def test_pooling_and_its_gradient(case, layout):
    fn, kwargs = POOLS[case]
    x = LAYOUTS.get(layout, lambda t: t)(rand(2, 5, 9, 8).float())
    out = pool_case(fn, x, kwargs)
    assert out.stride() == getattr(F, fn)(x, **kwargs).stride()  # torch's memory format


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["max 3x3/2 pad1", "avg 3x3/2 ceil no-pad-count", "adaptive 4x3"])
def test_pooling_half_precision(case, dtype):
    fn, kwargs = POOLS[case]
    assert pool_case(fn, rand(2, 5, 9, 8), kwargs, dtype=dtype, tol=1e-2).dtype == dtype


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool_equals_torch_to_the_bit_with_nan_and_ties(layout):
    x = torch.randint(0, 3, (2, 3, 9, 8)).float().to(DEVICE)  # many ties
    x[0, 0, 1, 1] = x[1, 2, 4, 4] = x[1, 2, 4, 6] = float("nan")
    x[0, 1] = float("-inf")  # a plane of -inf: the first tap of each window
    x = LAYOUTS[layout](x) if layout in LAYOUTS else x
    for kwargs in ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": 2, "ceil_mode": True}):
        values, indices = ops.max_pool2d(x, return_indices=True, **kwargs)
        expected, where = F.max_pool2d(x, return_indices=True, **kwargs)
        assert torch.equal(indices, where)
        assert torch.equal(values.nan_to_num(), expected.nan_to_num())
        assert torch.equal(values.isnan(), expected.isnan())


def test_max_pool_backward_sums_overlapping_windows():
    """Four windows' gradients onto one pixel, by atomic adds from one block."""
    x = torch.zeros(1, 1, 5, 5, device=DEVICE)
    x[0, 0, 2, 2] = 1.0  # the maximum of all four 3x3/2 windows, which overlap there
    x.requires_grad_()
    ops.max_pool2d(x, 3, 2).backward(torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]], device=DEVICE))
    assert x.grad[0, 0, 2, 2] == 15.0 and x.grad.sum() == 15.0


class Recorder:
    """A kernel module whose kernels, when looked up, are recorded by name."""

    def __init__(self, module, seen: list) -> None:
        self.module, self.seen = module, seen

    def __getattr__(self, name):
        self.seen.append(name)
        return getattr(self.module, name)


@pytest.fixture
def launched(monkeypatch) -> list:
    """The names of the Triton kernels launched in the test."""
    seen: list = []
    conv, pool = gpu.kernels()
    monkeypatch.setattr(gpu, "kernels", lambda: (Recorder(conv, seen), Recorder(pool, seen)))
    return seen


def test_max_pool_backward_takes_the_reference_under_deterministic_algorithms(launched):
    x = rand(1, 2, 6, 6).float().requires_grad_()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ops.max_pool2d(x, 3, 2, 1).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert launched == ["max_pool2d_forward"] and x.grad is not None


# --- routing, precision and opcheck ------------------------------------------------------------


def test_calls_reach_the_kernels(launched):
    x, w = rand(1, 2, 4, 4).float().requires_grad_(), rand(3, 2, 3, 3).float().requires_grad_()
    ops.conv2d(x, w).sum().backward()
    assert sorted(launched) == ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]


@interpreter_only
def test_which_calls_the_kernels_serve(monkeypatch):
    """float32, float16 and bfloat16 (here on the CPU, inside on_cpu; else on CUDA); not float64, not
    empty tensors, not with ``CNNZOO_KERNELS=reference``, and no CPU tensor outside on_cpu."""
    x = rand(1, 2, 4, 4)
    assert [gpu.applies(x.to(d)) for d in (torch.float32, torch.float16, torch.bfloat16)] == [True] * 3
    assert not gpu.applies(x) and not gpu.applies(x[:0].float())
    with ops.compiled.use("reference"):
        assert not gpu.applies(x.float())
    monkeypatch.setattr(gpu, "_on_cpu", False)
    assert not gpu.applies(x.float())


@pytest.mark.parametrize(
    "setting,expected", [({"fp32_precision": "tf32"}, "tf32"), ({"fp32_precision": "ieee"}, "ieee")]
)
def test_tf32_follows_torchs_convolution_setting(monkeypatch, setting, expected):
    monkeypatch.setattr(gpu, "interpreting", lambda: False)
    conv = torch.backends.cudnn.conv
    previous = conv.fp32_precision
    try:
        conv.fp32_precision = setting["fp32_precision"]
        assert gpu.tf32(torch.float32) == expected
        assert gpu.tf32(torch.bfloat16) == "ieee"
    finally:
        conv.fp32_precision = previous


def float32_samples():
    yield (
        library.conv2d,
        (rand(2, 4, 6, 5).float(), rand(6, 2, 3, 3).float(), rand(6).float(), [2, 1], [1, 0, 1, 1], [1, 1], 2),
    )
    yield (
        library.conv2d_input_grad,
        (rand(2, 6, 3, 5).float(), rand(6, 2, 3, 3).float(), [2, 4, 6, 5], [2, 1], [1, 0, 1, 1], [1, 1], 2, False),
    )
    yield (
        library.conv2d_weight_grad,
        (rand(2, 4, 6, 5).float(), rand(2, 6, 3, 5).float(), [6, 2, 3, 3], [2, 1], [1, 0, 1, 1], [1, 1], 2, False),
    )
    yield library.max_pool2d, (rand(2, 3, 7, 6).float(), [3, 3], [2, 2], [1, 1], [1, 1], False)
    yield library.avg_pool2d, (rand(2, 3, 7, 6).float(), [3, 2], [2, 1], [1, 1], True, False, None)
    yield library.adaptive_avg_pool2d, (rand(2, 3, 7, 6).float(), [3, 4])


@pytest.mark.parametrize("op,args", list(float32_samples()), ids=lambda v: getattr(v, "name", ""))
def test_opcheck_on_the_triton_implementations(op, args):
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op.overload, args)


# --- ahead-of-time compilation for real GPUs ------------------------------------------------------


@interpreter_only
def test_every_variant_compiles_for_ampere_and_hopper():
    """Every tile entry of every kernel in bfloat16 and float32 (TF32), and the taps, flat, pointwise
    and depthwise paths and the pooling kernels with the table's tiles, compiled for sm_80 and sm_90
    (one process each, side by side) within their shared memory. ``python scripts/triton_aot.py``
    compiles every layer with every entry in every dtype."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the compiler's kernels
    script = Path(__file__).resolve().parent.parent / "scripts" / "triton_aot.py"
    runs = [
        subprocess.Popen(
            [sys.executable, str(script), "--quick", "--arch", arch],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for arch in ("80", "90")
    ]
    for run in runs:
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
        compiled = [line for line in stdout.splitlines() if line.startswith("ok ")]
        assert len(compiled) >= 40 and " 0 failed" in stdout


def test_the_tile_heuristic():
    """Few columns take the thin tile, small products the narrow one, large ones the wide or medium
    tile, with the 64-deep step for 16-bit operands where the sum is long enough."""
    assert gpu.choose(100_000, 8, 576, torch.bfloat16) == gpu.TILES["thin"]
    assert gpu.choose(1_000, 128, 576, torch.bfloat16) == gpu.TILES["narrow"]
    assert gpu.choose(100_000, 64, 576, torch.float32) == gpu.TILES["medium"]
    assert gpu.choose(100_000, 256, 256, torch.bfloat16) == gpu.TILES["wide-16bit"]
    assert gpu.choose(100_000, 256, 48, torch.float16) == gpu.TILES["wide"]
    with gpu.tiles("medium-16bit"):
        assert gpu.choose(1, 1, 1, torch.float32) == gpu.TILES["medium-16bit"]
    with pytest.raises(ValueError, match="tiles must be one of"):
        with gpu.tiles("huge"):
            pass


def test_a_compiled_model_reaches_the_kernels(launched):
    """torch.compile's graph calls the operators, which reach the Triton kernels (on a GPU, the
    CUDA-graph mode "reduce-overhead" captures these launches; make gpu-check runs it)."""
    model = torch.nn.Sequential(cnn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), cnn.MaxPool2d(2)).to(DEVICE)
    x = rand(2, 3, 8, 8).float()
    expected = model(x)
    launched.clear()
    compiled_model = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled_model(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert {"conv2d_forward", "max_pool2d_forward", "max_pool2d_backward", "conv2d_weight_grad"} <= set(launched)
