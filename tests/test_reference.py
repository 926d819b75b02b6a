"""The NumPy reference backend against plain-loop definitions (tests/loops.py),
hand-computed values and central differences, in float64 on tiny shapes."""
from __future__ import annotations

import numpy as np
import pytest

from pycnn.backends import INTERFACE
from pycnn.backends import numpy_ref as ref
from pycnn.verify import AVG_CASES, CONV_GRID, MAX_CASES, POOL_GRID_SHAPES

try:                        # tests/ as a package or as a plain folder on sys.path
    from . import loops
except ImportError:
    import loops

TOL = dict(rtol=1e-10, atol=1e-10)


def rand(rng, *shape):
    return rng.standard_normal(shape)


def close(actual, expected, **tol):
    assert np.shape(actual) == np.shape(expected), (np.shape(actual), np.shape(expected))
    np.testing.assert_allclose(actual, expected, **(tol or TOL))


def test_interface_complete():
    missing = [name for name in INTERFACE if not callable(getattr(ref, name, None))]
    assert not missing


# ----------------------------------------------------------------------------- convolution

# The option grid, shared with the GPU verification (pycnn.verify adds GPU-sized cases):
# (N, C, H, W), (K, R, S), stride, padding (top, bottom, left, right), dilation, groups, bias
CONV_CASES = CONV_GRID


def conv_data(case, seed=0, dtype=np.float64):
    x_shape, (k, r, s), stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(seed)
    x = rand(rng, *x_shape).astype(dtype)
    w = rand(rng, k, x_shape[1] // groups, r, s).astype(dtype)
    b = rand(rng, k).astype(dtype) if has_bias else None
    return x, w, b, (stride, padding, dilation, groups)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_against_loops(case):
    x, w, b, args = conv_data(case)
    y = ref.conv2d_fwd(x, w, b, *args)
    close(y, loops.conv2d_fwd(x, w, b, *args))
    dy = rand(np.random.default_rng(1), *y.shape)
    close(ref.conv2d_bwd_data(dy, w, x.shape, *args), loops.conv2d_bwd_data(dy, w, x.shape, *args))
    close(ref.conv2d_bwd_filter(x, dy, w.shape, *args), loops.conv2d_bwd_filter(x, dy, w.shape, *args))
    close(ref.conv2d_bwd_bias(dy), loops.conv2d_bwd_bias(dy))


def test_conv2d_backward_matches_central_differences():
    # a check that does not rely on the loops' chain rule either
    case = ((1, 2, 5, 4), (2, 3, 2), (2, 1), (1, 0, 0, 1), (1, 1), 2, True)
    x, w, b, args = conv_data(case)
    dy = rand(np.random.default_rng(3), *ref.conv2d_fwd(x, w, b, *args).shape)
    f = lambda x_, w_, b_: float((loops.conv2d_fwd(x_, w_, b_, *args) * dy).sum())
    for arr, grad in ((x, ref.conv2d_bwd_data(dy, w, x.shape, *args)),
                      (w, ref.conv2d_bwd_filter(x, dy, w.shape, *args)),
                      (b, ref.conv2d_bwd_bias(dy))):
        num = np.zeros_like(arr)
        for i in np.ndindex(*arr.shape):
            old = arr[i]
            arr[i] = old + 1e-6
            up = f(x, w, b)
            arr[i] = old - 1e-6
            down = f(x, w, b)
            arr[i] = old
            num[i] = (up - down) / 2e-6
        close(grad, num, rtol=1e-6, atol=1e-7)


def test_conv2d_float32_stays_float32():
    case = CONV_CASES[7]
    x, w, b, args = conv_data(case)
    x32, w32, b32 = x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)
    y = ref.conv2d_fwd(x32, w32, b32, *args)
    dy = np.ones_like(y)
    outs = [y, ref.conv2d_bwd_data(dy, w32, x.shape, *args),
            ref.conv2d_bwd_filter(x32, dy, w.shape, *args), ref.conv2d_bwd_bias(dy)]
    assert all(o.dtype == np.float32 for o in outs)
    close(y, ref.conv2d_fwd(x, w, b, *args), rtol=1e-4, atol=1e-4)


def test_conv2d_rejects_mismatched_groups():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ValueError, match="groups"):
        ref.conv2d_fwd(x, np.zeros((3, 2, 3, 3)), None, (1, 1), (0,) * 4, (1, 1), 2)
    with pytest.raises(ValueError, match="w:"):
        ref.conv2d_fwd(x, np.zeros((4, 3, 3, 3)), None, (1, 1), (0,) * 4, (1, 1), 2)


