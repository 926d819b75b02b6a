"""The NumPy reference backend: the ground truth for every kernel, and the CPU path.

Clarity comes first here, speed second: every function is a few lines of
vectorised NumPy that can be checked by eye against its definition (and is
checked by ``tests/test_reference.py`` against plain nested loops). It works in
float32 and float64 and returns arrays of the input's dtype.

Convolution as a matrix product (im2col)
----------------------------------------
After padding, the receptive field of output pixel (p, q) is the R x S grid of
input pixels ``(p*stride_h + r*dil_h, q*stride_w + s*dil_w)``. For one kernel
tap (r, s) those pixels, over all (p, q), form one strided slice of the padded
input, so the columns ("im2col") are R*S slice copies. They are built from the
input in batch-last order (C, H, W, N), shaped ``(C, R, S, P, Q, N)``: every
slice copy then moves runs of Q*N contiguous values (N when stride_w > 1)
rather than rows of Q, and per group the whole batch is one GEMM::

    w  (K/g, C/g*R*S)   @   cols  (C/g*R*S, P*Q*N)   =   y  (K/g, P*Q*N)
          N      K                  K       M                N    M

which is the implicit-GEMM view of the kernels: M = N*P*Q, N = K, K = C*R*S. The output
comes out as (K, P, Q, N) and is transposed back to NCHW in the same pass that
adds the bias. The two backward passes are the same product turned around:

* backward-data:   dcols (C/g*R*S, P*Q*N) = w^T (C/g*R*S, K/g) @ dy (K/g, P*Q*N),
  then col2im adds every column entry back onto the input pixel it came
  from (the same loop over the R*S kernel taps, each adding one strided slice
  of the batch-last gradient);
* backward-filter: dw (K/g, C/g*R*S) = dy (K/g, P*Q*N) @ cols^T, the sum over
  the images being part of the product.

Groups are the batch dimension of ``np.matmul`` (arrays shaped ``(G, ...)``);
depthwise convolution is the case C/g = 1.

The interface itself (arguments, shapes, the dropout hash) is documented in
``pycnn/backends/__init__.py``.
"""
from __future__ import annotations

import numpy as np

from pycnn.shapes import adaptive_bounds, conv2d_output_shape, pool2d_output_shape

# ----------------------------------------------------------------------------- helpers


def _pad(x, top, bottom, left, right, value=0.0):
    """x (N, C, H, W) padded on its two spatial axes (no copy when nothing to pad)."""
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def _tap(r, s, stride, dilation, out_hw):
    """(rows, cols): the strided slices of the padded input that kernel tap (r, s)
    reads: rows r*dil_h, r*dil_h + stride_h, ... (P of them), and likewise for columns."""
    h0, w0 = r * dilation[0], s * dilation[1]
    return (slice(h0, h0 + (out_hw[0] - 1) * stride[0] + 1, stride[0]),
            slice(w0, w0 + (out_hw[1] - 1) * stride[1] + 1, stride[1]))


def _check_conv(x_shape, w_shape, groups):
    if len(x_shape) != 4:
        raise ValueError(f"x: expected a 4-d NCHW array, got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w: expected a 4-d (K, C/groups, R, S) array, got shape {tuple(w_shape)}")
    c, k = x_shape[1], w_shape[0]
    if c % groups or k % groups:
        raise ValueError(f"groups: expected a divisor of C={c} and K={k}, got {groups}")
    if w_shape[1] != c // groups:
        raise ValueError(f"w: expected {c // groups} input channels per group "
                         f"(C={c} / groups={groups}), got shape {tuple(w_shape)}")


def _batch_last(a, top=0, bottom=0, left=0, right=0):
    """(N, C, H, W) -> a contiguous (C, H', W', N) copy, zero-padded on its two
    spatial axes. Padded in this order, not NCHW first: a padded plane of 32 x 32
    float32 is 4 KiB, and reading one value from each of N such planes at that
    stride hits the same cache sets every time (0.24 ms for LeNet's padded
    (64, 1, 28, 28) input, against 0.012 ms for this copy)."""
    n, c, h, w = a.shape
    out = np.zeros((c, h + top + bottom, w + left + right, n), dtype=a.dtype)
    out[:, top:top + h, left:left + w] = a.transpose(1, 2, 3, 0)
    return out


