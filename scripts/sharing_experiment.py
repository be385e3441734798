"""The parameter-sharing experiment of docs/sharing.md: LeNet-5 on the digits with C1 and C3 as
convolutions, as tiled convolutions (2x2 kernel sets) and as locally connected layers, the same data,
seed and schedule (configs/lenet5_digits.yaml, lenet5_tiled_digits.yaml, lenet5_local_digits.yaml).

    python scripts/sharing_experiment.py [--seeds 0 1 2] [--runs DIR] [--figure PATH] [--set KEY=VALUE ...]

Trains each config once per seed with ``python -m cnnzoo.train`` (one after another, into ``--runs``,
a fresh temporary directory by default; a run that already finished there is read, not repeated),
then prints, in Markdown:

* per connectivity: parameters, final and best validation accuracy per seed (and their mean), the
  median seconds per epoch and the training time of the first seed's run;
* the validation accuracy after every epoch, first seed.

``--figure`` writes the curves (validation accuracy and training loss per epoch, first seed) as a
PNG (needs matplotlib, the ``viz`` extra). ``--set`` passes overrides to every run (``--set
train.epochs=2`` for a quick look). Training times are wall-clock on whatever machine runs it: on a
shared machine, compare the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cnnzoo import viz  # noqa: E402

CONFIGS = {
    "conv": "configs/lenet5_digits.yaml",
    "tiled": "configs/lenet5_tiled_digits.yaml",
    "local": "configs/lenet5_local_digits.yaml",
}
NAMES = {"conv": "convolution", "tiled": "tiled (2x2 sets)", "local": "locally connected"}


def train(connectivity: str, seed: int, runs: Path, overrides: list[str]) -> Path:
    """One run (or the finished one already in ``runs``); its directory."""
    out = runs / f"{connectivity}-seed{seed}"
    if (out / "summary.json").exists():
        return out
    command = [sys.executable, "-m", "cnnzoo.train", "--config", CONFIGS[connectivity], "--output-dir", str(out)]
    command += ["--set", f"train.seed={seed}", "--quiet"]
    for override in overrides:
        command += ["--set", override]
    print(f"# {' '.join(command[1:])}", file=sys.stderr, flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training {connectivity} (seed {seed}) failed:\n{result.stderr.strip()}")
    return out


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def tables(results: dict[str, list[Path]], seeds: list[int]) -> str:
    lines = [
        "| C1 and C3 | parameters | final val acc % (per seed) | mean | best val acc % (per seed) | mean "
        "| s / epoch | training s |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for connectivity, runs in results.items():
        summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
        final = [s["val_acc"] for s in summaries]
        best = [s["best_val_acc"] for s in summaries]
        seconds = statistics.median(row["seconds"] for row in viz.read_metrics(runs[0]))
        lines.append(
            f"| {NAMES[connectivity]} | {summaries[0]['params']:,} | {', '.join(map(percent, final))} "
            f"| {percent(statistics.mean(final))} | {', '.join(map(percent, best))} | {percent(statistics.mean(best))} "
            f"| {seconds:.2f} | {summaries[0]['train_seconds']:.1f} |"
        )
    curves = {c: viz.read_metrics(runs[0]) for c, runs in results.items()}
    epochs = len(next(iter(curves.values())))
    lines += ["", f"Validation accuracy (%) after each epoch, seed {seeds[0]}:", ""]
    lines.append("| epoch | " + " | ".join(NAMES[c] for c in curves) + " |")
    lines.append("|---:|" + "---:|" * len(curves))
    for e in range(epochs):
        lines.append(f"| {e + 1} | " + " | ".join(percent(rows[e]["val_acc"]) for rows in curves.values()) + " |")
    return "\n".join(lines)


def figure(results: dict[str, list[Path]], path: Path, seed: int) -> None:
    plt = viz._pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.4))
    for connectivity, runs in results.items():
        rows = viz.read_metrics(runs[0])
        epochs = [r["epoch"] for r in rows]
        acc.plot(epochs, [100 * r["val_acc"] for r in rows], marker="o", label=NAMES[connectivity])
        loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=NAMES[connectivity])
    for ax, label in ((acc, "validation accuracy (%)"), (loss, "training loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"LeNet-5 on the digits, C1 and C3 shared, tiled and unshared (seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per config and seed")
    parser.add_argument("--runs", type=Path, help="where the runs go (default: a fresh temporary directory)")
    parser.add_argument("--figure", type=Path, help="write the curves as a PNG here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    args = parser.parse_args(argv)
    if args.figure is not None and not args.figure.parent.is_dir():
        parser.error(f"--figure: directory {str(args.figure.parent)!r} does not exist")
    runs = args.runs or Path(tempfile.mkdtemp(prefix="cnnzoo-sharing-"))
    runs.mkdir(parents=True, exist_ok=True)
    results = {c: [train(c, seed, runs, args.set) for seed in args.seeds] for c in CONFIGS}
    print(tables(results, args.seeds))
    if args.figure is not None:
        figure(results, args.figure, args.seeds[0])
        print(f"\nwrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
