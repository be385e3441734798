"""An interactive page that shows what a network computes for one image:

    python -m cnnzoo.explain (--resume RUN_DIR/best.pt | --model NAME [--weights W])
                             [--image PATH | --index N] [--output FILE.html] [--channels N]

It writes one self-contained HTML file (the data as embedded JSON, the script and style inline; no
network, no server): every layer's feature maps, the predictions, a click-through of how any unit's
value is computed from the layer below (window, weights, products, sums, bias, batch norm,
activation), pooling windows, receptive fields on the input, the first layer's filters, the training
curves of a run and the layer table of :mod:`cnnzoo.report`.

How big models stay small (AlexNet, VGG-16, ResNet-50 at 224x224 give pages of a few MB):

* Feature maps are shown as 8-bit heatmaps (one value range per layer), every channel sorted by mean
  absolute activation. The first page of each layer (``--channels``, default 8) keeps up to 48x48
  pixels per map, the other pages a side chosen so that all maps together stay under ``MAP_BYTES``.
* The exact float32 numbers a unit's computation needs (its input window in every input channel, the
  weights, the bias, the batch-norm statistics) are kept for a part of each layer, all layers sharing
  ``EXACT_FLOATS``: the whole layer where it fits, else the most active channels over the whole map,
  else a tile of the map around the strongest unit. The page outlines that part and says so for a
  click outside it.

A unit of a locally connected or tiled layer applies kernels of its own (``kernel_at``), a true
convolution its flipped weight: the exact part keeps each kept unit's kernels, so that a click shows
the kernel that unit applies, and which other units share it.

The page's arithmetic is done in the browser from those float32 numbers, and the model's own output
(computed by cnnzoo's ops) is shown beside it.

The data is made in steps, each taking the records the one before made (:func:`build_page`): ``trace``
(one forward pass, every module call watched), ``structure`` (the rows and the blocks they sit in),
``click_throughs`` (each convolution's and pooling's geometry and exact part), ``heatmaps``, and
``layer_data`` (each row's record). Records turn into JSON by name; ``docs/explainer.md`` lists every
key the page reads.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, report
from .config import build_config
from .data import class_names, image_transform, normalization, open_dataset, set_transform, transforms
from .errors import UserError
from .models import create_model
from .models.googlenet import Inception
from .models.lenet import ScaledTanh
from .models.registry import model_info
from .models.resnet import BasicBlock, Bottleneck, PadShortcut
from .models.weights import is_torchvision_name, torchvision_weights
from .nn.local import Convolve2d, LocallyConnected2d, TiledConv2d
from .predict import load_model, read_image
from .viz import read_metrics

EXACT_FLOATS = 1_600_000  # float32 values kept exactly, over all layers (6.4 MB, 8.5 MB as base64)
MAP_BYTES = 5_000_000  # 8-bit heatmap pixels of the channels beyond each layer's first page
FIRST_PAGE_SIDE = 48  # the largest side of a first-page heatmap
TEMPLATE = Path(__file__).with_name("explain_page.html")

# the layers the page shows as rows, and the kind the page calls each
CONV_TYPES = (nn.Conv2d, LocallyConnected2d, TiledConv2d)  # a convolution's geometry, shared kernels or not
ROW_KINDS = (
    *((t, "conv") for t in CONV_TYPES),
    (nn.MaxPool2d, "maxpool"),
    (nn.AvgPool2d, "avgpool"),
    (nn.AdaptiveAvgPool2d, "adaptive"),
    (nn.Linear, "linear"),
)
ROW_TYPES = tuple(t for t, _ in ROW_KINDS)
CLICKABLE = ("conv", "maxpool", "avgpool", "adaptive")  # the kinds whose units the page computes
POST_TYPES = (nn.BatchNorm2d, nn.ReLU, nn.Tanh, nn.Sigmoid, ScaledTanh)  # folded into the convolution before them
BLOCK_TYPES = (BasicBlock, Bottleneck, Inception)  # drawn as blocks, their output a row of its own


# ---------------------------------------------------------------------------------------------------
# What the user asked for: a model and one input image


@dataclass
class Subject:
    """The model to explain and where it came from."""

    model: nn.Module
    name: str
    size: int  # input side length
    data_cfg: object  # the DataConfig an --image is normalised with
    index_cfg: object  # the DataConfig of the dataset --index picks from
    class_names: list[str]
    own_data: bool  # whether --index picks from the data the model was trained on (its labels are its classes)
    run_dir: Path | None = None
    source: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cnnzoo.explain",
        description="Write a self-contained HTML page that explains a model's computation for one image.",
    )
    p.add_argument("--resume", metavar="CKPT", help="a checkpoint of python -m cnnzoo.train (best.pt or last.pt)")
    p.add_argument("--model", help="a zoo model name (with --resume: checked against the checkpoint's model)")
    p.add_argument(
        "--weights",
        help="with --model: torchvision weights (DEFAULT, IMAGENET1K_V1, ...) or a "
        "state_dict/checkpoint path; without it the model is freshly initialised",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH", help="an image file to explain")
    source.add_argument(
        "--index",
        type=int,
        metavar="N",
        help="the N-th image of the validation split (the run's dataset; the digits for --model); the default is 0",
    )
    p.add_argument(
        "--output",
        metavar="FILE.html",
        help="where to write the page (default: explain-NAME.html beside the checkpoint, or in the current directory)",
    )
    p.add_argument(
        "--channels", type=int, default=8, metavar="N", help="feature maps per page of each layer (default 8)"
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of a freshly initialised --model (default 0)")
    return p.parse_args(argv)


def load_subject(args: argparse.Namespace) -> Subject:
    if args.resume:
        if args.weights:
            raise UserError("--weights goes with --model; a --resume checkpoint brings its own weights")
        model, cfg, size = load_model(args.resume)
        if args.model and args.model != cfg.model.name:
            raise UserError(f"checkpoint {args.resume!r} is of model {cfg.model.name!r}, not {args.model!r}")
        names = class_names(cfg.data, _classes(model))
        return Subject(
            model,
            cfg.model.name,
            size,
            cfg.data,
            cfg.data,
            names,
            True,
            Path(args.resume).resolve().parent,
            f"checkpoint {args.resume}",
        )
    if not args.model:
        raise UserError("give --resume CKPT (a trained run) or --model NAME (a zoo model)")
    try:
        info = model_info(args.model)
        torch.manual_seed(args.seed)
        model = create_model(args.model, weights=args.weights).eval()
    except ValueError as e:
        raise UserError(str(e)) from None
    size = info.input_size
    channels = getattr(model, "in_channels", 3)
    dataset = "digits" if channels == 1 else "cifar10" if size <= 32 else "imagefolder"
    cfg = build_config({"model": {"name": args.model}, "data": {"name": dataset}})
    digits = build_config({"model": {"name": args.model}, "data": {"name": "digits"}})
    names = _torchvision_categories(info, args.weights) or [f"class {i}" for i in range(_classes(model))]
    what = f"{args.model}, " + (
        f"weights {args.weights}" if args.weights else f"freshly initialised (seed {args.seed})"
    )
    return Subject(model, args.model, size, cfg.data, digits.data, names, False, None, what)


def _classes(model: nn.Module) -> int:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def _torchvision_categories(info, weights: str | None) -> list[str] | None:
    if not weights or not is_torchvision_name(weights) or info.torchvision is None:
        return None
    return list(torchvision_weights(info, weights).meta.get("categories") or []) or None


@dataclass
class Input:
    """The image the page explains: normalised as the model takes it, and what to call it."""

    x: torch.Tensor  # (1, C, H, W)
    data_cfg: object  # the DataConfig it was normalised with
    caption: str
    label: str | None = None  # the true class, where the data has one


def load_input(subject: Subject, args: argparse.Namespace) -> Input:
    channels = getattr(subject.model, "in_channels", 3)
    if args.image:
        x = image_transform(subject.data_cfg, subject.size)(read_image(args.image, channels))
        return Input(x.unsqueeze(0), subject.data_cfg, Path(args.image).name)
    index = 0 if args.index is None else args.index
    source = open_dataset(subject.index_cfg)
    if not 0 <= index < len(source.val):
        raise UserError(
            f"--index {index} is out of range: the validation split of {source.name} has "
            f"{len(source.val)} images (0 to {len(source.val) - 1})"
        )
    set_transform(source.val, transforms(source, subject.size, augment=False, train=False))
    x, label = source.val[index]
    if x.shape[0] != channels:  # a grey image shown to a colour model: the same image in every channel
        x = x.expand(channels, -1, -1)
    names = subject.class_names if subject.own_data else class_names(subject.index_cfg, source.num_classes)
    return Input(
        x.unsqueeze(0).contiguous(),
        subject.index_cfg,
        f"{source.name} validation image {index}",
        names[int(label)] if int(label) < len(names) else None,
    )


def display_image(x: torch.Tensor, data_cfg) -> torch.Tensor:
    """The input as the eye sees it: normalisation undone, 0..255, (H, W, C) uint8."""
    mean, std = normalization(data_cfg)
    c = x.shape[1]
    mean = torch.tensor((list(mean) * c)[:c]).view(c, 1, 1)
    std = torch.tensor((list(std) * c)[:c]).view(c, 1, 1)
    image = (x[0] * std + mean).clamp(0, 1)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0)


# ---------------------------------------------------------------------------------------------------
# The page's data: records that turn into JSON by name (the schema is docs/explainer.md)


class Record:
    """A dataclass of the page's data. ``to_json`` gives its fields by name, records inside converted
    too; a field that is None is left out (the page reads a missing key as "does not apply")."""

    def to_json(self) -> dict:
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: _json(value) for name, value in values if value is not None}


def _json(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def _b64(t: torch.Tensor, dtype=torch.float32) -> str:
    return base64.b64encode(t.detach().to(dtype).contiguous().cpu().numpy().tobytes()).decode("ascii")


def _pair(v) -> list:
    return list(report.pair(v))


# ---------------------------------------------------------------------------------------------------
# Step 1: one forward pass, watched


@dataclass(frozen=True)
class Event:
    """One call of a module: its input and output tensors (the objects, to follow them) and copies of
    the values the page needs (taken at once, before an in-place activation changes them)."""

    name: str
    module: nn.Module
    start: int  # the order in which modules were first entered
    done: int  # the order in which calls finished
    inp: torch.Tensor | None
    out: torch.Tensor
    inp_value: torch.Tensor | None  # kept for the layers a row shows
    out_value: torch.Tensor | None  # kept for those, their batch norms and activations, and blocks


@dataclass(frozen=True)
class Trace:
    """A forward pass: each module's first call by name, every call in the order they finished (a
    shared ReLU runs several times), and the logits."""

    first: dict[str, Event]
    calls: list[Event]
    logits: torch.Tensor


def trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """Run ``model`` on ``x`` watching every module."""
    first: dict[str, Event] = {}
    calls: list[Event] = []
    starts: dict[str, int] = {}
    handles = []

    def watch(name: str, module: nn.Module) -> None:
        def pre(mod, args):
            starts.setdefault(name, len(starts))

        def post(mod, args, out):
            if not isinstance(out, torch.Tensor):
                return
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            inp_value = inp.detach().clone() if isinstance(mod, ROW_TYPES) and inp is not None else None
            out_value = out.detach().clone() if isinstance(mod, ROW_TYPES + POST_TYPES + BLOCK_TYPES) else None
            calls.append(Event(name, mod, starts[name], len(calls), inp, out, inp_value, out_value))
            first.setdefault(name, calls[-1])

        handles.extend([module.register_forward_pre_hook(pre), module.register_forward_hook(post)])

    for name, module in model.named_modules():
        watch(name, module)
    try:
        with torch.no_grad():
            logits = model(x)
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"{type(model).__name__} cannot take this input of size {list(x.shape[1:])}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        for h in handles:
            h.remove()
    return Trace(first, calls, logits)


def post_ops(event: Event, calls: list[Event]) -> list[Event]:
    """The batch norms and activations applied to a layer's output right after it (followed by tensor:
    each takes the previous one's output), in order."""
    chain, current = [], event.out
    for e in calls[event.done + 1 :]:
        if any(True for _ in e.module.children()):
            continue  # a container finishing
        if e.inp is not current or not isinstance(e.module, POST_TYPES):
            break
        chain.append(e)
        current = e.out
    return chain


