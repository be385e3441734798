"""The optimizer and the learning-rate schedule a config asks for, and restoring both from a checkpoint."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import Config


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of ``lr_factor``, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))


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


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict, step: int
) -> None:
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
