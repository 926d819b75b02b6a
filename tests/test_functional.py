"""pycnn.functional: gradients by central differences across the option grid,
and a clear error for every kind of bad input.

The forward values of the reference backend are checked against plain loops in
test_reference.py; here every op's backward, as wired through autograd, is
checked against finite differences (float64).
"""
import numpy as np
import pytest

import pycnn
import pycnn.functional as F

rng = np.random.default_rng(1234)


def t64(*shape, grad=True, low=-1.0, high=1.0):
    return pycnn.tensor(rng.uniform(low, high, shape), requires_grad=grad)


def distinct(*shape, grad=True):
    """Values far apart, so that max pooling's argmax is stable under +-eps."""
    return pycnn.tensor(rng.permutation(np.prod(shape)).reshape(shape) * 0.1 + 0.01,
                        requires_grad=grad)


# ----------------------------------------------------------------- gradients #

CONV_CASES = [
    # (N, C, H, W), (K, C/g, R, S), kwargs
    ((2, 3, 5, 6), (4, 3, 3, 3), dict()),
    ((1, 2, 7, 5), (3, 2, 3, 3), dict(stride=2, padding=1)),
    ((2, 2, 6, 6), (2, 2, 3, 2), dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1))),
    ((1, 4, 5, 5), (6, 2, 3, 3), dict(groups=2, padding="same")),
    ((2, 3, 6, 5), (3, 1, 3, 3), dict(groups=3, padding=1)),          # depthwise
    ((1, 3, 6, 6), (6, 1, 2, 2), dict(groups=3, padding="same")),     # even kernel: asymmetric
    ((1, 2, 5, 7), (2, 2, 1, 3), dict(padding="valid")),
    ((1, 1, 6, 6), (1, 1, 2, 2), dict(dilation=2, padding="same")),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs, ws, kw", CONV_CASES)
def test_conv2d_gradcheck(xs, ws, kw, bias):
    x, w = t64(*xs), t64(*ws)
    b = t64(ws[0]) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert pycnn.gradcheck(lambda x, w, *b: F.conv2d(x, w, *(b or [None]), **kw), inputs)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),                 # overlapping windows
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
])
def test_max_pool2d_gradcheck(kw):
    x = distinct(2, 2, 7, 7)
    assert pycnn.gradcheck(lambda x: F.max_pool2d(x, **kw), [x])


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True, count_include_pad=False),
])
def test_avg_pool2d_gradcheck(kw):
    x = t64(2, 2, 7, 6)
    assert pycnn.gradcheck(lambda x: F.avg_pool2d(x, **kw), [x])


@pytest.mark.parametrize("out", [1, (2, 3), 3])
def test_adaptive_avg_pool2d_gradcheck(out):
    x = t64(2, 2, 7, 5)
    assert pycnn.gradcheck(lambda x: F.adaptive_avg_pool2d(x, out), [x])


@pytest.mark.parametrize("fn", [
    F.relu, F.sigmoid, F.tanh,
    lambda x: F.leaky_relu(x, 0.2),
    lambda x: F.softmax(x, dim=1),
    lambda x: F.log_softmax(x, dim=-1),
    lambda x: F.flatten(x),
])
def test_pointwise_and_softmax_gradcheck(fn):
    x = t64(3, 4, 2) + 0.0  # non-leaf input works too
    x = pycnn.tensor(np.where(np.abs(x.numpy()) < 1e-3, 0.5, x.numpy()), requires_grad=True)
    assert pycnn.gradcheck(fn, [x])


def test_linear_gradcheck():
    x, w, b = t64(4, 5), t64(3, 5), t64(3)
    assert pycnn.gradcheck(F.linear, [x, w, b])
    assert pycnn.gradcheck(lambda x, w: F.linear(x, w), [t64(2, 3, 5), w])


