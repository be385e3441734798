"""Train a zoo model from a config: ``python -m cnnzoo.train --config configs/lenet5_digits.yaml``.

The path from config to checkpoint, as ``train()`` runs it:

1. ``setup_processes``: rank, device, the process group under ``torchrun`` (:mod:`cnnzoo.distributed`);
2. ``build_model`` (:mod:`cnnzoo.build`): the model for the dataset's classes and channels, and the
   input size, both known from the dataset table (:mod:`cnnzoo.data`) and the model's registration
   before any file is read;
3. ``check_output_dir``: a run never overwrites another run's checkpoints (checked before any download);
   then ``open_data`` reads (or, with ``data.download``, fetches) the dataset;
4. ``build_trainer``: the optimizer and schedule (:mod:`cnnzoo.optim`), mixed precision, the loss;
5. ``resume``: the model, optimizer and :class:`RunState` (epoch, step, history, best) from a checkpoint;
6. ``fit``: per epoch ``train_one_epoch``, ``evaluate``, then ``last.pt``/``best.pt`` and the metrics files.

Several processes run through ``torchrun --nproc_per_node=N -m cnnzoo.train ...`` with
DistributedDataParallel; rank 0 alone logs and writes files, and every metric is summed over the
processes. SIGINT/SIGTERM stop a run at the next optimizer step with its state saved.

Output directory: ``config.yaml``, ``metrics.csv``, ``last.pt``, ``best.pt`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint, viz
from .build import build_model
from .config import Config, ConfigError, build_config, dump, flatten, load_config
from .data import make_loaders, open_dataset
from .distributed import (
    Processes,
    all_finite,
    env_rank,
    gather_rng,
    max_over,
    on_main,
    reduce_sums,
    setup_processes,
    share_buffers,
    shutdown,
    together,
    wrap_model,
)
from .errors import Interrupted, UserError
from .models.common import count_parameters
from .nn import algorithms_in_use
from .ops import compiled
from .optim import build_optimizer, build_scheduler, load_optimizer_state

METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_second")


# --- the command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cnnzoo.train", description="Train a cnnzoo model from a YAML config.")
    p.add_argument("--config", help="YAML config file (optional with --resume PATH: the checkpoint's config)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=3 (repeatable; values are YAML)",
    )
    p.add_argument("--output-dir", help="where to write checkpoints and metrics (overrides output_dir)")
    p.add_argument(
        "--resume",
        metavar="PATH|auto",
        help="continue from a checkpoint; 'auto': the newest one in the output directory, if any",
    )
    p.add_argument("--eval-only", action="store_true", help="evaluate the --resume checkpoint and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch still)")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> tuple[Config, dict | None, str | None]:
    """The config (from --config or the checkpoint of --resume PATH, then --set and --output-dir), the
    checkpoint to resume from, if any, and its path (``--resume auto`` found in the output directory)."""
    resume_state, resume_path = None, args.resume
    if args.resume and args.resume != "auto":
        resume_state = checkpoint.load(args.resume)
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif resume_state is not None:
        cfg = build_config(resume_state["config"], args.overrides)
    else:
        raise ConfigError("--config is required (or --resume PATH, which reuses the checkpoint's config)")
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.eval_only and not args.resume:
        raise ConfigError("--eval-only needs --resume PATH (or auto) to name the checkpoint to evaluate")
    if args.resume == "auto" and not args.print_config:
        newest = checkpoint.newest(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
        if newest is not None:
            resume_state, resume_path = checkpoint.load(newest), str(newest)
        elif args.eval_only:
            raise UserError(f"--resume auto: no checkpoint in {cfg.output_dir!r} to evaluate")
    return cfg, resume_state, resume_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, resume_state, resume_path = resolve(args)
        if args.print_config:
            print(dump(cfg), end="")
            return 0
        train(cfg, resume_state, eval_only=args.eval_only, quiet=args.quiet, resume_path=resume_path)
    except UserError as e:
        if env_rank() == 0:  # under torchrun, together() gives rank 0 every message
            print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if env_rank() == 0:
            print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted; the checkpoints on disk are those of the last finished epoch or interruption", file=sys.stderr
        )
        return 128 + signal.SIGINT
    finally:
        shutdown()
    return 0


def one_line(error: UserError) -> str:
    """The message of ``error``; one raised in a DataLoader worker arrives wrapped in the worker's
    traceback, whose last line holds the original message."""
    text = str(error).strip()
    if "Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


# --- the run ------------------------------------------------------------------------------------


def train(
    cfg: Config,
    resume_state: dict | None = None,
    eval_only: bool = False,
    quiet: bool = False,
    resume_path: str | None = None,
) -> nn.Module:
    """Run the training (or evaluation) that ``cfg`` describes; returns the trained model."""
    out = Path(cfg.output_dir)
    procs = setup_processes(cfg)
    seed_everything(cfg.train.seed)  # the same initial weights in every process
    model, size = together(procs, lambda: build_model(cfg, pretrained=resume_state is None))
    if not eval_only:
        on_main(procs, lambda: check_output_dir(out, resume_path))
    source = open_data(cfg, procs)
    train_loader, val_loader = make_loaders(
        source, cfg.data, size, cfg.train.seed, procs.rank, procs.world, pin_memory=procs.device.type == "cuda"
    )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(procs.device, memory_format=memory_format)
    seed_everything((cfg.train.seed + procs.rank) % 2**32)  # but each process its own augmentation and dropout
    t = build_trainer(cfg, procs, model, len(train_loader), out)
    state = RunState()
    if resume_state is not None:
        state = resume(t, resume_state, resume_path, len(train_loader), eval_only)
    if eval_only:
        val_loss, val_acc, n = evaluate(t, val_loader)
        log(
            procs,
            f"{resume_path} (epoch {resume_state['epoch']}): val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  "
            f"({n} validation images, {procs.device.type})",
        )
        return model
    t.net = wrap_model(model, procs)
    ops = (
        cfg.model.backend
        if cfg.model.backend == "torch" or procs.device.type != "cpu"
        else f"custom, {'compiled' if compiled.library() else 'reference'}"
    )
    params = count_parameters(model)
    log(
        procs,
        f"{cfg.model.name} ({ops} ops, {params:,} parameters) on {source.name} "
        f"({len(source.train)} train / {len(source.val)} val images, {source.channels}x{size}x{size}), "
        f"{procs.device.type} x {procs.world}, output {out}",
    )
    about = {"model": cfg.model.name, "backend": cfg.model.backend, "dataset": source.name}
    if cfg.model.backend == "custom":  # what each convolution runs on a full batch, 'auto' resolved
        example = torch.zeros(1, source.channels, size, size, device=procs.device)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
        try:  # also the first run of the model: a layer that cannot take this input says so here
            about["conv_algorithms"] = algorithms_in_use(model, example, amp, cfg.data.batch_size)
        except ValueError as e:
            raise UserError(f"{cfg.model.name} cannot take {source.name}'s {size}x{size} images: {e}") from None
    shape = {"params": params, "device": str(procs.device), "processes": procs.world, "image_size": size}
    fit(
        t,
        state,
        train_loader,
        val_loader,
        show_bar=procs.is_main and not quiet and sys.stderr.isatty(),
        describe=(about, shape),
    )
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def open_data(cfg: Config, procs: Processes):
    """The dataset in every process; with ``data.download`` rank 0 fetches the files while the others
    wait, then they read what it fetched."""
    source = together(procs, lambda: open_dataset(cfg.data) if procs.is_main or not cfg.data.download else None)
    no_download = dataclasses.replace(cfg.data, download=False)
    return together(procs, lambda: source if source is not None else open_dataset(no_download))


def check_output_dir(path: Path, resume_path: str | None) -> None:
    """The output directory exists and is writable, and a run does not overwrite another run's checkpoints
    (it may replace those of the checkpoint it resumes from)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        checkpoint.write_text(probe, "")
        probe.unlink()
    except (OSError, UserError) as e:
        raise UserError(
            f"output directory {str(path)!r} cannot be written: {getattr(e, 'strerror', None) or e}"
        ) from None
    for stale in [*path.glob(".*.tmp"), *path.glob(".write-test-*")]:  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    if not any(path.glob("*.pt")):
        return
    if resume_path is None:
        raise UserError(
            f"output directory {str(path)!r} already holds checkpoints; continue that run with "
            f"--resume auto, or choose another directory with --output-dir"
        )
    if Path(resume_path).resolve().parent != path.resolve():
        raise UserError(
            f"output directory {str(path)!r} holds the checkpoints of another run than "
            f"{resume_path!r}; choose an empty directory with --output-dir"
        )


