"""pycnn.functional: the CNN ops, with autograd, in PyTorch's conventions.

Each op checks its arguments (naming the argument, what was expected and what
came), then runs a ``Function`` whose forward and backward call the backend of
the tensors' device (``self.backend``: the NumPy reference or our CUDA
kernels). No op knows which backend it runs on.

Output size per spatial dimension (cuDNN and PyTorch): ``floor((W + 2P -
D(F-1) - 1)/S) + 1``. For W=10, F=3, P=0, S=2 the unrounded value is 4.5, so
the output has 4 columns (5 with ``ceil_mode=True`` in a pool).
"""
from __future__ import annotations

import numbers

import numpy as np

from pycnn import shapes
from pycnn.backends import get_backend
from pycnn.random import next_seed
from pycnn.tensor import Function, Tensor, array_module, is_float_dtype, move_array

__all__ = [
    "conv2d", "conv2d_relu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "prelu", "maxout", "linear",
    "flatten",
    "softmax", "log_softmax", "cross_entropy", "mse_loss", "dropout", "batch_norm",
]


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #

def _check_tensor(x, name: str, op: str, ndim=None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a pycnn Tensor, got {type(x).__name__}")
    if not is_float_dtype(x.dtype):
        raise TypeError(f"{op}: {name} must be a floating tensor (float32 or float64), "
                        f"got dtype {x.dtype}")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        want = " or ".join(f"{n}-D" for n in (ndim if isinstance(ndim, tuple) else (ndim,)))
        raise ValueError(f"{op}: {name} must be {want}, got shape {x.shape}")
    return x


def _check_like(op: str, ref_name: str, ref: Tensor, **others) -> None:
    """Every tensor in ``others`` must share ``ref``'s device and dtype."""
    for name, t in others.items():
        if t is None:
            continue
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} is on device {t.device!r} but {ref_name} is on "
                             f"{ref.device!r}")
        if t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")


def _dim(dim: int, ndim: int, op: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim must be in [{-ndim}, {ndim - 1}] for a {ndim}-D input, got {dim}")
    return dim % ndim


# --------------------------------------------------------------------------- #
# Convolution
# --------------------------------------------------------------------------- #

class Conv2d(Function):
    name = "conv2d"

    def forward(self, x, w, b, *, stride, padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.args = (stride, padding, dilation, groups)
        return self.backend.conv2d_fwd(x, w, b, stride, padding, dilation, groups)

    def backward(self, dy):
        B, (x, w) = self.backend, (self.x, self.w)
        dx = B.conv2d_bwd_data(dy, w, x.shape, *self.args) if self.needs_input_grad[0] else None
        dw = B.conv2d_bwd_filter(x, dy, w.shape, *self.args) if self.needs_input_grad[1] else None
        db = B.conv2d_bwd_bias(dy) if self.has_bias and self.needs_input_grad[2] else None
        return dx, dw, db


def _conv2d_args(op, x, w, b, stride, padding, dilation, groups):
    """Check the arguments of a convolution; returns (stride, padding4, dilation, groups)
    as plain ints."""
    _check_tensor(x, "x (input)", op, 4)
    _check_tensor(w, "w (weight)", op, 4)
    _check_like(op, "x", x, w=w)
    if b is not None:
        _check_tensor(b, "b (bias)", op, 1)
        _check_like(op, "x", x, b=b)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    if c == 0 or k == 0 or r == 0 or s == 0:
        raise ValueError(f"{op}: expected at least one input channel, one output channel and a "
                         f"filter of at least 1x1, got x of shape {x.shape} and w of shape {w.shape}")
    if c % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the input channels C={c}")
    if k % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the output channels K={k} "
                         f"(w.shape[0])")
    if cg * groups != c:
        raise ValueError(f"{op}: channel mismatch: x has C={c} channels, but w of shape {w.shape} "
                         f"with groups={groups} expects C = {cg}*{groups} = {cg * groups}")
    if b is not None and b.shape != (k,):
        raise ValueError(f"{op}: b (bias) must have shape ({k},), got {b.shape}")
    stride = shapes.pair(stride, f"{op}: stride")
    dilation = shapes.pair(dilation, f"{op}: dilation")
    try:
        padding = shapes.conv_padding(padding, (r, s), dilation, stride)
        shapes.conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)  # raises if < 1
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{op}: {exc}") from None
    return stride, padding, dilation, groups


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D convolution (cross-correlation, as in every framework) of NCHW ``x``
    with ``w`` of shape ``(K, C/groups, R, S)``; ``padding`` is an int, a pair,
    ``'valid'`` or ``'same'``. ``groups == C`` is a depthwise convolution."""
    stride, padding, dilation, groups = _conv2d_args("conv2d", x, w, b, stride, padding, dilation, groups)
    return Conv2d.apply(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)


class Conv2dReLU(Conv2d):
    name = "conv2d_relu"

    def forward(self, x, w, b, *, stride, padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.args = (stride, padding, dilation, groups)
        self.y = self.backend.conv2d_bias_relu_fwd(x, w, b, stride, padding, dilation, groups)
        return self.y

    def backward(self, dy):
        return super().backward(self.backend.relu_bwd(dy, self.y))


def conv2d_relu(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """``relu(conv2d(x, w, b, ...))`` as one op: on the GPU the bias and the ReLU
    are applied in the convolution kernel's epilogue, saving a pass over y."""
    stride, padding, dilation, groups = _conv2d_args("conv2d_relu", x, w, b, stride, padding,
                                                     dilation, groups)
    return Conv2dReLU.apply(x, w, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups)


