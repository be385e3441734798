"""The compiled kernels: hand-written C++ (``cnnzoo/csrc/``) built at first use into a shared library,
the fast CPU implementation of the ``torch.ops.cnnzoo.*`` operators.

Each operator's implementation here has the operator's signature (see ``declare.Operator.implement``)
and must equal the reference function in ``conv.py`` or ``pool.py`` that its docstring names;
:func:`applies` says when they can stand in: float32 tensors on the CPU. Double
backward goes through the same operators, so it uses them too; float64, half precision and every
other device keep the reference.

``CNNZOO_KERNELS`` picks the implementation: ``auto`` (the default: compiled where they apply, and
the reference with a one-time warning if they cannot be built), ``compiled`` (an error if they cannot
be built) or ``reference``. :func:`use` changes it for a block of code.

Each kernel takes its tensors' data pointers, a geometry struct (``csrc/cnnzoo.h``, mirrored here by
:class:`ConvGeometry` and :class:`PoolGeometry`) and a thread count; :func:`_launch` calls them all.

The library is built with the system's C++ compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``)
into ``$CNNZOO_CACHE_DIR`` (default ``~/.cache/cnnzoo``), once per source version, compiler and
machine; a file lock makes processes that start together (``torchrun``) build it only once.
``CNNZOO_KERNELS_SANITIZE=1`` builds it with AddressSanitizer and UndefinedBehaviorSanitizer (run
Python with the ASan runtime preloaded, see the Makefile's ``sanitize`` target).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import UserError
from .layout import empty

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = [CSRC / name for name in ("conv.cpp", "winograd.cpp", "pool.cpp", "peak.cpp")]
# included by the sources: part of the build cache key, not of the command
HEADERS = [CSRC / "cnnzoo.h", CSRC / "blocks.h"]
FLAGS = ["-std=c++17", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-march=native"]
OPTIMIZE = ["-O3"]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
MODES = ("auto", "compiled", "reference")


class KernelsError(UserError):
    """The compiled kernels were asked for (``CNNZOO_KERNELS=compiled``) and cannot be had."""


_mode: str | None = None  # set by use(); None: read CNNZOO_KERNELS
_library: ctypes.CDLL | None = None
_failure: str | None = None  # why the library could not be built (auto mode then uses the reference)


def mode() -> str:
    """The implementation asked for: ``auto``, ``compiled`` or ``reference``."""
    if _mode is not None:
        return _mode
    value = os.environ.get("CNNZOO_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise KernelsError(f"CNNZOO_KERNELS={value!r} is not one of {', '.join(MODES)}")
    return value


@contextlib.contextmanager
def use(value: str) -> Iterator[None]:
    """Run a block with ``value`` (``auto``, ``compiled`` or ``reference``) in place of ``CNNZOO_KERNELS``."""
    global _mode
    if value not in MODES:
        raise ValueError(f"kernels must be one of {', '.join(MODES)}, got {value!r}")
    previous, _mode = _mode, value
    try:
        yield
    finally:
        _mode = previous


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX`` if set (even if it does not exist), else the first of
    ``c++``, ``g++``, ``clang++`` on the PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return next(filter(None, map(shutil.which, ("c++", "g++", "clang++"))), None)


def sanitized() -> bool:
    return os.environ.get("CNNZOO_KERNELS_SANITIZE", "") not in ("", "0")


def cache_dir() -> Path:
    if os.environ.get("CNNZOO_CACHE_DIR"):
        return Path(os.environ["CNNZOO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnzoo"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    return platform.processor()


def build_command(cxx: str, output: Path) -> list[str]:
    return [cxx, *FLAGS, *(SANITIZE if sanitized() else OPTIMIZE), *map(str, SOURCES), "-o", str(output)]


def library_path(cxx: str) -> Path:
    """Where the library for these sources, this compiler and these flags on this machine lives."""
    key = hashlib.sha256()
    for source in SOURCES + HEADERS:
        key.update(source.read_bytes())
    key.update(" ".join(build_command(cxx, Path("out"))).encode())
    key.update((platform.machine() + _cpu_model()).encode())
    suffix = "-sanitize" if sanitized() else ""
    return cache_dir() / f"cnnzoo_kernels-{key.hexdigest()[:16]}{suffix}.so"


def build() -> Path:
    """Build the library unless it is in the cache already; returns its path. Raises KernelsError."""
    cxx = compiler()
    if cxx is None:
        wanted = f"CXX={os.environ['CXX']!r}" if os.environ.get("CXX") else "c++, g++ or clang++"
        raise KernelsError(f"no C++ compiler found ({wanted}): the compiled kernels cannot be built")
    path = library_path(cxx)
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then look again
            if not path.exists():
                _compile(cxx, path)
    except OSError as e:
        raise KernelsError(f"cannot build the compiled kernels in {str(path.parent)!r}: {e}") from None
    return path


def _compile(cxx: str, path: Path) -> None:
    print(f"cnnzoo: compiling the CPU kernels with {cxx} (first use only) ...", file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(build_command(cxx, Path(tmp)), capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise KernelsError(f"building the compiled kernels with {cxx} failed:\n{tail}")
        os.replace(tmp, path)  # whole or not at all: a process never loads a half-written library
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def library() -> ctypes.CDLL | None:
    """The loaded library, building it at first use; None when the reference must serve (``reference``
    mode, or ``auto`` mode without a working compiler, after a one-time warning)."""
    global _library, _failure
    wanted = mode()
    if wanted == "reference":
        return None
    if _library is None and (_failure is None or wanted == "compiled"):
        try:
            _library = _load(build())
        except KernelsError as e:
            _failure = str(e)
            if wanted == "compiled":
                raise
            warnings.warn(
                f"{e}; cnnzoo uses its reference (Python) kernels instead (set CNNZOO_KERNELS=reference "
                "to silence this)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _library


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelsError(f"cannot load the compiled kernels {str(path)!r}: {e}") from None
    for name, (tensors, geometry) in KERNELS.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [ctypes.c_void_p] * tensors + [ctypes.POINTER(geometry), ctypes.c_int], None
    lib.cnnzoo_fma_loop.argtypes, lib.cnnzoo_fma_loop.restype = [ctypes.c_int64, ctypes.c_int], ctypes.c_int64
    return lib


_DTYPES = (torch.float32, torch.int64)


def applies(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled kernels serve a call on these tensors: float32 (int64 for max pooling's
    indices) on the CPU, not empty, and the kernels wanted and built."""
    for t in tensors:
        if t is not None and (t.dtype not in _DTYPES or not t.is_cpu or t.numel() == 0):
            return False
    return library() is not None