def test_losses_gradcheck():
    logits = t64(5, 4)
    target = np.array([0, 3, 1, 1, 2])
    assert pycnn.gradcheck(lambda z: F.cross_entropy(z, target), [logits])
    a, b = t64(3, 4), t64(3, 4)
    assert pycnn.gradcheck(F.mse_loss, [a, b])


def test_cross_entropy_value_by_hand():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    loss = F.cross_entropy(pycnn.tensor(z), np.array([2, 0])).item()
    expected = -(3.0 - np.log(np.exp(z[0]).sum()) + 0.0 - np.log(3.0)) / 2
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(shape, training):
    x = t64(*shape)
    c = shape[1]
    w, b = t64(c, low=0.5, high=1.5), t64(c)
    rm, rv = rng.uniform(-0.5, 0.5, c), rng.uniform(0.5, 1.5, c)
    # running stats are copied per call: gradcheck calls fn many times
    fn = lambda x, w, b: F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)
    assert pycnn.gradcheck(fn, [x, w, b])


def test_batch_norm_updates_running_stats_like_pytorch():
    x = rng.standard_normal((8, 2, 3, 3))
    rm, rv = np.zeros(2), np.ones(2)
    F.batch_norm(pycnn.tensor(x), rm, rv, training=True, momentum=0.1)
    flat = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(rm, 0.1 * flat.mean(1))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * flat.var(1, ddof=1))


def test_dropout_gradcheck_and_semantics():
    x = t64(4, 5)
    assert pycnn.gradcheck(lambda x: F.dropout(x, 0.3, training=True, seed=7), [x])
    y1 = F.dropout(x, 0.5, seed=3).numpy()
    y2 = F.dropout(x, 0.5, seed=3).numpy()
    np.testing.assert_array_equal(y1, y2)
    kept = y1 != 0
    np.testing.assert_allclose(y1[kept], x.numpy()[kept] * 2.0)
    assert F.dropout(x, 0.5, training=False) is x
    assert np.all(F.dropout(x, 1.0).numpy() == 0)


def test_max_pool2d_return_indices():
    x = pycnn.tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx.numpy().reshape(-1), [5, 7, 13, 15])
    with pycnn.no_grad():
        _, idx2 = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx2.numpy(), idx.numpy())


def test_padding_same_keeps_the_size_and_pads_bottom_right_for_even_kernels():
    x = pycnn.tensor(np.zeros((1, 1, 5, 5)))
    w = pycnn.tensor(np.zeros((1, 1, 4, 2)))
    assert F.conv2d(x, w, padding="same").shape == (1, 1, 5, 5)
    assert pycnn.shapes.conv_padding("same", (4, 2), (1, 1), (1, 1)) == (1, 2, 0, 1)


def test_output_size_worked_example():
    # W=10, F=3, P=0, S=2: (10 - 3)/2 + 1 = 4.5 -> 4 (floor), 5 with ceil_mode
    assert pycnn.shapes.out_size(10, 3, 2, 0, 1, dim="width") == 4
    x = pycnn.tensor(np.zeros((1, 1, 10, 10)))
    assert F.max_pool2d(x, 3, 2).shape[-1] == 4
    assert F.max_pool2d(x, 3, 2, ceil_mode=True).shape[-1] == 5


# ----------------------------------------------------------------- bad input #

