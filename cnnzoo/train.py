"""Train a zoo model from a config: ``python -m cnnzoo.train --config configs/lenet5_digits.yaml``.

Reads top to bottom: config, setup (processes, device, seed), data, model, optimizer and schedule,
resume, then the epoch loop (train, evaluate, checkpoint). Several processes run through
``torchrun --nproc_per_node=N -m cnnzoo.train ...`` with DistributedDataParallel; rank 0 alone logs
and writes files, and every metric is summed over the processes.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from . import checkpoint
from .config import Config, ConfigError, build_config, dump, flatten, load_config
from .data import make_loaders, open_dataset
from .errors import Interrupted, UserError
from .models import create_model
from .models.common import fit_input_size
from .ops import compiled

METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_second")
AUX_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers, as in the paper


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cnnzoo.train", description="Train a cnnzoo model from a YAML config.")
    p.add_argument("--config", help="YAML config file (optional with --resume PATH: the checkpoint's config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable; values are YAML)")
    p.add_argument("--output-dir", help="where to write checkpoints and metrics (overrides output_dir)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint; 'auto': the newest one in the output directory, if any")
    p.add_argument("--eval-only", action="store_true", help="evaluate the --resume checkpoint and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch still)")
    return p.parse_args(argv)


@dataclass
class Processes:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve(args: argparse.Namespace) -> tuple[Config, dict | None]:
    """The config (from --config or the checkpoint of --resume PATH, then --set and --output-dir) and the
    checkpoint to resume from, if any."""
    resume_state = None
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
            resume_state = checkpoint.load(newest)
            args.resume = str(newest)
        elif args.eval_only:
            raise UserError(f"--resume auto: no checkpoint in {cfg.output_dir!r} to evaluate")
    return cfg, resume_state


def setup_processes(cfg: Config) -> Processes:
    """Rank, world size and device; joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    name = cfg.train.device
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda, but CUDA is not available here (use train.device=cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if name == "cuda" else torch.device("cpu")
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu" and cfg.model.backend == "custom":
        compiled.library()  # build the CPU kernels now (or fall back, or fail), before any output
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world, device)


