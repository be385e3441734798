"""Pooling layers: ``torch.nn.MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d`` running :mod:`cnnzoo.ops`."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import adaptive_avg_pool2d, avg_pool2d, max_pool2d


class MaxPool2d(nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` whose computation is :func:`cnnzoo.ops.max_pool2d`."""

    def forward(self, input: torch.Tensor):
        return max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class AvgPool2d(nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` whose computation is :func:`cnnzoo.ops.avg_pool2d`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` whose computation is :func:`cnnzoo.ops.adaptive_avg_pool2d`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(input, self.output_size)
