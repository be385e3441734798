"""python -m cnnzoo.train: outputs, exact resume, every shipped config, errors, and DDP with 2 processes."""

from __future__ import annotations

import csv
import fcntl
import functools
import importlib.util
import json
import math
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch
import yaml

import cnnzoo
from cnnzoo import checkpoint
from cnnzoo.config import build_config
from cnnzoo.optim import lr_factor
from cnnzoo.train import main

from .helpers import Payload, torchvision_weights_file

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "lenet5_digits.yaml")
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SMALL = ["--set", "data.limit_train=160", "--set", "data.limit_val=64", "--set", "sched.warmup_epochs=0", "--quiet"]
HEAVY = {"alexnet_cifar10", "vgg16_cifar10", "resnet50_imagefolder"}


def train(out, *args, config=DIGITS) -> int:
    return main(["--config", config, "--output-dir", str(out), *SMALL, *args])


def read_metrics(out) -> list[dict]:
    with open(Path(out) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_run_leaves_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--set", "train.epochs=2") == 0
    stdout = capsys.readouterr().out
    assert [line.split()[1] for line in stdout.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]
    curves = {"curves.png"} if importlib.util.find_spec("matplotlib") else set()  # issue 16: with the viz extra
    outputs = {"config.yaml", "metrics.csv", "last.pt", "best.pt", "summary.json"}
    assert {p.name for p in out.iterdir()} == outputs | curves
    rows = read_metrics(out)
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "seconds",
        "images_per_second",
    ]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["params"] == 61_706 and summary["device"] == "cpu"
    assert summary["val_acc"] == float(rows[-1]["val_acc"]) and summary["val_loss"] == float(rows[-1]["val_loss"])
    assert summary["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert 0 < summary["train_seconds"] and 0 <= summary["val_acc"] <= 1
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["model"]["name"] == "lenet5"
    assert build_config(state["config"]) == build_config(yaml.safe_load((out / "config.yaml").read_text()))
    assert set(state["model"]) == set(cnnzoo.create_model("lenet5").state_dict())


def test_the_default_config_learns(tmp_path):
    """The README's main job, shortened: a few epochs on all the digits already reach 90%."""
    out = tmp_path / "run"
    assert main(["--config", DIGITS, "--output-dir", str(out), "--quiet", "--set", "train.epochs=4"]) == 0
    assert json.loads((out / "summary.json").read_text())["val_acc"] > 0.9


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tmp_path, workers):
    options = [
        "--set",
        "sched.name=step",
        "--set",
        "sched.step_size=1",
        "--set",
        "sched.gamma=0.5",
        "--set",
        f"data.num_workers={workers}",
        "--set",
        "model.kwargs.activation=relu",
    ]
    assert train(tmp_path / "whole", *options, "--set", "train.epochs=4") == 0
    assert train(tmp_path / "split", *options, "--set", "train.epochs=2") == 0
    assert train(tmp_path / "split", *options, "--set", "train.epochs=4", "--resume", "auto") == 0
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert a[key] == b[key], (key, a, b)  # bit for bit
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "split"))
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_keeps_the_schedule_in_epochs_when_the_batch_size_changes(tmp_path):
    options = ["--set", "sched.name=step", "--set", "sched.step_size=1", "--set", "sched.gamma=0.5"]
    assert train(tmp_path, *options, "--set", "train.epochs=2", "--set", "data.batch_size=32") == 0
    assert train(tmp_path, *options, "--set", "train.epochs=3", "--set", "data.batch_size=16", "--resume", "auto") == 0
    assert [float(r["lr"]) for r in read_metrics(tmp_path)] == pytest.approx([0.05, 0.025, 0.0125])


def test_resume_auto_prefers_last_pt(tmp_path):
    assert train(tmp_path, "--set", "train.epochs=1") == 0
    best = tmp_path / "best.pt"
    best.unlink()
    (tmp_path / "last.pt").rename(best)
    (tmp_path / "last.pt").write_bytes(best.read_bytes())
    os.utime(best, (2e9, 2e9))  # best.pt looks newer, as after a copy that did not keep the times
    assert checkpoint.newest(tmp_path) == tmp_path / "last.pt"


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path):
    assert train(tmp_path / "new", "--set", "train.epochs=1", "--resume", "auto") == 0
    assert torch.load(tmp_path / "new" / "last.pt", weights_only=True)["epoch"] == 1


