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

The page's arithmetic is done in the browser from those float32 numbers, and the model's own output
(computed by cnnzoo's ops) is shown beside it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
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
from .predict import load_model, read_image

EXACT_FLOATS = 1_600_000  # float32 values kept exactly, over all layers (6.4 MB, 8.5 MB as base64)
MAP_BYTES = 5_000_000  # 8-bit heatmap pixels of the channels beyond each layer's first page
FIRST_PAGE_SIDE = 48  # the largest side of a first-page heatmap
TEMPLATE = Path(__file__).with_name("explain_page.html")

ROW_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Linear)
POST_TYPES = (nn.BatchNorm2d, nn.ReLU, nn.Tanh, nn.Sigmoid, ScaledTanh)


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
    p = argparse.ArgumentParser(prog="python -m cnnzoo.explain",
                                description="Write a self-contained HTML page that explains a model's computation "
                                            "for one image.")
    p.add_argument("--resume", metavar="CKPT", help="a checkpoint of python -m cnnzoo.train (best.pt or last.pt)")
    p.add_argument("--model", help="a zoo model name (with --resume: checked against the checkpoint's model)")
    p.add_argument("--weights", help="with --model: torchvision weights (DEFAULT, IMAGENET1K_V1, ...) or a "
                                     "state_dict/checkpoint path; without it the model is freshly initialised")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH", help="an image file to explain")
    source.add_argument("--index", type=int, metavar="N",
                        help="the N-th image of the validation split (the run's dataset; the digits for --model); "
                             "the default is 0")
    p.add_argument("--output", metavar="FILE.html", help="where to write the page (default: explain-NAME.html "
                                                         "beside the checkpoint, or in the current directory)")
    p.add_argument("--channels", type=int, default=8, metavar="N",
                   help="feature maps per page of each layer (default 8)")
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
        return Subject(model, cfg.model.name, size, cfg.data, cfg.data, names, True,
                       Path(args.resume).resolve().parent, f"checkpoint {args.resume}")
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
    what = f"{args.model}, " + (f"weights {args.weights}" if args.weights else
                                f"freshly initialised (seed {args.seed})")
    return Subject(model, args.model, size, cfg.data, digits.data, names, False, None, what)


def _classes(model: nn.Module) -> int:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def _torchvision_categories(info, weights: str | None) -> list[str] | None:
    from .models.weights import is_torchvision_name, torchvision_weights

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
        raise UserError(f"--index {index} is out of range: the validation split of {source.name} has "
                        f"{len(source.val)} images (0 to {len(source.val) - 1})")
    set_transform(source.val, transforms(source, subject.size, augment=False, train=False))
    x, label = source.val[index]
    if x.shape[0] != channels:  # a grey image shown to a colour model: the same image in every channel
        x = x.expand(channels, -1, -1)
    names = subject.class_names if subject.own_data else class_names(subject.index_cfg, source.num_classes)
    return Input(x.unsqueeze(0).contiguous(), subject.index_cfg, f"{source.name} validation image {index}",
                 names[int(label)] if int(label) < len(names) else None)


def display_image(x: torch.Tensor, data_cfg) -> torch.Tensor:
    """The input as the eye sees it: normalisation undone, 0..255, (H, W, C) uint8."""
    mean, std = normalization(data_cfg)
    c = x.shape[1]
    mean = torch.tensor((list(mean) * c)[:c]).view(c, 1, 1)
    std = torch.tensor((list(std) * c)[:c]).view(c, 1, 1)
    image = (x[0] * std + mean).clamp(0, 1)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0)


# ---------------------------------------------------------------------------------------------------
# One forward pass, watched


@dataclass
class Event:
    """One call of a module: its input and output tensors (the objects, to follow them) and copies of
    the values it needs (taken at once, before an in-place activation changes them)."""

    name: str
    module: nn.Module
    start: int  # the order in which modules were first entered
    done: int  # the order in which calls finished
    inp: torch.Tensor | None
    out: torch.Tensor
    inp_value: torch.Tensor | None = None
    out_value: torch.Tensor | None = None


BLOCK_TYPES = (BasicBlock, Bottleneck, Inception)


def trace(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, Event], list[Event], torch.Tensor]:
    """Run ``model`` on ``x`` watching every module: each module's first call by name, every call in
    the order they finished (a shared ReLU runs several times), and the logits."""
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
            event = Event(name, mod, starts[name], len(calls), inp, out)
            if isinstance(mod, ROW_TYPES) and inp is not None:
                event.inp_value = inp.detach().clone()
            if isinstance(mod, ROW_TYPES + POST_TYPES + BLOCK_TYPES):
                event.out_value = out.detach().clone()
            calls.append(event)
            first.setdefault(name, event)

        handles.extend([module.register_forward_pre_hook(pre), module.register_forward_hook(post)])

    for name, module in model.named_modules():
        watch(name, module)
    try:
        with torch.no_grad():
            logits = model(x)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{type(model).__name__} cannot take this input of size {list(x.shape[1:])}: "
                        f"{str(e).splitlines()[0]}") from None
    finally:
        for h in handles:
            h.remove()
    return first, calls, logits


