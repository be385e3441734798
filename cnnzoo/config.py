"""Training configuration: a nested YAML file, overridden with ``--set key=value``, checked key by key.

The schema is the dataclasses below: every section is one dataclass, every key one field with its
type, default and allowed range or values. Unknown keys and wrong types are a :class:`ConfigError`
that names the key and suggests the closest valid one. Building what a config describes is
:mod:`cnnzoo.build`'s.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .data import DATASETS
from .errors import UserError, closest
from .models import list_models
from .ops.algorithms import ALGORITHMS


class ConfigError(UserError):
    """A config file, a ``--set`` override or a value that does not fit the schema."""


def _rule(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple | None = None,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A field with an allowed range ``[low, high]`` (``open_*`` excludes that end), or allowed values
    ``choices`` kept elsewhere (checked as the ``Literal`` of them)."""
    meta = {"low": low, "high": high, "open_low": open_low, "open_high": open_high, "choices": choices}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name: str = "lenet5"  # any name of cnnzoo.list_models()
    backend: Literal["custom", "torch"] = "custom"
    kwargs: dict = _rule(factory=dict)  # passed to create_model (num_classes/in_channels come from the data)
    # pretrained weights to start from: a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...) or the
    # path of a state_dict or cnnzoo checkpoint (see cnnzoo/models/weights.py); not read when resuming
    weights: str | None = None
    # how the convolutions compute (cnnzoo/ops/algorithms.py): each layer takes it where it applies,
    # 'auto' elsewhere; summary.json lists what every layer ran
    conv_algorithm: str = _rule("auto", choices=ALGORITHMS)


@dataclass
class DataConfig:
    name: str = _rule("digits", choices=tuple(DATASETS))  # a key of cnnzoo.data.DATASETS
    root: str = "data"
    download: bool = False
    batch_size: int = _rule(64, low=1, high=2**16)  # per process
    num_workers: int = _rule(0, low=0, high=128)
    image_size: int | None = _rule(None, low=1, high=4096)  # None: the data's own size, raised to the model's minimum
    augment: bool = True
    val_fraction: float = _rule(0.2, low=0, high=1, open_low=True, open_high=True)  # digits: held-out share
    limit_train: int | None = _rule(None, low=1)  # use only this many training images
    limit_val: int | None = _rule(None, low=1)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = _rule(0.1, low=0, open_low=True)
    momentum: float = _rule(0.9, low=0, high=1, open_high=True)  # sgd only
    nesterov: bool = False
    weight_decay: float = _rule(0.0, low=0)


@dataclass
class SchedConfig:
    name: Literal["none", "step", "cosine", "onecycle"] = "none"
    warmup_epochs: float = _rule(0.0, low=0)  # linear warm-up from lr/100; onecycle: its rising phase
    step_size: int = _rule(30, low=1)  # step: epochs between decays
    gamma: float = _rule(0.1, low=0, high=1, open_low=True)  # step: decay factor
    min_lr: float = _rule(0.0, low=0)  # cosine: the final lr


@dataclass
class TrainConfig:
    epochs: int = _rule(10, low=1, high=10**6)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    seed: int = _rule(0, low=0, high=2**32 - 1)  # numpy takes 32-bit seeds
    grad_clip: float | None = _rule(None, low=0, open_low=True)  # max gradient norm
    label_smoothing: float = _rule(0.0, low=0, high=1, open_high=True)
    log_every: int = _rule(10, low=1)  # steps between progress-bar updates


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = None  # None: runs/<config file name>

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _closest(name: str, choices) -> str:
    match = closest(name, choices)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(choices)}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return {
        int: "an int",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
        type(None): "null",
    }[tp]


def _check_value(key: str, value: Any, tp: Any, meta: typing.Mapping) -> Any:
    """``value`` converted to ``tp`` (ints are numbers too), or a ConfigError naming ``key``."""
    if meta.get("choices"):
        tp = Literal[meta["choices"]]

    def fail(extra: str = "") -> typing.NoReturn:
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}")

    if isinstance(tp, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool):
            match = closest(value, choices)
            fail(f"; did you mean {match[0]!r}?" if match else "")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            fail()
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        fail()
    if tp is float and not math.isfinite(value):
        fail(" (must be finite)")
    if tp is dict and not all(isinstance(k, str) for k in value):
        fail(" (keys must be strings)")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta["open_low"] and value == low)):
        raise ConfigError(f"{key} must be {'>' if meta['open_low'] else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (meta["open_high"] and value == high)):
        raise ConfigError(f"{key} must be {'<' if meta['open_high'] else '<='} {high}, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from the mapping ``raw``, checking every key and value."""
    where = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {raw!r} ({type(raw).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown key {prefix}{key!s}{_closest(key, [prefix + k for k in fields])}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], f"{prefix}{name}.")
        else:
            values[name] = _check_value(prefix + name, raw[name], tp, f.metadata)
    return cls(**values)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.01'`` as ``(['optim', 'lr'], 0.01)``; the value is read as a YAML scalar."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set expects key=value with a dotted key (for example train.epochs=3), got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot read {value!r} as a YAML value ({_yaml_problem(e)})") from None
    return path, parsed


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def build_config(raw: dict, overrides: list[str] = ()) -> Config:
    """The checked config from a raw mapping and ``--set`` overrides (applied in order)."""
    raw = _deep_copy(raw)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    cfg = _build(Config, raw, "")
    _check_consistency(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    cfg = build_config(read_yaml(path), overrides)
    if cfg.output_dir is None:
        cfg.output_dir = str(Path("runs") / Path(path).stem)
    return cfg


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def _check_consistency(cfg: Config) -> None:
    """Rules that involve more than one key."""
    if cfg.model.name not in list_models():
        match = closest(cfg.model.name, list_models())
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}{hint}; choices: {', '.join(list_models())}")
    for key in ("num_classes", "in_channels", "backend", "weights"):
        if key in cfg.model.kwargs:
            where = {"backend": "model.backend", "weights": "model.weights"}.get(key, "the dataset")
            raise ConfigError(f"model.kwargs.{key} is not allowed: it is set from {where}")
    if cfg.model.conv_algorithm != "auto" and cfg.model.backend != "custom":
        raise ConfigError(
            f"model.conv_algorithm={cfg.model.conv_algorithm!r} needs model.backend=custom "
            "(torch's convolutions choose their own algorithms)"
        )
    if cfg.sched.warmup_epochs and cfg.sched.warmup_epochs >= cfg.train.epochs:
        raise ConfigError(
            f"sched.warmup_epochs ({cfg.sched.warmup_epochs}) must be less than train.epochs ({cfg.train.epochs})"
        )
    if cfg.optim.nesterov and (cfg.optim.name != "sgd" or cfg.optim.momentum == 0):
        raise ConfigError("optim.nesterov needs optim.name=sgd and optim.momentum > 0")
    if cfg.train.device == "cpu":
        check_amp(cfg.train.amp, "cpu")


def check_amp(amp: str, device_type: str) -> None:
    """fp16 autocast (with its gradient scaler) needs CUDA: the config's device, or the one a run resolved."""
    if amp == "fp16" and device_type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16")


def flatten(raw: dict, prefix: str = "") -> dict[str, Any]:
    """``{'train': {'epochs': 3}}`` as ``{'train.epochs': 3}`` (model.kwargs stays one value)."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key != "kwargs":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
