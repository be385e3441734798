"""AlexNet (Krizhevsky, Sutskever and Hinton, "ImageNet classification with deep convolutional
neural networks", NeurIPS 2012).

* ``alexnet``: torchvision's single-tower layout (64/192/384/256/256 channels, an adaptive 6x6 pool
  before the classifier), 61,100,840 parameters; torchvision's weights load into it.
* ``alexnet_2012``: the paper's: 96/256/384/384/256 channels on a 227x227 input, conv2/4/5 split in
  two groups (the two GPUs), local response normalisation after conv1 and conv2, overlapping 3x3/2
  max pooling; 60,965,224 parameters.
"""

from __future__ import annotations

from torch import nn

from .common import FeatureClassifier, conv_layers
from .registry import register_model

KRIZHEVSKY_2012 = 'Krizhevsky et al. 2012, "ImageNet classification with deep convolutional neural networks"'
KRIZHEVSKY_2014 = 'Krizhevsky 2014, "One weird trick for parallelizing convolutional neural networks"'


def classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


class AlexNet(FeatureClassifier):
    """torchvision's AlexNet layout."""

    min_size = 63  # conv1 11x11/4 then three 3x3/2 pools

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, backend: str = "custom"
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels = in_channels
        self.features = nn.Sequential(
            L.Conv2d(in_channels, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            L.MaxPool2d(3, 2),
            L.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            L.MaxPool2d(3, 2),
            L.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            L.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            L.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            L.MaxPool2d(3, 2),
        )
        self.avgpool = L.AdaptiveAvgPool2d((6, 6))
        self.classifier = classifier(256 * 6 * 6, num_classes, dropout)


class AlexNet2012(FeatureClassifier):
    """The paper's AlexNet: two-group convolutions and local response normalisation."""

    min_size = 67  # conv1 11x11/4 without padding then three 3x3/2 pools

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, backend: str = "custom"
    ) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels = in_channels

        def lrn():
            # the paper divides by (k + alpha * sum of squares)^beta with n=5, k=2, alpha=1e-4, beta=0.75;
            # torch's LocalResponseNorm divides alpha by n, so it takes alpha * n
            return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(
            L.Conv2d(in_channels, 96, 11, stride=4),
            nn.ReLU(inplace=True),
            lrn(),
            L.MaxPool2d(3, 2),
            L.Conv2d(96, 256, 5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            lrn(),
            L.MaxPool2d(3, 2),
            L.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            L.Conv2d(384, 384, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            L.Conv2d(384, 256, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            L.MaxPool2d(3, 2),
        )
        self.avgpool = L.AdaptiveAvgPool2d((6, 6))  # the identity at 227x227; lets other sizes through
        self.classifier = classifier(256 * 6 * 6, num_classes, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        """The paper's: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fully
        connected layers (to give the ReLUs positive inputs early on), 0 elsewhere."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for i, layer in enumerate(convs + linears):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.constant_(layer.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)


@register_model(
    paper=KRIZHEVSKY_2014,
    published={"torchvision": (61_100_840, 0.71), "paper": (60_000_000, None)},
    torchvision="alexnet",
)
def alexnet(**kwargs) -> AlexNet:
    """torchvision's AlexNet: 61,100,840 parameters."""
    return AlexNet(**kwargs)


@register_model(input_size=227, paper=KRIZHEVSKY_2012, published={"paper": (60_000_000, None)}, note="227x227 input")
def alexnet_2012(**kwargs) -> AlexNet2012:
    """AlexNet as in the 2012 paper (227x227 input): 60,965,224 parameters."""
    return AlexNet2012(**kwargs)
