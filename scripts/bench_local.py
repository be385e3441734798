"""Time cnnzoo's locally connected and tiled convolutions against the usual pure-PyTorch formulation,
side by side: every window by ``F.unfold``, then one ``einsum`` against the kernel of its position (for
a tiled layer, against its kernel sets indexed out to every position first).

    python scripts/bench_local.py [--repeat 9] [--only TEXT] [--tiny] [--device cpu|cuda]

Layers: LeNet-5's C1 and C3 at the digits config's batch (32) and at 128, and CIFAR-sized layers
(3->32 at 32x32, 32->32 at 16x16, 64->64 at 8x8, 3x3 kernels, padding 1) at batch 128. For each:
forward and forward+backward medians of interleaved runs (cnnzoo, unfold+einsum, cnnzoo, ...) in
milliseconds (cnnzoo's, then unfold+einsum's as u+e) and their ratio cnnzoo/unfold+einsum (below 1:
cnnzoo is faster). The last lines give the geometric mean of each column of ratios and the worst.
A benchmark, not a test: timings on a shared machine are noisy, so read the medians and ratios.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_ops import timed  # noqa: E402  (this script's folder is on the path when it runs)

from cnnzoo import ops  # noqa: E402

# name, (N, C, H, W), out channels, kernel, padding
LAYERS = [
    ("lenet5 C1 b32", (32, 1, 32, 32), 6, 5, 0),
    ("lenet5 C3 b32", (32, 6, 14, 14), 16, 5, 0),
    ("lenet5 C1 b128", (128, 1, 32, 32), 6, 5, 0),
    ("lenet5 C3 b128", (128, 6, 14, 14), 16, 5, 0),
    ("cifar 3->32 @32", (128, 3, 32, 32), 32, 3, 1),
    ("cifar 32->32 @16", (128, 32, 16, 16), 32, 3, 1),
    ("cifar 64->64 @8", (128, 64, 8, 8), 64, 3, 1),
]
TILE = 2


def unfold_einsum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """The pure-PyTorch locally connected layer: ``weight`` (Ho, Wo, O, C, kh, kw), bias (Ho, Wo, O)."""
    ho, wo, o, c, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=padding)  # N, C*kh*kw, Ho*Wo
    out = torch.einsum("nkl,lok->nol", cols, weight.reshape(ho * wo, o, c * kh * kw))
    return out.reshape(x.shape[0], o, ho, wo) + bias.permute(2, 0, 1)


def tiled_unfold_einsum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """The pure-PyTorch tiled convolution: the kernel sets indexed out to every position, then as above."""
    kh = weight.shape[4]
    ho, wo = x.shape[2] + 2 * padding - kh + 1, x.shape[3] + 2 * padding - weight.shape[5] + 1
    rows, columns = (
        torch.arange(ho, device=x.device) % weight.shape[0],
        torch.arange(wo, device=x.device) % weight.shape[1],
    )
    expanded = weight[rows[:, None], columns[None, :]]
    plane_bias = bias.expand(ho, wo, bias.shape[0])
    return unfold_einsum(x, expanded, plane_bias, padding)


def calls(kind: str, shape, out_channels: int, kernel: int, padding: int, device, backward: bool):
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    ho, wo = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    lead = (ho, wo) if kind == "local" else (TILE, TILE)
    x = torch.randn(shape, generator=gen).to(device).requires_grad_(backward)
    weight = (
        (torch.randn(*lead, out_channels, c, kernel, kernel, generator=gen) * 0.1).to(device).requires_grad_(backward)
    )
    bias = torch.zeros(*((ho, wo) if kind == "local" else ()), out_channels, device=device, requires_grad=backward)
    mine = ops.local_conv2d if kind == "local" else ops.tiled_conv2d
    theirs = unfold_einsum if kind == "local" else tiled_unfold_einsum

    def make(fn):
        def run():
            out = fn(x, weight, bias, padding=padding) if fn is mine else fn(x, weight, bias, padding)
            if backward:
                out.backward(torch.ones_like(out))
                for t in (x, weight, bias):
                    t.grad = None

        return run

    return make(mine), make(theirs)


def bench(kind: str, layer, device, repeat: int) -> dict[str, float]:
    _, shape, out_channels, kernel, padding = layer
    result = {}
    for mode, backward in (("fwd", False), ("fwd+bwd", True)):
        runs = calls(kind, shape, out_channels, kernel, padding, device, backward)
        with torch.set_grad_enabled(backward):
            for run in runs:
                run()  # warm-up
            times = ([], [])
            for _ in range(repeat):
                for run, t in zip(runs, times):
                    t.append(timed(run, device))
        mine, theirs = (statistics.median(t) * 1e3 for t in times)
        result[mode] = (mine, theirs, mine / theirs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per implementation (median reported)")
    parser.add_argument("--only", default="", help="run only the layers whose name contains this text")
    parser.add_argument("--tiny", action="store_true", help="batch 2 (a smoke test, not a benchmark)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    layers = [layer for layer in LAYERS if args.only in layer[0]]
    if not layers:
        parser.error(f"no layer name contains {args.only!r}; layers: {', '.join(layer[0] for layer in LAYERS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.tiny:
        layers = [(name, (2, *shape[1:]), *rest) for name, shape, *rest in layers]
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"# {device.type}, torch {torch.__version__}, {threads} threads, float32, medians of {args.repeat}")
    print(f"# ratio = cnnzoo / unfold+einsum (below 1: cnnzoo faster); tiled layers have {TILE}x{TILE} kernel sets")
    columns = f"{'fwd: cnnzoo':>11} {'u+e':>9} {'ratio':>6}  {'fwd+bwd: cnnzoo':>15} {'u+e':>9} {'ratio':>6}"
    print(f"{'layer':<18} {'kind':<6} {columns}")
    ratios: dict[str, list[float]] = {"fwd": [], "fwd+bwd": []}
    for layer in layers:
        for kind in ("local", "tiled"):
            r = bench(kind, layer, device, args.repeat)
            cells = [f"{r[m][0]:>{w}.2f} {r[m][1]:>9.2f} {r[m][2]:>6.2f}" for m, w in (("fwd", 11), ("fwd+bwd", 15))]
            print(f"{layer[0]:<18} {kind:<6} {cells[0]}  {cells[1]}")
            for mode in ratios:
                ratios[mode].append(r[mode][2])
    for mode, values in ratios.items():
        geomean = math.exp(sum(math.log(v) for v in values) / len(values))
        print(f"# {mode}: geomean ratio {geomean:.2f}, worst {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