x4 = pycnn.tensor(np.zeros((2, 4, 8, 8), np.float32))
w4 = pycnn.tensor(np.zeros((6, 2, 3, 3), np.float32))


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: F.conv2d(pycnn.tensor(np.zeros((4, 8, 8), np.float32)), w4), ValueError,
     r"x \(input\) must be 4-D, got shape \(4, 8, 8\)"),
    (lambda: F.conv2d(x4, w4), ValueError, r"channel mismatch: x has C=4 .* expects C = 2\*1 = 2"),
    (lambda: F.conv2d(x4, w4, groups=3), ValueError, r"groups \(3\) must divide the input channels C=4"),
    (lambda: F.conv2d(x4, pycnn.tensor(np.zeros((5, 2, 3, 3), np.float32)), groups=2), ValueError,
     r"groups \(2\) must divide the output channels K=5"),
    (lambda: F.conv2d(x4, w4, groups=2, stride=0), ValueError, r"stride: expected values >= 1, got 0"),
    (lambda: F.conv2d(x4, w4, groups=2, dilation=(1, -1)), ValueError, r"dilation: expected values >= 1"),
    (lambda: F.conv2d(x4, w4, groups=2, padding=-1), ValueError, r"padding: expected values >= 0"),
    (lambda: F.conv2d(x4, w4, groups=2, padding="full"), ValueError, r"'valid' or 'same', got 'full'"),
    (lambda: F.conv2d(x4, w4, groups=2, stride=2, padding="same"), ValueError, r"'same' needs stride 1"),
    (lambda: F.conv2d(x4, pycnn.tensor(np.zeros((6, 2, 9, 3), np.float32)), groups=2), ValueError,
     r"output height size would be below 1: floor\(\(8 \+ 0 - 1\*\(9-1\) - 1\)/1\) \+ 1 = 0"),
    (lambda: F.conv2d(x4, w4, pycnn.tensor(np.zeros(5, np.float32)), groups=2), ValueError,
     r"b \(bias\) must have shape \(6,\), got \(5,\)"),
    (lambda: F.conv2d(x4, pycnn.tensor(np.zeros((6, 2, 3, 3))), groups=2), TypeError,
     r"w has dtype float64 but x has float32"),
    (lambda: F.conv2d(pycnn.tensor(np.zeros((2, 4, 8, 8), np.int64)), w4), TypeError,
     r"x \(input\) must be a floating tensor .* got dtype int64"),
    (lambda: F.conv2d(np.zeros((2, 4, 8, 8)), w4), TypeError, r"x \(input\) must be a pycnn Tensor"),
    (lambda: F.max_pool2d(x4, 2, padding=2), ValueError, r"padding should be at most half the kernel size"),
    (lambda: F.max_pool2d(x4, 0), ValueError, r"kernel_size: expected values >= 1"),
    (lambda: F.max_pool2d(x4, 9), ValueError, r"output height size would be below 1"),
    (lambda: F.max_pool2d(pycnn.tensor(np.zeros((1, 1, 4, 1), np.float32)), 2, 1, 1, dilation=2),
     ValueError, r"window of output width position 0 reads only padding"),
    (lambda: F.avg_pool2d(x4, 3, stride=(1, 0)), ValueError, r"stride: expected values >= 1"),
    (lambda: F.adaptive_avg_pool2d(x4, 0), ValueError, r"output_size: expected values >= 1"),
    (lambda: F.linear(pycnn.tensor(np.zeros((2, 3), np.float32)), pycnn.tensor(np.zeros((4, 5), np.float32))),
     ValueError, r"x has 3 input features .* expects 5"),
    (lambda: F.softmax(x4, dim=4), ValueError, r"dim must be in \[-4, 3\]"),
    (lambda: F.cross_entropy(pycnn.tensor(np.zeros((3, 4), np.float32)), np.array([0, 1, 4])), ValueError,
     r"target: expected class indices in \[0, 4\), got values in \[0, 4\]"),
    (lambda: F.cross_entropy(pycnn.tensor(np.zeros((3, 4), np.float32)), np.array([0.0, 1, 2])), TypeError,
     r"target must hold integer class indices"),
    (lambda: F.cross_entropy(pycnn.tensor(np.zeros((3, 4), np.float32)), np.array([0, 1])), ValueError,
     r"target must have shape \(3,\)"),
    (lambda: F.mse_loss(pycnn.tensor(np.zeros((3, 1))), pycnn.tensor(np.zeros(3))), ValueError,
     r"same shape, got \(3, 1\) and \(3,\)"),
    (lambda: F.dropout(x4, 1.5), ValueError, r"p must be a probability in \[0, 1\], got 1.5"),
    (lambda: F.batch_norm(x4, None, None), ValueError, r"running_mean and running_var are needed"),
    (lambda: F.batch_norm(x4, np.zeros(3, np.float32), np.ones(4, np.float32), training=True), ValueError,
     r"running_mean must have shape \(4,\), got \(3,\)"),
    (lambda: F.batch_norm(pycnn.tensor(np.zeros((3, 0), np.float32)), None, None, training=True),
     ValueError, r"at least one channel, got shape \(3, 0\)"),
    (lambda: F.batch_norm(pycnn.tensor(np.zeros((1, 4), np.float32)), None, None, training=True),
     ValueError, r"more than one value per channel"),
    # geometry errors name the op
    (lambda: F.conv2d(x4, w4, groups=2, padding=-1), ValueError, r"^conv2d: padding: expected values >= 0"),
    (lambda: F.conv2d_relu(x4, pycnn.tensor(np.zeros((6, 2, 9, 3), np.float32)), groups=2), ValueError,
     r"^conv2d_relu: output height size would be below 1"),
    # empty channels or filters, empty planes, empty softmax axes: an error, not NumPy's
    (lambda: F.conv2d(pycnn.tensor(np.zeros((2, 0, 8, 8), np.float32)),
                      pycnn.tensor(np.zeros((3, 0, 3, 3), np.float32))), ValueError,
     r"at least one input channel, one output channel and a filter of at least 1x1"),
    (lambda: F.conv2d(x4, pycnn.tensor(np.zeros((0, 4, 3, 3), np.float32))), ValueError,
     r"at least one input channel, one output channel"),
    (lambda: F.conv2d(x4, pycnn.tensor(np.zeros((3, 4, 0, 3), np.float32))), ValueError,
     r"a filter of at least 1x1"),
    (lambda: F.adaptive_avg_pool2d(pycnn.tensor(np.zeros((1, 1, 0, 4), np.float32)), 1), ValueError,
     r"adaptive_avg_pool2d: x \(input\) must have non-zero C, H and W"),
    (lambda: F.softmax(pycnn.tensor(np.zeros((2, 0), np.float32)), 1), ValueError,
     r"softmax: dim 1 of x \(input\) has size 0"),
    (lambda: F.log_softmax(pycnn.tensor(np.zeros((2, 0), np.float32))), ValueError,
     r"log_softmax: dim 1 of x \(input\) has size 0"),
    # arguments of the wrong type name themselves
    (lambda: F.softmax(x4, 1.5), TypeError, r"softmax: dim must be an int, got 1.5"),
    (lambda: F.softmax(x4, None), TypeError, r"softmax: dim must be an int, got None"),
    (lambda: F.linear(pycnn.tensor(np.zeros((2, 3), np.float32)), pycnn.tensor(np.zeros((4, 3), np.float32)),
                      [0.0, 0.0, 0.0, 0.0]), TypeError, r"linear: b \(bias\) must be a pycnn Tensor, got list"),
    (lambda: F.batch_norm(x4, None, None, training=True, momentum=None), TypeError,
     r"batch_norm: momentum: expected a finite number, got None"),
    (lambda: F.batch_norm(x4, None, None, training=True, eps="a"), TypeError,
     r"batch_norm: eps: expected a finite number, got 'a'"),
    (lambda: F.batch_norm(x4, None, None, training=True, eps=0.0), ValueError,
     r"batch_norm: eps: expected a value > 0.0"),
    (lambda: F.batch_norm(x4, [0.0] * 4, [1.0] * 4), TypeError,
     r"running_mean must be a float32 array \(or Tensor\) on 'cpu', got list"),
    (lambda: F.batch_norm(x4, np.zeros(4), np.ones(4)), TypeError,
     r"running_mean must be a float32 array on 'cpu', got float64 on 'cpu'"),
    (lambda: F.leaky_relu(x4, "a"), TypeError, r"leaky_relu: negative_slope: expected a finite number"),
    (lambda: F.dropout(x4, 0.5, seed="abc"), TypeError, r"dropout: seed must be an int or None, got 'abc'"),
    (lambda: F.dropout(x4, 0.5, seed=1.7), TypeError, r"dropout: seed must be an int or None, got 1.7"),
    (lambda: x4.flatten(5), IndexError, r"flatten: start_dim must be an int in \[-4, 3\] .* got 5"),
    (lambda: x4.flatten(0, 7), IndexError, r"flatten: end_dim must be an int in \[-4, 3\] .* got 7"),
    (lambda: x4 + np.array(["a"] * 8), TypeError, r"operand: expected a number, an array of numbers"),
])
def test_bad_input_raises_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("xs, ws, kw", CONV_CASES[:4])
def test_conv2d_relu_is_relu_of_conv2d_with_its_gradients(xs, ws, kw):
    x, w, b = t64(*xs), t64(*ws), t64(ws[0])
    fused = F.conv2d_relu(x, w, b, **kw)
    np.testing.assert_allclose(fused.numpy(), np.maximum(F.conv2d(x, w, b, **kw).numpy(), 0),
                               rtol=1e-12, atol=1e-12)
    assert pycnn.gradcheck(lambda x, w, b: F.conv2d_relu(x, w, b, **kw), [x, w, b])
    with pytest.raises(ValueError, match=r"conv2d_relu: channel mismatch"):
        F.conv2d_relu(x, t64(ws[0], ws[1] + 1, *ws[2:]))


