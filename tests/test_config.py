"""The training config: schema, overrides, and errors that name the key and suggest the valid one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnzoo.config import Config, ConfigError, build_config, dump, load_config, read_yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_every_issue_config_is_shipped():
    names = {p.stem for p in CONFIGS}
    assert names == {
        "lenet5_digits",
        "lenet5_mnist",
        "alexnet_cifar10",
        "vgg16_cifar10",
        "resnet20_cifar10",
        "resnet18_cifar10",
        "googlenet_cifar10",
        "resnet50_imagefolder",
        "resnet18_finetune_imagefolder",  # issue 15: fine-tuning from ImageNet weights
        "lenet5_tiled_digits",  # issue 24: the parameter-sharing experiment
        "lenet5_local_digits",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert cfg.output_dir == f"runs/{path.stem}"
    again = build_config(yaml.safe_load(dump(cfg)))
    assert again == cfg


def test_defaults_and_overrides():
    cfg = build_config(
        {},
        [
            "train.epochs=3",
            "optim.lr=1e-2",
            "model.kwargs.dropout=0.3",
            "data.image_size=null",
            "optim.name=adamw",
            "train.grad_clip=1",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.01 and cfg.optim.name == "adamw"
    assert cfg.model.kwargs == {"dropout": 0.3} and cfg.data.image_size is None
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)  # ints are numbers too
    assert build_config({}) == Config()


def test_overrides_apply_in_order_and_do_not_touch_the_input():
    raw = {"train": {"epochs": 5}}
    cfg = build_config(raw, ["train.epochs=2", "train.epochs=7"])
    assert cfg.train.epochs == 7 and raw == {"train": {"epochs": 5}}


@pytest.mark.parametrize(
    "raw,overrides,message",
    [
        ({"train": {"epoch": 3}}, [], "unknown key train.epoch; did you mean 'train.epochs'?"),
        ({"trian": {}}, [], "unknown key trian; did you mean 'train'?"),
        ({}, ["optim.momentun=0.5"], "unknown key optim.momentun; did you mean 'optim.momentum'?"),
        ({}, ["train.epochs=three"], "train.epochs must be an int, got 'three' (str)"),
        ({}, ["train.epochs=2.5"], "train.epochs must be an int, got 2.5 (float)"),
        ({}, ["train.epochs=true"], "train.epochs must be an int, got True (bool)"),
        ({}, ["data.augment=1"], "data.augment must be true or false, got 1 (int)"),
        ({}, ["optim.lr=0"], "optim.lr must be > 0, got 0.0"),
        ({}, ["optim.lr=.inf"], "optim.lr must be a number, got inf (float) (must be finite)"),
        ({}, ["data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
        ({}, ["data.val_fraction=1"], "data.val_fraction must be < 1, got 1.0"),
        (
            {},
            ["optim.name=sgdd"],
            "optim.name must be one of 'sgd', 'adam', 'adamw', got 'sgdd' (str); did you mean 'sgd'?",
        ),
        ({}, ["train.device=gpu"], "train.device must be one of 'auto', 'cpu', 'cuda', got 'gpu'"),
        (
            {},
            ["data.name=cifar"],
            "data.name must be one of 'digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', "
            "'imagefolder', 'fake', got 'cifar' (str); did you mean 'cifar10'?",
        ),
        ({}, ["model.name=lenet"], "model.name: unknown model 'lenet' (did you mean 'lenet5'?); choices: alexnet, "),
        ({}, ["model.kwargs.num_classes=5"], "model.kwargs.num_classes is not allowed"),
        ({}, ["model.kwargs=[1]"], "model.kwargs must be a mapping"),
        ({"train": [1, 2]}, [], "train must be a mapping of keys to values"),
        (
            {},
            ["sched.name=cosine", "sched.warmup_epochs=10", "train.epochs=10"],
            "sched.warmup_epochs (10.0) must be less",
        ),
        ({}, ["train.amp=fp16", "train.device=cpu"], "train.amp=fp16 needs CUDA"),
        ({}, ["train.epochs"], "--set expects key=value"),
        ({}, ["train..epochs=1"], "--set expects key=value"),
        ({"train": {"epochs": 3}}, ["train.epochs.x=1"], "train.epochs is not a section"),
        ({}, ["train.epochs.x=1"], "train.epochs must be an int, got {'x': 1} (dict)"),
        ({}, ["optim.lr=fast"], "optim.lr must be a number, got 'fast' (str)"),
        ({}, ["train.epochs=[1"], "cannot read '[1' as a YAML value"),
        ({}, ["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov needs optim.name=sgd and optim.momentum > 0"),
    ],
)
def test_bad_configs_name_the_key(raw, overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config(raw, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml' not found"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\nmodel: {}\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: .* at line \d+, column \d+"):
        read_yaml(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, got list"):
        read_yaml(bad)
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_yaml(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).output_dir == "runs/empty"