def test_resume_applies_a_changed_learning_rate(tmp_path):
    assert train(tmp_path, "--set", "train.epochs=1") == 0
    assert (
        train(
            tmp_path,
            "--set",
            "train.epochs=2",
            "--set",
            "optim.lr=0.001",
            "--set",
            "sched.name=none",
            "--set",
            "sched.warmup_epochs=0",
            "--resume",
            "auto",
        )
        == 0
    )
    assert float(read_metrics(tmp_path)[-1]["lr"]) == pytest.approx(0.001)


def test_eval_only(tmp_path, capsys):
    assert train(tmp_path, "--set", "train.epochs=1") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert main(["--eval-only", "--resume", str(tmp_path / "last.pt"), *SMALL]) == 0  # the checkpoint's config
    out = capsys.readouterr().out
    assert f"val_acc {summary['val_acc']:.4f}" in out and f"val_loss {summary['val_loss']:.4f}" in out
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # evaluation writes nothing


def test_print_config(capsys):
    assert main(["--config", DIGITS, "--print-config", "--set", "train.epochs=3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["epochs"] == 3 and resolved["output_dir"] == "runs/lenet5_digits"
    assert resolved["optim"]["weight_decay"] == 0.0005


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in HEAVY else p for p in CONFIGS], ids=lambda p: p.stem
)
def test_every_shipped_config_starts(tmp_path, path, monkeypatch):
    model = yaml.safe_load(path.read_text())["model"]
    if model.get("weights"):  # torchvision's weights, offline: a file where torch.hub's cache keeps them
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        torchvision_weights_file(tmp_path / "torch", model["name"], model["weights"])
    code = main(
        [
            "--config",
            str(path),
            "--output-dir",
            str(tmp_path),
            "--quiet",
            "--set",
            "data.name=fake",
            "--set",
            "data.limit_train=8",
            "--set",
            "data.limit_val=4",
            "--set",
            "data.batch_size=4",
            "--set",
            "train.epochs=1",
            "--set",
            "sched.warmup_epochs=0",
            "--set",
            "data.num_workers=0",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs"] == 1 and math.isfinite(summary["val_loss"])


@pytest.mark.parametrize(
    "options",
    [
        ["--set", "model.backend=torch"],
        ["--set", "train.amp=bf16", "--set", "train.channels_last=true"],
        [
            "--set",
            "optim.name=adamw",
            "--set",
            "optim.lr=0.002",
            "--set",
            "optim.nesterov=false",
            "--set",
            "sched.name=onecycle",
            "--set",
            "train.grad_clip=1.0",
            "--set",
            "train.label_smoothing=0.1",
        ],
        [
            "--set",
            "optim.name=adam",
            "--set",
            "optim.lr=0.001",
            "--set",
            "optim.nesterov=false",
            "--set",
            "model.name=lenet5_1998",
            "--set",
            "data.augment=false",
            "--set",
            "data.image_size=34",
        ],
    ],
    ids=["torch-backend", "bf16-channels-last", "adamw-onecycle-clip-smoothing", "adam-lenet1998-34px"],
)
def test_training_options(tmp_path, options):
    assert train(tmp_path, "--set", "train.epochs=2", *options) == 0
    rows = read_metrics(tmp_path)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_channels_last_trains_channels_last_end_to_end(tmp_path, monkeypatch):
    """train.channels_last=true: every convolution and pooling output and every convolution weight
    gradient has the layout torch.nn's layers give it, channels_last wherever the layout is not
    ambiguous (LeNet's single input channel leaves C1's input and weights ambiguous, as in torch)."""
    cl = torch.channels_last
    layouts = {}

    def record_training_output(seen, module, inputs, output):
        # training passes only: the custom run also makes one eval pass without gradients, to record
        # which algorithm each convolution runs (summary.json)
        if torch.is_grad_enabled():
            seen["outputs"].append(output.is_contiguous(memory_format=cl))

    def recording_model(*args, **kwargs):
        model = cnnzoo.create_model(*args, **kwargs)
        seen = layouts.setdefault(kwargs["backend"], {"outputs": [], "grads": []})
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
                m.register_forward_hook(functools.partial(record_training_output, seen))
            if isinstance(m, torch.nn.Conv2d):
                m.weight.register_hook(lambda g: seen["grads"].append(g.is_contiguous(memory_format=cl)))
        return model

    monkeypatch.setattr("cnnzoo.build.create_model", recording_model)
    for backend in ("custom", "torch"):
        assert (
            train(
                tmp_path / backend,
                "--set",
                "train.epochs=1",
                "--set",
                "train.channels_last=true",
                "--set",
                "model.kwargs.pool=max",
                "--set",
                f"model.backend={backend}",
            )
            == 0
        )
    mine, torchs = layouts["custom"], layouts["torch"]
    assert mine == torchs
    assert len(mine["outputs"]) >= 20 and sum(mine["outputs"]) >= 3 * len(mine["outputs"]) // 5
    assert len(mine["grads"]) >= 15 and sum(mine["grads"]) >= 2 * len(mine["grads"]) // 3


def test_schedules():
    def factors(**sched):
        cfg = build_config({"optim": {"lr": 0.1}, "sched": sched, "train": {"epochs": 10}})
        f = lr_factor(cfg, steps_per_epoch=10)
        return [f(step) for step in range(101)]

    warm = factors(name="cosine", warmup_epochs=2, min_lr=0.001)
    assert warm[0] == pytest.approx(0.01) and warm[20] == pytest.approx(1.0) and warm[100] == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(warm[:20], warm[1:21])) and all(a >= b for a, b in zip(warm[20:], warm[21:]))
    step = factors(name="step", step_size=3, gamma=0.5)
    assert (step[29], step[30], step[60], step[99]) == (1.0, 0.5, 0.25, 0.125)
    cycle = factors(name="onecycle")
    assert cycle[0] == pytest.approx(1 / 25) and max(cycle) == cycle[30] == 1.0 and cycle[100] < 1e-4
    assert factors(name="none") == [1.0] * 101


def test_fresh_run_does_not_overwrite_a_previous_one(tmp_path, capsys):
    assert train(tmp_path, "--set", "train.epochs=1") == 0
    saved = (tmp_path / "last.pt").read_bytes()
    capsys.readouterr()
    assert train(tmp_path, "--set", "train.epochs=1") == 2
    assert "already holds checkpoints; continue that run with --resume auto" in error_of(capsys)
    assert (tmp_path / "last.pt").read_bytes() == saved


def test_resuming_into_another_runs_directory_is_refused(tmp_path, capsys):
    assert train(tmp_path / "a", "--set", "train.epochs=1") == 0
    assert train(tmp_path / "b", "--set", "train.epochs=1") == 0
    saved = (tmp_path / "b" / "last.pt").read_bytes()
    capsys.readouterr()
    assert train(tmp_path / "b", "--set", "train.epochs=2", "--resume", str(tmp_path / "a" / "last.pt")) == 2
    assert "holds the checkpoints of another run" in error_of(capsys)
    assert (tmp_path / "b" / "last.pt").read_bytes() == saved
    assert train(tmp_path / "c", "--set", "train.epochs=2", "--resume", str(tmp_path / "a" / "last.pt")) == 0
    assert [r["epoch"] for r in read_metrics(tmp_path / "c")] == ["1", "2"]


def test_checkpoint_of_another_model(tmp_path, capsys):
    assert train(tmp_path / "a", "--set", "train.epochs=1") == 0
    capsys.readouterr()
    code = train(tmp_path / "b", "--set", "model.name=resnet20", "--resume", str(tmp_path / "a" / "last.pt"))
    assert code == 2
    err = error_of(capsys)
    assert "('lenet5') does not fit the model: missing keys: conv1.weight" in err and "unexpected keys" in err
    code = train(tmp_path / "b", "--set", "model.kwargs.num_classes=3", "--resume", str(tmp_path / "a" / "last.pt"))
    assert code == 2 and "num_classes is not allowed" in error_of(capsys)


def test_hostile_and_broken_checkpoints_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": Payload(marker)}, evil)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    cases = [
        (evil, "refusing to load"),
        (garbage, "is not a readable checkpoint"),
        (plain, "is not a cnnzoo training checkpoint"),
        (tmp_path / "absent.pt", "not found"),
    ]
    for path, message in cases:
        assert main(["--eval-only", "--resume", str(path)]) == 2
        assert message in error_of(capsys)
    assert not marker.exists()