# ---------------------------------------------------------------------------------------------------
# Step 2: the layers the page shows, and the blocks they sit in


@dataclass(frozen=True)
class Layer:
    """One row of the page: a layer's call, the batch norms and activations folded into it, and its
    output after them (what the heatmaps show)."""

    name: str
    kind: str  # conv, maxpool, avgpool, adaptive, linear; add (a residual block), concat (an Inception module)
    event: Event
    post: list[Event]
    display: torch.Tensor  # (C, H, W) maps, or (N,) values for a linear layer
    order: list[int] | None  # maps only: channels by mean absolute value, largest first
    value_range: tuple[float, float] | None  # maps only: the smallest and largest value


def watched_layer(run: Trace, name: str, kind: str | None) -> Layer:
    """The row of module ``name``: ``kind`` for a block's output, None for a layer (told by its type)."""
    event = run.first[name]
    kind = kind or next(k for t, k in ROW_KINDS if isinstance(event.module, t))
    post = post_ops(event, run.calls) if kind == "conv" else []
    display = (post[-1].out_value if post else event.out_value)[0].float()
    if display.dim() != 3:
        return Layer(name, kind, event, post, display, None, None)
    order = display.abs().mean(dim=(1, 2)).argsort(descending=True).tolist()
    return Layer(name, kind, event, post, display, order, (float(display.min()), float(display.max())))


