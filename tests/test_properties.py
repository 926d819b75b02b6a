"""Property-based tests (hypothesis): the reference on randomly drawn option
combinations, against the plain-loop definitions of tests/loops.py and against
brute-force counts. The grids in test_reference.py pick the cases we thought of;
these draw the ones we did not (odd paddings, dilations wider than the input,
groups with one channel each, strides larger than the kernel, ...).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pycnn
import pycnn.functional as F
from pycnn import shapes
from pycnn.backends import numpy_ref as ref

try:                        # tests/ as a package or as a plain folder on sys.path
    from . import loops
except ImportError:
    import loops

# derandomize: CI sees the same examples on every run; to hunt for new failures, run
# locally with a larger max_examples and derandomize=False (600 each passed when written)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
TOL = dict(rtol=1e-10, atol=1e-10)


def _windows_brute_force(size, kernel, stride, pad_total, dilation):
    """Number of window positions i*stride (i = 0, 1, ...) whose last tap stays inside
    the padded input: the count the output-size formula must give."""
    count = 0
    while count * stride + dilation * (kernel - 1) <= size + pad_total - 1:
        count += 1
    return count


@SETTINGS
@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 5),
       pad=st.integers(0, 4), dilation=st.integers(1, 4))
def test_output_size_counts_the_windows(size, kernel, stride, pad, dilation):
    expected = _windows_brute_force(size, kernel, stride, 2 * pad, dilation)
    if expected < 1:
        with pytest.raises(ValueError, match="below 1"):
            shapes.out_size(size, kernel, stride, 2 * pad, dilation, dim="width")
        return
    assert shapes.out_size(size, kernel, stride, 2 * pad, dilation, dim="width") == expected
    # ceil_mode adds at most the one window that hangs over the right padding, and
    # only when it starts inside the input or its left padding (PyTorch's rule);
    # pools take padding of at most half the kernel
    if 2 * pad > kernel:
        return
    ceil = shapes.out_size(size, kernel, stride, 2 * pad, dilation, dim="width", ceil_mode=True)
    assert ceil in (expected, expected + 1)
    if ceil == expected + 1:
        assert expected * stride < size + pad


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(4))       # asymmetric too
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    x_shape, w_shape = (n, cg * groups, h, w), (kg * groups, cg, r, s)
    p = loops.conv_out(h, r, stride[0], padding[0], padding[1], dilation[0])
    q = loops.conv_out(w, s, stride[1], padding[2], padding[3], dilation[1])
    assume(p >= 1 and q >= 1)
    seed = draw(st.integers(0, 2**16))
    return x_shape, w_shape, stride, padding, dilation, groups, seed


@SETTINGS
@given(conv_problems())
def test_conv2d_matches_the_loop_definition(problem):
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
               rng.standard_normal(w_shape[0]))
    args = (stride, padding, dilation, groups)
    y = ref.conv2d_fwd(x, w, b, *args)
    np.testing.assert_allclose(y, loops.conv2d_fwd(x, w, b, *args), **TOL)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(ref.conv2d_bwd_data(dy, w, x_shape, *args),
                               loops.conv2d_bwd_data(dy, w, x_shape, *args), **TOL)
    np.testing.assert_allclose(ref.conv2d_bwd_filter(x, dy, w_shape, *args),
                               loops.conv2d_bwd_filter(x, dy, w_shape, *args), **TOL)


@st.composite
def pool_problems(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    ceil_mode = draw(st.booleans())
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    outs = [loops.pool_out(size, k, s, p, d, ceil_mode)
            for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation)]
    assume(min(outs) >= 1)
    # every window must read an input element (functional refuses the others)
    for size, k, s, p, d, out in zip((h, w), kernel, stride, padding, dilation, outs):
        assume(all(any(0 <= o * s - p + t * d < size for t in range(k)) for o in range(out)))
    return (2, 2, h, w), kernel, stride, padding, dilation, ceil_mode, draw(st.integers(0, 2**16))


@SETTINGS
@given(pool_problems())
def test_max_pool_matches_the_loop_definition(problem):
    x_shape, kernel, stride, padding, dilation, ceil_mode, seed = problem
    x = np.random.default_rng(seed).integers(0, 4, x_shape).astype(np.float64)  # many ties
    y, idx = ref.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    y_loop, idx_loop = loops.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_allclose(y, y_loop, **TOL)
    np.testing.assert_array_equal(idx, idx_loop)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    np.testing.assert_allclose(
        ref.max_pool2d_bwd(dy, idx, x_shape, kernel, stride, padding, dilation),
        loops.max_pool2d_bwd(dy, idx_loop, x_shape), **TOL)


@SETTINGS
@given(pool_problems(), st.booleans())
def test_avg_pool_matches_the_loop_definition(problem, count_include_pad):
    x_shape, kernel, stride, padding, _, ceil_mode, seed = problem
    assume(all(loops.pool_out(size, k, s, p, 1, ceil_mode) >= 1
               for size, k, s, p in zip(x_shape[2:], kernel, stride, padding)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    y = ref.avg_pool2d_fwd(x, *args)
    np.testing.assert_allclose(y, loops.avg_pool2d_fwd(x, *args), **TOL)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(ref.avg_pool2d_bwd(dy, x_shape, *args),
                               loops.avg_pool2d_bwd(dy, x_shape, *args), **TOL)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_problems())
def test_conv2d_relu_gradients_by_finite_differences(problem):
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    rng = np.random.default_rng(seed)
    x = pycnn.tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = pycnn.tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = pycnn.tensor(rng.standard_normal(w_shape[0]) + 0.1, requires_grad=True)
    # padding 4-tuples are not an argument of functional.conv2d: pick the symmetric part
    pad = (padding[0], padding[2])
    assume(all(loops.conv_out(size, k, st_, p, p, d) >= 1 for size, k, st_, p, d in
               zip(x_shape[2:], w_shape[2:], stride, pad, dilation)))
    y = F.conv2d(x, w, b, stride, pad, dilation, groups)
    # keep clear of ReLU's kink, where finite differences and the subgradient differ
    assume(np.all(np.abs(y.numpy()) > 1e-3))
    assert pycnn.gradcheck(lambda x, w, b: F.conv2d_relu(x, w, b, stride, pad, dilation, groups),
                           [x, w, b])