def test_loss_that_becomes_nan_stops_the_run(tmp_path, capsys):
    relu = ["--set", "model.kwargs.activation=relu"]
    assert train(tmp_path, "--set", "train.epochs=1", *relu) == 0
    saved = {name: (tmp_path / name).read_bytes() for name in ("last.pt", "config.yaml", "metrics.csv")}
    capsys.readouterr()
    code = train(
        tmp_path,
        "--set",
        "train.epochs=2",
        "--set",
        "optim.lr=1e30",
        "--set",
        "train.log_every=1",
        "--resume",
        "auto",
        *relu,
    )
    assert code == 2
    assert "the loss became nan or infinite at epoch 2, step" in error_of(capsys)
    assert {name: (tmp_path / name).read_bytes() for name in saved} == saved


def test_user_errors_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for split in ("train", "val"):  # an image folder with a file that is not an image
        (tmp_path / "images" / split / "cat").mkdir(parents=True)
        (tmp_path / "images" / split / "cat" / "0.png").write_bytes(b"not a png")
    cases = [
        (["--config", str(tmp_path / "none.yaml")], "config file"),
        ([], "--config is required"),
        (["--config", DIGITS, "--set", "model.name=resnet"], "unknown model 'resnet'"),
        (["--config", DIGITS, "--set", "train.epoch=1"], "did you mean 'train.epochs'"),
        (
            [
                "--config",
                DIGITS,
                "--output-dir",
                str(tmp_path / "o"),
                "--set",
                "data.name=imagefolder",
                "--set",
                f"data.root={tmp_path / 'images'}",
                "--set",
                "data.num_workers=1",
            ],
            "cannot read image",
        ),
        (["--config", DIGITS, "--output-dir", str(blocker / "sub")], "cannot be written"),
        (
            [
                "--config",
                DIGITS,
                "--output-dir",
                str(tmp_path / "o"),
                "--set",
                "data.name=cifar10",
                "--set",
                f"data.root={tmp_path}",
                "--set",
                "data.download=false",
            ],
            "cifar-10-batches-py",
        ),
        (
            ["--config", DIGITS, "--output-dir", str(tmp_path / "o"), "--set", "data.image_size=16"],
            "does not fit lenet5, which takes 32x32 to 35x35",
        ),
        (
            ["--config", DIGITS, "--output-dir", str(tmp_path / "o"), "--set", "model.kwargs.activation=gelu"],
            "activation must be one of",
        ),
        (
            ["--config", "configs/lenet5_tiled_digits.yaml", "--output-dir", str(tmp_path / "o")]
            + ["--set", "model.kwargs.tile_size=20"],
            "tile_size must be an int from 1 to 10 (C3's output is 10x10), got 20",
        ),
        (
            ["--config", "configs/lenet5_local_digits.yaml", "--output-dir", str(tmp_path / "o")]
            + ["--set", "data.image_size=34"],
            "does not fit lenet5, which takes 32x32 to 32x32",
        ),
        (["--config", DIGITS, "--eval-only"], "--eval-only needs --resume"),
        (["--config", DIGITS, "--eval-only", "--resume", "auto", "--output-dir", str(tmp_path / "e")], "no checkpoint"),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (
                ["--config", DIGITS, "--output-dir", str(tmp_path / "o"), "--set", "train.device=cuda"],
                "CUDA is not available",
            )
        )
    for args, message in cases:
        assert main(args) == 2, args
        assert message in error_of(capsys)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.pt"))


