"""Softmax, log_softmax and cross-entropy on the GPU.

A softmax along ``dim`` sees the array as (outer, dim, inner); the kernels take
those three sizes. Cross-entropy targets are checked here before the launch (a
clear ValueError, at the cost of one device-to-host transfer); the kernels never
index with a target outside [0, classes) in any case (that row's loss is NaN), so
targets changed on the device after the check give NaN, never an illegal access.
The kernels' device-side error flag is not read back: after the check it cannot
fire, and reading it would stall the stream twice more per training step."""
from __future__ import annotations

import math

import cupy as cp

from ._common import _C, check_array, empty, ptr, stream


def _rows(x, dim, name="x"):
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < x.ndim:
        raise ValueError(f"dim: expected an axis in [0, {x.ndim}) of {name} with shape "
                         f"{tuple(x.shape)}, got {dim!r}")
    return math.prod(x.shape[:dim]), x.shape[dim], math.prod(x.shape[dim + 1:])


def softmax_fwd(x, dim):
    check_array(x, "x")
    outer, d, inner = _rows(x, dim)
    y = empty(x.shape)
    _C.softmax_fwd1(ptr(x), ptr(y), outer, d, inner, stream())
    return y


def softmax_bwd(dy, y, dim):
    check_array(dy, "dy")
    check_array(y, "y", shape=dy.shape)
    outer, d, inner = _rows(dy, dim, "dy")
    dx = empty(dy.shape)
    _C.softmax_bwd1(ptr(dy), ptr(y), ptr(dx), outer, d, inner, stream())
    return dx


def log_softmax_fwd(x, dim):
    check_array(x, "x")
    outer, d, inner = _rows(x, dim)
    y = empty(x.shape)
    _C.log_softmax_fwd1(ptr(x), ptr(y), outer, d, inner, stream())
    return y


def log_softmax_bwd(dy, y, dim):
    check_array(dy, "dy")
    check_array(y, "y", shape=dy.shape)
    outer, d, inner = _rows(dy, dim, "dy")
    dx = empty(dy.shape)
    _C.log_softmax_bwd1(ptr(dy), ptr(y), ptr(dx), outer, d, inner, stream())
    return dx


def _check_target(logits, target, logits_name):
    check_array(logits, logits_name, ndim=2)
    check_array(target, "target", dtype=cp.int64, shape=logits.shape[:1])
    classes = logits.shape[1]
    if target.size:
        # one device-to-host transfer: [min, max]
        lo, hi = (int(v) for v in cp.stack([target.min(), target.max()]).get())
        if lo < 0 or hi >= classes:
            raise ValueError(f"target: expected class indices in [0, {classes}), "
                             f"got values in [{lo}, {hi}]")


def cross_entropy_fwd(logits, target):
    _check_target(logits, target, "logits")
    n, classes = logits.shape
    log_probs = empty(logits.shape)
    if n == 0:                                           # the mean of nothing, as NumPy gives it
        return cp.full((), cp.nan, dtype=cp.float32), log_probs
    row_loss = empty((n,))
    loss = empty(())
    _C.cross_entropy_fwd1(ptr(logits), ptr(target), ptr(log_probs), ptr(row_loss), ptr(loss),
                          0, n, classes, stream())     # 0: no error flag (see the module doc)
    return loss, log_probs


def cross_entropy_bwd(dloss, log_probs, target):
    _check_target(log_probs, target, "log_probs")
    n, classes = log_probs.shape
    if isinstance(dloss, cp.ndarray):
        check_array(dloss, "dloss")
        if dloss.size != 1:
            raise ValueError(f"dloss: expected a scalar (0-d array), got shape {tuple(dloss.shape)}")
    else:
        try:
            dloss = cp.asarray(float(dloss), dtype=cp.float32)
        except (TypeError, ValueError):
            raise TypeError(f"dloss: expected a 0-d cupy array or a float, got "
                            f"{type(dloss).__name__}") from None
    dlogits = empty(log_probs.shape)
    if n == 0:
        return dlogits
    _C.cross_entropy_bwd1(ptr(log_probs), ptr(target), ptr(dloss), ptr(dlogits), 0, n,
                          classes, stream())
    return dlogits
