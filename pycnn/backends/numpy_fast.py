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
* **backward-filter as 2-d products per group**, in the operand order that
  pays for the layer's K (see ``conv2d_bwd_filter``), not ``np.matmul`` on the
  stacked ``(G, ...)`` arrays (measured below).
* **col2im without np.add.at** (as the reference: R*S vectorised adds of one
  kernel tap's slab onto a strided view, never per sample), into a zeroed
  workspace reused from step to step.
* **Max pool with windows that cannot overlap** (stride >= dilated kernel, the
  LeNet and VGG case): the backward assigns ``dx[index] = dy`` (each input
  belongs to at most one window) instead of ``np.add.at``.
* **conv + bias + ReLU** (``conv2d_bias_relu_fwd``): the ReLU is applied in place
  on the fresh output, no second array.
* **The copies around the GEMMs on every BLAS thread** (``_parallel``): im2col's tap
  copies, col2im's adds and the batch-last/batch-first layout changes are cut into
  channel chunks on a small thread pool (NumPy releases the GIL inside a copy), as
  the GEMMs already run on OpenBLAS's threads. ResNet-18's 64-channel 3x3 layer at
  32x32, batch 32: forward 23.3 -> 19.7 ms, backward 40.0 -> 32.8 ms; a ResNet-18
  step 0.91 -> 0.82 s. Arrays under ``PARALLEL_MIN_BYTES`` stay on one thread
  (LeNet-5's are: no gain there).
* **Batch norm in training** with the per-channel sums as single-read ``np.einsum``
  reductions and the normalisation applied in place: forward 3.6 -> 1.5 ms and
  backward 4.8 -> 3.5 ms at (32, 64, 32, 32).

Measured on the 2-core machine (float32, LeNet-5's layers at batch 64, ms per
call, reference -> fast; the figures in this header come from two hosts of that
name, an earlier AVX2 one and the AVX-512 EPYC of bench/results): conv1 (1x28x28,
5x5 pad 2) backward-filter 1.34 ->
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
stride 2 113 -> 180 ms (argmax along a short last axis pays per row). Columns with the
batch outermost ((C, R, S, N, P, Q), so that the output goes to NCHW in runs of P*Q
instead of runs of 1): LeNet's conv1 forward 0.64 -> 0.56 ms, but conv2 0.37 -> 0.59
ms and ResNet-18's 256-channel 8x8 layer 12.9 -> 14.4 ms (the tap copies then move
runs of Q values, not Q*N). BLAS threads
are left to OpenBLAS's environment variables (``OPENBLAS_NUM_THREADS``), set once
before NumPy loads, as bench/train_cpu.py does; pycnn itself shortens OpenBLAS's
spin-wait (``OPENBLAS_THREAD_TIMEOUT``, see pycnn/__init__.py).

Where the time of a ResNet-18 step (32x32, batch 32) goes now: on the AVX-512 EPYC
machine, with NumPy's OpenBLAS on the Haswell kernels that machine's environment
pins (``OPENBLAS_CORETYPE=Haswell``), the convolution GEMMs alone take 0.52 s of a
0.79 s step, while PyTorch (MKL/oneDNN at AVX-512) takes 0.30 s for all of it; with
the variable unset OpenBLAS picks its SkylakeX kernels and the GEMMs take 0.33 s of
0.58 s (best of 4 steps; 0.67 s against PyTorch's 0.30 s in an interleaved run). The
rest (im2col, col2im, layout changes, batch norm, ReLU, the Python autograd) is about
0.25 s either way. bench/cpu_bench.py records which kernels ran.

Float32 in, float32 out (float64 likewise): no op here promotes.
The module is not thread-safe for concurrent steps (its workspaces and caches
are module-level); one training loop per process, as elsewhere in pycnn.
"""
from __future__ import annotations

import os
import weakref
from concurrent.futures import ThreadPoolExecutor

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

#: Copies of fewer bytes than this run on the calling thread alone: below it, handing
#: part of the work to another thread costs more than it saves (measured: LeNet-5's
#: 1.2 MB activations gain nothing, ResNet-18's 8 MB ones 1.3-2x on 2 cores).
PARALLEL_MIN_BYTES = 4 << 20
_pool: list = [None, 0]     # [ThreadPoolExecutor or None, its thread count]


def _cpu_threads() -> int:
    """Threads for the copies: the BLAS thread count the environment asks for (the
    same cores the GEMMs use), else the CPUs this process may run on."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            pass
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def _parallel(part, n, nbytes):
    """``part(lo, hi)`` over ``range(n)`` cut into one contiguous chunk per thread.

    For the memory-bound copies around the GEMMs (im2col, col2im, layout changes):
    NumPy drops the GIL inside an array copy or ufunc loop, so chunks on separate
    threads run on separate cores, as BLAS's own threads do. Small arrays (fewer
    than ``PARALLEL_MIN_BYTES``) and one-thread settings run ``part(0, n)`` here.
    """
    threads = min(_cpu_threads(), n)
    if threads < 2 or nbytes < PARALLEL_MIN_BYTES:
        part(0, n)
        return
    if _pool[0] is None or _pool[1] < threads - 1:
        _pool[0], _pool[1] = ThreadPoolExecutor(threads - 1, "pycnn-cpu"), threads - 1
    bounds = [n * t // threads for t in range(threads + 1)]
    futures = [_pool[0].submit(part, bounds[t], bounds[t + 1]) for t in range(1, threads)]
    part(bounds[0], bounds[1])
    for f in futures:
        f.result()                 # re-raises an exception of that chunk


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
        _parallel(lambda lo, hi: buf[lo:hi].fill(0), len(buf), buf.nbytes)
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


def _batch_last(a, top=0, bottom=0, left=0, right=0):
    """The reference's ``_batch_last`` ((N, C, H, W) -> zero-padded (C, H', W', N)),
    in channel chunks on the copy threads."""
    n, c, h, w = a.shape
    out = np.zeros((c, h + top + bottom, w + left + right, n), dtype=a.dtype)

    def part(lo, hi):
        out[lo:hi, top:top + h, left:left + w] = a[:, lo:hi].transpose(1, 2, 3, 0)
    _parallel(part, c, out.nbytes)
    return out


def _batch_first(a, bias=None):
    """The reference's ``_batch_first`` ((C, H, W, N) -> (N, C, H, W), plus ``bias``),
    in channel chunks on the copy threads."""
    out = np.empty((a.shape[3],) + a.shape[:3], dtype=a.dtype)

    def part(lo, hi):
        src = a[lo:hi].transpose(3, 0, 1, 2)
        if bias is None:
            np.copyto(out[:, lo:hi], src)
        else:
            np.add(src, bias[lo:hi].reshape(1, -1, 1, 1), out=out[:, lo:hi])
    _parallel(part, a.shape[0], out.nbytes)
    return out


def _im2col(x, w_shape, stride, padding, dilation, groups, out_hw):
    """The reference's ``_im2col`` (columns (G, C/g*R*S, P*Q*N)), the tap copies in
    channel chunks on the copy threads."""
    n, c = x.shape[:2]
    _, cg, r, s = w_shape
    xp = _batch_last(x, *padding)                                           # (C, H', W', N)
    cols = np.empty((c, r, s) + tuple(out_hw) + (n,), dtype=x.dtype)         # (C, R, S, P, Q, N)
    taps = [(i, j) + _ref._tap(i, j, stride, dilation, out_hw) for i in range(r) for j in range(s)]

    def part(lo, hi):
        for i, j, rows, columns in taps:
            cols[lo:hi, i, j] = xp[lo:hi, rows, columns]
    _parallel(part, c, cols.nbytes)
    return cols.reshape(groups, cg * r * s, -1)


def _dy_mat(dy):
    """dy (N, K, P, Q) batch-last as the GEMM operand (K, P*Q*N), made once per backward:
    backward-data and backward-filter of one convolution both need it."""
    entry = _dy_cache[0]
    if entry is not None and entry[0]() is dy and entry[1] == _key(dy):
        return entry[2]
    mat = _batch_last(dy).reshape(dy.shape[1], -1)
    _dy_cache[0] = (weakref.ref(dy), _key(dy), mat)
    return mat


# ----------------------------------------------------------------------------- convolution


def _conv_fwd(x, w, b, stride, padding, dilation, groups, relu):
    _check_conv(x.shape, w.shape, groups)
    n, k, p, q = conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)
    cols = _im2col(x, w.shape, stride, padding, dilation, groups, (p, q))      # (G, CgRS, PQN)
    _keep_cols(x, (w.shape, stride, padding, dilation, groups), cols)
    y = np.matmul(w.reshape(groups, k // groups, -1), cols).reshape(k, p, q, n)  # (K, P, Q, N)
    y = _batch_first(y, bias=b)
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
        cols = _im2col(x, w_shape, stride, padding, dilation, groups, (p, q))
    dy_mat = _dy_mat(dy).reshape(groups, k // groups, -1)                   # (G, Kg, PQN)
    # per group a 2-d product (np.matmul on the stacked (G, ...) arrays is slower). Which
    # operand order pays depends on K: measured on the 2-core machine (float32, 2 BLAS
    # threads), with few output channels dw^T = cols @ dy^T and a transposed copy is
    # faster (LeNet's K=6: 0.59 against 0.68 ms, K=16: 0.21 against 0.32 ms); with many,
    # dw = dy @ cols^T straight into dw, as the copy of a large dw^T costs more (ResNet-18's
    # K=512: 9.9 against 16.8 ms; K=64-256 within 10%)
    dw = np.empty((groups, k // groups, cols.shape[1]), dtype=cols.dtype)
    for g in range(groups):
        if k // groups >= 64:
            np.matmul(dy_mat[g], cols[g].T, out=dw[g])
        else:
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
    taps = [(i, j) + _ref._tap(i, j, stride, dilation, (p, q)) for i in range(r) for j in range(s)]

    def part(lo, hi):
        for i, j, rows, columns in taps:
            dxp[lo:hi, rows, columns] += dcols[lo:hi, i, j]
    _parallel(part, c, dcols.nbytes)
    return _batch_first(dxp[:, top:top + h, left:left + wd])


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


# ----------------------------------------------------------------------------- batch norm


def _channel_sums(a3, b3=None):
    """Per-channel sums of ``a3`` (N, C, L), or of ``a3 * b3``, in one read and without
    a temporary: ``np.einsum``'s own loop (not its BLAS path, ``optimize=True``, which
    is 2-6x slower here). Measured on the 2-core machine, float32, ResNet-18's layers
    at batch 32: the sum of products at (32, 64, 1024) 0.22 ms against 0.67 ms for
    ``(a * b).sum(axis=(0, 2))``, at (32, 512, 16) 0.07 against 0.27 ms; the plain sum
    0.09 against 0.30 ms (NumPy's ``sum`` over axes 0 and 2 takes a strided path)."""
    if b3 is None:
        return np.einsum("ncl->c", a3)
    return np.einsum("ncl,ncl->c", a3, b3)


def _as_ncl(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """The reference's batch norm in training, with fewer passes over x: the statistics
    in one read each (``_channel_sums``), the centred x kept, then scaled and shifted in
    place (ResNet-18's (32, 64, 32, 32) float32: 3.6 -> 1.5 ms). Inference, and an
    empty x, are the reference's."""
    if not training or x.size == 0:
        return _ref.batch_norm_fwd(x, weight, bias, running_mean, running_var, training,
                                   momentum, eps)
    _, shape = _ref._bn_axes(x)
    m = x.size // x.shape[1]
    if m < 2:
        raise ValueError(f"x: batch norm in training needs more than 1 value per "
                         f"channel, got input shape {x.shape}")
    mean = _channel_sums(_as_ncl(x)) / x.dtype.type(m)
    y = x - mean.reshape(shape)                          # centred: the variance's two-pass form
    var = _channel_sums(_as_ncl(y), _as_ncl(y)) / x.dtype.type(m)
    if running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    if running_var is not None:                          # unbiased: kept as the estimate
        running_var[...] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    invstd = (1 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    y *= (invstd if weight is None else invstd * weight).reshape(shape)
    if bias is not None:
        y += bias.reshape(shape)
    return y, mean, invstd


def batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training):
    """The reference's backward in training, the reductions in one read each and the
    per-channel affine form of dx built in place (ResNet-18's (32, 64, 32, 32) float32:
    4.8 -> 3.5 ms)."""
    if not training or x.size == 0:
        return _ref.batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training)
    _, shape = _ref._bn_axes(x)
    m = x.dtype.type(x.size // x.shape[1])
    xhat = x - save_mean.reshape(shape)
    xhat *= save_invstd.reshape(shape)
    dbias = _channel_sums(_as_ncl(dy))
    dweight = _channel_sums(_as_ncl(dy), _as_ncl(xhat))
    scale = save_invstd if weight is None else save_invstd * weight
    # dx = scale * (dy - (dbias + xhat * dweight) / m), per channel a*dy + b*xhat + c
    dx = dy * scale.reshape(shape)
    xhat *= (-scale * dweight / m).reshape(shape)
    dx += xhat
    dx += (-scale * dbias / m).reshape(shape)
    return dx, dweight, dbias
