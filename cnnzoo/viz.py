"""Pictures of a network from the inside, as matplotlib figures for notebooks and papers.

    fig = cnnzoo.viz.feature_maps(model, x, "features.0")   # one layer's output channels, as heatmaps
    fig = cnnzoo.viz.filters(model)                          # the first convolution's learned filters
    fig = cnnzoo.viz.training_curves("runs/lenet5_digits")   # loss and accuracy per epoch
    fig = cnnzoo.viz.receptive_field(model, x, "layer2.0.conv1", unit=(5, 5))  # what one unit sees

Each returns a ``matplotlib.figure.Figure`` (nothing is shown or saved; ``fig.savefig(path)`` does
that). matplotlib is the ``viz`` extra: ``pip install 'cnnzoo[viz]'``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, report
from .errors import UserError


def _pyplot():
    try:  # matplotlib is the optional viz extra: missing, it is this message rather than cnnzoo's import error
        import matplotlib

        matplotlib.use("Agg", force=False)  # no display needed; a notebook's backend stays as it is
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("cnnzoo.viz needs matplotlib: pip install 'cnnzoo[viz]'") from None
    return plt


def _grid(count: int, ncols: int, size: float = 1.6):
    plt = _pyplot()
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(axes.flat)[:count]


def layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of the submodule named ``layer`` (as in ``model.named_modules()``) for input ``x``."""
    modules = dict(model.named_modules())
    if layer not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise UserError(
            f"no layer {layer!r} in {type(model).__name__}; its convolutions: {', '.join(convs[:12])}"
            + (" ..." if len(convs) > 12 else "")
        )
    seen = []
    hook = modules[layer].register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    if not seen:
        raise UserError(f"layer {layer!r} did not run for this input (an auxiliary head in eval mode?)")
    out = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
    if out.dim() != 4:
        raise UserError(f"layer {layer!r} gives {out.dim()}-D output of size {list(out.shape)}, not feature maps")
    return out


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str, max_maps: int = 16, ncols: int = 8):
    """The feature maps of ``layer`` for the first image of ``x``: every channel where there are at most
    ``max_maps``, else the ``max_maps`` most active (largest mean absolute value), most active first.
    Each panel is titled with its channel index."""
    was_training = model.training
    model.eval()
    try:
        maps = layer_output(model, x, layer)[0].detach().float().cpu()
    finally:
        model.train(was_training)
    order = maps.abs().mean(dim=(1, 2)).argsort(descending=True)[:max_maps].tolist()
    fig, axes = _grid(len(order), ncols)
    for ax, channel in zip(axes, order):
        ax.imshow(maps[channel].numpy(), cmap="viridis")
        ax.set_title(f"{channel}", fontsize=8)
    fig.suptitle(f"{layer}: {len(order)} of {maps.shape[0]} channels, {maps.shape[1]}x{maps.shape[2]}")
    return fig


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UserError(f"{type(model).__name__} has no convolution")