# --------------------------------------------------------------------------- #
# Pooling
# --------------------------------------------------------------------------- #

def _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    _check_tensor(x, "x (input)", op, 4)
    return shapes.pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)


class MaxPool2d(Function):
    name = "max_pool2d"

    def forward(self, x, **params):
        self.x_shape, self.params = x.shape, params
        y, self.indices = self.backend.max_pool2d_fwd(x, **params)
        return y

    def backward(self, dy):
        p = self.params   # the window geometry lets the CUDA backward gather instead of scatter
        return (self.backend.max_pool2d_bwd(dy, self.indices, self.x_shape, p["kernel_size"],
                                            p["stride"], p["padding"], p["dilation"]),)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling; padding counts as -inf. With ``return_indices`` also returns
    the int64 position (h*W + w) of each maximum within its (n, c) plane."""
    kernel, stride, padding, dilation = _pool_args("max_pool2d", x, kernel_size, stride,
                                                   padding, dilation, ceil_mode)
    out = MaxPool2d.apply(x, kernel_size=kernel, stride=stride, padding=padding,
                          dilation=dilation, ceil_mode=bool(ceil_mode))
    if not return_indices:
        return out
    if out._ctx is not None:
        indices = out._ctx.indices
    else:  # no graph was recorded (no_grad): ask the backend again for the indices
        indices = get_backend(x.device).max_pool2d_fwd(x.data, kernel, stride, padding,
                                                       dilation, bool(ceil_mode))[1]
    return out, Tensor(indices)


class AvgPool2d(Function):
    name = "avg_pool2d"

    def forward(self, x, **params):
        self.x_shape, self.params = x.shape, params
        return self.backend.avg_pool2d_fwd(x, **params)

    def backward(self, dy):
        return (self.backend.avg_pool2d_bwd(dy, self.x_shape, **self.params),)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling; ``count_include_pad`` divides by the window size
    including padding (PyTorch's default), else by the real elements."""
    kernel, stride, padding, _ = _pool_args("avg_pool2d", x, kernel_size, stride, padding, 1,
                                            ceil_mode)
    return AvgPool2d.apply(x, kernel_size=kernel, stride=stride, padding=padding,
                           ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))


class AdaptiveAvgPool2d(Function):
    name = "adaptive_avg_pool2d"

    def forward(self, x, output_size):
        self.x_shape = x.shape
        return self.backend.adaptive_avg_pool2d_fwd(x, output_size)

    def backward(self, dy):
        return self.backend.adaptive_avg_pool2d_bwd(dy, self.x_shape), None


