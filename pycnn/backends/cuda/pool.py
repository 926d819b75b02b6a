"""Pooling on the GPU: max pool (with int64 argmax indices), average pool,
adaptive average pool (global average pool when the output is 1x1).

Output sizes, ceil_mode included, come from pycnn.shapes, as in the reference;
the kernels take them as given."""
from __future__ import annotations

import cupy as cp

from pycnn.shapes import pool2d_output_shape

from ._common import _C, check_array, empty, ptr, stream


def _x_shape(x_shape, dy, name="x_shape"):
    try:
        shape = tuple(int(v) for v in x_shape)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple (N, C, H, W), got {x_shape!r}") from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"{name}: expected a tuple (N, C, H, W) of sizes, got {x_shape!r}")
    if shape[:2] != tuple(dy.shape[:2]):
        raise ValueError(f"{name}: expected N, C = {tuple(dy.shape[:2])} (those of dy), got {shape}")
    return shape


def max_pool2d_fwd(x, kernel_size, stride, padding, dilation, ceil_mode):
    check_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    _, _, p, q = pool2d_output_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y = empty((n, c, p, q))
    indices = empty((n, c, p, q), dtype=cp.int64)
    _C.max_pool2d_fwd1(ptr(x), ptr(y), ptr(indices), n, c, h, w, p, q, kernel_size[0],
                       kernel_size[1], stride[0], stride[1], padding[0], padding[1], dilation[0],
                       dilation[1], stream())
    return y, indices


#: Versions of the max-pool backward: 2 (the default) gathers, one thread per
#: input element over the windows that can hold it: deterministic, no atomics;
#: 1 is the earlier atomic scatter, kept runnable for comparison (and timed beside
#: 2 by the benchmark).
MAX_POOL_BWD_VERSIONS = (1, 2)
VERSIONS = {"max_bwd": MAX_POOL_BWD_VERSIONS}


def default_version(pass_name: str = "max_bwd") -> int:
    """The version a call without ``version=`` runs: the gather, whatever the shape."""
    if pass_name not in VERSIONS:
        raise ValueError(f"pass_name: expected one of {list(VERSIONS)}, got {pass_name!r}")
    return 2


def max_pool2d_bwd(dy, indices, x_shape, kernel_size, stride, padding, dilation, *,
                   version=None):
    check_array(dy, "dy", ndim=4)
    check_array(indices, "indices", dtype=cp.int64, shape=dy.shape)
    n, c, h, w = _x_shape(x_shape, dy)
    if version is None:
        version = default_version()
    if isinstance(version, bool) or version not in MAX_POOL_BWD_VERSIONS:
        raise ValueError(f"version: expected None or one of {list(MAX_POOL_BWD_VERSIONS)} "
                         f"for max_pool2d_bwd, got {version!r}")
    # dy must be the forward's output for this geometry (ceil_mode either way): the
    # gather enumerates windows from the geometry and dy's (P, Q)
    p, q = dy.shape[2], dy.shape[3]
    sizes = sorted({pool2d_output_shape((n, c, h, w), kernel_size, stride, padding, dilation,
                                        ceil)[2:] for ceil in (False, True)})
    if (p, q) not in sizes:
        raise ValueError(f"dy: expected spatial size {' or '.join(map(str, sizes))} (max pool of "
                         f"{(n, c, h, w)} with kernel_size={tuple(kernel_size)}, stride={tuple(stride)}, "
                         f"padding={tuple(padding)}, dilation={tuple(dilation)}), got {(p, q)}")
    dx = empty((n, c, h, w))
    if version == 1:
        _C.max_pool2d_bwd1(ptr(dy), ptr(indices), ptr(dx), n, c, h, w, p, q, stream())
    else:
        _C.max_pool2d_bwd2(ptr(dy), ptr(indices), ptr(dx), n, c, h, w, p, q, kernel_size[0],
                           kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                           dilation[0], dilation[1], stream())
    return dx


def avg_pool2d_fwd(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    check_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    _, _, p, q = pool2d_output_shape(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    y = empty((n, c, p, q))
    _C.avg_pool2d_fwd1(ptr(x), ptr(y), n, c, h, w, p, q, kernel_size[0], kernel_size[1],
                       stride[0], stride[1], padding[0], padding[1], bool(count_include_pad),
                       stream())
    return y


def avg_pool2d_bwd(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    check_array(dy, "dy", ndim=4)
    n, c, h, w = _x_shape(x_shape, dy)
    expected = pool2d_output_shape((n, c, h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    check_array(dy, "dy", shape=expected)
    dx = empty((n, c, h, w))
    _C.avg_pool2d_bwd1(ptr(dy), ptr(dx), n, c, h, w, expected[2], expected[3], kernel_size[0],
                       kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                       bool(count_include_pad), stream())
    return dx


def adaptive_avg_pool2d_fwd(x, output_size):
    check_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    p, q = (int(v) for v in output_size)
    if p < 1 or q < 1:
        raise ValueError(f"output_size: expected sizes >= 1, got {tuple(output_size)}")
    y = empty((n, c, p, q))
    _C.adaptive_avg_pool2d_fwd1(ptr(x), ptr(y), n, c, h, w, p, q, stream())
    return y


def adaptive_avg_pool2d_bwd(dy, x_shape):
    check_array(dy, "dy", ndim=4)
    n, c, h, w = _x_shape(x_shape, dy)
    dx = empty((n, c, h, w))
    _C.adaptive_avg_pool2d_bwd1(ptr(dy), ptr(dx), n, c, h, w, dy.shape[2], dy.shape[3], stream())
    return dx
