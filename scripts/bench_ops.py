"""Time cnnzoo.ops against torch.nn.functional on the zoo's representative layers, side by side.

    python scripts/bench_ops.py [--device cpu|cuda] [--dtype float32] [--repeat 7] [--tiny] [--only TEXT] [--imagenet]
                                [--algorithm auto|direct|im2col|winograd|winograd_f2|winograd_f4|fft]
    python scripts/bench_ops.py --overhead [--repeat 500]
    python scripts/bench_ops.py --kernels [--repeat 7] [--only TEXT]

For each layer: forward and forward+backward medians of interleaved runs (custom, native,
custom, native, ...) and their ratio custom/native, plus peak memory on CUDA. For convolutions, the
custom forward+backward speed in GFLOP/s (2 x multiply-adds of the forward and both gradients) and,
on the CPU with the compiled kernels, as a fraction of the machine's measured multiply-add peak (the
header gives it). The last line gives the geometric mean of the forward+backward ratios and the
worst. ``CNNZOO_KERNELS`` picks cnnzoo's implementation (see cnnzoo/ops/compiled.py). A benchmark,
not a test: timings on a shared machine are noisy, so read the medians and ratios.

``--overhead`` times each op on a 1x1x4x4 input instead, where the arithmetic costs next to nothing:
the per-call times (in microseconds) are the cost of getting into and out of the op (argument checks,
dispatch, autograd), and custom - native is what cnnzoo's layers add per call.

``--kernels`` times each convolution kernel alone (forward, input gradient, weight gradient: cnnzoo's
operators against the aten calls computing the same), with each one's GFLOP/s (2 x multiply-adds)
and, on the CPU with the compiled kernels, its fraction of the measured peak.

``--imagenet`` times every distinct convolution of VGG-16 and ResNet-18 at a 224x224 input instead.

``--algorithm`` runs cnnzoo's convolutions with that algorithm (see docs/algorithms.md; ``auto`` by
default); named, it keeps only the convolutions it applies to.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_layers import IMAGENET_LAYERS, LAYERS, Layer  # noqa: E402

from cnnzoo import ops  # noqa: E402
from cnnzoo.ops import algorithms, compiled  # noqa: E402


def make_call(layer: Layer, impl, device, dtype, backward: bool, algorithm: str = "auto"):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(layer.input_shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(backward)
    args = [x]
    if layer.weight_shape:
        args.append(
            (torch.randn(layer.weight_shape, generator=gen) * 0.1)
            .to(device=device, dtype=dtype)
            .requires_grad_(backward)
        )
        args.append(torch.zeros(layer.weight_shape[0], device=device, dtype=dtype).requires_grad_(backward))
    fn = getattr(impl, layer.op)
    kwargs = dict(layer.kwargs, algorithm=algorithm) if impl is ops and layer.op == "conv2d" else layer.kwargs

    def run():
        out = fn(*args, **kwargs)
        if backward:
            out.backward(torch.ones_like(out))
            for a in args:
                a.grad = None
        return out

    return run


def timed(run, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory(run, device) -> float | None:
    """Peak bytes allocated during one call, in MiB (CUDA only: CPU has no allocator statistics)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def bench_layer(layer: Layer, device, dtype, repeat: int, algorithm: str = "auto") -> dict:
    result = {}
    for mode, backward in (("fwd", False), ("fwd+bwd", True)):
        runs = {
            name: make_call(layer, impl, device, dtype, backward, algorithm)
            for name, impl in (("custom", ops), ("native", F))
        }
        with torch.set_grad_enabled(backward):
            for run in runs.values():  # warm-up
                run()
            times = {name: [] for name in runs}
            for _ in range(repeat):
                for name, run in runs.items():
                    times[name].append(timed(run, device))
            for name, run in runs.items():
                result[f"{mode} {name}"] = statistics.median(times[name]) * 1e3
                if backward:
                    result[f"mem {name}"] = peak_memory(run, device)
        result[f"{mode} ratio"] = result[f"{mode} custom"] / result[f"{mode} native"]
    return result


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    kernels = "compiled" if compiled.library() is not None else "reference"
    return f"CPU, {torch.get_num_threads()} threads, cnnzoo's {kernels} kernels"


def conv_flops(layer: Layer) -> int:
    """Floating-point operations of a convolution's forward and its two gradients: 3 x 2 x multiply-adds."""
    n, _, h, w = layer.input_shape
    o, cg, kh, kw = layer.weight_shape
    stride, padding = layer.kwargs.get("stride", 1), layer.kwargs.get("padding", 0)
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    return 6 * n * o * ho * wo * cg * kh * kw


