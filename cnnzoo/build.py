"""What a training config builds: the model for its dataset, at the side length it trains at.

:mod:`cnnzoo.config` is the schema alone; here a config meets the dataset table (:mod:`cnnzoo.data`)
and the zoo (:mod:`cnnzoo.models`). Training, prediction and the report build their model here.
"""

from __future__ import annotations

from torch import nn

from .config import Config, ConfigError
from .data import dataset_shape
from .models import create_model
from .models.common import fit_input_size
from .nn import set_algorithm


def build_model(cfg: Config, pretrained: bool = True) -> tuple[nn.Module, int]:
    """The model a config trains, ``(model, input side length)``: built for its dataset's classes and
    channels (with ``model.weights`` loaded, if ``pretrained``), both known from the dataset table and
    the model's registration before any data is read."""
    channels, classes, native = dataset_shape(cfg.data)
    weights = cfg.model.weights if pretrained else None
    try:
        model = create_model(
            cfg.model.name,
            num_classes=classes,
            in_channels=channels,
            backend=cfg.model.backend,
            weights=weights,
            **cfg.model.kwargs,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.kwargs {cfg.model.kwargs} do not fit {cfg.model.name}: {e}") from None
    if cfg.model.conv_algorithm != "auto":
        set_algorithm(model, cfg.model.conv_algorithm)
    return model, input_size(cfg, native, model)


def input_size(cfg: Config, native: int, model: nn.Module) -> int:
    """The side length a model is trained (and reported) at: ``data.image_size`` if set, else the
    dataset's ``native`` size moved into the range the model takes; a ConfigError if the model cannot
    take the size asked for."""
    size = cfg.data.image_size or fit_input_size(native, model)
    if fit_input_size(size, model) != size:
        raise ConfigError(
            f"data.image_size={size} does not fit {cfg.model.name}, which takes "
            f"{model.min_size}x{model.min_size} to "
            + (f"{model.max_size}x{model.max_size}" if model.max_size else "any larger size")
        )
    return size
