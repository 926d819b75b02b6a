"""Data loaders on small files written here in the real formats, the DataLoader, transforms."""
import gzip
import os
import struct

import numpy as np
import pytest

from pycnn import data


# ----------------------------------------------------------------------------- writers
# Written from the format descriptions, independently of the parser under test.

def write_idx(path, array, gz=False):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(payload)
    return payload


def make_mnist_dir(directory, n_train=12, n_test=7, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    sets = {}
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images, gz)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, gz)
        sets[prefix] = (images, labels)
    return sets


def write_cifar_batch(path, images, labels):
    with open(path, "wb") as f:
        for img, lab in zip(images, labels):
            f.write(bytes([int(lab)]))
            f.write(img.astype(np.uint8).tobytes())   # (3, 32, 32): R plane, G plane, B plane


def make_cifar_dir(directory, per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    out = {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(os.path.join(directory, name), images, labels)
        split = "test" if name.startswith("test") else "train"
        out[split][0].append(images)
        out[split][1].append(labels)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


# ----------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_values(tmp_path, gz):
    sets = make_mnist_dir(tmp_path, gz=gz)
    train, test = data.load_mnist(str(tmp_path))
    for ds, (images, labels) in ((train, sets["train"]), (test, sets["t10k"])):
        assert ds.x.shape == (len(labels), 1, 28, 28) and ds.x.dtype == np.float32
        assert ds.y.dtype == np.int64
        np.testing.assert_array_equal(ds.y, labels)
        # pixel (n, r, c) -> (v / 255 - 0.1307) / 0.3081, computed one element at a time
        for n, r, c in [(0, 0, 0), (1, 5, 17), (len(labels) - 1, 27, 27)]:
            want = (images[n, r, c] / 255.0 - 0.1307) / 0.3081
            assert ds.x[n, 0, r, c] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_load_fashion_uses_its_statistics(tmp_path):
    sets = make_mnist_dir(tmp_path)
    train, _ = data.load_fashion_mnist(str(tmp_path))
    want = (sets["train"][0][2, 3, 4] / 255.0 - 0.2860) / 0.3530
    assert train.x[2, 0, 3, 4] == pytest.approx(want, rel=1e-5)
    assert train.classes[9] == "Ankle boot"


def test_idx_truncated_file_names_file_and_sizes(tmp_path):
    make_mnist_dir(tmp_path, n_train=12)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:1000])
    with pytest.raises(ValueError) as e:
        data.load_mnist(str(tmp_path))
    msg = str(e.value)
    assert str(path) in msg
    assert f"expected {16 + 12 * 784} bytes for 12 images of 28x28, got 1000" in msg


def test_idx_truncated_gzip(tmp_path):
    make_mnist_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_mnist(str(tmp_path))


def test_idx_bad_magic(tmp_path):
    make_mnist_dir(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load_mnist(str(tmp_path))


def test_idx_label_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path, n_train=12)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match="expected 12 labels"):
        data.load_mnist(str(tmp_path))


def test_idx_missing_file_names_it(tmp_path):
    make_mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_mnist(str(tmp_path))


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_mnist(str(tmp_path / "nowhere"))


def test_idx_empty_header_count_rejected(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="0 images"):
        data.load_mnist(str(tmp_path))


# ----------------------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("subfolder", [False, True])
def test_load_cifar10_values(tmp_path, subfolder):
    root = tmp_path / "cifar-10-batches-bin" if subfolder else tmp_path
    root.mkdir(exist_ok=True)
    sets = make_cifar_dir(root, per_batch=3)
    train, test = data.load_cifar10(str(tmp_path))
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(train.y, sets["train"][1])
    np.testing.assert_array_equal(test.y, sets["test"][1])
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    for n, ch, r, c in [(0, 0, 0, 0), (7, 1, 10, 31), (14, 2, 31, 3)]:
        want = (sets["train"][0][n, ch, r, c] / 255.0 - mean[ch]) / std[ch]
        assert train.x[n, ch, r, c] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_cifar_truncated(tmp_path):
    make_cifar_dir(tmp_path, per_batch=2)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError) as e:
        data.load_cifar10(str(tmp_path))
    assert "data_batch_3.bin" in str(e.value) and "3073" in str(e.value) and "5000" in str(e.value)


