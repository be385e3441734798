"""The compiled kernels (``cnnzoo/ops/compiled.py``, ``cnnzoo/csrc/``): a fuzz over random shapes against
torch.nn.functional, with every tensor argument sometimes non-contiguous, the choice of implementation,
and the build at first use (notice, lock, fallback without a compiler). The sweeps of
test_ops_conv/test_ops_pool run with both implementations too.

``make sanitize`` runs the fuzz tests with the kernels built under AddressSanitizer and
UndefinedBehaviorSanitizer; ``CNNZOO_FUZZ_CASES`` sets how many shapes each fuzz test draws."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import nn, ops
from cnnzoo.ops import compiled
from cnnzoo.ops import conv as reference_conv
from cnnzoo.ops import pool as reference_pool

FUZZ_CASES = int(os.environ.get("CNNZOO_FUZZ_CASES", "60"))


def close(mine: torch.Tensor, ref: torch.Tensor, what: str, case) -> None:
    """float32 results agree to rounding, relative to the largest entry of the reference."""
    assert mine.shape == ref.shape, (what, case)
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(
        mine, ref, rtol=1e-4, atol=1e-5 * scale, equal_nan=True, msg=lambda m: f"{what} {case}: {m}"
    )


def conv_case(rng: random.Random) -> dict:
    """Random convolution arguments: odd channel counts, batch 1, 1x1 planes, kernels larger than the
    input with padding, groups, strides, dilations, 'same' padding (asymmetric for even kernels); a
    fifth of them on planes of 16 to 24 pixels a side."""
    while True:
        g = rng.choice([1, 1, 1, 2, 3])
        case = dict(
            n=rng.choice([1, 1, 2, 3]),
            c=g * rng.randint(1, 7),
            o=g * rng.choice([1, 2, 3, 5, 7, 17, 33]),
            h=rng.choice([1, 2, 3, 5, 8, 13, 17]),
            w=rng.choice([1, 2, 4, 7, 9, 16, 23]),
            kh=rng.randint(1, 6),
            kw=rng.randint(1, 6),
            stride=(rng.randint(1, 3), rng.randint(1, 3)),
            dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            groups=g,
        )
        if rng.random() < 0.2:  # a plane the kernels take image by image (the small ones go side by side)
            case.update(h=rng.randint(16, 24), w=rng.randint(16, 24), stride=(1, rng.randint(1, 2)))
        case["padding"] = "same" if rng.random() < 0.15 else (rng.randint(0, case["kh"]), rng.randint(0, case["kw"]))
        if case["padding"] == "same":
            case["stride"] = (1, 1)
            pad = (0, 0)  # 'same' always fits
        else:
            pad = case["padding"]
        fits = all(
            size + 2 * p - d * (k - 1) - 1 >= 0
            for size, p, d, k in zip((case["h"], case["w"]), pad, case["dilation"], (case["kh"], case["kw"]))
        )
        if fits or case["padding"] == "same":
            return case


# The layouts users give tensors: contiguous (most often), channels_last, transposed copies (of the plane,
# or of channels and columns), a crop, every other entry of an interleaved buffer, a crop of a channels_last
# tensor; a 1-D tensor: a crop, every other entry, a column of a matrix.
LAYOUTS = ("", "", "", "channels_last", "transpose", "transpose channels", "crop", "interleave", "channels_last crop")
LAYOUTS_1D = ("", "", "crop", "interleave", "column")


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A new tensor with ``t``'s values in ``layout`` (see LAYOUTS). The entries of a larger buffer around
    the view are NaN (floats) or 0, so that a kernel reading past its view gives itself away."""

    def buffer(*size: int) -> torch.Tensor:
        return torch.full(size, float("nan") if t.is_floating_point() else 0, dtype=t.dtype)

    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout in ("transpose", "transpose channels"):
        dims = (2, 3) if layout == "transpose" else (1, 3)
        return t.transpose(*dims).contiguous().transpose(*dims)
    if layout == "crop" and t.dim() == 1:
        view = buffer(len(t) + 3)[2:-1]
    elif layout == "crop":
        view = buffer(*t.shape[:2], t.shape[2] + 2, t.shape[3] + 2)[..., 1:-1, 2:]
    elif layout == "interleave":
        view = buffer(*t.shape[:-1], 2 * t.shape[-1])[..., ::2]
    elif layout == "column":
        view = buffer(len(t), 3)[:, 1]
    elif layout == "channels_last crop":
        n, c, h, w = t.shape
        view = buffer(n, c + 1, h + 2, w + 2).contiguous(memory_format=torch.channels_last)[:, 1:, 1:-1, 1:-1]
    else:
        return t.clone()
    return view.copy_(t)