def fma_peak(threads: int, seconds: float = 0.5) -> float:
    """The measured multiply-add peak of ``threads`` threads, in GFLOP/s (the best of a few runs)."""
    lib = library()
    if lib is None:
        raise KernelsError("the compiled kernels are not in use: no FMA peak to measure")
    iterations, best = 1 << 16, 0.0
    for _ in range(12):
        start = time.perf_counter()
        flops = lib.cnnzoo_fma_loop(iterations, threads)
        elapsed = time.perf_counter() - start
        best = max(best, flops / elapsed / 1e9)
        if elapsed < seconds / 10:
            iterations *= 2
    return best


# --- calling the kernels ------------------------------------------------------------------------


class Strides(ctypes.Structure):
    """``cnnzoo::Strides`` (csrc/cnnzoo.h): a 4-D tensor's strides, in elements."""

    _fields_ = [(name, ctypes.c_int64) for name in ("n", "c", "h", "w")]


class ConvGeometry(ctypes.Structure):
    """``cnnzoo::ConvGeometry`` (csrc/cnnzoo.h): a convolution, with each tensor's strides under the role
    of the tensor it has the shape of (a gradient under its tensor's), and the bias's stride."""

    _fields_ = [
        *(
            (name, ctypes.c_int64)
            for name in ("N", "C", "H", "W", "O", "OH", "OW", "KH", "KW", "SH", "SW", "PT", "PL", "DH", "DW", "G")
        ),
        ("input", Strides),
        ("weight", Strides),
        ("output", Strides),
        ("bias", ctypes.c_int64),
    ]


class PoolGeometry(ctypes.Structure):
    """``cnnzoo::PoolGeometry`` (csrc/cnnzoo.h): a pooling of contiguous planes."""

    _fields_ = [
        *(
            (name, ctypes.c_int64)
            for name in "planes H W OH OW kH kW sH sW padH padW dilH dilW divisor_override".split()
        ),
        ("count_include_pad", ctypes.c_bool),
    ]


# Each kernel's tensor arguments (their data pointers, first) and geometry.
KERNELS = {
    "cnnzoo_conv2d_forward": (4, ConvGeometry),
    "cnnzoo_conv2d_input_grad": (3, ConvGeometry),
    "cnnzoo_conv2d_weight_grad": (3, ConvGeometry),
    "cnnzoo_winograd_f2_forward": (4, ConvGeometry),
    "cnnzoo_winograd_f4_forward": (4, ConvGeometry),
    "cnnzoo_winograd_f2_weight_grad": (3, ConvGeometry),
    "cnnzoo_winograd_f4_weight_grad": (3, ConvGeometry),
    "cnnzoo_max_pool2d_forward": (3, PoolGeometry),
    "cnnzoo_max_pool2d_backward": (3, PoolGeometry),
    "cnnzoo_avg_pool2d_forward": (2, PoolGeometry),
    "cnnzoo_avg_pool2d_backward": (2, PoolGeometry),
    "cnnzoo_adaptive_avg_pool2d_forward": (2, PoolGeometry),
    "cnnzoo_adaptive_avg_pool2d_backward": (2, PoolGeometry),
}


