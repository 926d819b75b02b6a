"""Image folders (pycnn.images, --data folder:DIR): decoding every kind of file, bad input,
the cache, the split and the normalisation."""
import os

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from pycnn import cli, images  # noqa: E402


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCNN_CACHE_DIR", str(tmp_path / "cache"))


def _folder(root, classes=("a", "b"), per_class=4, size=(20, 16), fmt="PNG"):
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{fmt.lower()}", format=fmt)
    return root


# ----------------------------------------------------------------------------- decoding

def test_decode_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    # a 40x20 image, bright in the middle (columns 6..33), black at the sides: resized to
    # 20x10, its centre 10 columns (source columns 10..29, away from the edges the
    # antialiasing filter blends) are all bright, and the black sides are cut away
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 6:34] = 200
    Image.fromarray(pixels).save(tmp_path / "x.png")
    out = images.decode_image(str(tmp_path / "x.png"), 10)
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 200)          # 40x20 -> 20x10, centre 10x10 = middle


def test_decode_matches_pillow_for_an_image_already_at_size(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(images.decode_image(str(tmp_path / "x.bmp"), 12),
                                  pixels.transpose(2, 0, 1))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 32896, 65535, 1000]], np.uint16).repeat(4, axis=0)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = images.decode_image(str(tmp_path / "deep.png"), 4, channels=1)
    # a bilinear resize of an image at size is the identity
    np.testing.assert_array_equal(out[0, 0], [0, 128, 255, 4])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 220
    rgb[..., 2] = 40
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = images.decode_image(str(tmp_path / "cmyk.jpg"), 16)
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), [220, 0, 40], atol=6)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1"])
def test_other_modes_decode(tmp_path, mode):
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3), np.uint8))
    img.convert(mode).save(tmp_path / "m.png")
    out = images.decode_image(str(tmp_path / "m.png"), 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8


def test_corrupt_truncated_and_missing_files_name_the_path(tmp_path):
    (tmp_path / "text.jpg").write_text("not a jpeg")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 3])
    for name, says in (("text.jpg", "not an image"), ("cut.jpg", "cannot decode"),
                       ("none.jpg", "not found")):
        with pytest.raises(images.ImageError, match=says) as e:
            images.decode_image(str(tmp_path / name), 8)
        assert str(tmp_path / name) in str(e.value)


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    with pytest.raises(images.ImageError, match=r"400 x 300 pixels, more than the 100,000"):
        images.decode_image(str(tmp_path / "big.png"), 8)


# ----------------------------------------------------------------------------- the folder

def test_load_folder_classes_split_and_statistics(tmp_path):
    root = _folder(tmp_path / "d", ("cats", "dogs", "owls"), per_class=5)
    train, val = images.load_folder(str(root), size=8, val_split=0.2, seed=3)
    assert train.classes == val.classes == ("cats", "dogs", "owls")
    assert (len(train), len(val)) == (12, 3)
    assert np.bincount(val.y).tolist() == [1, 1, 1]          # stratified
    assert train.x.dtype == np.uint8 and train.sample_shape == (3, 8, 8)
    pixels = train.x.astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(train.std, pixels.std(axis=(0, 2, 3)), rtol=1e-9)
    x, _ = train[:]
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    # same seed, same split; the second load reads the cache
    again, _ = images.load_folder(str(root), size=8, val_split=0.2, seed=3)
    np.testing.assert_array_equal(again.x, train.x)
    assert len(os.listdir(tmp_path / "cache")) == 1


def test_given_mean_std_and_train_val_subfolders(tmp_path):
    _folder(tmp_path / "d" / "train", per_class=3)
    _folder(tmp_path / "d" / "val", per_class=2)
    train, val = images.load_folder(str(tmp_path / "d"), size=6, mean=0.5, std=[0.25])
    assert (len(train), len(val)) == (6, 4)
    assert train.mean == (0.5, 0.5, 0.5) and val.std == (0.25, 0.25, 0.25)
    np.testing.assert_allclose(val[0][0], (val.x[0] / 255 - 0.5) / 0.25, rtol=1e-6)


def test_all_grey_folders_give_one_channel(tmp_path):
    for c in ("x", "y"):
        os.makedirs(tmp_path / c)
        for i in range(3):
            Image.new("L", (10, 10), 40 * i).save(tmp_path / c / f"{i}.png")
    train, _ = images.load_folder(str(tmp_path), size=5)
    assert train.sample_shape == (1, 5, 5)


def test_unreadable_images_are_reported_and_skipped(tmp_path, capsys):
    root = _folder(tmp_path / "d", per_class=4)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    train, val = images.load_folder(str(root), size=6)
    assert len(train) + len(val) == 8
    err = capsys.readouterr().err
    assert f"skipped {root / 'a' / 'broken.jpg'}" in err and "1 skipped" in err


@pytest.mark.parametrize("layout, says", [
    ("empty", "expected one sub-folder per class"),
    ("loose", r"holds 2 image file\(s\) directly"),
    ("one", r"expected at least two class sub-folders holding images, got one \(only\)"),
    ("unreadable", "no readable image in class folder"),
])
def test_folder_errors(tmp_path, layout, says):
    root = tmp_path / "d"
    root.mkdir()
    if layout == "loose":
        for i in range(2):
            Image.new("RGB", (4, 4)).save(root / f"{i}.png")
    elif layout == "one":
        _folder(root, ("only",))
    elif layout == "unreadable":
        _folder(root, ("good",))
        (root / "bad").mkdir()
        (root / "bad" / "x.jpg").write_text("no")
    with pytest.raises(ValueError, match=says):
        images.load_folder(str(root), size=4)


