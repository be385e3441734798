"""``Conv2d`` and ``ConvTranspose2d``: torch.nn's layers running :func:`cnnzoo.ops.conv2d` and
:func:`cnnzoo.ops.conv_transpose2d`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import algorithms, conv2d, conv_transpose2d
from ..ops._args import IntPair
from ..ops.functional import resolve_padding


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` whose computation is :func:`cnnzoo.ops.conv2d`: the same arguments, attributes,
    parameters, state_dict keys, initialisation and repr, and ``isinstance(layer, torch.nn.Conv2d)``
    holds, so tools that recognise torch's convolutions (fusion, pruning, per-sample gradient hooks)
    take it. ``padding`` also accepts ``'full'`` (see :func:`cnnzoo.ops.conv2d`), and ``algorithm``
    chooses how the layer is computed (an attribute that may be changed; see :mod:`cnnzoo.ops.algorithms`).
    """

    algorithm = "auto"  # (the class's: a torch.nn.Conv2d converted in place has no attribute of its own)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        algorithm: str = "auto",
    ) -> None:
        full = isinstance(padding, str) and padding == "full"  # torch.nn.Conv2d knows 'valid' and 'same' only
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            0 if full else padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        if full:
            self.padding = "full"
            top, bottom, left, right = resolve_padding("full", self.kernel_size, self.stride, self.dilation)
            self._reversed_padding_repeated_twice = [left, right, top, bottom]
        self.algorithm = algorithm
        algorithms.check("Conv2d", algorithm, self.kernel_size, self.stride, self.dilation)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.algorithm == "auto" else f"{text}, algorithm={self.algorithm!r}"

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups, algorithm=self.algorithm)
        return conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups, algorithm=self.algorithm
        )


def set_algorithm(model: nn.Module, algorithm: str) -> nn.Module:
    """Every cnnzoo ``Conv2d`` of ``model`` computes with ``algorithm`` where it applies (see
    :mod:`cnnzoo.ops.algorithms`); the layers it does not apply to (Winograd's strided or 1x1 layers)
    compute with ``'auto'``. Returns ``model``."""
    algorithms.known("set_algorithm", algorithm)
    for layer in model.modules():
        if isinstance(layer, Conv2d):
            fits = algorithms.unsuitable(algorithm, layer.kernel_size, layer.stride, layer.dilation) is None
            layer.algorithm = algorithm if fits else "auto"
    return model


def conv_inputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Conv2d, torch.Tensor]]:
    """Every convolution of ``model`` (cnnzoo's and torch's), with the input it sees when ``example`` runs
    through the model, in the order they run: one forward pass in eval mode without gradients, the
    model's mode restored."""
    seen: list[tuple[str, nn.Conv2d, torch.Tensor]] = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m, args[0].clone())))
        for name, layer in model.named_modules()
        if isinstance(layer, nn.Conv2d)
    ]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return seen


def algorithms_in_use(
    model: nn.Module, example: torch.Tensor, dtype: torch.dtype | None = None, batch: int | None = None
) -> dict[str, str]:
    """The algorithm each cnnzoo ``Conv2d`` of ``model`` runs on inputs like ``example`` (``'auto'``
    resolved for the batch, plane, dtype and device each layer sees), by layer name, with its weight
    gradient's where that differs (``algorithms.describe``). ``dtype``: the one the convolutions compute
    in, if not the input's (autocast's); ``batch``: the batch they see, if not the example's."""
    return {
        name: algorithms.describe(
            layer.algorithm,
            layer.kernel_size,
            layer.stride,
            layer.dilation,
            dtype or x.dtype,
            x.device.type,
            layer.groups,
            x.shape[2:],
            (layer.in_channels // layer.groups, layer.out_channels // layer.groups),
            batch or x.shape[0],
        )
        for name, layer, x in conv_inputs(model, example)
        if isinstance(layer, Conv2d)
    }


class ConvTranspose2d(nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` whose computation is :func:`cnnzoo.ops.conv_transpose2d`: the same
    arguments, parameters, state_dict keys, initialisation and ``forward(input, output_size=None)``, and
    ``isinstance(layer, torch.nn.ConvTranspose2d)`` holds. Its output padding must be smaller than its
    stride (the padding an ``output_size`` asks for always is)."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(
            input, output_size, list(self.stride), list(self.padding), list(self.kernel_size), 2, list(self.dilation)
        )
        return conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
