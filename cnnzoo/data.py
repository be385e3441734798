"""The datasets ``cnnzoo.train`` knows, their standard normalisation and augmentation, and the loaders.

``DATASETS`` is the one table of the datasets: what is known about each before reading it (channels,
classes, native size, mean/std, whether flips keep the label, how it is cropped), its reader and its
class names; the config's ``data.name`` is one of its keys. ``dataset_shape`` answers from it alone
(training builds its model from it, the report its input). ``open_dataset``
reads a dataset's train and validation splits (no transforms yet); ``make_loaders`` adds the
transforms for the chosen image size and wraps both splits in DataLoaders that shard them across
processes.

On-disk layouts (under ``data.root``), as the datasets' own distributions unpack:

* ``mnist``: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; ``fashion_mnist`` the same
  under ``FashionMNIST/raw``;
* ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch}``; ``cifar100``:
  ``cifar-100-python/{train,test}`` (the "python version" pickles, read with an unpickler that only
  admits numpy arrays, so a hostile file cannot run code);
* ``imagefolder``: ``train/CLASS/*.jpg`` and ``val/CLASS/*.jpg``.

``digits`` (scikit-learn's 1,797 8x8 handwritten digits) and ``fake`` (torchvision's FakeData) need no
files.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .errors import UserError

if TYPE_CHECKING:  # annotations only: the config schema imports this module for the dataset names
    from .config import DataConfig


class DataError(UserError):
    """Dataset files that are missing, unreadable or inconsistent."""


# per-channel mean and standard deviation of each training set
MNIST_STATS = (0.1307,), (0.3081,)
FASHION_STATS = (0.2860,), (0.3530,)
CIFAR10_STATS = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_STATS = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_STATS = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FAKE_SIZES = 256, 64  # train and validation images of the fake dataset


@dataclass
class DataSource:
    """A dataset's two splits (images as tensors or PIL images, no transforms) and its shape."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    channels: int
    size: int  # the side length its images come in (the default input size)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip is a label-preserving augmentation


class TensorImages(Dataset):
    """Images held in one tensor (N, C, H, W) with their labels, and a per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.transform = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])


def split_indices(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """A fixed (seed-independent) shuffle of ``range(n)`` cut into train and validation indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]


def _digits(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    try:  # scikit-learn is needed for the digits alone: a missing one is this dataset's error, not an import's
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("data.name=digits needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    labels = torch.tensor(bunch.target)
    train_idx, val_idx = split_indices(len(images), cfg.val_fraction)
    return TensorImages(images[train_idx], labels[train_idx]), TensorImages(images[val_idx], labels[val_idx])


def _missing(name: str, where: Path, files: list[str], exc: Exception | None = None) -> DataError:
    why = f" ({exc})" if exc else ""
    return DataError(
        f"{name}: dataset files not found under {str(where)!r}{why}; expected "
        f"{', '.join(files)}. Set data.download=true to fetch them, or copy them there "
        f"(data.root={str(where.parent if name != 'imagefolder' else where)!r})"
    )


def _mnist(cfg: DataConfig, fashion: bool) -> tuple[Dataset, Dataset]:
    cls, name = (
        (torchvision.datasets.FashionMNIST, "fashion_mnist") if fashion else (torchvision.datasets.MNIST, "mnist")
    )
    folder = Path(cfg.root) / cls.__name__ / "raw"
    files = [f"{s}-{k}" for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    try:
        splits = [cls(cfg.root, train=t, download=cfg.download) for t in (True, False)]
    except RuntimeError as e:
        if cfg.download:
            raise DataError(f"{name}: download into {str(folder)!r} failed: {e}") from None
        raise _missing(name, folder, files) from None
    except (OSError, ValueError) as e:  # a failed download, or a file that is not in the idx format
        raise DataError(f"{name}: cannot read the dataset under {str(folder)!r}: {e}") from None
    train, val = (TensorImages(s.data.unsqueeze(1), s.targets) for s in splits)
    return train, val


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches: dicts, lists, bytes and numpy arrays, and nothing that runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels of one CIFAR "python version" batch file."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        data, labels = batch["data"], batch[label_key]
        images = torch.as_tensor(data).reshape(-1, 3, 32, 32)
        return images, torch.as_tensor(labels, dtype=torch.long)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"cannot read CIFAR batch {str(path)!r}: {type(e).__name__}: {e}") from None


def _cifar(cfg: DataConfig, classes: int) -> tuple[Dataset, Dataset]:
    if classes == 10:
        folder, parts, key = "cifar-10-batches-py", ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]), "labels"
    else:
        folder, parts, key = "cifar-100-python", (["train"], ["test"]), "fine_labels"
    where = Path(cfg.root) / folder
    files = parts[0] + parts[1]
    if cfg.download and not all((where / f).is_file() for f in files):
        cls = torchvision.datasets.CIFAR10 if classes == 10 else torchvision.datasets.CIFAR100
        try:
            cls(cfg.root, train=True, download=True)
        except (OSError, RuntimeError) as e:
            raise DataError(f"cifar{classes}: download into {str(where)!r} failed: {e}") from None
    if not all((where / f).is_file() for f in files):
        raise _missing(f"cifar{classes}", where, files)
    splits = []
    for names in parts:
        images, labels = zip(*(read_cifar_batch(where / f, key) for f in names))
        labels = torch.cat(labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"cifar{classes}: labels outside 0..{classes - 1} in {str(where)!r}")
        splits.append(TensorImages(torch.cat(images), labels))
    return splits[0], splits[1]