def test_a_model_that_cannot_take_the_images_is_a_user_error(tmp_path, capsys, monkeypatch):
    """The first forward pass (which finds each convolution's algorithm) turns a layer's ValueError about
    its input into one line and exit code 2, before any checkpoint is written."""

    def refuse(model, example, *args):
        raise ValueError("local_conv2d: weight of size [28, 28, 6, 1, 5, 5] has kernels for a 28 x 28 output plane")

    monkeypatch.setattr("cnnzoo.train.algorithms_in_use", refuse)
    assert main(["--config", DIGITS, "--output-dir", str(tmp_path / "o"), "--quiet"]) == 2
    error = error_of(capsys)
    assert "lenet5 cannot take digits's 32x32 images: local_conv2d: weight of size" in error
    assert not any((tmp_path / "o").glob("*.pt"))


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnnzoo.train", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: config file {str(tmp_path / 'missing.yaml')!r} not found"


def run_in_terminal(args: list[str]) -> str:
    """Run the command with a pseudo-terminal as stdout and stderr; return what it printed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160-column terminal
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_in_a_terminal(tmp_path):
    command = [
        sys.executable,
        "-m",
        "cnnzoo.train",
        "--config",
        DIGITS,
        "--set",
        "train.epochs=1",
        "--set",
        "data.limit_train=160",
        "--set",
        "data.limit_val=32",
        "--set",
        "train.log_every=1",
        "--set",
        "sched.warmup_epochs=0",
    ]
    shown = run_in_terminal(command + ["--output-dir", str(tmp_path / "a")])
    assert "epoch 1/1:" in shown and "img_s=" in shown and "lr=" in shown and "acc=" in shown
    quiet = run_in_terminal(command + ["--output-dir", str(tmp_path / "b"), "--quiet"])
    assert "img_s=" not in quiet and "epoch 1/1  train_loss" in quiet


def test_two_processes_with_gloo_end_with_identical_weights(tmp_path, capsys):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "tests" / "ddp_worker.py"),
            "--config",
            DIGITS,
            "--output-dir",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=2",
            "--set",
            "data.limit_train=192",
            "--set",
            "data.limit_val=51",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("epoch 2/2") == 1  # rank 0 alone logs
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and len(read_metrics(out)) == 2
    # the metrics summed over both processes' shares equal one process evaluating all 51 images
    assert main(["--eval-only", "--resume", str(out / "last.pt")]) == 0
    assert (
        f"val_loss {summary['val_loss']:.4f}  val_acc {summary['val_acc']:.4f}  (51 validation images"
        in capsys.readouterr().out
    )


def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_ends_as_if_uninterrupted(tmp_path):
    """torchrun --max-restarts 1 ... --resume auto: rank 1 dies (SIGKILL) in epoch 2; torchrun restarts
    both workers, which continue from the checkpoint of epoch 1 and end with the uninterrupted run's
    metrics."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT_STEP": "9"}  # 6 steps per epoch: epoch 2, step 3
    options = [
        "--config",
        DIGITS,
        "--quiet",
        "--resume",
        "auto",
        "--set",
        "train.epochs=3",
        "--set",
        "data.limit_train=192",
        "--set",
        "data.limit_val=51",
        "--set",
        "data.batch_size=16",
    ]
    runs = {}
    for name, restarts in (("plain", "0"), ("killed", "1")):
        worker = "ddp_worker.py" if name == "plain" else "restart_worker.py"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                f"--max-restarts={restarts}",
                str(ROOT / "tests" / worker),
                *options,
                "--output-dir",
                str(tmp_path / name),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        runs[name] = result
    assert "resuming from" in runs["killed"].stdout and "after epoch 1" in runs["killed"].stdout
    assert "resuming from" not in runs["plain"].stdout
    plain, killed = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "killed")
    assert [r["epoch"] for r in killed] == ["1", "2", "3"]
    for a, b in zip(plain, killed):
        assert {k: a[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")} == {
            k: b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
        }
