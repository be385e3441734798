"""Reports: the textbook's numbers, torchvision's published MACs, receptive fields through branches."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import nn as cnn
from cnnzoo.report import main, sharing_rows, sharing_total, summarize

ROOT = Path(__file__).resolve().parents[1]


def meta(name, **kwargs):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def row(summary, name):
    return next(layer for layer in summary.layers if layer.name == name)


@pytest.mark.parametrize(
    "in_channels,out_channels,stride,macs", [(1, 1, 1, 144), (1, 1, 2, 36), (3, 1, 1, 432), (3, 2, 1, 864)]
)
def test_textbook_single_convolutions(in_channels, out_channels, stride, macs):
    """A 3x3 filter over a 6x6 input: (4x4) x (3x3) = 144 multiplications; stride 2 leaves 2x2 outputs;
    3 input channels triple it; 2 filters double that."""
    s = summarize(cnn.Conv2d(in_channels, out_channels, 3, stride=stride, bias=False), (in_channels, 6, 6))
    assert s.total_macs == macs
    assert s.total_params == out_channels * in_channels * 9
    assert s.layers[0].receptive_field == 3 and s.layers[0].jump == stride


def test_two_layer_fully_connected_network():
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 100), nn.ReLU(), nn.Linear(100, 10))
    s = summarize(net, (1, 28, 28))
    assert s.weight_params == 78_400 + 1_000 == 79_400
    assert s.total_params == 79_510 == cnnzoo.count_parameters(net)
    assert s.total_macs == 79_400
    assert row(s, "1").receptive_field is None and row(s, "0").receptive_field == 1


def test_inception_five_by_five_branch_and_its_bottleneck():
    plain = summarize(cnn.Conv2d(192, 32, 5, padding=2), (192, 28, 28))
    bottleneck = summarize(nn.Sequential(cnn.Conv2d(192, 16, 1), cnn.Conv2d(16, 32, 5, padding=2)), (192, 28, 28))
    assert plain.total_macs == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert bottleneck.total_macs == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 12_443_648
    assert 0.1 < bottleneck.total_macs / plain.total_macs < 0.11


def test_lenet5_1998_layers_match_the_paper():
    s = summarize(meta("lenet5_1998"), (1, 32, 32))
    assert [row(s, n).params for n in ("c1", "s2", "c3", "s4", "c5", "f6")] == [156, 12, 1_516, 32, 48_120, 10_164]
    assert row(s, "c1").output_shape == [1, 6, 28, 28] and row(s, "c5").output_shape == [1, 120, 1, 1]


@pytest.mark.parametrize(
    "name,gmacs",
    [("alexnet", 0.714), ("vgg16", 15.470), ("resnet18", 1.814), ("resnet50", 4.089), ("googlenet", 1.498)],
)
def test_macs_equal_torchvisions_published_figures(name, gmacs):
    assert round(summarize(meta(name), (3, 224, 224)).total_macs / 1e9, 3) == gmacs


def test_textbook_receptive_fields():
    alexnet = summarize(meta("alexnet"), (3, 224, 224))
    assert (row(alexnet, "features.12").receptive_field, row(alexnet, "features.12").jump) == (195, 32)
    vgg = summarize(meta("vgg16"), (3, 224, 224))
    assert row(vgg, "features.28").receptive_field == 196  # conv5_3
    assert row(vgg, "features.30").receptive_field == 212  # pool5
    assert [row(vgg, f"features.{i}").receptive_field for i in (0, 2, 4)] == [3, 5, 6]


class TwoPaths(nn.Module):
    """A residual sum and a concatenation: the field is the largest path's."""

    def __init__(self):
        super().__init__()
        self.a = cnn.Conv2d(1, 1, 3, padding=1)
        self.b = cnn.Conv2d(1, 1, 3, padding=1)
        self.c = cnn.Conv2d(1, 1, 1)
        self.d = cnn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        residual = self.b(self.a(x)) + x  # 5 on the long path, 1 on the shortcut
        both = torch.cat([self.c(x), residual], 1)  # 1 and 5
        return self.d(both)  # 5 + 2


