"""Classify images with a trained model: ``python -m cnnzoo.predict --resume CKPT IMAGE... [--top K]``.

The checkpoint (``best.pt`` or ``last.pt`` of a run) says which model and dataset it was trained on;
each image is resized to the size the model was trained at and normalised as in training, and the
``K`` most probable classes are printed with their probabilities, named as the dataset names them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from . import checkpoint
from .build import build_model
from .config import build_config
from .data import class_names, image_transform
from .errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cnnzoo.predict", description="Top-k classes of images.")
    p.add_argument("--resume", required=True, metavar="CKPT", help="a checkpoint of python -m cnnzoo.train")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print per image (default 5)")
    return p.parse_args(argv)


def read_image(path: str, channels: int) -> Image.Image:
    """The image at ``path`` in the model's colour mode (grey for 1 channel, RGB for 3)."""
    if not Path(path).is_file():
        raise UserError(f"image {path!r} not found")
    try:
        with Image.open(path) as image:
            return image.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path!r}: {e}") from None


def load_model(path: str) -> tuple[torch.nn.Module, object, int]:
    """The model of checkpoint ``path`` (its weights loaded, in eval mode), its config and input size."""
    state = checkpoint.load(path)
    cfg = build_config(state["config"])
    model, size = build_model(cfg, pretrained=False)
    checkpoint.check_model_keys(model.state_dict(), state["model"], f"checkpoint {path!r}")
    model.load_state_dict(state["model"])
    return model.eval(), cfg, size


def predict(model: torch.nn.Module, batch: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The ``top`` largest class probabilities of each image, their class indices, and the number of classes."""
    with torch.no_grad():
        probabilities = model(batch).softmax(dim=1)
    values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    return values, indices, probabilities.shape[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.top < 1:
            raise UserError("--top must be at least 1")
        model, cfg, size = load_model(args.resume)
        transform = image_transform(cfg.data, size)
        batch = torch.stack([transform(read_image(p, model.in_channels)) for p in args.images])
        values, indices, classes = predict(model, batch, args.top)
        names = class_names(cfg.data, classes)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, probs, labels in zip(args.images, values.tolist(), indices.tolist()):
        print(path)
        for p, c in zip(probs, labels):
            print(f"  {p:7.4f}  {names[c]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
