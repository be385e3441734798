"""``python -m cnnzoo.report NAME --algorithms [--time]``: what each convolution algorithm costs on every
convolution of a model, side by side.

Per layer: the multiplications of direct, im2col, Winograd F(2x2, 3x3) and F(4x4, 3x3) and FFT (as
:func:`cnnzoo.ops.algorithms.multiplications` counts them), the relative error of each against float64
(the layer's float32 output on the activations a random image brings there, the model's own
initial weights; ``max |y - y64| / max |y64|``), and with ``--time`` each one's forward+backward time
(median of runs, ms) next to torch's native convolution. ``-`` where an algorithm does not apply.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .nn.conv import conv_inputs
from .ops import algorithms
from .ops.functional import resolve_padding

SHOWN = ("direct", "im2col", "winograd_f2", "winograd_f4", "fft")
SHORT = {"direct": "direct", "im2col": "im2col", "winograd_f2": "F2", "winograd_f4": "F4", "fft": "fft"}


def _geometry(layer: nn.Conv2d):
    pads = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation)
    return list(layer.stride), list(pads), list(layer.dilation), layer.groups


def relative_error(layer: nn.Conv2d, x: torch.Tensor, algorithm: str) -> float:
    """``max |y - y64| / max |y64|`` of the layer's float32 output by ``algorithm``."""
    stride, (top, bottom, left, right), dilation, groups = _geometry(layer)
    x, b = F.pad(x, (left, right, top, bottom)), None if layer.bias is None else layer.bias.detach()
    y = ops.conv2d(x, layer.weight.detach(), b, stride, 0, dilation, groups, algorithm=algorithm)
    b64 = None if b is None else b.double()
    exact = F.conv2d(x.double(), layer.weight.double(), b64, stride, 0, dilation, groups)
    return ((y.double() - exact).abs().max() / exact.abs().max().clamp_min(1e-30)).item()


def fwd_bwd_ms(fn, x: torch.Tensor, weight: torch.Tensor, repeats: int = 5) -> float:
    """The median time of ``fn(x, weight)`` forward and backward (both gradients), in ms."""
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    gy = torch.randn(fn(x, weight).shape)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        torch.autograd.grad(fn(x, weight), (x, weight), gy)
        if i:  # the first run warms the caches and the allocator
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layer_times(x, weight, stride, pads, dilation, groups: int, applies: dict[str, bool]) -> dict[str, float | None]:
    """torch's and each algorithm's forward+backward time on this layer (ms; None where it does not apply)."""
    conf = (stride, (pads[0], pads[2]), dilation, groups)
    if (pads[0], pads[2]) != (pads[1], pads[3]):  # an uneven 'same': padded beforehand, on both sides
        x, conf = F.pad(x, (pads[2], pads[3], pads[0], pads[1])), (stride, 0, dilation, groups)
    times = {"torch ms": fwd_bwd_ms(lambda x, w: F.conv2d(x, w, None, *conf), x, weight)}
    for a in SHOWN:
        fn = lambda x, w, a=a: ops.conv2d(x, w, None, *conf, algorithm=a)  # noqa: E731
        times[f"{SHORT[a]} ms"] = fwd_bwd_ms(fn, x, weight) if applies[a] else None
    return times


def rows(model: nn.Module, size, batch: int = 1, timed: bool = False) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per convolution, then the totals."""
    header = ["layer", "input", "kernel", "auto"]
    header += [f"{SHORT[a]} Mmul" for a in SHOWN] + [f"{SHORT[a]} error" for a in SHOWN]
    if timed:
        header += ["torch ms"] + [f"{SHORT[a]} ms" for a in SHOWN]
    table, totals = [], dict.fromkeys(header[4:], None)
    example = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
    for name, layer, x in conv_inputs(model, example):
        stride, pads, dilation, groups = _geometry(layer)
        kernel, weight = layer.kernel_size, layer.weight.detach()
        applies = {a: algorithms.unsuitable(a, kernel, stride, dilation) is None for a in SHOWN}
        row = [
            name,
            "x".join(map(str, x.shape[1:])),
            f"{kernel[0]}x{kernel[1]}/{stride[0]}" + (f" g{groups}" if groups > 1 else ""),
            algorithms.describe(
                getattr(layer, "algorithm", "auto"),
                kernel,
                stride,
                dilation,
                x.dtype,
                "cpu",
                groups,
                x.shape[2:],
                (weight.shape[1], weight.shape[0] // groups),
                x.shape[0],
            ),
        ]
        cells = {}
        for a in SHOWN:
            count = algorithms.multiplications(a, x.shape, weight.shape, stride, pads, dilation, groups)
            cells[f"{SHORT[a]} Mmul"] = None if count is None else count / 1e6
            cells[f"{SHORT[a]} error"] = relative_error(layer, x, a) if applies[a] else None
        if timed:
            cells.update(layer_times(x, weight, stride, pads, dilation, groups, applies))
        for key, value in cells.items():
            if value is not None and not key.endswith("error"):
                totals[key] = (totals[key] or 0.0) + value
        row += [_cell(key, cells[key]) for key in header[4:]]
        table.append(row)
    # each column's sum over the layers its algorithm applies to
    table.append(["total", "", "", ""] + [_cell(k, v) if not k.endswith("error") else "" for k, v in totals.items()])
    return header, table


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key.endswith("error"):
        return f"{value:.1e}"
    if key.endswith("Mmul"):
        return f"{value:,.3f}"
    return f"{value:.2f}"
