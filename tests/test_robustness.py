"""Training survives kills, interruptions and full disks: real training subprocesses are killed and
signalled at random moments, and the resumed runs must end exactly where an uninterrupted one does."""

from __future__ import annotations

import csv
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnzoo import checkpoint
from cnnzoo.train import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "lenet5_digits.yaml")
# small enough for seconds per run, several optimizer steps per epoch, and every metric exact
OPTIONS = [
    "--set",
    "data.limit_train=480",
    "--set",
    "data.limit_val=96",
    "--set",
    "sched.warmup_epochs=0",
    "--set",
    "model.kwargs.activation=relu",
    "--quiet",
]
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnzoo.train", "--config", DIGITS, "--output-dir", str(out), *OPTIONS, *extra]


def start(out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command(out, *extra), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_same_run(a: Path, b: Path) -> None:
    """The issue's bar is val_acc and val_loss to 1e-6; on one CPU the runs are in fact bit for bit equal."""
    rows_a, rows_b = metrics(a), metrics(b)
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b):
        assert abs(float(x["val_acc"]) - float(y["val_acc"])) <= 1e-6
        assert abs(float(x["val_loss"]) - float(y["val_loss"])) <= 1e-6
        assert {k: x[k] for k in COMPARED} == {k: y[k] for k in COMPARED}
    wa, wb = (torch.load(d / "last.pt", weights_only=True)["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A run of 6 epochs that nothing interrupts."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["--config", DIGITS, "--output-dir", str(out), *OPTIONS, "--set", "train.epochs=6"]) == 0
    return out


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_auto(tmp_path, reference):
    """SIGKILL, restart with --resume auto, again and again; every checkpoint on disk stays loadable and
    the run ends with the uninterrupted run's metrics and weights."""
    out = tmp_path / "run"
    rng = random.Random(6)
    kills = 0
    for attempt in range(10):
        proc = start(out, "--set", "train.epochs=6", "--resume", "auto")
        if attempt < 8:
            # a random moment in the first half second of training (the run's first line marks its
            # start; import takes seconds, which a delay from launch would mostly spend): an epoch and
            # its checkpoint take about 0.2 s, so each kill lands and the run still advances
            proc.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.5))
            if proc.poll() is None:
                proc.kill()
                kills += 1
        _, err = proc.communicate(timeout=120)
        for saved in out.glob("*.pt"):  # whatever moment the kill came, the checkpoints are whole
            checkpoint.load(saved)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    assert proc.returncode == 0, err
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    print(f"SIGKILL: {kills} kills survived")
    assert not list(out.glob(".*")), "temporary files left behind"
    assert_same_run(out, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_a_checkpoint_and_resumes_exactly(tmp_path, reference, signum):
    """Ctrl-C or SIGTERM in the middle of a run: it stops after the current step, saves, says how to
    continue, and the continued run ends exactly like the uninterrupted one."""
    out = tmp_path / "run"
    proc = start(out, "--set", "train.epochs=6", "--set", "train.log_every=1")
    for line in proc.stdout:  # wait until the first epoch is done, then interrupt the second or a later one
        if line.startswith("epoch 1/6"):
            break
    time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "--resume" in err and "Traceback" not in err
    state = checkpoint.load(out / "last.pt")
    assert 1 <= state["epoch"] < 6
    print(f"{signal.Signals(signum).name}: stopped at epoch {state['epoch'] + 1}, step {state.get('step', 0)}")
    if state.get("step"):  # stopped in the middle of an epoch (almost always)
        assert f"at epoch {state['epoch'] + 1}, step {state['step']}" in err
    assert main(["--resume", str(out / "last.pt"), "--quiet"]) == 0
    assert_same_run(out, reference)


def test_an_interrupted_checkpoint_with_a_bad_position_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--config", DIGITS, "--output-dir", str(out), *OPTIONS, "--set", "train.epochs=1"]) == 0
    state = checkpoint.load(out / "last.pt")
    for bad in (
        {"step": 10**6, "partial": [0.0, 0.0, 0.0, 0.0]},
        {"step": 3, "partial": "x"},
        {"step": 3, "partial": [float("nan")] * 4},
    ):
        checkpoint.save({**state, **bad, "batches": [32, 1]}, out / "last.pt")
        capsys.readouterr()
        assert main(["--resume", str(out / "last.pt"), "--set", "train.epochs=2", "--quiet"]) == 2
        assert "position in its epoch" in capsys.readouterr().err


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A file-size limit makes the kernel refuse the checkpoint's bytes part-way (EFBIG, as a full disk
    gives ENOSPC): the run stops with a one-line error and the previous files are untouched."""
    out = tmp_path / "run"
    assert main(["--config", DIGITS, "--output-dir", str(out), *OPTIONS, "--set", "train.epochs=1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    limit = 64 * 1024  # config.yaml, metrics.csv and summary.json fit; a LeNet-5 checkpoint (~500 KB) does not

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start(out, "--set", "train.epochs=2", "--resume", "auto", preexec_fn=small_files)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.startswith("error: could not write") and "last.pt" in err and "previous file is kept" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- config fuzz -----------------------------------------------------------------------------------

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
WRONG_TYPES = ["text", [1, 2], {"a": 1}, None, True, 3.5, -7, ""]
OUT_OF_RANGE = [-1, 0, 10**12, -1e-9, 1e12, float("nan"), float("inf"), 2**64]
UNKNOWN_KEYS = ["epoch", "lrate", "bogus", "batchsize", "model", ""]
GARBAGE = ["just text", "[1, 2, 3]", "42", "", "model: [unclosed", "model:\n\tname: lenet5", "{a: 1, a: 2}"]
VALID = {
    ("optim", "name"): ["adam", "adamw"],
    ("sched", "name"): ["step", "none", "onecycle"],
    ("train", "label_smoothing"): [0.1],
    ("data", "augment"): [False],
    ("train", "channels_last"): [True],
    ("data", "name"): ["fake", "digits"],
    ("model", "backend"): ["torch"],
    ("train", "grad_clip"): [1.0],
}


def leaves(raw: dict, prefix=()) -> list[tuple]:
    found = []
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            found += leaves(value, prefix + (key,))
        else:
            found.append(prefix + (key,))
    return found


def set_path(raw: dict, path: tuple, value) -> None:
    for part in path[:-1]:
        raw = raw.setdefault(part, {}) if isinstance(raw.get(part, {}), dict) else raw
    raw[path[-1]] = value


def mutate(text: str, rng: random.Random) -> str:
    """One random mutation of a config file's text: a wrong type, an unknown key, a value out of range, a
    missing section or key, a file that is not a mapping or not YAML, or a valid change."""
    raw = yaml.safe_load(text)
    kind = rng.choice(["type", "unknown", "range", "section", "key", "garbage", "valid", "valid"])
    if kind == "garbage":
        return rng.choice(GARBAGE)
    if kind == "type":
        set_path(raw, rng.choice(leaves(raw)), rng.choice(WRONG_TYPES))
    elif kind == "unknown":
        section = rng.choice([None, *[k for k, v in raw.items() if isinstance(v, dict)]])
        (raw if section is None else raw[section])[rng.choice(UNKNOWN_KEYS)] = 1
    elif kind == "range":
        numeric = [
            p
            for p in leaves(raw)
            if isinstance(yaml_get(raw, p), (int, float)) and not isinstance(yaml_get(raw, p), bool)
        ] or leaves(raw)
        set_path(raw, rng.choice(numeric), rng.choice(OUT_OF_RANGE))
    elif kind == "section":
        del raw[rng.choice(list(raw))]
    elif kind == "key":
        path = rng.choice(leaves(raw))
        parent = raw
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    else:
        path = rng.choice(list(VALID))
        set_path(raw, path, rng.choice(VALID[path]))
    return yaml.safe_dump(raw)


def yaml_get(raw: dict, path: tuple):
    for part in path:
        raw = raw[part]
    return raw


@pytest.mark.slow
def test_config_fuzz(tmp_path, capsys):
    """Random mutations of the shipped configs either train or stop with exit code 2 and one line."""
    rng = random.Random(7)
    outcomes = {0: 0, 2: 0}
    # small and offline whatever the mutation did (a --set on a section the mutation broke is itself an error)
    small = [
        "--quiet",
        "--set",
        "train.epochs=2",
        "--set",
        "sched.warmup_epochs=0",
        "--set",
        "data.limit_train=8",
        "--set",
        "data.limit_val=4",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.download=false",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.device=cpu",
        "--set",
        f"data.root={tmp_path / 'no-data'}",
    ]
    for case in range(80):
        source = rng.choice(CONFIGS)
        path = tmp_path / f"case{case}.yaml"
        path.write_text(mutate(source.read_text(), rng))
        # other configs' data needs a download, and their models write checkpoints of up to a gigabyte: train
        # LeNet-5 on fake data instead, with the rest of the mutated config (every fourth case as it is, which
        # stops at the missing data)
        offline = (
            []
            if source.stem == "lenet5_digits" or case % 4 == 0
            else ["--set", "data.name=fake", "--set", "model.name=lenet5", "--set", "data.image_size=32"]
        )
        out = tmp_path / f"out{case}"
        code = main(["--config", str(path), "--output-dir", str(out), *small, *offline])
        shutil.rmtree(out, ignore_errors=True)
        err = capsys.readouterr().err.strip()
        assert code in outcomes, (source.name, path.read_text(), err)
        if code == 2:
            assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (path.read_text(), err)
        outcomes[code] += 1
    print(f"config fuzz: {outcomes[0]} ran, {outcomes[2]} refused with exit code 2")
    assert outcomes[0] >= 5 and outcomes[2] >= 40