def print_header(header: str) -> None:
    print(header)
    print("-" * len(header))


def argument_error(prog: str, args: argparse.Namespace) -> bool:
    """Print the problem with ``--device`` or ``--repeat`` (shared by the benchmark scripts), if any."""
    problem = (
        "--device cuda asked for, but CUDA is not available"
        if args.device == "cuda" and not torch.cuda.is_available()
        else "--repeat must be at least 1"
        if args.repeat < 1
        else None
    )
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
    return problem is not None


TINY = [
    Layer("conv2d 3x3 p1", "conv2d", (1, 1, 4, 4), (1, 1, 3, 3), {"padding": 1}),
    Layer("max_pool2d 2x2", "max_pool2d", (1, 1, 4, 4), None, {"kernel_size": 2}),
    Layer("avg_pool2d 2x2", "avg_pool2d", (1, 1, 4, 4), None, {"kernel_size": 2}),
    Layer("adaptive_avg_pool2d 1", "adaptive_avg_pool2d", (1, 1, 4, 4), None, {"output_size": 1}),
]


def overhead(device, dtype, repeat: int) -> int:
    print(
        f"per-call cost on a 1x1x4x4 input | {device_label(device)} | torch {torch.__version__} | "
        f"median of {repeat} interleaved calls, microseconds"
    )
    print_header(f"{'op':24} {'fwd':>7} {'native':>7} {'added':>7} {'fwd+bwd':>8} {'native':>7} {'added':>7}")
    for layer in TINY:
        r = bench_layer(layer, device, dtype, repeat)
        us = {k: v * 1e3 for k, v in r.items() if isinstance(v, float) and "ratio" not in k}
        print(
            f"{layer.name:24} {us['fwd custom']:7.1f} {us['fwd native']:7.1f} "
            f"{us['fwd custom'] - us['fwd native']:7.1f} {us['fwd+bwd custom']:8.1f} {us['fwd+bwd native']:7.1f} "
            f"{us['fwd+bwd custom'] - us['fwd+bwd native']:7.1f}",
            flush=True,
        )
    return 0


def applies(layer: Layer, algorithm: str) -> bool:
    """Whether the benchmark runs ``layer`` with ``algorithm``: every layer with ``auto``, else the
    convolutions it applies to."""
    if algorithm == "auto":
        return True
    kernel, stride = layer.weight_shape[2:] if layer.weight_shape else None, layer.kwargs.get("stride", 1)
    dilation = layer.kwargs.get("dilation", 1)
    return kernel is not None and algorithms.unsuitable(algorithm, kernel, [stride] * 2, [dilation] * 2) is None


