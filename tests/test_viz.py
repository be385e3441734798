"""cnnzoo.viz: the figures' content (their axes' data), not their pixels; and curves.png from training."""

from __future__ import annotations

import csv

import pytest
import torch

import cnnzoo
from cnnzoo import viz
from cnnzoo.errors import UserError

pytest.importorskip("matplotlib", reason="cnnzoo.viz needs the viz extra: pip install -e '.[viz]'")


def images_of(fig):
    return [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]


def test_feature_maps_show_the_layers_output_most_active_channels_first():
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    out = viz.layer_output(model, x, "conv1")[0]
    fig = viz.feature_maps(model, x, "conv1", max_maps=4)
    activity = out.abs().mean(dim=(1, 2))
    expected = activity.argsort(descending=True)[:4].tolist()
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [int(ax.get_title()) for ax in panels] == expected
    for ax, channel in zip(panels, expected):
        torch.testing.assert_close(torch.as_tensor(ax.get_images()[0].get_array()), out[channel])
    assert "conv1: 4 of 16 channels, 32x32" in fig._suptitle.get_text()
    every = viz.feature_maps(model, x, "layer1.0.conv1", max_maps=100)
    assert len(images_of(every)) == 16  # at most max_maps: every channel


def test_filters_are_the_first_convolutions_weights():
    torch.manual_seed(0)
    lenet = cnnzoo.create_model("lenet5")
    weight = lenet.features[0].weight.detach()
    shown = images_of(viz.filters(lenet))
    assert len(shown) == 6
    for image, w in zip(shown, weight):
        torch.testing.assert_close(torch.as_tensor(image), w.mean(0))
    rgb = images_of(viz.filters(cnnzoo.create_model("resnet18"), max_filters=10))
    assert len(rgb) == 10 and all(image.shape == (7, 7, 3) for image in rgb)
    assert all(image.min() == 0 and abs(image.max() - 1) < 1e-6 for image in rgb)  # each scaled on its own


def test_training_curves_plot_every_epoch(tmp_path):
    rows = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "train_acc": 0.2 * e,
            "val_loss": 2.5 / e,
            "val_acc": 0.15 * e,
            "lr": 0.1,
            "seconds": 1.0,
            "images_per_second": 100.0,
        }
        for e in (1, 2, 3)
    ]
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    loss, acc = viz.training_curves(tmp_path).axes
    assert [list(line.get_ydata()) for line in loss.get_lines()] == [[2, 1, 2 / 3], [2.5, 1.25, 2.5 / 3]]
    train_acc, val_acc = (list(line.get_ydata()) for line in acc.get_lines())
    assert train_acc == pytest.approx([0.2, 0.4, 0.6]) and val_acc == pytest.approx([0.15, 0.3, 0.45])
    assert [line.get_label() for line in acc.get_lines()] == ["train", "validation"]
    assert list(acc.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_bad_requests_are_clear_errors(tmp_path):
    model = cnnzoo.create_model("lenet5")
    with pytest.raises(UserError, match=r"no layer 'conv9' in LeNet5; its convolutions: features\.0"):
        viz.feature_maps(model, torch.randn(1, 1, 32, 32), "conv9")
    with pytest.raises(UserError, match="gives 2-D output"):
        viz.feature_maps(model, torch.randn(1, 1, 32, 32), "classifier")
    with pytest.raises(UserError, match="no metrics.csv in"):
        viz.training_curves(tmp_path)
    (tmp_path / "metrics.csv").write_text("epoch,train_loss\nx,1\n")
    with pytest.raises(UserError, match="not a metrics file"):
        viz.training_curves(tmp_path)


def test_training_writes_its_curves(tmp_path):
    import matplotlib.image

    from cnnzoo.train import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "--config",
                "configs/lenet5_digits.yaml",
                "--output-dir",
                str(out),
                "--quiet",
                "--set",
                "train.epochs=2",
                "--set",
                "sched.warmup_epochs=0",
                "--set",
                "data.limit_train=64",
                "--set",
                "data.limit_val=32",
            ]
        )
        == 0
    )
    image = matplotlib.image.imread(out / "curves.png")
    assert image.shape[0] > 200 and image.shape[1] > 600 and image[..., :3].std() > 0.05  # not blank


@pytest.mark.parametrize(
    "name,layer,unit,box",
    [
        ("lenet5", "features.3", (0, 0), (-0.5, -0.5, 14, 14)),  # C3 (0, 0): input rows 0..13
        ("lenet5", "features.3", (9, 9), (17.5, 17.5, 14, 14)),  # C3's last pixel: rows 18..31
        ("resnet20", "layer2.0.conv1", (0, 0), (-8.5, -8.5, 17, 17)),  # seven 3x3 p1, then 3x3/2 p1: centred on 0
    ],
)
def test_receptive_field_box_on_the_image(name, layer, unit, box):
    model = cnnzoo.create_model(name).eval()
    channels = model.in_channels
    x = torch.rand(1, channels, 32, 32)
    fig = viz.receptive_field(model, x, layer, unit=unit)
    ax = fig.axes[0]
    (rect,) = ax.patches
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == box
    shown = torch.as_tensor(ax.get_images()[0].get_array())
    assert shown.shape[:2] == (32, 32)
    assert f"({unit[0]}, {unit[1]})" in ax.get_title() and f"{box[2]}x{box[3]}" in ax.get_title()
    centre = viz.receptive_field(model, x, layer)  # default: the centre unit
    assert "(" in centre.axes[0].get_title()
    with pytest.raises(UserError, match="outside"):
        viz.receptive_field(model, x, layer, unit=(99, 0))
    with pytest.raises(UserError, match="no layer"):
        viz.receptive_field(model, x, "nope")
