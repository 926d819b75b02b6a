"""Edge shapes through every op: empty batches (N=0), one channel, 1x1 images, a kernel as
large as the input, strides larger than the kernel.

The reference backend is checked against the plain-loop definitions of tests/loops.py on
shapes drawn by hypothesis from those edges, forward and backward; the autograd layer is
checked on N=0 against PyTorch (the output and every gradient have N=0, and the losses
are NaN, as PyTorch has them).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pycnn
import pycnn.functional as F
from pycnn.backends import numpy_ref as ref

try:                        # tests/ as a package or as a plain folder on sys.path
    from . import loops
except ImportError:
    import loops

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
TOL = dict(rtol=1e-10, atol=1e-10)

batches = st.sampled_from([0, 1, 2])             # N=0: the empty batch
channels = st.sampled_from([1, 2])
sides = st.sampled_from([1, 2, 3, 5])            # 1: a 1x1 image


@st.composite
def kernels_for(draw, side):
    """A kernel side: 1, the input's own side (kernel = input) or anything up to it."""
    return draw(st.sampled_from([1, side, draw(st.integers(1, side))]))


def _close(a, b):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, **TOL)


# ----------------------------------------------------------------------------- convolution

@st.composite
def conv_edges(draw):
    n, h, w = draw(batches), draw(sides), draw(sides)
    groups = draw(st.sampled_from([1, 2]))
    cg, kg = draw(channels), draw(channels)
    r, s = draw(kernels_for(h)), draw(kernels_for(w))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))     # often > kernel
    padding = tuple(draw(st.integers(0, 1)) for _ in range(4))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = loops.conv_out(h, r, stride[0], padding[0], padding[1], dilation[0])
    q = loops.conv_out(w, s, stride[1], padding[2], padding[3], dilation[1])
    assume(p >= 1 and q >= 1)
    return ((n, cg * groups, h, w), (kg * groups, cg, r, s), stride, padding, dilation, groups,
            draw(st.integers(0, 2**16)))


@SETTINGS
@given(conv_edges())
def test_conv2d_on_edge_shapes(problem):
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
               rng.standard_normal(w_shape[0]))
    args = (stride, padding, dilation, groups)
    y = ref.conv2d_fwd(x, w, b, *args)
    _close(y, loops.conv2d_fwd(x, w, b, *args))
    _close(ref.conv2d_bias_relu_fwd(x, w, b, *args), loops.relu_fwd(loops.conv2d_fwd(x, w, b, *args)))
    dy = rng.standard_normal(y.shape)
    _close(ref.conv2d_bwd_data(dy, w, x_shape, *args), loops.conv2d_bwd_data(dy, w, x_shape, *args))
    _close(ref.conv2d_bwd_filter(x, dy, w_shape, *args),
           loops.conv2d_bwd_filter(x, dy, w_shape, *args))
    _close(ref.conv2d_bwd_bias(dy), loops.conv2d_bwd_bias(dy))


# ----------------------------------------------------------------------------- pooling