@dataclass
class Trainer:
    """What a run trains with: the model (``net``: the same, in DistributedDataParallel under torchrun;
    the loss of its output is the model's own ``loss_and_logits``, reached on ``model``, never through
    the wrapper), its optimizer, schedule, gradient scaler and loss, and where it writes."""

    cfg: Config
    procs: Processes
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    amp_dtype: torch.dtype | None
    out: Path
    net: nn.Module | None = None

    def autocast(self):
        return torch.autocast(self.procs.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the run's device, in its memory format."""
        x, y = x.to(self.procs.device, non_blocking=True), y.to(self.procs.device, non_blocking=True)
        return (x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x), y


def build_trainer(cfg: Config, procs: Processes, model: nn.Module, steps_per_epoch: int, out: Path) -> Trainer:
    optimizer = build_optimizer(cfg, model)
    return Trainer(
        cfg,
        procs,
        model,
        optimizer,
        build_scheduler(cfg, optimizer, steps_per_epoch),
        torch.amp.GradScaler(procs.device.type, enabled=cfg.train.amp == "fp16"),
        nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing),
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp),
        out,
    )


@dataclass
class RunState:
    """Where a run stands: its finished epochs, their metrics and the best validation accuracy; for a
    run stopped mid-epoch, the optimizer steps done in the next epoch, that epoch's metric sums so far
    ``(loss * n, correct, n, seconds)`` and the generator states to continue it with."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -1.0
    step: int = 0
    partial: list[float] = field(default_factory=list)
    rng: list[dict] | None = None

    def to_checkpoint(self, t: Trainer) -> dict:
        """The checkpoint of the run as it stands (every process gathers its generator states)."""
        position = (
            {"step": self.step, "batches": [t.cfg.data.batch_size, t.procs.world], "partial": self.partial}
            if self.step
            else {}
        )
        return {
            "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "rng": gather_rng(t.procs),
            "config": t.cfg.to_dict(),
            **position,
        }

    @classmethod
    def from_checkpoint(cls, state: dict, cfg: Config, procs: Processes, steps_per_epoch: int) -> RunState:
        epoch, history, best = int(state["epoch"]), list(state["history"]), float(state["best_val_acc"])
        step, partial = resume_point(state, cfg, procs, steps_per_epoch)
        return cls(epoch, history, best, step, partial, state["rng"])

    def record(self, row: dict) -> bool:
        """Add a finished epoch's metrics; whether its validation accuracy is the best so far."""
        self.history.append(row)
        self.epoch, self.step, self.partial = row["epoch"], 0, []
        is_best = row["val_acc"] > self.best_val_acc
        self.best_val_acc = max(self.best_val_acc, row["val_acc"])
        return is_best