def check_output_dir(path: Path, resume_path: str | None) -> None:
    """The output directory exists and is writable, and a run does not overwrite another run's checkpoints
    (it may replace those of the checkpoint it resumes from)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        checkpoint.write_text(probe, "")
        probe.unlink()
    except (OSError, UserError) as e:
        raise UserError(f"output directory {str(path)!r} cannot be written: {getattr(e, 'strerror', None) or e}") \
            from None
    for stale in [*path.glob(".*.tmp"), *path.glob(".write-test-*")]:  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    if not any(path.glob("*.pt")):
        return
    if resume_path is None:
        raise UserError(f"output directory {str(path)!r} already holds checkpoints; continue that run with "
                        f"--resume auto, or choose another directory with --output-dir")
    if Path(resume_path).resolve().parent != path.resolve():
        raise UserError(f"output directory {str(path)!r} holds the checkpoints of another run than "
                        f"{resume_path!r}; choose an empty directory with --output-dir")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def lr_factor(cfg: Config, steps_per_epoch: int):
    """The schedule as a function of the optimizer step: the factor that multiplies ``optim.lr``.

    Warm-up rises linearly from 1/100. ``step`` multiplies by ``gamma`` every ``step_size`` epochs;
    ``cosine`` anneals to ``min_lr``; ``onecycle`` rises on a half cosine from 1/25 over the warm-up
    (30% of training by default) and falls on a half cosine to 1e-4 of its starting rate (the learning
    rate only; momentum is not cycled).
    """
    s = cfg.sched
    total = cfg.train.epochs * steps_per_epoch
    warmup = round(s.warmup_epochs * steps_per_epoch)

    def half_cosine(start: float, end: float, progress: float) -> float:
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def factor(step: int) -> float:
        if s.name == "onecycle":
            rise = warmup or round(0.3 * total)
            if step < rise:
                return half_cosine(1 / 25, 1.0, step / rise)
            return half_cosine(1.0, 1 / 25 / 1e4, (step - rise) / max(1, total - rise))
        if step < warmup:
            return 0.01 + 0.99 * step / warmup
        if s.name == "step":
            return s.gamma ** (step // (s.step_size * steps_per_epoch))
        if s.name == "cosine":
            return half_cosine(1.0, s.min_lr / cfg.optim.lr, (step - warmup) / max(1, total - warmup))
        return 1.0

    return factor


def load_optimizer_state(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                         state: dict, step: int) -> None:
    """Restore the optimizer's buffers (momentum, Adam moments) from a checkpoint and put the schedule at
    optimizer step ``step``, keeping the hyperparameters of the current config: a resumed run with an
    unchanged config continues exactly, and one with a new lr, weight decay, batch size or number of
    processes uses the new values from where the schedule stands after the finished epochs."""
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    base_lrs = list(scheduler.base_lrs)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for group, values in zip(optimizer.param_groups, hyper):
        group.update(values)
    scheduler.base_lrs = base_lrs
    scheduler.last_epoch = step
    for group, base, factor in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def loss_and_logits(criterion: nn.Module, output, target: torch.Tensor):
    """The loss to train on, the main head's loss and its logits: GoogLeNet returns its auxiliary
    heads too in training, and their losses are added with weight 0.3."""
    if isinstance(output, tuple):
        logits, *aux = output
        main = criterion(logits, target)
        return main + AUX_WEIGHT * sum(criterion(a, target) for a in aux if a is not None), main, logits
    main = criterion(output, target)
    return main, main, output


class PeerError(UserError):
    """Another process of the same torchrun job stopped with a user error."""


def together(procs: Processes, step):
    """Run ``step()`` in every process; if it raises a UserError in any of them, raise one in all of them
    (a process left running would wait for the others forever), with every distinct message."""
    error, result = None, None
    try:
        result = step()
    except UserError as e:
        error = e
    if procs.world > 1:
        failed = torch.tensor(float(error is not None), device=procs.device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if failed.item():
            messages: list = [None] * procs.world
            dist.all_gather_object(messages, None if error is None else str(error))
            distinct = list(dict.fromkeys(m for m in messages if m is not None))
            text = distinct[0] if len(distinct) == 1 else "; ".join(
                f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
            raise PeerError(text)
    if error is not None:
        raise error
    return result


def all_finite(loss: torch.Tensor, procs: Processes) -> bool:
    """Whether every process's loss is finite (all of them must agree to stop, or the rest would hang)."""
    finite = torch.isfinite(loss.detach()).to(procs.device, torch.float32)
    if procs.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def reduce_sums(sums: torch.Tensor, procs: Processes) -> list[float]:
    """Sum ``(loss * n, correct, n)`` over the processes."""
    if procs.world > 1:
        dist.all_reduce(sums)
    return sums.tolist()


