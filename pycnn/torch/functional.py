"""``torch.nn.functional``'s signatures on pycnn's kernels (``torch.ops.pycnn.*``).

Each function checks and normalises its arguments the way ``torch.nn.functional``
takes them (ints or pairs, ``padding='same'``, a pool's stride defaulting to its
kernel) and calls one registered op, so autograd, ``torch.compile`` and
``torch.export`` see one pycnn op per call. What a function does not support
(``divisor_override``, a cross-entropy ``reduction`` other than ``'mean'``, ...)
raises ValueError naming the argument instead of computing something else.
"""
from __future__ import annotations

import numbers

import torch

from pycnn import shapes
from pycnn.torch import ops  # noqa: F401  (registers torch.ops.pycnn)

__all__ = ["conv2d", "conv2d_relu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "relu",
           "leaky_relu", "sigmoid", "tanh", "bias_relu", "softmax", "log_softmax",
           "cross_entropy", "batch_norm", "dropout"]

P = torch.ops.pycnn


def _tensor(op: str, name: str, t, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        want = " or ".join(f"{n}-D" for n in (ndim if isinstance(ndim, tuple) else (ndim,)))
        raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(t.shape)}")
    return t


def _wrap(op: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with pycnn.shapes' errors prefixed by the op's name."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{op}: {exc}") from None