def resume(t: Trainer, saved: dict, path: str | None, steps_per_epoch: int, eval_only: bool) -> RunState:
    """Load the checkpoint ``saved`` into the model and, unless only evaluating, the optimizer,
    schedule, scaler and generators; the run's state at the checkpoint."""
    cfg, procs = t.cfg, t.procs
    what = f"checkpoint {path!r} ({saved['config'].get('model', {}).get('name')!r})"
    checkpoint.check_model_keys(t.model.state_dict(), saved["model"], what)
    t.model.load_state_dict(saved["model"])
    if eval_only:
        return RunState()
    saved_optim = saved["config"].get("optim", {}).get("name")
    if saved_optim != cfg.optim.name:
        raise checkpoint.CheckpointError(
            f"{what} was trained with optim.name={saved_optim!r}, the config says {cfg.optim.name!r}"
        )
    state = RunState.from_checkpoint(saved, cfg, procs, steps_per_epoch)
    try:
        load_optimizer_state(t.optimizer, t.scheduler, saved, state.epoch * steps_per_epoch + state.step)
        if saved["scaler"] and t.scaler.is_enabled():
            t.scaler.load_state_dict(saved["scaler"])
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{what}: optimizer state does not fit: {e}") from None
    if not state.step:  # mid-epoch, after the epoch's loader has drawn its seed (train_one_epoch)
        restore_rng(state.rng, procs)
    changes = config_changes(saved["config"], cfg)
    where = f"epoch {state.epoch + 1}, step {state.step}" if state.step else f"after epoch {state.epoch}"
    log(procs, f"resuming from {path} {where}" + (f"; config changes: {', '.join(changes)}" if changes else ""))
    return state


