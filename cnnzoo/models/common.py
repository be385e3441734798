"""What the model families share: the layer set of a backend and the input check."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from .. import nn as cnn


def conv_layers(backend: str) -> SimpleNamespace:
    """Conv2d and the pools from :mod:`cnnzoo.nn` (``'custom'``) or :mod:`torch.nn` (``'torch'``)."""
    source = {"custom": cnn, "torch": nn}[backend]
    return SimpleNamespace(
        Conv2d=source.Conv2d,
        MaxPool2d=source.MaxPool2d,
        AvgPool2d=source.AvgPool2d,
        AdaptiveAvgPool2d=source.AdaptiveAvgPool2d,
    )


class ZooModel(nn.Module):
    """Base of the zoo's models: checks the input's shape before any layer sees it.

    ``min_size`` is the smallest height and width the architecture can take (every layer keeps at
    least one output pixel); ``max_size``, where set, the largest (a network whose fully connected
    layers take the last feature map as it is, without adaptive pooling). Subclasses set them with
    ``in_channels``.
    """

    min_size: int = 1
    max_size: int | None = None
    in_channels: int = 3

    def check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 4:
            raise ValueError(f"{name} expects a batch of images (N, C, H, W), got input of size {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} was built for {self.in_channels} input channels, got input of size {list(x.shape)}"
            )
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"{name} needs input of at least {self.min_size}x{self.min_size} pixels, got {x.shape[2]}x{x.shape[3]}"
            )
        if self.max_size is not None and max(x.shape[2:]) > self.max_size:
            raise ValueError(
                f"{name} takes input of at most {self.max_size}x{self.max_size} pixels (its fully "
                f"connected layers expect one feature-map size), got {x.shape[2]}x{x.shape[3]}"
            )

    def loss_and_logits(
        self, criterion: nn.Module, output: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss to train on, the main head's loss and its logits, from this model's ``output``: here
        all one. A model whose training output is more than its logits (GoogLeNet's auxiliary heads)
        overrides it."""
        loss = criterion(output, target)
        return loss, loss, output


class FeatureClassifier(ZooModel):
    """The plain CNN shape of AlexNet and VGG: ``features`` (conv/pool stack), an adaptive ``avgpool``
    to a fixed grid, then a fully connected ``classifier``. Subclasses build the three parts."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def fit_input_size(size: int, model: nn.Module) -> int:
    """``size`` moved into the range of input sizes ``model`` takes (LeNet-5 gets 8x8 digits at 32x32)."""
    size = max(size, getattr(model, "min_size", 1))
    return min(size, getattr(model, "max_size", None) or size)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of ``model`` (each shared parameter once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