@st.composite
def pool_edges(draw, dilated=True):
    n, c, h, w = draw(batches), draw(channels), draw(sides), draw(sides)
    kernel = (draw(kernels_for(h)), draw(kernels_for(w)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    ceil_mode = draw(st.booleans())
    outs = [loops.pool_out(size, k, s, p, d, ceil_mode)
            for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation)]
    assume(min(outs) >= 1)
    for size, k, s, p, d, out in zip((h, w), kernel, stride, padding, dilation, outs):
        # every window reads an input element (functional refuses the others)
        assume(all(any(0 <= o * s - p + t * d < size for t in range(k)) for o in range(out)))
    return (n, c, h, w), kernel, stride, padding, dilation, ceil_mode, draw(st.integers(0, 2**16))


@SETTINGS
@given(pool_edges())
def test_max_pool2d_on_edge_shapes(problem):
    x_shape, kernel, stride, padding, dilation, ceil_mode, seed = problem
    x = np.random.default_rng(seed).integers(0, 3, x_shape).astype(np.float64)   # ties
    y, idx = ref.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    _close(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    _close(ref.max_pool2d_bwd(dy, idx, x_shape, kernel, stride, padding, dilation),
           loops.max_pool2d_bwd(dy, idx_loop, x_shape))


@SETTINGS
@given(pool_edges(dilated=False), st.booleans())
def test_avg_pool2d_on_edge_shapes(problem, count_include_pad):
    x_shape, kernel, stride, padding, _, ceil_mode, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    y = ref.avg_pool2d_fwd(x, *args)
    _close(y, loops.avg_pool2d_fwd(x, *args))
    dy = rng.standard_normal(y.shape)
    _close(ref.avg_pool2d_bwd(dy, x_shape, *args), loops.avg_pool2d_bwd(dy, x_shape, *args))


@SETTINGS
@given(batches, channels, sides, sides, st.integers(1, 6), st.integers(1, 6), st.integers(0, 99))
def test_adaptive_avg_pool2d_on_edge_shapes(n, c, h, w, oh, ow, seed):
    # output sizes from 1 to past the input (windows then repeat input pixels)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    y = ref.adaptive_avg_pool2d_fwd(x, (oh, ow))
    _close(y, loops.adaptive_avg_pool2d_fwd(x, (oh, ow)))
    dy = rng.standard_normal(y.shape)
    _close(ref.adaptive_avg_pool2d_bwd(dy, x.shape), loops.adaptive_avg_pool2d_bwd(dy, x.shape))


# ----------------------------------------------------------------------------- pointwise

image_shapes = st.tuples(batches, channels, sides, sides)


@SETTINGS
@given(image_shapes, st.integers(0, 99))
def test_activations_on_edge_shapes(shape, seed):
    rng = np.random.default_rng(seed)
    x, dy, b = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape[1])
    for name in ("relu", "sigmoid", "tanh"):
        y = getattr(ref, f"{name}_fwd")(x)
        _close(y, getattr(loops, f"{name}_fwd")(x))
        _close(getattr(ref, f"{name}_bwd")(dy, y), getattr(loops, f"{name}_bwd")(dy, y))
    _close(ref.leaky_relu_fwd(x, 0.1), loops.leaky_relu_fwd(x, 0.1))
    _close(ref.leaky_relu_bwd(dy, x, 0.1), loops.leaky_relu_bwd(dy, x, 0.1))
    _close(ref.bias_relu_fwd(x, b), loops.bias_relu_fwd(x, b))


@SETTINGS
@given(image_shapes, st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2**16))
def test_dropout_on_edge_shapes(shape, p, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y, mask = ref.dropout_fwd(x, p, seed)
    keep = np.array([loops.dropout_keep(i, p, seed) for i in range(x.size)],
                    dtype=np.uint8).reshape(shape)
    np.testing.assert_array_equal(mask, keep)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    _close(y, x * keep * scale)
    _close(ref.dropout_bwd(dy, mask, p), dy * keep * scale)


# ----------------------------------------------------------------------------- softmax, loss

@SETTINGS
@given(batches, st.integers(1, 3), st.sampled_from([0, 1]), st.integers(0, 99))
def test_softmax_on_edge_shapes(n, classes, dim, seed):
    assume(not (dim == 0 and n == 0))        # nothing to normalise: functional refuses it
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((n, classes)), rng.standard_normal((n, classes))
    for name in ("softmax", "log_softmax"):
        y = getattr(ref, f"{name}_fwd")(x, dim)
        _close(y, getattr(loops, f"{name}_fwd")(x, dim))
        _close(getattr(ref, f"{name}_bwd")(dy, y, dim), getattr(loops, f"{name}_bwd")(dy, y, dim))


@SETTINGS
@given(batches, st.integers(1, 3), st.integers(0, 99))
def test_cross_entropy_on_edge_shapes(n, classes, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes))
    target = rng.integers(0, classes, n)
    with np.errstate(all="raise"):           # N=0: no 0/0 inside, a NaN by definition
        loss, log_probs = ref.cross_entropy_fwd(logits, target)
        dlogits = ref.cross_entropy_bwd(np.asarray(0.7), log_probs, target)
    want = loops.cross_entropy_fwd(logits, target)
    if n == 0:
        assert np.isnan(loss) and loss.shape == () and np.isnan(want)
    else:
        np.testing.assert_allclose(loss, want, **TOL)
    _close(dlogits, loops.cross_entropy_bwd(0.7, logits, target))


# ----------------------------------------------------------------------------- batch norm

