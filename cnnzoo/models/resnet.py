"""ResNet (He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016).

* ``resnet18`` ... ``resnet152``: the ImageNet networks in torchvision's layout (the bottleneck's
  stride sits on its 3x3 convolution, "ResNet v1.5"); torchvision's weights load into them.
* ``resnet20`` ... ``resnet110``: the paper's CIFAR-10 networks (section 4.2): a 3x3 stem, three
  stages of n basic blocks at 16/32/64 channels (depth 6n + 2), and identity shortcuts that
  subsample and zero-pad the channels where the shape changes (option A), so they add no parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import ZooModel, conv_layers
from .registry import register_model

PAPER = 'He et al. 2016, "Deep residual learning for image recognition"'


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, downsample: nn.Module | None, backend: str) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.conv1 = L.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = L.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4, and a shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, downsample: nn.Module | None, backend: str) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.conv1 = L.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = L.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = L.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


def init_resnet(model: nn.Module, zero_init_residual: bool) -> None:
    """He initialisation for convolutions; BN scale 1 and shift 0 (or scale 0 on each block's last BN,
    so that every residual block starts as the identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


class ResNet(ZooModel):
    """torchvision's ImageNet ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        backend: str = "custom",
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels, self.backend = in_channels, backend
        self.conv1 = L.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = L.MaxPool2d(3, stride=2, padding=1)
        self._planes = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = L.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_resnet(self, zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._planes != planes * block.expansion:
            L = conv_layers(self.backend)
            downsample = nn.Sequential(
                L.Conv2d(self._planes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._planes, planes, stride, downsample, self.backend)]
        self._planes = planes * block.expansion
        layers += [block(self._planes, planes, 1, None, self.backend) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class PadShortcut(nn.Module):
    """Option A shortcut: take every ``stride``-th pixel and append zero channels up to ``planes``."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarResNet(ZooModel):
    """He et al.'s CIFAR-10 ResNet of depth 6n + 2."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, backend: str = "custom") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        L = conv_layers(backend)
        self.in_channels = in_channels
        self.conv1 = L.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, planes_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                s = stride if i == 0 else 1
                shortcut = PadShortcut(planes_in, planes, s) if s != 1 or planes_in != planes else None
                blocks.append(BasicBlock(planes_in, planes, s, shortcut, backend))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = L.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        init_resnet(self, zero_init_residual=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


@register_model(
    paper=PAPER, published={"torchvision": (11_689_512, 1.81), "paper": (None, 1.8)}, torchvision="resnet18"
)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: 11,689,512 parameters."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(
    paper=PAPER, published={"torchvision": (21_797_672, 3.66), "paper": (None, 3.6)}, torchvision="resnet34"
)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(
    paper=PAPER,
    published={"torchvision": (25_557_032, 4.09), "paper": (None, 3.8)},
    torchvision="resnet50",
    note="the paper's 3.8 G has the stride on the bottleneck's 1x1 (v1); torchvision's v1.5 puts it on the 3x3",
)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50: 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(
    paper=PAPER,
    published={"torchvision": (44_549_160, 7.8), "paper": (None, 7.6)},
    torchvision="resnet101",
    note="v1.5, as resnet50",
)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101: 44,549,160 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(
    paper=PAPER,
    published={"torchvision": (60_192_808, 11.51), "paper": (None, 11.3)},
    torchvision="resnet152",
    note="v1.5, as resnet50",
)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152: 60,192,808 parameters."""
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model(input_size=32, paper=PAPER, published={"paper": (270_000, None)})
def resnet20(**kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (n=3): 269,722 parameters."""
    return CifarResNet(20, **kwargs)


@register_model(input_size=32, paper=PAPER, published={"paper": (460_000, None)})
def resnet32(**kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (n=5): 464,154 parameters."""
    return CifarResNet(32, **kwargs)


@register_model(input_size=32, paper=PAPER, published={"paper": (660_000, None)})
def resnet44(**kwargs) -> CifarResNet:
    """CIFAR ResNet-44 (n=7): 658,586 parameters."""
    return CifarResNet(44, **kwargs)


@register_model(input_size=32, paper=PAPER, published={"paper": (850_000, None)})
def resnet56(**kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (n=9): 853,018 parameters."""
    return CifarResNet(56, **kwargs)


@register_model(input_size=32, paper=PAPER, published={"paper": (1_700_000, None)})
def resnet110(**kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (n=18): 1,727,962 parameters."""
    return CifarResNet(110, **kwargs)