@pytest.mark.parametrize("layout, says", [
    ("missing", "directory not found"),
    ("empty", "expected one sub-folder per class"),
    ("one", "expected at least two class sub-folders"),
])
def test_cli_folder_errors_are_one_line(tmp_path, capsys, layout, says):
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout == "one":
        _folder(root, ("only",))
    code = cli.main(["train", "--data", f"folder:{root}", "--epochs", "1", "--no-progress",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pycnn: error: --data folder:{root}")


def test_cli_options_only_for_folders(capsys):
    assert cli.main(["train", "--image-size", "32", "--epochs", "1"]) == 2
    assert "only for --data folder:DIR" in capsys.readouterr().err


def test_sample_folder_from_scikit_image(tmp_path):
    pytest.importorskip("skimage")
    names = images.write_sample_folder(str(tmp_path), per_class=4, size=24)
    assert names == ["cat", "coffee", "astronaut"]
    files = sorted(os.listdir(tmp_path / "cat"))
    assert {f.rsplit(".", 1)[1] for f in files} == {"jpg", "png", "bmp"}
    train, val = images.load_folder(str(tmp_path), size=16)
    assert train.classes == ("astronaut", "cat", "coffee") and len(train) + len(val) == 12


# ----------------------------------------------------------------------------- streaming

def test_a_folder_over_the_memory_limit_streams_the_same_images(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", ("cats", "dogs", "owls"), per_class=5)
    held = images.load_folder(str(root), size=8, val_split=0.2, seed=3)
    cached = os.listdir(tmp_path / "cache")
    monkeypatch.setenv("PYCNN_IMAGE_MEMORY", "0")
    streamed = images.load_folder(str(root), size=8, val_split=0.2, seed=3)
    for mem, st in zip(held, streamed):
        assert isinstance(st, images.StreamingFolder) and len(st) == len(mem)
        assert st.classes == mem.classes and st.sample_shape == mem.sample_shape
        np.testing.assert_allclose(st.mean, mem.mean, rtol=1e-9)   # the same 12 images' statistics
        np.testing.assert_allclose(st.std, mem.std, rtol=1e-9)
        xs, ys = st[:]
        xm, ym = mem[:]
        np.testing.assert_array_equal(ys, ym)
        np.testing.assert_allclose(xs, xm, rtol=1e-6, atol=1e-6)
        x1, y1 = st[2]
        assert x1.shape == (3, 8, 8) and y1 == ym[2]
    assert os.listdir(tmp_path / "cache") == cached             # nothing decoded ahead, nothing cached
    monkeypatch.setenv("PYCNN_IMAGE_MEMORY", "lots")
    with pytest.raises(ValueError, match="PYCNN_IMAGE_MEMORY: expected a number of bytes, got 'lots'"):
        images.load_folder(str(root), size=8)


def test_streaming_reports_bad_files_once_and_leaves_them_out(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "d", per_class=4)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")    # no header: at once
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[:len(good) // 2])          # a header, then nothing
    monkeypatch.setenv("PYCNN_IMAGE_MEMORY", "0")
    train, val = images.load_folder(str(root), size=6, val_split=0.25)
    err = capsys.readouterr().err
    assert f"skipped {root / 'a' / 'broken.jpg'}" in err and "streamed" in err
    assert len(train) + len(val) == 9                            # the truncated one passes its header
    everything = [images.StreamingFolder.pixels(ds, slice(None)) for ds in (train, val)]
    assert sum(len(y) for _, y in everything) == 8                # and is left out when decoded
    err = capsys.readouterr().err
    assert err.count(f"skipped {root / 'b' / 'cut.png'}") == 1
    for ds in (train, val):
        ds.pixels(slice(None))
    assert f"{root / 'b' / 'cut.png'}" not in capsys.readouterr().err   # reported once only


def test_the_loader_prefetches_streamed_batches_without_changing_them(tmp_path, monkeypatch):
    from pycnn.data import DataLoader
    root = _folder(tmp_path / "d", per_class=9)
    monkeypatch.setenv("PYCNN_IMAGE_MEMORY", "0")
    train, _ = images.load_folder(str(root), size=6, val_split=0.2)
    ahead = [(x.copy(), y.copy()) for x, y in DataLoader(train, 4, shuffle=True, seed=2)]
    monkeypatch.setattr(images.StreamingFolder, "prefetch", False)
    plain = list(DataLoader(train, 4, shuffle=True, seed=2))
    assert len(ahead) == len(plain) == 4
    for (xa, ya), (xp, yp) in zip(ahead, plain):
        np.testing.assert_array_equal(ya, yp)
        np.testing.assert_array_equal(xa, xp)


def test_pycnn_train_on_a_streamed_folder(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "d", per_class=12, size=(30, 28))
    monkeypatch.setenv("PYCNN_IMAGE_MEMORY", "0")
    assert cli.main(["train", "--data", f"folder:{root}", "--epochs", "1", "--no-progress",
                     "--batch-size", "8", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr()
    assert "streamed" in out.err and "test accuracy" in out.out
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "run" / "model.npz")]) == 0
