"""VGG (Simonyan and Zisserman, "Very deep convolutional networks for large-scale image
recognition", ICLR 2015): stacks of 3x3 convolutions, 2x2 max pooling between stages, three fully
connected layers. Configurations A, B, D and E of the paper's Table 1 are VGG-11, 13, 16 and 19;
the ``_bn`` variants add batch normalisation after every convolution (torchvision's layout).
"""

from __future__ import annotations

from torch import nn

from .common import FeatureClassifier, conv_layers
from .registry import register_model

PAPER = 'Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image recognition"'

M = "M"  # a 2x2/2 max pool
CONFIGS = {
    "A": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "B": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "D": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "E": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}


class VGG(FeatureClassifier):
    min_size = 32  # five 2x2/2 pools

    def __init__(
        self,
        config: str,
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        backend: str = "custom",
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS[config]:
            if item == M:
                layers.append(L.MaxPool2d(2, 2))
                continue
            layers.append(L.Conv2d(channels, item, 3, padding=1))
            layers += [nn.BatchNorm2d(item), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = L.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for the convolutions, N(0, 0.01) for the linear layers, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif hasattr(m, "weight") and m.weight is not None and m.weight.dim() == 4:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


@register_model(
    paper=PAPER, published={"torchvision": (132_863_336, 7.61), "paper": (133_000_000, None)}, torchvision="vgg11"
)
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters."""
    return VGG("A", **kwargs)


@register_model(
    paper=PAPER, published={"torchvision": (133_047_848, 11.31), "paper": (133_000_000, None)}, torchvision="vgg13"
)
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B): 133,047,848 parameters."""
    return VGG("B", **kwargs)


@register_model(
    paper=PAPER, published={"torchvision": (138_357_544, 15.47), "paper": (138_000_000, None)}, torchvision="vgg16"
)
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters."""
    return VGG("D", **kwargs)


@register_model(
    paper=PAPER, published={"torchvision": (143_667_240, 19.63), "paper": (144_000_000, None)}, torchvision="vgg19"
)
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E): 143,667,240 parameters."""
    return VGG("E", **kwargs)


@register_model(paper=PAPER, published={"torchvision": (132_868_840, 7.61)}, torchvision="vgg11_bn")
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch normalisation."""
    return VGG("A", batch_norm=True, **kwargs)


@register_model(paper=PAPER, published={"torchvision": (133_053_736, 11.31)}, torchvision="vgg13_bn")
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch normalisation."""
    return VGG("B", batch_norm=True, **kwargs)


@register_model(paper=PAPER, published={"torchvision": (138_365_992, 15.47)}, torchvision="vgg16_bn")
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch normalisation: 138,365,992 parameters."""
    return VGG("D", batch_norm=True, **kwargs)


@register_model(paper=PAPER, published={"torchvision": (143_678_248, 19.63)}, torchvision="vgg19_bn")
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch normalisation."""
    return VGG("E", batch_norm=True, **kwargs)
