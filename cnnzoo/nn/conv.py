"""``Conv2d``: a drop-in for ``torch.nn.Conv2d`` that runs :func:`cnnzoo.ops.conv2d`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import conv2d
from ..ops._args import IntPair, pair

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(nn.Module):
    """2-D convolution layer with ``torch.nn.Conv2d``'s arguments, attributes, parameters, state_dict
    keys, initialisation and repr. ``padding`` also accepts ``'full'`` (see :func:`cnnzoo.ops.conv2d`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: str | IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                             f"by groups ({groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = pair(stride, "stride", "Conv2d")
        self.dilation = pair(dilation, "dilation", "Conv2d")
        if isinstance(padding, str):
            if padding not in ("valid", "same", "full"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of 'valid', 'same', 'full'")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", "Conv2d")
        self.transposed, self.output_padding = False, (0, 0)
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = self._explicit_padding()
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _explicit_padding(self) -> list[int]:
        """Padding as ``F.pad`` wants it (left, right, top, bottom), for the non-zero padding modes."""
        pads: list[int] = []
        for i, (k, d) in enumerate(zip(self.kernel_size, self.dilation)):
            total = d * (k - 1)
            if self.padding == "same":
                before, after = total // 2, total - total // 2
            elif self.padding == "full":
                before = after = total
            elif self.padding == "valid":
                before = after = 0
            else:
                before = after = self.padding[i]
            pads = [before, after] + pads
        return pads

    def reset_parameters(self) -> None:
        """Kaiming-uniform weights with a=sqrt(5) and a uniform bias in +-1/sqrt(fan_in), as torch.nn does."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