@SETTINGS
@given(st.one_of(image_shapes, st.tuples(batches, channels)), st.booleans(), st.integers(0, 99))
def test_batch_norm_on_edge_shapes(shape, affine, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    c, eps = shape[1], 1e-5
    weight, bias = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    per_channel = x.size // c
    if per_channel >= 2:                                 # training needs two values a channel
        stats = loops.batch_norm_stats(x, eps)
        mean, invstd = [s[0] for s in stats], [s[3] for s in stats]
        y, save_mean, save_invstd = ref.batch_norm_fwd(x, weight, bias, None, None, True, 0.1, eps)
        _close(y, loops.batch_norm_fwd(x, weight, bias, mean, invstd))
        for got, want in zip(ref.batch_norm_bwd(dy, x, weight, save_mean, save_invstd, True),
                             loops.batch_norm_bwd(dy, x, weight, mean, invstd, True)):
            _close(got, want)
    running_mean, running_var = rng.standard_normal(c), rng.random(c) + 0.5
    y, save_mean, save_invstd = ref.batch_norm_fwd(x, weight, bias, running_mean, running_var,
                                                   False, 0.1, eps)
    invstd = list(1 / np.sqrt(running_var + eps))
    _close(y, loops.batch_norm_fwd(x, weight, bias, list(running_mean), invstd))
    for got, want in zip(ref.batch_norm_bwd(dy, x, weight, save_mean, save_invstd, False),
                         loops.batch_norm_bwd(dy, x, weight, list(running_mean), invstd, False)):
        _close(got, want)


# ----------------------------------------------------------------------------- autograd, N=0

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair(shape, seed=0):
    """The same float64 values as a pycnn tensor and a torch tensor, both requiring grad."""
    a = np.random.default_rng(seed).standard_normal(shape)
    return pycnn.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


EMPTY_CASES = {
    "conv2d": (((0, 3, 5, 5), (4, 3, 3, 3), (4,)),
               lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
               lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1)),
    "conv2d_relu": (((0, 3, 5, 5), (4, 3, 3, 3), (4,)), F.conv2d_relu,
                    lambda x, w, b: TF.relu(TF.conv2d(x, w, b))),
    "max_pool2d": (((0, 2, 5, 5),), lambda x: F.max_pool2d(x, 3, 2, 1),
                   lambda x: TF.max_pool2d(x, 3, 2, 1)),
    "avg_pool2d": (((0, 2, 5, 5),), lambda x: F.avg_pool2d(x, 2, ceil_mode=True),
                   lambda x: TF.avg_pool2d(x, 2, ceil_mode=True)),
    "adaptive_avg_pool2d": (((0, 2, 5, 5),), lambda x: F.adaptive_avg_pool2d(x, 2),
                            lambda x: TF.adaptive_avg_pool2d(x, 2)),
    "relu": (((0, 3),), F.relu, TF.relu),
    "leaky_relu": (((0, 3),), F.leaky_relu, TF.leaky_relu),
    "sigmoid": (((0, 3),), F.sigmoid, torch.sigmoid),
    "tanh": (((0, 3),), F.tanh, torch.tanh),
    "linear": (((0, 4), (2, 4), (2,)), F.linear, TF.linear),
    "flatten": (((0, 2, 3, 3),), F.flatten, lambda x: torch.flatten(x, 1)),
    "softmax": (((0, 3),), F.softmax, lambda x: TF.softmax(x, -1)),
    "log_softmax": (((0, 3),), F.log_softmax, lambda x: TF.log_softmax(x, -1)),
    "cross_entropy": (((0, 3),), lambda x: F.cross_entropy(x, np.zeros(0, np.int64)),
                      lambda x: TF.cross_entropy(x, torch.zeros(0, dtype=torch.long))),
    "mse_loss": (((0, 3), (0, 3)), F.mse_loss, TF.mse_loss),
    "dropout": (((0, 3),), lambda x: F.dropout(x, 0.5), lambda x: TF.dropout(x, 0.5)),
    "batch_norm_training": (
        ((0, 3, 2, 2), (3,), (3,)),
        lambda x, w, b: F.batch_norm(x, np.zeros(3), np.ones(3), w, b, training=True),
        lambda x, w, b: TF.batch_norm(x, torch.zeros(3, dtype=torch.float64),
                                      torch.ones(3, dtype=torch.float64), w, b, training=True)),
    "batch_norm_eval": (
        ((0, 3), (3,), (3,)),
        lambda x, w, b: F.batch_norm(x, np.zeros(3), np.ones(3), w, b, training=False),
        lambda x, w, b: TF.batch_norm(x, torch.zeros(3, dtype=torch.float64),
                                      torch.ones(3, dtype=torch.float64), w, b, training=False)),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CASES))
def test_empty_batch_forward_and_backward_as_pytorch(name):
    shapes, ours, theirs = EMPTY_CASES[name]
    pairs = [_pair(s, i) for i, s in enumerate(shapes)]
    with np.errstate(all="raise"):           # no 0/0 or empty-mean warnings on the way
        y = ours(*[p for p, _ in pairs])
        y.sum().backward()
    ty = theirs(*[t for _, t in pairs])
    ty.sum().backward()
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)   # NaN == NaN
    for (p, t) in pairs:
        assert p.grad is not None and p.grad.shape == tuple(t.grad.shape)
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_models_take_an_empty_batch_in_training_and_evaluation(name, shape):
    from pycnn import models
    model = models.get_model(name)
    for training in (True, False):
        model.train(training)
        x = pycnn.tensor(np.zeros((0, *shape), np.float32), requires_grad=True)
        out = model(x)
        assert out.shape == (0, 10)
        F.cross_entropy(out, np.zeros(0, np.int64)).backward()
        assert x.grad.shape == x.shape
        assert all(p.grad is not None and np.all(p.grad.numpy() == 0) for p in model.parameters())
        model.zero_grad()