def post_ops(event: Event, calls: list[Event]) -> list[Event]:
    """The batch norms and activations applied to a layer's output right after it (followed by tensor:
    each takes the previous one's output), in order."""
    chain, current = [], event.out
    for e in calls[event.done + 1:]:
        if any(True for _ in e.module.children()):
            continue  # a container finishing
        if e.inp is not current or not isinstance(e.module, POST_TYPES):
            break
        chain.append(e)
        current = e.out
    return chain


# ---------------------------------------------------------------------------------------------------
# What the page shows of each layer


def _b64(t: torch.Tensor, dtype=torch.float32) -> str:
    return base64.b64encode(t.detach().to(dtype).contiguous().cpu().numpy().tobytes()).decode("ascii")


def _pair(v) -> list:
    return list(report.pair(v))


def _op(e: Event, channels: list[int]) -> dict:
    m = e.module
    if isinstance(m, nn.BatchNorm2d):
        idx = torch.tensor(channels, dtype=torch.long)

        def pick(t, default):
            return (t[idx] if t is not None else torch.full((len(channels),), default)).double().tolist()

        return {"op": "bn", "mean": pick(m.running_mean, 0.0), "var": pick(m.running_var, 1.0), "eps": m.eps,
                "gamma": pick(m.weight, 1.0), "beta": pick(m.bias, 0.0)}
    if isinstance(m, ScaledTanh):
        return {"op": "scaled_tanh", "a": m.amplitude, "s": m.slope}
    return {"op": type(m).__name__.lower()}  # relu, tanh, sigmoid


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