def _conv_args(op, input, weight, bias, stride, padding, dilation, groups):
    _tensor(op, "input", input, 4)
    _tensor(op, "weight", weight, 4)
    if bias is not None:
        _tensor(op, "bias", bias, 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c, (k, cg, r, s) = input.shape[1], weight.shape
    if c % groups or k % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the input channels C={c} and "
                         f"the output channels K={k}")
    if cg * groups != c:
        raise ValueError(f"{op}: input has C={c} channels, but weight of shape "
                         f"{tuple(weight.shape)} with groups={groups} expects {cg * groups}")
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"{op}: bias must have shape ({k},), got {tuple(bias.shape)}")
    stride = _wrap(op, shapes.pair, stride, "stride")
    dilation = _wrap(op, shapes.pair, dilation, "dilation")
    pad = _wrap(op, shapes.conv_padding, padding, (r, s), dilation, stride)
    _wrap(op, shapes.conv2d_output_shape, tuple(input.shape), tuple(weight.shape), stride, pad,
          dilation)
    return list(stride), list(pad), list(dilation), int(groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """As torch.nn.functional.conv2d; ``padding`` is an int, a pair, 'valid' or 'same'."""
    args = _conv_args("conv2d", input, weight, bias, stride, padding, dilation, groups)
    return P.conv2d(input, weight, bias, *args)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """relu(conv2d(...)) as one op: on the GPU the bias and the ReLU run in the
    convolution kernel's epilogue."""
    args = _conv_args("conv2d_relu", input, weight, bias, stride, padding, dilation, groups)
    return P.conv2d_relu(input, weight, bias, *args)


def _pool(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    _tensor(op, "input", input, 4)
    geometry = shapes.pool_geometry(op, tuple(input.shape), kernel_size, stride, padding,
                                    dilation, bool(ceil_mode))
    return [list(g) for g in geometry]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    kernel, stride, padding, dilation = _pool("max_pool2d", input, kernel_size, stride, padding,
                                              dilation, ceil_mode)
    y, indices = P.max_pool2d(input, kernel, stride, padding, dilation, bool(ceil_mode))
    return (y, indices) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise ValueError(f"avg_pool2d: divisor_override is not supported by pycnn, got "
                         f"{divisor_override!r}")
    kernel, stride, padding, _ = _pool("avg_pool2d", input, kernel_size, stride, padding, 1,
                                       ceil_mode)
    return P.avg_pool2d(input, kernel, stride, padding, bool(ceil_mode), bool(count_include_pad))


def adaptive_avg_pool2d(input, output_size):
    _tensor("adaptive_avg_pool2d", "input", input, 4)
    if 0 in tuple(input.shape[1:]):
        raise ValueError(f"adaptive_avg_pool2d: input must have non-zero C, H and W, got "
                         f"shape {tuple(input.shape)}")
    out = _wrap("adaptive_avg_pool2d", shapes.pair, output_size, "output_size")
    return P.adaptive_avg_pool2d(input, list(out))


def _not_inplace(op, inplace):
    if inplace:
        raise ValueError(f"{op}: inplace=True is not supported by pycnn (its ops return a new "
                         f"tensor), got inplace={inplace!r}")


def relu(input, inplace=False):
    _not_inplace("relu", inplace)
    return P.relu(_tensor("relu", "input", input))


def leaky_relu(input, negative_slope=0.01, inplace=False):
    _not_inplace("leaky_relu", inplace)
    slope = _wrap("leaky_relu", shapes.number, negative_slope, "negative_slope")
    return P.leaky_relu(_tensor("leaky_relu", "input", input), slope)


def sigmoid(input):
    return P.sigmoid(_tensor("sigmoid", "input", input))


def tanh(input):
    return P.tanh(_tensor("tanh", "input", input))


def bias_relu(input, bias):
    """relu(input + bias[None, :, None, None]) in one pass."""
    _tensor("bias_relu", "input", input, 4)
    _tensor("bias_relu", "bias", bias, 1)
    if tuple(bias.shape) != (input.shape[1],):
        raise ValueError(f"bias_relu: bias must have shape ({input.shape[1]},), got "
                         f"{tuple(bias.shape)}")
    return P.bias_relu(input, bias)


def _dim(op, input, dim):
    _tensor(op, "input", input)
    if dim is None:
        raise ValueError(f"{op}: dim must be given (an int), got None")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or \
            not -input.dim() <= dim < input.dim():
        raise ValueError(f"{op}: dim must be an int in [{-input.dim()}, {input.dim() - 1}], "
                         f"got {dim!r}")
    return int(dim) % input.dim()


def softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    return P.softmax(input, _dim("softmax", input, dim))


def log_softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    return P.log_softmax(input, _dim("log_softmax", input, dim))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """The mean cross-entropy of logits (N, classes) against int64 class indices (N,).

    Only torch's defaults are supported (no weight, reduction='mean', no label smoothing).
    """
    op = "cross_entropy"
    unsupported = {"weight": (weight, None), "size_average": (size_average, None),
                   "reduce": (reduce, None), "reduction": (reduction, "mean"),
                   "label_smoothing": (label_smoothing, 0.0)}
    for name, (value, default) in unsupported.items():
        if value is not default and value != default:
            raise ValueError(f"{op}: {name}={value!r} is not supported by pycnn (only "
                             f"{name}={default!r})")
    _tensor(op, "input", input, 2)
    _tensor(op, "target", target, 1)
    if target.dtype != torch.int64:
        raise TypeError(f"{op}: target must hold int64 class indices, got {target.dtype}")
    if tuple(target.shape) != (input.shape[0],):
        raise ValueError(f"{op}: target must have shape ({input.shape[0]},) to match input "
                         f"{tuple(input.shape)}, got {tuple(target.shape)}")
    loss, _ = P.cross_entropy(input, target)
    return loss


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """As torch.nn.functional.batch_norm: in training the running statistics (if given)
    move toward the batch's, in place (the unbiased variance for running_var)."""
    op = "batch_norm"
    _tensor(op, "input", input, (2, 4))
    c = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(_tensor(op, name, t, 1).shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},), got {tuple(t.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var are needed when training=False")
    momentum = _wrap(op, shapes.number, momentum, "momentum", minimum=0.0, maximum=1.0)
    eps = _wrap(op, shapes.number, eps, "eps", minimum=0.0, open_min=True)
    y, _, _, new_mean, new_var = P.batch_norm(input, weight, bias, running_mean, running_var,
                                              bool(training), momentum, eps)
    if training:
        with torch.no_grad():
            if running_mean is not None:
                running_mean.copy_(new_mean)
            if running_var is not None:
                running_var.copy_(new_var)
    return y


def dropout(input, p=0.5, training=True, inplace=False):
    """As torch.nn.functional.dropout, with pycnn's counter-based mask; its seed is
    drawn from torch's default generator, so torch.manual_seed makes it repeatable."""
    _not_inplace("dropout", inplace)
    _tensor("dropout", "input", input)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return input
    seed = torch.randint(0, 2**32, (1,), dtype=torch.int64)
    y, _ = P.dropout(input, float(p), seed)
    return y