def resume_point(state: dict, cfg: Config, procs: Processes, steps_per_epoch: int) -> tuple[int, list[float]]:
    """Where in its unfinished epoch a checkpoint saved by an interrupted run stopped: the number of
    optimizer steps done and the epoch's metric sums so far ``(loss * n, correct, n, seconds)``; (0, [])
    for a checkpoint saved at the end of an epoch. A changed batch size or number of processes changes
    the epoch's batches, so that epoch then starts again from its beginning."""
    step = state.get("step", 0)
    if not step:
        return 0, []
    partial = state.get("partial")
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or not 0 < step < steps_per_epoch
        or not isinstance(partial, list)
        or len(partial) != 4
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in partial)
    ):
        raise checkpoint.CheckpointError(
            f"the checkpoint's position in its epoch (step={step!r}, "
            f"partial={partial!r}) is not valid for {steps_per_epoch} steps per epoch"
        )
    if state.get("batches") != [cfg.data.batch_size, procs.world]:
        log(
            procs,
            "note: the batch size or the number of processes changed since the run was interrupted, "
            f"so epoch {state['epoch'] + 1} starts again from its first batch",
        )
        return 0, []
    return step, [float(v) for v in partial]


def restore_rng(states: list[dict], procs: Processes) -> None:
    if not checkpoint.set_rng_state(states, procs.rank, procs.world):
        log(
            procs,
            f"note: the checkpoint was written by {len(states)} processes and this run has "
            f"{procs.world}, so its random augmentation does not repeat the original's",
        )


def config_changes(saved: dict, cfg: Config) -> list[str]:
    old, new = flatten(saved), flatten(cfg.to_dict())
    return [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k] and k != "output_dir"]


# --- the loop -----------------------------------------------------------------------------------


