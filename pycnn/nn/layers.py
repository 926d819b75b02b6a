"""Layers: Modules that hold their parameters and call one op of pycnn.functional.

Constructor arguments, defaults, attribute names and default initialisation
follow torch.nn, so that ``state_dict`` keys and parameter counts match it.
"""
from __future__ import annotations

import math
import numbers
from collections import OrderedDict

import numpy as np

import pycnn.functional as F
from pycnn import shapes
from pycnn.nn import init
from pycnn.nn.module import Module, Parameter


def _empty_param(*shape) -> Parameter:
    return Parameter(np.zeros(shape, dtype=np.float32))


def _add_weight_and_bias(module, weight_shape, bias: bool) -> None:
    """Register ``weight`` (zeros of ``weight_shape``) and ``bias`` (``weight_shape[0]`` zeros,
    or None); ``reset_parameters`` fills them."""
    module.weight = _empty_param(*weight_shape)
    if bias:
        module.bias = _empty_param(weight_shape[0])
    else:
        module.register_parameter("bias", None)


def _reset_weight_and_bias(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default for Conv2d and Linear.

    weight: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    bias:   U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = math.prod(weight.shape[1:])
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


# ---------------------------------------------------------------------- learnable layers
class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        self.in_channels = shapes.positive_int(in_channels, "in_channels")
        self.out_channels = shapes.positive_int(out_channels, "out_channels")
        self.groups = shapes.positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups, got {groups}")
        self.kernel_size = shapes.pair(kernel_size, "kernel_size")
        self.stride = shapes.pair(stride, "stride")
        self.dilation = shapes.pair(dilation, "dilation")
        if isinstance(padding, str):
            shapes.conv_padding(padding, self.kernel_size, self.dilation, self.stride)  # validates
            self.padding = padding
        else:
            self.padding = shapes.pair(padding, "padding", minimum=0)
        _add_weight_and_bias(self, (self.out_channels, self.in_channels // self.groups,
                                    *self.kernel_size), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) \
                else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvReLU2d(Conv2d):
    """A Conv2d followed by a ReLU, run as one op (``F.conv2d_relu``): on the GPU the
    bias and the ReLU are applied in the convolution kernel's epilogue. Same
    parameters and state_dict keys as Conv2d; ``fuse_conv_relu`` makes them from
    the Conv2d -> ReLU pairs of a model."""

    def forward(self, x):
        return F.conv2d_relu(x, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = shapes.positive_int(in_features, "in_features")
        self.out_features = shapes.positive_int(out_features, "out_features")
        _add_weight_and_bias(self, (self.out_features, self.in_features), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel.

    Training mode normalises with the batch statistics and, when
    ``track_running_stats``, updates ``running_mean``/``running_var`` in place
    (``r = (1 - momentum) * r + momentum * stat``, unbiased variance) and
    counts ``num_batches_tracked``; ``momentum=None`` gives the cumulative
    average (factor 1 / num_batches_tracked). Eval mode uses the running
    statistics.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features = shapes.positive_int(num_features, "num_features")
        self.eps = shapes.number(eps, "eps", minimum=0.0, open_min=True)
        self.momentum = (None if momentum is None
                         else shapes.number(momentum, "momentum", minimum=0.0, maximum=1.0))
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        # In place, so that the buffers stay on the device the module was moved to.
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"input: expected a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"input: expected {self.num_features} channels, got shape {tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1  # in place on its device: no host round trip per step
            if self.momentum is None:  # the cumulative average needs the count on the host
                momentum = 1.0 / int(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


# ---------------------------------------------------------------------- pools
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = shapes.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else shapes.pair(stride, "stride")
        self.padding = shapes.pair(padding, "padding", minimum=0)
        self.dilation = shapes.pair(dilation, "dilation")
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size = shapes.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else shapes.pair(stride, "stride")
        self.padding = shapes.pair(padding, "padding", minimum=0)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = shapes.pair(output_size, "output_size")

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ---------------------------------------------------------------------- elementwise
class ReLU(Module):
    def __init__(self, inplace: bool = False):
        # ``inplace`` is accepted for PyTorch compatibility; the op is never in place.
        super().__init__()

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = shapes.number(negative_slope, "negative_slope")

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = shapes.number(alpha, "alpha")

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class PReLU(Module):
    """A learned negative slope: one (``num_parameters=1``) or one per channel, each
    starting at ``init`` (torch.nn.PReLU; its ``weight`` is the slopes)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        n = shapes.positive_int(num_parameters, "num_parameters")
        self.init_value = shapes.number(init, "init")
        self.weight = _empty_param(n)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.weight.data[...] = self.init_value

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.weight.shape[0]}"


class Maxout(Module):
    """The largest of each group of ``pool_size`` consecutive channels (dim ``dim``): C
    channels in, C / pool_size out (Goodfellow et al., 2013). Put it after a Conv2d or
    Linear with pool_size times the units wanted."""

    def __init__(self, pool_size: int, dim: int = 1):
        super().__init__()
        self.pool_size = shapes.positive_int(pool_size, "pool_size")
        self.dim = dim

    def forward(self, x):
        return F.maxout(x, self.pool_size, self.dim)

    def extra_repr(self):
        return f"pool_size={self.pool_size}, dim={self.dim}"


class Softmax(Module):
    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode (scaling by 1/(1-p)).

    Identity in eval mode. Every training-mode call draws a fresh mask seed
    from pycnn's generator, so ``pycnn.manual_seed`` (or ``nn.init.manual_seed``,
    the same generator) makes the masks reproducible on both devices.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)  # draws the mask seed itself

    def extra_repr(self):
        return f"p={self.p}"


# ---------------------------------------------------------------------- losses
class CrossEntropyLoss(Module):
    """Mean cross entropy of logits (N, classes) against class indices (N,)."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target)


class MSELoss(Module):
    def forward(self, input, target):
        return F.mse_loss(input, target)


# ---------------------------------------------------------------------- containers
class _Container(Module):
    """Children kept in order: length, iteration, int indexing and append ("0", "1", ...)."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _child_at(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int or a slice, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: {index} is out of range for a {type(self).__name__} "
                             f"of length {len(self)}")
        return list(self._modules.values())[index]

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class Sequential(_Container):
    """Modules applied in order; children are named "0", "1", ... unless an OrderedDict is given."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} must be a Module, "
                                    f"got {type(m).__name__}")
                self.add_module(str(i), m)

    def __getitem__(self, index):
        if isinstance(index, slice):  # keeps the children's names, as torch does
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return self._child_at(index)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(_Container):
    """A list of Modules whose parameters are registered ("0", "1", ...); no forward."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def __getitem__(self, index):
        if isinstance(index, slice):  # a ModuleList again, numbered from "0", as torch does
            return ModuleList(list(self)[index])
        return self._child_at(index)


def fuse_conv_relu(model: Module) -> Module:
    """Fuse, in place, every Conv2d that a ReLU directly follows inside a Sequential.

    The Conv2d becomes a ConvReLU2d holding the very same Parameters (an optimizer
    made before keeps working) and the ReLU becomes an Identity, so the module
    names and state_dict keys do not change (as torch.ao.quantization.fuse_modules
    does). Returns ``model``.
    """
    for seq in [m for m in model.modules() if isinstance(m, Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, act = seq._modules[first], seq._modules[second]
            if type(conv) is Conv2d and type(act) is ReLU:
                fused = ConvReLU2d.__new__(ConvReLU2d)
                fused.__dict__.update(conv.__dict__)      # the same parameters and settings
                seq._modules[first], seq._modules[second] = fused, Identity()
    return model