def _launch(kernel: str, geometry: ctypes.Structure, *tensors: torch.Tensor | int | None) -> None:
    """Runs ``kernel`` on the tensors' data (None: a null pointer; an int: that address) and ``geometry``
    with torch's thread count. The library is the one loaded by the :func:`applies` that chose the
    kernels, else :func:`library`'s (a KernelsError where the reference must serve)."""
    lib = _library if _library is not None else library()
    if lib is None:
        raise KernelsError(f"{kernel}: the compiled kernels are not in use (CNNZOO_KERNELS={mode()})")
    pointers = [t if t is None or isinstance(t, int) else t.data_ptr() for t in tensors]
    getattr(lib, kernel)(*pointers, geometry, torch.get_num_threads())


def _conv_geometry(
    input_shape,
    weight_shape,
    out_hw,
    stride,
    padding,
    dilation,
    groups: int,
    input: torch.Tensor,
    weight: torch.Tensor,
    output: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> ConvGeometry:
    """A convolution of ``input_shape`` by ``weight_shape`` into ``out_hw``; ``input``, ``weight`` and
    ``output`` are the tensors of those shapes in the call (a gradient in its tensor's place)."""
    n, c, h, w = input_shape
    o, _, kh, kw = weight_shape
    return ConvGeometry(
        n,
        c,
        h,
        w,
        o,
        *out_hw,
        kh,
        kw,
        *stride,
        padding[0],
        padding[2],
        *dilation,
        groups,
        input.stride(),
        weight.stride(),
        output.stride(),
        0 if bias is None else bias.stride(0),
    )


# --- the operators' compiled implementations: each has its operator's signature (``out`` is the output
# rule's answer, see ``declare.Output``) and equals the reference function its docstring names


def conv2d(x, weight, bias, stride, padding, dilation, groups: int, *, out) -> torch.Tensor:
    """``conv.conv2d_forward``, into an output in the rule's memory format."""
    result = out.new(x)
    geometry = _conv_geometry(
        x.shape, weight.shape, out.size[2:], stride, padding, dilation, groups, x, weight, result, bias
    )
    _launch("cnnzoo_conv2d_forward", geometry, x, weight, bias, result)
    return result


def conv2d_input_grad(
    grad_out, weight, input_size, stride, padding, dilation, groups: int, channels_last=False, *, out
):
    """``conv.conv2d_input_grad``, into a gradient in the rule's memory format."""
    grad = out.new(grad_out)
    geometry = _conv_geometry(
        input_size, weight.shape, grad_out.shape[2:], stride, padding, dilation, groups, grad, weight, grad_out
    )
    _launch("cnnzoo_conv2d_input_grad", geometry, grad_out, weight, grad)
    return grad


def conv2d_weight_grad(x, grad_out, weight_size, stride, padding, dilation, groups: int, channels_last=False, *, out):
    """``conv.conv2d_weight_grad``, into a gradient in the rule's memory format."""
    grad = out.new(x)
    geometry = _conv_geometry(
        x.shape, weight_size, grad_out.shape[2:], stride, padding, dilation, groups, x, grad, grad_out
    )
    _launch("cnnzoo_conv2d_weight_grad", geometry, x, grad_out, grad)
    return grad


def conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups: int, dilation, *, out):
    """``conv.conv_transpose2d``: the input gradient of a convolution, plus the bias."""
    result = conv2d_input_grad(x, weight, out.size, stride, padding, dilation, groups, out=out)
    return result if bias is None else result.add_(bias.view(1, -1, 1, 1))


# Winograd (csrc/winograd.cpp): the kernels take tensors of any strides (those whose channels are not
# adjacent through channels-last buffers of their own)


def _winograd_forward(m: int, x, weight, bias, padding, groups: int, out, weight_at=None) -> torch.Tensor:
    """The forward kernel; ``weight_at``: (address, strides) where the filters are read, in place of
    ``weight``'s own (whose shape still counts)."""
    result = out.new(x)
    geometry = _conv_geometry(
        x.shape, weight.shape, out.size[2:], (1, 1), padding, (1, 1), groups, x, weight, result, bias
    )
    data = weight
    if weight_at is not None:
        data, geometry.weight = weight_at[0], Strides(*weight_at[1])
    _launch(f"cnnzoo_winograd_f{m}_forward", geometry, x, data, bias, result)
    return result


def winograd_conv2d(m: int, x, weight, bias, stride, padding, dilation, groups: int, *, out) -> torch.Tensor:
    """``winograd.conv2d_forward`` with F(m x m, 3 x 3)."""
    return _winograd_forward(m, x, weight, bias, padding, groups, out)


