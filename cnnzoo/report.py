"""Per-layer reports: output shapes, parameters, multiply-accumulates and receptive fields.

    python -m cnnzoo.report resnet18 [--input-size 3 224 224] [--batch-size N] [--depth N]
                                     [--format table|markdown|csv|json] [--set key=value ...]
    python -m cnnzoo.report --all          # every model against the published figures
    python -m cnnzoo.report --config configs/resnet20_cifar10.yaml
    python -m cnnzoo.report vgg16 --algorithms [--time]   # each convolution algorithm's cost and error
    python -m cnnzoo.report lenet5 --sharing   # each conv layer as a convolution, tiled, local, FC layer

Shapes propagate on the meta device, so no arithmetic runs and no weights are allocated: VGG-19's
report takes a fraction of a second and no memory to speak of.

Conventions (those of torchvision's published "GFLOPS", which are multiply-accumulates):

* MACs are counted for one image, for convolutions (output elements x input channels per group x
  kernel area) and fully connected layers (inputs x outputs); biases, batch norm, activations and
  pooling are not counted. FLOPs = 2 x MACs. Locally connected and tiled layers count as the
  convolution of their geometry: unsharing the kernels changes the parameters, not the arithmetic.
* The receptive field of a layer's output is the side of the input square one output pixel sees,
  and its jump the distance in input pixels between neighbouring output pixels:
  ``rf_out = rf_in + (dilation * (k - 1)) * jump_in`` and ``jump_out = jump_in * stride``. Its
  start is the input coordinate of the centre of output pixel 0 (the field of pixel ``i`` is centred
  on ``start + i * jump``): ``start_out = start_in + ((dilation * (k - 1)) / 2 - padding) * jump_in``. Where
  branches meet (concatenation, residual sums) the largest receptive field is taken. After a fully
  connected layer every output sees the whole input ("global", ``null`` in JSON).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .errors import UserError
from .models import create_model, list_models
from .models.common import count_parameters
from .models.registry import model_info
from .nn.local import Convolve2d, LocallyConnected2d, TiledConv2d

GLOBAL = None  # the receptive field of a fully connected layer's output: the whole input
# the layers that slide kernels as a convolution does, whether or not they share them: a row of the same
# shape, MACs and receptive field, and a row of the --sharing table
CONVOLUTIONS = (nn.Conv2d, LocallyConnected2d, TiledConv2d)


@dataclass
class Layer:
    """One row of a report: a module and what its output looks like."""

    name: str
    type: str
    depth: int
    output_shape: list[int] | None = None
    input_shape: list[int] | None = None  # of the module's first tensor argument
    params: int = 0  # all parameters of the module and its children
    trainable_params: int = 0
    macs: int = 0  # per image
    receptive_field: int | list[int] | None = None  # an int for a square field; None: global or not spatial
    jump: int | list[int] | None = None
    start: float | list[float] | None = None  # input coordinate of the centre of output pixel 0's field
    kernel: str = ""  # kernel/stride/padding/groups, where they apply
    calls: int = 0  # how often the module ran (a shared activation runs several times; its row shows the first)


@dataclass
class Summary:
    model: str
    input_size: list[int]  # C, H, W
    batch_size: int
    layers: list[Layer] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    weight_params: int = 0  # parameters that are not biases
    total_macs: int = 0
    param_bytes: int = 0
    activation_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def to_dict(self) -> dict:
        data = asdict(self)
        data["total_flops"] = self.total_flops
        return data


def pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def padding_before(module: nn.Module) -> tuple[int, int]:
    """The zeros a sliding-window layer adds above and left of its input (``'same'`` puts the odd one
    of an even total below and right, as torch does; ``'full'`` adds ``dilation * (k - 1)``)."""
    padding = getattr(module, "padding", 0)
    if padding == "valid":
        return 0, 0
    if padding in ("same", "full"):
        (kh, kw), (dh, dw) = pair(module.kernel_size), pair(module.dilation)
        if padding == "full":
            return dh * (kh - 1), dw * (kw - 1)
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return pair(padding)


def _geometry(module: nn.Module, x: torch.Tensor):
    """``(kernel, stride, dilation, padding)`` pairs of a sliding-window layer (None for other layers)."""
    if isinstance(module, (*CONVOLUTIONS, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = getattr(module, "dilation", 1)
        return (
            pair(module.kernel_size),
            pair(module.stride or module.kernel_size),
            pair(dilation),
            padding_before(module),
        )
    if isinstance(module, nn.AdaptiveAvgPool2d):
        out = pair(module.output_size)
        kernels, strides = [], []
        for n, o in zip(x.shape[-2:], out):
            o = n if o is None else o
            bins = [(-(-(i + 1) * n // o)) - (i * n // o) for i in range(o)]  # ceil((i+1)n/o) - floor(in/o)
            kernels.append(max(bins))
            strides.append(max(1, n // o))
        return tuple(kernels), tuple(strides), (1, 1), (0, 0)
    return None


def _macs(module: nn.Module, out: torch.Tensor, batch: int) -> int:
    if isinstance(module, CONVOLUTIONS):
        kh, kw = pair(module.kernel_size)
        return out.numel() // batch * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() // batch * module.in_features
    return 0


def _describe(module: nn.Module) -> str:
    if isinstance(module, CONVOLUTIONS):
        k, s, p = pair(module.kernel_size), pair(module.stride), module.padding
        text = f"{k[0]}x{k[1]}/{s[0]}" + ("" if s[0] == s[1] else f",{s[1]}") + f" p{p if isinstance(p, str) else p[0]}"
        return text + (f" g{module.groups}" if module.groups > 1 else "") + _connectivity(module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = pair(module.kernel_size), pair(module.stride or module.kernel_size)
        return f"{k[0]}x{k[1]}/{s[0]} p{pair(module.padding)[0]}" + (" ceil" if module.ceil_mode else "")
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return f"-> {module.output_size}"
    return ""


def _connectivity(module: nn.Module) -> str:
    """What sets a convolution-shaped layer apart from a cross-correlation sharing one kernel everywhere
    (its type column names it too, but the kernel column is the one read along the geometry)."""
    if isinstance(module, LocallyConnected2d):
        return ", local"
    if isinstance(module, TiledConv2d):
        return f", tiled {module.tile_size[0]}x{module.tile_size[1]}"
    if isinstance(module, Convolve2d):
        return ", true conv"
    return ""


class _FieldTracker(TorchFunctionMode):
    """Carries each tensor's receptive field and jump through every torch function: a function's
    outputs get the largest field among its inputs (residual sums, concatenation, flatten, ...).
    Layers then overwrite their outputs' fields with their own formula (see ``summarize``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple | None] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while the report runs

    def get(self, t: torch.Tensor):
        return self.fields.get(id(t), "missing")

    def set(self, t: torch.Tensor, value) -> None:
        self.fields[id(t)] = value
        self.alive.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        known = [self.get(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        known = [f for f in known if f != "missing"]
        if known:
            merged = GLOBAL if any(f is GLOBAL for f in known) else max(known, key=lambda f: f[0] * f[1])
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and id(t) not in self.fields:
                    self.set(t, merged)
        return out


def _first_tensor(value) -> torch.Tensor | None:
    return next((t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)), None)


def _square(pair_: tuple[int, int]) -> int | list[int]:
    return pair_[0] if pair_[0] == pair_[1] else list(pair_)


def _on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data is copied)."""
    if all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())):
        return model
    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in model.parameters()
    }
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    return copy.deepcopy(model, memo)


def summarize(model: nn.Module, input_size, batch_size: int = 1, name: str | None = None) -> Summary:
    """The per-layer report of ``model`` on input of ``input_size`` (C, H, W), run on the meta device.

    ``model`` may live on any device; it is copied to the meta device (no arithmetic, no memory).
    """
    input_size = [int(v) for v in input_size]
    if len(input_size) != 3 or min(input_size) < 1:
        raise UserError(f"input size must be three positive numbers C H W, got {input_size}")
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    summary = Summary(name or type(model).__name__, input_size, batch_size)
    summary.total_params = count_parameters(model)
    summary.trainable_params = count_parameters(model, trainable_only=True)
    summary.weight_params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias"))
    summary.param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    meta = _on_meta(model)
    meta.eval()
    tracker = _FieldTracker()
    rows: dict[str, Layer] = {}
    order: list[str] = []
    hooks = _watch(meta, summary, tracker, rows, order)
    x = torch.empty(batch_size, *input_size, device="meta")
    tracker.set(x, (1, 1, 1, 1, 0.0, 0.0))
    try:
        with torch.no_grad(), tracker:
            meta(x)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{summary.model} cannot take input of size {input_size}: {str(e).splitlines()[0]}") from None
    finally:
        for h in hooks:
            h.remove()
    _sum_macs(meta, rows)
    seen = set()
    summary.layers = [rows[n] for n in order if not (n in seen or seen.add(n))]
    summary.total_macs = rows[""].macs
    forward = summary.activation_bytes.get("forward", 0)
    # training keeps every activation for the backward pass and holds a gradient of the same size
    summary.activation_bytes = {"forward": forward, "forward_backward": 2 * forward}
    return summary


def _watch(meta: nn.Module, summary: Summary, tracker: _FieldTracker, rows: dict[str, Layer], order: list[str]) -> list:
    """Hooks on every module of ``meta`` that fill its row of ``rows`` (output shape, receptive field,
    MACs) the first time it runs, and note the order modules run in; returns the hooks."""
    hooks = []
    for module_name, module in meta.named_modules():
        depth = 0 if module_name == "" else module_name.count(".") + 1
        row = Layer(module_name or summary.model, type(module).__name__, depth, kernel=_describe(module))
        row.params = count_parameters(module)
        row.trainable_params = count_parameters(module, trainable_only=True)
        rows[module_name] = row

        def pre_hook(mod, args, module_name=module_name):
            order.append(module_name)

        def hook(mod, args, output, row=row):
            out, x = _first_tensor(output), _first_tensor(args)
            row.calls += 1
            if out is None or row.calls > 1:
                return
            _track_field(mod, x, out, tracker)
            field_ = tracker.get(out)
            if field_ not in ("missing", GLOBAL):
                row.receptive_field, row.jump, row.start = (
                    _square(field_[:2]),
                    _square(field_[2:4]),
                    _square(field_[4:]),
                )
            row.output_shape = list(out.shape)
            row.input_shape = None if x is None else list(x.shape)
            if not any(True for _ in mod.children()):  # a leaf
                row.macs = _macs(mod, out, summary.batch_size)
                summary.activation_bytes["forward"] = (
                    summary.activation_bytes.get("forward", 0) + out.numel() * out.element_size()
                )

        hooks += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]
    return hooks


def _track_field(mod: nn.Module, x: torch.Tensor | None, out: torch.Tensor, tracker: _FieldTracker) -> None:
    """Give ``out`` the receptive field and jump that layer ``mod`` makes of its input's."""
    geometry = _geometry(mod, x) if x is not None else None
    source = tracker.get(x) if x is not None else "missing"
    if geometry is not None and source not in ("missing", GLOBAL):
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = geometry
        rf_h, rf_w, j_h, j_w, s_h, s_w = source
        tracker.set(
            out,
            (
                rf_h + dh * (kh - 1) * j_h,
                rf_w + dw * (kw - 1) * j_w,
                j_h * sh,
                j_w * sw,
                s_h + (dh * (kh - 1) / 2 - ph) * j_h,
                s_w + (dw * (kw - 1) / 2 - pw) * j_w,
            ),
        )
    elif type(mod).__name__ == "Linear":
        tracker.set(out, GLOBAL)


