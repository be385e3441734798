"""Time whole training steps of zoo models on cnnzoo's ops and on torch.nn's, side by side.

    python scripts/bench_train.py [--device cpu|cuda] [--repeat 5] [--tiny] [--only TEXT] [--imagenet]
                                  [--algorithm auto|direct|winograd|...] [--compile] [--channels-last]

A step is forward, loss, backward and an SGD step, on random data at the model's CIFAR/LeNet input.
Both backends get the same weights and batches; their steps are interleaved (custom, native, custom,
...) and the medians compared: images/s of each and the ratio of step times custom / native. Memory:
the bytes autograd saves for the backward pass (what the two backends' layers keep), and the peak
memory of a step above the memory held before it: on CUDA the peak allocated; on the CPU the peak
resident size of four steps in a fresh process per backend, above its size before the first step
(which also counts the kernels' own scratch buffers, invisible to torch's allocator, and the
gradients and momentum buffers the first step creates). A benchmark, not a test: read the medians
and ratios.

``--imagenet`` times resnet18 (batch 8) and vgg16 (batch 4) at 224x224 instead; ``--algorithm`` sets
the custom models' convolution algorithm (docs/algorithms.md; ``auto`` by default).

``--compile`` compiles both models with ``torch.compile`` (Inductor) before timing (the first steps,
which compile, are not timed; the memory columns read n/a: autograd's saved tensors and the fresh
process's peak are those of eager steps). ``--channels-last`` puts both models' parameters and the
batch in the channels-last memory format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ops import argument_error, device_label, peak_memory, print_header, timed  # noqa: E402

import cnnzoo  # noqa: E402
from cnnzoo import nn as cnn  # noqa: E402
from cnnzoo.ops import algorithms, compiled  # noqa: E402

# (model, batch, input size): the training-step targets
MODELS = [("lenet5", 128, 32), ("resnet20", 128, 32), ("resnet18", 64, 32), ("vgg11_bn", 64, 32), ("googlenet", 32, 32)]
IMAGENET = [("resnet18", 8, 224), ("vgg16", 4, 224)]


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = model.loss_and_logits(criterion, model(x), y)
        loss.backward()
        optimizer.step()

    return step


def saved_bytes(step, model: nn.Module) -> int:
    """Bytes of the activations autograd saves for backward during one step: every saved tensor's
    storage once, the parameters (saved by reference, not copied) left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def batch_for(model: nn.Module, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.in_channels, size, size, generator=gen).to(device)
    return x, torch.randint(0, 10, (batch,), generator=gen).to(device)


def resident_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def step_peak_rss(name: str, backend: str, batch: int, size: int, steps: int = 3, algorithm: str = "auto") -> float:
    """In this process: the peak resident memory of ``1 + steps`` training steps above the resident
    memory before the first, in MiB. The first step counts, so that buffers kept from one call to the
    next (the compiled kernels' scratch, oneDNN's caches) are in the peak; the parameters' gradients
    and SGD's momentum buffers, the same for both backends, are too. Linux only
    (``/proc/self/clear_refs`` resets the peak)."""
    if backend == "custom":
        compiled.library()  # loaded (and built if need be) before the baseline
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, backend=backend).train()
    if backend == "custom":
        cnn.set_algorithm(model, algorithm)
    step = make_step(model, *batch_for(model, batch, size, torch.device("cpu")))
    base = resident_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    for _ in range(1 + steps):
        step()
    return resident_mib("VmHWM") - base


# glibc's malloc otherwise raises its mmap threshold as large blocks are freed and from then on keeps
# freed memory resident; fixed, every block over 128 KiB goes back to the system when freed, so the
# resident peak is the peak of live memory rather than of malloc's caching (which varied run to run
# by a factor of 5)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def fresh_peak_rss(name: str, backend: str, batch: int, size: int, algorithm: str = "auto") -> float | None:
    """``step_peak_rss`` in a fresh Python process (none of this process's heap counts), with malloc's
    mmap threshold fixed (``MALLOC_ENV``); None where it cannot be measured."""
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys, json; sys.path.insert(0, {here!r}); import bench_train; "
        f"print(json.dumps(bench_train.step_peak_rss({name!r}, {backend!r}, {batch}, {size}, 3, {algorithm!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env={**os.environ, **MALLOC_ENV}
    )
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None