def fit(t: Trainer, state: RunState, train_loader, val_loader, show_bar: bool, describe: tuple[dict, dict]) -> None:
    """Train from ``state`` to the config's last epoch: per epoch, a pass over the training data, an
    evaluation, the checkpoints and the metrics files."""
    cfg, procs, start = t.cfg, t.procs, state.epoch
    with StopSignals() as stop:
        for epoch in range(start, cfg.train.epochs):
            (loss_sum, correct, n), lr, started, train_seconds = train_one_epoch(
                t, train_loader, epoch, state, stop, show_bar
            )
            share_buffers(t.model, procs)  # every process evaluates with rank 0's batch-norm statistics
            val_loss, val_acc, _ = evaluate(t, val_loader)
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / n,
                "train_acc": correct / n,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - started,
                "images_per_second": n / train_seconds,
            }
            is_best = state.record(row)
            log(
                procs,
                f"epoch {epoch + 1}/{cfg.train.epochs}  train_loss {row['train_loss']:.4f}  "
                f"train_acc {row['train_acc']:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  "
                f"lr {row['lr']:.4g}  {row['images_per_second']:.0f} img/s  {row['seconds']:.1f}s",
            )
            saved = state.to_checkpoint(t)
            on_main(
                procs, lambda saved=saved, is_best=is_best: save_epoch(t, saved, is_best, run_summary(state, *describe))
            )
            signum = stop.requested(procs)
            if signum and epoch + 1 < cfg.train.epochs:
                raise Interrupted(stopped_message(signum, f"after epoch {epoch + 1}", t.out), signum)
    if start >= cfg.train.epochs:
        log(procs, f"nothing to do: the checkpoint has finished {start} of {cfg.train.epochs} epochs")
    else:
        on_main(procs, lambda: viz.save_training_curves(t.out))  # curves.png, when matplotlib is installed
        summary = run_summary(state, *describe)
        log(
            procs,
            f"done: val_acc {summary['val_acc']:.4f} (best {summary['best_val_acc']:.4f}), "
            f"{summary['train_seconds']:.1f}s; wrote {t.out}",
        )


def train_one_epoch(t: Trainer, loader, epoch: int, state: RunState, stop: StopSignals, show_bar: bool):
    """One pass over the training data (or the rest of an interrupted one). Returns the epoch's
    ``(loss * n, correct, n)`` summed over the processes, the last step's learning rate, when the
    epoch started (``time.perf_counter``) and its training seconds."""
    cfg, procs = t.cfg, t.procs
    t.net.train()
    first_step, sums = state.step, torch.zeros(3, dtype=torch.float64, device=procs.device)
    if first_step and procs.is_main:  # rank 0 saved the sums of all processes
        sums = torch.tensor(state.partial[:3], dtype=torch.float64, device=procs.device)
    loader.sampler.set_epoch(epoch)
    loader.sampler.start = first_step * cfg.data.batch_size
    started = time.perf_counter() - (state.partial[3] if first_step else 0.0)
    batches = iter(loader)  # draws the seed of the loader's workers from the generators
    if first_step:
        restore_rng(state.rng, procs)
    bar = tqdm(
        batches,
        total=len(loader),
        initial=first_step,
        disable=not show_bar,
        leave=False,
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        dynamic_ncols=True,
    )
    lr = t.optimizer.param_groups[0]["lr"]
    for step, (x, y) in enumerate(bar, start=first_step):
        x, y = t.batch(x, y)
        loss, main_loss, logits, lr = train_step(t, x, y)
        sums += batch_sums(main_loss, logits, y)
        signum = stop.requested(procs)
        if signum or (step + 1) % cfg.train.log_every == 0 or step + 1 == len(loader):
            if not all_finite(loss, procs):
                raise UserError(
                    f"the loss became nan or infinite at epoch {epoch + 1}, step {step + 1}; "
                    f"stopping (the last checkpoint in {str(t.out)!r} is kept)"
                )
            if show_bar:
                seen = sums[2].item()
                bar.set_postfix(
                    loss=f"{sums[0].item() / seen:.4f}",
                    acc=f"{sums[1].item() / seen:.4f}",
                    lr=f"{lr:.3g}",
                    img_s=f"{seen * procs.world / (time.perf_counter() - started):.0f}",
                )
        if signum and step + 1 < len(loader):  # at the last step, finish the epoch first
            state.step = step + 1
            state.partial = reduce_sums(sums.clone(), procs) + [time.perf_counter() - started]
            saved = state.to_checkpoint(t)
            on_main(procs, lambda saved=saved: checkpoint.save(saved, t.out / "last.pt"))
            raise Interrupted(
                stopped_message(signum, f"at epoch {epoch + 1}, step {step + 1} of {len(loader)}", t.out), signum
            )
    train_seconds = time.perf_counter() - started
    return reduce_sums(sums, procs), lr, started, train_seconds


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor):
    """One optimizer step: the loss, the main head's loss and logits, and the learning rate it used."""
    with t.autocast():
        loss, main_loss, logits = t.model.loss_and_logits(t.criterion, t.net(x), y)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    if t.cfg.train.grad_clip:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.train.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    lr = t.optimizer.param_groups[0]["lr"]
    t.scheduler.step()
    return loss, main_loss, logits, lr