def _sum_macs(meta: nn.Module, rows: dict[str, Layer]) -> None:
    """A container's MACs are the sum of its leaves' (a module that never ran, like an auxiliary head in
    eval mode, has none)."""
    for module_name, module in meta.named_modules():
        if module_name and not any(True for _ in module.children()):
            parts = module_name.split(".")
            for i in range(len(parts)):
                rows[".".join(parts[:i])].macs += rows[module_name].macs


# ----------------------------------------------------------------------------------------------- output
COLUMNS = ("layer", "type", "kernel", "output shape", "params", "MACs", "RF", "jump")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def layer_cells(row: Layer) -> list[str]:
    rf = (
        "global"
        if row.receptive_field is None and row.output_shape and len(row.output_shape) == 2
        else _cell(row.receptive_field)
    )
    kind = row.type + (f" x{row.calls}" if row.calls > 1 else "")
    return [
        "  " * row.depth + row.name.rpartition(".")[2] if row.depth else row.name,
        kind,
        row.kernel,
        _cell(row.output_shape[1:] if row.output_shape else None),
        _cell(row.params),
        _cell(row.macs),
        rf,
        _cell(row.jump),
    ]


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def totals_lines(s: Summary) -> list[str]:
    return [
        f"input {s.batch_size} x {'x'.join(map(str, s.input_size))}",
        f"total params {s.total_params:,} (trainable {s.trainable_params:,}, non-trainable "
        f"{s.total_params - s.trainable_params:,}; {s.weight_params:,} without biases)",
        f"total MACs {s.total_macs:,} per image ({s.total_macs / 1e9:.3f} G; FLOPs = 2 x MACs = "
        f"{s.total_flops / 1e9:.3f} G)",
        f"parameter memory {_mib(s.param_bytes)}; activation memory at batch {s.batch_size}: forward "
        f"{_mib(s.activation_bytes['forward'])}, forward+backward {_mib(s.activation_bytes['forward_backward'])}",
    ]


