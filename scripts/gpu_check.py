"""One command for a GPU: test and time cnnzoo's CUDA path, and write the tables to a markdown file.

    python scripts/gpu_check.py OUT.md [--budget SECONDS] [--repeat N]      (make gpu-check OUT=...)

Made for a GPU machine with its own Python and packages and no network: it creates nothing and
installs nothing, and needs only torch (2.11 or later, with its Triton) and numpy, pyyaml,
scikit-learn and tqdm. In order:

1. the GPU, driver, CUDA, torch and Triton versions;
2. the CUDA tests: the operator test modules with ``-k cuda`` (their ``device`` parameter);
3. every zoo layer of ``zoo_layers.py`` (batch x4), Triton against cuDNN (``cudnn.benchmark``, the
   same TF32 setting, channels_last on both sides) and against the old reference path (im2col and
   cuBLAS, ``CNNZOO_KERNELS=reference``): forward, input gradient, weight gradient and
   forward+backward, in bfloat16 and float32, each with its ratio and its fraction of the roofline
   (``DEVICES``: peak FLOP/s and memory bandwidth);
4. training steps of lenet5, resnet20, resnet50 and googlenet, custom over torch, in AMP bfloat16,
   eager and compiled with ``mode="reduce-overhead"`` (CUDA graphs);
5. the default config trained on ``cuda`` beside the same run on the CPU;
6. one DistributedDataParallel step with NCCL.

Parts that would run past ``--budget`` (default 280 s) are skipped and the tables say so. Without a
GPU it writes the versions and "no CUDA device" and exits 0: every other part is skipped.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # the real kernels (before Triton is first imported)
    # a fresh kernel cache, so that each layer's first call shows what compiling its kernels costs
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnzoo-triton-cache-")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from zoo_layers import LAYERS  # noqa: E402

import cnnzoo  # noqa: E402
from cnnzoo import ops  # noqa: E402
from cnnzoo.ops import compiled, gpu, library  # noqa: E402
from cnnzoo.train import main as train  # noqa: E402

# Dense peaks (FLOP/s) for bfloat16, TF32 and FP32, and memory bandwidth (bytes/s), from the vendors'
# data sheets; a device is matched by a name fragment.
DEVICES = {
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "bandwidth": 4.8e12},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "bandwidth": 3.35e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12, "bandwidth": 2.0e12},
}
DEVICE = "cuda"  # where the layers are timed (the tests check the calls on the CPU)
TRAIN_MODELS = [("lenet5", 128, 32), ("resnet20", 128, 32), ("resnet50", 32, 224), ("googlenet", 32, 224)]


class Report:
    """Lines printed as they come and kept for the markdown file."""

    def __init__(self, path: Path, budget: float) -> None:
        self.path, self.lines, self.start, self.budget = path, [], time.monotonic(), budget

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str], rows: list[list]) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "---|" * len(header))
        for row in rows:
            cells = (str(v).replace("\n", " ").replace("|", "\\|") for v in row)
            self("| " + " | ".join(cells) + " |")
        self()

    def time_left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(self.lines) + "\n")


def versions(report: Report) -> bool:
    """The versions; whether there is a CUDA device."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name() if cuda else "none"
    driver = "n/a"
    if cuda:
        try:
            smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            driver = subprocess.run(smi, capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            driver = "unknown (no nvidia-smi)"
    report("# cnnzoo gpu-check")
    report()
    report.table(
        ["GPU", "driver", "CUDA", "torch", "Triton", "Python"],
        [[gpu, driver, torch.version.cuda, torch.__version__, triton_version, sys.version.split()[0]]],
    )
    if not cuda:
        report("no CUDA device: every GPU part is skipped")
    return cuda


def cuda_tests(report: Report) -> None:
    report("## CUDA tests")
    if importlib.util.find_spec("pytest") is None:
        report("skipped: pytest is not installed for this Python")
        report()
        return
    # the Triton kernels' own tests (every tile entry, every case, on the GPU), then the operator tests'
    # CUDA parameters
    others = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_ops_*.py"))
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    for command in ([*pytest, "tests/test_ops_triton.py"], [*pytest, "-k", "cuda", *others]):
        try:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=max(30, report.time_left() / 4)
            )
            tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            report(f"`{' '.join(command[2:5])} ...`: exit {done.returncode}, {tail}")
            if done.returncode != 0:
                failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
                report("```")
                report("\n".join(failed[:40]) + "\n" + done.stdout[-3000:] + done.stderr[-1500:])
                report("```")
        except subprocess.TimeoutExpired:
            report(f"`{' '.join(command[2:5])} ...`: stopped at the time limit")
    report()


