"""Every model by name: ``@register_model`` on each builder, with what the zoo knows about the model
(:class:`ModelInfo`: its input size, published figures, paper, notes and torchvision twin);
``list_models`` and ``model_info`` for their users. Building a model is :mod:`.factory`'s
``create_model``."""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import closest


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model besides how to build it, kept beside its builder.

    ``published`` maps a source (``"torchvision"``, ``"paper"``) to its (parameters, GMACs) figures,
    None where not published; ``published_kwargs`` are the builder's arguments those figures are for.
    ``torchvision`` names the ``torchvision.models`` builder of the same architecture (same
    ``state_dict`` keys), if there is one."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: int  # the side length of the input it was designed for
    paper: str = ""
    published: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    published_kwargs: dict = field(default_factory=dict)
    note: str = ""
    torchvision: str | None = None
    weights_kwargs: dict = field(default_factory=dict)  # builder arguments torchvision's weights need

    @property
    def model_class(self) -> type:
        """The class the builder returns (its return annotation)."""
        return typing.get_type_hints(self.builder)["return"]

    @property
    def min_size(self) -> int:
        """The smallest input side the architecture takes (every layer keeps an output pixel)."""
        return getattr(self.model_class, "min_size", 1)

    @property
    def max_size(self) -> int | None:
        """The largest, for networks whose fully connected layers take the last feature map as it is."""
        return getattr(self.model_class, "max_size", None)


_MODELS: dict[str, ModelInfo] = {}


def register_model(builder: Callable[..., nn.Module] | None = None, *, input_size: int = 224, **info):
    """Register a builder under its function name, with its :class:`ModelInfo` fields:
    ``@register_model(input_size=32, paper=..., published=..., note=..., torchvision=...)``."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = ModelInfo(fn.__name__, fn, input_size, **info)
        return fn

    return register(builder) if builder is not None else register


def model_info(name: str) -> ModelInfo:
    """The registration of model ``name``; a ValueError naming the closest names if there is none."""
    if name not in _MODELS:
        close = closest(name, _MODELS, n=5, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (cnnzoo.list_models() lists all {len(_MODELS)})")
    return _MODELS[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters them with fnmatch (``'resnet*'``)."""
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names