def _read_image(path: str):
    """An RGB image; a file that is not one is a DataError naming it (not a traceback from a worker)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"imagefolder: cannot read image {path!r}: {e}") from None


def _imagefolder(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    root = Path(cfg.root)
    splits = []
    for split in ("train", "val"):
        try:
            splits.append(torchvision.datasets.ImageFolder(str(root / split), loader=_read_image))
        except (FileNotFoundError, OSError) as e:
            raise _missing("imagefolder", root / split, ["one folder of images per class"], e) from None
    train, val = splits
    if train.classes != val.classes:
        raise DataError(
            f"imagefolder: train and val class folders differ under {str(root)!r}: "
            f"{sorted(set(train.classes) ^ set(val.classes))}"
        )
    return train, val


def _fake(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    size = fake_size(cfg)
    train, val = (
        torchvision.datasets.FakeData(n, (3, size, size), 10, random_offset=offset)
        for n, offset in ((FAKE_SIZES[0], 0), (FAKE_SIZES[1], FAKE_SIZES[0]))
    )
    return train, val


def fake_size(cfg: DataConfig) -> int:
    """FakeData is made at the size the config asks for (32 by default)."""
    return cfg.image_size or 32


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _digit_names(cfg: DataConfig) -> list[str]:
    return [str(i) for i in range(10)]


def _cifar100_names(cfg: DataConfig) -> list[str]:
    try:
        with open(Path(cfg.root) / "cifar-100-python" / "meta", "rb") as f:
            return list(_NumpyOnlyUnpickler(f, encoding="latin1").load()["fine_label_names"])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError):
        return []


def _folder_names(cfg: DataConfig) -> list[str]:
    train = Path(cfg.root) / "train"
    return sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before reading it, its reader (the two splits, untransformed) and
    its class names in label order (from its files where they hold them; [] where unknown).

    ``classes`` None: counted from the class folders; ``size`` None: made at the config's size;
    ``mean``/``std`` None: measured on the training split."""

    channels: int
    classes: int | None
    size: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    flip: bool  # whether a horizontal flip is a label-preserving augmentation
    read: Callable[[DataConfig], tuple[Dataset, Dataset]]
    class_names: Callable[[DataConfig], list[str]]
    # photos of any size: ImageNet's crops (random scale-and-aspect in training, resize and centre crop
    # to judge) instead of a resize to the side and padded random crops
    imagenet_crops: bool = False


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(1, 10, 8, None, None, False, _digits, _digit_names),
    "mnist": DatasetInfo(1, 10, 28, *MNIST_STATS, False, lambda c: _mnist(c, False), _digit_names),
    "fashion_mnist": DatasetInfo(
        1,
        10,
        28,
        *FASHION_STATS,
        True,
        lambda c: _mnist(c, True),
        lambda c: list(torchvision.datasets.FashionMNIST.classes),
    ),
    "cifar10": DatasetInfo(3, 10, 32, *CIFAR10_STATS, True, lambda c: _cifar(c, 10), lambda c: list(CIFAR10_CLASSES)),
    "cifar100": DatasetInfo(3, 100, 32, *CIFAR100_STATS, True, lambda c: _cifar(c, 100), _cifar100_names),
    "imagefolder": DatasetInfo(3, None, 224, *IMAGENET_STATS, True, _imagefolder, _folder_names, imagenet_crops=True),
    "fake": DatasetInfo(3, 10, None, (0.5,) * 3, (0.5,) * 3, True, _fake, lambda c: []),
}


def dataset_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """``(channels, classes, side length)`` of a dataset without reading it (imagefolder: its class
    folders, or ImageNet's 1,000 classes when there are none yet)."""
    info = DATASETS[cfg.name]
    classes = info.classes
    if classes is None:
        train = Path(cfg.root) / "train"
        classes = (sum(1 for p in train.iterdir() if p.is_dir()) if train.is_dir() else 0) or 1000
    return info.channels, classes, info.size or fake_size(cfg)


