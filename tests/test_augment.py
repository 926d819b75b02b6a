"""Augmentations (pycnn.data): random resized crop against a loop resampler, colour jitter
and PCA lighting against their formulas, the --augment parser, and a loader resumed
mid-pass drawing what an uninterrupted one draws."""
import numpy as np
import pytest

from pycnn import data


def _bilinear_loop(img, top, left, ch, cw, h, w):
    """Output pixel (i, j) samples the box (top, left, ch, cw) at its centre, bilinear."""
    c = img.shape[0]
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            y = min(max(top + (i + 0.5) * ch / h - 0.5, 0), img.shape[1] - 1)
            x = min(max(left + (j + 0.5) * cw / w - 0.5, 0), img.shape[2] - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, img.shape[1] - 1), min(x0 + 1, img.shape[2] - 1)
            fy, fx = y - y0, x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * img[:, y0, x0] + fx * img[:, y0, x1])
                            + fy * ((1 - fx) * img[:, y1, x0] + fx * img[:, y1, x1]))
    return out


def test_random_resized_crop_against_a_loop():
    x = np.random.default_rng(0).standard_normal((4, 2, 9, 11))
    out = data.random_resized_crop((0.2, 0.9), (0.5, 2.0))(x, np.random.default_rng(7))
    # replay the draws: 10 areas and ratios per image, the first box that fits, offsets
    g = np.random.default_rng(7)
    area = g.uniform(0.2, 0.9, size=(4, 10)) * 99
    aspect = np.exp(g.uniform(np.log(0.5), np.log(2.0), size=(4, 10)))
    tops, lefts = g.random(4), g.random(4)
    for n in range(4):
        for t in range(10):
            cw, ch = round(np.sqrt(area[n, t] * aspect[n, t])), round(np.sqrt(area[n, t] / aspect[n, t]))
            if 1 <= cw <= 11 and 1 <= ch <= 9:
                break
        else:
            cw, ch = 11, 9
        top, left = np.floor(tops[n] * (9 - ch + 1)), np.floor(lefts[n] * (11 - cw + 1))
        np.testing.assert_allclose(out[n], _bilinear_loop(x[n], top, left, ch, cw, 9, 11),
                                   rtol=1e-12, atol=1e-12)


def test_random_resized_crop_of_the_whole_image_is_the_identity():
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    out = data.random_resized_crop((1.0, 1.0), (1.0, 1.0), seed=0)(x)
    np.testing.assert_allclose(out, x, rtol=1e-6)
    assert out.dtype == np.float32


def test_color_jitter_in_pixel_space():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    pixels = np.random.default_rng(2).uniform(0.2, 0.6, (5, 3, 4, 4))
    m, s = np.reshape(mean, (1, 3, 1, 1)), np.reshape(std, (1, 3, 1, 1))
    x = (pixels - m) / s
    np.testing.assert_allclose(data.color_jitter(0, 0, 0, mean, std, seed=0)(x), x, atol=1e-12)
    out = data.color_jitter(0.3, 0, 0, mean, std)(x, np.random.default_rng(3))
    factors = np.random.default_rng(3).uniform(-1, 1, size=(3, 5))[0] * 0.3 + 1
    expected = (np.clip(pixels * factors[:, None, None, None], 0, 1) - m) / s
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # saturation 0 -> 1 keeps grey; on one channel it is skipped
    grey = np.full((2, 1, 3, 3), 0.1)
    np.testing.assert_allclose(data.color_jitter(0, 0, 0.5, seed=1)(grey), grey)


def test_pca_lighting_shifts_along_the_components():
    pixels = np.full((2, 3, 2, 2), 0.5)
    eigval, eigvec = np.array([0.2, 0.02, 0.002]), np.linalg.qr(
        np.random.default_rng(4).standard_normal((3, 3)))[0]
    out = data.pca_lighting(0.1, eigval, eigvec)(pixels, np.random.default_rng(5))
    alpha = np.random.default_rng(5).normal(0, 0.1, size=(2, 3))
    shift = eigvec @ (alpha * eigval).T                 # (3, N)
    np.testing.assert_allclose(out, pixels + shift.T[:, :, None, None], atol=1e-7)
    np.testing.assert_allclose(data.pca_lighting(0, eigval, eigvec)(pixels), pixels)


def test_pixel_pca_of_a_dataset():
    rng = np.random.default_rng(6)
    grey = rng.integers(0, 256, (50, 1, 4, 4), dtype=np.uint8)
    ds = data.Dataset(np.repeat(grey, 3, axis=1), np.arange(50) % 2, mean=(0.5,) * 3,
                      std=(0.25,) * 3)
    eigval, eigvec = data.pixel_pca(ds)
    # three equal channels: one component along (1, 1, 1), the others zero
    assert eigval[:2].max() < 1e-9 * eigval[2]
    np.testing.assert_allclose(np.abs(eigvec[:, 2]), 1 / np.sqrt(3), rtol=1e-6)


def test_parse_augment():
    assert data.parse_augment("none") == []
    assert data.parse_augment("resized-crop=0.5, flip") == [("resized-crop", 0.5), ("flip", None)]
    with pytest.raises(ValueError, match="expected names from flip"):
        data.parse_augment("rotate")
    with pytest.raises(ValueError, match="jitter=x: expected a number"):
        data.parse_augment("jitter=x")


def test_loader_resumed_mid_pass_draws_the_same_batches():
    ds = data.Dataset(np.random.default_rng(7).standard_normal((30, 1, 4, 4)).astype(np.float32),
                      np.arange(30) % 3)
    transform = data.augmentation([("resized-crop", 0.5), ("flip", None)], ds)
    full = data.DataLoader(ds, 7, shuffle=True, seed=3, transform=transform)
    list(full)                                  # pass 0
    second = list(full)                         # pass 1
    resumed = data.DataLoader(ds, 7, shuffle=True, seed=3, transform=transform)
    resumed.epoch = 1
    resumed.skip(2)
    later = list(resumed)
    assert len(later) == len(second) - 2
    for (xa, ya), (xb, yb) in zip(second[2:], later):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
