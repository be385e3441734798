"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998), in two forms:

* ``lenet5``: the form the textbooks teach: C1 6@5x5, S2 2x2 pooling, C3 16@5x5 (fully connected),
  S4, C5 120@5x5, F6 84, 10 outputs; 61,706 parameters.
* ``lenet5_1998``: faithful to the paper: S2/S4 are trainable subsampling (the sum of each 2x2 window
  times a coefficient plus a bias, per map), C3 connects each map to a subset of S2's maps (Table I),
  and the squashing function is 1.7159 tanh(2a/3). C1..F6 have the paper's 60,000 parameters; a
  linear 84->10 layer stands in for the paper's Euclidean RBF output (850 more).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.local import LocallyConnected2d, TiledConv2d
from .common import ZooModel, conv_layers
from .registry import register_model

LECUN = 'LeCun et al. 1998, "Gradient-based learning applied to document recognition"'

ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


# How C1 and C3 connect to their inputs (the Deep Learning book's section 9.5): sharing one kernel
# over all positions, cycling ``tile_size`` x ``tile_size`` kernel sets, or a kernel per position.
# C5 sees a 5x5 map and has one output position, where all three are the same layer: it stays a Conv2d.
CONNECTIVITY = {"conv": "convolution", "tiled": "tiled convolution", "local": "locally connected"}


class LeNet5(ZooModel):
    """The textbook LeNet-5 on 32x32 input; ``connectivity`` makes C1 and C3 tiled (``'tiled'``, with
    ``tile_size``) or locally connected (``'local'``, then for 32x32 inputs only)."""

    min_size = 32
    max_size = 35  # C5 must still see a 5x5 map: 33 to 35 pixels lose their extra rows to S2 and S4's flooring

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: str = "tanh",
        pool: str = "avg",
        backend: str = "custom",
        connectivity: str = "conv",
        tile_size: int = 2,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        if connectivity not in CONNECTIVITY:
            raise ValueError(f"connectivity must be one of {list(CONNECTIVITY)}, got {connectivity!r}")
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or not 1 <= tile_size <= 10:
            raise ValueError(f"tile_size must be an int from 1 to 10 (C3's output is 10x10), got {tile_size!r}")
        if connectivity != "conv" and backend != "custom":
            raise ValueError(f"connectivity={connectivity!r} needs backend='custom': torch.nn has no such layer")
        L, act = conv_layers(backend), ACTIVATIONS[activation]
        pool_layer = L.AvgPool2d if pool == "avg" else L.MaxPool2d
        self.in_channels, self.connectivity = in_channels, connectivity
        if connectivity == "local":  # a kernel per output position: built for 32x32 inputs exactly
            self.max_size = 32
            c1 = LocallyConnected2d(in_channels, 6, 5, input_size=32)
            c3 = LocallyConnected2d(6, 16, 5, input_size=14)
        elif connectivity == "tiled":
            c1, c3 = TiledConv2d(in_channels, 6, 5, tile_size), TiledConv2d(6, 16, 5, tile_size)
        else:
            c1, c3 = L.Conv2d(in_channels, 6, 5), L.Conv2d(6, 16, 5)
        c1_s2 = (c1, act(), pool_layer(2))  # C1: 6@28x28, S2: 6@14x14
        c3_s4 = (c3, act(), pool_layer(2))  # C3: 16@10x10, S4: 16@5x5
        self.features = nn.Sequential(*c1_s2, *c3_s4, L.Conv2d(16, 120, 5), act())  # C5: 120@1x1
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), act(), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.classifier(self.features(x))


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = A tanh(S a) with A = 1.7159 and S = 2/3."""

    amplitude = 1.7159  # A
    slope = 2.0 / 3.0  # S

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(x * self.slope)


class Subsampling(nn.Module):
    """S2/S4: each map's 2x2 window sum times a trainable coefficient plus a trainable bias."""

    def __init__(self, channels: int, backend: str) -> None:
        super().__init__()
        self.pool = conv_layers(backend).AvgPool2d(2, divisor_override=1)  # the window sum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


# Table I of the paper: which S2 maps (rows 0-5) each C3 map (columns 0-15) sees.
C3_TABLE = (
    [(j, (j + 1) % 6, (j + 2) % 6) for j in range(6)]  # maps 0-5: three neighbouring maps
    + [tuple((j + i) % 6 for i in range(4)) for j in range(6)]  # maps 6-11: four neighbouring maps
    + [(0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5)]  # maps 12-14: four, non-neighbouring
    + [(0, 1, 2, 3, 4, 5)]  # map 15: all six
)


class PartialConv(nn.Module):
    """C3: a 5x5 convolution in which output map j sees only the input maps ``C3_TABLE[j]``.

    Maps that see the same number of inputs form one grouped convolution over their gathered inputs,
    so only the connections of the table have weights (1,516 parameters instead of 2,416).
    """

    def __init__(self, table, kernel_size: int, backend: str) -> None:
        super().__init__()
        L = conv_layers(backend)
        self.table = [tuple(t) for t in table]
        self.sizes = sorted({len(t) for t in self.table})
        self.convs = nn.ModuleList()
        order = []
        for size in self.sizes:
            maps = [j for j, t in enumerate(self.table) if len(t) == size]
            order += maps
            self.register_buffer(
                f"inputs_{size}", torch.tensor([i for j in maps for i in self.table[j]]), persistent=False
            )
            self.convs.append(L.Conv2d(size * len(maps), len(maps), kernel_size, groups=len(maps)))
        self.register_buffer("order", torch.tensor(order).argsort(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x.index_select(1, getattr(self, f"inputs_{size}"))) for size, conv in zip(self.sizes, self.convs)]
        return torch.cat(outs, 1).index_select(1, self.order)


class LeNet5Paper(ZooModel):
    """LeNet-5 as in LeCun et al. 1998, on 32x32 input."""

    min_size = 32
    max_size = 35  # C5 must still see a 5x5 map: 33 to 35 pixels lose their extra rows to S2 and S4's flooring

    def __init__(self, num_classes: int = 10, in_channels: int = 1, backend: str = "custom") -> None:
        super().__init__()
        L = conv_layers(backend)
        self.in_channels = in_channels
        self.c1 = L.Conv2d(in_channels, 6, 5)
        self.s2 = Subsampling(6, backend)
        self.c3 = PartialConv(C3_TABLE, 5, backend)
        self.s4 = Subsampling(16, backend)
        self.c5 = L.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = ScaledTanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.act(self.s2(self.c1(x)))
        x = self.act(self.s4(self.c3(x)))
        x = self.act(self.c5(x)).flatten(1)
        return self.output(self.act(self.f6(x)))


@register_model(
    input_size=32, paper=LECUN, published={"paper": (60_000, None)}, note="textbook form: full C3, 10 linear outputs"
)
def lenet5(**kwargs) -> LeNet5:
    """Textbook LeNet-5: 61,706 parameters (tanh and average pooling; ``activation``, ``pool`` change them;
    ``connectivity='tiled'`` or ``'local'`` unshares C1 and C3's kernels: 69,356 or 423,038 parameters)."""
    return LeNet5(**kwargs)


@register_model(
    input_size=32,
    paper=LECUN,
    published={"paper": (60_000, None)},
    note="C1..F6 = 60,000 as in the paper, plus an 84->10 linear output",
)
def lenet5_1998(**kwargs) -> LeNet5Paper:
    """LeNet-5 as in the 1998 paper: 60,000 parameters in C1..F6, plus an 850-parameter linear output."""
    return LeNet5Paper(**kwargs)