def bench_model(
    name: str,
    batch: int,
    size: int,
    device: torch.device,
    repeat: int,
    algorithm: str = "auto",
    compile: bool = False,
    channels_last: bool = False,
) -> dict:
    custom = cnnzoo.create_model(name, backend="custom")
    cnn.set_algorithm(custom, algorithm)
    native = cnnzoo.create_model(name, backend="torch")
    native.load_state_dict(custom.state_dict())
    x, y = batch_for(custom, batch, size, device)
    nets = {"custom": custom.to(device).train(), "native": native.to(device).train()}
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
    # a compiled module forwards attribute access (loss_and_logits) to the model it wraps
    steps = {label: make_step(torch.compile(m) if compile else m, x, y) for label, m in nets.items()}
    for step in steps.values():  # warm-up (and compilation)
        for _ in range(3 if compile else 1):
            step()
    times = {label: [] for label in steps}
    for _ in range(repeat):
        for label, step in steps.items():
            times[label].append(timed(step, device))
    result = {}
    for label, step in steps.items():
        result[f"{label} ms"] = statistics.median(times[label]) * 1e3
        result[f"{label} img/s"] = batch / statistics.median(times[label])
        if compile:
            result[f"{label} saved"] = result[f"{label} peak"] = None
            continue
        result[f"{label} saved"] = saved_bytes(step, nets[label]) / 2**20
        result[f"{label} peak"] = (
            peak_memory(step, device)
            if device.type == "cuda"
            else fresh_peak_rss(name, "custom" if label == "custom" else "torch", batch, size, algorithm)
        )
    result["ratio"] = result["custom ms"] / result["native ms"]
    result["mem ratio"] = result["custom saved"] / result["native saved"] if not compile else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=5, help="timed steps per backend (median reported)")
    parser.add_argument("--tiny", action="store_true", help="batch 2 (a smoke test, not a benchmark)")
    parser.add_argument("--only", default="", help="run only the models whose name contains this text")
    parser.add_argument("--imagenet", action="store_true", help="resnet18 and vgg16 at 224x224")
    parser.add_argument("--algorithm", default="auto", choices=algorithms.ALGORITHMS, help="the custom convolutions'")
    parser.add_argument("--compile", action="store_true", help="both models compiled with torch.compile (Inductor)")
    parser.add_argument("--channels-last", action="store_true", help="models and batch in channels-last format")
    args = parser.parse_args(argv)
    if argument_error("bench_train", args):
        return 2
    models = [(n, 2 if args.tiny else b, s) for n, b, s in (IMAGENET if args.imagenet else MODELS) if args.only in n]
    if not models:
        print(f"bench_train: no model name contains {args.only!r}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    print(
        f"training steps, cnnzoo ops (custom) vs torch.nn (native) | {device_label(device)} | "
        f"torch {torch.__version__} | float32, SGD, algorithm {args.algorithm}"
        f"{', compiled' if args.compile else ''}{', channels-last' if args.channels_last else ''}, "
        f"median of {args.repeat} interleaved steps"
    )
    header = (
        f"{'model':10} {'batch':>5} {'custom ms':>10} {'native ms':>10} {'ratio':>6} {'custom img/s':>12} "
        f"{'native img/s':>12} {'saved MiB':>10} {'native':>8} {'ratio':>6} {'peak MiB':>9} {'native':>8}"
    )
    print_header(header)
    for name, batch, size in models:
        r = bench_model(name, batch, size, device, args.repeat, args.algorithm, args.compile, args.channels_last)
        saved = (
            f"{r['custom saved']:10.1f} {r['native saved']:8.1f} {r['mem ratio']:6.2f}"
            if r["mem ratio"] is not None
            else f"{'n/a':>10} {'n/a':>8} {'n/a':>6}"
        )
        peak = (
            f"{r['custom peak']:9.1f} {r['native peak']:8.1f}"
            if r["custom peak"] is not None and r["native peak"] is not None
            else f"{'n/a':>9} {'n/a':>8}"
        )
        print(
            f"{name:10} {batch:5d} {r['custom ms']:10.1f} {r['native ms']:10.1f} {r['ratio']:6.2f} "
            f"{r['custom img/s']:12.0f} {r['native img/s']:12.0f} {saved} {peak}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