# ----------------------------------------------------------------------------- pooling

POOL_SHAPES = POOL_GRID_SHAPES       # MAX_CASES, AVG_CASES: (kernel, stride, padding[, dilation])


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_max_pool2d_against_loops(shape, case, ceil_mode):
    x = rand(np.random.default_rng(0), *shape)
    y, idx = ref.max_pool2d_fwd(x, *case, ceil_mode)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, *case, ceil_mode)
    close(y, y_loop)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_loop)
    dy = rand(np.random.default_rng(1), *y.shape)
    close(ref.max_pool2d_bwd(dy, idx, x.shape, *case), loops.max_pool2d_bwd(dy, idx_loop, x.shape))


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_windows_of_minus_infinity_never_point_into_the_padding(ceil_mode):
    # padding holds -inf too: a window whose real values are all -inf must still
    # choose a real pixel (its first), or the backward scatters into the padding, or
    # past it into another (n, c) plane
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6))
    x[1] = -np.inf
    x[0, 1, :2, :] = -np.inf
    args = ((3, 3), (2, 2), (1, 1), (1, 1), ceil_mode)
    y, idx = ref.max_pool2d_fwd(x, *args)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, *args)
    np.testing.assert_array_equal(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    assert idx[1, 0, 0, 0] == 0 and idx.min() >= 0 and idx.max() < 5 * 6
    dy = rand(np.random.default_rng(4), *y.shape)
    close(ref.max_pool2d_bwd(dy, idx, x.shape, *args[:4]), loops.max_pool2d_bwd(dy, idx_loop, x.shape))


def test_max_pool2d_ties_take_the_first_in_row_major_order():
    # values 0, 1, 2 only: most windows hold several maxima; overlapping windows
    # make some inputs the max of more than one output
    x = np.random.default_rng(5).integers(0, 3, size=(2, 2, 7, 7)).astype(np.float64)
    args = ((3, 3), (2, 2), (1, 1), (1, 1), False)
    y, idx = ref.max_pool2d_fwd(x, *args)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, *args)
    close(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    dy = rand(np.random.default_rng(2), *y.shape)
    close(ref.max_pool2d_bwd(dy, idx, x.shape, *args[:4]), loops.max_pool2d_bwd(dy, idx_loop, x.shape))
    # hand-checked corner: the window of output (0, 0) covers rows/cols 0..1 only
    window = x[0, 0, :2, :2].ravel()
    first = int(np.flatnonzero(window == window.max())[0])
    assert idx[0, 0, 0, 0] == (first // 2) * 7 + first % 2


def test_max_pool2d_nan_wins_and_the_first_nan_is_kept():
    # PyTorch propagates NaN through max pooling; the kernel keeps the first NaN's index
    x = np.array([[[[1.0, np.nan, 5.0, 2.0],
                    [np.nan, 3.0, 4.0, 6.0]]]])
    y, idx = ref.max_pool2d_fwd(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == 6.0
    np.testing.assert_array_equal(idx[0, 0, 0], [1, 7])


def test_ceil_mode_drops_a_window_that_starts_in_the_right_padding():
    # H = W = 5, kernel 2, stride 2, padding 1: ceil((5 + 2 - 2) / 2) + 1 = 4, but the
    # 4th window would start at 3*2 - 1 = 5, inside the right padding: 3 outputs.
    x = rand(np.random.default_rng(0), 1, 2, 5, 5)
    y, idx = ref.max_pool2d_fwd(x, (2, 2), (2, 2), (1, 1), (1, 1), True)
    assert y.shape == (1, 2, 3, 3)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, (2, 2), (2, 2), (1, 1), (1, 1), True)
    close(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    for cip in (False, True):
        a = ref.avg_pool2d_fwd(x, (2, 2), (2, 2), (1, 1), True, cip)
        close(a, loops.avg_pool2d_fwd(x, (2, 2), (2, 2), (1, 1), True, cip))


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_avg_pool2d_against_loops(shape, case, ceil_mode, count_include_pad):
    x = rand(np.random.default_rng(0), *shape)
    y = ref.avg_pool2d_fwd(x, *case, ceil_mode, count_include_pad)
    close(y, loops.avg_pool2d_fwd(x, *case, ceil_mode, count_include_pad))
    dy = rand(np.random.default_rng(1), *y.shape)
    close(ref.avg_pool2d_bwd(dy, x.shape, *case, ceil_mode, count_include_pad),
          loops.avg_pool2d_bwd(dy, x.shape, *case, ceil_mode, count_include_pad))


def test_avg_pool2d_divisor_by_hand():
    # H = W = 4 of ones, kernel 3, stride 2, padding 1, ceil_mode: 3 outputs per axis
    # (ceil((4 + 2 - 3) / 2) + 1 = 3; the last window starts at 3 < 4 + 1).
    # Row windows: [-1, 2), [1, 4), [3, 6) clipped at H + pad = 5 -> [3, 5).
    x = np.ones((1, 1, 4, 4))
    args = ((3, 3), (2, 2), (1, 1), True)
    incl = ref.avg_pool2d_fwd(x, *args, True)[0, 0]
    real = np.array([2, 3, 1])            # input rows in each window
    padded = np.array([3, 3, 2])          # window length counting padding, clipped at 5
    close(incl, np.outer(real, real) / np.outer(padded, padded))
    close(ref.avg_pool2d_fwd(x, *args, False)[0, 0], np.ones((3, 3)))


@pytest.mark.parametrize("out", [(1, 1), (2, 3), (3, 3), (3, 4), (7, 9), (5, 2)], ids=str)
def test_adaptive_avg_pool2d_against_loops(out):
    x = rand(np.random.default_rng(0), 2, 3, 7, 9)
    y = ref.adaptive_avg_pool2d_fwd(x, out)
    close(y, loops.adaptive_avg_pool2d_fwd(x, out))
    dy = rand(np.random.default_rng(1), *y.shape)
    close(ref.adaptive_avg_pool2d_bwd(dy, x.shape), loops.adaptive_avg_pool2d_bwd(dy, x.shape))


def test_adaptive_avg_pool2d_global_is_the_mean():
    x = rand(np.random.default_rng(0), 2, 3, 5, 6)
    close(ref.adaptive_avg_pool2d_fwd(x, (1, 1))[:, :, 0, 0], x.mean(axis=(2, 3)))


def test_pools_float32_stay_float32():
    x = rand(np.random.default_rng(0), 2, 3, 7, 9).astype(np.float32)
    y, idx = ref.max_pool2d_fwd(x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    a = ref.avg_pool2d_fwd(x, (3, 3), (2, 2), (1, 1), True, False)
    g = ref.adaptive_avg_pool2d_fwd(x, (3, 4))
    outs = [y, a, g, ref.max_pool2d_bwd(y, idx, x.shape, (3, 3), (2, 2), (1, 1), (1, 1)),
            ref.avg_pool2d_bwd(a, x.shape, (3, 3), (2, 2), (1, 1), True, False),
            ref.adaptive_avg_pool2d_bwd(g, x.shape)]
    assert all(o.dtype == np.float32 for o in outs)
    close(a, loops.avg_pool2d_fwd(x, (3, 3), (2, 2), (1, 1), True, False), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- activations

ACTIVATIONS = {
    # name: (reference fwd, reference bwd, loop fwd, loop bwd, bwd takes y (else x))
    "relu": (ref.relu_fwd, ref.relu_bwd, loops.relu_fwd, loops.relu_bwd, True),
    "leaky_relu": (lambda x: ref.leaky_relu_fwd(x, 0.1), lambda dy, x: ref.leaky_relu_bwd(dy, x, 0.1),
                   lambda x: loops.leaky_relu_fwd(x, 0.1), lambda dy, x: loops.leaky_relu_bwd(dy, x, 0.1),
                   False),
    "sigmoid": (ref.sigmoid_fwd, ref.sigmoid_bwd, loops.sigmoid_fwd, loops.sigmoid_bwd, True),
    "tanh": (ref.tanh_fwd, ref.tanh_bwd, loops.tanh_fwd, loops.tanh_bwd, True),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_against_loops_and_differences(name):
    fwd, bwd, fwd_loop, bwd_loop, takes_y = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = rand(rng, 2, 3, 4, 5) * 3
    x[np.abs(x) < 1e-3] = 0.5                         # keep finite differences off the kink
    dy = rand(rng, *x.shape)
    y = fwd(x)
    close(y, fwd_loop(x))
    dx = bwd(dy, y if takes_y else x)
    close(dx, bwd_loop(dy, y if takes_y else x))
    num = (fwd_loop(x + 1e-6) - fwd_loop(x - 1e-6)) / 2e-6 * dy
    close(dx, num, rtol=1e-6, atol=1e-8)
    x32 = x.astype(np.float32)
    y32 = fwd(x32)
    assert y32.dtype == np.float32
    assert bwd(dy.astype(np.float32), y32 if takes_y else x32).dtype == np.float32


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise"):
        y = ref.sigmoid_fwd(x)
    close(y, [0.0, 1 / (1 + np.exp(50.0)), 0.5, 1 / (1 + np.exp(-50.0)), 1.0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6)], ids=str)
def test_bias_relu_against_loops(shape):
    rng = np.random.default_rng(0)
    x, b = rand(rng, *shape), rand(rng, shape[1])
    close(ref.bias_relu_fwd(x, b), loops.bias_relu_fwd(x, b))


# ----------------------------------------------------------------------------- softmax and loss


@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), 2)])
def test_softmax_and_log_softmax_against_loops(shape, dim):
    rng = np.random.default_rng(0)
    x, dy = rand(rng, *shape) * 4, rand(rng, *shape)
    x.flat[0] = 800.0                                 # would overflow exp() unshifted
    y = ref.softmax_fwd(x, dim)
    close(y, loops.softmax_fwd(x, dim))
    close(ref.softmax_bwd(dy, y, dim), loops.softmax_bwd(dy, y, dim))
    ly = ref.log_softmax_fwd(x, dim)
    close(ly, loops.log_softmax_fwd(x, dim))
    close(ref.log_softmax_bwd(dy, ly, dim), loops.log_softmax_bwd(dy, ly, dim))


def test_cross_entropy_against_loops_and_formula():
    rng = np.random.default_rng(0)
    logits = rand(rng, 6, 4) * 3
    target = np.array([0, 3, 1, 1, 2, 0], dtype=np.int64)
    loss, log_probs = ref.cross_entropy_fwd(logits, target)
    assert loss.shape == () and loss.dtype == np.float64
    close(loss, loops.cross_entropy_fwd(logits, target))
    close(log_probs, loops.log_softmax_fwd(logits, 1))
    dlogits = ref.cross_entropy_bwd(np.array(2.5), log_probs, target)
    close(dlogits, loops.cross_entropy_bwd(2.5, logits, target))
    onehot = np.eye(4)[target]
    close(ref.cross_entropy_bwd(1.0, log_probs, target), (loops.softmax_fwd(logits, 1) - onehot) / 6)
    loss32, lp32 = ref.cross_entropy_fwd(logits.astype(np.float32), target)
    assert loss32.dtype == np.float32 and ref.cross_entropy_bwd(1.0, lp32, target).dtype == np.float32


def test_cross_entropy_rejects_bad_target():
    with pytest.raises(ValueError, match="target"):
        ref.cross_entropy_fwd(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="target"):
        ref.cross_entropy_fwd(np.zeros((2, 3)), np.array([0, 1, 2]))


# ----------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)], ids=str)
def test_batch_norm_training_against_loops(shape, affine):
    rng = np.random.default_rng(0)
    x, dy = rand(rng, *shape) * 2 + 1, rand(rng, *shape)
    c = shape[1]
    weight, bias = (rand(rng, c), rand(rng, c)) if affine else (None, None)
    rm, rv = rand(rng, c), rng.random(c) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    eps, momentum = 1e-5, 0.1
    y, mean, invstd = ref.batch_norm_fwd(x, weight, bias, rm, rv, True, momentum, eps)
    stats = loops.batch_norm_stats(x, eps)
    close(mean, [s[0] for s in stats])
    close(invstd, [s[3] for s in stats])
    close(y, loops.batch_norm_fwd(x, weight, bias, mean, invstd))
    close(rm, [0.9 * a + 0.1 * s[0] for a, s in zip(rm0, stats)])
    close(rv, [0.9 * a + 0.1 * s[2] for a, s in zip(rv0, stats)])   # unbiased variance
    for got, want in zip(ref.batch_norm_bwd(dy, x, weight, mean, invstd, True),
                         loops.batch_norm_bwd(dy, x, weight, mean, invstd, True)):
        close(got, want)


def test_batch_norm_inference_against_loops():
    rng = np.random.default_rng(0)
    x, dy = rand(rng, 3, 2, 3, 2), rand(rng, 3, 2, 3, 2)
    weight, bias, rm, rv = rand(rng, 2), rand(rng, 2), rand(rng, 2), rng.random(2) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = ref.batch_norm_fwd(x, weight, bias, rm, rv, False, 0.1, 1e-5)
    close(rm, rm0), close(rv, rv0)                    # untouched in inference
    close(mean, rm0), close(invstd, 1 / np.sqrt(rv0 + 1e-5))
    close(y, loops.batch_norm_fwd(x, weight, bias, rm0, invstd))
    for got, want in zip(ref.batch_norm_bwd(dy, x, weight, mean, invstd, False),
                         loops.batch_norm_bwd(dy, x, weight, mean, invstd, False)):
        close(got, want)


def test_batch_norm_running_stats_by_hand():
    # channel 0 holds 1, 3 (mean 2, unbiased var 2); channel 1 holds 2, 6 (mean 4, var 8)
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    rm, rv = np.zeros(2), np.ones(2)
    y, mean, invstd = ref.batch_norm_fwd(x, None, None, rm, rv, True, 0.1, 0.0)
    close(rm, [0.2, 0.4])
    close(rv, [0.9 + 0.1 * 2, 0.9 + 0.1 * 8])
    close(mean, [2.0, 4.0])
    close(invstd, [1.0, 0.5])                         # biased var 1 and 4
    close(y, [[-1.0, -1.0], [1.0, 1.0]])


def test_batch_norm_training_backward_matches_central_differences():
    rng = np.random.default_rng(4)
    x, dy, weight, bias = rand(rng, 4, 2), rand(rng, 4, 2), rand(rng, 2), rand(rng, 2)
    f = lambda x_: float((ref.batch_norm_fwd(x_, weight, bias, None, None, True, 0.1, 1e-5)[0] * dy).sum())
    _, mean, invstd = ref.batch_norm_fwd(x, weight, bias, None, None, True, 0.1, 1e-5)
    dx = ref.batch_norm_bwd(dy, x, weight, mean, invstd, True)[0]
    num = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        num[i] = (f(x + e) - f(x - e)) / 2e-6
    close(dx, num, rtol=1e-6, atol=1e-8)


def test_batch_norm_float32_stays_float32():
    x = rand(np.random.default_rng(0), 4, 3, 2, 2).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    y, mean, invstd = ref.batch_norm_fwd(x, w, b, rm, rv, True, 0.1, 1e-5)
    assert {a.dtype for a in (y, mean, invstd, rm, rv)} == {np.dtype(np.float32)}
    assert all(a.dtype == np.float32 for a in ref.batch_norm_bwd(x, x, w, mean, invstd, True))


# ----------------------------------------------------------------------------- dropout


def test_dropout_mask_equals_the_hash_definition():
    x = np.ones((3, 7, 11))                           # 231 elements
    for p, seed in ((0.3, 0), (0.5, 12345), (0.9, 2**32 + 7), (0.5, -1)):
        y, mask = ref.dropout_fwd(x, p, seed)
        assert mask.dtype == np.uint8
        want = [loops.dropout_keep(i, p, seed) for i in range(x.size)]
        np.testing.assert_array_equal(mask.ravel(), np.array(want, dtype=np.uint8))
        close(y, mask / (1 - p))


def test_dropout_seeds_and_keep_rate():
    x = rand(np.random.default_rng(0), 200, 500)
    _, m1 = ref.dropout_fwd(x, 0.3, 7)
    _, m2 = ref.dropout_fwd(x, 0.3, 7)
    _, m3 = ref.dropout_fwd(x, 0.3, 8)
    np.testing.assert_array_equal(m1, m2)
    assert (m1 != m3).mean() > 0.3                    # about 2 * 0.3 * 0.7 = 0.42 differ
    assert abs(m1.mean() - 0.7) < 0.005               # 100,000 draws: sd ~ 0.0015
    assert ref.dropout_fwd(x, 0.0, 1)[1].all()
    y, m = ref.dropout_fwd(x, 1.0, 1)
    assert not m.any() and not y.any()


def test_dropout_backward_and_dtype():
    x = rand(np.random.default_rng(0), 4, 5).astype(np.float32)
    y, mask = ref.dropout_fwd(x, 0.25, 3)
    assert y.dtype == np.float32
    dy = np.ones_like(x)
    dx = ref.dropout_bwd(dy, mask, 0.25)
    assert dx.dtype == np.float32
    close(dx, np.where(mask == 1, 1 / 0.75, 0.0), rtol=1e-6)
    with pytest.raises(ValueError, match="p"):
        ref.dropout_fwd(x, 1.5, 0)
