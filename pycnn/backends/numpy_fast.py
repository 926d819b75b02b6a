"""The fast CPU backend: the reference's algorithms, with what training repeats done once.

``numpy_ref`` stays the readable ground truth; this module re-implements only
the ops where a profile of the default ``pycnn train`` run (LeNet-5, batch 64)
and of a ResNet-18 step showed time going, and takes every other function of the interface from the
reference unchanged. ``tests/test_cpu_fast.py`` checks each op here against
the reference over the options (stride, padding, dilation, groups, ceil_mode,
NaN and -inf inputs, float32 and float64).

Why a separate file and not a faster reference: the speed comes from state
kept between calls (columns shared by the forward and the backward, reused
workspaces) and from BLAS-specific call shapes, which would hide the definition
the reference exists to show.

What changed from the reference, and why it pays
------------------------------------------------
The convolution keeps the reference's layout: im2col from a batch-last copy of
the padded input, one GEMM per layer (per group), ``(K, P, Q, N)`` back to NCHW
in the pass that adds the bias. What is new is what training does twice:

* **The forward's columns are kept for backward-filter.** The reference builds
  the columns of each convolution twice per step (forward and backward-filter).
  Here the forward keeps them, keyed by the input array (a weak reference: the
  entry dies with the array, that is with the graph), up to
  ``COLS_CACHE_BYTES`` in all (the oldest go first); under ``pycnn.no_grad``
  nothing is kept. An input changed in place between forward and backward is
  not supported (as in autograd generally).
* **dy in GEMM order once per backward**: backward-data and backward-filter of
  one convolution both need ``dy`` batch-last as ``(K, P*Q*N)``; the last one
  made is kept.
* **backward-filter as 2-d products per group**, ``dw^T = cols @ dy^T``:
  OpenBLAS runs this 1.8-3x faster than ``np.matmul`` on the stacked
  ``(G, ...)`` arrays (measured below).
* **col2im without np.add.at** (as the reference: R*S vectorised adds of one
  kernel tap's slab onto a strided view, never per sample), into a zeroed
  workspace reused from step to step.
* **Max pool with windows that cannot overlap** (stride >= dilated kernel, the
  LeNet and VGG case): the backward assigns ``dx[index] = dy`` (each input
  belongs to at most one window) instead of ``np.add.at``.
* **conv + bias + ReLU** (``conv2d_bias_relu_fwd``): the ReLU is applied in place
  on the fresh output, no second array.

Measured on the 2-core machine (float32, LeNet-5's layers at batch 64, ms per
call, reference -> fast): conv1 (1x28x28, 5x5 pad 2) backward-filter 1.34 ->
0.78, conv2 (6x14x14, 5x5) backward-filter 0.87 -> 0.34, backward-data 1.13 ->
0.90. ResNet-18's 3x3 64-channel layer at 32x32 batch 32: backward-filter 0.28 s
-> 0.09 s.

Tried and left out because they were slower here: im2col as one copy of a 6-d
``as_strided`` view of the NCHW input into ``(C*R*S, N*P*Q)`` order (conv2
forward 0.8 -> 2.0 ms: NumPy's strided copy moves runs of Q values, the
batch-last copy runs of Q*N), and ``np.where(y > 0, dy, 0)`` for ReLU's backward
(0.2 -> 1.6 ms against the reference's multiply by the mask), and the max-pool
forward as one argmax over a strided view of every window (N, C, P, Q, kh*kw):
faster on the tiny set's (2, 3, 8, 8) input (444 -> 155 us) but slower on real
ones, LeNet's (64, 6, 28, 28) 2x2 pool 1.1 -> 6.0 ms and (32, 64, 56, 56) 3x3
stride 2 113 -> 180 ms (argmax along a short last axis pays per row). BLAS threads
are left to OpenBLAS's environment variables (``OPENBLAS_NUM_THREADS``), set once
before NumPy loads, as bench/train_cpu.py does; pycnn itself shortens OpenBLAS's
spin-wait (``OPENBLAS_THREAD_TIMEOUT``, see pycnn/__init__.py).

Float32 in, float32 out (float64 likewise): no op here promotes.
The module is not thread-safe for concurrent steps (its workspaces and caches
are module-level); one training loop per process, as elsewhere in pycnn.
"""
from __future__ import annotations

import weakref

import numpy as np

from pycnn.backends import numpy_ref as _ref
from pycnn.backends.numpy_ref import *  # noqa: F401,F403  (the ops this file does not redo)
from pycnn.backends.numpy_ref import _check_conv
from pycnn.shapes import conv2d_output_shape

#: Most bytes of forward columns kept for backward-filter (older entries go first).
COLS_CACHE_BYTES = 256 << 20

_cols_cache: dict = {}      # id(x) -> (weakref to x, key, cols); insertion order = age
_dy_cache: list = [None]    # [(weakref to dy, key, dy_mat)]
_workspaces: dict = {}      # (shape, dtype) -> zeroed scratch array


def _grad_enabled() -> bool:
    from pycnn.tensor import is_grad_enabled      # lazy: pycnn.tensor imports the backends
    return is_grad_enabled()


def _workspace(shape, dtype):
    """A zeroed scratch array of ``shape``, reused across calls (zeroed again each time)."""
    key = (tuple(shape), np.dtype(dtype).str)
    buf = _workspaces.get(key)
    if buf is None:
        buf = _workspaces[key] = np.zeros(shape, dtype=dtype)
    else:
        buf.fill(0)
    return buf