def test_receptive_fields_through_branches():
    s = summarize(TwoPaths(), (1, 16, 16))
    assert [row(s, n).receptive_field for n in ("a", "b", "c", "d")] == [3, 5, 1, 7]
    assert s.layers[0].receptive_field == 7
    resnet = summarize(meta("resnet18"), (3, 224, 224))
    # 7x7/2 stem (7), 3x3/2 pool (11, jump 4), two 3x3 convolutions (19, 27); the shortcut carries 11
    assert row(resnet, "layer1.0").receptive_field == row(resnet, "layer1.0.conv2").receptive_field == 27
    inception = summarize(meta("googlenet"), (3, 224, 224))
    block = row(inception, "inception3a")
    assert block.receptive_field == max(row(inception, f"inception3a.branch{i}").receptive_field for i in (1, 2, 3, 4))


def test_json_schema_and_real_models_are_left_alone():
    model = cnnzoo.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = summarize(model, (3, 32, 32), batch_size=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a meta copy ran
    data = s.to_dict()
    for key in (
        "model",
        "input_size",
        "total_params",
        "trainable_params",
        "total_macs",
        "param_bytes",
        "activation_bytes",
        "layers",
    ):
        assert key in data
    assert data["input_size"] == [3, 32, 32] and data["param_bytes"] == 4 * 269_722
    assert data["activation_bytes"]["forward_backward"] == 2 * data["activation_bytes"]["forward"] > 0
    for layer in data["layers"]:
        assert {"name", "type", "output_shape", "params", "macs", "receptive_field", "jump"} <= set(layer)
    assert json.loads(json.dumps(data)) == data
    frozen = cnnzoo.create_model("lenet5")
    frozen.features.requires_grad_(False)
    s = summarize(frozen, (1, 32, 32))
    assert s.trainable_params == 61_706 - (156 + 2_416 + 48_120) and s.total_params == 61_706


def run(*args, capsys):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_command_line_formats(capsys):
    code, out, _ = run("alexnet", "--depth", "1", capsys=capsys)
    assert code == 0 and "features" in out and "features.0" not in out and "total MACs 714,188,480" in out
    code, out, _ = run("resnet20", "--format", "csv", capsys=capsys)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:4] == ["layer", "type", "kernel", "output shape"] and len(rows) > 20
    code, out, _ = run("vgg16", "--format", "json", "--batch-size", "8", "--input-size", "3", "64", "64", capsys=capsys)
    data = json.loads(out)
    assert data["input_size"] == [3, 64, 64] and data["batch_size"] == 8
    code, out, _ = run("lenet5", "--format", "markdown", "--set", "num_classes=5", capsys=capsys)
    assert out.startswith("| layer |") and "| 5 |" in out
    code, out, _ = run("--config", str(ROOT / "configs" / "resnet20_cifar10.yaml"), "--format", "json", capsys=capsys)
    assert json.loads(out)["input_size"] == [3, 32, 32] and json.loads(out)["total_params"] == 269_722


def test_all_models_against_published_figures(capsys):
    code, out, _ = run("--all", "--format", "csv", capsys=capsys)
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and set(rows) == set(cnnzoo.list_models())
    for name in ("alexnet", "vgg16", "resnet50", "googlenet"):
        assert rows[name]["diff"] == rows[name]["GFLOPS diff"] == "0", rows[name]  # torchvision's figures
    assert rows["vgg16"]["MACs"] == "15,470,264,320"


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope"], "unknown model 'nope'"),
        (["alexnet", "--input-size", "3", "32", "32"], "needs input of at least 63x63 pixels"),
        (["alexnet", "--input-size", "3", "0", "32"], "three positive numbers"),
        (["lenet5", "--set", "activation=gelu"], "activation must be one of"),
        (["lenet5", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["nope", "--sharing"], "unknown model 'nope'"),
        (["--all", "--sharing"], "--sharing reports one model"),
        (["lenet5", "--sharing", "--algorithms"], "two reports"),
    ],
)
def test_errors_exit_2(args, message, capsys):
    code, _, err = run(*args, capsys=capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_malformed_size_on_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "cnnzoo.report", "resnet18", "--input-size", "3", "x", "224"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "invalid int value: 'x'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("unit,last_padding", [((0, 0), 1), ((3, 5), 1), ((7, 7), 1), ((2, 8), "full")])
def test_receptive_field_box_is_where_the_gradient_reaches(unit, last_padding):
    """The box a report's receptive field, jump and start give one output pixel (centred on
    ``start + i * jump``, side ``rf``) is, clipped to the image, exactly the input pixels its value
    depends on: with positive weights, positive input and average pooling, every pixel in the box has a
    nonzero gradient and none outside it has."""
    net = nn.Sequential(
        cnn.Conv2d(1, 2, 5, stride=2, padding=2),
        cnn.AvgPool2d(3, stride=2, padding=1),
        cnn.Conv2d(2, 2, 3, padding="same", dilation=2),
        cnn.Conv2d(2, 1, 2, padding=last_padding),
    )
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.1, 1.0)
    last = row(summarize(net, (1, 29, 29)), "3")
    x = (torch.rand(1, 1, 29, 29, dtype=torch.float64) + 0.5).requires_grad_()
    out = net.double()(x)
    i, j = unit
    out[0, 0, i, j].backward()
    reached = (x.grad[0, 0] != 0).nonzero()
    rf, jump, start = last.receptive_field, last.jump, last.start
    low_i, low_j = start + i * jump - (rf - 1) / 2, start + j * jump - (rf - 1) / 2
    assert (reached[:, 0].min().item(), reached[:, 0].max().item()) == (max(0, low_i), min(28, low_i + rf - 1))
    assert (reached[:, 1].min().item(), reached[:, 1].max().item()) == (max(0, low_j), min(28, low_j + rf - 1))
    assert rf > 20 and jump == 4