def open_dataset(cfg: DataConfig) -> DataSource:
    """The dataset named by ``cfg.name``, limited to ``cfg.limit_train`` / ``cfg.limit_val`` images."""
    info = DATASETS[cfg.name]
    train, val = info.read(cfg)
    mean, std = (
        (info.mean, info.std)
        if info.mean is not None
        else ((train.images.mean().item(),), (train.images.std().item(),))
    )
    classes = info.classes if info.classes is not None else len(train.classes)
    source = DataSource(cfg.name, train, val, classes, info.channels, info.size or fake_size(cfg), mean, std, info.flip)
    if cfg.limit_train:
        source.train = Subset(source.train, range(min(cfg.limit_train, len(source.train))))
    if cfg.limit_val:
        source.val = Subset(source.val, range(min(cfg.limit_val, len(source.val))))
    if len(source.train) == 0 or len(source.val) == 0:
        raise DataError(f"{source.name}: the training or validation split is empty")
    return source


def class_names(cfg: DataConfig, classes: int) -> list[str]:
    """The names of a dataset's ``classes`` classes, in label order: digits' and MNIST's digits,
    Fashion-MNIST's and CIFAR-10's names, CIFAR-100's from its meta file and an image folder's from
    its class folders (where the files are there), else ``class 0``, ``class 1``, ..."""
    names = DATASETS[cfg.name].class_names(cfg)
    return names if len(names) == classes else [f"class {i}" for i in range(classes)]


def normalization(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The channel means and deviations a dataset's images are normalised with (digits': measured on
    its training split, which ships with scikit-learn)."""
    info = DATASETS[cfg.name]
    if info.mean is not None:
        return info.mean, info.std
    source = open_dataset(cfg)
    return source.mean, source.std


def image_transform(cfg: DataConfig, size: int) -> T.Compose:
    """What an image of any size goes through to be judged: resized to ``size`` x ``size`` (image
    folders: resized and centre-cropped, as in validation), scaled to 0..1 and normalised as in training."""
    steps: list = [T.ToImage()]
    if DATASETS[cfg.name].imagenet_crops:
        steps += [T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size)]
    else:
        steps.append(T.Resize((size, size), antialias=True))
    return T.Compose([*steps, T.ToDtype(torch.float32, scale=True), T.Normalize(*normalization(cfg))])


def transforms(source: DataSource, size: int, augment: bool, train: bool) -> T.Compose:
    """To a float tensor at ``size`` x ``size``, augmented for training, normalised with the data's stats.

    Augmentation: random crops of the padded image (a shift of up to 1/8 of its side, the CIFAR
    recipe) for the small datasets, scale-and-aspect crops for imagefolder, plus a horizontal flip
    where the classes allow it (not for digits).
    """
    steps: list = [T.ToImage()]
    if DATASETS[source.name].imagenet_crops:
        if train and augment:
            steps.append(T.RandomResizedCrop(size, antialias=True))
        else:
            steps += [T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size)]
    else:
        if size != source.size:
            steps.append(T.Resize((size, size), antialias=True))
        if train and augment:
            steps.append(T.RandomCrop(size, padding=max(1, size // 8)))
    if train and augment and source.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(source.mean, source.std)]
    return T.Compose(steps)


def set_transform(dataset: Dataset, transform) -> None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    dataset.transform = transform


class EpochSampler(DistributedSampler):
    """A DistributedSampler that can begin its epoch part-way through: ``start`` images of this
    process's share are skipped, which is how an interrupted epoch is resumed. The order of the
    rest is the same as the uninterrupted epoch's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)


def make_loaders(
    source: DataSource, cfg: DataConfig, size: int, seed: int, rank: int = 0, world: int = 1, pin_memory: bool = False
) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders for this process.

    Training batches come from a DistributedSampler (also with one process): each epoch's shuffle is
    a function of ``seed`` and the epoch (call ``loader.sampler.set_epoch``), which is what makes
    resuming exact. Validation takes every ``world``-th image, so the processes together see each
    image exactly once.
    """
    set_transform(source.train, transforms(source, size, cfg.augment, train=True))
    set_transform(source.val, transforms(source, size, cfg.augment, train=False))
    # drop_last: the processes' shares are cut to equal length instead of padded with repeated images
    sampler = EpochSampler(source.train, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=pin_memory)
    # a last batch of one image would break batch norm; drop the incomplete batch when there is a full one
    train = DataLoader(source.train, sampler=sampler, drop_last=len(sampler) > cfg.batch_size, **common)
    val = DataLoader(source.val, sampler=range(rank, len(source.val), world), **common)
    return train, val
