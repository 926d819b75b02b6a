"""Plain nested-loop definitions of every op: the oracle for the NumPy reference.

Each function walks every index and writes the definition down as directly as
possible, with no vectorisation, no im2col and no reuse of the forward pass in
a backward pass (the backward passes are the chain rule summed by loops).
Slow on purpose: use tiny shapes. Outputs are float64 arrays.
"""
from __future__ import annotations

import math

import numpy as np

from pycnn.shapes import adaptive_bounds

# ----------------------------------------------------------------------------- convolution


def conv_out(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_fwd(x, w, b, stride, padding, dilation, groups):
    """y[n,k,p,q] = b[k] + sum_{c in group(k), r, s} w[k,c,r,s] * x[n, c, p*sh - top + r*dh, q*sw - left + s*dw]
    where input positions outside the image read as 0."""
    n_, c_, h_, w_ = x.shape
    k_, cg, r_, s_ = w.shape
    top, bottom, left, right = padding
    p_ = conv_out(h_, r_, stride[0], top, bottom, dilation[0])
    q_ = conv_out(w_, s_, stride[1], left, right, dilation[1])
    kg = k_ // groups
    y = np.zeros((n_, k_, p_, q_))
    for n in range(n_):
        for k in range(k_):
            g = k // kg
            for p in range(p_):
                for q in range(q_):
                    acc = 0.0 if b is None else float(b[k])
                    for c in range(cg):
                        for r in range(r_):
                            for s in range(s_):
                                h = p * stride[0] - top + r * dilation[0]
                                ww = q * stride[1] - left + s * dilation[1]
                                if 0 <= h < h_ and 0 <= ww < w_:
                                    acc += float(w[k, c, r, s]) * float(x[n, g * cg + c, h, ww])
                    y[n, k, p, q] = acc
    return y


def conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups):
    """dx[n,ci,h,w] = sum over k in ci's group and taps (r, s) of dy[n,k,p,q] * w[k,c,r,s],
    where (p, q) is the output pixel whose tap (r, s) reads (h, w):
    p = (h + top - r*dh) / sh when that is an integer in range."""
    n_, c_, h_, w_ = x_shape
    k_, cg, r_, s_ = w.shape
    p_, q_ = dy.shape[2:]
    top, _, left, _ = padding
    kg = k_ // groups
    dx = np.zeros(x_shape)
    for n in range(n_):
        for ci in range(c_):
            g, c = divmod(ci, cg)
            for h in range(h_):
                for ww in range(w_):
                    acc = 0.0
                    for k in range(g * kg, (g + 1) * kg):
                        for r in range(r_):
                            for s in range(s_):
                                ph = h + top - r * dilation[0]
                                qw = ww + left - s * dilation[1]
                                if ph % stride[0] or qw % stride[1]:
                                    continue
                                p, q = ph // stride[0], qw // stride[1]
                                if 0 <= p < p_ and 0 <= q < q_:
                                    acc += float(dy[n, k, p, q]) * float(w[k, c, r, s])
                    dx[n, ci, h, ww] = acc
    return dx


def conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups):
    """dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, g*Cg + c, p*sh - top + r*dh, q*sw - left + s*dw]."""
    n_, c_, h_, w_ = x.shape
    k_, cg, r_, s_ = w_shape
    p_, q_ = dy.shape[2:]
    top, _, left, _ = padding
    kg = k_ // groups
    dw = np.zeros(w_shape)
    for k in range(k_):
        g = k // kg
        for c in range(cg):
            for r in range(r_):
                for s in range(s_):
                    acc = 0.0
                    for n in range(n_):
                        for p in range(p_):
                            for q in range(q_):
                                h = p * stride[0] - top + r * dilation[0]
                                ww = q * stride[1] - left + s * dilation[1]
                                if 0 <= h < h_ and 0 <= ww < w_:
                                    acc += float(dy[n, k, p, q]) * float(x[n, g * cg + c, h, ww])
                    dw[k, c, r, s] = acc
    return dw


