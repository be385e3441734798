"""Several training processes under ``torchrun``: where this process stands, joining the process
group, and the collective steps that keep every process in agreement (a user error in one stops
all of them; metric sums, loss checks and random states are combined over all of them).

With one process (no ``torchrun``), every function here is a plain local step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint
from .config import Config, check_amp
from .errors import UserError
from .ops import compiled


@dataclass
class Processes:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that logs and writes files."""
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as ``torchrun`` sets it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup_processes(cfg: Config) -> Processes:
    """Rank, world size and device; joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    name = cfg.train.device
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda, but CUDA is not available here (use train.device=cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if name == "cuda" else torch.device("cpu")
    check_amp(cfg.train.amp, device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu" and cfg.model.backend == "custom":
        compiled.library()  # build the CPU kernels now (or fall back, or fail), before any output
    if world > 1 and not dist.is_initialized():
        join_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world, device)


def join_group(backend: str) -> None:
    """Join the process group torchrun set up. The group's keys go under this attempt's own prefix in
    torchrun's store: after ``--max-restarts`` restarts the workers, keys the failed attempt left
    behind (its processes' addresses) would otherwise mislead the new one."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        dist.init_process_group(backend)
        return
    store, rank, world = next(dist.rendezvous("env://"))
    dist.init_process_group(
        backend, store=dist.PrefixStore(f"cnnzoo/attempt_{attempt}", store), rank=rank, world_size=world
    )


def wrap_model(model: nn.Module, procs: Processes) -> nn.Module:
    """``model`` in DistributedDataParallel with more than one process, else itself."""
    if procs.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[procs.device] if procs.device.type == "cuda" else None
    )


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
            text = (
                distinct[0]
                if len(distinct) == 1
                else "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
            )
            raise PeerError(text)
    if error is not None:
        raise error
    return result


def on_main(procs: Processes, step) -> None:
    """``step()`` on rank 0 only, with the others waiting to hear whether it failed (see ``together``)."""
    together(procs, step if procs.is_main else lambda: None)


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


def max_over(value: int, procs: Processes) -> int:
    """The largest of every process's ``value``."""
    if procs.world == 1:
        return value
    flag = torch.tensor(value, device=procs.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def share_buffers(model: nn.Module, procs: Processes) -> None:
    """Rank 0's buffers (batch-norm statistics) in every process, so that all hold the same model."""
    if procs.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def gather_rng(procs: Processes) -> list[dict]:
    """Every process's generator states, in rank order."""
    state = checkpoint.rng_state()
    if procs.world == 1:
        return [state]
    states: list = [None] * procs.world
    dist.all_gather_object(states, state)
    return states


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