def batch_sums(loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(loss * n, correct, n)`` of one batch, on its device (no synchronisation)."""
    n = torch.tensor(len(target), dtype=torch.float64, device=target.device)
    return torch.stack([loss.detach().double() * n, (logits.argmax(1) == target).sum().double(), n])


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion: nn.Module, procs: Processes, autocast, channels_last: bool):
    """Validation loss and accuracy over every process's share of the validation set."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=procs.device)
    for x, y in loader:
        x, y = x.to(procs.device, non_blocking=True), y.to(procs.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            _, loss, logits = loss_and_logits(criterion, model(x), y)
        sums += batch_sums(loss, logits, y)
    loss_sum, correct, n = reduce_sums(sums, procs)
    return loss_sum / n, correct / n, int(n)


def write_outputs(out: Path, cfg: Config, history: list[dict], summary: dict) -> None:
    """config.yaml, metrics.csv (one row per epoch) and summary.json, each replaced atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    checkpoint.write_text(out / "config.yaml", dump(cfg))
    checkpoint.write_text(out / "metrics.csv", text.getvalue())
    checkpoint.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def config_changes(saved: dict, cfg: Config) -> list[str]:
    old, new = flatten(saved), flatten(cfg.to_dict())
    return [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k] and k != "output_dir"]


def log(procs: Processes, message: str) -> None:
    if procs.main:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def open_data(cfg: Config, procs: Processes):
    """The dataset in every process; with ``data.download`` rank 0 fetches the files while the others
    wait, then they read what it fetched."""
    source = together(procs, lambda: open_dataset(cfg.data) if procs.main or not cfg.data.download else None)
    no_download = dataclasses.replace(cfg.data, download=False)
    return together(procs, lambda: source if source is not None else open_dataset(no_download))


def build_model(cfg: Config, source) -> tuple[nn.Module, int]:
    """The model for the data's classes and channels, and the input size it is trained at."""
    try:
        model = create_model(cfg.model.name, num_classes=source.num_classes, in_channels=source.channels,
                             backend=cfg.model.backend, **cfg.model.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.kwargs {cfg.model.kwargs} do not fit {cfg.model.name}: {e}") from None
    size = cfg.data.image_size or fit_input_size(source.size, model)
    if fit_input_size(size, model) != size:
        raise ConfigError(f"data.image_size={size} does not fit {cfg.model.name}, which takes "
                          f"{model.min_size}x{model.min_size} to "
                          + (f"{model.max_size}x{model.max_size}" if model.max_size else "any larger size"))
    return model, size


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
        if procs.world == 1:
            return self.signum
        flag = torch.tensor(self.signum, device=procs.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def resume_point(state: dict, cfg: Config, procs: Processes, steps_per_epoch: int) -> tuple[int, list[float]]:
    """Where in its unfinished epoch a checkpoint saved by an interrupted run stopped: the number of
    optimizer steps done and the epoch's metric sums so far ``(loss * n, correct, n, seconds)``; (0, [])
    for a checkpoint saved at the end of an epoch. A changed batch size or number of processes changes
    the epoch's batches, so that epoch then starts again from its beginning."""
    step = state.get("step", 0)
    if not step:
        return 0, []
    partial = state.get("partial")
    if (not isinstance(step, int) or isinstance(step, bool) or not 0 < step < steps_per_epoch
            or not isinstance(partial, list) or len(partial) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in partial)):
        raise checkpoint.CheckpointError(f"the checkpoint's position in its epoch (step={step!r}, "
                                         f"partial={partial!r}) is not valid for {steps_per_epoch} steps per epoch")
    if state.get("batches") != [cfg.data.batch_size, procs.world]:
        log(procs, "note: the batch size or the number of processes changed since the run was interrupted, "
                   f"so epoch {state['epoch'] + 1} starts again from its first batch")
        return 0, []
    return step, [float(v) for v in partial]


def stopped_message(signum: int, where: str, out: Path) -> str:
    last = str(out / "last.pt")
    return (f"stopped by {signal.Signals(signum).name} {where}; saved {last!r}; continue with: "
            f"python -m cnnzoo.train --resume {shlex.quote(last)} "
            f"(under torchrun, the same torchrun command with that --resume)")


def restore_rng(state: dict, procs: Processes) -> None:
    if not checkpoint.set_rng_state(state["rng"], procs.rank, procs.world):
        log(procs, f"note: the checkpoint was written by {len(state['rng'])} processes and this run has "
                   f"{procs.world}, so its random augmentation does not repeat the original's")


def gather_rng(procs: Processes) -> list[dict]:
    """Every process's generator states, in rank order."""
    state = checkpoint.rng_state()
    if procs.world == 1:
        return [state]
    states: list = [None] * procs.world
    dist.all_gather_object(states, state)
    return states


def train(cfg: Config, resume_state: dict | None = None, eval_only: bool = False, quiet: bool = False,
          resume_path: str | None = None) -> nn.Module:
    """Run the training (or evaluation) that ``cfg`` describes; returns the trained model."""
    out = Path(cfg.output_dir)
    procs = setup_processes(cfg)
    seed_everything(cfg.train.seed)  # the same initial weights in every process

    # data and model
    source = open_data(cfg, procs)
    model, size = together(procs, lambda: build_model(cfg, source))
    if not eval_only:
        together(procs, lambda: check_output_dir(out, resume_path) if procs.main else None)
    train_loader, val_loader = make_loaders(source, cfg.data, size, cfg.train.seed, procs.rank, procs.world,
                                            pin_memory=procs.device.type == "cuda")
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(procs.device, memory_format=memory_format)
    params = sum(p.numel() for p in model.parameters())
    seed_everything((cfg.train.seed + procs.rank) % 2**32)  # but each process its own augmentation and dropout

    # optimizer, schedule, mixed precision
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, len(train_loader)))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    scaler = torch.amp.GradScaler(procs.device.type, enabled=cfg.train.amp == "fp16")

    def autocast():
        return torch.autocast(procs.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    # resume
    start_epoch, history, best_val_acc, resume_step, partial = 0, [], -1.0, 0, []
    if resume_state is not None:
        what = f"checkpoint {resume_path!r} ({resume_state['config'].get('model', {}).get('name')!r})"
        checkpoint.check_model_keys(model.state_dict(), resume_state["model"], what)
        model.load_state_dict(resume_state["model"])
        if not eval_only:
            saved_optim = resume_state["config"].get("optim", {}).get("name")
            if saved_optim != cfg.optim.name:
                raise checkpoint.CheckpointError(f"{what} was trained with optim.name={saved_optim!r}, the config "
                                                 f"says {cfg.optim.name!r}")
            start_epoch, history = int(resume_state["epoch"]), list(resume_state["history"])
            best_val_acc = float(resume_state["best_val_acc"])
            resume_step, partial = resume_point(resume_state, cfg, procs, len(train_loader))
            try:
                load_optimizer_state(optimizer, scheduler, resume_state,
                                     start_epoch * len(train_loader) + resume_step)
                if resume_state["scaler"] and scaler.is_enabled():
                    scaler.load_state_dict(resume_state["scaler"])
            except (ValueError, KeyError, RuntimeError, TypeError) as e:
                raise checkpoint.CheckpointError(f"{what}: optimizer state does not fit: {e}") from None
            if not resume_step:  # mid-epoch, after the epoch's loader has drawn its seed (below)
                restore_rng(resume_state, procs)
            changes = config_changes(resume_state["config"], cfg)
            where = f"epoch {start_epoch + 1}, step {resume_step}" if resume_step else f"after epoch {start_epoch}"
            log(procs, f"resuming from {resume_path} {where}"
                + (f"; config changes: {', '.join(changes)}" if changes else ""))

    if eval_only:
        val_loss, val_acc, n = evaluate(model, val_loader, criterion, procs, autocast, cfg.train.channels_last)
        log(procs, f"{resume_path} (epoch {resume_state['epoch']}): val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  "
                   f"({n} validation images, {procs.device.type})")
        return model

    ddp = procs.world > 1
    net = nn.parallel.DistributedDataParallel(model, device_ids=[procs.device] if procs.device.type == "cuda"
                                              else None) if ddp else model
    ops = cfg.model.backend if cfg.model.backend == "torch" or procs.device.type != "cpu" else \
        f"custom, {'compiled' if compiled.library() else 'reference'}"
    log(procs, f"{cfg.model.name} ({ops} ops, {params:,} parameters) on {source.name} "
               f"({len(source.train)} train / {len(source.val)} val images, {source.channels}x{size}x{size}), "
               f"{procs.device.type} x {procs.world}, output {out}")

    show_bar = procs.main and not quiet and sys.stderr.isatty()
    summary = {}
    def snapshot(finished_epochs: int, **position) -> dict:
        """The checkpoint of the run as it stands; ``position``: where an interrupted epoch stopped."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": finished_epochs, "history": history,
                "best_val_acc": best_val_acc, "rng": gather_rng(procs), "config": cfg.to_dict(), **position}

    with StopSignals() as stop:
        for epoch in range(start_epoch, cfg.train.epochs):
            net.train()
            first_step, sums = 0, torch.zeros(3, dtype=torch.float64, device=procs.device)
            if epoch == start_epoch and resume_step:  # the rest of an interrupted epoch
                first_step = resume_step
                if procs.main:  # rank 0 saved the sums of all processes
                    sums = torch.tensor(partial[:3], dtype=torch.float64, device=procs.device)
            train_loader.sampler.set_epoch(epoch)
            train_loader.sampler.start = first_step * cfg.data.batch_size
            started = time.perf_counter() - (partial[3] if first_step else 0.0)
            batches = iter(train_loader)  # draws the seed of the loader's workers from the generators
            if first_step:
                restore_rng(resume_state, procs)
            bar = tqdm(batches, total=len(train_loader), initial=first_step, disable=not show_bar, leave=False,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", dynamic_ncols=True)
            for step, (x, y) in enumerate(bar, start=first_step):
                x, y = x.to(procs.device, non_blocking=True), y.to(procs.device, non_blocking=True)
                if cfg.train.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    loss, main_loss, logits = loss_and_logits(criterion, net(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                scheduler.step()
                sums += batch_sums(main_loss, logits, y)
                signum = stop.requested(procs)
                if signum or (step + 1) % cfg.train.log_every == 0 or step + 1 == len(train_loader):
                    if not all_finite(loss, procs):
                        raise UserError(f"the loss became nan or infinite at epoch {epoch + 1}, step {step + 1}; "
                                        f"stopping (the last checkpoint in {str(out)!r} is kept)")
                    if show_bar:
                        seen = sums[2].item()
                        bar.set_postfix(loss=f"{sums[0].item() / seen:.4f}", acc=f"{sums[1].item() / seen:.4f}",
                                        lr=f"{lr:.3g}",
                                        img_s=f"{seen * procs.world / (time.perf_counter() - started):.0f}")
                if signum and step + 1 < len(train_loader):  # at the last step, finish the epoch first
                    state = snapshot(epoch, step=step + 1, batches=[cfg.data.batch_size, procs.world],
                                     partial=reduce_sums(sums.clone(), procs) + [time.perf_counter() - started])
                    together(procs, lambda state=state: checkpoint.save(state, out / "last.pt") if procs.main else None)
                    raise Interrupted(stopped_message(signum, f"at epoch {epoch + 1}, step {step + 1} of "
                                                              f"{len(train_loader)}", out), signum)
            train_seconds = time.perf_counter() - started
            loss_sum, correct, n = reduce_sums(sums, procs)
            if ddp:  # every process evaluates with rank 0's batch-norm statistics, so all hold the same model
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            val_loss, val_acc, _ = evaluate(model, val_loader, criterion, procs, autocast, cfg.train.channels_last)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - started,
                   "images_per_second": n / train_seconds}
            history.append(row)
            is_best = val_acc > best_val_acc
            best_val_acc = max(best_val_acc, val_acc)
            log(procs, f"epoch {epoch + 1}/{cfg.train.epochs}  train_loss {row['train_loss']:.4f}  "
                       f"train_acc {row['train_acc']:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  "
                       f"lr {row['lr']:.4g}  {row['images_per_second']:.0f} img/s  {row['seconds']:.1f}s")
            state = snapshot(epoch + 1)
            summary = {"model": cfg.model.name, "backend": cfg.model.backend, "dataset": source.name,
                       "val_acc": val_acc, "val_loss": val_loss, "best_val_acc": best_val_acc,
                       "best_epoch": max(history, key=lambda r: r["val_acc"])["epoch"], "epochs": epoch + 1,
                       "params": params, "device": str(procs.device), "processes": procs.world,
                       "image_size": size, "train_seconds": sum(r["seconds"] for r in history),
                       "images_per_second": row["images_per_second"]}

            def save(state=state, summary=summary, is_best=is_best) -> None:
                checkpoint.save(state, out / "last.pt")
                if is_best:
                    checkpoint.save_copy(out / "last.pt", out / "best.pt")
                write_outputs(out, cfg, history, summary)

            together(procs, save if procs.main else lambda: None)
            signum = stop.requested(procs)
            if signum and epoch + 1 < cfg.train.epochs:
                raise Interrupted(stopped_message(signum, f"after epoch {epoch + 1}", out), signum)
    if start_epoch >= cfg.train.epochs:
        log(procs, f"nothing to do: the checkpoint has finished {start_epoch} of {cfg.train.epochs} epochs")
    elif summary:
        log(procs, f"done: val_acc {summary['val_acc']:.4f} (best {summary['best_val_acc']:.4f}), "
                   f"{summary['train_seconds']:.1f}s; wrote {out}")
    return model


def one_line(error: UserError) -> str:
    """The message of ``error``; one raised in a DataLoader worker arrives wrapped in the worker's
    traceback, whose last line holds the original message."""
    text = str(error).strip()
    if "Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, resume_state = resolve(args)
        if args.print_config:
            print(dump(cfg), end="")
            return 0
        train(cfg, resume_state, eval_only=args.eval_only, quiet=args.quiet, resume_path=args.resume)
    except UserError as e:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, together() gives rank 0 every message
            print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; the checkpoints on disk are those of the last finished epoch or interruption",
              file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