def batch_sums(loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(loss * n, correct, n)`` of one batch, on its device (no synchronisation)."""
    n = torch.tensor(len(target), dtype=torch.float64, device=target.device)
    return torch.stack([loss.detach().double() * n, (logits.argmax(1) == target).sum().double(), n])


@torch.no_grad()
def evaluate(t: Trainer, loader) -> tuple[float, float, int]:
    """Validation loss, accuracy and image count over every process's share of the validation set."""
    t.model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=t.procs.device)
    for x, y in loader:
        x, y = t.batch(x, y)
        with t.autocast():
            _, loss, logits = t.model.loss_and_logits(t.criterion, t.model(x), y)
        sums += batch_sums(loss, logits, y)
    loss_sum, correct, n = reduce_sums(sums, t.procs)
    return loss_sum / n, correct / n, int(n)


# --- output ---------------------------------------------------------------------------------------


def run_summary(state: RunState, about: dict, shape: dict) -> dict:
    """summary.json: the run (``about``: model, backend, dataset; ``shape``: parameters, device,
    processes, image size) and where its metrics stand."""
    last = state.history[-1]
    return {
        **about,
        "val_acc": last["val_acc"],
        "val_loss": last["val_loss"],
        "best_val_acc": state.best_val_acc,
        "best_epoch": max(state.history, key=lambda r: r["val_acc"])["epoch"],
        "epochs": state.epoch,
        **shape,
        "train_seconds": sum(r["seconds"] for r in state.history),
        "images_per_second": last["images_per_second"],
    }


def save_epoch(t: Trainer, saved: dict, is_best: bool, summary: dict) -> None:
    """last.pt (and best.pt when this epoch is the best) and the metrics files."""
    checkpoint.save(saved, t.out / "last.pt")
    if is_best:
        checkpoint.save_copy(t.out / "last.pt", t.out / "best.pt")
    write_outputs(t.out, t.cfg, saved["history"], summary)


def write_outputs(out: Path, cfg: Config, history: list[dict], summary: dict) -> None:
    """config.yaml, metrics.csv (one row per epoch) and summary.json, each replaced atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    checkpoint.write_text(out / "config.yaml", dump(cfg))
    checkpoint.write_text(out / "metrics.csv", text.getvalue())
    checkpoint.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def log(procs: Processes, message: str) -> None:
    if procs.is_main:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def stopped_message(signum: int, where: str, out: Path) -> str:
    last = str(out / "last.pt")
    return (
        f"stopped by {signal.Signals(signum).name} {where}; saved {last!r}; continue with: "
        f"python -m cnnzoo.train --resume {shlex.quote(last)} "
        f"(under torchrun, the same torchrun command with that --resume)"
    )


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM do not kill the run: they ask it to stop at the next safe
    point, the end of an optimizer step, where it saves its state and exits. A second Ctrl-C stops at
    once (every file on disk is still whole: checkpoints are replaced atomically)."""

    def __init__(self):
        self.signum = 0
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self, procs: Processes) -> int:
        """The signal that asked to stop, 0 if none; under torchrun, a signal to any process stops all of them
        at the same step."""
        return max_over(self.signum, procs)


if __name__ == "__main__":
    sys.exit(main())