def filters(model: nn.Module, max_filters: int = 64, ncols: int = 8):
    """The first convolution's filters as images: in colour for 3 input channels (each filter scaled
    to 0..1 on its own), else the mean over input channels on a diverging scale centred on zero."""
    name, conv = first_conv(model)
    weight = conv.weight.detach().float().cpu()[:max_filters]
    fig, axes = _grid(len(weight), ncols, size=1.0)
    for ax, (o, w) in zip(axes, enumerate(weight)):
        if w.shape[0] == 3:
            low, high = w.min(), w.max()
            ax.imshow(((w - low) / (high - low + 1e-12)).permute(1, 2, 0).numpy())
        else:
            image = w.mean(0)
            bound = float(image.abs().max()) or 1.0
            ax.imshow(image.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(f"{o}", fontsize=7)
    fig.suptitle(f"{name}: {len(weight)} filters, {conv.in_channels}x{weight.shape[2]}x{weight.shape[3]}")
    return fig


def field_box(model: nn.Module, input_size, layer: str, unit: tuple[int, int] | None = None):
    """The receptive field of one output pixel of ``layer`` (default: the centre one) for input of
    ``input_size`` (C, H, W), from the report: ``(row, column, top, left, height, width)`` in input
    pixels, the box reaching into the padding where it does."""
    rows = {r.name: r for r in report.summarize(model, input_size).layers}
    if layer not in rows:
        raise UserError(f"no layer {layer!r} in {type(model).__name__}")
    row = rows[layer]
    if row.receptive_field is None or row.output_shape is None or len(row.output_shape) != 4:
        raise UserError(f"layer {layer!r} has no spatial receptive field (its outputs see the whole input)")
    (rf_h, rf_w), (j_h, j_w), (s_h, s_w) = (report.pair(v) for v in (row.receptive_field, row.jump, row.start))
    out_h, out_w = row.output_shape[2:]
    i, j = unit if unit is not None else (out_h // 2, out_w // 2)
    if not (0 <= i < out_h and 0 <= j < out_w):
        raise UserError(f"unit ({i}, {j}) is outside {layer!r}'s {out_h}x{out_w} output")
    return i, j, s_h + i * j_h - (rf_h - 1) / 2, s_w + j * j_w - (rf_w - 1) / 2, rf_h, rf_w


def receptive_field(model: nn.Module, x: torch.Tensor, layer: str, unit: tuple[int, int] | None = None):
    """The first image of ``x`` with the receptive field of one output pixel of ``layer`` (its
    ``(row, column)``, default the centre one) drawn on it as a box, from :mod:`cnnzoo.report`'s
    receptive field, jump and start."""
    from matplotlib.patches import Rectangle  # the optional viz extra, as in _pyplot

    i, j, top, left, height, width = field_box(model, list(x.shape[1:]), layer, unit)
    image = x[0].detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    fig, ax = _pyplot().subplots(figsize=(4, 4.3))
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).numpy())
    else:
        ax.imshow(image.mean(0).numpy(), cmap="gray")
    # pixel k covers [k - 0.5, k + 0.5] in imshow's coordinates
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor="orangered", linewidth=2))
    ax.set_xlim(-0.5, image.shape[2] - 0.5)
    ax.set_ylim(image.shape[1] - 0.5, -0.5)
    ax.set_title(f"{layer} ({i}, {j}): receptive field {height}x{width} px", fontsize=9)
    ax.axis("off")
    return fig


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` (one per epoch), as numbers."""
    path = Path(run_dir) / "metrics.csv"
    try:
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise UserError(
            f"no metrics.csv in {str(run_dir)!r}: is it a run directory of python -m cnnzoo.train?"
        ) from None
    except (ValueError, TypeError) as e:
        raise UserError(f"{str(path)!r} is not a metrics file of cnnzoo.train ({e})") from None
    if not rows or not {"epoch", "train_loss", "val_loss", "train_acc", "val_acc"} <= set(rows[0]):
        raise UserError(f"{str(path)!r} has no epochs with train/val loss and accuracy")
    return rows


def training_curves(run_dir: str | Path):
    """Loss and accuracy per epoch, training and validation, from a run directory's ``metrics.csv``."""
    rows = read_metrics(run_dir)
    plt = _pyplot()
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = [r["epoch"] for r in rows]
    for ax, metric, label in ((loss, "loss", "loss"), (acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in rows], marker="o", label="train")
        ax.plot(epochs, [r[f"val_{metric}"] for r in rows], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    return fig


def save_training_curves(run_dir: str | Path) -> Path | None:
    """``curves.png`` in the run directory (replaced atomically), when matplotlib is installed (None
    otherwise)."""
    try:
        fig = training_curves(run_dir)
    except UserError:
        return None
    path = Path(run_dir) / "curves.png"
    try:
        checkpoint.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        _pyplot().close(fig)
    return path