def test_numpy_scalars_are_numbers_and_ints_as_in_pytorch():
    # NumPy integers and floats are accepted wherever a Python int or float is
    x = pycnn.tensor(np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32))
    w = pycnn.tensor(np.random.default_rng(1).standard_normal((6, 2, 3, 3)).astype(np.float32))
    ref = F.conv2d(x, w, stride=2, padding=1, groups=2).numpy()
    got = F.conv2d(x, w, stride=np.int64(2), padding=(np.int32(1), 1), groups=np.int64(2)).numpy()
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(F.max_pool2d(x, np.int64(2)).numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(F.leaky_relu(x, np.float32(0.1)).numpy(), F.leaky_relu(x, 0.1).numpy())
    np.testing.assert_array_equal(F.dropout(x, np.float32(0.5), seed=np.int64(3)).numpy(),
                                  F.dropout(x, 0.5, seed=3).numpy())
    assert F.softmax(x, np.int64(1)).shape == x.shape


def test_arithmetic_with_arrays_keeps_float32_and_never_truncates_floats():
    f32 = pycnn.tensor(np.ones(2, np.float32))
    assert (f32 * np.float64(0.5)).dtype == np.float32          # a NumPy scalar stays weak
    assert (f32 + np.array([0.5, 0.5])).dtype == np.float32
    assert (f32 * np.float32(2)).dtype == np.float32
    ints = pycnn.tensor([1, 2])
    for floats in (np.array([0.5, 0.5]), [0.5, 0.5]):       # refused, not truncated to [1, 2]
        with pytest.raises(TypeError, match=r"float array with an integer tensor \(int64\) would be truncated"):
            ints + floats
    np.testing.assert_array_equal((ints * np.float64(0.5)).numpy(), [0.5, 1.0])   # a scalar: weak
    np.testing.assert_array_equal((ints * 0.5).numpy(), [0.5, 1.0])
    np.testing.assert_array_equal((ints + np.array([1, 1])).numpy(), [2, 3])


def test_the_mean_of_nothing_is_nan():
    assert np.isnan(pycnn.tensor(np.zeros(0, np.float32)).mean().item())
    means = pycnn.tensor(np.zeros((0, 3), np.float32)).mean(axis=0).numpy()
    assert means.shape == (3,) and np.isnan(means).all()
