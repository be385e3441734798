"""The Triton kernels (``cnnzoo/triton/``): the CUDA implementation of the ``torch.ops.cnnzoo.*``
operators, as ``compiled.py`` is the CPU one.

Each implementation here has its operator's signature (see ``declare.Operator.implement``), chooses
tile sizes and launches a kernel that names the reference function it must equal. :func:`applies`
says when they serve a call: CUDA tensors of float32, float16 or bfloat16 (float64 stays on the
reference), unless ``CNNZOO_KERNELS=reference``.

**Tile sizes** come from a small heuristic table (:data:`TILES`), not from autotuning: a first call
then costs one compilation per kernel variant (Triton caches it on disk, ``~/.triton/cache``), and a
benchmark that runs every configuration would cost each new layer shape seconds, in every process.

**float32** goes through the tensor cores in TF32 exactly when torch would for its own convolution
(:func:`tf32`: ``torch.backends.cudnn.conv.fp32_precision``, or the older ``allow_tf32``), so that a
comparison with cuDNN is like with like; otherwise in full precision.

**Without a GPU** the kernels run in Triton's CPU interpreter, for the tests: ``TRITON_INTERPRET=1``
in the environment before the kernels are first imported, and :func:`on_cpu` to send CPU tensors to
them. The interpreter runs at a few MFLOP/s, on tiny shapes only.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from types import ModuleType
from typing import NamedTuple

import torch

from . import compiled
from .layout import empty, is_channels_last

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int64)
INT32_LIMIT = 2**31 - 1
_on_cpu = False  # set by on_cpu(): CPU tensors go to the kernels too, through the interpreter


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@contextlib.contextmanager
def on_cpu() -> Iterator[None]:
    """A block in which CPU tensors are served by the Triton kernels, run by Triton's interpreter
    (which must have been switched on before the kernels were imported)."""
    global _on_cpu
    if not interpreting():
        raise RuntimeError("gpu.on_cpu() needs Triton's interpreter: set TRITON_INTERPRET=1 before importing cnnzoo")
    previous, _on_cpu = _on_cpu, True
    try:
        yield
    finally:
        _on_cpu = previous


@functools.cache
def available() -> bool:
    """Whether Triton can be imported (torch's CUDA builds ship it)."""
    try:
        import triton  # noqa: F401  (imported to see whether it can be; the kernels import it again)
    except ImportError:
        return False
    return True


def applies(*tensors: torch.Tensor | None) -> bool:
    """Whether the Triton kernels serve a call on these tensors: float32, float16 or bfloat16 (int64
    for max pooling's indices) on CUDA (on the CPU inside :func:`on_cpu`), not empty. The first
    tensor is asked first, so that a call on the CPU costs one attribute read."""
    first = tensors[0]
    if not (first.is_cuda or _on_cpu):
        return False
    for t in tensors:
        if t is not None and (t.dtype not in _DTYPES or t.numel() == 0 or not (t.is_cuda or (_on_cpu and t.is_cpu))):
            return False
    return available() and compiled.mode() != "reference" and (not first.is_cuda or capable(first.device))


@functools.lru_cache(maxsize=16)
def capable(device: torch.device) -> bool:
    """Whether the kernels compile for this GPU: compute capability 8.0 (Ampere) or later, which has
    the bfloat16 and TF32 tensor cores they use; older GPUs keep the reference."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def on_device(launcher):
    """Decorator: run ``launcher`` with its first tensor's GPU current (Triton launches on the current
    device, whichever the tensors are on)."""

    @functools.wraps(launcher)
    def launch(first, *args, **kwargs):
        if first.is_cuda and first.device.index != torch.cuda.current_device():
            with torch.cuda.device(first.device):
                return launcher(first, *args, **kwargs)
        return launcher(first, *args, **kwargs)

    return launch


def deterministic() -> bool:
    """Whether torch was asked for deterministic algorithms (max pooling's backward then takes the
    reference: its atomic adds may sum three or more gradients in any order)."""
    return torch.are_deterministic_algorithms_enabled()


def kernels() -> tuple[ModuleType, ModuleType]:
    """The kernel modules, ``(conv, pool)``."""
    # imported at first use: importing them imports Triton and compiles nothing, but decorates the
    # kernels, and that must follow the choice of TRITON_INTERPRET (the tests make it first)
    from ..triton import conv, pool

    return conv, pool


def tf32(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision`` for operands of ``dtype``: ``"tf32"`` for float32 where torch's
    cuDNN convolutions would use TF32, else ``"ieee"``."""
    if dtype != torch.float32 or interpreting():
        return "ieee"
    # torch >= 2.9: cudnn.conv's setting, "none" inheriting cudnn's, then the global one
    for holder in (getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn, torch.backends):
        precision = getattr(holder, "fp32_precision", None)
        if precision not in (None, "none"):
            return "tf32" if precision == "tf32" else "ieee"
    if hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):
        return "ieee"  # every level "none": torch's default for convolutions under the new settings
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"  # an older torch


