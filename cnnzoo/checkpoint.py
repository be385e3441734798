"""Checkpoints: plain dicts of tensors and numbers, written atomically, read with ``weights_only=True``.

A checkpoint holds ``model``, ``optimizer``, ``scheduler`` and ``scaler`` state dicts, ``epoch`` (the
number of finished epochs), ``history`` (one metrics row per finished epoch), ``best_val_acc``,
``rng`` (the state of every random number generator the training loop draws from, one entry per
process) and ``config`` (the resolved config as a dict). A run stopped by SIGINT or SIGTERM in the
middle of an epoch also saves ``step`` (the optimizer steps done in epoch ``epoch + 1``), ``partial``
(that epoch's metric sums so far: loss * n, correct, n, seconds) and ``batches`` (batch size and
number of processes, which fix the epoch's batches). Nothing in it is a pickled object, so loading it
cannot run code.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

FORMAT = "cnnzoo-checkpoint-v1"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
REQUIRED = ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "best_val_acc", "rng", "config")


class CheckpointError(UserError):
    """A checkpoint that cannot be written, read or used."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Sink:
    """A file for ``torch.save`` that remembers the operating system's error: torch turns a failed write
    (a full disk) into a RuntimeError that no longer says what went wrong."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.file.flush()


def write_atomic(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush and fsync it, then rename it over
    ``path``. A crash or a full disk leaves the previous ``path`` as it was."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f)
            try:
                write(sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise CheckpointError(
                f"could not write {str(path)!r}: {e.strerror or e}; the previous file is kept"
            ) from None
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def save(state: dict[str, Any], path: str | Path) -> None:
    write_atomic(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def save_copy(source: str | Path, path: str | Path) -> None:
    """Make ``path`` a copy of the checkpoint ``source`` (a hard link where the file system allows:
    replacing ``source`` later leaves it as it is), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            write_atomic(path, lambda f: f.write(Path(source).read_bytes()))
            return
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {str(path)!r}: {e.strerror or e}; the previous file is kept") from None


def read(path: str | Path, kind: str = "checkpoint") -> Any:
    """What ``torch.save`` wrote to ``path``, read without running any pickled code (tensors and plain
    containers only); a CheckpointError naming the problem otherwise. ``kind`` names the file in it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} {str(path)!r} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        detail = next((line.strip() for line in lines if "Unsupported global" in line), None)
        if detail:
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it holds pickled objects other than tensors "
                f"and plain containers, which could run code ({detail.split('. ')[0]})"
            ) from None
        raise CheckpointError(f"{str(path)!r} is not a readable {kind} ({lines[0] if lines else e})") from None
    except Exception as e:  # noqa: BLE001 (arbitrary bytes make the unpickler fail in arbitrary ways)
        raise CheckpointError(
            f"{str(path)!r} is not a readable {kind} ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else 'empty'})"
        ) from None


def is_checkpoint(state: Any) -> bool:
    """Whether ``state`` (as read) carries the marker of a cnnzoo training checkpoint."""
    return isinstance(state, dict) and state.get("format") == FORMAT


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; anything else is a CheckpointError naming the problem."""
    state = read(path)
    if not is_checkpoint(state):
        raise CheckpointError(f"{str(path)!r} is not a cnnzoo training checkpoint (no {FORMAT!r} marker)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
    return state


def newest(directory: str | Path) -> Path | None:
    """The checkpoint to resume a run in ``directory`` from: ``last.pt`` (written after every epoch), or
    failing that the most recently written ``*.pt`` file; None if there is none."""
    directory = Path(directory)
    if (directory / "last.pt").is_file():
        return directory / "last.pt"
    files = [p for p in directory.glob("*.pt") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


def rng_state() -> dict[str, Any]:
    """Every generator the training loop draws from, as tensors and plain values."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(keys), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(states: list[dict[str, Any]], rank: int, world: int) -> bool:
    """Restore this process's generators from a checkpoint's ``rng`` (one entry per process); False when
    the checkpoint was written by a different number of processes (nothing is restored then)."""
    if not isinstance(states, list) or not all(isinstance(s, dict) for s in states):
        raise CheckpointError("the checkpoint's random number generator state is not a list of per-process states")
    if len(states) != world:
        return False
    state = states[rank]
    try:
        torch.set_rng_state(state["torch"])
        version, keys, gauss = state["python"]
        random.setstate((version, tuple(keys), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's random number generator state is unusable ({e})") from None
    return True


def check_model_keys(model_state: dict[str, torch.Tensor], saved: dict[str, Any], what: str) -> None:
    """Raise a CheckpointError listing the keys of ``saved`` that do not fit ``model_state``."""

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    missing = [k for k in model_state if k not in saved]
    unexpected = [k for k in saved if k not in model_state]
    shapes = [
        f"{k} {list(saved[k].shape)} vs {list(v.shape)}"
        for k, v in model_state.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    problems = [
        f"missing keys: {some(missing)}" if missing else "",
        f"unexpected keys: {some(unexpected)}" if unexpected else "",
        f"shape mismatch (checkpoint vs model): {some(shapes)}" if shapes else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"{what} does not fit the model: {'; '.join(problems)}")