@dataclass
class LayerNode(Record):
    id: str
    type: str = "layer"


@dataclass
class ResidualNode(Record):
    name: str
    shortcut_label: str
    main: list[Node]
    shortcut: list[Node]
    out: str  # the block's output row: ReLU(main + shortcut)
    type: str = "residual"


@dataclass
class BranchesNode(Record):
    name: str
    branches: list[list[Node]]
    out: str  # the block's output row: the branches concatenated
    type: str = "branches"


Node = LayerNode | ResidualNode | BranchesNode


def _shortcut_label(shortcut: nn.Module | None) -> str:
    if shortcut is None:
        return "identity"
    if isinstance(shortcut, PadShortcut):
        return "every 2nd pixel, zero channels appended"
    return "1x1 convolution and batch norm"


def structure(model: nn.Module, run: Trace) -> tuple[list[Node], list[Layer]]:
    """The model as the page draws it (residual blocks and Inception modules as blocks, any other
    container flattened) and its rows, in the order the page lists them."""
    layers: list[Layer] = []

    def row(name: str, kind: str | None = None) -> str:
        layers.append(watched_layer(run, name, kind))
        return name

    def children(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        ran = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
        return sorted(((n, m) for n, m in ran if n in run.first), key=lambda nm: run.first[nm[0]].start)

    def walk(name: str, module: nn.Module) -> list[Node]:
        if name not in run.first and name != "":
            return []
        if isinstance(module, (BasicBlock, Bottleneck)):
            parts = children(name, module)
            main = [n for c, m in parts if not c.endswith(".downsample") for n in walk(c, m)]
            shortcut = [n for c, m in parts if c.endswith(".downsample") for n in walk(c, m)]
            return [ResidualNode(name, _shortcut_label(module.downsample), main, shortcut, row(name, "add"))]
        if isinstance(module, Inception):
            return [BranchesNode(name, [walk(c, m) for c, m in children(name, module)], row(name, "concat"))]
        if isinstance(module, ROW_TYPES):
            return [LayerNode(row(name))]
        return [n for c, m in children(name, module) for n in walk(c, m)]

    return walk("", model), layers


# ---------------------------------------------------------------------------------------------------
# Step 3: what a click on a unit needs: the window geometry and a part of the layer in exact numbers


@dataclass
class Geometry(Record):
    in_shape: list[int]  # (C, H, W) of the layer's input
    kernel_size: list[int]
    stride: list[int]
    dilation: list[int]
    padding: list[int]  # before the first row and column
    groups: int
    padding_name: str
    ceil_mode: bool
    divisor: int | None
    count_include_pad: bool
    windows: list[list[tuple[int, int]]]  # per axis, per output index: the input range [start, end)


def _windows(n_in: int, n_out: int, k: int, s: int, d: int, p: int, adaptive: bool) -> list[tuple[int, int]]:
    """For each output index along one axis, the input range ``[start, end)`` its window covers (may
    reach into the padding)."""
    if adaptive:
        return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]
    return [(i * s - p, i * s - p + d * (k - 1) + 1) for i in range(n_out)]


