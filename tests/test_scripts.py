"""The scripts run: the validation demo passes and the benchmark completes on tiny shapes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(name, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_validate_ops_passes():
    result = run_script("validate_ops.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    assert result.stdout.count(" yes") >= 2 * 21


def test_bench_ops_smoke():
    result = run_script("bench_ops.py", "--tiny", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("vgg 3x3 @56") for line in lines)
    assert any(line.startswith("max pool 3x3/2 pad 1") for line in lines)
    assert lines[-1].startswith("geomean fwd+bwd ratio:")


def test_bench_ops_imagenet_smoke():
    """--imagenet: VGG-16's and ResNet-18's distinct convolutions at 224x224 (shrunk here)."""
    result = run_script("bench_ops.py", "--imagenet", "--tiny", "--repeat", "1", "--algorithm", "direct")
    assert result.returncode == 0, result.stderr
    names = [line.split("  ")[0] for line in result.stdout.splitlines() if line.startswith(("vgg16 ", "resnet18 "))]
    assert len(names) == 20 and len(set(names)) == 20, names
    assert "vgg16 64->64 @224" in names and "resnet18 512->512 @7" in names


def test_bench_ops_kernels_smoke():
    result = run_script("bench_ops.py", "--kernels", "--tiny", "--repeat", "1", "--only", "vgg 3x3 @56")
    assert result.returncode == 0, result.stderr
    rows = [
        re.match(r"vgg 3x3 @56\s+(fwd|input grad|weight grad)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", line)
        for line in result.stdout.splitlines()
        if line.startswith("vgg 3x3 @56")
    ]
    assert [row[1] for row in rows] == ["fwd", "input grad", "weight grad"]
    for row in rows:  # (times of tiny layers print as 0.0x ms: too coarse to check the ratio against)
        assert all(float(value) > 0 for value in row.groups()[1:])


def test_bench_train_smoke():
    result = run_script("bench_train.py", "--tiny", "--repeat", "1", "--only", "lenet5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("lenet5"))
    custom_ms, native_ms, ratio = map(float, row.split()[2:5])
    # the times are printed to 0.1 ms: the ratio lies within what their rounding allows
    assert (custom_ms - 0.05) / (native_ms + 0.05) - 0.005 <= ratio <= (custom_ms + 0.05) / (native_ms - 0.05) + 0.005


@pytest.mark.slow
def test_bench_train_compile_smoke():
    """--compile --channels-last: both models compiled (about 30 s here); the memory columns read n/a."""
    args = ("--tiny", "--repeat", "1", "--only", "lenet5", "--compile", "--channels-last")
    result = run_script("bench_train.py", *args)
    assert result.returncode == 0, result.stderr
    assert "compiled, channels-last" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("lenet5")).split()
    assert float(row[2]) > 0 and float(row[3]) > 0
    assert row[7:] == ["n/a"] * 5


def test_bench_ops_overhead():
    result = run_script("bench_ops.py", "--overhead", "--repeat", "3")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[3:]]
    assert [row[0] for row in rows] == ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]
    for row in rows:
        fwd, native, added = map(float, row[-6:-3])
        assert abs(added - (fwd - native)) < 0.11


def test_bench_compile_smoke():
    result = run_script("bench_compile.py", "--models", "lenet5", "--backend", "aot_eager")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("lenet5"))
    custom, native, ratio = map(float, row.split()[1:4])
    assert custom > 0 and native > 0 and abs(ratio - custom / native) < 0.01 + 0.05 * ratio


def test_bench_compile_bad_arguments():
    result = run_script("bench_compile.py", "--models", "lenet6")
    assert result.returncode == 2 and "unknown model 'lenet6'" in result.stderr and "Traceback" not in result.stderr


def test_bench_local_smoke():
    """The locally connected and tiled operators against unfold+einsum: a row per layer and kind, ratios."""
    result = run_script("bench_local.py", "--tiny", "--repeat", "1", "--only", "lenet5 C3 b32")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("lenet5 C3 b32")]
    assert [row[3] for row in rows] == ["local", "tiled"]
    assert all(float(row[6]) > 0 and float(row[9]) > 0 for row in rows)  # the fwd and fwd+bwd ratios
    assert re.search(r"# fwd\+bwd: geomean ratio [\d.]+, worst [\d.]+", result.stdout)


def test_sharing_experiment_tables(tmp_path):
    """The experiment's tables and figure from finished runs (which it reads instead of training again)."""
    for c, params, accs in (("conv", 61706, (0.5, 0.9)), ("tiled", 69356, (0.4, 0.8)), ("local", 423038, (0.3, 0.7))):
        for seed in (0, 1):
            run = tmp_path / f"{c}-seed{seed}"
            run.mkdir()
            final = accs[1] - seed / 100
            summary = dict(val_acc=final, best_val_acc=accs[1], params=params, train_seconds=12.5)
            (run / "summary.json").write_text(json.dumps(summary))
            rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_second"]
            rows += [f"{e},{2 - e},{a},{1 - a},{a},0.1,{e},100" for e, a in ((1, accs[0]), (2, final))]
            (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    figure = tmp_path / "curves.png"
    result = run_script("sharing_experiment.py", "--seeds", "0", "1", "--runs", str(tmp_path), "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| convolution | 61,706 | 90.00, 89.00 | 89.50 | 90.00, 90.00 | 90.00 | 1.50 | 12.5 |" in lines
    assert "| locally connected | 423,038 | 70.00, 69.00 | 69.50 | 70.00, 70.00 | 70.00 | 1.50 | 12.5 |" in lines
    assert "| 2 | 90.00 | 80.00 | 70.00 |" in lines
    assert figure.read_bytes()[:4] == b"\x89PNG"


NO_CUDA = [] if torch.cuda.is_available() else [(["--device", "cuda"], "CUDA is not available")]


@pytest.mark.parametrize(
    "script,args,message",
    [
        (script, args, message)
        for script, no_match in (
            ("bench_ops.py", "no layer name contains"),
            ("bench_train.py", "no model name contains"),
            ("bench_local.py", "no layer name contains"),
        )
        for args, message in [
            (["--only", "no-such-name"], no_match),
            (["--repeat", "0"], "--repeat must be at least 1"),
            *NO_CUDA,
        ]
    ],
)
def test_bench_bad_arguments(script, args, message):
    result = run_script(script, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_explain_smoke():
    if shutil.which("chromium") is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    result = run_script("bench_explain.py", "--models", "lenet5", "--repeat", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    size, written, opened, wall = result.stdout.splitlines()[-1].split()[-4:]
    assert result.stdout.splitlines()[-1].startswith("lenet5") and 0 < float(size) < 20
    assert 0 < float(opened) <= float(wall)


def test_gpu_check_without_a_gpu_writes_the_versions_and_skips(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: make gpu-check runs the whole check")
    out = tmp_path / "gpu.md"
    done = run_script("gpu_check.py", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| GPU | driver | CUDA | torch | Triton |" in text and torch.__version__ in text
    assert "no CUDA device: every GPU part is skipped" in text


def test_gpu_check_times_the_same_calls_on_both_sides(monkeypatch):
    """The layer timings' calls (run here on the CPU): cnnzoo's input and weight gradients and aten's
    convolution_backward compute the same thing, so the ratios compare like with like."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import gpu_check
    from zoo_layers import Layer

    monkeypatch.setattr(gpu_check, "DEVICE", "cpu")
    layer = Layer("strided", "conv2d", (2, 4, 9, 9), (6, 2, 3, 3), {"stride": 2, "padding": 1, "groups": 2})
    results = {}
    for impl in ("cnnzoo", "cudnn"):
        torch.manual_seed(0)
        calls, work, _ = gpu_check.conv_calls(layer, torch.float64, impl)
        results[impl] = [calls["fwd"](), calls["dgrad"](), calls["wgrad"]()]
        assert work["fwd+bwd"] == 3 * work["fwd"] == 3 * 2 * 2 * 6 * 5 * 5 * 2 * 9
    mine, theirs = results["cnnzoo"], results["cudnn"]
    torch.testing.assert_close(mine[0], theirs[0])
    torch.testing.assert_close(mine[1], theirs[1][0])
    torch.testing.assert_close(mine[2], theirs[2][1])
    assert all(gpu_check.relative_error(m, t) < 1e-12 for m, t in zip(mine, theirs))  # the table's column
    assert gpu_check.relative_error(mine[2], theirs[2][1] * 1.5) > 0.3
    torch.manual_seed(0)
    pool, _, _ = gpu_check.pool_calls(
        Layer("max", "max_pool2d", (2, 3, 8, 8), None, {"kernel_size": 2}), torch.float64, "cnnzoo"
    )
    pool["fwd+bwd"]()


def test_bench_algorithms_smoke():
    result = run_script(
        "bench_algorithms.py",
        "--channels",
        "2",
        "--size",
        "12",
        "--batch",
        "1",
        "--rounds",
        "1",
        "--kernels",
        "3",
        "13",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["kernel", "torch", "ms", "direct"]
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["3x3", "13x13"] and all(float(v) > 0 for r in rows for v in r[1:])
    assert lines[-1].startswith(("FFT is first faster than direct at", "FFT was slower than direct"))