def kernel_calls(layer: Layer, device, dtype, algorithm: str = "auto") -> dict[str, tuple]:
    """Per convolution kernel (forward, input gradient, weight gradient): cnnzoo's operator and the
    native aten call that computes the same thing, each a zero-argument callable."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(layer.input_shape, generator=gen).to(device=device, dtype=dtype)
    w = (torch.randn(layer.weight_shape, generator=gen) * 0.1).to(device=device, dtype=dtype)
    stride, pad = layer.kwargs.get("stride", 1), layer.kwargs.get("padding", 0)
    groups = layer.kwargs.get("groups", 1)
    s, p, d, p4 = [stride] * 2, [pad] * 2, [1, 1], [pad] * 4
    gy = torch.randn(F.conv2d(x, w, None, stride, pad, 1, groups).shape, generator=gen).to(device=device, dtype=dtype)
    cz, aten = torch.ops.cnnzoo, torch.ops.aten

    def native_grad(mask):
        return lambda: aten.convolution_backward(gy, x, w, None, s, p, d, False, [0, 0], groups, mask)

    return {
        "fwd": (
            lambda: cz.conv2d(x, w, None, s, p4, d, groups, algorithm),
            lambda: aten.convolution(x, w, None, s, p, d, False, [0, 0], groups),
        ),
        "input grad": (
            lambda: cz.conv2d_input_grad(gy, w, list(x.shape), s, p4, d, groups, False, algorithm),
            native_grad([True, False, False]),
        ),
        "weight grad": (
            lambda: cz.conv2d_weight_grad(x, gy, list(w.shape), s, p4, d, groups, False, algorithm),
            native_grad([False, True, False]),
        ),
    }


def kernels(layers: list[Layer], device, dtype, repeat: int, peak: float | None, algorithm: str = "auto") -> int:
    """Each convolution kernel alone, against native's: ms, ratio, GFLOP/s and % of the peak."""
    print_header(
        f"{'layer':28} {'kernel':>11} {'custom':>8} {'native':>8} {'ratio':>6} {'GFLOP/s':>7} {'%peak':>5} "
        f"{'native GFLOP/s':>14}"
    )
    with torch.no_grad():
        for layer in (layer for layer in layers if layer.op == "conv2d"):
            for kernel, pair in kernel_calls(layer, device, dtype, algorithm).items():
                for run in pair:  # warm-up
                    run()
                times = ([], [])
                for _ in range(repeat):
                    for run, into in zip(pair, times):
                        into.append(timed(run, device))
                mine, native = (statistics.median(t) for t in times)
                flops = conv_flops(layer) / 3
                rate = f"{100 * flops / mine / 1e9 / peak:5.0f}" if peak else f"{'':5}"
                print(
                    f"{layer.name:28} {kernel:>11} {mine * 1e3:8.2f} {native * 1e3:8.2f} {mine / native:6.2f} "
                    f"{flops / mine / 1e9:7.1f} {rate} {flops / native / 1e9:14.1f}",
                    flush=True,
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per implementation (median reported)")
    parser.add_argument("--tiny", action="store_true", help="shrink every layer (a smoke test, not a benchmark)")
    parser.add_argument("--only", default="", help="run only the layers whose name contains this text")
    parser.add_argument("--imagenet", action="store_true", help="VGG-16's and ResNet-18's convolutions at 224x224")
    parser.add_argument("--overhead", action="store_true", help="per-call cost on tiny inputs (microseconds)")
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="each convolution kernel (forward, input and weight gradient) alone, with GFLOP/s",
    )
    parser.add_argument(
        "--algorithm",
        default="auto",
        choices=algorithms.ALGORITHMS,
        help="cnnzoo's convolution algorithm (named: only the convolutions it applies to)",
    )
    args = parser.parse_args(argv)
    if argument_error("bench_ops", args):
        return 2
    if args.overhead:
        return overhead(torch.device(args.device), getattr(torch, args.dtype), args.repeat)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    layers = [
        layer.shrunk() if args.tiny else layer
        for layer in (IMAGENET_LAYERS if args.imagenet else LAYERS)
        if args.only in layer.name
    ]
    layers = [layer for layer in layers if applies(layer, args.algorithm)]
    if not layers:
        print(f"bench_ops: no layer name contains {args.only!r} (with --algorithm {args.algorithm})", file=sys.stderr)
        return 2
    print(
        f"cnnzoo.ops vs torch.nn.functional | {device_label(device)} | torch {torch.__version__} | {args.dtype} | "
        f"median of {args.repeat} interleaved runs, times in ms, ratio = custom / native"
    )
    peak = None
    if device.type == "cpu" and compiled.library() is not None:
        peak = compiled.fma_peak(torch.get_num_threads())
        print(f"multiply-add peak measured on this machine: {peak:.0f} GFLOP/s with {torch.get_num_threads()} threads")
    if args.kernels:
        return kernels(layers, device, dtype, args.repeat, peak, args.algorithm)
    header = (
        f"{'layer':28} {'input':>18} {'fwd':>8} {'native':>8} {'ratio':>6} {'fwd+bwd':>8} {'native':>8} "
        f"{'ratio':>6} {'GFLOP/s':>7} {'%peak':>5} {'peak MiB':>9} {'native':>7}"
    )
    print_header(header)
    ratios = []
    for layer in layers:
        r = bench_layer(layer, device, dtype, args.repeat, args.algorithm)
        ratios.append(r["fwd+bwd ratio"])
        mem = (
            f"{r['mem custom']:9.1f} {r['mem native']:7.1f}"
            if r["mem custom"] is not None
            else f"{'n/a':>9} {'n/a':>7}"
        )
        shape = "x".join(map(str, layer.input_shape))
        speed = conv_flops(layer) / r["fwd+bwd custom"] / 1e6 if layer.op == "conv2d" else None
        rate = (f"{speed:7.1f} " + (f"{100 * speed / peak:5.0f}" if peak else f"{'':5}")) if speed else f"{'':13}"
        print(
            f"{layer.name:28} {shape:>18} {r['fwd custom']:8.2f} {r['fwd native']:8.2f} {r['fwd ratio']:6.2f} "
            f"{r['fwd+bwd custom']:8.2f} {r['fwd+bwd native']:8.2f} {r['fwd+bwd ratio']:6.2f} {rate} {mem}",
            flush=True,
        )
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"geomean fwd+bwd ratio: {geomean:.2f}   worst: {max(ratios):.2f} ({layers[ratios.index(max(ratios))].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