class PageBuilder:
    """Turns a traced forward pass into the page's data: layers, structure, heatmaps and exact parts."""

    def __init__(self, subject: Subject, image: Input, per_page: int) -> None:
        self.subject, self.image, self.x, self.per_page = subject, image, image.x, per_page
        self.events, self.calls, self.logits = trace(subject.model, self.x)
        self.report = report.summarize(subject.model, list(self.x.shape[1:]), name=subject.name)
        self.summary = {layer.name: layer for layer in self.report.layers}
        self.layers: dict[str, dict] = {}
        self.displays: dict[str, torch.Tensor] = {}

    # structure ------------------------------------------------------------------------------------
    def _children(self, name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        ran = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
        ran = [(n, m) for n, m in ran if n in self.events]
        return sorted(ran, key=lambda nm: self.events[nm[0]].start)

    def nodes(self, name: str, module: nn.Module) -> list[dict]:
        if name not in self.events and name != "":
            return []
        if isinstance(module, (BasicBlock, Bottleneck)):
            children = self._children(name, module)
            shortcut = module.downsample
            label = ("identity" if shortcut is None else "every 2nd pixel, zero channels appended"
                     if isinstance(shortcut, PadShortcut) else "1x1 convolution and batch norm")
            return [{"type": "residual", "name": name, "shortcut_label": label,
                     "main": [n for c, m in children if not c.endswith(".downsample") for n in self.nodes(c, m)],
                     "shortcut": [n for c, m in children if c.endswith(".downsample") for n in self.nodes(c, m)],
                     "out": self.add_layer(name, "add")}]
        if isinstance(module, Inception):
            return [{"type": "branches", "name": name,
                     "branches": [self.nodes(c, m) for c, m in self._children(name, module)],
                     "out": self.add_layer(name, "concat")}]
        if isinstance(module, ROW_TYPES):
            return [{"type": "layer", "id": self.add_layer(name, None)}]
        return [n for c, m in self._children(name, module) for n in self.nodes(c, m)]

    # one layer ------------------------------------------------------------------------------------
    def add_layer(self, name: str, kind: str | None) -> str:
        event = self.events[name]
        m = event.module
        chain: list[Event] = []
        if kind is None:
            kind = ("conv" if isinstance(m, nn.Conv2d) else "maxpool" if isinstance(m, nn.MaxPool2d) else
                    "avgpool" if isinstance(m, nn.AvgPool2d) else "adaptive" if isinstance(m, nn.AdaptiveAvgPool2d)
                    else "linear")
            chain = post_ops(event, self.calls) if kind == "conv" else []
        display = (chain[-1].out_value if chain else event.out_value)[0].float()
        self.displays[name] = display
        row = self.summary.get(name)
        layer = {"id": name, "name": name, "kind": kind, "shape": list(display.shape),
                 "module": type(m).__name__, "kernel": row.kernel if row else "",
                 "params": row.params if row else 0, "macs": row.macs if row else 0,
                 "post": [type(e.module).__name__ for e in chain]}
        if row is not None and row.receptive_field is not None:
            layer["rf"], layer["jump"], layer["start"] = _pair(row.receptive_field), _pair(row.jump), _pair(row.start)
        if kind == "linear":
            layer["values"] = [round(v, 5) for v in display.tolist()[:4096]]
        if display.dim() == 3:
            layer["order"] = display.abs().mean(dim=(1, 2)).argsort(descending=True).tolist()
            layer["lo"], layer["hi"] = float(display.min()), float(display.max())
        if kind in ("conv", "maxpool", "avgpool", "adaptive"):
            layer["geometry"] = self._geometry(event, kind)
            layer["_chain"] = chain
        self.layers[name] = layer
        return name

    def _geometry(self, event: Event, kind: str) -> dict:
        m, inp, out = event.module, event.inp_value[0], event.out_value[0]
        n_in, n_out = list(inp.shape[1:]), list(out.shape[1:])
        if kind == "adaptive":
            k, s, d, p = [0, 0], [0, 0], [1, 1], [0, 0]
        else:
            k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            d, p = _pair(getattr(m, "dilation", 1)), list(report.padding_before(m))
        geometry = {"in_shape": list(inp.shape), "k": k, "s": s, "d": d, "p": p, "groups": getattr(m, "groups", 1),
                    "padding_name": "" if kind == "adaptive" else _padding_name(k, s, d, p, n_in, n_out),
                    "ceil_mode": bool(getattr(m, "ceil_mode", False)),
                    "divisor": getattr(m, "divisor_override", None),
                    "count_include_pad": bool(getattr(m, "count_include_pad", True))}
        geometry["windows"] = [_windows(n_in[a], n_out[a], k[a], s[a], d[a], p[a], kind == "adaptive") for a in (0, 1)]
        return geometry

    # the exact part of each layer -----------------------------------------------------------------
    def exact_parts(self) -> None:
        clickable = [layer for layer in self.layers.values() if "geometry" in layer]
        budget = max(20_000, EXACT_FLOATS // max(1, len(clickable)))
        for layer in clickable:
            self._exact(layer, budget)

    def _exact(self, layer: dict, budget: int) -> None:
        event, g, chain = self.events[layer["id"]], layer["geometry"], layer.pop("_chain")
        conv = layer["kind"] == "conv"
        c_out, h, w = layer["shape"]
        c_in = g["in_shape"][0]
        per_channel_weights = (c_in // g["groups"]) * g["k"][0] * g["k"][1] if conv else 0
        wins = g["windows"]

        def crop(t0, t1, axis):
            lo = max(0, min(wins[axis][i][0] for i in range(t0, t1)))
            hi = min(g["in_shape"][1 + axis], max(wins[axis][i][1] for i in range(t0, t1)))
            return lo, max(lo, hi)

        def cost(n, th, tw):
            (y0, y1), (x0, x1) = crop(0, th, 0), crop(0, tw, 1)
            return (c_in if conv else n) * (y1 - y0) * (x1 - x0) + n * per_channel_weights + 2 * n * th * tw

        counts = sorted({c_out, min(c_out, self.per_page), min(c_out, 4), min(c_out, 2), 1}, reverse=True)
        candidates = [(n, min(h, t), min(w, t)) for n in counts for t in (10**9, 16, 8)]
        candidates += [(1, min(h, t), min(w, t)) for t in (4, 2, 1)]
        n, th, tw = next((c for c in candidates if cost(*c) <= budget), candidates[-1])
        channels = layer["order"][:n]
        strongest = self.displays[layer["id"]][channels[0]]
        cy, cx = divmod(int(strongest.argmax()), w)
        ty0, tx0 = max(0, min(h - th, cy - th // 2)), max(0, min(w - tw, cx - tw // 2))
        (y0, y1), (x0, x1) = crop(ty0, ty0 + th, 0), crop(tx0, tx0 + tw, 1)
        inp = event.inp_value[0]
        idx = torch.tensor(channels, dtype=torch.long)
        x_part = inp[:, y0:y1, x0:x1] if conv else inp[idx, y0:y1, x0:x1]
        z = event.out_value[0][idx, ty0:ty0 + th, tx0:tx0 + tw]
        a = self.displays[layer["id"]][idx, ty0:ty0 + th, tx0:tx0 + tw]
        exact = {"channels": channels, "tile": [ty0, ty0 + th, tx0, tx0 + tw], "crop": [y0, y1, x0, x1],
                 "x": _b64(x_part), "z": _b64(z), "a": _b64(a), "post": [_op(e, channels) for e in chain],
                 "full": n == c_out and th == h and tw == w}
        if conv:
            m = event.module
            exact["w"] = _b64(m.weight[idx])
            exact["b"] = m.bias[idx].double().tolist() if m.bias is not None else None
        layer["exact"] = exact
        layer["exact_floats"] = cost(n, th, tw)

    # heatmaps -------------------------------------------------------------------------------------
    def heatmaps(self) -> None:
        maps = [layer for layer in self.layers.values() if len(layer["shape"]) == 3]
        side = FIRST_PAGE_SIDE
        while side > 2 and sum(max(0, l["shape"][0] - self.per_page) * min(l["shape"][1], side)
                               * min(l["shape"][2], side) for l in maps) > MAP_BYTES:
            side -= 2
        for layer in maps:
            display = self.displays[layer["id"]]
            order = layer["order"]
            lo, hi = layer["lo"], layer["hi"]
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            pages = []
            for channels, limit in ((order[:self.per_page], FIRST_PAGE_SIDE), (order[self.per_page:], side)):
                if not channels:
                    continue
                maps_ = display[torch.tensor(channels)]
                th, tw = min(maps_.shape[1], limit), min(maps_.shape[2], limit)
                if (th, tw) != tuple(maps_.shape[1:]):
                    maps_ = F.adaptive_avg_pool2d(maps_.unsqueeze(0), (th, tw))[0]
                q = ((maps_ - lo) * scale).round().clamp(0, 255)
                pages.append({"count": len(channels), "h": th, "w": tw, "data": _b64(q, torch.uint8)})
            layer["maps"] = pages
        self.rest_side = side

    # the rest of the page -------------------------------------------------------------------------
    def build(self) -> dict:
        subject = self.subject
        structure = self.nodes("", subject.model)
        self.exact_parts()
        self.heatmaps()
        probs = self.logits.float().softmax(dim=1)[0]
        top = probs.topk(min(5, probs.numel()))
        image = display_image(self.x, self.image.data_cfg)
        return {
            "title": f"{subject.name}: inside the network", "model": subject.name, "source": subject.source,
            "input": {"h": image.shape[0], "w": image.shape[1], "c": image.shape[2], "data": _b64(image, torch.uint8),
                      "caption": self.image.caption, "label": self.image.label},
            "predictions": [[subject.class_names[i] if i < len(subject.class_names) else f"class {i}", p]
                            for p, i in zip(top.values.tolist(), top.indices.tolist())],
            "structure": structure, "layers": self.layers, "per_page": self.per_page,
            "filters": self.filters(), "curves": self.curves(), "table": self.table(),
            "bounds": {"exact_floats": EXACT_FLOATS, "map_bytes": MAP_BYTES, "first_page_side": FIRST_PAGE_SIDE,
                       "rest_side": self.rest_side},
        }

    def filters(self) -> dict | None:
        conv = next((m for m in self.subject.model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            return None
        w = conv.weight.detach().float()[:64]
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
        name = next(n for n, m in self.subject.model.named_modules() if m is conv)
        return {"name": name, "count": w.shape[0], "of": conv.out_channels, "k": list(w.shape[2:]), "mode": mode,
                "in_channels": conv.in_channels, "data": _b64(pixels, torch.uint8)}

    def curves(self) -> list[dict] | None:
        if self.subject.run_dir is None or not (self.subject.run_dir / "metrics.csv").is_file():
            return None
        from .viz import read_metrics

        try:
            return read_metrics(self.subject.run_dir)
        except UserError:
            return None

    def table(self) -> dict:
        summary = self.report
        return {"columns": list(report.COLUMNS), "rows": [report.layer_cells(r) for r in summary.layers[1:]],
                "depths": [r.depth for r in summary.layers[1:]], "totals": report.totals_lines(summary)}


def render(data: dict) -> str:
    """The page: the template with the data embedded as JSON, every ``<`` written ``\\u003c`` so that no
    string in the data (a class or file name) can end or confuse the script element."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace("/*PAGE_DATA*/null", payload, 1)


def explain(subject: Subject, image: Input, per_page: int = 8) -> tuple[str, dict]:
    """The page's HTML for ``subject`` on ``image``, and the data embedded in it."""
    data = PageBuilder(subject, image, per_page).build()
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
    print(f"wrote {output} ({size_mb:.1f} MB): {subject.name} on {image.caption}, predicted "
          f"{data['predictions'][0][0]} ({data['predictions'][0][1]:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