def big(*tensors: torch.Tensor) -> bool:
    """Whether offsets into these tensors can pass int32 (the kernels then compute them in int64): a
    tensor of 2^31 elements or more, or a view whose strides reach that far into its storage."""
    for t in tensors:
        reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        if t.numel() > INT32_LIMIT or reach >= INT32_LIMIT:
            return True
    return False


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --- tile sizes ---------------------------------------------------------------------------------


class Tiles(NamedTuple):
    """A matrix-product tile: rows, columns and reduction step (BM, BN, BK), warps and pipeline stages."""

    rows: int
    cols: int
    step: int
    warps: int
    stages: int


# The heuristic table, by the size of the product's column dimension (output channels for the forward
# pass, input channels for the input gradient, taps x channels for the weight gradient) and rows, and
# by the operands' width: half-precision operands take a reduction step of 64 (128 bytes a row, what
# the tensor cores' loads want), float32 ones 32. Largest: 128 x 128 x 64 x 2 bytes x 3 stages = 96 KiB
# of shared memory, within an A100's 163 KiB and an H100's 227 KiB (tests/test_ops_triton.py checks).
TILES = {
    "wide": Tiles(128, 128, 32, 8, 3),
    "wide-16bit": Tiles(128, 128, 64, 8, 3),
    "medium": Tiles(128, 64, 32, 4, 3),
    "medium-16bit": Tiles(128, 64, 64, 4, 3),
    "narrow": Tiles(64, 32, 32, 4, 3),
    "thin": Tiles(32, 16, 16, 2, 2),
}
_forced: str | None = None  # set by tiles(): every call takes this entry of TILES