def test_cifar_missing_batch(tmp_path):
    make_cifar_dir(tmp_path, per_batch=1)
    os.remove(tmp_path / "data_batch_5.bin")
    with pytest.raises(FileNotFoundError, match="data_batch_5.bin"):
        data.load_cifar10(str(tmp_path))


# ----------------------------------------------------------------------------- embedded MNIST

def test_embedded_mnist_split():
    train, test = data.embedded_mnist(seed=0)
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(train.y, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.y, minlength=10), [100] * 10)
    # normalised pixels: the background 0 maps to -0.1307/0.3081, ink 255 to (1-0.1307)/0.3081
    assert train.x.min() == pytest.approx(-0.1307 / 0.3081, rel=1e-5)
    assert train.x.max() == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-5)
    # no image is in both splits
    tr = {row.tobytes() for row in train.x.reshape(4000, -1)}
    assert not any(row.tobytes() in tr for row in test.x.reshape(1000, -1))
    # the first 100 training digits mix the classes (the source file is sorted by class)
    assert len(set(train.y[:100].tolist())) == 10


def test_embedded_mnist_seeded():
    a, _ = data.embedded_mnist(seed=0)
    b, _ = data.embedded_mnist(seed=0)
    c, _ = data.embedded_mnist(seed=1)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.y, c.y)


# ----------------------------------------------------------------------------- get_dataset

def test_get_dataset_specs(tmp_path):
    make_mnist_dir(tmp_path)
    train, _ = data.get_dataset(f"mnist:{tmp_path}")
    assert len(train) == 12
    train, _ = data.get_dataset(f"fashion:{tmp_path}")
    assert train.name.startswith("fashion")
    for bad in ["imagenet:/x", "mnist", "mnist:", "cifar100:/x", ""]:
        with pytest.raises(ValueError, match="embedded-mnist"):
            data.get_dataset(bad)


# ----------------------------------------------------------------------------- Dataset

def test_dataset_rejects_labels_it_would_truncate():
    x = np.zeros((3, 1, 2, 2), dtype=np.float32)
    for bad, shown in (([0, 1.7, 2], "1.7 at index 1"), ([0, np.nan, 1], "nan at index 1")):
        with pytest.raises(ValueError, match="y: expected integer class labels") as e:
            data.Dataset(x, np.array(bad))
        assert shown in str(e.value)
    for bad in (np.array([True, False, True]), np.array(["0", "1", "2"])):
        with pytest.raises(ValueError, match="y: expected integer class labels"):
            data.Dataset(x, bad)
    with pytest.raises(ValueError, match="y: expected class labels >= 0, got -1"):
        data.Dataset(x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"y: expected class indices in 0\.\.2 for 3 classes, got 5"):
        data.Dataset(x, np.array([0, 5, 2]), classes=("a", "b", "c"))
    ok = data.Dataset(x, np.array([0.0, 2.0, 1.0]))        # integer-valued floats are labels
    assert ok.y.dtype == np.int64 and ok.y.tolist() == [0, 2, 1] and ok.num_classes == 3


# ----------------------------------------------------------------------------- DataLoader

def _toy(n=10):
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    return data.Dataset(x, np.arange(n) % 3)


def test_loader_in_order_and_last_batch():
    batches = list(data.DataLoader(_toy(10), 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x.ravel() for x, _ in batches]), np.arange(10))
    assert len(data.DataLoader(_toy(10), 4)) == 3


