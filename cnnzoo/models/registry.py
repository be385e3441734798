"""The one door to every model: ``@register_model`` on each builder, ``create_model`` and
``list_models`` for their users."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from ..errors import closest

_MODELS: dict[str, Callable[..., nn.Module]] = {}
BACKENDS = ("custom", "torch")


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name."""
    if builder.__name__ in _MODELS:
        raise ValueError(f"model {builder.__name__!r} is registered twice")
    _MODELS[builder.__name__] = builder
    return builder


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters them with fnmatch (``'resnet*'``)."""
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                 backend: str = "custom", **kwargs) -> nn.Module:
    """Build a registered model.

    ``backend='custom'`` runs convolution and pooling on :mod:`cnnzoo.ops`; ``backend='torch'`` builds
    the same architecture, with the same ``state_dict`` keys, on ``torch.nn``'s layers.
    ``num_classes`` and ``in_channels`` default to the model's own (1000 and 3 for the ImageNet
    models, 10 and 1 for LeNet-5, 10 and 3 for the CIFAR ResNets).
    """
    if name not in _MODELS:
        close = closest(name, _MODELS, n=5, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (cnnzoo.list_models() lists all {len(_MODELS)})")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}, expected one of {BACKENDS}")
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
            kwargs[key] = value
    return _MODELS[name](backend=backend, **kwargs)
