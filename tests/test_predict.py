"""python -m cnnzoo.predict: top-k classes of image files with the training's preprocessing, class
names from the dataset, and clear errors."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cnnzoo.config import build_config
from cnnzoo.data import class_names, image_transform, open_dataset, transforms
from cnnzoo.predict import main as predict


def digit_png(path, image: torch.Tensor) -> str:
    """A validation digit (1 x 8 x 8, values 0..1) as an 8-bit greyscale PNG."""
    Image.fromarray(np.round(image[0].numpy() * 255).astype(np.uint8)).save(path)
    return str(path)


def test_images_get_the_preprocessing_of_training():
    cfg = build_config({})
    source = open_dataset(cfg.data)
    image = source.val.images[0]
    as_trained = transforms(source, 32, augment=True, train=False)(image)
    with Image.open(digit_png("/tmp/cnnzoo-digit.png", image)) as png:
        as_predicted = image_transform(cfg.data, 32)(png.convert("L"))
    assert as_predicted.shape == as_trained.shape == (1, 32, 32)
    torch.testing.assert_close(as_predicted, as_trained, atol=0.02, rtol=0)  # 8-bit rounding of 0..16/16


def test_top_classes_of_digits(lenet_run, tmp_path, capsys):
    source = open_dataset(build_config({}).data)
    paths = [digit_png(tmp_path / f"{i}.png", source.val.images[i]) for i in range(40)]
    assert predict(["--resume", str(lenet_run / "best.pt"), "--top", "3", *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[::4] == paths
    right = 0
    for i in range(40):
        rows = [line.split() for line in lines[4 * i + 1 : 4 * i + 4]]
        probabilities = [float(p) for p, _ in rows]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001
        right += rows[0][1] == str(int(source.val.labels[i]))
    assert right >= 34  # the model is ~95% right on validation digits


def test_class_names(tmp_path):
    def names(name, classes, root="data"):
        return class_names(build_config({"data": {"name": name, "root": str(root)}}).data, classes)

    assert names("digits", 10) == [str(i) for i in range(10)]
    assert names("cifar10", 10)[3] == "cat" and names("fashion_mnist", 10)[9] == "Ankle boot"
    for folder in ("tulip", "rose", "daisy"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    assert names("imagefolder", 3, tmp_path) == ["daisy", "rose", "tulip"]
    assert names("cifar100", 100, tmp_path)[:2] == ["class 0", "class 1"]  # no meta file here


def test_bad_input_is_a_clear_error(lenet_run, tmp_path, capsys):
    (tmp_path / "text.png").write_text("not an image")
    for args, message in [
        (["nowhere.png"], "image 'nowhere.png' not found"),
        ([str(tmp_path / "text.png")], "cannot read image"),
        (["--top", "0", "x.png"], "--top must be at least 1"),
    ]:
        assert predict(["--resume", str(lenet_run / "best.pt"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert predict(["--resume", str(lenet_run / "metrics.csv"), "x.png"]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err
