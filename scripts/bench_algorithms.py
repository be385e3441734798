"""Where FFT convolution starts to pay: forward+backward time of direct, FFT and torch's native convolution
over growing kernel sizes, custom over native side by side, medians of interleaved rounds.

    python scripts/bench_algorithms.py [--channels 32] [--size 32] [--batch 8] [--rounds 5]

The FFT costs about the same whatever the kernel (its transforms are as large as the padded input);
direct grows with the kernel's area. The first kernel size at which FFT is faster than direct is
printed at the end (or that none was, up to the largest size tried).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from cnnzoo import ops
from cnnzoo.report_algorithms import fwd_bwd_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7, 9, 11, 13, 15, 17])
    args = p.parse_args()
    torch.manual_seed(0)
    c, n, s = args.channels, args.batch, args.size
    print(f"{c}->{c} channels, {s}x{s} input, batch {n}, 'same' padding, float32, {torch.get_num_threads()} threads")
    columns = ("torch ms", "direct ms", "fft ms", "direct/torch", "fft/torch", "fft/direct")
    print(f"{'kernel':>6}  " + "  ".join(f"{c:>9}" for c in columns))
    crossover = None
    for k in args.kernels:
        x, w = torch.randn(n, c, s, s), torch.randn(c, c, k, k) / (c * k * k) ** 0.5
        fns = {
            "torch": lambda x, w, p=k // 2: F.conv2d(x, w, None, 1, p),
            "direct": lambda x, w, p=k // 2: ops.conv2d(x, w, None, 1, p, algorithm="direct"),
            "fft": lambda x, w, p=k // 2: ops.conv2d(x, w, None, 1, p, algorithm="fft"),
        }
        times = {name: [] for name in fns}
        for _ in range(args.rounds):  # interleaved: the machine's noise falls on all three alike
            for name, fn in fns.items():
                times[name].append(fwd_bwd_ms(fn, x, w, repeats=3))
        t = {name: statistics.median(v) for name, v in times.items()}
        print(
            f"{k:>4}x{k:<1}  {t['torch']:9.2f}  {t['direct']:9.2f}  {t['fft']:9.2f}  "
            f"{t['direct'] / t['torch']:9.2f}  {t['fft'] / t['torch']:9.2f}  {t['fft'] / t['direct']:9.2f}"
        )
        if crossover is None and t["fft"] < t["direct"]:
            crossover = k
    if crossover is None:
        print(f"FFT was slower than direct at every kernel size up to {args.kernels[-1]}x{args.kernels[-1]}")
    else:
        print(f"FFT is first faster than direct at {crossover}x{crossover}")


if __name__ == "__main__":
    main()
