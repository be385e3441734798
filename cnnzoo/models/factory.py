"""The one door to every model: ``create_model`` builds a registered model (:mod:`.registry`) on
either backend and loads its pretrained weights (:mod:`.weights`)."""

from __future__ import annotations

from torch import nn

from .registry import model_info
from .weights import is_torchvision_name, load_weights

BACKENDS = ("custom", "torch")


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    backend: str = "custom",
    weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``backend='custom'`` runs convolution and pooling on :mod:`cnnzoo.ops`; ``backend='torch'`` builds
    the same architecture, with the same ``state_dict`` keys, on ``torch.nn``'s layers.
    ``num_classes`` and ``in_channels`` default to the model's own (1000 and 3 for the ImageNet
    models, 10 and 1 for LeNet-5, 10 and 3 for the CIFAR ResNets).

    ``weights`` loads pretrained weights: a torchvision weights name (``"DEFAULT"``,
    ``"IMAGENET1K_V1"``, ...) for a model with a torchvision twin, or the path of a state_dict or of a
    cnnzoo checkpoint (see :mod:`cnnzoo.models.weights`). With another ``num_classes`` than the
    weights', the classifier is newly initialised (with a warning).
    """
    info = model_info(name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}, expected one of {BACKENDS}")
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
            kwargs[key] = value
    if weights is None:
        return info.builder(backend=backend, **kwargs)
    if is_torchvision_name(weights):
        kwargs = {**info.weights_kwargs, **kwargs}
    model = info.builder(backend=backend, **kwargs)
    load_weights(model, info, weights, num_classes)
    return model