def adaptive_avg_pool2d(x, output_size) -> Tensor:
    """Average pooling to a fixed output size; ``output_size=1`` is global average pooling."""
    _check_tensor(x, "x (input)", "adaptive_avg_pool2d", 4)
    if 0 in x.shape[1:]:
        raise ValueError(f"adaptive_avg_pool2d: x (input) must have non-zero C, H and W, got "
                         f"shape {x.shape}")
    out = shapes.pair(output_size, "adaptive_avg_pool2d: output_size")
    return AdaptiveAvgPool2d.apply(x, out)


# --------------------------------------------------------------------------- #
# Activations
# --------------------------------------------------------------------------- #

class ReLU(Function):
    name = "relu"

    def forward(self, x):
        self.y = self.backend.relu_fwd(x)
        return self.y

    def backward(self, dy):
        return (self.backend.relu_bwd(dy, self.y),)


class LeakyReLU(Function):
    name = "leaky_relu"

    def forward(self, x, negative_slope):
        self.x, self.slope = x, negative_slope
        return self.backend.leaky_relu_fwd(x, negative_slope)

    def backward(self, dy):
        return self.backend.leaky_relu_bwd(dy, self.x, self.slope), None


class Sigmoid(Function):
    name = "sigmoid"

    def forward(self, x):
        self.y = self.backend.sigmoid_fwd(x)
        return self.y

    def backward(self, dy):
        return (self.backend.sigmoid_bwd(dy, self.y),)


class Tanh(Function):
    name = "tanh"

    def forward(self, x):
        self.y = self.backend.tanh_fwd(x)
        return self.y

    def backward(self, dy):
        return (self.backend.tanh_bwd(dy, self.y),)


def relu(x) -> Tensor:
    return ReLU.apply(_check_tensor(x, "x (input)", "relu"))


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    _check_tensor(x, "x (input)", "leaky_relu")
    slope = shapes.number(negative_slope, "leaky_relu: negative_slope")
    return LeakyReLU.apply(x, slope)


def sigmoid(x) -> Tensor:
    return Sigmoid.apply(_check_tensor(x, "x (input)", "sigmoid"))


def tanh(x) -> Tensor:
    return Tanh.apply(_check_tensor(x, "x (input)", "tanh"))


# --------------------------------------------------------------------------- #
# Linear and shape ops
# --------------------------------------------------------------------------- #

class Linear(Function):
    name = "linear"

    def forward(self, x, w, b):
        self.x, self.w, self.has_bias = x, w, b is not None
        y = x @ w.T
        return y + b if b is not None else y

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])
        dx = (g @ w) if self.needs_input_grad[0] else None
        dw = g2.T @ x.reshape(-1, x.shape[-1]) if self.needs_input_grad[1] else None
        db = g2.sum(axis=0) if self.has_bias and self.needs_input_grad[2] else None
        return dx, dw, db


def linear(x, w, b=None) -> Tensor:
    """``x @ w.T + b`` with ``w`` of shape ``(out_features, in_features)``."""
    op = "linear"
    _check_tensor(x, "x (input)", op)
    _check_tensor(w, "w (weight)", op, 2)
    if b is not None:
        _check_tensor(b, "b (bias)", op, 1)
    _check_like(op, "x", x, w=w, b=b)
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[-1] if x.ndim else 0} input features "
                         f"(shape {x.shape}) but w of shape {w.shape} expects {w.shape[1]}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{op}: b (bias) must have shape ({w.shape[0]},), got {b.shape}")
    return Linear.apply(x, w, b)


def flatten(x, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)


# ELU, GELU and PReLU are elementwise NumPy/CuPy expressions (the same code on both
# devices, through the array module), not backend entries: no kernel of ours runs them.