def test_loader_drop_last():
    loader = data.DataLoader(_toy(10), 4, drop_last=True)
    assert [len(y) for _, y in loader] == [4, 4]
    assert len(loader) == 2


def test_loader_shuffle_seeded_and_varies_by_epoch():
    def epochs(seed):
        loader = data.DataLoader(_toy(50), 7, shuffle=True, seed=seed)
        return [np.concatenate([x.ravel() for x, _ in loader]) for _ in range(2)]
    e0, e1 = epochs(3)
    f0, f1 = epochs(3)
    g0, _ = epochs(4)
    for e in (e0, e1):
        np.testing.assert_array_equal(np.sort(e), np.arange(50))   # a permutation, each sample once
    np.testing.assert_array_equal(e0, f0)
    np.testing.assert_array_equal(e1, f1)
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, g0)


def test_loader_without_seed_follows_pycnn_manual_seed():
    import pycnn

    def two_epochs():
        loader = data.DataLoader(_toy(50), 50, shuffle=True)
        return [next(iter(loader))[0].ravel() for _ in range(2)]
    pycnn.manual_seed(11)
    a0, a1 = two_epochs()
    pycnn.manual_seed(11)
    b0, b1 = two_epochs()
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a0, a1)
    pycnn.manual_seed(12)
    assert not np.array_equal(two_epochs()[0], a0)


def test_loader_labels_follow_images():
    ds = _toy(30)
    for x, y in data.DataLoader(ds, 8, shuffle=True, seed=0):
        np.testing.assert_array_equal(y, x.ravel().astype(int) % 3)


def test_loader_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        data.DataLoader(_toy(), 0)


# ----------------------------------------------------------------------------- transforms

def test_random_crop_against_loop():
    rng_x = np.random.default_rng(0)
    x = rng_x.standard_normal((5, 2, 6, 7)).astype(np.float32)
    pad = 2
    out = data.random_crop(pad)(x, np.random.default_rng(42))
    # replay the generator: the transform draws the top offsets then the left offsets
    g = np.random.default_rng(42)
    top = g.integers(0, 2 * pad + 1, size=5)
    left = g.integers(0, 2 * pad + 1, size=5)
    for n in range(5):
        for c in range(2):
            for i in range(6):
                for j in range(7):
                    si, sj = top[n] + i - pad, left[n] + j - pad
                    inside = 0 <= si < 6 and 0 <= sj < 7
                    assert out[n, c, i, j] == (x[n, c, si, sj] if inside else 0.0)


def test_random_crop_offsets_vary():
    x = np.ones((64, 1, 8, 8), np.float32)
    out = data.random_crop(4, seed=0)(x)
    zeros_per_image = (out == 0).reshape(64, -1).sum(axis=1)
    assert len(set(zeros_per_image.tolist())) > 3


def test_horizontal_flip():
    x = np.random.default_rng(0).standard_normal((200, 3, 4, 5)).astype(np.float32)
    out = data.horizontal_flip(0.5, seed=1)(x)
    flipped = 0
    for n in range(200):
        if np.array_equal(out[n], x[n, :, :, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out[n], x[n])
    assert 60 < flipped < 140
    np.testing.assert_array_equal(data.horizontal_flip(0.0)(x), x)


def test_normalize():
    x = np.full((2, 3, 2, 2), 0.5, np.float32)
    out = data.normalize((0.1, 0.2, 0.3), (0.5, 0.25, 0.1))(x)
    np.testing.assert_allclose(out[1, :, 1, 1], [0.8, 1.2, 2.0], rtol=1e-6)


def test_loader_passes_its_generator_to_transform():
    seen = []

    def record(x, rng):
        seen.append(rng.integers(0, 1 << 30))
        return x
    loader = data.DataLoader(_toy(8), 4, seed=5, transform=record)
    list(loader)
    first = list(seen)
    seen.clear()
    list(data.DataLoader(_toy(8), 4, seed=5, transform=record))
    assert seen == first
