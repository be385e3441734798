"""Check cnnzoo.ops against torch.nn.functional on the zoo's layers and the textbook examples.

    python scripts/validate_ops.py

For every representative layer of LeNet, AlexNet, VGG, ResNet and GoogLeNet (at reduced batch and
channel counts), runs our op and torch's on the same input in float64 and float32 and prints the
largest difference in the output and in every gradient. Exits 1 if any exceeds the tolerance
(1e-9 in float64, 1e-4 in float32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_layers import LAYERS, Layer  # noqa: E402

from cnnzoo import ops  # noqa: E402

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|): absolute for small values, relative for large ones."""
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp(min=1)).item()


def compare(layer: Layer, dtype: torch.dtype) -> list[float]:
    """Errors of the output and of each gradient (input, weight, bias) for one layer."""
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(layer.input_shape, generator=gen, dtype=dtype)]
    if layer.weight_shape:
        tensors += [
            torch.randn(layer.weight_shape, generator=gen, dtype=dtype),
            torch.randn(layer.weight_shape[0], generator=gen, dtype=dtype),
        ]
    results = []
    for impl in (ops, F):
        leaves = [t.clone().requires_grad_() for t in tensors]
        out = getattr(impl, layer.op)(*leaves, **layer.kwargs)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        results.append([out.detach(), *torch.autograd.grad(out, leaves, grad_out)])
    return [relative_error(a, b) for a, b in zip(*results)]


def textbook_examples() -> list[tuple[str, bool]]:
    grid = torch.tensor([[0, 1, 3, 9], [4, 8, 6, 2], [7, 4, 2, 0], [4, 3, 5, 1]], dtype=torch.float32)
    pooled = ops.max_pool2d(grid.view(1, 1, 4, 4), 2).view(2, 2)
    x, k = torch.randn(1, 1, 6, 6), torch.randn(1, 1, 3, 3)
    sizes = [tuple(ops.conv2d(x, k, padding=p).shape[-2:]) for p in ("valid", "same", "full")]
    return [
        ("max pool 2x2/2 of the 4x4 grid = [[8, 9], [7, 5]]", pooled.tolist() == [[8, 9], [7, 5]]),
        ("6x6 input, 3x3 kernel: valid 4x4, same 6x6, full 8x8", sizes == [(4, 4), (6, 6), (8, 8)]),
    ]


def main() -> int:
    torch.manual_seed(0)
    print("cnnzoo.ops vs torch.nn.functional: largest |difference| / max(1, |reference|)")
    header = f"{'layer':28} {'input':>14} {'dtype':>8} {'output':>9} {'d input':>9} {'d weight':>9} {'d bias':>9}  ok"
    print(header)
    print("-" * len(header))
    failures = 0
    for layer in LAYERS:
        small = layer.shrunk(batch=2, channels=32, size=32)
        for dtype, tol in TOLERANCE.items():
            errors = compare(small, dtype)
            ok = max(errors) <= tol
            failures += not ok
            cells = " ".join(f"{e:9.1e}" for e in errors) + " " * 10 * (4 - len(errors))
            shape = "x".join(map(str, small.input_shape))
            print(f"{layer.name:28} {shape:>14} {str(dtype)[6:]:>8} {cells} {'yes' if ok else 'NO'}")
    print()
    for text, ok in textbook_examples():
        failures += not ok
        print(f"{'yes' if ok else 'NO ':3}  {text}")
    print(f"\n{'all checks passed' if failures == 0 else f'{failures} checks FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
