"""Image files: a class-per-folder dataset (``--data folder:DIR``), decoding one image
for ``pycnn predict``, and a tiny sample set built from images scikit-image ships.

A folder data set is laid out as torchvision's ``ImageFolder`` and Keras's
``image_dataset_from_directory`` expect::

    DIR/cat/001.jpg  DIR/cat/002.png  DIR/dog/a.bmp ...         (split by --val-split)
    DIR/train/cat/...  DIR/val/cat/...   (or test/)             (the split is given)

Class names are the sub-folder names, sorted. Every image (JPEG, PNG, BMP; greyscale,
RGB, palette, CMYK, 16-bit, with or without alpha) is decoded once with Pillow: its
shorter side resized to ``size``, the centre ``size`` x ``size`` cut out, stored as
uint8. The array is cached on disk (``$PYCNN_CACHE_DIR``, default
``~/.cache/pycnn/images``), keyed by the files' paths, sizes and times, so a second run
decodes nothing. A file Pillow cannot read, a truncated JPEG or one larger than
``MAX_PIXELS`` is reported by path and skipped.

A set too large for that (its decoded pixels over ``PYCNN_IMAGE_MEMORY``, default 4 GiB:
an ImageNet at 224 x 224 is 180 GiB) is streamed instead (:class:`StreamingFolder`): the
files' headers are read once (a few milliseconds each: size, mode, readable), the
normalisation is computed from a sample of 2,000 training images, and each batch is
decoded when it is asked for, by a pool of threads (Pillow's decoders release the GIL),
while the loader prefetches the next batch during the current step. A file that fails to
decode then is reported once by path and left out of its batch.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLIT_FOLDERS = (("train", "val"), ("train", "test"))
# Pillow refuses images over twice its MAX_IMAGE_PIXELS (about 179 megapixels) as a
# possible decompression bomb; pycnn stops earlier, at 100 megapixels (a 10,000 x
# 10,000 photo), where one decode already needs 300 MB.
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """One image file could not be used; the message names the file and why."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:                       # Pillow comes with matplotlib
        raise ImportError("image folders need Pillow (pip install pillow)") from e
    return Image


def _to_8bit(img, sixteen=False):
    """A Pillow image of any mode as (uint8 array (H, W, 3) or (H, W), was it grey);
    ``sixteen``: the file held 16 bits per sample."""
    Image = _pil()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit greyscale PNGs (and 32-bit int/float TIFF-like modes): scale the full
        # range to 8 bits; Pillow's convert("L") would clip everything above 255 to white
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if sixteen or mode.startswith("I;16") or a.max() > 255 else 255.0
        if mode == "F" and a.max() <= 1.0:
            top = 1.0
        return np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8), True
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8), True
    if mode == "P":
        img = img.convert("RGBA")
    if mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa", "LA"):
        # transparent pixels over white, as a browser shows them
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8), False  # RGB, CMYK, YCbCr, HSV...


def decode_image(path, size, channels=3):
    """The image at ``path`` as a uint8 array (channels, size, size): shorter side resized
    to ``size`` (bilinear, antialiased), centre crop. ``channels`` 1 turns colour into
    luminance, 3 repeats grey. Raises :class:`ImageError` naming the file."""
    pixels, _ = _decode(path, size)
    return _channels(pixels, channels)


def _channels(pixels, channels):
    if channels == 1:
        if pixels.ndim == 3:   # ITU-R 601 luma, as Pillow's convert("L")
            pixels = np.round(pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        return pixels[None]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


@contextlib.contextmanager
def _opened(path):
    """The image at ``path`` opened by Pillow (its header read, no pixels yet), after the
    size check; every failure, then or inside the block, as an ImageError naming the file."""
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: {w} x {h} pixels, more than the "
                                     f"{MAX_PIXELS:,} pycnn decodes (resize it first)")
                yield img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: too large to decode safely ({e})") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (corrupt, or not "
                         f"JPEG/PNG/BMP)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{path}: cannot decode ({e})") from None


def _decode(path, size):
    """(uint8 (size, size[, 3]) pixels, grey?) of one file."""
    with _opened(path) as img:
        if img.format == "JPEG":
            img.draft(img.mode, (size, size))   # decode a large JPEG at 1/2..1/8 scale
        img.load()
        sixteen = img.mode.startswith("I;16")
        return _to_8bit(_fit(img, size), sixteen)