def draw_layouts(rng: random.Random, *names: str) -> dict[str, str]:
    """A layout for each tensor argument (a name ending in "bias": 1-D)."""
    return {name: rng.choice(LAYOUTS_1D if name.endswith("bias") else LAYOUTS) for name in names}


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_conv2d(kernels_built, seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(FUZZ_CASES // 2):
        case = conv_case(rng)
        layouts = case["layouts"] = draw_layouts(rng, "input", "weight", "bias", "grad_output")
        pointwise = (case["kh"], case["kw"], case["stride"]) == (1, 1, (1, 1)) and case["padding"] in ("same", (0, 0))
        if pointwise and case["h"] * case["w"] > 64 and layouts["input"] not in ("", "channels_last", "interleave"):
            # NOTE: the reference's matrix product (which serves these) cannot take such an input yet
            layouts["input"] = "interleave"
        x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=gen)
        weight = torch.randn(case["o"], case["c"] // case["groups"], case["kh"], case["kw"], generator=gen)
        bias = torch.randn(case["o"], generator=gen)
        kwargs = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
        results = []
        for fn in (ops.conv2d, F.conv2d):
            leaves = [laid_out(t, layouts[name]).requires_grad_() for t, name in zip((x, weight, bias), layouts)]
            out = fn(*leaves, **kwargs)
            grad_out = laid_out(
                torch.randn(out.shape, generator=torch.Generator().manual_seed(1)), layouts["grad_output"]
            )
            results.append((out, *torch.autograd.grad(out, leaves, grad_out)))
        for what, mine, ref in zip(("output", "grad input", "grad weight", "grad bias"), *results):
            close(mine, ref, what, case)


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_winograd(kernels_built, seed):
    """The compiled Winograd kernels (3x3, stride 1) on random shapes and layouts, both tile sizes."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(FUZZ_CASES // 4):
        g = rng.choice([1, 1, 2, 3])
        n, c, o = rng.choice([1, 2, 3]), g * rng.choice([1, 3, 16, 17]), g * rng.choice([1, 5, 16, 33])
        h, w, pad = rng.randint(1, 13), rng.randint(1, 13), (rng.randint(0, 3), rng.randint(0, 3))
        if h + 2 * pad[0] < 3 or w + 2 * pad[1] < 3:
            continue
        case = dict(n=n, c=c, o=o, h=h, w=w, padding=pad, groups=g, m=rng.choice([2, 4]))
        layouts = case["layouts"] = draw_layouts(rng, "input", "weight", "bias", "grad_output")
        x, weight = torch.randn(n, c, h, w, generator=gen), torch.randn(o, c // g, 3, 3, generator=gen)
        bias = torch.randn(o, generator=gen) if rng.random() < 0.5 else None
        tensors = {"input": x, "weight": weight, "bias": bias}
        results = []
        for fn in (functools.partial(ops.conv2d, algorithm=f"winograd_f{case['m']}"), F.conv2d):
            leaves = [laid_out(t, layouts[k]).requires_grad_() if t is not None else None for k, t in tensors.items()]
            out = fn(*leaves, padding=pad, groups=g)
            grad_out = laid_out(
                torch.randn(out.shape, generator=torch.Generator().manual_seed(1)), layouts["grad_output"]
            )
            results.append((out, *torch.autograd.grad(out, leaves[:2], grad_out)))
        for what, mine, ref in zip(("output", "grad input", "grad weight"), *results):
            close(mine, ref, what, case)


@pytest.mark.parametrize("layout", ["", "crop", "channels_last"])
def test_winograd_in_chunks_of_images(kernels_built, layout):
    """Tensors whose channels are not adjacent go through channels-last buffers of at most 2 Mi floats
    (csrc/winograd.cpp, CHUNK_FLOATS), a chunk of images at a time: here 3 images and then 1, for the
    forward pass, the input gradient and the weight gradient (whose sums run on over the chunks)."""
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(4, 130, 64, 64, generator=gen), torch.randn(40, 130, 3, 3, generator=gen) * 0.1
    bias = torch.randn(40, generator=gen)
    grad_out = torch.randn(4, 40, 64, 64, generator=gen)
    results = []
    for fn in (functools.partial(ops.conv2d, algorithm="winograd_f4"), F.conv2d):
        leaves = [laid_out(t, layout).requires_grad_() for t in (x, weight)]
        out = fn(*leaves, bias, padding=1)
        results.append((out, *torch.autograd.grad(out, leaves, laid_out(grad_out, layout))))
    for what, mine, ref in zip(("output", "grad input", "grad weight"), *results):
        scale = ref.abs().max().item()
        assert (mine - ref).abs().max().item() <= 2e-5 * scale, (what, layout)


def pool_case(rng: random.Random) -> dict:
    while True:
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        case = dict(
            n=rng.choice([1, 2]),
            c=rng.choice([1, 3, 5]),
            h=rng.choice([1, 2, 5, 8, 11]),
            w=rng.choice([1, 3, 6, 9]),
            kernel_size=(kh, kw),
            stride=(rng.randint(1, 3), rng.randint(1, 3)),
            padding=(rng.randint(0, kh // 2), rng.randint(0, kw // 2)),
            dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            ceil_mode=rng.random() < 0.5,
            count_include_pad=rng.random() < 0.5,
            divisor_override=rng.choice([None, None, 3]),
            special=rng.choice(["", "nan", "inf", "ties"]),
        )
        case["output_size"] = (rng.randint(1, case["h"] + 2), rng.randint(1, case["w"] + 2))  # adaptive pooling
        if all(
            size + 2 * p - d * (k - 1) - 1 >= 0
            for size, p, d, k in zip((case["h"], case["w"]), case["padding"], case["dilation"], case["kernel_size"])
        ):
            return case


def pool_input(case, gen) -> torch.Tensor:
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=gen)
    mask = torch.rand(x.shape, generator=gen) < 0.2
    if case["special"] == "nan":
        x[mask] = float("nan")
    elif case["special"] == "inf":
        x[mask] = float("-inf")
    elif case["special"] == "ties":
        x = x.round()
    return x


def reference_max_pool2d(x, **kwargs):
    """The reference kernels' max pooling, checked against torch's forward (values and indices)."""
    with torch.no_grad():
        values, indices = F.max_pool2d(x, **kwargs)
    with compiled.use("reference"):
        mine, mine_indices = ops.max_pool2d(x, **kwargs)
    assert torch.equal(indices, mine_indices) and torch.equal(values.isnan(), mine.isnan())
    torch.testing.assert_close(mine, values, rtol=0, atol=0, equal_nan=True, check_dtype=True)
    return mine, mine_indices


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_pooling(kernels_built, seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(FUZZ_CASES // 2):
        case = pool_case(rng)
        layouts = case["layouts"] = draw_layouts(rng, "input", "grad_output", "indices")
        x = pool_input(case, gen)
        window = {k: case[k] for k in ("kernel_size", "stride", "padding", "ceil_mode")}
        calls = [(ops.max_pool2d, F.max_pool2d, dict(window, dilation=case["dilation"], return_indices=True))]
        if case["special"] != "nan":  # (a NaN's gradient is NaN for both; compared for max pooling above)
            calls.append(
                (
                    ops.avg_pool2d,
                    F.avg_pool2d,
                    dict(
                        window, count_include_pad=case["count_include_pad"], divisor_override=case["divisor_override"]
                    ),
                )
            )
            calls.append((ops.adaptive_avg_pool2d, F.adaptive_avg_pool2d, dict(output_size=case["output_size"])))
        for mine_fn, ref_fn, kwargs in calls:
            results = []
            for fn in (mine_fn, ref_fn):
                leaf = laid_out(x, layouts["input"]).requires_grad_()
                if fn is F.max_pool2d:  # NOTE: torch's backward writes past the plane when a dilated
                    fn = reference_max_pool2d  # window holds only padding; the reference's gradient instead
                out = fn(leaf, **kwargs)
                values = out[0] if isinstance(out, tuple) else out
                grad_out = laid_out(
                    torch.randn(values.shape, generator=torch.Generator().manual_seed(2)), layouts["grad_output"]
                )
                results.append(
                    (*(out if isinstance(out, tuple) else (out,)), torch.autograd.grad(values, leaf, grad_out)[0])
                )
            names = ("output", "indices", "grad input") if len(results[0]) == 3 else ("output", "grad input")
            for what, mine, ref in zip(names, *results):
                if what == "indices":
                    assert torch.equal(mine, ref), (case, what)
                else:
                    close(mine, ref, f"{mine_fn.__name__} {what}", case)
            if mine_fn is ops.max_pool2d:  # the backward operator, given the indices in any layout too
                indices = laid_out(results[0][1], layouts["indices"])
                grad = torch.ops.cnnzoo.max_pool2d_backward(grad_out, indices, list(x.shape))
                close(grad, results[1][2], "max_pool2d_backward", case)


def test_max_pool_backward_ignores_indices_outside_the_plane(kernels_built):
    grad_out = torch.ones(1, 1, 2, 2)
    indices = torch.tensor([[[[0, -5], [99, 3]]]])
    for mode in ("compiled", "reference"):
        with compiled.use(mode):
            grad = torch.ops.cnnzoo.max_pool2d_backward(grad_out, indices, [1, 1, 2, 2])
        assert grad.flatten().tolist() == [1, 0, 0, 1], mode


def test_compiled_kernels_serve_float32_and_the_reference_the_rest(kernels_built, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reference ran")

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    for module, names in (
        (reference_conv, ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]),
        (
            reference_pool,
            [
                "max_pool2d_forward",
                "max_pool2d_backward",
                "window_sums",
                "window_sums_backward",
                "adaptive_avg_pool2d_forward",
                "adaptive_avg_pool2d_backward",
            ],
        ),
    ):
        for name in names:
            monkeypatch.setattr(module, name, refuse)
    out = ops.adaptive_avg_pool2d(
        ops.avg_pool2d(ops.max_pool2d(ops.conv2d(x, w, padding=1), 2), 2, ceil_mode=True), (2, 1)
    )
    (out.sum() + ops.adaptive_avg_pool2d(x, 1).sum()).backward()  # every op and gradient above ran compiled
    pointwise = torch.randn(5, 3, 1, 1, requires_grad=True)
    ops.conv2d(x, pointwise).sum().backward()  # 1x1 on a plane of 64 pixels: compiled
    with pytest.raises(AssertionError, match="the reference ran"):
        ops.conv2d(torch.randn(2, 3, 9, 8), pointwise)  # 1x1 on larger planes: a matrix product
    with pytest.raises(AssertionError, match="the reference ran"):
        ops.conv2d(x.double(), w.double())
    with compiled.use("reference"), pytest.raises(AssertionError, match="the reference ran"):
        ops.conv2d(x, w)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("plane, stride", [((11, 10), 2), ((17, 19), 1)], ids=["side-by-side", "image-by-image"])
def test_thread_counts_agree(kernels_built, batch, plane, stride):
    """One thread, or two sharing images (batch 1) and splitting a batch (whole images, then shared);
    on small planes (images side by side in the kernels' buffers) and large ones (image by image)."""
    x = torch.randn(batch, 5, *plane)
    w = torch.randn(7, 5, 3, 3)
    out_plane = [(size + 2 - 3) // stride + 1 for size in plane]
    grad_out = torch.randn(batch, 7, *out_plane)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [x.clone().requires_grad_(), w.clone().requires_grad_()]
            out = ops.conv2d(*leaves, stride=stride, padding=1)
            results.append((out, *torch.autograd.grad(out, leaves, grad_out)))
    finally:
        torch.set_num_threads(before)
    for what, one, two in zip(("output", "grad input", "grad weight"), *results):
        close(two, one, what, (batch, plane))  # the sums' order differs: rounding


def test_unused_taps_read_zeros_not_an_earlier_calls_weights(kernels_built):
    """Taps that only ever reach padding columns (dilation 20 on an 8-wide plane) are not packed, but
    the image-by-image kernels still multiply them by the zero columns: the packed-weight buffer,
    kept between calls, must hold zeros there, not an earlier call's NaN weights."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 8, 8, generator=gen)
    poisoned = torch.full((64, 64, 3, 3), float("nan"))
    assert torch.isnan(ops.conv2d(x, poisoned, padding=1)).all()  # every tap of the buffer is NaN now
    weight = torch.randn(64, 64, 3, 3, generator=gen)
    kwargs = dict(padding=(1, 20), dilation=(1, 20))
    close(ops.conv2d(x, weight, **kwargs), F.conv2d(x, weight, **kwargs), "output", kwargs)
    grad = torch.randn(F.conv2d(x, weight, **kwargs).shape, generator=gen)
    ops.conv2d(grad, poisoned.transpose(0, 1), padding=1)  # the input gradient's buffer too
    mine = torch.ops.cnnzoo.conv2d_input_grad(grad, weight, list(x.shape), [1, 1], [1, 1, 20, 20], [1, 20], 1)
    expected = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [1, 20], [1, 20], False, [0, 0], 1, [True, False, False]
    )[0]
    close(mine, expected, "grad input", kwargs)


@pytest.mark.parametrize("plane", [(9, 10), (4, 4), (20, 17)], ids=["side-by-side", "tiny", "image-by-image"])
@pytest.mark.parametrize("layout", sorted(set(LAYOUTS)))
def test_wide_layers_in_every_layout(kernels_built, plane, layout):
    """Channel counts past a vector (the kernels' copies to and from channels-last move tiles of whole
    vectors through registers, the rest entry by entry), in every layout: the fuzz cases have at most
    7 input channels per group."""
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 35, *plane, generator=gen), torch.randn(33, 35, 3, 3, generator=gen)
    bias = torch.randn(33, generator=gen)
    grad_out = torch.randn(F.conv2d(x, weight, padding=1).shape, generator=gen)
    results = []
    for fn in (ops.conv2d, F.conv2d):
        leaves = [laid_out(t, layout).requires_grad_() for t in (x, weight)]
        out = fn(*leaves, bias, padding=1)
        results.append((out, *torch.autograd.grad(out, leaves, laid_out(grad_out, layout))))
    for what, mine, ref in zip(("output", "grad input", "grad weight"), *results):
        close(mine, ref, what, (plane, layout))


@pytest.mark.parametrize(
    "channels, plane, kwargs",
    [
        (64, (40, 40), dict(padding=1)),  # 3 chunks of output rows (18, 18, 4), one run per tap column
        (100, (37, 41), dict(padding=(2, 1), stride=(1, 2))),  # channels not a multiple of 64: one run per tap row
        (64, (45, 45), dict(padding=1, stride=2, dilation=2)),  # 2 chunks, the chunks' input rows overlapping
    ],
    ids=["three-chunks", "odd-channels", "strided-dilated"],
)
def test_weight_grad_in_chunks_of_rows(kernels_built, channels, plane, kwargs):
    """The weight gradient of a large plane sums its output rows in chunks that fit in L2 (a few
    rows here, where the fuzz cases' planes fit in one): every chunk boundary adds each row once."""
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, channels, *plane, generator=gen), torch.randn(24, channels, 3, 3, generator=gen)
    grad_out = torch.randn(F.conv2d(x, weight, **kwargs).shape, generator=gen)
    mine = [t.clone().requires_grad_() for t in (x, weight)]
    ref = [t.clone().requires_grad_() for t in (x, weight)]
    (grad_weight,) = torch.autograd.grad(ops.conv2d(*mine, **kwargs), mine[1], grad_out)
    (expected,) = torch.autograd.grad(F.conv2d(*ref, **kwargs), ref[1], grad_out)
    close(grad_weight, expected, "grad weight", (channels, plane, kwargs))


@pytest.mark.parametrize("layout", ["", "channels_last", "crop"])
@pytest.mark.parametrize(
    "plane, stride",
    [((14, 14), 2), ((13, 15), (2, 3)), ((40, 37), (1, 2)), ((9, 9), 3)],
    ids=["14-to-7", "odd-planes", "image-by-image", "stride-3"],
)
def test_a_strided_1x1_reads_only_the_pixels_it_samples(kernels_built, plane, stride, layout):
    """A 1x1 convolution with a stride runs as a stride-1 one on the subsampled input: the pixels between
    the samples are NaN here and must not reach any result; the input gradient is zero there."""
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 20, *plane, generator=gen), torch.randn(24, 20, 1, 1, generator=gen)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    sampled = torch.zeros(plane, dtype=torch.bool)
    sampled[::sh, ::sw] = True
    poisoned = x.masked_fill(~sampled, float("nan"))
    grad_out = torch.randn(F.conv2d(x, weight, stride=stride).shape, generator=gen)
    results = []
    for fn, inp in ((ops.conv2d, poisoned), (F.conv2d, x)):
        leaves = [laid_out(inp, layout).requires_grad_(), weight.clone().requires_grad_()]
        out = fn(*leaves, stride=stride)
        results.append((out, *torch.autograd.grad(out, leaves, laid_out(grad_out, layout))))
    for what, mine, ref in zip(("output", "grad input", "grad weight"), *results):
        close(mine, ref, what, (plane, stride, layout))
    assert (results[0][1][..., ~sampled] == 0).all()


@pytest.mark.parametrize("plane", [(6, 7), (20, 20)], ids=["side-by-side", "image-by-image"])
def test_a_strided_bias_is_read_with_its_stride(kernels_built, plane):
    """A bias that is every other entry of a buffer, given to the op and as a layer's parameter (the
    kernels once read it as contiguous)."""
    gen = torch.Generator().manual_seed(0)
    x, weight, big = torch.randn(2, 3, *plane, generator=gen), torch.randn(5, 3, 3, 3, generator=gen), torch.randn(10)
    bias = big[::2]
    assert bias.stride() == (2,)
    close(ops.conv2d(x, weight, bias, padding=1), F.conv2d(x, weight, bias, padding=1), "output", plane)
    layer = nn.Conv2d(3, 5, 3, padding=1)
    layer.bias = torch.nn.Parameter(big[::2])
    assert layer.bias.stride() == (2,)
    close(layer(x), F.conv2d(x, layer.weight, bias, padding=1), "layer output", plane)


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CNNZOO_KERNELS", "fastest")
    with pytest.raises(compiled.KernelsError, match="CNNZOO_KERNELS='fastest' is not one of auto, compiled"):
        ops.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match="kernels must be one of"):
        with compiled.use("fast"):
            pass


def run_python(code: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CNNZOO_KERNELS")}
    full_env.update(CNNZOO_CACHE_DIR=str(tmp_path / "cache"), **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True, text=True, timeout=300
    )


CONV_CHECK = """
    import torch, torch.nn.functional as F
    from cnnzoo import ops
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    for _ in range(3):
        assert torch.allclose(ops.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), atol=1e-5)
    print("ok")
"""


def test_without_a_compiler_auto_falls_back_with_one_warning(tmp_path):
    no_compiler = tmp_path / "bin"
    no_compiler.mkdir()
    done = run_python(CONV_CHECK, dict(PATH=str(no_compiler)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr.count("no C++ compiler found") == 1, done.stderr
    assert "reference (Python) kernels instead" in done.stderr


def test_without_a_compiler_compiled_mode_is_an_error(tmp_path):
    done = run_python(CONV_CHECK, dict(CXX=str(tmp_path / "no-such-c++"), CNNZOO_KERNELS="compiled"), tmp_path)
    assert done.returncode != 0
    assert "KernelsError: no C++ compiler found (CXX=" in done.stderr


def test_a_broken_compiler_in_auto_mode_falls_back(tmp_path):
    fake = tmp_path / "fake-c++"
    fake.write_text("#!/bin/sh\necho 'fake-c++: internal error' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = run_python(CONV_CHECK, dict(CXX=str(fake)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "building the compiled kernels with" in done.stderr and "fake-c++: internal error" in done.stderr
    assert not list((tmp_path / "cache").glob("*.so")), "a failed build left a library behind"


@pytest.mark.skipif(compiled.compiler() is None, reason="no C++ compiler")
def test_processes_starting_together_build_once(tmp_path):
    code = CONV_CHECK.replace('print("ok")', 'print("ok", compiled.library()._name)').replace(
        "from cnnzoo import ops", "from cnnzoo import ops\n    from cnnzoo.ops import compiled"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CNNZOO_KERNELS")}
    env.update(CNNZOO_CACHE_DIR=str(tmp_path / "cache"), CNNZOO_KERNELS="compiled")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(err.count("cnnzoo: compiling the CPU kernels") for _, err in outputs) == 1, outputs
    assert len({out.split()[1] for out, _ in outputs}) == 1  # one library, loaded by all three
    again = run_python(CONV_CHECK, dict(CNNZOO_KERNELS="compiled"), tmp_path)  # cached: no notice
    assert again.returncode == 0 and "compiling" not in again.stderr, again.stderr
