"""The layers of the Deep Learning book's section 9.5, beside convolution: ``LocallyConnected2d``
(unshared convolution), ``TiledConv2d`` and ``Convolve2d`` (true convolution, the kernel flipped).

Each keeps ``torch.nn.Conv2d``'s arguments and attribute names (``in_channels``, ``kernel_size``,
``stride``, ``padding``, ...) so that what reads a convolution's geometry (the report, the explainer)
reads theirs, and each answers :meth:`kernel_at`: the kernels output position (i, j) applies to its
window, as cross-correlation reads them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import convolve2d, local_conv2d, tiled_conv2d
from ..ops._args import IntPair, pair
from ..ops.conv import output_plane
from ..ops.functional import resolve_padding


def _init_uniform(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """``torch.nn.Conv2d``'s default initialisation (He's uniform with a = sqrt(5)): weight and bias
    uniform in +-1/sqrt(fan_in), where fan_in counts one kernel's inputs."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


def _window(fn: str, kernel_size, stride, dilation) -> tuple[tuple[int, int], ...]:
    """``kernel_size``, ``stride`` and ``dilation`` as pairs of positive ints."""
    window = pair(kernel_size, "kernel_size", fn), pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    if min(*window[0], *window[1], *window[2]) <= 0:
        raise ValueError(
            f"{fn}: kernel_size, stride and dilation must be positive, got kernel_size={window[0]}, "
            f"stride={window[1]}, dilation={window[2]}"
        )
    return window


class _SlidingKernels(nn.Module):
    """What the locally connected and tiled layers share: conv2d's arguments, checked as conv2d checks
    them, and a 6D weight (A, B, out_channels, in_channels / groups, kH, kW) whose first two dimensions
    say which positions a kernel serves."""

    fn = ""  # the layer's name, for messages

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, lead, bias_size, device, dtype
    ):
        super().__init__()
        fn = self.fn
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        if self.groups <= 0 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{fn}: in_channels={in_channels} and out_channels={out_channels} must be positive multiples "
                f"of groups={groups}"
            )
        self.kernel_size, self.stride, self.dilation = _window(fn, kernel_size, stride, dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", fn)
        self._padding4 = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, fn)
        kind = {"device": device, "dtype": dtype}
        shape = (*lead, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, **kind))
        self.register_parameter("bias", nn.Parameter(torch.empty(bias_size, **kind)) if bias_size else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_uniform(self.weight, self.bias, self.weight[0, 0, 0].numel())

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class LocallyConnected2d(_SlidingKernels):
    """The locally connected layer (unshared convolution): ``torch.nn.Conv2d``'s arguments, plus the
    ``input_size`` (H, W) it is built for, since it has a kernel for each output position: ``weight``
    is (Ho, Wo, out_channels, in_channels / groups, kH, kW). ``bias`` is one per output position and
    channel, (Ho, Wo, out_channels), or with ``shared_bias=True`` one per channel, (out_channels,).
    Computed by :func:`cnnzoo.ops.local_conv2d`.

    ``LocallyConnected2d(1, 6, 5, input_size=32)`` has 28 * 28 * (6 * 25 + 6) = 122,304 parameters
    where ``Conv2d(1, 6, 5)`` has 156: the price of dropping parameter sharing."""

    fn = "LocallyConnected2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        input_size: IntPair,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        shared_bias: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        fn = self.fn
        self.input_size = pair(input_size, "input_size", fn)
        k, s, d = _window(fn, kernel_size, stride, dilation)
        plane = output_plane(self.input_size, k, s, resolve_padding(padding, k, s, d, fn), d)
        if min(plane) <= 0 or min(self.input_size) <= 0:
            raise ValueError(
                f"{fn}: input_size={self.input_size} with kernel_size={k}, stride={s}, padding={padding}, "
                f"dilation={d} leaves no output position (output plane {plane})"
            )
        self.output_size = plane
        self.shared_bias = bool(shared_bias)
        bias_size = None if not bias else (int(out_channels),) if shared_bias else (*plane, int(out_channels))
        super().__init__(in_channels, out_channels, k, s, padding, d, groups, plane, bias_size, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if tuple(input.shape[-2:]) != self.input_size:
            raise ValueError(
                f"{self.fn}: built for {self.input_size[0]} x {self.input_size[1]} inputs (a kernel for each of "
                f"{self.output_size[0]} x {self.output_size[1]} output positions), "
                f"got input of size {list(input.shape)}"
            )
        return local_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def kernel_at(self, i: int, j: int) -> torch.Tensor:
        """The kernels (out_channels, in_channels / groups, kH, kW) of output position (i, j): its own."""
        return self.weight[i, j]

    def extra_repr(self) -> str:
        text = super().extra_repr().replace("kernel_size=", f"input_size={self.input_size}, kernel_size=", 1)
        return text + (", shared_bias=True" if self.shared_bias and self.bias is not None else "")


class TiledConv2d(_SlidingKernels):
    """Tiled convolution: ``torch.nn.Conv2d``'s arguments, plus ``tile_size`` (t_h, t_w), the number of
    kernel sets that cycle over the output positions; position (i, j) uses set (i mod t_h, j mod t_w)
    (Goodfellow et al., figure 9.16). ``weight`` is (t_h, t_w, out_channels, in_channels / groups, kH,
    kW) and ``bias`` (out_channels,). Tile 1 is a convolution; a tile as large as the output plane is a
    locally connected layer. Computed by :func:`cnnzoo.ops.tiled_conv2d`."""

    fn = "TiledConv2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        tile_size: IntPair = 2,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.tile_size = pair(tile_size, "tile_size", self.fn)
        if min(self.tile_size) <= 0:
            raise ValueError(f"{self.fn}: tile_size must be positive, got tile_size={self.tile_size}")
        bias_size = (int(out_channels),) if bias else None
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            self.tile_size,
            bias_size,
            device,
            dtype,
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return tiled_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def kernel_at(self, i: int, j: int) -> torch.Tensor:
        """The kernels (out_channels, in_channels / groups, kH, kW) of output position (i, j): set
        (i mod t_h, j mod t_w)."""
        return self.weight[i % self.tile_size[0], j % self.tile_size[1]]

    def extra_repr(self) -> str:
        return super().extra_repr().replace("kernel_size=", f"tile_size={self.tile_size}, kernel_size=", 1)


class Convolve2d(nn.Conv2d):
    """True convolution (the kernel flipped) with ``torch.nn.Conv2d``'s arguments, parameters and
    initialisation; ``padding`` also accepts ``'full'``. Computed by :func:`cnnzoo.ops.convolve2d`.

    It is an ``nn.Conv2d`` by class, so that what reads a convolution's shape (parameter counts, the
    report) reads it; code that reads its weight as a cross-correlation kernel must flip it
    (:meth:`kernel_at` does)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        *args,
        **kwargs,
    ) -> None:
        """``torch.nn.Conv2d``'s arguments, in its order (dilation, groups, bias, padding_mode, device, dtype
        follow)."""
        full = isinstance(padding, str) and padding == "full"
        super().__init__(in_channels, out_channels, kernel_size, stride, 0 if full else padding, *args, **kwargs)
        if full:
            self.padding = "full"
        if self.padding_mode != "zeros":
            raise ValueError(f"Convolve2d: only padding_mode='zeros' is supported, got {self.padding_mode!r}")

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return convolve2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def kernel_at(self, i: int, j: int) -> torch.Tensor:
        """The kernels every output position applies to its window, as cross-correlation reads them: the
        weight flipped in both axes."""
        return self.weight.flip(-2, -1)
