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

from . import compiled

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
    channels: Sequence[int] = (0, 0),
    batch: int = 1,
    part: str = "forward",
) -> str:
    """The algorithm that runs on tensors of ``dtype`` on ``device_type`` (``batch`` images of a ``plane``
    high and wide, in ``groups`` of ``channels`` = (input, output) channels each) for one ``part`` of
    the convolution (see ``PARTS``): ``auto`` chosen, an alias spelled out."""
    if algorithm == "auto":
        return auto(kernel, stride, dilation, dtype, device_type, groups, plane, channels, batch, part)
    return ALIASES.get(algorithm, algorithm)


def describe(algorithm: str, *args, **kwargs) -> str:
    """:func:`resolve`'s answer for the forward pass, followed by the weight gradient's where that differs
    (``"winograd_f4 (weight gradient: direct)"``): what a layer runs, in one line."""
    forward = resolve(algorithm, *args, **kwargs, part="forward")
    weight_grad = resolve(algorithm, *args, **kwargs, part="weight_grad")
    return forward if weight_grad == forward else f"{forward} (weight gradient: {weight_grad})"


# The smallest kernel area at which ``auto`` takes FFT for a stride-1 float32 convolution on the CPU,
# and the largest input plane it does so for (the measured one was 32x32: FFT's filter spectra are as
# large as the plane, O x C of them, and larger planes have not been measured)
FFT_MIN_AREA = 13 * 13
FFT_MAX_PLANE = 64 * 64
# The fewest input and output channels, and the fewest 4x4 tiles over the batch, at which ``auto``
# takes F(4x4, 3x3) (with the compiled kernels) for a 3x3 stride-1 float32 convolution on the CPU
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_TILES = 32
# ... and the fewest times fewer multiplications than direct's that its tiles must give on the plane
# (4 on planes of whole tiles; 1 on a 2x2 plane, where one tile of 16 outputs keeps 4)
WINOGRAD_MIN_SAVING = 2
# The fewest input and output channels at which the weight gradient, too, takes F(4x4, 3x3): its
# products, one per tile position, are input x output channels summed over the tiles, too small below
# this to beat direct's (see :func:`auto`)
WINOGRAD_WEIGHT_GRAD_MIN_CHANNELS = 96
# The parts of a convolution, each routed on its own: the forward pass, the input and weight gradients
PARTS = ("forward", "input_grad", "weight_grad")


def auto(
    kernel,
    stride,
    dilation,
    dtype: torch.dtype = torch.float32,
    device_type: str = "cpu",
    groups: int = 1,
    plane: Sequence[int] = (32, 32),
    channels: Sequence[int] = (0, 0),
    batch: int = 1,
    part: str = "forward",
) -> str:
    """``auto``'s choice: the fastest algorithm that applies and whose error stays within 10x direct's,
    by a rule derived from measurements (2 CPU cores, float32, forward+backward; docs/algorithms.md):

    * ``scripts/bench_ops.py --algorithm winograd_f4`` against ``--algorithm direct`` and ``python -m
      cnnzoo.report resnet18 --algorithms --time --batch-size 8`` (and resnet20): the compiled F(4x4)
      kernels take 0.52-0.70x oneDNN's time on the 3x3 layers with 64 to 512 channels and 32 or more
      4x4 tiles in the batch, where direct takes 0.93-1.16x (512 channels at 7x7, batch 8: 27.5 ms
      against direct's 34.5; 64 at 8x8, batch 8: 0.70 against 0.82); with 4 tiles (one 8x8 image)
      they lose (0.86 ms against 0.65). With 32 channels they are no faster than direct at batch 32,
      with 16 slower. Their error is at most 6.2x direct's from 64 channels up, but up to 22x on the
      3- and 16-channel layers. F(2x2) is as precise as direct and mostly slower than F(4x4);
    * ``scripts/bench_algorithms.py`` (32 channels, 32x32, batch 8, 'same'): FFT's time hardly grows with
      the kernel, direct's grows with its area; they meet at 11x11 (0.99x) and FFT wins from 13x13 on
      (0.86x; 0.45x at 17x17), with errors like direct's.

    So, for float32 on the CPU, ungrouped: ``winograd_f4`` for 3x3 stride-1 convolutions with at least
    64 input and output channels, at least 32 output tiles of 4x4 over the batch, and at least half of
    direct's multiplications saved on the plane (not on 2x2 to 5x5 planes, where the tiles are mostly
    padding), when the compiled kernels are in use (the Python reference is several times slower than
    direct); FFT for stride-1 convolutions whose (dilated) kernel covers at least 13x13 pixels, on
    planes up to 64x64; direct everywhere else. A stride throws away all but one in s_h s_w of FFT's
    outputs; groups and the GPU have not been measured: all keep direct.

    Each ``part`` is chosen on its own. ``scripts/bench_ops.py --kernels`` (each kernel alone) has the
    F(4x4) weight gradient at 0.62-0.85x oneDNN from 96 channels up (VGG's, Inception's 96->128) but
    1.06-1.22x at 32 and 64 channels (ResNet-18 at 56x56, CIFAR ResNet), where direct's is at
    0.95-0.99x. Timed against each other in one process: 0.84-0.90x direct's time at 96->128 and
    128->128, 1.01-1.56x at 64 (8x8 at batch 32 and 128, 56x56 at batch 8), 1.25-1.29x at 32. Its
    forward and input gradient win at 64 channels (0.65-0.94x oneDNN). So the weight gradient keeps
    direct below 96 input or output channels."""
    if device_type != "cpu" or dtype != torch.float32 or tuple(stride) != (1, 1) or groups != 1:
        return "direct"
    if unsuitable("winograd_f4", kernel, stride, dilation) is None:
        per_image = -(-plane[0] // 4) * -(-plane[1] // 4)
        saving = plane[0] * plane[1] * 9 / (per_image * 36)
        wide = min(channels) >= WINOGRAD_MIN_CHANNELS and batch * per_image >= WINOGRAD_MIN_TILES
        wide = wide and saving >= WINOGRAD_MIN_SAVING
        if part == "weight_grad":
            wide = wide and min(channels) >= WINOGRAD_WEIGHT_GRAD_MIN_CHANNELS
        return "winograd_f4" if wide and compiled.library() is not None else "direct"
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if span[0] * span[1] >= FFT_MIN_AREA and plane[0] * plane[1] <= FFT_MAX_PLANE:
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
