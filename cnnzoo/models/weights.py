"""Pretrained weights for ``create_model(name, weights=...)``.

``weights`` is one of:

* a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) for a model with a torchvision
  twin (``ModelInfo.torchvision``): fetched through torch.hub's download and cache, the one
  torchvision uses (``$TORCH_HOME/hub/checkpoints``), so weights torchvision already downloaded are
  found offline;
* the path of a ``state_dict`` saved with ``torch.save``;
* the path of a cnnzoo training checkpoint (``last.pt``, ``best.pt``): its model weights.

Files are read without running pickled code. When the model is built for another number of classes
than the weights were trained for, the classifier layers (those whose first dimension is the class
count) keep their fresh initialisation, and a warning says so.
"""

from __future__ import annotations

import re
import urllib.error
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .. import checkpoint
from ..errors import UserError
from .registry import ModelInfo

TORCHVISION_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # DEFAULT, IMAGENET1K_V1, IMAGENET1K_BN_V1, ...


class WeightsError(UserError):
    """Pretrained weights that cannot be had or do not fit the model."""


def is_torchvision_name(weights: str) -> bool:
    return bool(TORCHVISION_NAME.match(weights))


def load_weights(model: nn.Module, info: ModelInfo, weights: str, num_classes: int | None) -> None:
    """Load ``weights`` into ``model`` (built for ``num_classes``, None: the model's default)."""
    if is_torchvision_name(weights):
        state, what = torchvision_state(info, weights)
    else:
        state, what = file_state(Path(weights))
    own = model.state_dict()
    new = [
        k
        for k, v in own.items()
        if k in state
        and state[k].shape != v.shape
        and num_classes is not None
        and v.dim() >= 1
        and v.shape[0] == num_classes
        and v.shape[1:] == state[k].shape[1:]
    ]
    try:
        checkpoint.check_model_keys(
            own, {k: v for k, v in state.items() if k not in new} | {k: own[k] for k in new}, what
        )
    except checkpoint.CheckpointError as e:
        raise WeightsError(f"{e} ({info.name})") from None
    model.load_state_dict({k: v for k, v in state.items() if k not in new}, strict=False)
    if new:
        trained = state[new[0]].shape[0]
        warnings.warn(
            f"{what} were trained for {trained} classes; the classifier ({', '.join(new)}) is newly "
            f"initialised for num_classes={num_classes}",
            stacklevel=3,
        )


def torchvision_weights(info: ModelInfo, name: str):
    """The member of torchvision's weights enum named ``name`` (``DEFAULT`` too) for the model's twin;
    its ``url`` is the file and its ``meta`` the classes' names."""
    import torchvision  # a second's import that only torchvision weights need: `import cnnzoo` goes without it

    enum = torchvision.models.get_model_weights(info.torchvision)
    try:
        return enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        raise WeightsError(
            f"unknown weights {name!r} for {info.name}; torchvision has DEFAULT, {', '.join(w.name for w in enum)}"
        ) from None


def torchvision_state(info: ModelInfo, name: str) -> tuple[dict, str]:
    """The state_dict of torchvision's weights ``name`` for the model's twin, from torch.hub's cache or
    downloaded into it."""
    if info.torchvision is None:
        raise WeightsError(
            f"{info.name} has no torchvision twin, so there are no torchvision weights {name!r} for "
            f"it; give the path of a state_dict or of a cnnzoo checkpoint instead"
        )
    chosen = torchvision_weights(info, name)
    what = f"torchvision's {type(chosen).__name__}.{chosen.name}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(chosen.url).path).name
    try:
        state = torch.hub.load_state_dict_from_url(chosen.url, progress=False, map_location="cpu", weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
        raise WeightsError(
            f"{what} are not in the cache ({str(cached)!r}) and could not be downloaded "
            f"({type(e).__name__}: {e}); copy the file there, or set TORCH_HOME to where it "
            f"is"
        ) from None
    return state, what


def file_state(path: Path) -> tuple[dict, str]:
    """The model weights in a state_dict file or a cnnzoo checkpoint."""
    try:
        state = checkpoint.read(path, kind="weights file")
        if checkpoint.is_checkpoint(state):
            return checkpoint.load(path)["model"], f"the weights of checkpoint {str(path)!r}"
    except checkpoint.CheckpointError as e:
        raise WeightsError(str(e)) from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{str(path)!r} is neither a state_dict (names to tensors) nor a cnnzoo checkpoint")
    return state, f"the weights in {str(path)!r}"