def winograd_conv2d_input_grad(
    m: int, grad_out, weight, input_size, stride, padding, dilation, groups: int, channels_last=False, *, out
) -> torch.Tensor:
    """``winograd.conv2d_input_grad``: the forward kernel on the output gradient, the filters flipped and
    each group's channels swapped, the padding ``2 - p``."""
    o, cg = weight.shape[:2]
    top, bottom, left, right = padding
    flipped = (2 - top, 2 - bottom, 2 - left, 2 - right)
    if groups == 1:
        # the filters read in place: output and input channels swapped, rows and columns from the last
        # (negative strides, from the address of weight[0][0][2][2]), where torch's flip would copy them
        n, c, h, w = weight.stride()
        last = weight.data_ptr() + 2 * (h + w) * weight.element_size()
        swapped = weight.transpose(0, 1)
        return _winograd_forward(m, grad_out, swapped, None, flipped, groups, out, (last, (c, n, -h, -w)))
    swapped = weight.reshape(groups, o // groups, cg, 3, 3).transpose(1, 2).reshape(groups * cg, o // groups, 3, 3)
    return _winograd_forward(m, grad_out, swapped.flip(2, 3), None, flipped, groups, out)


def winograd_conv2d_weight_grad(
    m: int, x, grad_out, weight_size, stride, padding, dilation, groups: int, channels_last=False, *, out
) -> torch.Tensor:
    """``winograd.conv2d_weight_grad`` with F(m x m, 3 x 3), into a gradient in the rule's memory format."""
    grad = out.new(x)
    geometry = _conv_geometry(
        x.shape, weight_size, grad_out.shape[2:], (1, 1), padding, (1, 1), groups, x, grad, grad_out
    )
    _launch(f"cnnzoo_winograd_f{m}_weight_grad", geometry, x, grad_out, grad)
    return grad


def _pool_geometry(
    input_shape,
    out_hw,
    kernel=(0, 0),
    stride=(0, 0),
    padding=(0, 0),
    dilation=(1, 1),
    count_include_pad: bool = False,
    divisor_override: int | None = None,
) -> PoolGeometry:
    n, c, h, w = input_shape
    return PoolGeometry(
        n * c, h, w, *out_hw, *kernel, *stride, *padding, *dilation, divisor_override or 0, count_include_pad
    )


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode: bool, *, out) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool.max_pool2d_forward`` (contiguous results)."""
    x = x.contiguous()
    values, indices = empty(x, out[0].size, False), empty(x, out[1].size, False, torch.int64)
    geometry = _pool_geometry(x.shape, out[0].size[2:], kernel_size, stride, padding, dilation)
    _launch("cnnzoo_max_pool2d_forward", geometry, x, values, indices)
    return values, indices


def max_pool2d_backward(grad_out, indices, input_size) -> torch.Tensor:
    """``pool.max_pool2d_backward`` (a contiguous result)."""
    grad_out, indices = grad_out.contiguous(), indices.contiguous()
    grad = empty(grad_out, input_size, False)
    _launch("cnnzoo_max_pool2d_backward", _pool_geometry(input_size, grad_out.shape[2:]), grad_out, indices, grad)
    return grad


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad: bool, divisor_override, *, out):
    """``pool.avg_pool2d_forward``: ``pool.window_sums`` over ``pool.avg_divisor`` (a contiguous result)."""
    x = x.contiguous()
    result = empty(x, out.size, False)
    geometry = _pool_geometry(
        x.shape, out.size[2:], kernel_size, stride, padding, (1, 1), count_include_pad, divisor_override
    )
    _launch("cnnzoo_avg_pool2d_forward", geometry, x, result)
    return result


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
) -> torch.Tensor:
    """``pool.avg_pool2d_backward``: ``pool.window_sums_backward`` over ``pool.avg_divisor`` (contiguous)."""
    grad_out = grad_out.contiguous()
    grad = empty(grad_out, input_size, False)
    geometry = _pool_geometry(
        input_size, grad_out.shape[2:], kernel_size, stride, padding, (1, 1), count_include_pad, divisor_override
    )
    _launch("cnnzoo_avg_pool2d_backward", geometry, grad_out, grad)
    return grad


def adaptive_avg_pool2d(x, output_size, *, out) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_forward`` (a contiguous result)."""
    x = x.contiguous()
    result = empty(x, out.size, False)
    _launch("cnnzoo_adaptive_avg_pool2d_forward", _pool_geometry(x.shape, out.size[2:]), x, result)
    return result


def adaptive_avg_pool2d_backward(grad_out, input_size, channels_last=False) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_backward`` (a contiguous result)."""
    grad_out = grad_out.contiguous()
    grad = empty(grad_out, input_size, False)
    _launch("cnnzoo_adaptive_avg_pool2d_backward", _pool_geometry(input_size, grad_out.shape[2:]), grad_out, grad)
    return grad
