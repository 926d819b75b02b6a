"""Backends: one flat interface, implemented three times.

``numpy_ref`` (NumPy, the readable reference), ``numpy_fast`` (NumPy laid out for
speed, the CPU default; checked against the reference) and ``cuda`` (CuPy arrays,
our own kernels through ``pycnn._C``) define the same functions with the same
arguments.

Which one runs on the CPU: ``numpy_fast`` unless the environment variable
``PYCNN_BACKEND=reference`` is set when pycnn is imported, or
``set_cpu_backend("reference")`` is called (``"fast"`` switches back). They take and return plain arrays (no autograd); ``pycnn.functional``
builds autograd on top and picks the backend from the tensor's device.

Arguments are already validated and normalised by ``pycnn.functional`` /
``pycnn.shapes``: every spatial argument is a pair ``(h, w)``, padding of a
convolution is a 4-tuple ``(top, bottom, left, right)`` (so that ``'same'`` with
an even kernel can pad one more on the bottom/right, as PyTorch does), padding of
a pool is a pair. Output sizes follow ``pycnn.shapes.conv2d_output_shape`` and ``pool2d_output_shape``.

The interface (``x`` is NCHW, ``w`` is ``(K, C/groups, R, S)``):

Convolution
    conv2d_fwd(x, w, b, stride, padding, dilation, groups) -> y
    conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups) -> dx
    conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups) -> dw
    conv2d_bwd_bias(dy) -> db                      (sum of dy over N, P, Q)
    conv2d_bias_relu_fwd(x, w, b, stride, padding, dilation, groups) -> y
        relu(conv2d_fwd(...)) in one pass (the kernel's epilogue adds b and clamps)

Pooling (``indices`` are int64 offsets into each (n, c) plane, h * W + w,
as PyTorch returns them)
    max_pool2d_fwd(x, kernel_size, stride, padding, dilation, ceil_mode) -> (y, indices)
    max_pool2d_bwd(dy, indices, x_shape, kernel_size, stride, padding, dilation) -> dx
        indices are the forward's for the same geometry (ceil_mode shows in dy's
        size); dx[n, c, i] sums dy over the windows whose index is i. The geometry
        lets a backend gather per input element over the windows that can hold
        it (the CUDA backend: fixed order, deterministic, no atomics); the
        reference scatters by index alone.
    avg_pool2d_fwd(x, kernel_size, stride, padding, ceil_mode, count_include_pad) -> y
    avg_pool2d_bwd(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad) -> dx
    adaptive_avg_pool2d_fwd(x, output_size) -> y
    adaptive_avg_pool2d_bwd(dy, x_shape) -> dx

Activations (the backward of relu, sigmoid and tanh takes the forward output y)
    relu_fwd(x) -> y                relu_bwd(dy, y) -> dx
    leaky_relu_fwd(x, negative_slope) -> y
    leaky_relu_bwd(dy, x, negative_slope) -> dx
    sigmoid_fwd(x) -> y             sigmoid_bwd(dy, y) -> dx
    tanh_fwd(x) -> y                tanh_bwd(dy, y) -> dx
    bias_relu_fwd(x, b) -> y        relu(x + b[None, :, None, None]), fused

Softmax and loss (``dim`` is a non-negative axis)
    softmax_fwd(x, dim) -> y        softmax_bwd(dy, y, dim) -> dx
    log_softmax_fwd(x, dim) -> y    log_softmax_bwd(dy, y, dim) -> dx
    cross_entropy_fwd(logits, target) -> (loss, log_probs)
        logits (N, classes), target int64 (N,); loss is a 0-d array, the mean
    cross_entropy_bwd(dloss, log_probs, target) -> dlogits
        dloss is a 0-d array (or Python float)

Batch norm (x is (N, C) or (N, C, H, W); statistics per channel)
    batch_norm_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps)
        -> (y, save_mean, save_invstd)
        training: batch statistics; running_mean/var (if not None) are updated
        in place as PyTorch does: r = (1 - momentum) * r + momentum * stat,
        with the unbiased batch variance for running_var. Inference: uses the
        running statistics; save_mean/save_invstd are those used.
        weight/bias may be None (then 1 and 0).
    batch_norm_bwd(dy, x, weight, save_mean, save_invstd, training) -> (dx, dweight, dbias)
        (training=False: the statistics are constants)

Dropout, counter-based so that the same seed gives the same mask on both devices
    dropout_fwd(x, p, seed) -> (y, mask)    mask is uint8, y = x * mask / (1 - p)
    dropout_bwd(dy, mask, p) -> dx
    The keep decision for flat element i (C order) is
        u = hash32(uint32(i) ^ hash32(uint32(seed) ^ 0x9E3779B9)) / 2**32 ; keep = u >= p
    with hash32 the "lowbias32" integer hash (all arithmetic mod 2**32):
        h ^= h >> 16; h *= 0x7FEB352D; h ^= h >> 15; h *= 0x846CA68B; h ^= h >> 16
"""
from __future__ import annotations

import importlib

#: Every function a backend must define; tests check both backends against it.
INTERFACE = (
    "conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter", "conv2d_bwd_bias",
    "conv2d_bias_relu_fwd",
    "max_pool2d_fwd", "max_pool2d_bwd", "avg_pool2d_fwd", "avg_pool2d_bwd",
    "adaptive_avg_pool2d_fwd", "adaptive_avg_pool2d_bwd",
    "relu_fwd", "relu_bwd", "leaky_relu_fwd", "leaky_relu_bwd",
    "sigmoid_fwd", "sigmoid_bwd", "tanh_fwd", "tanh_bwd", "bias_relu_fwd",
    "softmax_fwd", "softmax_bwd", "log_softmax_fwd", "log_softmax_bwd",
    "cross_entropy_fwd", "cross_entropy_bwd",
    "batch_norm_fwd", "batch_norm_bwd",
    "dropout_fwd", "dropout_bwd",
)

import os  # noqa: E402

#: The CPU backends by name (``PYCNN_BACKEND`` / ``set_cpu_backend``).
CPU_BACKENDS = {"fast": "pycnn.backends.numpy_fast", "reference": "pycnn.backends.numpy_ref"}
_MODULES = {"cpu": CPU_BACKENDS["fast"], "cuda": "pycnn.backends.cuda"}
_loaded: dict = {}


def set_cpu_backend(name: str) -> None:
    """Run CPU ops on ``"fast"`` (the default) or ``"reference"`` (``numpy_ref``)."""
    if name not in CPU_BACKENDS:
        raise ValueError(f"cpu backend: expected one of {sorted(CPU_BACKENDS)}, got {name!r}")
    _MODULES["cpu"] = CPU_BACKENDS[name]
    _loaded.pop("cpu", None)


def cpu_backend() -> str:
    """The name of the backend that runs CPU ops now."""
    return next(k for k, v in CPU_BACKENDS.items() if v == _MODULES["cpu"])


def get_backend(device: str):
    """The backend module that runs ops for tensors on ``device``."""
    module = _loaded.get(device)
    if module is None:
        try:
            name = _MODULES[device]
        except KeyError:
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}") from None
        module = _loaded[device] = importlib.import_module(name)
    return module


_env = os.environ.get("PYCNN_BACKEND")
if _env:
    try:
        set_cpu_backend(_env)
    except ValueError:
        raise ValueError(f"PYCNN_BACKEND: expected one of {sorted(CPU_BACKENDS)}, "
                         f"got {_env!r}") from None
