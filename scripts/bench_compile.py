"""Cold torch.compile time of zoo models on cnnzoo's operators and on torch.nn's, side by side.

    python scripts/bench_compile.py [--models lenet5,resnet20] [--repeat 1] [--backend inductor]

Each measurement runs in a fresh Python process with Inductor's and AOTAutograd's caches off, so every
compile is cold: ``torch.compile(model, fullgraph=True)``, then one forward and backward on a batch of
8 at the model's CIFAR/LeNet input size (the compile happens there). Custom and native runs alternate;
the ratio custom / native of the median times is printed per model. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

SIZES = {"lenet5": 32, "lenet5_1998": 32, "alexnet": 63}


def measure(name: str, backend: str, compiler: str) -> float:
    """One cold compile (forward and backward) of ``name`` on ``backend``, in this process."""
    import cnnzoo

    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=10, backend=backend)
    x = torch.randn(8, model.in_channels, SIZES.get(name, 32), SIZES.get(name, 32))
    start = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    compiled(x).sum().backward()
    return time.perf_counter() - start


def fresh_process(name: str, backend: str, compiler: str) -> float:
    env = {
        **os.environ,
        "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1",
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "0",
    }
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import bench_compile, json; "
        f"print(json.dumps(bench_compile.measure({name!r}, {backend!r}, {compiler!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {name} ({backend}) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,resnet20", help="comma-separated model names")
    parser.add_argument("--repeat", type=int, default=1, help="cold compiles per backend (median reported)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, ...)")
    args = parser.parse_args(argv)
    import cnnzoo

    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in cnnzoo.list_models()]
    if unknown or not names or args.repeat < 1:
        problem = f"unknown model {unknown[0]!r}" if unknown else "no model" if not names else "--repeat must be >= 1"
        print(f"bench_compile: {problem}", file=sys.stderr)
        return 2
    print(
        f"cold torch.compile(fullgraph=True, backend={args.backend!r}) + forward/backward, batch 8 | "
        f"torch {torch.__version__} | {os.cpu_count()} CPUs | median of {args.repeat}, fresh process each"
    )
    print(f"{'model':12} {'custom s':>9} {'native s':>9} {'ratio':>6}")
    for name in names:
        times: dict[str, list[float]] = {"custom": [], "torch": []}
        for _ in range(args.repeat):
            for backend in times:
                times[backend].append(fresh_process(name, backend, args.backend))
        custom, native = statistics.median(times["custom"]), statistics.median(times["torch"])
        print(f"{name:12} {custom:9.1f} {native:9.1f} {custom / native:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