def _batch_first(a, bias=None):
    """(C, H, W, N) -> a contiguous (N, C, H, W) array, plus ``bias`` (C,) if given,
    in the same pass."""
    a = a.transpose(3, 0, 1, 2)
    out = np.empty(a.shape, dtype=a.dtype)
    if bias is None:
        np.copyto(out, a)
    else:
        np.add(a, bias.reshape(1, -1, 1, 1), out=out)
    return out


def _im2col(x, w_shape, stride, padding, dilation, groups, out_hw):
    """Columns (G, C/g*R*S, P*Q*N) of the padded input: one GEMM operand per group.

    Built one kernel tap at a time: tap (r, s) of every window is one strided
    slice of the padded, batch-last input, copied whole into its rows of the columns.
    """
    n, c = x.shape[:2]
    _, cg, r, s = w_shape
    xp = _batch_last(x, *padding)                                           # (C, H', W', N)
    cols = np.empty((c, r, s) + tuple(out_hw) + (n,), dtype=x.dtype)         # (C, R, S, P, Q, N)
    for i in range(r):
        for j in range(s):
            rows, columns = _tap(i, j, stride, dilation, out_hw)
            cols[:, i, j] = xp[:, rows, columns]
    return cols.reshape(groups, cg * r * s, -1)


# ----------------------------------------------------------------------------- convolution