def conv2d_bwd_bias(dy):
    n_, k_, p_, q_ = dy.shape
    db = np.zeros(k_)
    for k in range(k_):
        for n in range(n_):
            for p in range(p_):
                for q in range(q_):
                    db[k] += float(dy[n, k, p, q])
    return db


# ----------------------------------------------------------------------------- pooling


def pool_out(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling output size, with ceil_mode's rule that the last window
    must start inside the input or its left padding."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (math.ceil(num / stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def max_pool2d_fwd(x, kernel_size, stride, padding, dilation, ceil_mode):
    """y = max over the window's in-image taps; the index (h*W + w) is the first
    maximum met in row-major window order (a later equal value does not replace it),
    so a window of -inf values points at its first in-image pixel, never at padding."""
    n_, c_, h_, w_ = x.shape
    p_ = pool_out(h_, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    q_ = pool_out(w_, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    y = np.zeros((n_, c_, p_, q_))
    idx = np.zeros((n_, c_, p_, q_), dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for p in range(p_):
                for q in range(q_):
                    best, where = -math.inf, None
                    for r in range(kernel_size[0]):
                        for s in range(kernel_size[1]):
                            h = p * stride[0] - padding[0] + r * dilation[0]
                            ww = q * stride[1] - padding[1] + s * dilation[1]
                            if 0 <= h < h_ and 0 <= ww < w_ and (where is None or x[n, c, h, ww] > best):
                                best, where = float(x[n, c, h, ww]), h * w_ + ww
                    y[n, c, p, q], idx[n, c, p, q] = best, where
    return y, idx


def max_pool2d_bwd(dy, indices, x_shape):
    """dx[n,c,h,w] = sum of dy over the outputs whose max came from (h, w)."""
    n_, c_, h_, w_ = x_shape
    dx = np.zeros(x_shape)
    for n in range(n_):
        for c in range(c_):
            for h in range(h_):
                for ww in range(w_):
                    for p in range(dy.shape[2]):
                        for q in range(dy.shape[3]):
                            if indices[n, c, p, q] == h * w_ + ww:
                                dx[n, c, h, ww] += float(dy[n, c, p, q])
    return dx


def avg_window(size, pad, kernel, stride, o, count_include_pad):
    """(first, last+1, divisor) of window o along one axis, PyTorch's divisor rule:
    with count_include_pad the window counts padding up to size + pad (not past it);
    without, only the input elements it covers."""
    start = o * stride - pad
    end = min(start + kernel, size + pad)
    padded_len = end - start
    start, end = max(start, 0), min(end, size)
    return start, end, (padded_len if count_include_pad else end - start)


def avg_pool2d_fwd(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    n_, c_, h_, w_ = x.shape
    p_ = pool_out(h_, kernel_size[0], stride[0], padding[0], 1, ceil_mode)
    q_ = pool_out(w_, kernel_size[1], stride[1], padding[1], 1, ceil_mode)
    y = np.zeros((n_, c_, p_, q_))
    for n in range(n_):
        for c in range(c_):
            for p in range(p_):
                h0, h1, dh = avg_window(h_, padding[0], kernel_size[0], stride[0], p, count_include_pad)
                for q in range(q_):
                    w0, w1, dw = avg_window(w_, padding[1], kernel_size[1], stride[1], q, count_include_pad)
                    total = 0.0
                    for h in range(h0, h1):
                        for ww in range(w0, w1):
                            total += float(x[n, c, h, ww])
                    y[n, c, p, q] = total / (dh * dw)
    return y


def avg_pool2d_bwd(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """dx[n,c,h,w] = sum over the windows that contain (h, w) of dy / divisor."""
    n_, c_, h_, w_ = x_shape
    p_, q_ = dy.shape[2:]
    dx = np.zeros(x_shape)
    for n in range(n_):
        for c in range(c_):
            for h in range(h_):
                for ww in range(w_):
                    for p in range(p_):
                        h0, h1, dh = avg_window(h_, padding[0], kernel_size[0], stride[0], p, count_include_pad)
                        for q in range(q_):
                            w0, w1, dw = avg_window(w_, padding[1], kernel_size[1], stride[1], q, count_include_pad)
                            if h0 <= h < h1 and w0 <= ww < w1:
                                dx[n, c, h, ww] += float(dy[n, c, p, q]) / (dh * dw)
    return dx


def adaptive_avg_pool2d_fwd(x, output_size):
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_) + tuple(output_size))
    for n in range(n_):
        for c in range(c_):
            for i in range(output_size[0]):
                h0, h1 = adaptive_bounds(h_, output_size[0], i)
                for j in range(output_size[1]):
                    w0, w1 = adaptive_bounds(w_, output_size[1], j)
                    total = 0.0
                    for h in range(h0, h1):
                        for ww in range(w0, w1):
                            total += float(x[n, c, h, ww])
                    y[n, c, i, j] = total / ((h1 - h0) * (w1 - w0))
    return y


def adaptive_avg_pool2d_bwd(dy, x_shape):
    n_, c_, h_, w_ = x_shape
    oh, ow = dy.shape[2:]
    dx = np.zeros(x_shape)
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                h0, h1 = adaptive_bounds(h_, oh, i)
                for j in range(ow):
                    w0, w1 = adaptive_bounds(w_, ow, j)
                    for h in range(h0, h1):
                        for ww in range(w0, w1):
                            dx[n, c, h, ww] += float(dy[n, c, i, j]) / ((h1 - h0) * (w1 - w0))
    return dx


# ----------------------------------------------------------------------------- activations


def elementwise(f, *arrays):
    """f applied to each element (as Python floats) of equally shaped arrays."""
    out = np.zeros(arrays[0].shape)
    for i in np.ndindex(*out.shape):
        out[i] = f(*(float(a[i]) for a in arrays))
    return out


def relu_fwd(x):
    return elementwise(lambda v: v if v > 0 else 0.0, x)


def relu_bwd(dy, y):
    return elementwise(lambda g, v: g if v > 0 else 0.0, dy, y)


def leaky_relu_fwd(x, slope):
    return elementwise(lambda v: v if v > 0 else slope * v, x)


def leaky_relu_bwd(dy, x, slope):
    return elementwise(lambda g, v: g if v > 0 else slope * g, dy, x)


def sigmoid_fwd(x):
    return elementwise(lambda v: 1.0 / (1.0 + math.exp(-v)), x)


def sigmoid_bwd(dy, y):
    return elementwise(lambda g, v: g * v * (1.0 - v), dy, y)


def tanh_fwd(x):
    return elementwise(math.tanh, x)


def tanh_bwd(dy, y):
    return elementwise(lambda g, v: g * (1.0 - v * v), dy, y)


def bias_relu_fwd(x, b):
    y = np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        v = float(x[i]) + float(b[i[1]])
        y[i] = v if v > 0 else 0.0
    return y


# ----------------------------------------------------------------------------- softmax and loss


def _rows(shape, dim):
    """Every index tuple of ``shape`` with ``dim`` left as a slice: one softmax row each."""
    rest = [s for d, s in enumerate(shape) if d != dim]
    for i in np.ndindex(*rest):
        yield i[:dim] + (slice(None),) + i[dim:]


def softmax_fwd(x, dim):
    y = np.zeros(x.shape)
    for row in _rows(x.shape, dim):
        v = [float(t) for t in x[row]]
        big = max(v)
        e = [math.exp(t - big) for t in v]
        y[row] = [t / sum(e) for t in e]
    return y


def log_softmax_fwd(x, dim):
    y = np.zeros(x.shape)
    for row in _rows(x.shape, dim):
        v = [float(t) for t in x[row]]
        big = max(v)
        lse = big + math.log(sum(math.exp(t - big) for t in v))
        y[row] = [t - lse for t in v]
    return y


def softmax_bwd(dy, y, dim):
    """dx_i = sum_j dy_j * d y_j / d x_i, with d y_j / d x_i = y_j (delta_ij - y_i)."""
    dx = np.zeros(y.shape)
    for row in _rows(y.shape, dim):
        g, v = dy[row], y[row]
        dx[row] = [sum(float(g[j]) * float(v[j]) * ((i == j) - float(v[i])) for j in range(len(v)))
                   for i in range(len(v))]
    return dx


def log_softmax_bwd(dy, y, dim):
    """dx_i = sum_j dy_j * (delta_ij - softmax_i), softmax_i = exp(y_i)."""
    dx = np.zeros(y.shape)
    for row in _rows(y.shape, dim):
        g, v = dy[row], y[row]
        dx[row] = [sum(float(g[j]) * ((i == j) - math.exp(float(v[i]))) for j in range(len(v)))
                   for i in range(len(v))]
    return dx


def cross_entropy_fwd(logits, target):
    """Mean over the batch of -log softmax(logits)[target]."""
    total = 0.0
    for n in range(logits.shape[0]):
        v = [float(t) for t in logits[n]]
        big = max(v)
        lse = big + math.log(sum(math.exp(t - big) for t in v))
        total += lse - v[int(target[n])]
    return total / logits.shape[0] if logits.shape[0] else math.nan   # the mean of nothing


def cross_entropy_bwd(dloss, logits, target):
    """d loss / d logits[n, i] = dloss * (softmax_i - [i == target_n]) / N."""
    n_, k_ = logits.shape
    sm = softmax_fwd(logits, 1)
    dx = np.zeros(logits.shape)
    for n in range(n_):
        for i in range(k_):
            dx[n, i] = float(dloss) * (sm[n, i] - (i == int(target[n]))) / n_
    return dx


# ----------------------------------------------------------------------------- batch norm


def _channel_values(x, c):
    """Every value of channel c of an (N, C) or (N, C, H, W) array, as index tuples."""
    return [i for i in np.ndindex(*x.shape) if i[1] == c]


def batch_norm_stats(x, eps):
    """Per channel: (mean, biased variance, unbiased variance, 1/sqrt(var + eps))."""
    stats = []
    for c in range(x.shape[1]):
        idx = _channel_values(x, c)
        m = len(idx)
        mean = sum(float(x[i]) for i in idx) / m
        sq = sum((float(x[i]) - mean) ** 2 for i in idx)
        stats.append((mean, sq / m, sq / (m - 1), 1.0 / math.sqrt(sq / m + eps)))
    return stats


def batch_norm_fwd(x, weight, bias, mean, invstd):
    """y = (x - mean_c) * invstd_c * weight_c + bias_c."""
    y = np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        c = i[1]
        g = 1.0 if weight is None else float(weight[c])
        b = 0.0 if bias is None else float(bias[c])
        y[i] = (float(x[i]) - mean[c]) * invstd[c] * g + b
    return y


def batch_norm_bwd(dy, x, weight, mean, invstd, training):
    """dx_i = sum_j dy_j * d y_j / d x_i over the values j of i's channel, with
    d y_j / d x_i = g * invstd * (delta_ij - 1/M - xhat_i xhat_j / M) in training
    (the batch statistics depend on x) and g * invstd * delta_ij in inference."""
    dx = np.zeros(x.shape)
    dweight = np.zeros(x.shape[1])
    dbias = np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        idx = _channel_values(x, c)
        m = len(idx)
        g = 1.0 if weight is None else float(weight[c])
        xhat = {i: (float(x[i]) - mean[c]) * invstd[c] for i in idx}
        for j in idx:
            dbias[c] += float(dy[j])
            dweight[c] += float(dy[j]) * xhat[j]
        for i in idx:
            acc = 0.0
            for j in idx:
                jac = float(i == j)
                if training:
                    jac -= 1.0 / m + xhat[i] * xhat[j] / m
                acc += float(dy[j]) * g * invstd[c] * jac
            dx[i] = acc
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- dropout


def hash32(h):
    """lowbias32 on a Python int, mod 2**32."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def dropout_keep(i, p, seed):
    """Whether flat element i survives dropout with probability p and this seed."""
    key = hash32((seed & 0xFFFFFFFF) ^ 0x9E3779B9)
    u = hash32((i & 0xFFFFFFFF) ^ key) / 2**32
    return u >= p
