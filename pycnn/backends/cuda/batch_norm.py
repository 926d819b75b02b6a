"""Batch normalisation on the GPU, (N, C) or (N, C, H, W), statistics per channel.

Training updates running_mean / running_var in place (as the reference does);
the kernels see x as (N, C, inner) with inner = H*W, or 1 for (N, C)."""
from __future__ import annotations

import math

from ._common import _C, check_array, empty, ptr, stream


def _layout(x):
    check_array(x, "x")
    if x.ndim not in (2, 4):
        raise ValueError(f"x: expected shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _optional(a, name, c):
    return None if a is None else check_array(a, name, shape=(c,))


def batch_norm_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps):
    n, c, inner = _layout(x)
    _optional(weight, "weight", c)
    _optional(bias, "bias", c)
    _optional(running_mean, "running_mean", c)
    _optional(running_var, "running_var", c)
    y = empty(x.shape)
    save_mean = empty((c,))
    save_invstd = empty((c,))
    if training:
        if n * inner < 2:
            raise ValueError(f"x: batch norm in training needs more than 1 value per channel, "
                             f"got input shape {tuple(x.shape)}")
        _C.batch_norm_fwd_train1(ptr(x), ptr(weight), ptr(bias), ptr(running_mean),
                                 ptr(running_var), ptr(y), ptr(save_mean), ptr(save_invstd),
                                 n, c, inner, float(momentum), float(eps), stream())
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: expected arrays in inference mode "
                             "(training=False), got None")
        _C.batch_norm_fwd_infer1(ptr(x), ptr(weight), ptr(bias), ptr(running_mean),
                                 ptr(running_var), ptr(y), ptr(save_mean), ptr(save_invstd),
                                 n, c, inner, float(eps), stream())
    return y, save_mean, save_invstd


def batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training):
    """(dx, dweight, dbias); dweight and dbias are computed even when weight is None."""
    n, c, inner = _layout(x)
    check_array(dy, "dy", shape=x.shape)
    _optional(weight, "weight", c)
    check_array(save_mean, "save_mean", shape=(c,))
    check_array(save_invstd, "save_invstd", shape=(c,))
    dx = empty(x.shape)
    dweight = empty((c,))
    dbias = empty((c,))
    _C.batch_norm_bwd1(ptr(dy), ptr(x), ptr(weight), ptr(save_mean), ptr(save_invstd), ptr(dx),
                       ptr(dweight), ptr(dbias), n, c, inner, bool(training), stream())
    return dx, dweight, dbias
