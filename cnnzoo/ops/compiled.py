"""The compiled kernels: hand-written C++ (``cnnzoo/csrc/``) built at first use into a shared library,
the fast CPU implementation of the ``torch.ops.cnnzoo.*`` operators.

The functions here have the signatures of the reference functions in ``conv.py`` and ``pool.py`` and
must equal them; :func:`applies` says when they can stand in: float32 tensors on the CPU. Double
backward goes through the same operators, so it uses them too; float64, half precision and every
other device keep the reference.

``CNNZOO_KERNELS`` picks the implementation: ``auto`` (the default: compiled where they apply, and
the reference with a one-time warning if they cannot be built), ``compiled`` (an error if they cannot
be built) or ``reference``. :func:`use` changes it for a block of code.

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
from .conv import output_plane
from .layout import empty

SOURCES = [Path(__file__).resolve().parent.parent / "csrc" / name for name in ("conv.cpp", "pool.cpp", "peak.cpp")]
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
    for source in SOURCES:
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
            warnings.warn(f"{e}; cnnzoo uses its reference (Python) kernels instead (set CNNZOO_KERNELS=reference "
                          "to silence this)", RuntimeWarning, stacklevel=2)
    return _library


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelsError(f"cannot load the compiled kernels {str(path)!r}: {e}") from None
    pointer, params = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
    for name, count in (("cnnzoo_conv2d_forward", 4), ("cnnzoo_conv2d_input_grad", 3),
                        ("cnnzoo_conv2d_weight_grad", 3), ("cnnzoo_max_pool2d_forward", 3),
                        ("cnnzoo_max_pool2d_backward", 3), ("cnnzoo_avg_pool2d_forward", 2),
                        ("cnnzoo_avg_pool2d_backward", 2), ("cnnzoo_adaptive_avg_pool2d_forward", 2),
                        ("cnnzoo_adaptive_avg_pool2d_backward", 2)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [pointer] * count + [params, ctypes.c_int], None
    lib.cnnzoo_fma_loop.argtypes, lib.cnnzoo_fma_loop.restype = [ctypes.c_int64, ctypes.c_int], ctypes.c_int64
    return lib


def applies(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled kernels serve a call on these tensors: float32 on the CPU, not empty, and
    the kernels wanted and built."""
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu" or t.numel() == 0):
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


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _params(*values) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*values)