def test_receptive_field_start_of_the_stems():
    """AlexNet's 11x11/4 stem with padding 2: output pixel 0 is centred on input pixel 5 - 2 = 3."""
    s = summarize(meta("alexnet"), (3, 224, 224))
    assert (row(s, "features.0").receptive_field, row(s, "features.0").start) == (11, 3.0)
    resnet = summarize(meta("resnet18"), (3, 224, 224))
    assert row(resnet, "conv1").start == 0.0 and row(resnet, "maxpool").start == 0.0


# --- --algorithms ----------------------------------------------------------------------------------


def test_algorithms_report_counts_errors_and_times(capsys):
    """Direct's multiplications are the report's MACs; each algorithm's error is float32-sized; Winograd
    is '-' where it does not apply; --time adds torch's and each algorithm's milliseconds."""
    assert main(["resnet20", "--algorithms", "--time", "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    *layers, total = table
    summary = summarize(meta("resnet20"), [3, 32, 32])
    convs = {r.name: r.macs for r in summary.layers if r.type == "Conv2d"}
    assert [r["layer"] for r in layers] == list(convs)
    for r in layers:
        assert float(r["direct Mmul"]) * 1e6 == pytest.approx(convs[r["layer"]], rel=5e-3)  # (3 decimals)
        assert r["im2col Mmul"] == r["direct Mmul"]
        assert r["auto"] == "direct"
        if r["kernel"] == "3x3/1":
            assert float(r["F2 Mmul"]) < float(r["direct Mmul"]) / 2 and float(r["F4 Mmul"]) < float(r["F2 Mmul"])
            assert 0 < float(r["F4 error"]) < 1e-4 and 0 < float(r["F2 error"]) < 1e-5
        else:
            assert r["F2 Mmul"] == r["F4 error"] == r["F4 ms"] == "-"
        assert 0 < float(r["direct error"]) < 1e-5 and 0 < float(r["fft error"]) < 1e-5
        assert float(r["torch ms"]) > 0 and float(r["fft ms"]) > 0
    assert total["layer"] == "total"
    assert float(total["direct Mmul"].replace(",", "")) * 1e6 == pytest.approx(sum(convs.values()), rel=5e-3)


def test_algorithms_textbook_counts():
    """The introductory examples: a 3x3 filter over a 6x6 image, 3 channels, 2 filters."""
    from cnnzoo.ops.algorithms import multiplications

    assert [multiplications("direct", (1, c, 6, 6), (o, c, 3, 3)) for c, o in ((1, 1), (3, 1), (3, 2))] == [
        144,
        432,
        864,
    ]
    assert multiplications("winograd_f2", (1, 1, 6, 6), (1, 1, 3, 3)) == 64  # 4 tiles of 2x2 outputs, 16 each
    assert multiplications("winograd_f4", (1, 1, 6, 6), (1, 1, 3, 3)) == 36  # one 4x4 tile
    assert multiplications("winograd", (1, 1, 6, 6), (1, 1, 3, 3), stride=(2, 2)) is None
    # FFT: 4 x (6 x 4) frequency products + 3 real transforms of 36 points at 36 log2 36 each
    assert multiplications("fft", (1, 1, 6, 6), (1, 1, 3, 3)) == int(4 * 24 + 3 * 36 * 5.169925001442312)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["lenet5", "--time"], "--time goes with --algorithms"),
        (["--all", "--algorithms"], "--algorithms reports one model"),
    ],
)
def test_algorithms_report_bad_flags(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# --- locally connected, tiled and true convolution layers -------------------------------------------


def test_local_tiled_and_true_convolution_rows():
    """Each new layer's row reads like a convolution's: the MACs and receptive field of its geometry,
    its own parameters, and the kernel column says how it shares its kernels."""
    net = nn.Sequential(
        cnn.LocallyConnected2d(2, 3, 3, input_size=(9, 8), stride=2, padding=1),  # 2x9x8 -> 3x5x4
        cnn.TiledConv2d(3, 6, 2, tile_size=(3, 2), dilation=2, groups=3),  # -> 6x3x2
        cnn.Convolve2d(6, 2, 2, padding="full"),  # -> 2x4x3
    )
    s = summarize(net, (2, 9, 8))
    local, tiled, true = (row(s, n) for n in ("0", "1", "2"))
    assert [r.output_shape[1:] for r in (local, tiled, true)] == [[3, 5, 4], [6, 3, 2], [2, 4, 3]]
    assert local.params == 5 * 4 * 3 * (2 * 9) + 5 * 4 * 3 == 1_140  # a kernel and a bias per position
    assert tiled.params == 2 * 3 * 6 * (1 * 4) + 6 == 150  # six kernel sets of 1x2x2, one bias per channel
    assert true.params == 2 * 6 * 4 + 2 == 50
    assert (
        [r.macs for r in (local, tiled, true)] == [5 * 4 * 3 * 18, 3 * 2 * 6 * 4, 4 * 3 * 2 * 24] == [1_080, 144, 576]
    )
    assert s.total_macs == 1_800
    # 3 (jump 2); a 2x2 kernel dilated by 2 spans 3 pixels: 3 + 2 * 2 = 7; then 2x2 undilated: 7 + 1 * 2 = 9
    assert [(r.receptive_field, r.jump) for r in (local, tiled, true)] == [(3, 2), (7, 2), (9, 2)]
    assert [r.kernel for r in (local, tiled, true)] == [
        "3x3/2 p1, local",
        "2x2/1 p0 g3, tiled 3x2",
        "2x2/1 pfull, true conv",
    ]


@pytest.mark.parametrize("connectivity,params", [("conv", 61_706), ("tiled", 69_356), ("local", 423_038)])
def test_lenet5_connectivities_cost_the_same_arithmetic(connectivity, params):
    s = summarize(meta("lenet5", connectivity=connectivity), (1, 32, 32))
    assert s.total_params == params and s.total_macs == 416_520
    assert [row(s, f"features.{i}").macs for i in (0, 3, 6)] == [117_600, 240_000, 48_000]
    assert [row(s, f"features.{i}").receptive_field for i in (0, 3, 6)] == [5, 14, 32]


def test_config_with_model_kwargs_reports_the_local_lenet5(capsys):
    code, out, _ = run("--config", str(ROOT / "configs" / "lenet5_local_digits.yaml"), capsys=capsys)
    assert code == 0 and "total params 423,038" in out and "5x5/1 p0, local" in out


# --- --sharing ---------------------------------------------------------------------------------------

# LeNet-5's conv layers by hand: conv, tiled 2x2, local and FC parameters, then the multiplications of
# the first three and of FC (see docs/reports.md)
LENET5_SHARING = [
    ("features.0", [1, 32, 32], [6, 28, 28], 156, 606, 122_304, 4_821_600, 117_600, 4_816_896),
    ("features.3", [6, 14, 14], [16, 10, 10], 2_416, 9_616, 241_600, 1_883_200, 240_000, 1_881_600),
    ("features.6", [16, 5, 5], [120, 1, 1], 48_120, 48_120, 48_120, 48_120, 48_000, 48_000),
]


def _costs(r):
    return (r.layer, r.input_shape, r.output_shape, r.conv, r.tiled, r.local, r.fc, r.mults, r.fc_mults)


@pytest.mark.parametrize("connectivity", ["conv", "tiled", "local"])
def test_sharing_lenet5_textbook_figures(connectivity):
    """The counts depend on the layer's shapes only, not on how the model at hand shares its kernels."""
    rows = sharing_rows(meta("lenet5", connectivity=connectivity), (1, 32, 32))
    assert [_costs(r) for r in rows] == LENET5_SHARING
    total = sharing_total(rows)
    assert (total.conv, total.tiled, total.local, total.fc) == (50_692, 58_342, 412_024, 6_752_920)
    assert (total.mults, total.fc_mults) == (405_600, 6_746_496)


def test_sharing_matches_the_layers_own_parameters_and_macs():
    """A layer's own kind's column is its parameter count; the mults are the report's MACs; biases only
    where the layer has one; a tile larger than the output plane is clipped."""
    net = nn.Sequential(
        cnn.LocallyConnected2d(2, 3, 3, input_size=(9, 8), stride=2, padding=1),  # 2x9x8 -> 3x5x4, K = 18
        cnn.TiledConv2d(3, 4, 3, tile_size=2, padding=1),  # 3x5x4 -> 4x5x4, K = 27
        cnn.Conv2d(4, 5, (5, 4), bias=False),  # 4x5x4 -> 5x1x1, K = 80
    )
    s = summarize(net, (2, 9, 8))
    local, tiled, conv = sharing_rows(net, (2, 9, 8))
    assert (local.local, tiled.tiled, conv.conv) == (row(s, "0").params, row(s, "1").params, row(s, "2").params)
    assert [r.mults for r in (local, tiled, conv)] == [row(s, n).macs for n in "012"] == [1_080, 2_160, 400]
    assert (local.conv, local.tiled, local.local, local.fc) == (3 * 18 + 3, 4 * 3 * 18 + 3, 1_140, 144 * 60 + 60)
    assert (tiled.conv, tiled.tiled, tiled.local, tiled.fc) == (112, 4 * 4 * 27 + 4, 20 * 4 * 28, 60 * 80 + 80)
    assert (local.fc_mults, tiled.fc_mults) == (144 * 60, 60 * 80)
    # one output position and no bias: all four are the same 400 weights, the tile clipped to one set
    assert (conv.conv, conv.tiled, conv.local, conv.fc, conv.mults, conv.fc_mults) == (400,) * 6


def test_sharing_large_models_in_exact_integers():
    rows = sharing_rows(meta("vgg16"), (3, 224, 224))
    first = rows[0]
    assert first.fc == 3 * 224 * 224 * 64 * 224 * 224 + 64 * 224 * 224 == 483_385_147_392 + 3_211_264
    assert sharing_total(rows).mults == sum(
        r.macs for r in summarize(meta("vgg16"), (3, 224, 224)).layers if r.type == "Conv2d"
    )


def test_sharing_on_the_command_line(capsys):
    code, out, _ = run("lenet5", "--sharing", capsys=capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["layer", "kernel", "input", "->"]
    assert lines[2].split() == ["features.0", "5x5/1", "p0", "1x32x32", "->", "6x28x28", "156", "606", "122,304"] + [
        "4,821,600",
        "784.0x",
        "30,907.7x",
        "117,600",
        "4,816,896",
    ]
    assert lines[5].split() == [
        "total",
        "50,692",
        "58,342",
        "412,024",
        "6,752,920",
        "8.1x",
        "133.2x",
        "405,600",
        "6,746,496",
    ]
    assert "16.6x as many" in out
    code, out, _ = run("lenet5", "--set", "connectivity=local", "--sharing", "--format", "csv", capsys=capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["layer"] for r in table] == ["features.0", "features.3", "features.6", "total"]
    assert table[0]["kernel"] == "5x5/1 p0, local" and table[-1]["FC"] == "6,752,920"
    code, out, _ = run("alexnet", "--sharing", "--format", "json", capsys=capsys)
    data = json.loads(out)
    assert code == 0 and len(data["layers"]) == 5 and data["total"]["mults"] == 655_566_528
    code, out, _ = run("lenet5", "--sharing", "--format", "markdown", capsys=capsys)
    assert code == 0 and out.startswith("| layer | kernel |") and "| total |" in out
