"""The datasets, read offline from tiny files written in their real on-disk formats."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.config import DataConfig
from cnnzoo.data import DataError, make_loaders, open_dataset, split_indices, transforms

from .helpers import Payload


def write_idx(path, array: np.ndarray) -> None:
    """An MNIST idx file: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian sizes, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_mnist(root, folder="MNIST", n=(12, 6)):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "t10k"), n):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)


def write_cifar_batch(path, images: np.ndarray, labels: list[int], key: str) -> None:
    """A CIFAR "python version" batch: a pickled dict whose 'data' rows are the R, G and B planes."""
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), key: labels, "batch_label": "tiny"}, f, protocol=2)


def make_cifar(root, classes=10, per_batch=4):
    rng = np.random.default_rng(1)
    if classes == 10:
        folder, names, key = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
        )
    else:
        folder, names, key = root / "cifar-100-python", ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, images, [(i + j) % classes for j in range(per_batch)], key)
    return folder


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def test_digits_split_is_fixed_and_disjoint():
    source = open_dataset(cfg(name="digits"))
    assert (len(source.train), len(source.val)) == (1438, 359)
    assert (source.num_classes, source.channels, source.size) == (10, 1, 8)
    train_idx, val_idx = split_indices(1797, 0.2)
    assert not set(train_idx) & set(val_idx) and len(set(train_idx) | set(val_idx)) == 1797
    assert split_indices(1797, 0.2) == (train_idx, val_idx)
    x, y = source.train[0]
    assert x.shape == (1, 8, 8) and 0 <= x.min() and x.max() <= 1 and 0 <= y < 10


def test_transforms_resize_normalise_and_augment():
    source = open_dataset(cfg(name="digits"))
    images = torch.stack([transforms(source, 32, False, train=False)(source.train[i][0]) for i in range(400)])
    assert images.shape == (400, 1, 32, 32) and images.dtype == torch.float32
    assert abs(images.mean().item()) < 0.1 and 0.8 < images.std().item() < 1.2  # normalised
    plain = transforms(source, 32, True, train=False)(source.train[0][0])
    torch.testing.assert_close(plain, images[0])  # validation images are never augmented
    torch.manual_seed(0)
    shifted = [transforms(source, 32, True, train=True)(source.train[0][0]) for _ in range(8)]
    assert any(not torch.equal(s, images[0]) for s in shifted)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_from_idx_files(tmp_path, name, folder):
    make_mnist(tmp_path, folder)
    source = open_dataset(cfg(name=name, root=str(tmp_path)))
    assert (len(source.train), len(source.val), source.channels, source.size) == (12, 6, 1, 28)
    assert [source.train[i][1] for i in range(12)] == [i % 10 for i in range(12)]
    train, val = make_loaders(source, cfg(name=name, batch_size=4), 32, seed=0)
    x, y = next(iter(train))
    assert x.shape == (4, 1, 32, 32) and y.dtype == torch.long


def test_cifar10_pixels_and_labels(tmp_path):
    folder = make_cifar(tmp_path)
    source = open_dataset(cfg(name="cifar10", root=str(tmp_path)))
    assert (len(source.train), len(source.val), source.channels, source.num_classes) == (20, 4, 3, 10)
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)
    image, label = source.train[1]
    assert label == raw["labels"][1]
    # row 1 holds 1,024 red values, then green, then blue, each plane row by row
    assert image[0, 0, 5] == raw["data"][1][5] and image[1, 2, 3] == raw["data"][1][1024 + 2 * 32 + 3]
    assert image[2, 31, 31] == raw["data"][1][3071]


def test_cifar100_fine_labels(tmp_path):
    make_cifar(tmp_path, classes=100)
    source = open_dataset(cfg(name="cifar100", root=str(tmp_path)))
    assert (len(source.train), len(source.val), source.num_classes) == (4, 4, 100)


def test_cifar_labels_out_of_range(tmp_path):
    folder = make_cifar(tmp_path)
    write_cifar_batch(folder / "test_batch", np.zeros((2, 3, 32, 32), np.uint8), [3, 12], "labels")
    with pytest.raises(DataError, match="labels outside 0..9"):
        open_dataset(cfg(name="cifar10", root=str(tmp_path)))


def test_hostile_cifar_batch_runs_no_code(tmp_path):
    folder = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": Payload(marker), "labels": [0]}, f)
    with pytest.raises(DataError, match="data_batch_3.*refusing to load io.open"):
        open_dataset(cfg(name="cifar10", root=str(tmp_path)))
    assert not marker.exists()


def test_truncated_cifar_batch(tmp_path):
    folder = make_cifar(tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read CIFAR batch"):
        open_dataset(cfg(name="cifar10", root=str(tmp_path)))


def test_imagefolder(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40 + i, 30), color).save(tmp_path / split / cls / f"{i}.png")
    source = open_dataset(cfg(name="imagefolder", root=str(tmp_path)))
    assert (len(source.train), len(source.val), source.num_classes, source.channels) == (6, 4, 2, 3)
    for augment in (True, False):
        train, val = make_loaders(source, cfg(name="imagefolder", batch_size=2, augment=augment), 24, seed=0)
        assert next(iter(train))[0].shape == (2, 3, 24, 24)
        x, y = next(iter(val))
        assert x.shape == (2, 3, 24, 24) and y.tolist() == [0, 0]
        assert x[0, 0].mean() > x[0, 2].mean()  # the cat is red


def test_imagefolder_classes_must_match(tmp_path):
    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "cow")):
        (tmp_path / split / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "0.png")
    with pytest.raises(DataError, match=r"class folders differ .*\['cow', 'dog'\]"):
        open_dataset(cfg(name="imagefolder", root=str(tmp_path)))


@pytest.mark.parametrize(
    "name,where",
    [
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("imagefolder", "train"),
    ],
)
def test_missing_files_say_where_and_how(tmp_path, name, where):
    with pytest.raises(DataError) as info:
        open_dataset(cfg(name=name, root=str(tmp_path), download=False))
    message = str(info.value)
    assert str(tmp_path / where) in message and "not found" in message
    if name != "imagefolder":
        assert "data.download=true" in message
    assert not any(tmp_path.iterdir()) or name in ("mnist", "fashion_mnist")  # nothing written but torchvision's


def test_fake_and_limits():
    source = open_dataset(cfg(name="fake", image_size=20, limit_train=10, limit_val=3))
    assert (len(source.train), len(source.val), source.size, source.channels) == (10, 3, 20, 3)
    train, _ = make_loaders(source, cfg(name="fake", batch_size=4), 20, seed=0)
    assert next(iter(train))[0].shape == (4, 3, 20, 20)


def test_loaders_shard_across_processes():
    source = open_dataset(cfg(name="digits", limit_train=50, limit_val=11))
    seen_val, seen_train = [], []
    for rank in range(3):
        train, val = make_loaders(source, cfg(name="digits", batch_size=4), 32, seed=5, rank=rank, world=3)
        seen_val += list(val.sampler)
        train.sampler.set_epoch(2)
        seen_train += list(train.sampler)
    assert sorted(seen_val) == list(range(11))  # each validation image exactly once
    assert len(seen_train) == len(set(seen_train)) == 48  # equal shares of 16, no image repeated
    train, _ = make_loaders(source, cfg(name="digits", batch_size=4), 32, seed=5)
    orders = []
    for epoch in (0, 1, 0):
        train.sampler.set_epoch(epoch)
        orders.append(list(train.sampler))
    assert orders[0] == orders[2] != orders[1]  # the shuffle is a function of seed and epoch