@contextlib.contextmanager
def tiles(name: str) -> Iterator[None]:
    """A block in which every convolution takes ``TILES[name]`` (the tests run each entry)."""
    global _forced
    if name not in TILES:
        raise ValueError(f"tiles must be one of {', '.join(TILES)}, got {name!r}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def choose(rows: int, cols: int, reduction: int, dtype: torch.dtype) -> Tiles:
    """The table's tile for a product of ``rows`` x ``cols`` (per group) summed over ``reduction``."""
    if _forced is not None:
        return TILES[_forced]
    if cols <= 16:
        return TILES["thin"]
    if cols <= 32 or rows <= 2048:
        return TILES["narrow"]
    name = "medium" if cols <= 64 else "wide"
    return TILES[f"{name}-16bit"] if dtype.itemsize == 2 and reduction >= 64 else TILES[name]


# Few channels per group: below this, the forward pass reduces over taps and channels flattened
# (a 16-wide block of 3 channels would be four-fifths padding).
FLAT_CHANNELS = 16
_forced_split: int | None = None  # set by split(): the weight gradient's number of chunks


@contextlib.contextmanager
def split(chunks: int) -> Iterator[None]:
    """A block in which the weight gradient's reduction is split into ``chunks`` (the tests)."""
    global _forced_split
    previous, _forced_split = _forced_split, chunks
    try:
        yield
    finally:
        _forced_split = previous


@functools.lru_cache(maxsize=16)
def processors(device: torch.device) -> int:
    """The device's streaming multiprocessors (a nominal 8 on the CPU, for the interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def weight_grad_split(pixels: int, tiles_per_chunk: int, step: int, device: torch.device) -> int:
    """Chunks of the weight gradient's reduction over ``pixels``: enough programs to fill the device
    twice over, each chunk at least four reduction steps long."""
    if _forced_split is not None:
        return max(1, min(_forced_split, cdiv(pixels, step)))
    wanted = cdiv(2 * processors(device), tiles_per_chunk)
    return max(1, min(wanted, pixels // (4 * step)))


# --- the operators' Triton implementations: each has its operator's signature (``out`` is the output
# rule's answer, see ``declare.Output``) and equals the reference function its kernel names


def _launch_options(t: Tiles) -> dict:
    return {"num_warps": t.warps, "num_stages": t.stages}


@on_device
def conv2d(x, weight, bias, stride, padding, dilation, groups: int, *, out) -> torch.Tensor:
    """``conv.conv2d_forward`` (``triton/conv.py: conv2d_forward``)."""
    conv, _ = kernels()
    y = out.new(x)
    n, _, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho, wo = y.shape[2:]
    og = o // groups
    flat = cg < FLAT_CHANNELS
    t = choose(n * ho * wo, og, cg * kh * kw if flat else cg, x.dtype)  # (summed per tap, unless flat)
    blocks = cdiv(n * ho * wo, t.rows)
    conv.conv2d_forward[(groups * blocks, cdiv(og, t.cols))](
        x,
        weight,
        y if bias is None else bias,  # (any pointer where there is no bias: it is not read)
        y,
        n * ho * wo,
        blocks,
        h,
        w,
        ho,
        wo,
        cg,
        og,
        *x.stride(),
        *weight.stride(),
        0 if bias is None else bias.stride(0),
        *y.stride(),
        *stride,
        padding[0],
        padding[2],
        *dilation,
        KH=kh,
        KW=kw,
        HAS_BIAS=bias is not None,
        FLAT=flat,
        POINTWISE=not flat and kh == kw == 1 and not any(padding),
        BIG=big(x, weight, y),
        PRECISION=tf32(x.dtype),
        UPCAST=interpreting(),
        BM=t.rows,
        BN=t.cols,
        BK=t.step,
        **_launch_options(t),
    )
    return y


@on_device
def conv2d_input_grad(
    grad_out, weight, input_size, stride, padding, dilation, groups: int, channels_last=False, *, out
) -> torch.Tensor:
    """``conv.conv2d_input_grad`` (``triton/conv.py: conv2d_input_grad``)."""
    conv, _ = kernels()
    dx = out.new(grad_out)
    n, _, h, w = input_size
    o, cg, kh, kw = weight.shape
    ho, wo = grad_out.shape[2:]
    (sh, sw), og = stride, o // groups
    rows = n * cdiv(h, sh) * cdiv(w, sw)  # the most pixels of one stride phase
    t = choose(rows, cg, og, grad_out.dtype)  # (summed per tap)
    blocks = cdiv(rows, t.rows)
    conv.conv2d_input_grad[(groups * sh * sw * blocks, cdiv(cg, t.cols))](
        grad_out,
        weight,
        dx,
        n,
        blocks,
        h,
        w,
        ho,
        wo,
        cg,
        og,
        *grad_out.stride(),
        *weight.stride(),
        *dx.stride(),
        padding[0],
        padding[2],
        *dilation,
        SH=sh,
        SW=sw,
        KH=kh,
        KW=kw,
        BIG=big(grad_out, weight, dx),
        PRECISION=tf32(grad_out.dtype),
        UPCAST=interpreting(),
        BM=t.rows,
        BN=t.cols,
        BK=t.step,
        **_launch_options(t),
    )
    return dx


@on_device
def conv2d_weight_grad(
    x, grad_out, weight_size, stride, padding, dilation, groups: int, channels_last=False, *, out
) -> torch.Tensor:
    """``conv.conv2d_weight_grad`` (``triton/conv.py: conv2d_weight_grad``, then the chunks summed)."""
    conv, _ = kernels()
    n, _, h, w = x.shape
    o, cg, kh, kw = weight_size
    ho, wo = grad_out.shape[2:]
    og, taps, pixels = o // groups, cg * kh * kw, n * ho * wo
    t = choose(og, taps, pixels, x.dtype)
    tiles_per_chunk = cdiv(og, t.rows) * cdiv(taps, t.cols) * groups
    chunks = weight_grad_split(pixels, tiles_per_chunk, t.step, x.device)
    chunk = cdiv(cdiv(pixels, chunks), t.step) * t.step
    chunks = cdiv(pixels, chunk)
    workspace = torch.empty((chunks, o, taps), dtype=torch.float32, device=x.device)
    blocks = cdiv(og, t.rows)
    conv.conv2d_weight_grad[(groups * chunks * blocks, cdiv(taps, t.cols))](
        x,
        grad_out,
        workspace,
        pixels,
        blocks,
        h,
        w,
        ho,
        wo,
        cg,
        og,
        o,
        *x.stride(),
        *grad_out.stride(),
        *stride,
        padding[0],
        padding[2],
        *dilation,
        chunk,
        chunks,
        KH=kh,
        KW=kw,
        BIG=big(x, grad_out, workspace),
        PRECISION=tf32(x.dtype),
        UPCAST=interpreting(),
        BM=t.rows,
        BN=t.cols,
        BK=t.step,
        **_launch_options(t),
    )
    total = workspace[0] if chunks == 1 else workspace.sum(0)  # in a fixed order: deterministic
    return out.new(x).copy_(total.view(o, kh, kw, cg).permute(0, 3, 1, 2))


def conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups: int, dilation, *, out) -> torch.Tensor:
    """``conv.conv_transpose2d``: the input gradient of a convolution, plus the bias."""
    result = conv2d_input_grad(x, weight, out.size, stride, padding, dilation, groups, out=out)
    return result if bias is None else result.add_(bias.view(1, -1, 1, 1))


# --- pooling ------------------------------------------------------------------------------------

POOL_BLOCK = 256  # elements per program
POOL_WARPS = 4


def _pool_grid(size) -> tuple[int]:
    return (cdiv(size[0] * size[1] * size[2] * size[3], POOL_BLOCK),)


@on_device
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode: bool, *, out) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool.max_pool2d_forward`` (``triton/pool.py: max_pool2d_forward``)."""
    _, pool = kernels()
    values, indices = out[0].new(x), out[1].new(x)
    pool.max_pool2d_forward[_pool_grid(values.shape)](
        x,
        values,
        indices,
        values.numel(),
        *x.shape[1:],
        *values.shape[2:],
        *x.stride(),
        *values.stride(),
        *stride,
        *padding,
        *dilation,
        KH=kernel_size[0],
        KW=kernel_size[1],
        CL=out[0].channels_last,
        BIG=big(x, indices),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return values, indices


@on_device
def max_pool2d_backward(grad_out, indices, input_size) -> torch.Tensor:
    """``pool.max_pool2d_backward`` (``triton/pool.py: max_pool2d_backward``, float32 atomic adds)."""
    _, pool = kernels()
    grad = empty(grad_out, input_size, is_channels_last(indices), torch.float32).zero_()
    pool.max_pool2d_backward[_pool_grid(grad_out.shape)](
        grad_out,
        indices,
        grad,
        grad_out.numel(),
        *input_size[1:],
        *grad_out.shape[2:],
        *grad_out.stride(),
        *indices.stride(),
        *grad.stride(),
        CL=is_channels_last(grad_out),
        BIG=big(grad, indices),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return grad.to(grad_out.dtype)


@on_device
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad: bool, divisor_override, *, out):
    """``pool.avg_pool2d_forward`` (``triton/pool.py: avg_pool2d_forward``)."""
    _, pool = kernels()
    y = out.new(x)
    pool.avg_pool2d_forward[_pool_grid(y.shape)](
        x,
        y,
        y.numel(),
        *x.shape[1:],
        *y.shape[2:],
        *x.stride(),
        *y.stride(),
        *stride,
        *padding,
        OVERRIDE=divisor_override or 0,
        KH=kernel_size[0],
        KW=kernel_size[1],
        INCLUDE_PAD=count_include_pad,
        CL=out.channels_last,
        BIG=big(x, y),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return y


@on_device
def avg_pool2d_backward(
    grad_out,
    input_size,
    kernel_size,
    stride,
    padding,
    ceil_mode,
    count_include_pad,
    divisor_override,
    channels_last=False,
    *,
    out,
) -> torch.Tensor:
    """``pool.avg_pool2d_backward`` (``triton/pool.py: avg_pool2d_backward``)."""
    _, pool = kernels()
    grad = out.new(grad_out)
    pool.avg_pool2d_backward[_pool_grid(grad.shape)](
        grad_out,
        grad,
        grad.numel(),
        *input_size[1:],
        *grad_out.shape[2:],
        *grad_out.stride(),
        *grad.stride(),
        *stride,
        *padding,
        OVERRIDE=divisor_override or 0,
        KH=kernel_size[0],
        KW=kernel_size[1],
        SPAN_H=cdiv(kernel_size[0], stride[0]),
        SPAN_W=cdiv(kernel_size[1], stride[1]),
        INCLUDE_PAD=count_include_pad,
        CL=out.channels_last,
        BIG=big(grad_out, grad),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return grad


@functools.lru_cache(maxsize=256)
def adaptive_bins(size: int, out: int) -> tuple[int, int]:
    """Along one axis: the largest bin of ``size`` pixels pooled to ``out``, and the most bins that
    share one pixel."""
    largest = max(((i + 1) * size + out - 1) // out - i * size // out for i in range(out))
    sharing = max(((i + 1) * out + size - 1) // size - i * out // size for i in range(size))
    return largest, sharing


@on_device
def adaptive_avg_pool2d(x, output_size, *, out) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_forward`` (``triton/pool.py: adaptive_avg_pool2d_forward``)."""
    _, pool = kernels()
    y = out.new(x)
    (h, w), (ho, wo) = x.shape[2:], y.shape[2:]
    pool.adaptive_avg_pool2d_forward[_pool_grid(y.shape)](
        x,
        y,
        y.numel(),
        *x.shape[1:],
        ho,
        wo,
        *x.stride(),
        *y.stride(),
        adaptive_bins(h, ho)[0],
        adaptive_bins(w, wo)[0],
        CL=out.channels_last,
        BIG=big(x, y),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return y


@on_device
def adaptive_avg_pool2d_backward(grad_out, input_size, channels_last=False, *, out) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_backward`` (``triton/pool.py: adaptive_avg_pool2d_backward``)."""
    _, pool = kernels()
    grad = out.new(grad_out)
    (h, w), (ho, wo) = input_size[2:], grad_out.shape[2:]
    pool.adaptive_avg_pool2d_backward[_pool_grid(grad.shape)](
        grad_out,
        grad,
        grad.numel(),
        *input_size[1:],
        ho,
        wo,
        *grad_out.stride(),
        *grad.stride(),
        adaptive_bins(h, ho)[1],
        adaptive_bins(w, wo)[1],
        CL=out.channels_last,
        BIG=big(grad_out, grad),
        BLOCK=POOL_BLOCK,
        num_warps=POOL_WARPS,
    )
    return grad