# --- layers ---------------------------------------------------------------------------------------


def gpu_ms(fn, repeat: int, warmup: int = 3) -> float:
    """The median time of ``fn`` in milliseconds, by CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peaks() -> dict | None:
    name = torch.cuda.get_device_name()
    return next((p for key, p in DEVICES.items() if key in name), None)


def conv_calls(layer, dtype, impl: str):
    """The four directions of a conv layer for one implementation: 'cnnzoo' (Triton), 'reference'
    (cnnzoo's reference path) or 'cudnn'. Returns (calls by direction, FLOPs, bytes)."""
    cl = torch.channels_last
    n, c, h, w = layer.input_shape
    o, cg, kh, kw = layer.weight_shape
    stride, pad = layer.kwargs.get("stride", 1), layer.kwargs.get("padding", 0)
    groups = layer.kwargs.get("groups", 1)
    x = torch.randn(layer.input_shape, device=DEVICE, dtype=dtype).contiguous(memory_format=cl).requires_grad_()
    weight = (torch.randn(layer.weight_shape, device=DEVICE, dtype=dtype) * 0.05).contiguous(memory_format=cl)
    weight.requires_grad_()
    bias = torch.zeros(o, device=DEVICE, dtype=dtype, requires_grad=True)
    conv = ops.conv2d if impl != "cudnn" else F.conv2d
    y = conv(x, weight, bias, stride=stride, padding=pad, groups=groups)
    gy = torch.randn_like(y)
    s2, p4 = [stride, stride], [pad, pad, pad, pad]
    if impl == "cudnn":

        def grad(mask):
            return lambda: torch.ops.aten.convolution_backward(
                gy, x, weight, None, s2, [pad, pad], [1, 1], False, [0, 0], groups, mask
            )

        dgrad, wgrad = grad([True, False, False]), grad([False, True, False])
    else:

        def dgrad():
            return library.conv2d_input_grad(gy, weight, list(x.shape), s2, p4, [1, 1], groups, True)

        def wgrad():
            return library.conv2d_weight_grad(x, gy, list(weight.shape), s2, p4, [1, 1], groups, True)

    def forward():
        with torch.no_grad():
            return conv(x, weight, bias, stride=stride, padding=pad, groups=groups)

    def both():
        conv(x, weight, bias, stride=stride, padding=pad, groups=groups).backward(gy)

    ho, wo = y.shape[2:]
    macs = n * o * ho * wo * cg * kh * kw
    size = torch.finfo(dtype).bits // 8
    tensor_bytes = (x.numel() + weight.numel() + y.numel()) * size
    calls = {"fwd": forward, "dgrad": dgrad, "wgrad": wgrad, "fwd+bwd": both}
    work = {"fwd": 2 * macs, "dgrad": 2 * macs, "wgrad": 2 * macs, "fwd+bwd": 6 * macs}
    return calls, work, tensor_bytes


def pool_calls(layer, dtype, impl: str):
    fn = getattr(F if impl == "cudnn" else ops, layer.op)
    x = torch.randn(layer.input_shape, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = fn(x, **layer.kwargs)
    gy = torch.randn_like(y)

    def forward():
        with torch.no_grad():
            return fn(x, **layer.kwargs)

    def both():
        fn(x, **layer.kwargs).backward(gy)

    size = torch.finfo(dtype).bits // 8
    return {"fwd": forward, "fwd+bwd": both}, {"fwd": 0, "fwd+bwd": 0}, (x.numel() + y.numel()) * size


def layers(report: Report, repeat: int, batch_scale: int) -> None:
    torch.backends.cudnn.benchmark = True
    peak = peaks()
    for dtype in (torch.bfloat16, torch.float32):
        precision = "bf16" if dtype == torch.bfloat16 else ("tf32" if gpu.tf32(dtype) == "tf32" else "fp32")
        report(f"## Layers, {precision} (channels_last, batch x{batch_scale}; ms, medians of {repeat})")
        rows, ratios, pool_ratios, slower = [], [], [], []
        for layer in LAYERS:
            if report.time_left() < 60:
                report(f"(stopped at {layer.name}: time budget)")
                break
            layer = replace(layer, input_shape=(layer.input_shape[0] * batch_scale, *layer.input_shape[1:]))
            try:
                rows.extend(layer_rows(layer, dtype, precision, peak, repeat, ratios, pool_ratios, slower))
            except torch.cuda.OutOfMemoryError as e:
                rows.append([layer.name, "", f"FAILED: {e}", "", "", "", "", ""])
                torch.cuda.empty_cache()
            except Exception as e:  # a failure is a finding; a CUDA error poisons the context, so stop
                rows.append([layer.name, "", f"FAILED: {type(e).__name__}: {str(e)[:300]}", "", "", "", "", ""])
                if "CUDA" in str(e):
                    break
        report.table(
            ["layer", "direction", "triton", "cudnn", "ratio", "rel. error", "roofline", "reference (x), first call"],
            rows,
        )
        if ratios:
            geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            report(
                f"**{precision} conv fwd+bwd: geomean {geomean:.2f}x cuDNN, worst {max(ratios):.2f}x; pooling "
                f"worst {max(pool_ratios, default=float('nan')):.2f}x; slower than the reference: "
                f"{', '.join(slower) or 'none'}**"
            )
            report()
        report.write()


def relative_error(mine, theirs) -> float:
    """max |mine - theirs| / max |theirs| (aten's backward returns a tuple: its first tensor)."""
    if isinstance(theirs, tuple):
        theirs = next(t for t in theirs if t is not None)
    if isinstance(mine, tuple):
        mine = mine[0]
    return ((mine.float() - theirs.float()).abs().max() / theirs.float().abs().max().clamp_min(1e-30)).item()


def layer_rows(layer, dtype, precision, peak, repeat, ratios, pool_ratios, slower) -> list[list]:
    """One layer's rows: each direction timed on Triton and cuDNN, its result checked against cuDNN's."""
    make = conv_calls if layer.op == "conv2d" else pool_calls
    torch.manual_seed(0)
    mine, work, tensor_bytes = make(layer, dtype, "cnnzoo")
    torch.manual_seed(0)
    theirs, _, _ = make(layer, dtype, "cudnn")
    start = time.perf_counter()
    mine["fwd+bwd"]()  # the first call: Triton compiles the layer's kernels (unless cached)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    with compiled.use("reference"):
        old, _, _ = make(layer, dtype, "reference")
        old_ms = gpu_ms(old["fwd+bwd"], max(3, repeat // 4))
    rows = []
    for direction in mine:
        error = "" if direction == "fwd+bwd" else f"{relative_error(mine[direction](), theirs[direction]()):.1e}"
        t_mine, t_theirs = gpu_ms(mine[direction], repeat), gpu_ms(theirs[direction], repeat)
        ratio = t_mine / t_theirs
        roofline = ""
        if peak is not None:
            ideal = max(work[direction] / peak[precision], tensor_bytes / peak["bandwidth"])
            roofline = f"{ideal / (t_mine / 1e3):.0%}"
        extra = ""
        if direction == "fwd+bwd":
            (ratios if layer.op == "conv2d" else pool_ratios).append(ratio)
            extra = f"{old_ms:.3f} ({old_ms / t_mine:.1f}x), {first:.2f} s"
            if old_ms < t_mine:
                slower.append(layer.name)
        rows.append([layer.name, direction, f"{t_mine:.3f}", f"{t_theirs:.3f}", f"{ratio:.2f}", error, roofline, extra])
    return rows


# --- training steps -------------------------------------------------------------------------------


def train_steps(report: Report, repeat: int) -> None:
    report("## Training steps, AMP bf16 (ms, medians)")
    rows = []
    for name, batch, size in TRAIN_MODELS:
        for mode in ("eager", "reduce-overhead"):
            if report.time_left() < (90 if mode == "reduce-overhead" else 30):
                rows.append([name, batch, mode, "skipped: time budget", "", ""])
                continue
            times = {}
            try:
                for backend in ("custom", "torch"):
                    if report.time_left() < (60 if mode == "reduce-overhead" else 15):
                        raise TimeoutError("time budget")
                    torch.manual_seed(0)
                    model = cnnzoo.create_model(name, backend=backend).cuda().to(memory_format=torch.channels_last)
                    x = torch.randn(batch, model.in_channels, size, size, device=DEVICE)
                    x = x.contiguous(memory_format=torch.channels_last)
                    y = torch.randint(0, 10, (batch,), device=DEVICE)
                    net = torch.compile(model, mode="reduce-overhead") if mode != "eager" else model
                    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
                    criterion = torch.nn.CrossEntropyLoss()

                    def step(net=net, model=model, optimizer=optimizer, criterion=criterion, x=x, y=y, mode=mode):
                        if mode != "eager":  # a new CUDA-graph step (the last step's outputs may be overwritten)
                            torch.compiler.cudagraph_mark_step_begin()
                        optimizer.zero_grad(set_to_none=True)
                        with torch.autocast("cuda", dtype=torch.bfloat16):
                            loss, _, _ = model.loss_and_logits(criterion, net(x), y)
                        loss.backward()
                        optimizer.step()

                    times[backend] = gpu_ms(step, repeat, warmup=3 if mode == "eager" else 6)
                ratio = times["custom"] / times["torch"]
                rows.append([name, batch, mode, f"{times['custom']:.2f}", f"{times['torch']:.2f}", f"{ratio:.2f}"])
            except TimeoutError:
                rows.append([name, batch, mode, "skipped: time budget", "", ""])
            except Exception as e:  # a failure is a finding: it goes in the table
                rows.append([name, batch, mode, f"FAILED: {type(e).__name__}: {str(e)[:200]}", "", ""])
    report.table(["model", "batch", "mode", "cnnzoo ms", "torch ms", "ratio"], rows)
    report.write()


def default_run(report: Report) -> None:
    report("## The default config on cuda and on the CPU")
    if report.time_left() < 45:
        report("skipped: time budget")
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cpu", "cuda"):
            out = Path(tmp) / device
            argv = ["--config", str(ROOT / "configs" / "lenet5_digits.yaml"), "--output-dir", str(out)]
            code = train([*argv, "--quiet", "--set", f"train.device={device}"])
            summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
            results[device] = (code, summary.get("val_acc"), summary.get("train_seconds"))
    rows = [[d, code, acc, f"{secs:.1f}" if secs else ""] for d, (code, acc, secs) in results.items()]
    report.table(["device", "exit", "val_acc", "train seconds"], rows)
    cpu, cuda = results["cpu"][1], results["cuda"][1]
    if cpu is not None and cuda is not None:
        report(f"**accuracy cuda - cpu: {cuda - cpu:+.4f}**")
        report()


def ddp_step(report: Report) -> None:
    report("## One DistributedDataParallel step (NCCL, one process)")
    try:
        dist.init_process_group(
            "nccl", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1, timeout=datetime.timedelta(seconds=60)
        )
        model = DistributedDataParallel(cnnzoo.create_model("resnet20").cuda())
        x, y = torch.randn(8, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (8,), device=DEVICE)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads = sum(p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None)
        report(f"ok: gradients all-reduced, |grad| sum {grads:.3g}")
    except Exception as e:  # a failure is a finding
        report(f"FAILED: {type(e).__name__}: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    report()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the markdown file to write")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds (default 280)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (default 20)")
    parser.add_argument("--batch-scale", type=int, default=4, help="zoo layers' batch multiplier (default 4)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.budget <= 0 or args.batch_scale < 1:
        print("gpu_check.py: --repeat, --budget and --batch-scale must be positive", file=sys.stderr)
        return 2
    report = Report(args.output, args.budget)
    signal.signal(signal.SIGTERM, lambda *_: (report("stopped by SIGTERM"), report.write(), sys.exit(1)))
    try:
        if versions(report):
            sections = (
                lambda: cuda_tests(report),
                lambda: layers(report, args.repeat, args.batch_scale),
                lambda: train_steps(report, max(5, args.repeat // 2)),
                lambda: default_run(report),
                lambda: ddp_step(report),
            )
            for section in sections:
                section()
                report.write()  # (a machine that stops the run keeps what was measured)
        report(f"gpu-check took {time.monotonic() - report.start:.0f} s")
    finally:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
