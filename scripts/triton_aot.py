"""Compile every Triton kernel variant cnnzoo launches ahead of time, for GPUs that are not here.

    python scripts/triton_aot.py [--arch 80 90] [--quick]

Triton's CPU interpreter accepts programs the GPU compiler rejects (``tl.dot`` shapes, shared memory
beyond the device's), so the tests also compile each variant for real targets with ``triton.compile``
and a ``GPUTarget``, which needs no GPU. The variants are the launches ``cnnzoo/ops/gpu.py`` makes for
a set of layers (every entry of the tile table, forward, both gradients and the pooling kernels,
float32 and bfloat16), captured instead of run. Each line gives the kernel, its variant, the target
and the shared memory it needs; exit code 1 if any fails to compile or needs more shared memory than
the target has.

Run it with Triton's interpreter off (``TRITON_INTERPRET`` unset): the kernels must be decorated for
the compiler.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

# shared memory per block, in bytes, that a kernel may use on each target (the opt-in maximum)
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


class Launch:
    """One captured launch: the kernel, its arguments and its options."""

    def __init__(self, name: str, kernel, args: tuple, kwargs: dict) -> None:
        self.name, self.kernel, self.args, self.kwargs = name, kernel, args, kwargs

    def key(self) -> tuple:
        """What makes a compiled variant: the constexprs, the pointer dtypes and the options."""
        pointers = tuple(str(a.dtype) for a in self.args if isinstance(a, torch.Tensor))
        return (self.name, pointers, tuple(sorted(self.kwargs.items())))


class Capture:
    """A kernel module whose kernels record their launches instead of running."""

    def __init__(self, module, launches: list[Launch]) -> None:
        self.module, self.launches = module, launches

    def __getattr__(self, name: str):
        kernel = getattr(self.module, name)
        capture = self

        class Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: capture.launches.append(Launch(name, kernel, args, kwargs))

        return Grid()


def captured_launches(quick: bool) -> list[Launch]:
    """The launches of ``gpu.py`` for a set of layers, tile table entries and dtypes (CPU tensors:
    nothing runs)."""
    from cnnzoo.ops import gpu, library

    conv, pool = gpu.kernels()
    launches: list[Launch] = []
    gpu.kernels = lambda: (Capture(conv, launches), Capture(pool, launches))
    layers = [  # input, weight, stride, padding (t, b, l, r), groups
        ((2, 64, 14, 14), (128, 64, 3, 3), [1, 1], [1, 1, 1, 1], 1),  # taps
        ((2, 3, 32, 32), (64, 3, 7, 7), [2, 2], [3, 3, 3, 3], 1),  # flat (the stems)
        ((2, 256, 7, 7), (64, 256, 1, 1), [1, 1], [0, 0, 0, 0], 1),  # pointwise
        ((2, 32, 8, 8), (32, 1, 3, 3), [2, 2], [1, 1, 1, 1], 32),  # depthwise
    ]

    def launch(layer, dtype):
        x_shape, w_shape, stride, padding, groups = layer
        x, w = torch.zeros(x_shape, dtype=dtype), torch.zeros(w_shape, dtype=dtype)
        conf = (stride, padding, [1, 1], groups)
        y = gpu.conv2d(x, w, torch.zeros(w_shape[0], dtype=dtype), *conf, out=library.conv2d.rule(x, w, None, *conf))
        gpu.conv2d_input_grad(
            y, w, list(x_shape), *conf, out=library.conv2d_input_grad.rule(y, w, list(x_shape), *conf)
        )
        gpu.conv2d_weight_grad(
            x, y, list(w_shape), *conf, out=library.conv2d_weight_grad.rule(x, y, list(w_shape), *conf)
        )

    # quick: every tile entry on the first layer in bfloat16 and float32 (TF32), the other layers with
    # the tiles the table gives them, in bfloat16; else every layer, tile entry and dtype
    dtypes = [torch.bfloat16, torch.float32, torch.float16]
    for dtype in dtypes[:2] if quick else dtypes:
        for tiles in gpu.TILES:
            with gpu.tiles(tiles):
                for layer in layers[:1] if quick else layers:
                    launch(layer, dtype)
    for dtype in dtypes[:1] if quick else []:
        for layer in layers[1:]:
            launch(layer, dtype)
    for dtype in dtypes[:1] if quick else dtypes:
        x = torch.zeros(2, 16, 9, 9, dtype=dtype)
        values, indices = gpu.max_pool2d(
            x,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            False,
            out=library.max_pool2d.rule(x, [3, 3], [2, 2], [1, 1], [1, 1], False),
        )
        gpu.max_pool2d_backward(values, indices, list(x.shape))
        avg = ([3, 3], [2, 2], [1, 1], True, False, None)
        y = gpu.avg_pool2d(x, *avg, out=library.avg_pool2d.rule(x, *avg))
        gpu.avg_pool2d_backward(y, list(x.shape), *avg, out=library.avg_pool2d_backward.rule(y, list(x.shape), *avg))
        y = gpu.adaptive_avg_pool2d(x, [4, 4], out=library.adaptive_avg_pool2d.rule(x, [4, 4]))
        gpu.adaptive_avg_pool2d_backward(
            y, list(x.shape), out=library.adaptive_avg_pool2d_backward.rule(y, list(x.shape))
        )
    unique = {captured.key(): captured for captured in launches}
    return list(unique.values())


TRITON_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int64: "*i64"}


def compile_launch(launch: Launch, arch: int):
    """``triton.compile`` of one captured launch for ``sm_<arch>``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = {k: launch.kwargs[k] for k in ("num_warps", "num_stages") if k in launch.kwargs}
    constexprs = {k: v for k, v in launch.kwargs.items() if k not in options}
    names = launch.kernel.arg_names
    signature, values = {}, dict(zip(names, launch.args))
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif isinstance(values[name], torch.Tensor):
            signature[name] = TRITON_TYPES[values[name].dtype]
        else:
            signature[name] = "i32" if abs(int(values[name])) < 2**31 else "i64"
    source = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SHARED_LIMIT))
    parser.add_argument("--quick", action="store_true", help="each tile entry once per dtype, not per layer")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("triton_aot.py: unset TRITON_INTERPRET (the interpreter's kernels cannot be compiled)", file=sys.stderr)
        return 2
    failures = 0
    launches = captured_launches(args.quick)
    for launch in launches:
        flags = " ".join(f"{k}={v}" for k, v in launch.kwargs.items() if k not in ("num_warps", "num_stages"))
        dtype = next(str(a.dtype).removeprefix("torch.") for a in launch.args if isinstance(a, torch.Tensor))
        for arch in args.arch:
            start = time.perf_counter()
            try:
                shared = compile_launch(launch, arch).metadata.shared
            except Exception as e:  # a compiler error of any kind is the finding
                failures += 1
                print(f"FAIL {launch.name} sm_{arch} {dtype} {flags}: {type(e).__name__}: {str(e)[:300]}")
                continue
            ok = shared <= SHARED_LIMIT[arch]
            failures += not ok
            print(
                f"{'ok  ' if ok else 'FAIL'} {launch.name} sm_{arch} {dtype} {flags} shared={shared} "
                f"({time.perf_counter() - start:.1f}s)",
                flush=True,
            )
    print(f"{len(launches)} variants x {len(args.arch)} targets, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