def _key(a, *args):
    return (a.shape, a.strides, a.dtype.str, a.__array_interface__["data"][0], args)


def _forget(ident):
    _cols_cache.pop(ident, None)


def _keep_cols(x, args, cols):
    if not _grad_enabled() or cols.nbytes > COLS_CACHE_BYTES:
        return
    _cols_cache.pop(id(x), None)
    total = sum(e[2].nbytes for e in _cols_cache.values()) + cols.nbytes
    while total > COLS_CACHE_BYTES and _cols_cache:      # the oldest entries go first
        oldest = next(iter(_cols_cache))
        total -= _cols_cache.pop(oldest)[2].nbytes
    ident = id(x)
    _cols_cache[ident] = (weakref.ref(x, lambda _, i=ident: _forget(i)), _key(x, *args), cols)


def _cached_cols(x, args):
    entry = _cols_cache.get(id(x))
    if entry is not None and entry[0]() is x and entry[1] == _key(x, *args):
        return entry[2]
    return None


def _dy_mat(dy):
    """dy (N, K, P, Q) batch-last as the GEMM operand (K, P*Q*N), made once per backward:
    backward-data and backward-filter of one convolution both need it."""
    entry = _dy_cache[0]
    if entry is not None and entry[0]() is dy and entry[1] == _key(dy):
        return entry[2]
    mat = _ref._batch_last(dy).reshape(dy.shape[1], -1)
    _dy_cache[0] = (weakref.ref(dy), _key(dy), mat)
    return mat


# ----------------------------------------------------------------------------- convolution


def _conv_fwd(x, w, b, stride, padding, dilation, groups, relu):
    _check_conv(x.shape, w.shape, groups)
    n, k, p, q = conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)
    cols = _ref._im2col(x, w.shape, stride, padding, dilation, groups, (p, q))  # (G, CgRS, PQN)
    _keep_cols(x, (w.shape, stride, padding, dilation, groups), cols)
    y = np.matmul(w.reshape(groups, k // groups, -1), cols).reshape(k, p, q, n)  # (K, P, Q, N)
    y = _ref._batch_first(y, bias=b)
    if relu:
        np.maximum(y, 0, out=y)
    return y


def conv2d_fwd(x, w, b, stride, padding, dilation, groups):
    return _conv_fwd(x, w, b, stride, padding, dilation, groups, relu=False)


def conv2d_bias_relu_fwd(x, w, b, stride, padding, dilation, groups):
    return _conv_fwd(x, w, b, stride, padding, dilation, groups, relu=True)


def conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups):
    _check_conv(x.shape, w_shape, groups)
    n, k, p, q = dy.shape
    cols = _cached_cols(x, (tuple(w_shape), stride, padding, dilation, groups))
    if cols is None:
        cols = _ref._im2col(x, w_shape, stride, padding, dilation, groups, (p, q))
    dy_mat = _dy_mat(dy).reshape(groups, k // groups, -1)                   # (G, Kg, PQN)
    # per group, dw^T = cols @ dy^T as a 2-d product: OpenBLAS runs it 1.8-3x faster than
    # np.matmul(dy, cols^T) on the stacked arrays (ResNet-18's 64-channel 3x3 layer at
    # batch 32: 0.09 s against 0.16 s (2-d dy @ cols.T) and 0.28 s (3-d))
    dw = np.empty((groups, k // groups, cols.shape[1]), dtype=cols.dtype)
    for g in range(groups):
        dw[g] = (cols[g] @ dy_mat[g].T).T
    return dw.reshape(w_shape)


def conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups):
    _check_conv(x_shape, w.shape, groups)
    n, c, h, wd = x_shape
    k, cg, r, s = w.shape
    p, q = dy.shape[2:]
    top, bottom, left, right = padding
    dy_mat = _dy_mat(dy).reshape(groups, k // groups, -1)                   # (G, Kg, PQN)
    dcols = np.matmul(w.reshape(groups, k // groups, cg * r * s).transpose(0, 2, 1), dy_mat)
    dcols = dcols.reshape(c, r, s, p, q, n)     # the gradient of every window element
    # col2im: each kernel tap adds its (P, Q, N) slab back where it was read from
    dxp = _workspace((c, h + top + bottom, wd + left + right, n), dcols.dtype)
    for i in range(r):
        for j in range(s):
            rows, columns = _ref._tap(i, j, stride, dilation, (p, q))
            dxp[:, rows, columns] += dcols[:, i, j]
    return _ref._batch_first(dxp[:, top:top + h, left:left + wd])


# ----------------------------------------------------------------------------- pooling


def max_pool2d_bwd(dy, indices, x_shape, kernel_size, stride, padding, dilation):
    span = [dilation[a] * (kernel_size[a] - 1) + 1 for a in (0, 1)]
    if stride[0] < span[0] or stride[1] < span[1]:           # windows may overlap: scatter-add
        return _ref.max_pool2d_bwd(dy, indices, x_shape, kernel_size, stride, padding, dilation)
    # windows never overlap, so each input is the max of at most one window: assign
    n, c, h, w = x_shape
    plane = h * w
    flat = (indices.reshape(n * c, dy.shape[2] * dy.shape[3])
            + np.arange(n * c, dtype=np.int64)[:, None] * plane)
    dx = np.zeros(n * c * plane, dtype=dy.dtype)
    dx[flat.ravel()] = dy.ravel()
    return dx.reshape(x_shape)