def _padding_name(k: list[int], s: list[int], d: list[int], p: list[int], n_in: list[int], n_out: list[int]) -> str:
    if p == [0, 0]:
        return "valid"
    if s == [1, 1] and n_in == n_out:
        return "same"
    if p == [d[0] * (k[0] - 1), d[1] * (k[1] - 1)]:
        return "full"
    return f"{p[0]}" if p[0] == p[1] else f"{p[0]},{p[1]}"


def geometry(layer: Layer) -> Geometry:
    m, inp, out = layer.event.module, layer.event.inp_value[0], layer.event.out_value[0]
    n_in, n_out = list(inp.shape[1:]), list(out.shape[1:])
    adaptive = layer.kind == "adaptive"
    if adaptive:
        k, s, d, p = [0, 0], [0, 0], [1, 1], [0, 0]
    else:
        k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
        d, p = _pair(getattr(m, "dilation", 1)), list(report.padding_before(m))
    return Geometry(
        list(inp.shape),
        k,
        s,
        d,
        p,
        getattr(m, "groups", 1),
        "" if adaptive else _padding_name(k, s, d, p, n_in, n_out),
        bool(getattr(m, "ceil_mode", False)),
        getattr(m, "divisor_override", None),
        bool(getattr(m, "count_include_pad", True)),
        [_windows(n_in[a], n_out[a], k[a], s[a], d[a], p[a], adaptive) for a in (0, 1)],
    )


@dataclass
class Sharing(Record):
    """How the units of a convolution-like layer's map share kernels."""

    kind: str  # conv (one kernel per channel), convolve (the same, flipped), tiled, local (a kernel per unit)
    period: list[int]  # units (y, x), (y + h, x), (y, x + w) apply the same kernels: [1, 1], tile_size, the map's size


def sharing(layer: Layer) -> Sharing:
    m = layer.event.module
    if isinstance(m, LocallyConnected2d):
        return Sharing("local", list(layer.display.shape[1:]))
    if isinstance(m, TiledConv2d):
        return Sharing("tiled", list(m.tile_size))
    return Sharing("convolve" if isinstance(m, Convolve2d) else "conv", [1, 1])


