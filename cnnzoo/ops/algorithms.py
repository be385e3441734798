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

import math
from collections.abc import Sequence

import torch

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


def resolve(
    algorithm: str,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device_type: str = "cpu",
    groups: int = 1,
    plane: Sequence[int] = (32, 32),
) -> str:
    """The algorithm that runs on tensors of ``dtype`` on ``device_type`` (an input ``plane`` high and
    wide, in ``groups``): ``auto`` chosen, an alias spelled out."""
    if algorithm == "auto":
        return auto(kernel, stride, dilation, dtype, device_type, groups, plane)
    return ALIASES.get(algorithm, algorithm)


# The smallest kernel area at which ``auto`` takes FFT for a stride-1 float32 convolution on the CPU,
# and the largest input plane it does so for (the measured one was 32x32: FFT's filter spectra are as
# large as the plane, O x C of them, and larger planes have not been measured)
FFT_MIN_AREA = 13 * 13
FFT_MAX_PLANE = 64 * 64


def auto(
    kernel,
    stride,
    dilation,
    dtype: torch.dtype = torch.float32,
    device_type: str = "cpu",
    groups: int = 1,
    plane: Sequence[int] = (32, 32),
) -> str:
    """``auto``'s choice: the fastest algorithm that applies and whose error stays within 10x direct's,
    by a rule derived from two measurements (2 CPU cores, float32, forward+backward; docs/algorithms.md):

    * ``python -m cnnzoo.report resnet20 --algorithms --time``: on every layer of the zoo's kind (3x3,
      1x1, strided stems) direct is the fastest; Winograd's F(4x4)'s error is 2-4e-6 against direct's
      2-9e-7, and both Winograd and FFT run as Python references, several times slower;
    * ``scripts/bench_algorithms.py`` (32 channels, 32x32, batch 8, 'same'): FFT's time hardly grows with
      the kernel, direct's grows with its area; they meet at 11x11 (0.99x) and FFT wins from 13x13 on
      (0.86x; 0.45x at 17x17), with errors like direct's.

    So: FFT for ungrouped stride-1 float32 convolutions on the CPU whose (dilated) kernel covers at
    least 13x13 pixels, on planes up to 64x64, direct everywhere else. A stride throws away all but one
    in s_h s_w of FFT's outputs; groups (many small products per frequency), larger planes (spectra of
    the plane's size per filter and channel) and the GPU have not been measured: all keep direct."""
    measured = groups == 1 and plane[0] * plane[1] <= FFT_MAX_PLANE
    if device_type == "cpu" and dtype == torch.float32 and tuple(stride) == (1, 1) and measured:
        span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        if span[0] * span[1] >= FFT_MIN_AREA:
            return "fft"
    return "direct"


# --- what each algorithm costs, in multiplications -----------------------------------------------


def multiplications(
    algorithm: str,
    input_size: Sequence[int],
    weight_size: Sequence[int],
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
) -> int | None:
    """The real multiplications of one forward convolution (N, C, H, W) * (O, C/G, kh, kw), as the
    textbooks count them (None where the algorithm does not apply). ``padding`` is ``(top, bottom,
    left, right)``. Additions and the bias are not counted.

    * ``direct`` and ``im2col``: one per output pixel, input channel of its group and kernel tap. A 3x3
      filter over a 6x6 image has 16 outputs of 9 products: 144; over 3 channels 432; 2 filters 864.
      im2col copies the windows first, and the matrix product multiplies just as often.
    * ``winograd_f2``/``winograd_f4``: (m + 2)^2 per tile of m x m outputs, per input channel and filter:
      the elementwise products of the transformed tiles. The transforms (additions and multiplications
      by constants, shared across the channels and the filters) are left out, as the paper counts.
    * ``fft``: 4 per complex product (one per frequency of the padded plane, H x (W/2 + 1), per
      input channel and filter), plus the transforms at ``P log2 P`` each for a real plane of P pixels
      (half of a radix-2 complex transform's ``(P/2) log2 P`` complex products): the images' planes, the
      filters' and the outputs'. Every stride-1 output is computed, whatever the stride.
    """
    algorithm = ALIASES.get(algorithm, algorithm)
    n, c, h, w = input_size
    o, cg, kh, kw = weight_size
    if unsuitable(algorithm, (kh, kw), stride, dilation) is not None or algorithm == "auto":
        return None
    hp, wp = h + padding[0] + padding[1], w + padding[2] + padding[3]
    ho = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    pairs = n * o * cg  # (image, filter, input channel) pairs: each filter sees its group's channels
    if algorithm in ("direct", "im2col"):
        return pairs * ho * wo * kh * kw
    if algorithm in WINOGRAD:
        m = 2 if algorithm == "winograd_f2" else 4
        return pairs * -(-ho // m) * -(-wo // m) * (m + 2) ** 2
    if algorithm == "fft":
        plane = hp * wp
        transforms = (n * c + o * cg + n * o) * plane * math.log2(max(plane, 2))
        return int(4 * pairs * hp * (wp // 2 + 1) + transforms)
    raise ValueError(f"unknown algorithm {algorithm!r}")
