"""The convolution algorithms a call may ask for (``algorithm=`` on :func:`cnnzoo.ops.conv2d` and
:class:`cnnzoo.nn.Conv2d`), which calls each applies to, and what ``"auto"`` picks.

===============  ==========================================================================  ==============
name             what it computes with                                                       applies to
===============  ==========================================================================  ==============
``direct``       the compiled kernels (C++ on the CPU, Triton on CUDA) where they serve the   every call
                 call, the reference (im2col) elsewhere: today's numbers, exactly
``im2col``       the reference: windows copied into columns, one matrix product              every call
``winograd_f2``  Winograd's minimal filtering F(2x2, 3x3) (``winograd.py``)                  3x3, stride 1,
                                                                                             dilation 1
``winograd_f4``  F(4x4, 3x3): 4x fewer multiplications than direct, larger rounding errors   the same
``winograd``     ``winograd_f4``                                                             the same
``fft``          the correlation theorem, any kernel (``fft.py``)                            every call
``auto``         the fastest that applies, by :func:`auto` (the default)                     every call
===============  ==========================================================================  ==============

An algorithm asked for by name on a call it does not apply to is an error that says why; ``auto``
chooses among those that apply.
"""

from __future__ import annotations

from collections.abc import Sequence

ALGORITHMS = ("auto", "direct", "im2col", "winograd", "winograd_f2", "winograd_f4", "fft")
ALIASES = {"winograd": "winograd_f4"}
WINOGRAD = ("winograd_f2", "winograd_f4")


def unsuitable(algorithm: str, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> str | None:
    """Why ``algorithm`` cannot compute a convolution of this geometry (None if it can)."""
    if ALIASES.get(algorithm, algorithm) in WINOGRAD:
        if tuple(kernel) != (3, 3):
            return f"Winograd's F(mxm, 3x3) needs a 3x3 kernel, got {tuple(kernel)}"
        if tuple(stride) != (1, 1):
            return f"Winograd's F(mxm, 3x3) needs stride 1, got stride={tuple(stride)}"
        if tuple(dilation) != (1, 1):
            return f"Winograd's F(mxm, 3x3) needs dilation 1, got dilation={tuple(dilation)}"
    return None


def known(fn: str, algorithm) -> None:
    """A clear error for a name that is not an algorithm's."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: unknown algorithm {algorithm!r}, expected one of {', '.join(map(repr, ALGORITHMS))}")


def check(fn: str, algorithm, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> None:
    """A clear error for an unknown algorithm, or one that does not apply to this call."""
    known(fn, algorithm)
    if reason := unsuitable(algorithm, kernel, stride, dilation):
        raise ValueError(f"{fn}: algorithm={algorithm!r} does not apply to this convolution: {reason}")


def resolve(algorithm: str, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> str:
    """The algorithm that runs: ``auto`` chosen, an alias spelled out."""
    if algorithm == "auto":
        return auto(kernel, stride, dilation)
    return ALIASES.get(algorithm, algorithm)


def auto(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> str:
    """``auto``'s choice. Measured on the zoo's layers (``cnnzoo.report NAME --algorithms --time``): the
    compiled direct kernels beat the Python references of Winograd and FFT on every layer, so ``auto``
    is ``direct`` until a faster algorithm has kernels of its own."""
    return "direct"