def _conv_params(input_shape, weight_shape, out_hw, stride, padding, dilation, groups, *tensors) -> ctypes.Array:
    n, c, h, w = input_shape
    o, _, kh, kw = weight_shape
    strides = [s for t in tensors for s in t.stride()]
    return _params(n, c, h, w, o, *out_hw, kh, kw, *stride, padding[0], padding[2], *dilation, groups, *strides)


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups: int, channels_last: bool) -> torch.Tensor:
    """``conv.conv2d_forward``, into an output in the given memory format."""
    out_hw = output_plane(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    out = empty(x, (x.shape[0], weight.shape[0], *out_hw), channels_last)
    p = _conv_params(x.shape, weight.shape, out_hw, stride, padding, dilation, groups, x, weight, out)
    _library.cnnzoo_conv2d_forward(x.data_ptr(), weight.data_ptr(), _ptr(bias), out.data_ptr(), p,
                                   torch.get_num_threads())
    return out


def conv2d_input_grad(grad_out, weight, input_shape, stride, padding, dilation, groups: int,
                      channels_last: bool) -> torch.Tensor:
    """``conv.conv2d_input_grad``, into a gradient in the given memory format."""
    grad = empty(grad_out, input_shape, channels_last)
    p = _conv_params(input_shape, weight.shape, grad_out.shape[2:], stride, padding, dilation, groups, grad_out,
                     weight, grad)
    _library.cnnzoo_conv2d_input_grad(grad_out.data_ptr(), weight.data_ptr(), grad.data_ptr(), p,
                                      torch.get_num_threads())
    return grad


def conv2d_weight_grad(x, grad_out, weight_shape, stride, padding, dilation, groups: int,
                       channels_last: bool) -> torch.Tensor:
    """``conv.conv2d_weight_grad``, into a gradient in the given memory format."""
    grad = empty(x, weight_shape, channels_last)
    p = _conv_params(x.shape, weight_shape, grad_out.shape[2:], stride, padding, dilation, groups, x, grad_out, grad)
    _library.cnnzoo_conv2d_weight_grad(x.data_ptr(), grad_out.data_ptr(), grad.data_ptr(), p,
                                       torch.get_num_threads())
    return grad


def _pool_params(input_shape, out_hw, *rest) -> ctypes.Array:
    n, c, h, w = input_shape
    return _params(n * c, h, w, *out_hw, *rest)


def max_pool2d_forward(x, kernel, stride, padding, dilation, out) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool.max_pool2d_forward`` (contiguous results)."""
    x = x.contiguous()
    values = empty(x, (*x.shape[:2], *out), False)
    indices = empty(x, (*x.shape[:2], *out), False, torch.int64)
    p = _pool_params(x.shape, out, *kernel, *stride, *padding, *dilation)
    _library.cnnzoo_max_pool2d_forward(x.data_ptr(), values.data_ptr(), indices.data_ptr(), p,
                                       torch.get_num_threads())
    return values, indices


def max_pool2d_backward(grad_out, indices, input_shape) -> torch.Tensor:
    """``pool.max_pool2d_backward`` (a contiguous result)."""
    grad_out, indices = grad_out.contiguous(), indices.contiguous()
    grad = empty(grad_out, input_shape, False)
    p = _pool_params(input_shape, grad_out.shape[2:])
    _library.cnnzoo_max_pool2d_backward(grad_out.data_ptr(), indices.data_ptr(), grad.data_ptr(), p,
                                        torch.get_num_threads())
    return grad


def avg_pool2d_forward(x, kernel, stride, padding, out, count_include_pad: bool,
                       divisor_override: int | None) -> torch.Tensor:
    """``pool.window_sums`` over ``pool.avg_divisor`` (a contiguous result)."""
    x = x.contiguous()
    result = empty(x, (*x.shape[:2], *out), False)
    p = _pool_params(x.shape, out, *kernel, *stride, *padding, int(count_include_pad), divisor_override or 0)
    _library.cnnzoo_avg_pool2d_forward(x.data_ptr(), result.data_ptr(), p, torch.get_num_threads())
    return result


def avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad: bool,
                        divisor_override: int | None) -> torch.Tensor:
    """``pool.window_sums_backward`` of ``grad_out`` over ``pool.avg_divisor`` (a contiguous result)."""
    grad_out = grad_out.contiguous()
    grad = empty(grad_out, input_shape, False)
    p = _pool_params(input_shape, grad_out.shape[2:], *kernel, *stride, *padding, int(count_include_pad),
                     divisor_override or 0)
    _library.cnnzoo_avg_pool2d_backward(grad_out.data_ptr(), grad.data_ptr(), p, torch.get_num_threads())
    return grad


def adaptive_avg_pool2d_forward(x, out) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_forward`` (a contiguous result)."""
    x = x.contiguous()
    result = empty(x, (*x.shape[:2], *out), False)
    _library.cnnzoo_adaptive_avg_pool2d_forward(x.data_ptr(), result.data_ptr(), _pool_params(x.shape, out),
                                                torch.get_num_threads())
    return result


def adaptive_avg_pool2d_backward(grad_out, input_shape) -> torch.Tensor:
    """``pool.adaptive_avg_pool2d_backward`` (a contiguous result)."""
    grad_out = grad_out.contiguous()
    grad = empty(grad_out, input_shape, False)
    _library.cnnzoo_adaptive_avg_pool2d_backward(grad_out.data_ptr(), grad.data_ptr(),
                                                 _pool_params(input_shape, grad_out.shape[2:]),
                                                 torch.get_num_threads())
    return grad
