"""Batch normalisation on the GPU, (N, C) or (N, C, H, W), statistics per channel.

Training updates running_mean / running_var in place (as the reference does);
the kernels see x as (N, C, inner) with inner = H*W, or 1 for (N, C).

Two versions of the training forward and of the backward (``VERSIONS``, and
``version=`` on both functions); inference forward is pointwise, version 1's:

    1  a block per channel (kernels/batch_norm/01_batch_norm.cu)
    2  each channel split over several blocks through a workspace
       (kernels/batch_norm/02_batch_norm_split.cu)

The default (``version=None``) is version 2 where it splits the channels (fewer
channels than about 4 per SM, and more than 4096 values per channel), else
version 1, whose single launch is cheaper when version 2 would not split. (Chosen
from the kernels' structure: version 1 gives a 64-channel layer 64 blocks on a
132-SM GPU; not yet measured on a GPU.)
"""
from __future__ import annotations

import math

import cupy as cp

from ._common import _C, check_array, empty, ptr, stream
from ._common import num_sms as _num_sms

#: Version 2's pycnn._C functions: each launcher runs three kernels (like the split-K
#: convolutions), so they are listed here rather than in launchers.KERNEL_FILES.
LAUNCHERS = ("batch_norm_fwd_train2", "batch_norm_bwd2", "batch_norm_splits2",
             "batch_norm_workspace_bytes2")

#: The kernel versions of each pass (``version=``); inference forward has version 1 only.
VERSIONS = {"fwd_train": (1, 2), "bwd": (1, 2)}


def _layout(x):
    check_array(x, "x")
    if x.ndim not in (2, 4):
        raise ValueError(f"x: expected shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _optional(a, name, c):
    return None if a is None else check_array(a, name, shape=(c,))


def default_version(n: int, c: int, inner: int) -> int:
    """The version a call without ``version=`` runs on x seen as (n, c, inner), in
    training and in the backward: 2 where it splits the channels, else 1 (which also
    takes an empty batch: nothing to split, zero sums). The benchmark labels its
    default rows with it."""
    if n * inner == 0:
        return 1
    return 2 if _C.batch_norm_splits2(n, c, inner, _num_sms()) > 1 else 1


def _plan(pass_name, version, n, c, inner):
    """(version, splits, workspace) for one call: version 2's split count and its
    workspace of doubles, from CuPy's pool; splits 0 and no workspace for version 1."""
    if version is not None and (isinstance(version, bool) or version not in VERSIONS[pass_name]):
        raise ValueError(f"version: expected None or one of {sorted(VERSIONS[pass_name])} "
                         f"for batch norm {pass_name}, got {version!r}")
    if version is None:
        version = default_version(n, c, inner)
    if version == 1 or n * inner == 0:
        return 1, 0, None
    splits = _C.batch_norm_splits2(n, c, inner, _num_sms())
    workspace = empty((_C.batch_norm_workspace_bytes2(c, splits) // 8,), cp.float64)
    return 2, splits, workspace


def batch_norm_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps, *,
                   version=None):
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
        v, splits, ws = _plan("fwd_train", version, n, c, inner)
        args = (ptr(x), ptr(weight), ptr(bias), ptr(running_mean), ptr(running_var), ptr(y),
                ptr(save_mean), ptr(save_invstd))
        if v == 1:
            _C.batch_norm_fwd_train1(*args, n, c, inner, float(momentum), float(eps), stream())
        else:
            _C.batch_norm_fwd_train2(*args, ptr(ws), n, c, inner, splits, float(momentum),
                                     float(eps), stream())
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: expected arrays in inference mode "
                             "(training=False), got None")
        if version not in (None, 1):
            raise ValueError(f"version: inference (training=False) has version 1 only, "
                             f"got {version!r}")
        _C.batch_norm_fwd_infer1(ptr(x), ptr(weight), ptr(bias), ptr(running_mean),
                                 ptr(running_var), ptr(y), ptr(save_mean), ptr(save_invstd),
                                 n, c, inner, float(eps), stream())
    return y, save_mean, save_invstd


def batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training, *, version=None):
    """(dx, dweight, dbias); dweight and dbias are computed even when weight is None."""
    n, c, inner = _layout(x)
    check_array(dy, "dy", shape=x.shape)
    _optional(weight, "weight", c)
    check_array(save_mean, "save_mean", shape=(c,))
    check_array(save_invstd, "save_invstd", shape=(c,))
    dx = empty(x.shape)
    dweight = empty((c,))
    dbias = empty((c,))
    v, splits, ws = _plan("bwd", version, n, c, inner)
    args = (ptr(dy), ptr(x), ptr(weight), ptr(save_mean), ptr(save_invstd), ptr(dx),
            ptr(dweight), ptr(dbias))
    if v == 1:
        _C.batch_norm_bwd1(*args, n, c, inner, bool(training), stream())
    else:
        _C.batch_norm_bwd2(*args, ptr(ws), n, c, inner, splits, bool(training), stream())
    return dx, dweight, dbias
