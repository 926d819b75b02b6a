"""pycnn's kernels as a backend for other frameworks: plain functions, no autograd.

Every function takes CuPy arrays, or anything on the GPU that exports
``__dlpack__`` or ``__cuda_array_interface__`` (a PyTorch CUDA tensor, a JAX or
Numba array), converts it without a copy, normalises arguments the way
``torch.nn.functional`` takes them (ints or pairs, ``stride`` defaulting to the
kernel size for pools, ``padding='same'``), runs the CUDA backend and returns a
CuPy array. ``torch.from_dlpack(result)`` hands it back to PyTorch, again
without a copy. Inputs must be float32 and C-contiguous (``tensor.contiguous()``):
a conversion that copied would break the zero-copy promise, so it is refused.

Work is queued on CuPy's current stream. When mixing with PyTorch, run both on
one stream (``torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr)``)
or synchronise between them.

Example: a PyTorch tensor through pycnn's convolution, checked against PyTorch::

    import torch, cupy
    from pycnn import interop

    torch.backends.cudnn.allow_tf32 = False        # compare FP32 with FP32
    x = torch.randn(8, 16, 32, 32, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda")
    b = torch.randn(32, device="cuda")
    torch.cuda.synchronize()                       # x, w, b are ready for CuPy's stream
    y = interop.conv2d(x, w, b, stride=1, padding=1)        # a cupy.ndarray
    y_torch = torch.from_dlpack(y)                          # zero copy, back in PyTorch
    ref = torch.nn.functional.conv2d(x, w, b, stride=1, padding=1)
    print((y_torch - ref).abs().max() / ref.abs().max())    # ~1e-6
"""
from __future__ import annotations

import numbers

from pycnn.shapes import conv_padding, pair, pool_geometry


def _backend():
    from pycnn.backends import cuda
    return cuda


def as_cupy(a, name: str):
    """``a`` as a cupy.ndarray sharing its memory (TypeError if it is not on the GPU)."""
    import cupy as cp
    if isinstance(a, cp.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        try:
            return cp.from_dlpack(a)
        except Exception as exc:                      # host memory, unsupported dtype, ...
            if not hasattr(a, "__cuda_array_interface__"):
                raise TypeError(f"{name}: expected a CUDA array (CuPy, or on the GPU with "
                                f"__dlpack__), got {type(a).__name__}: {exc}") from None
    if hasattr(a, "__cuda_array_interface__"):
        return cp.asarray(a)
    raise TypeError(f"{name}: expected a CuPy array or a GPU array exporting __dlpack__ or "
                    f"__cuda_array_interface__, got {type(a).__name__}")


def _optional(a, name):
    return None if a is None else as_cupy(a, name)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, w = as_cupy(input, "input"), as_cupy(weight, "weight")
    if w.ndim != 4:
        raise ValueError(f"weight: expected (K, C/groups, R, S), got shape {tuple(w.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups: expected an int >= 1, got {groups!r}")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pad = conv_padding(padding, tuple(w.shape[2:]), dilation, stride)
    return _backend().conv2d_fwd(x, w, _optional(bias, "bias"), stride, pad, dilation, int(groups))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    x = as_cupy(input, "input")
    kernel, stride, padding, dilation = pool_geometry("max_pool2d", x.shape, kernel_size, stride,
                                                      padding, dilation, bool(ceil_mode))
    y, indices = _backend().max_pool2d_fwd(x, kernel, stride, padding, dilation, bool(ceil_mode))
    return (y, indices) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    x = as_cupy(input, "input")
    kernel, stride, padding, _ = pool_geometry("avg_pool2d", x.shape, kernel_size, stride,
                                               padding, 1, bool(ceil_mode))
    return _backend().avg_pool2d_fwd(x, kernel, stride, padding, bool(ceil_mode),
                                     bool(count_include_pad))


def adaptive_avg_pool2d(input, output_size):
    return _backend().adaptive_avg_pool2d_fwd(as_cupy(input, "input"), pair(output_size, "output_size"))


def relu(input):
    return _backend().relu_fwd(as_cupy(input, "input"))


def leaky_relu(input, negative_slope=0.01):
    return _backend().leaky_relu_fwd(as_cupy(input, "input"), float(negative_slope))


def sigmoid(input):
    return _backend().sigmoid_fwd(as_cupy(input, "input"))


def tanh(input):
    return _backend().tanh_fwd(as_cupy(input, "input"))


def bias_relu(input, bias):
    """relu(input + bias[None, :, None, None]) in one pass."""
    return _backend().bias_relu_fwd(as_cupy(input, "input"), as_cupy(bias, "bias"))


def _dim(dim, ndim):
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -ndim <= dim < ndim:
        raise ValueError(f"dim: expected an axis in [{-ndim}, {ndim}), got {dim!r}")
    return int(dim) % ndim


def softmax(input, dim):
    x = as_cupy(input, "input")
    return _backend().softmax_fwd(x, _dim(dim, x.ndim))


def log_softmax(input, dim):
    x = as_cupy(input, "input")
    return _backend().log_softmax_fwd(x, _dim(dim, x.ndim))


def cross_entropy(input, target):
    """Mean cross-entropy of logits (N, classes) against int64 class indices (N,): a 0-d array."""
    loss, _ = _backend().cross_entropy_fwd(as_cupy(input, "input"), as_cupy(target, "target"))
    return loss


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """As torch.nn.functional.batch_norm; running statistics are updated in place in training."""
    y, _, _ = _backend().batch_norm_fwd(as_cupy(input, "input"), _optional(weight, "weight"),
                                        _optional(bias, "bias"),
                                        _optional(running_mean, "running_mean"),
                                        _optional(running_var, "running_var"), bool(training),
                                        float(momentum), float(eps))
    return y


def dropout(input, p=0.5, training=True, seed=None):
    """Dropout with pycnn's counter-based mask: ``seed`` picks it (the same mask as the CPU
    backend for the same seed); None, the default, draws a fresh one from pycnn's
    generator (``pycnn.manual_seed`` makes the sequence repeatable), as every call of
    torch.nn.functional.dropout draws a fresh mask."""
    x = as_cupy(input, "input")
    if not training:
        return x
    if seed is None:
        from pycnn.random import next_seed
        seed = next_seed()
    y, _ = _backend().dropout_fwd(x, p, seed)
    return y