class ELU(Function):
    name = "elu"

    def forward(self, x, alpha):
        xp = array_module(x)
        self.x, self.alpha = x, alpha
        self.neg = alpha * xp.expm1(xp.minimum(x, 0))         # alpha (e^x - 1) for x <= 0
        return xp.where(x > 0, x, self.neg).astype(x.dtype, copy=False)

    def backward(self, dy):
        xp = array_module(dy)
        # d/dx: 1 for x > 0, alpha e^x = neg + alpha for x <= 0
        return xp.where(self.x > 0, dy, dy * (self.neg + self.alpha)).astype(dy.dtype), None


def _erf(xp, a):
    if xp is np:
        try:
            from scipy.special import erf
        except ImportError:                       # scipy is optional: math.erf per element
            import math
            erf = np.frompyfunc(math.erf, 1, 1)
        return np.asarray(erf(a), dtype=a.dtype)
    from cupyx.scipy.special import erf
    return erf(a)


class GELU(Function):
    name = "gelu"

    def forward(self, x, approximate):
        xp = array_module(x)
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            # 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
            self.t = xp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))
            return (0.5 * x * (1 + self.t)).astype(x.dtype, copy=False)
        self.cdf = 0.5 * (1 + _erf(xp, x / np.sqrt(2)))          # Phi(x)
        return (x * self.cdf).astype(x.dtype, copy=False)

    def backward(self, dy):
        xp = array_module(dy)
        x = self.x
        if self.approximate == "tanh":
            du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x ** 2)
            d = 0.5 * (1 + self.t) + 0.5 * x * (1 - self.t ** 2) * du
        else:
            d = self.cdf + x * xp.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)   # Phi + x phi
        return (dy * d).astype(dy.dtype, copy=False), None


class PReLU(Function):
    name = "prelu"

    def forward(self, x, weight):
        xp = array_module(x)
        self.x = x
        # one slope for all, or one per channel (dim 1), as torch.nn.functional.prelu
        self.w = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight
        return xp.where(x > 0, x, self.w * x).astype(x.dtype, copy=False)

    def backward(self, dy):
        xp = array_module(dy)
        positive = self.x > 0
        dx = xp.where(positive, dy, dy * self.w) if self.needs_input_grad[0] else None
        dw = None
        if self.needs_input_grad[1]:
            g = xp.where(positive, 0, dy * self.x)
            if self.w.size > 1:
                dw = g.sum(axis=tuple(a for a in range(g.ndim) if a != 1))
            else:
                dw = g.sum().reshape(self.w.shape)
        return dx, dw


def elu(x, alpha: float = 1.0) -> Tensor:
    _check_tensor(x, "x (input)", "elu")
    return ELU.apply(x, shapes.number(alpha, "elu: alpha"))


def gelu(x, approximate: str = "none") -> Tensor:
    _check_tensor(x, "x (input)", "gelu")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate)


def prelu(x, weight) -> Tensor:
    """max(0, x) + weight * min(0, x); ``weight`` holds one slope, or one per channel."""
    _check_tensor(x, "x (input)", "prelu")
    _check_tensor(weight, "weight", "prelu", ndim=1)
    _check_like("prelu", "x (input)", x, weight=weight)
    if weight.shape[0] != 1 and (x.ndim < 2 or weight.shape[0] != x.shape[1]):
        raise ValueError(f"prelu: weight has {weight.shape[0]} slopes; expected 1 or one per "
                         f"channel of x (dim 1 of shape {x.shape})")
    return PReLU.apply(x, weight)