def _fit(img, size):
    """Shorter side to ``size``, then the centre square (torchvision's Resize + CenterCrop)."""
    Image = _pil()
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image of size {w} x {h}")
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if img.mode in ("P", "1"):
        img = img.convert("RGBA" if img.mode == "P" else "L")
    if img.mode == "CMYK":
        img = img.convert("RGB")
    if img.mode.startswith("I;16"):
        img = img.convert("I")           # resize works on 32-bit ints, not on I;16
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


# --------------------------------------------------------------------------- the folder

def scan_folder(root):
    """(classes, [(path, class index)], split) of a class-per-folder tree, where split is
    None or a dict {"train": [...], "test": [...]} for a tree with train/ and val/ (or
    test/). Errors name the folder and what was expected."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"folder: directory not found: {root}")
    entries = sorted(os.listdir(root))
    dirs = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    for train_name, test_name in SPLIT_FOLDERS:
        if train_name in dirs and test_name in dirs:
            classes, train = _scan_classes(os.path.join(root, train_name))
            test_classes, test = _scan_classes(os.path.join(root, test_name), classes)
            return classes, None, {"train": train, "test": test}
    classes, files = _scan_classes(root)
    return classes, files, None


def _scan_classes(root, expected=None):
    entries = sorted(os.listdir(root))
    dirs = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    loose = [e for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)]
    if not dirs:
        hint = (f"; it holds {len(loose)} image file(s) directly: move them into one "
                f"sub-folder per class" if loose else "")
        raise ValueError(f"{root}: expected one sub-folder per class (DIR/cat/*.jpg, "
                         f"DIR/dog/*.jpg), found no sub-folders{hint}")
    classes, files = [], []
    for name in dirs:
        found = []
        for dirpath, subdirs, names in os.walk(os.path.join(root, name)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found += [os.path.join(dirpath, n) for n in sorted(names)
                      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        if not found:
            print(f"pycnn: {os.path.join(root, name)}: no .jpg/.jpeg/.png/.bmp files; "
                  f"not a class", file=sys.stderr)
            continue
        files += [(p, len(classes)) for p in found]
        classes.append(name)
    if expected is not None:
        if classes != list(expected):
            raise ValueError(f"{root}: expected the classes of the training folder "
                             f"({', '.join(expected)}), got {', '.join(classes) or 'none'}")
    elif len(classes) < 2:
        got = f"one ({classes[0]})" if classes else "none"
        raise ValueError(f"{root}: expected at least two class sub-folders holding images, "
                         f"got {got}")
    return classes, files


def _cache_dir():
    return os.environ.get("PYCNN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "pycnn", "images")


def _cache_key(files, size):
    h = hashlib.sha256(f"pycnn-images-v1 {size}\n".encode())
    for path, label in files:
        try:
            st = os.stat(path)
            h.update(f"{os.path.abspath(path)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(path)}\0missing\n".encode())
    return h.hexdigest()[:24]


def _progress_bar(total, desc, progress):
    """A tqdm bar over ``total`` images on a terminal, else None (never fail over a bar)."""
    if not (progress and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", leave=False)


def decode_all(files, size, progress=True, workers=None, log=None):
    """Decode ``files`` [(path, label)] to (uint8 (N, 3, size, size), grey flags (N,),
    labels (N,), skipped [(path, reason)]), with a thread pool (Pillow's decoders
    release the GIL) and a progress bar on a terminal; read from the cache if there."""
    key = _cache_key(files, size)
    cache = os.path.join(_cache_dir(), key + ".npz")
    try:
        with np.load(cache, allow_pickle=False) as z:
            skipped = json.loads(str(z["skipped"]))
            return z["x"], z["grey"], z["y"], [tuple(s) for s in skipped], cache
    except (OSError, KeyError, ValueError, EOFError):
        pass
    out = np.zeros((len(files), 3, size, size), np.uint8)
    grey = np.zeros(len(files), bool)
    ok = np.zeros(len(files), bool)
    skipped = []
    bar = _progress_bar(len(files), "decoding images", progress)

    def one(i):
        pixels, is_grey = _decode(files[i][0], size)
        return i, _channels(pixels, 3), is_grey

    workers = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i) for i in range(len(files))]
        for k, f in enumerate(futures):
            try:
                i, pixels, is_grey = f.result()
                out[i], grey[i], ok[i] = pixels, is_grey, True
            except ImageError as e:
                skipped.append((files[k][0], str(e)))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    labels = np.array([label for _, label in files], np.int64)
    x, grey, labels = out[ok], grey[ok], labels[ok]
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = cache + f".{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x, grey=grey, y=labels, skipped=np.array(json.dumps(skipped)))
        os.replace(tmp, cache)
    except OSError as e:                     # a read-only home: decode again next time
        if log is not None:
            log(f"pycnn: could not write the image cache {cache}: {e.strerror or e}")
        cache = None
    return x, grey, labels, skipped, cache


def _stratified_split(labels, fraction, seed):
    """Indices (train, test): ``fraction`` of each class (at least one image if the class
    has two or more) to test, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def channel_stats(x_uint8):
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1]."""
    n = x_uint8.shape[0]
    step = max(1, n // 2000)                  # a sample of at most ~2,000 images suffices
    sample = x_uint8[::step].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 2, 3))
    std = sample.std(axis=(0, 2, 3))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


#: Decoded pixels (N x C x size x size bytes) above which a folder streams (bytes).
def memory_limit() -> int:
    value = os.environ.get("PYCNN_IMAGE_MEMORY", "")
    if not value:
        return 4 << 30
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(f"PYCNN_IMAGE_MEMORY: expected a number of bytes, got {value!r}") from None
    if limit < 0:
        raise ValueError(f"PYCNN_IMAGE_MEMORY: expected a number of bytes >= 0, got {value!r}")
    return limit


def _probe(path):
    """(grey?, None) from the header of one file, or (None, reason): no pixels decoded."""
    try:
        with _opened(path) as img:
            w, h = img.size
            if w < 1 or h < 1:
                return None, f"{path}: image of size {w} x {h}"
            return img.mode in ("L", "1", "LA", "I", "I;16", "I;16B", "I;16L", "F"), None
    except ImageError as e:
        return None, str(e)


class StreamingFolder:
    """A folder data set decoded batch by batch (see the module docstring): indexable like
    :class:`pycnn.data.Dataset` (an int, a slice or an index array gives float32 images,
    normalised, and int64 labels), with its ``classes``, ``mean``, ``std``, ``name``,
    ``skipped`` and ``sample_shape``. ``prefetch`` tells :class:`pycnn.data.DataLoader`
    to decode the next batch while the current one trains."""

    prefetch = True

    def __init__(self, files, labels, classes, name, size, channels, mean, std, workers=None):
        self.files = list(files)
        self.y = np.asarray(labels, np.int64)
        self.classes = tuple(classes)
        self.name = name
        self.size, self.channels = int(size), int(channels)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(v) for v in std)
        self.skipped: list = []
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._pool = None
        self._failed: dict[str, str] = {}
        m = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1) * 255.0
        d = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1) * 255.0
        self._norm = (m, d)

    def __len__(self):
        return len(self.files)

    @property
    def sample_shape(self):
        return (self.channels, self.size, self.size)

    @property
    def num_classes(self):
        return len(self.classes)

    def _decode_many(self, indices):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers)

        def one(i):
            try:
                return _channels(_decode(self.files[i], self.size)[0], self.channels)
            except ImageError as e:
                return str(e)
        return list(self._pool.map(one, indices))

    def pixels(self, index):
        """uint8 pixels (n, C, size, size) and labels of ``index``, files that fail to decode
        left out (each reported once)."""
        one = np.isscalar(index) or isinstance(index, (int, np.integer))
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        out, keep = [], []
        for i, got in zip(idx, self._decode_many(idx.tolist())):
            if isinstance(got, str):
                if self.files[i] not in self._failed:
                    self._failed[self.files[i]] = got
                    self.skipped.append((self.files[i], got))
                    print(f"pycnn: skipped {got}", file=sys.stderr)
                continue
            out.append(got)
            keep.append(i)
        x = (np.stack(out) if out else
             np.zeros((0, self.channels, self.size, self.size), np.uint8))
        if one and len(keep) != 1:
            raise ImageError(self._failed.get(self.files[int(idx[0])], "cannot decode"))
        return x, self.y[np.asarray(keep, np.int64)]

    def __getitem__(self, index):
        one = np.isscalar(index) or isinstance(index, (int, np.integer))
        x, y = self.pixels(index)
        m, d = self._norm
        x = (x.astype(np.float32) - m) / d
        return (x[0], y[0]) if one else (x, y)

    def images(self, index=slice(None)):
        return self[index][0]

    def take(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        return StreamingFolder(self.files[:n], self.y[:n], self.classes, self.name, self.size,
                               self.channels, self.mean, self.std, self.workers)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def __repr__(self):
        return (f"StreamingFolder({self.name!r}, {len(self)} images of shape {self.sample_shape}, "
                f"{self.num_classes} classes)")


def _load_streaming(root, classes, all_files, split, size, val_split, seed, channels, mean, std,
                    progress, log, start):
    """load_folder's streaming path: headers read, a stratified split, statistics from a
    sample, two StreamingFolders."""
    bar = _progress_bar(len(all_files), "reading image headers", progress)
    with concurrent.futures.ThreadPoolExecutor(min(16, 2 * (os.cpu_count() or 1))) as pool:
        probes = []
        for r in pool.map(_probe, [p for p, _ in all_files], chunksize=64):
            probes.append(r)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    skipped = [(p, reason) for (p, _), (_, reason) in zip(all_files, probes) if reason]
    for path, reason in skipped:
        log(f"pycnn: skipped {reason}")
    ok = [i for i, (g, reason) in enumerate(probes) if reason is None]
    if not ok:
        raise ValueError(f"{root}: none of its {len(all_files)} image files could be read")
    paths_ok = [all_files[i][0] for i in ok]
    labels = np.array([all_files[i][1] for i in ok], np.int64)
    present = np.unique(labels)
    if len(present) < len(classes):
        gone = [classes[c] for c in range(len(classes)) if c not in present]
        raise ValueError(f"{root}: no readable image in class folder(s) {', '.join(gone)}")
    if channels is None:
        channels = 1 if all(probes[i][0] for i in ok) else 3
    if split is None:
        if val_split == 0:
            raise ValueError("val_split: 0 leaves no images to evaluate on; give a fraction "
                             "such as 0.2, or train/ and val/ sub-folders")
        train_idx, test_idx = _stratified_split(labels, val_split, seed)
    else:
        n_train = sum(1 for i in ok if i < len(split["train"]))
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(ok))
    if len(test_idx) == 0:
        raise ValueError(f"{root}: expected images to hold out for validation, got none "
                         f"({len(ok)} readable images)")
    name = f"folder:{root}"
    train = StreamingFolder([paths_ok[i] for i in train_idx], labels[train_idx], classes,
                            f"{name}/train", size, channels, (0.0,) * channels, (1 / 255,) * channels)
    if mean is None or std is None:
        sample_idx = np.random.default_rng(seed).permutation(len(train))[:2000]
        m, s_ = channel_stats(train.pixels(np.sort(sample_idx))[0])
        mean = m if mean is None else mean
        std = s_ if std is None else std
    mean, std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
    log(f"{name}: {len(classes)} classes ({_short_list(classes)}), {len(ok)} images "
        f"({len(train_idx)} train / {len(test_idx)} val) as {channels}x{size}x{size}, streamed "
        f"(decoded pixels over PYCNN_IMAGE_MEMORY={memory_limit():,} bytes)"
        + (f", {len(skipped)} skipped" if skipped else "")
        + f"; headers read in {time.perf_counter() - start:.1f} s")
    out = []
    for idx, part in ((train_idx, "train"), (test_idx, "val")):
        ds = StreamingFolder([paths_ok[i] for i in idx], labels[idx], classes, f"{name}/{part}",
                             size, channels, mean, std)
        ds.skipped = list(skipped)
        out.append(ds)
    return tuple(out)


def load_folder(root, size=64, val_split=0.2, seed=0, channels=None, mean=None, std=None,
                progress=True, log=None):
    """``(train, test)`` Datasets of a class-per-folder tree (see the module docstring).

    ``channels``: 1 or 3, or None for 1 when every image is greyscale, else 3.
    ``mean``/``std``: per-channel (in [0, 1] units), or None to compute them from the
    training images. The Datasets keep uint8 pixels and normalise per batch; they carry
    ``classes``, ``mean``, ``std`` and ``skipped`` (the files that could not be read).
    Over ``PYCNN_IMAGE_MEMORY`` of decoded pixels the two are :class:`StreamingFolder`s."""
    from .data import Dataset

    log = log or (lambda line: print(line, file=sys.stderr))
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size: expected a positive int (the model's input side), got {size!r}")
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split: expected a fraction in [0, 1), got {val_split!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels: expected 1, 3 or None (from the images), got {channels!r}")
    classes, files, split = scan_folder(root)
    start = time.perf_counter()
    all_files = files if split is None else split["train"] + split["test"]
    if len(all_files) * (1 if channels == 1 else 3) * size * size > memory_limit():
        return _load_streaming(root, classes, all_files, split, size, val_split, seed, channels,
                               mean, std, progress, log, start)
    x, grey, labels, skipped, cache = decode_all(all_files, size, progress, log=log)
    for path, reason in skipped:
        log(f"pycnn: skipped {reason}" if reason.startswith(path) else
            f"pycnn: skipped {path}: {reason}")
    if len(x) == 0:
        raise ValueError(f"{root}: none of its {len(all_files)} image files could be read")
    present = np.unique(labels)
    if len(present) < len(classes):
        gone = [classes[c] for c in range(len(classes)) if c not in present]
        raise ValueError(f"{root}: no readable image in class folder(s) {', '.join(gone)}")
    if channels is None:
        channels = 1 if grey.all() else 3
    if channels == 1:
        x = np.round(x.astype(np.float32).transpose(0, 2, 3, 1) @
                     np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)[:, None]
    if split is None:
        if val_split == 0:
            raise ValueError("val_split: 0 leaves no images to evaluate on; give a fraction "
                             "such as 0.2, or train/ and val/ sub-folders")
        train_idx, test_idx = _stratified_split(labels, val_split, seed)
    else:
        skipped_paths = {p for p, _ in skipped}
        is_train = np.array([p not in skipped_paths for p, _ in split["train"]]).sum()
        train_idx, test_idx = np.arange(is_train), np.arange(is_train, len(x))
    if len(test_idx) == 0:
        raise ValueError(f"{root}: expected images to hold out for validation, got none "
                         f"({len(x)} readable images)")
    if mean is None or std is None:
        m, s = channel_stats(x[train_idx])
        mean = m if mean is None else mean
        std = s if std is None else std
    mean, std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
    name = f"folder:{root}"
    kept = len(x)
    log(f"{name}: {len(classes)} classes ({_short_list(classes)}), {kept} images "
        f"({len(train_idx)} train / {len(test_idx)} val) as {channels}x{size}x{size}"
        + (f", {len(skipped)} skipped" if skipped else "")
        + f" in {time.perf_counter() - start:.1f} s"
        + (f" (cache {cache})" if cache else ""))
    out = []
    for idx, part in ((train_idx, "train"), (test_idx, "val")):
        ds = Dataset(x[idx], labels[idx], classes, f"{name}/{part}", mean=mean, std=std)
        ds.skipped = list(skipped)
        out.append(ds)
    return tuple(out)


def _per_channel(values, channels, what):
    values = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)))
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what}: expected 1 or {channels} values (one per channel), got "
                         f"{len(values)}")
    if what == "std" and min(values) <= 0:
        raise ValueError(f"std: expected positive values, got {list(values)}")
    return values


def _short_list(names, limit=6):
    return ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------- a sample set

# scikit-image's sample photographs (in its package data: no download) that make a
# three-class set: each image gives many different crops.
SAMPLE_CLASSES = {"cat": ("chelsea",), "coffee": ("coffee",), "astronaut": ("astronaut",)}


def write_sample_folder(root, per_class=12, size=48, seed=0):
    """A tiny class-per-folder set under ``root`` (cat/, coffee/, astronaut/), built from
    scikit-image's sample photographs: ``per_class`` random crops of each, rescaled to
    ``size``, mirrored at random, saved as JPEG, PNG and BMP in turn (one greyscale PNG
    per class). Returns the class names. Needs scikit-image (``pip install
    scikit-image``)."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("the sample image set needs scikit-image (pip install "
                          "scikit-image), whose package data holds the photographs") from e
    Image = _pil()
    rng = np.random.default_rng(seed)
    formats = (("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"))
    for cls, sources in SAMPLE_CLASSES.items():
        folder = os.path.join(root, cls)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            photo = getattr(skimage.data, sources[i % len(sources)])()
            h, w = photo.shape[:2]
            side = int(rng.uniform(0.45, 0.8) * min(h, w))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            img = Image.fromarray(photo[top:top + side, left:left + side])
            img = img.resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            if i == 1:
                img = img.convert("L")
            ext, fmt = formats[1] if i == 1 else formats[i % 3]
            img.save(os.path.join(folder, f"{cls}_{i:03d}.{ext}"), format=fmt)
    return list(SAMPLE_CLASSES)


if __name__ == "__main__":          # python -m pycnn.images DIR: write the sample set
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pycnn.images DIR   (writes a three-class sample set: "
                 "30 64x64 images per class, from scikit-image's sample photographs)")
    names = write_sample_folder(sys.argv[1], per_class=30, size=64)
    print(f"wrote 30 images each of {', '.join(names)} under {sys.argv[1]}")
