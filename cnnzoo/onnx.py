"""ONNX export: cnnzoo's operators become the standard ONNX nodes they equal.

:func:`export_onnx` exports the model with ``torch.export``, rewrites every ``torch.ops.cnnzoo.*`` call
as the ``aten`` operator with the same semantics (``STANDARD_OPS``), and hands the program to
``torch.onnx.export``, whose translations of those ``aten`` operators are torch's own: convolution
becomes ``Conv``, max pooling ``MaxPool``, average pooling ``AveragePool``, and global average
pooling (to 1x1) ``GlobalAveragePool``. The rewrite exists only for export; the operators
themselves never call torch's convolution or pooling.

Needs the ``onnx`` extra: ``pip install 'cnnzoo[onnx]'`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .ops import pool as reference_pool

aten = torch.ops.aten


def _conv2d(x, weight, bias, stride, padding, dilation, groups, algorithm="auto"):
    top, bottom, left, right = padding
    if top != bottom or left != right:  # 'same' with an even kernel: ONNX Conv takes the uneven pads as they are
        x = aten.constant_pad_nd.default(x, [left, right, top, bottom], 0.0)
        top = left = 0
    return aten.convolution.default(x, weight, bias, stride, [top, left], dilation, False, [0, 0], groups)


def _max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    return aten.max_pool2d_with_indices.default(x, kernel_size, stride, padding, dilation, ceil_mode)


def _avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    out = aten.avg_pool2d.default(x, kernel_size, stride, padding, ceil_mode, count_include_pad, None)
    if divisor_override is None:
        return out
    # ONNX AveragePool has no divisor_override (torch's exporter drops it silently): scale each
    # window's average back to its sum, then divide by the override
    divisor = reference_pool.avg_divisor(
        x.shape[2:], kernel_size, stride, padding, out.shape[2:], count_include_pad, None, x.dtype, x.device
    )
    return out * (divisor / divisor_override)  # (a number or a (Ho, Wo) map)


STANDARD_OPS = {
    torch.ops.cnnzoo.conv2d.default: _conv2d,
    torch.ops.cnnzoo.max_pool2d.default: _max_pool2d,
    torch.ops.cnnzoo.avg_pool2d.default: _avg_pool2d,
}


def _adaptive_avg_pool2d(x, output_size):
    """ONNX for ``cnnzoo::adaptive_avg_pool2d`` (an onnxscript translation: ONNX has no adaptive pooling).
    To 1x1 it is ``GlobalAveragePool``; bins that tile the input are ``AveragePool``; uneven bins are
    the reference's separable form, two products with constant averaging matrices."""
    import onnx_ir as ir  # the onnx extra, optional: imported only when an export runs
    from onnxscript import opset18 as op

    out = tuple(output_size)
    if out == (1, 1):
        return op.GlobalAveragePool(x)
    h, w = x.shape[2], x.shape[3]
    if not isinstance(h, int) or not isinstance(w, int):
        raise ValueError(
            f"export_onnx: adaptive average pooling to {out} needs a fixed input height and width, got {x.shape}"
        )
    tile = reference_pool.adaptive_tile((h, w), out)
    if tile is not None:
        return op.AveragePool(x, kernel_shape=list(tile), strides=list(tile))

    def matrix(size: int, bins: int, transpose: bool):
        m = reference_pool.adaptive_matrix(size, bins, torch.float64, "cpu").numpy().astype(np.float32)
        return op.CastLike(op.Constant(value=ir.tensor(np.ascontiguousarray(m.T if transpose else m))), x)

    return op.MatMul(op.MatMul(matrix(h, out[0], False), x), matrix(w, out[1], True))


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *, dynamic_batch: bool = True, **kwargs
) -> Path:
    """Write ``model`` as an ONNX file at ``path``, traced on ``example_input``; returns the path.

    The batch dimension is dynamic unless ``dynamic_batch=False``. Other keyword arguments go to
    ``torch.onnx.export`` (``opset_version``, ``input_names``, ``output_names``, ...). The model is
    exported in the mode it is in: call ``model.eval()`` first for inference.
    """
    try:
        import onnxscript  # noqa: F401  (the onnx extra is optional: missing, it is this message)
    except ImportError as error:
        raise ImportError("cnnzoo.export_onnx needs the onnx extra: pip install 'cnnzoo[onnx]'") from error
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if dynamic_batch and example_input.shape[0] == 1:  # torch.export would take a batch of 1 for a constant
        example_input = torch.cat([example_input, example_input])
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.export.export(model, (example_input,), dynamic_shapes=dynamic_shapes)
    program = program.run_decompositions(STANDARD_OPS)
    path = Path(path)
    torch.onnx.export(
        program,
        (example_input,),
        str(path),
        dynamo=True,
        verbose=False,
        custom_translation_table={torch.ops.cnnzoo.adaptive_avg_pool2d.default: _adaptive_avg_pool2d},
        **kwargs,
    )
    return path
