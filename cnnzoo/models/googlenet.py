"""GoogLeNet / Inception v1 (Szegedy et al., "Going deeper with convolutions", CVPR 2015).

``googlenet`` is torchvision's layout: batch-normalised convolutions, nine Inception modules, two
auxiliary classifiers after 4a and 4d (on by default, off with ``aux_logits=False``); in training
mode with the auxiliary heads it returns the main and both auxiliary logits. Like torchvision it
uses a 3x3 convolution in the "5x5" branch; ``googlenet_2014`` puts the paper's true 5x5 there
(everything else unchanged).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .common import ZooModel, conv_layers
from .registry import register_model

PAPER = 'Szegedy et al. 2015, "Going deeper with convolutions"'


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


AUX_WEIGHT = 0.3  # the auxiliary classifiers' share of the training loss, as in the paper


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3) and ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, backend: str, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.conv = conv_layers(backend).Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)  # a module (not torch.relu) so that hooks, and the explainer, see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5 (3x3 in
    torchvision); 3x3 max pool -> 1x1. The 1x1 reductions keep the wide branches cheap."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        backend: str,
        five_kernel: int = 3,
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.branch1 = ConvBN(in_channels, ch1x1, 1, backend)
        self.branch2 = nn.Sequential(
            ConvBN(in_channels, ch3x3red, 1, backend), ConvBN(ch3x3red, ch3x3, 3, backend, padding=1)
        )
        self.branch3 = nn.Sequential(
            ConvBN(in_channels, ch5x5red, 1, backend),
            ConvBN(ch5x5red, ch5x5, five_kernel, backend, padding=five_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            L.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBN(in_channels, pool_proj, 1, backend)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, fc 1024, dropout 0.7, fc."""

    def __init__(self, in_channels: int, num_classes: int, backend: str, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = conv_layers(backend).AdaptiveAvgPool2d((4, 4))
        self.conv = ConvBN(in_channels, 128, 1, backend)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): the paper's Table 1
INCEPTION = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(ZooModel):
    min_size = 15  # conv1 7x7/2 and four ceil-mode max pools

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        five_kernel: int = 3,
        backend: str = "custom",
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels, self.aux_logits, self.transform_input = in_channels, aux_logits, transform_input
        if transform_input and in_channels != 3:
            raise ValueError("transform_input re-normalises RGB input and needs in_channels=3")

        def inception(name):
            return Inception(*INCEPTION[name], backend=backend, five_kernel=five_kernel)

        self.conv1 = ConvBN(in_channels, 64, 7, backend, stride=2, padding=3)
        self.maxpool1 = L.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(64, 64, 1, backend)
        self.conv3 = ConvBN(64, 192, 3, backend, padding=1)
        self.maxpool2 = L.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a, self.inception3b = inception("3a"), inception("3b")
        self.maxpool3 = L.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a, self.inception4b, self.inception4c = inception("4a"), inception("4b"), inception("4c")
        self.inception4d, self.inception4e = inception("4d"), inception("4e")
        self.maxpool4 = L.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a, self.inception5b = inception("5a"), inception("5b")
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, backend, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, backend, dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = L.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def loss_and_logits(
        self, criterion: nn.Module, output: torch.Tensor | GoogLeNetOutputs, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """In training, with the auxiliary heads, the output holds their logits too: their losses are
        added with weight 0.3."""
        if isinstance(output, tuple):
            logits, *aux = output
            main_loss = criterion(logits, target)
            return main_loss + AUX_WEIGHT * sum(criterion(a, target) for a in aux), main_loss, logits
        return super().loss_and_logits(criterion, output, target)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Map ImageNet-normalised input to the (x - 0.5) / 0.5 scaling torchvision's weights were trained on."""
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (x * std + mean - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        self.check_input(x)
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        if aux1 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


@register_model(
    paper=PAPER,
    published={"torchvision": (6_624_904, 1.5), "paper": (6_800_000, 1.5)},
    published_kwargs={"aux_logits": False},
    torchvision="googlenet",
    weights_kwargs={"transform_input": True},
    note="aux_logits=False, as published (with the two auxiliary heads: 13,004,888)",
)
def googlenet(**kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet: 13,004,888 parameters, 6,624,904 with ``aux_logits=False``."""
    return GoogLeNet(**kwargs)


@register_model(
    paper=PAPER,
    published={"paper": (6_800_000, 1.5)},
    published_kwargs={"aux_logits": False},
    note="true 5x5 branches; aux_logits=False (with the auxiliary heads: 13,385,816)",
)
def googlenet_2014(**kwargs) -> GoogLeNet:
    """GoogLeNet with the paper's true 5x5 convolutions in the third branch."""
    return GoogLeNet(five_kernel=5, **kwargs)