def maxout(x, pool_size: int, dim: int = 1) -> Tensor:
    """Goodfellow et al.'s maxout: split dim ``dim`` (C entries) into C / pool_size groups
    of ``pool_size`` consecutive entries and keep each group's largest. Composed of a
    reshape and :meth:`Tensor.max`, so its backward (the gradient to each group's chosen
    entry) runs on any device."""
    _check_tensor(x, "x (input)", "maxout")
    d = _dim(dim, x.ndim, "maxout")
    k = shapes.positive_int(pool_size, "maxout: pool_size")
    c = x.shape[d]
    if c % k:
        raise ValueError(f"maxout: dim {d} of x has {c} entries (shape {x.shape}), not a "
                         f"multiple of pool_size {k}")
    grouped = x.reshape(*x.shape[:d], c // k, k, *x.shape[d + 1:])
    return grouped.max(dim=d + 1).values


# --------------------------------------------------------------------------- #
# Softmax and losses
# --------------------------------------------------------------------------- #

class Softmax(Function):
    name = "softmax"

    def forward(self, x, dim):
        self.dim = dim
        self.y = self.backend.softmax_fwd(x, dim)
        return self.y

    def backward(self, dy):
        return self.backend.softmax_bwd(dy, self.y, self.dim), None


class LogSoftmax(Function):
    name = "log_softmax"

    def forward(self, x, dim):
        self.dim = dim
        self.y = self.backend.log_softmax_fwd(x, dim)
        return self.y

    def backward(self, dy):
        return self.backend.log_softmax_bwd(dy, self.y, self.dim), None


def softmax(x, dim: int = -1) -> Tensor:
    _check_tensor(x, "x (input)", "softmax")
    return Softmax.apply(x, _softmax_dim(x, dim, "softmax"))


def log_softmax(x, dim: int = -1) -> Tensor:
    _check_tensor(x, "x (input)", "log_softmax")
    return LogSoftmax.apply(x, _softmax_dim(x, dim, "log_softmax"))


def _softmax_dim(x, dim, op) -> int:
    dim = _dim(dim, x.ndim, op)
    if x.shape[dim] == 0:
        raise ValueError(f"{op}: dim {dim} of x (input) has size 0 (shape {x.shape}): "
                         "nothing to normalise")
    return dim


class CrossEntropy(Function):
    name = "cross_entropy"

    def forward(self, logits, target):
        self.target = target
        loss, self.log_probs = self.backend.cross_entropy_fwd(logits, target)
        return loss

    def backward(self, dloss):
        return self.backend.cross_entropy_bwd(dloss, self.log_probs, self.target), None


def cross_entropy(logits, target) -> Tensor:
    """Mean negative log-likelihood of integer class ``target`` under softmax(logits).

    ``logits`` is (N, classes); ``target`` is (N,) integers in [0, classes)
    (a list, a NumPy/CuPy array or a Tensor; it follows the logits' device).
    """
    op = "cross_entropy"
    _check_tensor(logits, "logits", op, 2)
    t = target.data if isinstance(target, Tensor) else target
    xp = array_module(logits.data)
    if array_module(t) is np and not isinstance(t, np.ndarray):
        t = np.asarray(t)                      # a list of class indices
    if array_module(t) is not xp:
        t = move_array(t, logits.device)       # targets follow the logits' device
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {t.dtype}")
    n, classes = logits.shape
    if t.shape != (n,):
        raise ValueError(f"{op}: target must have shape ({n},) to match logits {logits.shape}, "
                         f"got {tuple(t.shape)}")
    # the backend checks that the values lie in [0, classes), where the data is
    return CrossEntropy.apply(logits, t.astype(xp.int64, copy=False))


class MSELoss(Function):
    name = "mse_loss"

    def forward(self, a, b):
        self.diff = a - b
        if self.diff.size == 0:      # the mean of nothing is NaN, as in PyTorch
            return array_module(a).asarray(np.nan, dtype=a.dtype)
        return (self.diff * self.diff).mean()

    def backward(self, g):
        grad = self.diff * (2.0 / max(self.diff.size, 1)) * g
        return grad, -grad


def mse_loss(a, b) -> Tensor:
    """Mean of squared differences; the shapes must match (nothing broadcasts)."""
    _check_tensor(a, "input", "mse_loss")
    _check_tensor(b, "target", "mse_loss")
    _check_like("mse_loss", "input", a, target=b)
    if a.shape != b.shape:
        raise ValueError(f"mse_loss: input and target must have the same shape, got {a.shape} "
                         f"and {b.shape}")
    return MSELoss.apply(a, b)


# --------------------------------------------------------------------------- #
# Dropout and batch norm
# --------------------------------------------------------------------------- #

class Dropout(Function):
    name = "dropout"

    def forward(self, x, p, seed):
        self.p = p
        y, self.mask = self.backend.dropout_fwd(x, p, seed)
        return y

    def backward(self, dy):
        return self.backend.dropout_bwd(dy, self.mask, self.p), None, None


def dropout(x, p: float = 0.5, training: bool = True, seed: int | None = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).

    The mask comes from a counter-based generator: the same ``seed`` gives the
    same mask on the CPU and the GPU. Without a seed one is drawn from
    ``pycnn.manual_seed``'s generator.
    """
    _check_tensor(x, "x (input)", "dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"dropout: seed must be an int or None, got {seed!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, float(p), next_seed() if seed is None else int(seed))


class BatchNorm(Function):
    name = "batch_norm"

    def forward(self, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        self.x, self.weight, self.training = x, weight, training
        self.has_weight, self.has_bias = weight is not None, bias is not None
        if training and x.size == 0:
            # An empty batch, as PyTorch takes it: an empty output, the running statistics
            # untouched, zero gradients for weight and bias (no backend has statistics of
            # nothing to compute)
            xp = array_module(x)
            self.mean = xp.zeros(x.shape[1], dtype=x.dtype)
            self.invstd = xp.ones(x.shape[1], dtype=x.dtype)
            return xp.empty_like(x)
        y, self.mean, self.invstd = self.backend.batch_norm_fwd(
            x, weight, bias, running_mean, running_var, training, momentum, eps)
        return y

    def backward(self, dy):
        if self.training and self.x.size == 0:
            xp = array_module(dy)
            dx, dw, db = xp.empty_like(dy), xp.zeros_like(self.mean), xp.zeros_like(self.mean)
        else:
            dx, dw, db = self.backend.batch_norm_bwd(dy, self.x, self.weight, self.mean,
                                                     self.invstd, self.training)
        return (dx if self.needs_input_grad[0] else None,
                dw if self.has_weight else None,
                db if self.has_bias else None)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5) -> Tensor:
    """Batch normalisation over (N, C) or (N, C, H, W), per channel, PyTorch's semantics:
    in training, batch statistics normalise and the running statistics (if given)
    move by ``momentum`` toward them (the unbiased variance for running_var)."""
    op = "batch_norm"
    _check_tensor(x, "x (input)", op, (2, 4))
    c = x.shape[1]
    if c == 0:
        raise ValueError(f"{op}: x (input) must have at least one channel, got shape {x.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_tensor(t, name, op, 1)
            _check_like(op, "x", x, **{name: t})
            if t.shape != (c,):
                raise ValueError(f"{op}: {name} must have shape ({c},), got {t.shape}")
    stats = []
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None:
            r = r.data if isinstance(r, Tensor) else r
            if not hasattr(r, "shape") or not hasattr(r, "dtype"):
                raise TypeError(f"{op}: {name} must be a {x.dtype} array (or Tensor) on "
                                f"{x.device!r}, got {type(r).__name__}")
            if tuple(r.shape) != (c,):
                raise ValueError(f"{op}: {name} must have shape ({c},), got {tuple(r.shape)}")
            if array_module(r) is not array_module(x.data) or r.dtype != x.dtype:
                where = "cpu" if array_module(r) is np else "cuda"
                raise TypeError(f"{op}: {name} must be a {x.dtype} array on {x.device!r}, got "
                                f"{r.dtype} on {where!r}")
        stats.append(r)
    if not training and (stats[0] is None or stats[1] is None):
        raise ValueError(f"{op}: running_mean and running_var are needed when training=False")
    if training and x.size and x.size // c <= 1:     # N=0 is an empty batch, allowed
        raise ValueError(f"{op}: expected more than one value per channel when training, got "
                         f"input shape {x.shape}")
    momentum = shapes.number(momentum, f"{op}: momentum", minimum=0.0, maximum=1.0)
    eps = shapes.number(eps, f"{op}: eps", minimum=0.0, open_min=True)
    return BatchNorm.apply(x, weight, bias, running_mean=stats[0], running_var=stats[1],
                           training=bool(training), momentum=momentum, eps=eps)