def conv2d_fwd(x, w, b, stride, padding, dilation, groups):
    _check_conv(x.shape, w.shape, groups)
    n, k, p, q = conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)
    cols = _im2col(x, w.shape, stride, padding, dilation, groups, (p, q))    # (G, CgRS, PQN)
    w_mat = w.reshape(groups, k // groups, -1)                               # (G, Kg, CgRS)
    y = np.matmul(w_mat, cols).reshape(k, p, q, n)                           # (K, P, Q, N)
    return _batch_first(y, bias=b)


def conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups):
    _check_conv(x_shape, w.shape, groups)
    n, c, h, wd = x_shape
    k, cg, r, s = w.shape
    p, q = dy.shape[2:]
    top, bottom, left, right = padding
    w_mat = w.reshape(groups, k // groups, cg * r * s)                      # (G, Kg, CgRS)
    dy_mat = _batch_last(dy).reshape(groups, k // groups, -1)               # (G, Kg, PQN)
    dcols = np.matmul(w_mat.transpose(0, 2, 1), dy_mat)                      # (G, CgRS, PQN)
    dcols = dcols.reshape(c, r, s, p, q, n)     # the gradient of every window element
    # col2im: each kernel tap adds its (P, Q, N) slab back where it was read from
    dxp = np.zeros((c, h + top + bottom, wd + left + right, n), dtype=dcols.dtype)
    for i in range(r):
        for j in range(s):
            rows, columns = _tap(i, j, stride, dilation, (p, q))
            dxp[:, rows, columns] += dcols[:, i, j]
    return _batch_first(dxp[:, top:top + h, left:left + wd])


def conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups):
    _check_conv(x.shape, w_shape, groups)
    n, k, p, q = dy.shape
    cols = _im2col(x, w_shape, stride, padding, dilation, groups, (p, q))    # (G, CgRS, PQN)
    dy_mat = _batch_last(dy).reshape(groups, k // groups, -1)               # (G, Kg, PQN)
    dw = np.matmul(dy_mat, cols.transpose(0, 2, 1))                          # (G, Kg, CgRS)
    return dw.reshape(w_shape)


def conv2d_bias_relu_fwd(x, w, b, stride, padding, dilation, groups):
    y = conv2d_fwd(x, w, b, stride, padding, dilation, groups)
    return np.maximum(y, 0, out=y)


def conv2d_bwd_bias(dy):
    # over the batch first (whole planes added at once), then over each channel's pixels:
    # 2-4x faster than one sum over the axes (0, 2, 3)
    n, k, p, q = dy.shape
    return dy.sum(axis=0).reshape(k, p * q).sum(axis=1)


# ----------------------------------------------------------------------------- pooling


def _pool_pad_extra(size, out, kernel, stride, pad, dilation):
    """Padding needed past the right edge (beyond ``pad``) for the last window;
    nonzero only with ceil_mode, whose last window may hang over the padded input."""
    need = (out - 1) * stride + dilation * (kernel - 1) + 1
    return max(0, need - (size + 2 * pad))


def max_pool2d_fwd(x, kernel_size, stride, padding, dilation, ceil_mode):
    n, c, h, w = x.shape
    _, _, p, q = pool2d_output_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    (kh, kw), (ph, pw) = kernel_size, padding
    eh = _pool_pad_extra(h, p, kh, stride[0], ph, dilation[0])
    ew = _pool_pad_extra(w, q, kw, stride[1], pw, dilation[1])
    xp = _pad(x, ph, ph + eh, pw, pw + ew, value=-np.inf)       # padding never wins a max
    # every kernel tap's (P, Q) slice: taps[t] is tap (t // kw, t % kw)
    taps = [xp[(...,) + _tap(t // kw, t % kw, stride, dilation, (p, q))] for t in range(kh * kw)]
    y = taps[0].copy()
    for v in taps[1:]:
        np.maximum(y, v, out=y)
    # the first tap (row-major window order, as PyTorch) that holds the maximum,
    # or the first NaN (which np.maximum propagated): count the taps passed while
    # it is not yet found (branch-free, unlike np.where)
    has_nan = bool(np.isnan(y).any())
    # where a tap lies in the padding: it never wins, even where the window's real
    # values are all -inf and equal the padding (every window has a real value)
    rows = [(np.arange(p) * stride[0] - ph + r * dilation[0])[:, None] for r in range(kh)]
    cols = [(np.arange(q) * stride[1] - pw + s * dilation[1])[None, :] for s in range(kw)]
    padded = [((rows[t // kw] < 0) | (rows[t // kw] >= h)) | ((cols[t % kw] < 0) | (cols[t % kw] >= w))
              for t in range(kh * kw)] if (ph or pw or eh or ew) else [None] * (kh * kw)

    def misses(v, pad):               # v does not hold the maximum (v == v: v is no NaN)
        miss = (v != y) & (v == v) if has_nan else v != y
        return miss if pad is None or not pad.any() else miss | pad

    not_found = misses(taps[0], padded[0])
    tap = not_found.astype(np.min_scalar_type(kh * kw))
    for v, pad in zip(taps[1:-1], padded[1:-1]):   # the last tap, if reached, is the one
        not_found &= misses(v, pad)
        tap += not_found
    # the input pixel of that tap, as an offset h*W + w into its (n, c) plane:
    # the window's top-left corner plus the tap's offset inside the window
    corner = (np.arange(p)[:, None] * stride[0] - ph) * w + np.arange(q)[None, :] * stride[1] - pw
    tap_offset = np.array([(t // kw) * dilation[0] * w + (t % kw) * dilation[1]
                           for t in range(kh * kw)], dtype=np.int64)
    return y, corner + tap_offset.take(tap)


def max_pool2d_bwd(dy, indices, x_shape, kernel_size, stride, padding, dilation):
    # the window geometry is part of the interface (the CUDA gather needs it); the
    # scatter below finds every input from its index alone and is exact
    n, c, h, w = x_shape
    plane = h * w
    # (N*C, P*Q) spelled out: reshape cannot infer a -1 when N is 0
    flat = (indices.reshape(n * c, dy.shape[2] * dy.shape[3])
            + np.arange(n * c, dtype=np.int64)[:, None] * plane)
    # scatter-add: an input pixel that is the max of several windows gets all their dy
    dx = np.zeros(n * c * plane, dtype=dy.dtype)
    np.add.at(dx, flat.ravel(), dy.ravel())
    return dx.reshape(x_shape)


def _avg_divisor(size, out, kernel, stride, pad, count_include_pad):
    """Per output position along one axis, the number of elements averaged (PyTorch's rule).

    With count_include_pad the window counts padding but is clipped at the end of
    the padded input (size + pad): ceil_mode's overhang is never counted.
    Without, only real input elements count.
    """
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_divisors(x_shape, out_hw, kernel_size, stride, padding, count_include_pad, dtype):
    dh = _avg_divisor(x_shape[2], out_hw[0], kernel_size[0], stride[0], padding[0], count_include_pad)
    dw = _avg_divisor(x_shape[3], out_hw[1], kernel_size[1], stride[1], padding[1], count_include_pad)
    return np.maximum(np.outer(dh, dw), 1).astype(dtype)      # (P, Q); max() guards empty windows


def avg_pool2d_fwd(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    n, c, h, w = x.shape
    _, _, p, q = pool2d_output_shape(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    (kh, kw), (ph, pw) = kernel_size, padding
    eh = _pool_pad_extra(h, p, kh, stride[0], ph, 1)
    ew = _pool_pad_extra(w, q, kw, stride[1], pw, 1)
    xp = _pad(x, ph, ph + eh, pw, pw + ew)
    total = np.zeros((n, c, p, q), dtype=x.dtype)
    for i in range(kh):                       # sum of the windows, one kernel tap at a time
        for j in range(kw):
            total += xp[(...,) + _tap(i, j, stride, (1, 1), (p, q))]
    return total / _avg_divisors(x.shape, (p, q), kernel_size, stride, padding,
                                 count_include_pad, x.dtype)


def avg_pool2d_bwd(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    n, c, h, w = x_shape
    p, q = dy.shape[2:]
    (kh, kw), (ph, pw) = kernel_size, padding
    eh = _pool_pad_extra(h, p, kh, stride[0], ph, 1)
    ew = _pool_pad_extra(w, q, kw, stride[1], pw, 1)
    g = dy / _avg_divisors(x_shape, (p, q), kernel_size, stride, padding,
                           count_include_pad, dy.dtype)
    dxp = np.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=g.dtype)
    for i in range(kh):                       # every window element receives dy / divisor
        for j in range(kw):
            dxp[(...,) + _tap(i, j, stride, (1, 1), (p, q))] += g
    return dxp[:, :, ph:ph + h, pw:pw + w].copy()


def _adaptive_matrix(in_size, out_size, dtype):
    """A (out, in) with A[i, j] = 1/len(window i) for j in window i: one axis of the pool."""
    a = np.zeros((out_size, in_size), dtype=dtype)
    for i in range(out_size):                 # output cells, not pixels: out_size is small
        start, end = adaptive_bounds(in_size, out_size, i)
        a[i, start:end] = 1.0 / (end - start)
    return a


def adaptive_avg_pool2d_fwd(x, output_size):
    # the pool is separable: y = A_h @ x @ A_w^T on every (n, c) plane
    ah = _adaptive_matrix(x.shape[2], output_size[0], x.dtype)
    aw = _adaptive_matrix(x.shape[3], output_size[1], x.dtype)
    return np.einsum("ih,nchw,jw->ncij", ah, x, aw, optimize=True)


def adaptive_avg_pool2d_bwd(dy, x_shape):
    ah = _adaptive_matrix(x_shape[2], dy.shape[2], dy.dtype)
    aw = _adaptive_matrix(x_shape[3], dy.shape[3], dy.dtype)
    return np.einsum("ih,ncij,jw->nchw", ah, dy, aw, optimize=True)


# ----------------------------------------------------------------------------- activations


def relu_fwd(x):
    # max against a zero array, not the scalar 0: NumPy's vectorised loop for a
    # broadcast scalar operand is about 2x slower than for two arrays
    y = np.zeros_like(x)
    return np.maximum(x, y, out=y)


def relu_bwd(dy, y):
    keep = y > 0
    dx = dy * keep                # branch-free: np.where is ~20x slower on a random mask
    if not np.isfinite(dy).all():
        dx[~keep] = 0             # inf * 0 is nan; where y <= 0 the gradient is 0 regardless
    return dx


def leaky_relu_fwd(x, negative_slope):
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_bwd(dy, x, negative_slope):
    return np.where(x > 0, dy, dy * negative_slope)


def sigmoid_fwd(x):
    # exp of a non-positive number only, so no overflow for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_bwd(dy, y):
    return dy * y * (1 - y)


def tanh_fwd(x):
    return np.tanh(x)


def tanh_bwd(dy, y):
    return dy * (1 - y * y)


def bias_relu_fwd(x, b):
    shape = (1, -1) + (1,) * (x.ndim - 2)      # b broadcast along the channel axis
    return np.maximum(x + b.reshape(shape), 0)


# ----------------------------------------------------------------------------- softmax and loss


def softmax_fwd(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))     # shifted: exp never overflows
    return e / e.sum(axis=dim, keepdims=True)


def softmax_bwd(dy, y, dim):
    # dx_i = y_i * (dy_i - sum_j dy_j y_j)
    return y * (dy - (dy * y).sum(axis=dim, keepdims=True))


def log_softmax_fwd(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def log_softmax_bwd(dy, y, dim):
    # dx_i = dy_i - softmax_i * sum_j dy_j, and softmax = exp(log_softmax)
    return dy - np.exp(y) * dy.sum(axis=dim, keepdims=True)


def _check_target(logits, target):
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (N, classes), got {logits.shape}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target: expected shape ({logits.shape[0]},), got {target.shape}")
    if target.size and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"target: expected class indices in [0, {logits.shape[1]}), "
                         f"got values in [{target.min()}, {target.max()}]")


def cross_entropy_fwd(logits, target):
    _check_target(logits, target)
    log_probs = log_softmax_fwd(logits, 1)
    if len(target) == 0:                 # the mean over no samples is NaN, as in PyTorch
        return np.asarray(np.nan, dtype=logits.dtype), log_probs
    picked = log_probs[np.arange(len(target)), target]
    return np.asarray(-picked.mean(), dtype=logits.dtype), log_probs


def cross_entropy_bwd(dloss, log_probs, target):
    _check_target(log_probs, target)
    n = log_probs.shape[0]
    if n == 0:                                           # no samples: an empty gradient
        return np.zeros_like(log_probs)
    grad = np.exp(log_probs)                             # softmax
    grad[np.arange(n), target] -= 1                      # - onehot
    return grad * (np.asarray(dloss, dtype=log_probs.dtype) / n)


# ----------------------------------------------------------------------------- batch norm


def _bn_axes(x):
    if x.ndim not in (2, 4):
        raise ValueError(f"x: expected shape (N, C) or (N, C, H, W), got {x.shape}")
    # statistics over every axis but the channel one; per-channel arrays broadcast as `shape`
    return (0,) if x.ndim == 2 else (0, 2, 3), (1, -1) + (1,) * (x.ndim - 2)


def batch_norm_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps):
    axes, shape = _bn_axes(x)
    if training:
        m = x.size // x.shape[1]                         # values per channel
        if m < 2:
            raise ValueError(f"x: batch norm in training needs more than 1 value per "
                             f"channel, got input shape {x.shape}")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)                           # biased: used to normalise
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:                      # unbiased: kept as the estimate
            running_var[...] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: expected arrays in inference "
                             "mode (training=False), got None")
        mean, var = running_mean, running_var
    mean = np.asarray(mean, dtype=x.dtype)
    invstd = (1 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    y = (x - mean.reshape(shape)) * invstd.reshape(shape)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y, mean.copy(), invstd


def batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training):
    """(dx, dweight, dbias); dweight and dbias are computed even when weight is None."""
    axes, shape = _bn_axes(x)
    invstd = save_invstd.reshape(shape)
    xhat = (x - save_mean.reshape(shape)) * invstd
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    scale = invstd if weight is None else invstd * weight.reshape(shape)
    if training:
        # the batch mean and variance depend on x too: subtract their share
        m = x.size // x.shape[1]
        dx = scale * (dy - (dbias.reshape(shape) + xhat * dweight.reshape(shape)) / m)
    else:
        dx = scale * dy
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- dropout


def _hash32(h):
    """lowbias32 on a uint32 array (wrapping arithmetic mod 2**32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def dropout_mask(shape, p, seed):
    """uint8 keep mask for an array of ``shape`` (the definition in backends/__init__)."""
    key = _hash32(np.array([int(seed) & 0xFFFFFFFF], dtype=np.uint32) ^ np.uint32(0x9E3779B9))
    count = int(np.prod(shape, dtype=np.int64))
    index = np.arange(count, dtype=np.uint64).astype(np.uint32)   # uint32(i): wraps past 2**32
    u = _hash32(index ^ key).astype(np.float64) / 2.0**32         # exact in float64
    return (u >= p).astype(np.uint8).reshape(shape)


def _check_p(p):
    if not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")


def dropout_fwd(x, p, seed):
    _check_p(p)
    mask = dropout_mask(x.shape, p, seed)
    if p == 1:                                           # everything dropped, no 1/0
        return np.zeros_like(x), mask
    return x * mask / x.dtype.type(1 - p), mask


def dropout_bwd(dy, mask, p):
    _check_p(p)
    if p == 1:
        return np.zeros_like(dy)
    return dy * mask / dy.dtype.type(1 - p)