def render_rows(header: list[str], rows: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return text.getvalue()
    if fmt == "markdown":
        numeric = [i for i, _ in enumerate(header) if all(r[i][:1].isdigit() or r[i][:1] in "-+" for r in rows)]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|",
        ]
        lines += ["| " + " | ".join(c.strip() or " " for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    right = [i for i in range(len(header)) if i > 2]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def render(s: Summary, fmt: str = "table", depth: int | None = None) -> str:
    if fmt == "json":
        return json.dumps(s.to_dict(), indent=2) + "\n"
    rows = [layer_cells(r) for r in s.layers if depth is None or r.depth <= depth]
    text = render_rows(list(COLUMNS), rows, fmt)
    if fmt == "csv":
        return text
    totals = totals_lines(s)
    if fmt == "markdown":
        return text + "\n" + "\n".join(f"- {t}" for t in totals) + "\n"
    return text + "\n" + "\n".join(totals) + "\n"


# ------------------------------------------------------------------------------------------------ sharing
# ``--sharing``: what parameter sharing saves. Each conv layer's parameters and multiplications per image
# as the four connectivities of the Deep Learning book's section 9.5 would need them, between the same
# input and output shapes. Biases are counted where the layer has one, in every column alike.
TILE = 2  # the tiled column's kernel sets per side, clipped to the output plane


@dataclass
class Sharing:
    """One conv layer's cost as a convolution, a tiled convolution, a locally connected and a fully
    connected layer: parameters, and multiplications per image (the first three's are the same)."""

    layer: str
    kernel: str
    input_shape: list[int]  # C, H, W, unpadded
    output_shape: list[int]  # O, Ho, Wo
    conv: int
    tiled: int
    local: int
    fc: int
    mults: int  # of the convolution, the tiled and the locally connected layer alike
    fc_mults: int


def sharing_of(name: str, module: nn.Module, input_shape: list[int], output_shape: list[int]) -> Sharing:
    """The four costs of ``module`` (a convolution-shaped layer) between C x H x W and O x Ho x Wo.

    One kernel has K = C / groups x kH x kW weights. A convolution keeps O of them, a tiled convolution
    O per tile position (a set that owns no output position does not exist), a locally connected layer
    O per output position, with a bias per position as LocallyConnected2d's default; a fully connected
    layer connects every input to every output."""
    (c, h, w), (o, ho, wo) = input_shape, output_shape
    kh, kw = pair(module.kernel_size)
    k, bias = module.in_channels // module.groups * kh * kw, int(module.bias is not None)
    positions, inputs = ho * wo, c * h * w
    return Sharing(
        name,
        _describe(module),
        [c, h, w],
        [o, ho, wo],
        conv=o * k + bias * o,
        tiled=min(TILE, ho) * min(TILE, wo) * o * k + bias * o,
        local=positions * o * k + bias * positions * o,
        fc=inputs * o * positions + bias * o * positions,
        mults=positions * o * k,
        fc_mults=inputs * o * positions,
    )


def sharing_rows(model: nn.Module, input_size, name: str | None = None) -> list[Sharing]:
    """Every conv layer of ``model`` (``CONVOLUTIONS``) in the order they first run, on the meta device."""
    s = summarize(model, input_size, name=name)
    rows = []
    for layer in s.layers:
        module = model.get_submodule(layer.name) if layer.depth else model
        if isinstance(module, CONVOLUTIONS):
            rows.append(sharing_of(layer.name, module, layer.input_shape[1:], layer.output_shape[1:]))
    return rows


SHARING_COSTS = ("conv", "tiled", "local", "fc", "mults", "fc_mults")


def sharing_total(rows: list[Sharing]) -> Sharing:
    """The table's last row: every cost summed over the layers."""
    sums = {key: sum(getattr(r, key) for r in rows) for key in SHARING_COSTS}
    return Sharing("total", "", [], [], **sums)


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:,.1f}x" if whole else "-"


def sharing_cells(r: Sharing) -> list[str]:
    shapes = f"{_cell(r.input_shape)} -> {_cell(r.output_shape)}" if r.input_shape else ""
    params = [f"{n:,}" for n in (r.conv, r.tiled, r.local, r.fc)]
    ratios = [_ratio(r.local, r.conv), _ratio(r.fc, r.conv)]
    return [r.layer, r.kernel, shapes, *params, *ratios, f"{r.mults:,}", f"{r.fc_mults:,}"]


SHARING_COLUMNS = (
    "layer",
    "kernel",
    "input -> output",
    "conv",
    f"tiled {TILE}x{TILE}",
    "local",
    "FC",
    "local/conv",
    "FC/conv",
    "mults",
    "FC mults",
)


def render_sharing(rows: list[Sharing], fmt: str = "table") -> str:
    """The ``--sharing`` table: parameters in the four connectivities, their ratios to the convolution's,
    then multiplications per image; a last row of totals."""
    total = sharing_total(rows)
    if fmt == "json":
        return json.dumps({"layers": [asdict(r) for r in rows], "total": asdict(total)}, indent=2) + "\n"
    text = render_rows(list(SHARING_COLUMNS), [sharing_cells(r) for r in [*rows, total]], fmt)
    if fmt == "csv":
        return text
    notes = [
        f"conv, tiled {TILE}x{TILE}, local, FC: parameters as a convolution, a tiled convolution ({TILE}x{TILE} kernel "
        "sets), a locally connected layer (a kernel per output position) and a fully connected layer",
        "mults: multiplications per image, the same for conv, tiled and local; FC mults: the fully connected "
        f"layer's, {_ratio(total.fc_mults, total.mults)} as many",
    ]
    if fmt == "markdown":
        return text + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text + "\n" + "\n".join(notes) + "\n"


# -------------------------------------------------------------------------------------- published figures
# The figures, notes and natural input sizes live beside each model's builder (``@register_model``,
# see cnnzoo/models/registry.py's ModelInfo).


def natural_input(name: str, model: nn.Module) -> list[int]:
    size = model_info(name).input_size
    return [model.in_channels, size, size]


def build_on_meta(name: str, device: str = "meta", **kwargs) -> nn.Module:
    """The model, on the meta device (shapes only) unless ``device`` says otherwise."""
    try:
        with torch.device(device):
            return create_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def _difference(ours: float, published: float | None, digits: int = 0) -> str:
    if published is None:
        return "-"
    diff = ours - published
    return f"{diff:+,.{digits}f} ({100 * diff / published:+.1f}%)" if diff else "0"


def all_models_rows() -> tuple[list[str], list[list[str]]]:
    """One row per registered model: our parameters and MACs next to the published figures."""
    header = [
        "model",
        "input",
        "params",
        "MACs",
        "torchvision params",
        "diff",
        "torchvision GFLOPS",
        "GFLOPS diff",
        "paper params",
        "paper diff",
        "paper MACs (G)",
        "MACs diff",
        "note",
    ]
    rows = []
    for name in list_models():
        info = model_info(name)
        model = build_on_meta(name, **info.published_kwargs)
        size = natural_input(name, model)
        s = summarize(model, size, name=name)
        pub = info.published
        tv_params, tv_g = pub.get("torchvision", (None, None))
        paper_params, paper_g = pub.get("paper", (None, None))
        g = s.total_macs / 1e9
        rows.append(
            [
                name,
                "x".join(map(str, size)),
                f"{s.total_params:,}",
                f"{s.total_macs:,}",
                _cell(tv_params),
                _difference(s.total_params, tv_params),
                _cell(tv_g),
                _difference(round(g, 2), tv_g, 2) if tv_g else "-",
                _cell(paper_params),
                _difference(s.total_params, paper_params),
                _cell(paper_g),
                _difference(round(g, 1), paper_g, 1) if paper_g else "-",
                info.note,
            ]
        )
    return header, rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cnnzoo.report",
        description="Per-layer shapes, parameters, MACs and receptive fields of a zoo model.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("name", nargs="?", help="a model name (python -m cnnzoo.report --list shows them)")
    what.add_argument("--all", action="store_true", help="every model against the published figures")
    what.add_argument("--config", help="the model and input size a training config uses")
    what.add_argument("--list", action="store_true", help="list the model names")
    p.add_argument(
        "--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="input size (default: the model's natural one)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch size for the activation memory (default 1)")
    p.add_argument("--depth", type=int, help="show layers down to this nesting depth (0: the model only)")
    p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    p.add_argument(
        "--algorithms",
        action="store_true",
        help="per convolution: each algorithm's multiplications and error against float64 (runs the model)",
    )
    p.add_argument("--time", action="store_true", help="with --algorithms: each one's forward+backward time")
    p.add_argument(
        "--sharing",
        action="store_true",
        help="per conv layer: parameters and multiplications as a convolution, a tiled, a locally connected "
        "and a fully connected layer",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model keyword argument, e.g. --set num_classes=10 (repeatable; values are YAML)",
    )
    return p.parse_args(argv)


def model_from_config(path: str, device: str = "meta") -> tuple[str, nn.Module, list[int]]:
    """The model a training config trains (on the meta device unless ``device`` says otherwise, no
    weights read) and its input size."""
    # a config brings in the dataset table and with it torchvision (a second's import), which only --config
    # and --set need: the report of a model, and cnnzoo.viz (which imports this module), go without it
    from .build import build_model
    from .config import load_config

    cfg = load_config(path)
    with torch.device(device):
        model, size = build_model(cfg, pretrained=False)
    return cfg.model.name, model, [model.in_channels, size, size]


def algorithms_report(model: nn.Module, size: list[int], args: argparse.Namespace) -> str:
    """``--algorithms``: :mod:`cnnzoo.report_algorithms`'s table for a model built on the CPU."""
    # the algorithms' table runs the ops (cnnzoo.ops and its kernels), which the shape report on the meta
    # device, and cnnzoo.viz through it, do without
    from . import report_algorithms

    header, table = report_algorithms.rows(model, size, args.batch_size, args.time)
    if args.format == "json":
        return json.dumps([dict(zip(header, r)) for r in table], indent=2) + "\n"
    return render_rows(header, table, args.format)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.batch_size < 1 or (args.depth is not None and args.depth < 0):
            raise UserError("--batch-size must be at least 1 and --depth at least 0")
        if args.time and not args.algorithms:
            raise UserError("--time goes with --algorithms")
        if args.algorithms and args.sharing:
            raise UserError("--algorithms and --sharing are two reports: give one")
        flag = "--algorithms" if args.algorithms else "--sharing" if args.sharing else None
        if flag and (args.all or args.config is None and args.name is None):
            raise UserError(f"{flag} reports one model: give its name or --config")
        if args.list:
            print("\n".join(list_models()))
            return 0
        if args.all:
            header, rows = all_models_rows()
            if args.format == "json":
                print(json.dumps([dict(zip(header, r)) for r in rows], indent=2))
            else:
                print(render_rows(header, rows, args.format), end="")
            return 0
        # --algorithms runs the model: built on the CPU, with its own initialisation (seeded)
        device = "cpu" if args.algorithms else "meta"
        torch.manual_seed(0)
        if args.config:
            name, model, size = model_from_config(args.config, device)
        else:
            from .config import parse_override  # only --set needs the config (see model_from_config)

            kwargs = {}
            for text in args.overrides:
                path, value = parse_override(text)
                kwargs[".".join(path)] = value
            name = args.name
            model = build_on_meta(name, device, **kwargs)
            size = natural_input(name, model)
        if args.input_size:
            size = args.input_size
        if args.algorithms:
            print(algorithms_report(model, size, args), end="")
            return 0
        if args.sharing:
            print(render_sharing(sharing_rows(model, size, name), args.format), end="")
            return 0
        print(render(summarize(model, size, args.batch_size, name=name), args.format, args.depth), end="")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