def unit_kernels(m: nn.Module, y: int, x: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernels (out_channels, in_channels / groups, kh, kw) and biases (out_channels,) output
    position (y, x) applies, as cross-correlation reads them: ``kernel_at`` where the layer has it (a
    locally connected, tiled or true convolution), else the convolution's one weight."""
    kernels = m.kernel_at(y, x) if hasattr(m, "kernel_at") else m.weight
    bias = m.bias[y, x] if m.bias is not None and m.bias.dim() == 3 else m.bias  # a locally connected bias per position
    return kernels, bias


@dataclass(frozen=True)
class Tile:
    """The part of a layer kept in exact numbers, and what it costs."""

    channels: list[int]  # output channels, most active first
    tile: list[int]  # output rows and columns [y0, y1, x0, x1)
    crop: list[int]  # the input rows and columns their windows read [y0, y1, x0, x1)
    kernel_sets: list[int]  # the distinct kernels along each axis of the tile: [1, 1] for a convolution
    floats: int
    full: bool  # the whole layer


def _crop(g: Geometry, axis: int, t0: int, t1: int) -> tuple[int, int]:
    """The input range (inside the image) the windows of outputs ``t0 .. t1 - 1`` along ``axis`` read."""
    windows = g.windows[axis][t0:t1]
    lo = max(0, min(start for start, _ in windows))
    hi = min(g.in_shape[1 + axis], max(end for _, end in windows))
    return lo, max(lo, hi)


def choose_tile(layer: Layer, g: Geometry, budget: int, per_page: int, period: list[int]) -> Tile:
    """The most of ``layer`` that fits ``budget`` floats: the whole layer, else its most active
    channels over the whole map, else a tile of the map around the strongest unit. A layer whose
    kernels repeat every ``period`` units keeps the kernels of a tile's first ``period`` rows and
    columns (a locally connected layer: of every unit in the tile)."""
    conv = layer.kind == "conv"
    c_out, h, w = layer.display.shape
    c_in = g.in_shape[0]
    per_channel_weights = (c_in // g.groups) * g.kernel_size[0] * g.kernel_size[1] if conv else 0

    def cost(n: int, th: int, tw: int) -> int:
        (y0, y1), (x0, x1) = _crop(g, 0, 0, th), _crop(g, 1, 0, tw)
        sets = min(th, period[0]) * min(tw, period[1])
        return (c_in if conv else n) * (y1 - y0) * (x1 - x0) + n * per_channel_weights * sets + 2 * n * th * tw

    counts = sorted({c_out, min(c_out, per_page), min(c_out, 4), min(c_out, 2), 1}, reverse=True)
    candidates = [(n, min(h, t), min(w, t)) for n in counts for t in (10**9, 16, 8)]
    candidates += [(1, min(h, t), min(w, t)) for t in (4, 2, 1)]
    n, th, tw = next((c for c in candidates if cost(*c) <= budget), candidates[-1])
    channels = layer.order[:n]
    cy, cx = divmod(int(layer.display[channels[0]].argmax()), w)
    ty0, tx0 = max(0, min(h - th, cy - th // 2)), max(0, min(w - tw, cx - tw // 2))
    crop = [*_crop(g, 0, ty0, ty0 + th), *_crop(g, 1, tx0, tx0 + tw)]
    sets = [min(th, period[0]), min(tw, period[1])]
    full = n == c_out and th == h and tw == w
    return Tile(channels, [ty0, ty0 + th, tx0, tx0 + tw], crop, sets, cost(n, th, tw), full)


@dataclass
class BatchNormOp(Record):
    mean: list[float]  # per kept channel, as the exact part's channels
    var: list[float]
    eps: float
    gamma: list[float]
    beta: list[float]
    op: str = "bn"


@dataclass
class ScaledTanhOp(Record):
    amplitude: float
    slope: float
    op: str = "scaled_tanh"


@dataclass
class ActivationOp(Record):
    op: str  # relu, tanh, sigmoid


PostOp = BatchNormOp | ScaledTanhOp | ActivationOp


def post_op(event: Event, channels: list[int]) -> PostOp:
    """What the page needs to apply a batch norm or activation to the kept ``channels``."""
    m = event.module
    if isinstance(m, nn.BatchNorm2d):
        idx = torch.tensor(channels, dtype=torch.long)

        def pick(t: torch.Tensor | None, default: float) -> list[float]:
            return (t[idx] if t is not None else torch.full((len(channels),), default)).double().tolist()

        return BatchNormOp(
            pick(m.running_mean, 0.0), pick(m.running_var, 1.0), m.eps, pick(m.weight, 1.0), pick(m.bias, 0.0)
        )
    if isinstance(m, ScaledTanh):
        return ScaledTanhOp(m.amplitude, m.slope)
    return ActivationOp(type(m).__name__.lower())


@dataclass
class ExactPart(Record):
    channels: list[int]
    tile: list[int]
    crop: list[int]
    input: str  # float32 (C_in, crop rows, crop columns) for a convolution, (channels, ...) for a pooling
    output: str  # float32 (channels, tile rows, tile columns): the layer's own output
    activation: str  # float32, the same units after the post ops
    post: list[PostOp]
    full: bool
    kernel_sets: list[int] | None = None  # convolution: [A, B], the first two dimensions of weights and bias
    weights: str | None = None  # convolution: float32 (A, B, channels, C_in / groups, kh, kw)
    bias: list[float] | None = None  # convolution with a bias: (A, B, channels)


def exact_part(layer: Layer, tile: Tile) -> ExactPart:
    event, conv = layer.event, layer.kind == "conv"
    idx = torch.tensor(tile.channels, dtype=torch.long)
    (ty0, ty1, tx0, tx1), (y0, y1, x0, x1) = tile.tile, tile.crop
    inp, m = event.inp_value[0], event.module
    window = inp[:, y0:y1, x0:x1] if conv else inp[idx, y0:y1, x0:x1]
    weights = bias = None
    if conv:  # unit (y, x) applies set ((y - ty0) mod A, (x - tx0) mod B)
        a, b = tile.kernel_sets
        units = [[unit_kernels(m, ty0 + i, tx0 + j) for j in range(b)] for i in range(a)]
        weights = _b64(torch.stack([torch.stack([k[idx] for k, _ in row]) for row in units]))
        if m.bias is not None:
            bias = torch.stack([torch.stack([c[idx] for _, c in row]) for row in units]).double().flatten().tolist()
    return ExactPart(
        tile.channels,
        tile.tile,
        tile.crop,
        _b64(window),
        _b64(event.out_value[0][idx, ty0:ty1, tx0:tx1]),
        _b64(layer.display[idx, ty0:ty1, tx0:tx1]),
        [post_op(e, tile.channels) for e in layer.post],
        tile.full,
        tile.kernel_sets if conv else None,
        weights,
        bias,
    )


@dataclass(frozen=True)
class ClickThrough:
    """What a click on a unit of a layer needs."""

    geometry: Geometry
    exact: ExactPart
    floats: int  # float32 values the exact part holds, counted against EXACT_FLOATS
    sharing: Sharing | None  # convolutions: which units apply the same kernels


def click_throughs(layers: list[Layer], per_page: int) -> dict[str, ClickThrough]:
    """The geometry and the exact part of every convolution and pooling layer, ``EXACT_FLOATS`` shared
    among them."""
    clickable = [layer for layer in layers if layer.kind in CLICKABLE]
    budget = max(20_000, EXACT_FLOATS // max(1, len(clickable)))
    result = {}
    for layer in clickable:
        g = geometry(layer)
        shared = sharing(layer) if layer.kind == "conv" else None
        tile = choose_tile(layer, g, budget, per_page, shared.period if shared else [1, 1])
        result[layer.name] = ClickThrough(g, exact_part(layer, tile), tile.floats, shared)
    return result


# ---------------------------------------------------------------------------------------------------
# Step 4: heatmaps, 8 bits a pixel


@dataclass
class MapPage(Record):
    count: int  # channels, each height x width bytes, in activity order
    height: int
    width: int
    data: str  # base64 uint8


@dataclass(frozen=True)
class Heatmaps:
    pages: dict[str, list[MapPage]]  # per layer: its first page of maps, then all the others
    rest_side: int  # the largest side of a map beyond the first pages


def _rest_side(maps: list[Layer], per_page: int) -> int:
    side = FIRST_PAGE_SIDE
    shapes = [layer.display.shape for layer in maps]
    while side > 2 and sum(max(0, c - per_page) * min(h, side) * min(w, side) for c, h, w in shapes) > MAP_BYTES:
        side -= 2
    return side


def _map_page(maps: torch.Tensor, side: int, value_range: tuple[float, float]) -> MapPage:
    th, tw = min(maps.shape[1], side), min(maps.shape[2], side)
    if (th, tw) != tuple(maps.shape[1:]):
        maps = F.adaptive_avg_pool2d(maps.unsqueeze(0), (th, tw))[0]
    lo, hi = value_range
    q = ((maps - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)).round().clamp(0, 255)
    return MapPage(maps.shape[0], th, tw, _b64(q, torch.uint8))


def heatmaps(layers: list[Layer], per_page: int) -> Heatmaps:
    """Every map of every layer on the layer's one scale: the first ``per_page`` up to
    ``FIRST_PAGE_SIDE`` pixels a side, the others smaller so that all together fit ``MAP_BYTES``."""
    maps = [layer for layer in layers if layer.order is not None]
    side = _rest_side(maps, per_page)
    pages = {}
    for layer in maps:
        parts = ((layer.order[:per_page], FIRST_PAGE_SIDE), (layer.order[per_page:], side))
        pages[layer.name] = [
            _map_page(layer.display[torch.tensor(channels)], limit, layer.value_range)
            for channels, limit in parts
            if channels
        ]
    return Heatmaps(pages, side)


# ---------------------------------------------------------------------------------------------------
# Step 5: the page's records


@dataclass
class LayerData(Record):
    id: str
    name: str
    kind: str
    shape: list[int]
    module: str
    kernel: str  # as the layer table writes it
    params: int
    macs: int
    post: list[str]  # the batch norms and activations folded in
    receptive_field: list[int] | None = None
    jump: list[int] | None = None
    start: list[float] | None = None
    values: list[float] | None = None  # linear
    order: list[int] | None = None
    lo: float | None = None
    hi: float | None = None
    geometry: Geometry | None = None
    sharing: Sharing | None = None
    exact: ExactPart | None = None
    exact_floats: int | None = None
    maps: list[MapPage] | None = None


def layer_data(
    layer: Layer, row: report.Layer | None, click: ClickThrough | None, maps: list[MapPage] | None
) -> LayerData:
    """A layer's record: its row of the layer table, the step it computes, its maps."""
    seen = row is not None and row.receptive_field is not None
    lo, hi = layer.value_range or (None, None)
    return LayerData(
        id=layer.name,
        name=layer.name,
        kind=layer.kind,
        shape=list(layer.display.shape),
        module=type(layer.event.module).__name__,
        kernel=row.kernel if row else "",
        params=row.params if row else 0,
        macs=row.macs if row else 0,
        post=[type(e.module).__name__ for e in layer.post],
        receptive_field=_pair(row.receptive_field) if seen else None,
        jump=_pair(row.jump) if seen else None,
        start=_pair(row.start) if seen else None,
        values=[round(v, 5) for v in layer.display.tolist()[:4096]] if layer.kind == "linear" else None,
        order=layer.order,
        lo=lo,
        hi=hi,
        geometry=click.geometry if click else None,
        sharing=click.sharing if click else None,
        exact=click.exact if click else None,
        exact_floats=click.floats if click else None,
        maps=maps,
    )


@dataclass
class InputImage(Record):
    height: int
    width: int
    channels: int
    data: str  # base64 uint8 (height, width, channels), normalisation undone
    caption: str
    label: str | None  # the true class, where the data has one


def input_image(image: Input) -> InputImage:
    pixels = display_image(image.x, image.data_cfg)
    height, width, channels = pixels.shape
    return InputImage(height, width, channels, _b64(pixels, torch.uint8), image.caption, image.label)


def predictions(logits: torch.Tensor, names: list[str]) -> list[tuple[str, float]]:
    """The five most probable classes, most probable first: (name, probability)."""
    probs = logits.float().softmax(dim=1)[0]
    top = probs.topk(min(5, probs.numel()))
    return [
        (names[i] if i < len(names) else f"class {i}", p) for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]


@dataclass
class Filters(Record):
    name: str
    count: int  # filters drawn, the first ones
    out_channels: int
    kernel_size: list[int]
    mode: str  # rgb: one colour picture per filter; diverging: the mean over input channels, 127.5 is zero
    in_channels: int
    data: str  # base64 uint8 (count, kh, kw, 3) for rgb, (count, kh, kw) for diverging
    note: str | None = None  # which kernels are drawn, where the units do not all apply the same ones


def _drawn_kernels(conv: nn.Module) -> tuple[torch.Tensor, str | None]:
    """The kernels a layer's filters picture shows, and what to call them: a convolution's weight, a
    true convolution's flipped, a tiled layer's first set, a locally connected layer's middle unit's."""
    if isinstance(conv, LocallyConnected2d):
        h, w = conv.output_size
        return conv.kernel_at(h // 2, w // 2), f"unit ({h // 2}, {w // 2})'s, each of the {h}x{w} units has its own"
    if isinstance(conv, TiledConv2d):
        return conv.kernel_at(0, 0), f"kernel set (0, 0) of {conv.tile_size[0]}x{conv.tile_size[1]}"
    if isinstance(conv, Convolve2d):
        return conv.kernel_at(0, 0), "flipped, as the true convolution applies them"
    return conv.weight, None


def first_filters(model: nn.Module) -> Filters | None:
    """Up to 64 filters of the model's first convolution, as pictures."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, CONV_TYPES)), ("", None))
    if conv is None:
        return None
    kernels, note = _drawn_kernels(conv)
    w = kernels.detach().float()[:64]
    if w.shape[1] == 3:
        low = w.amin(dim=(1, 2, 3), keepdim=True)
        high = w.amax(dim=(1, 2, 3), keepdim=True)
        pixels = ((w - low) / (high - low + 1e-12) * 255).round().permute(0, 2, 3, 1)  # RGB
        mode = "rgb"
    else:
        mean = w.mean(1)
        bound = mean.abs().amax(dim=(1, 2), keepdim=True) + 1e-12
        pixels = ((mean / bound + 1) * 127.5).round()  # 0 .. 255, 127.5 is zero
        mode = "diverging"
    return Filters(
        name, w.shape[0], conv.out_channels, list(w.shape[2:]), mode, conv.in_channels, _b64(pixels, torch.uint8), note
    )


def curves(run_dir: Path | None) -> list[dict[str, float]] | None:
    """A run's metrics per epoch, where there is a readable metrics.csv."""
    if run_dir is None or not (run_dir / "metrics.csv").is_file():
        return None
    try:
        return read_metrics(run_dir)
    except UserError:
        return None


@dataclass
class Table(Record):
    columns: list[str]
    rows: list[list[str]]
    depths: list[int]  # per row: how deep the module sits in the model (1: a child of the model)
    totals: list[str]


def layer_table(summary: report.Summary) -> Table:
    rows = summary.layers[1:]
    return Table(
        list(report.COLUMNS),
        [report.layer_cells(r) for r in rows],
        [r.depth for r in rows],
        report.totals_lines(summary),
    )


@dataclass
class Bounds(Record):
    exact_floats: int
    map_bytes: int
    first_page_side: int
    rest_side: int


@dataclass
class Page(Record):
    title: str
    model: str
    source: str
    input: InputImage
    predictions: list[tuple[str, float]]
    structure: list[Node]
    layers: dict[str, LayerData]
    per_page: int
    filters: Filters | None
    curves: list[dict[str, float]] | None
    table: Table
    bounds: Bounds


# ---------------------------------------------------------------------------------------------------
# The pipeline


def build_page(subject: Subject, image: Input, per_page: int) -> Page:
    """The page's data, step by step: the forward pass, its layers, what a click on a unit needs, the
    heatmaps, then each layer's record."""
    model = subject.model
    run = trace(model, image.x)
    summary = report.summarize(model, list(image.x.shape[1:]), name=subject.name)
    nodes, layers = structure(model, run)
    clicks = click_throughs(layers, per_page)
    maps = heatmaps(layers, per_page)
    rows = {row.name: row for row in summary.layers}
    records = {
        layer.name: layer_data(layer, rows.get(layer.name), clicks.get(layer.name), maps.pages.get(layer.name))
        for layer in layers
    }
    return Page(
        title=f"{subject.name}: inside the network",
        model=subject.name,
        source=subject.source,
        input=input_image(image),
        predictions=predictions(run.logits, subject.class_names),
        structure=nodes,
        layers=records,
        per_page=per_page,
        filters=first_filters(model),
        curves=curves(subject.run_dir),
        table=layer_table(summary),
        bounds=Bounds(EXACT_FLOATS, MAP_BYTES, FIRST_PAGE_SIDE, maps.rest_side),
    )


def render(data: dict) -> str:
    """The page: the template with the data embedded as JSON, every ``<`` written ``\\u003c`` so that no
    string in the data (a class or file name) can end or confuse the script element."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace("/*PAGE_DATA*/null", payload, 1)


def explain(subject: Subject, image: Input, per_page: int = 8) -> tuple[str, dict]:
    """The page's HTML for ``subject`` on ``image``, and the data embedded in it."""
    data = build_page(subject, image, per_page).to_json()
    return render(data), data


def default_output(subject: Subject) -> Path:
    folder = subject.run_dir if subject.run_dir is not None else Path.cwd()
    return folder / f"explain-{subject.name}.html"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.channels < 1:
            raise UserError("--channels must be at least 1")
        subject = load_subject(args)
        image = load_input(subject, args)
        page, data = explain(subject, image, args.channels)
        output = Path(args.output) if args.output else default_output(subject)
        if output.is_dir():
            raise UserError(f"--output {str(output)!r} is a directory; give a file name ending in .html")
        try:
            checkpoint.write_atomic(output, lambda f: f.write(page.encode("utf-8")))
        except OSError as e:
            raise UserError(f"cannot write {str(output)!r}: {e.strerror or e}") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size_mb = len(page.encode("utf-8")) / 2**20
    print(
        f"wrote {output} ({size_mb:.1f} MB): {subject.name} on {image.caption}, predicted "
        f"{data['predictions'][0][0]} ({data['predictions'][0][1]:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
