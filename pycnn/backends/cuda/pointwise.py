"""Pointwise ops on the GPU: activations (forward and backward), fused bias+relu,
dropout. Each checks its arrays, allocates the output from CuPy's pool and
launches one kernel on CuPy's current stream."""
from __future__ import annotations

import math

import cupy as cp

from ._common import _C, check_array, empty, ptr, stream


def _unary(launcher, x, *extra):
    check_array(x, "x")
    y = empty(x.shape)
    launcher(ptr(x), ptr(y), x.size, *extra, stream())
    return y


def _binary(launcher, dy, other, other_name, *extra):
    check_array(dy, "dy")
    check_array(other, other_name, shape=dy.shape)
    dx = empty(dy.shape)
    launcher(ptr(dy), ptr(other), ptr(dx), dy.size, *extra, stream())
    return dx


def relu_fwd(x):
    return _unary(_C.relu_fwd1, x)


def relu_bwd(dy, y):
    return _binary(_C.relu_bwd1, dy, y, "y")


def leaky_relu_fwd(x, negative_slope):
    return _unary(_C.leaky_relu_fwd1, x, float(negative_slope))


def leaky_relu_bwd(dy, x, negative_slope):
    return _binary(_C.leaky_relu_bwd1, dy, x, "x", float(negative_slope))


def sigmoid_fwd(x):
    return _unary(_C.sigmoid_fwd1, x)


def sigmoid_bwd(dy, y):
    return _binary(_C.sigmoid_bwd1, dy, y, "y")


def tanh_fwd(x):
    return _unary(_C.tanh_fwd1, x)


def tanh_bwd(dy, y):
    return _binary(_C.tanh_bwd1, dy, y, "y")


def bias_relu_fwd(x, b):
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected at least 2 dimensions (N, C, ...), got shape {tuple(x.shape)}")
    check_array(b, "b", shape=(x.shape[1],))
    y = empty(x.shape)
    inner = math.prod(x.shape[2:])
    _C.bias_relu_fwd1(ptr(x), ptr(b), ptr(y), x.size, x.shape[1], inner, stream())
    return y


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    return float(p)


def dropout_fwd(x, p, seed):
    p = _check_p(p)
    check_array(x, "x")
    y = empty(x.shape)
    mask = empty(x.shape, dtype=cp.uint8)
    # the hash takes the seed mod 2**32, as the reference does (int(seed) & 0xFFFFFFFF)
    _C.dropout_fwd1(ptr(x), ptr(y), ptr(mask), x.size, p, int(seed) & 0xFFFFFFFF, stream())
    return y, mask


def dropout_bwd(dy, mask, p):
    p = _check_p(p)
    check_array(dy, "dy")
    check_array(mask, "mask", dtype=cp.uint8, shape=dy.shape)
    dx = empty(dy.shape)
    _C.dropout_bwd1(ptr(dy), ptr(mask), ptr(dx), dy.size, p, stream())
    return dx
