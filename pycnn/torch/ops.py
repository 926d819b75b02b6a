"""pycnn's kernels registered as PyTorch operators: ``torch.ops.pycnn.*``.

Each forward pass and each backward pass of the flat backend interface
(``pycnn/backends/__init__.py``) is one ``torch.library.custom_op``; the forward
ops get ``register_autograd`` whose backward calls the backward ops, so a
gradient runs pycnn's ``*_bwd_*`` functions, never PyTorch's. Every op has a
``register_fake`` (shapes only), so ``torch.compile(fullgraph=True)`` and
``torch.export`` trace through them; the backward ops are custom ops for the
same reason (a backward that is traced may not touch data).

These ops take arguments already normalised the way the backend takes them
(pairs; a convolution's padding as (top, bottom, left, right)); the functions
of ``pycnn.torch.functional`` normalise ``torch.nn.functional``'s arguments first.

Where a tensor's data goes:

* CPU tensors run the NumPy reference on ``tensor.numpy()`` views (no copy; any
  strides), float32 or float64, and the results come back through
  ``torch.from_numpy`` (no copy).
* CUDA tensors run pycnn's CUDA kernels through DLPack (no copy) on the current
  torch stream. They must be float32 and contiguous. This path has not yet run
  on a GPU.

Only functional ops are registered (custom ops with autograd may not mutate
their inputs): batch norm returns the updated running statistics and
``pycnn.torch.functional.batch_norm`` copies them into the buffers.
"""
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from pycnn import shapes
from pycnn.backends import numpy_ref

_FLOATS = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------- plumbing

def _check(op: str, name: str, t, dtypes=_FLOATS, device=None):
    """Raise naming ``op`` and ``name`` unless ``t`` can reach a backend."""
    if not isinstance(t, Tensor):
        raise TypeError(f"pycnn::{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"pycnn::{op}: {name} must be a dense (strided) tensor, got layout "
                        f"{t.layout}")
    if device is not None and t.device != device:
        raise ValueError(f"pycnn::{op}: {name} is on {t.device}, but the input is on {device}")
    if t.device.type not in ("cpu", "cuda"):
        raise TypeError(f"pycnn::{op}: {name} is on {t.device}; pycnn runs on cpu and cuda only")
    if t.device.type == "cuda":
        if dtypes == _FLOATS:
            dtypes = (torch.float32,)
        if not t.is_contiguous():
            raise ValueError(f"pycnn::{op}: {name} must be contiguous on cuda (pycnn's kernels "
                             f"take NCHW without strides), got strides {t.stride()}; call "
                             f".contiguous() first")
    if t.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        extra = " (pycnn's CUDA kernels are float32)" if t.device.type == "cuda" else ""
        raise TypeError(f"pycnn::{op}: {name} must be {names} on {t.device.type}, got "
                        f"{str(t.dtype).replace('torch.', '')}{extra}")


class _Call:
    """One call of a backend: the backend module, and array views of the tensors."""

    def __init__(self, op, device):
        self.op, self.device = op, device
        self.inputs = []

    def array(self, name, t, dtypes=_FLOATS):
        if t is None:
            return None
        _check(self.op, name, t, dtypes, self.device)
        t = t.detach()
        if self.device.type == "cpu":
            a = t.resolve_conj().resolve_neg().numpy()     # a view: no copy
        else:
            import cupy
            a = cupy.from_dlpack(t)                         # a view: no copy
        self.inputs.append(a)
        return a

    def tensor(self, a):
        """A backend result as a contiguous torch tensor that aliases no input."""
        if self.device.type == "cpu":
            a = np.asarray(a)
            if not a.flags.c_contiguous or any(np.may_share_memory(a, i) for i in self.inputs):
                a = a.copy(order="C")
            return torch.from_numpy(a)
        import cupy
        if not a.flags.c_contiguous or any(cupy.may_share_memory(a, i) for i in self.inputs):
            a = cupy.ascontiguousarray(a).copy()
        return torch.from_dlpack(a)


@contextmanager
def _backend(op: str, like: Tensor):
    """The backend for ``like``'s device; CUDA work queues on torch's current stream."""
    call = _Call(op, like.device)
    if like.device.type == "cpu":
        call.B = numpy_ref
        yield call
        return
    import cupy                                       # the CUDA path: not yet run on a GPU
    from pycnn.backends import cuda as cuda_backend
    call.B = cuda_backend
    stream = torch.cuda.current_stream(like.device)
    with cupy.cuda.Device(like.device.index), cupy.cuda.ExternalStream(stream.cuda_stream,
                                                                       like.device.index):
        yield call


def _pair(v) -> tuple:
    return tuple(int(i) for i in v)


def _empty(like: Tensor, shape, dtype=None) -> Tensor:
    return like.new_empty(tuple(shape), dtype=dtype)


def _op(name: str):
    return torch.library.custom_op(f"pycnn::{name}", mutates_args=())


# ----------------------------------------------------------------------------- convolution

@_op("conv2d")
def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    with _backend("conv2d", x) as c:
        y = c.B.conv2d_fwd(c.array("input", x), c.array("weight", weight), c.array("bias", bias),
                           _pair(stride), _pair(padding), _pair(dilation), int(groups))
        return c.tensor(y)


@_op("conv2d_relu")
def conv2d_relu(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    """relu(conv2d(...)) in one pass (on the GPU: bias and ReLU in the kernel's epilogue)."""
    with _backend("conv2d_relu", x) as c:
        y = c.B.conv2d_bias_relu_fwd(c.array("input", x), c.array("weight", weight),
                                     c.array("bias", bias), _pair(stride), _pair(padding),
                                     _pair(dilation), int(groups))
        return c.tensor(y)


@_op("conv2d_bwd_data")
def conv2d_bwd_data(grad: Tensor, weight: Tensor, x_shape: Sequence[int], stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    with _backend("conv2d_bwd_data", grad) as c:
        dx = c.B.conv2d_bwd_data(c.array("grad", grad), c.array("weight", weight),
                                 _pair(x_shape), _pair(stride), _pair(padding), _pair(dilation),
                                 int(groups))
        return c.tensor(dx)


@_op("conv2d_bwd_filter")
def conv2d_bwd_filter(x: Tensor, grad: Tensor, w_shape: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    with _backend("conv2d_bwd_filter", x) as c:
        dw = c.B.conv2d_bwd_filter(c.array("input", x), c.array("grad", grad), _pair(w_shape),
                                   _pair(stride), _pair(padding), _pair(dilation), int(groups))
        return c.tensor(dw)


@_op("conv2d_bwd_bias")
def conv2d_bwd_bias(grad: Tensor) -> Tensor:
    with _backend("conv2d_bwd_bias", grad) as c:
        return c.tensor(c.B.conv2d_bwd_bias(c.array("grad", grad)))


def _conv_out(x, weight, stride, padding, dilation):
    return shapes.conv2d_output_shape(x.shape, weight.shape, _pair(stride), _pair(padding),
                                      _pair(dilation))


@conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return _empty(x, _conv_out(x, weight, stride, padding, dilation))


@conv2d_relu.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return _empty(x, _conv_out(x, weight, stride, padding, dilation))


@conv2d_bwd_data.register_fake
def _(grad, weight, x_shape, stride, padding, dilation, groups):
    return _empty(grad, x_shape)


@conv2d_bwd_filter.register_fake
def _(x, grad, w_shape, stride, padding, dilation, groups):
    return _empty(x, w_shape)


@conv2d_bwd_bias.register_fake
def _(grad):
    return _empty(grad, (grad.shape[1],))


def _conv_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.args = (list(stride), list(padding), list(dilation), groups)
    ctx.x_shape, ctx.w_shape, ctx.has_bias = list(x.shape), list(weight.shape), bias is not None
    ctx.save_for_backward(x, weight, output)


def _conv_grads(ctx, grad):
    x, weight, _ = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = torch.ops.pycnn.conv2d_bwd_data(grad, weight, ctx.x_shape, *ctx.args) if need_x else None
    dw = torch.ops.pycnn.conv2d_bwd_filter(x, grad, ctx.w_shape, *ctx.args) if need_w else None
    db = torch.ops.pycnn.conv2d_bwd_bias(grad) if ctx.has_bias and need_b else None
    return dx, dw, db, None, None, None, None


def _conv_relu_grads(ctx, grad):
    y = ctx.saved_tensors[2]
    return _conv_grads(ctx, torch.ops.pycnn.relu_bwd(grad, y))


conv2d.register_autograd(_conv_grads, setup_context=_conv_setup)
conv2d_relu.register_autograd(_conv_relu_grads, setup_context=_conv_setup)


# ----------------------------------------------------------------------------- pooling

@_op("max_pool2d")
def max_pool2d(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int],
               ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """(y, indices): indices are int64 offsets h*W + w into each (n, c) plane, as PyTorch's."""
    with _backend("max_pool2d", x) as c:
        y, idx = c.B.max_pool2d_fwd(c.array("input", x), _pair(kernel_size), _pair(stride),
                                    _pair(padding), _pair(dilation), bool(ceil_mode))
        return c.tensor(y), c.tensor(idx)


@_op("max_pool2d_bwd")
def max_pool2d_bwd(grad: Tensor, indices: Tensor, x_shape: Sequence[int],
                   kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int]) -> Tensor:
    with _backend("max_pool2d_bwd", grad) as c:
        dx = c.B.max_pool2d_bwd(c.array("grad", grad), c.array("indices", indices, (torch.int64,)),
                                _pair(x_shape), _pair(kernel_size), _pair(stride), _pair(padding),
                                _pair(dilation))
        return c.tensor(dx)


@_op("avg_pool2d")
def avg_pool2d(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], ceil_mode: bool, count_include_pad: bool) -> Tensor:
    with _backend("avg_pool2d", x) as c:
        return c.tensor(c.B.avg_pool2d_fwd(c.array("input", x), _pair(kernel_size), _pair(stride),
                                           _pair(padding), bool(ceil_mode),
                                           bool(count_include_pad)))


@_op("avg_pool2d_bwd")
def avg_pool2d_bwd(grad: Tensor, x_shape: Sequence[int], kernel_size: Sequence[int],
                   stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                   count_include_pad: bool) -> Tensor:
    with _backend("avg_pool2d_bwd", grad) as c:
        return c.tensor(c.B.avg_pool2d_bwd(c.array("grad", grad), _pair(x_shape),
                                           _pair(kernel_size), _pair(stride), _pair(padding),
                                           bool(ceil_mode), bool(count_include_pad)))


@_op("adaptive_avg_pool2d")
def adaptive_avg_pool2d(x: Tensor, output_size: Sequence[int]) -> Tensor:
    with _backend("adaptive_avg_pool2d", x) as c:
        return c.tensor(c.B.adaptive_avg_pool2d_fwd(c.array("input", x), _pair(output_size)))


@_op("adaptive_avg_pool2d_bwd")
def adaptive_avg_pool2d_bwd(grad: Tensor, x_shape: Sequence[int]) -> Tensor:
    with _backend("adaptive_avg_pool2d_bwd", grad) as c:
        return c.tensor(c.B.adaptive_avg_pool2d_bwd(c.array("grad", grad), _pair(x_shape)))


def _pool_out(x, kernel_size, stride, padding, dilation, ceil_mode):
    return shapes.pool2d_output_shape(x.shape, _pair(kernel_size), _pair(stride), _pair(padding),
                                      _pair(dilation), bool(ceil_mode))


@max_pool2d.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode):
    out = _pool_out(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(x, out), _empty(x, out, torch.int64)


@max_pool2d_bwd.register_fake
def _(grad, indices, x_shape, kernel_size, stride, padding, dilation):
    return _empty(grad, x_shape)


@avg_pool2d.register_fake
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    return _empty(x, _pool_out(x, kernel_size, stride, padding, (1, 1), ceil_mode))


@avg_pool2d_bwd.register_fake
def _(grad, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    return _empty(grad, x_shape)


@adaptive_avg_pool2d.register_fake
def _(x, output_size):
    return _empty(x, (x.shape[0], x.shape[1], *_pair(output_size)))


@adaptive_avg_pool2d_bwd.register_fake
def _(grad, x_shape):
    return _empty(grad, x_shape)


def _max_pool_setup(ctx, inputs, output):
    x, kernel_size, stride, padding, dilation, _ = inputs
    ctx.x_shape = list(x.shape)
    ctx.args = (list(kernel_size), list(stride), list(padding), list(dilation))
    ctx.save_for_backward(output[1])


def _max_pool_grads(ctx, grad, _grad_indices):
    (indices,) = ctx.saved_tensors
    return (torch.ops.pycnn.max_pool2d_bwd(grad, indices, ctx.x_shape, *ctx.args),
            None, None, None, None, None)


def _avg_pool_setup(ctx, inputs, output):
    x, *args = inputs
    ctx.x_shape, ctx.args = list(x.shape), [list(a) if isinstance(a, (list, tuple)) else a
                                            for a in args]


def _avg_pool_grads(ctx, grad):
    return (torch.ops.pycnn.avg_pool2d_bwd(grad, ctx.x_shape, *ctx.args),
            None, None, None, None, None)


def _adaptive_setup(ctx, inputs, output):
    ctx.x_shape = list(inputs[0].shape)


def _adaptive_grads(ctx, grad):
    return torch.ops.pycnn.adaptive_avg_pool2d_bwd(grad, ctx.x_shape), None


max_pool2d.register_autograd(_max_pool_grads, setup_context=_max_pool_setup)
avg_pool2d.register_autograd(_avg_pool_grads, setup_context=_avg_pool_setup)
adaptive_avg_pool2d.register_autograd(_adaptive_grads, setup_context=_adaptive_setup)


# ----------------------------------------------------------------------------- activations

@_op("relu")
def relu(x: Tensor) -> Tensor:
    with _backend("relu", x) as c:
        return c.tensor(c.B.relu_fwd(c.array("input", x)))


@_op("relu_bwd")
def relu_bwd(grad: Tensor, y: Tensor) -> Tensor:
    with _backend("relu_bwd", grad) as c:
        return c.tensor(c.B.relu_bwd(c.array("grad", grad), c.array("output", y)))


@_op("leaky_relu")
def leaky_relu(x: Tensor, negative_slope: float) -> Tensor:
    with _backend("leaky_relu", x) as c:
        return c.tensor(c.B.leaky_relu_fwd(c.array("input", x), float(negative_slope)))


@_op("leaky_relu_bwd")
def leaky_relu_bwd(grad: Tensor, x: Tensor, negative_slope: float) -> Tensor:
    with _backend("leaky_relu_bwd", grad) as c:
        return c.tensor(c.B.leaky_relu_bwd(c.array("grad", grad), c.array("input", x),
                                           float(negative_slope)))


@_op("sigmoid")
def sigmoid(x: Tensor) -> Tensor:
    with _backend("sigmoid", x) as c:
        return c.tensor(c.B.sigmoid_fwd(c.array("input", x)))


@_op("sigmoid_bwd")
def sigmoid_bwd(grad: Tensor, y: Tensor) -> Tensor:
    with _backend("sigmoid_bwd", grad) as c:
        return c.tensor(c.B.sigmoid_bwd(c.array("grad", grad), c.array("output", y)))


@_op("tanh")
def tanh(x: Tensor) -> Tensor:
    with _backend("tanh", x) as c:
        return c.tensor(c.B.tanh_fwd(c.array("input", x)))


@_op("tanh_bwd")
def tanh_bwd(grad: Tensor, y: Tensor) -> Tensor:
    with _backend("tanh_bwd", grad) as c:
        return c.tensor(c.B.tanh_bwd(c.array("grad", grad), c.array("output", y)))


@_op("bias_relu")
def bias_relu(x: Tensor, bias: Tensor) -> Tensor:
    """relu(x + bias[None, :, None, None]) in one pass."""
    with _backend("bias_relu", x) as c:
        return c.tensor(c.B.bias_relu_fwd(c.array("input", x), c.array("bias", bias)))


for _fwd, _bwd in ((relu, relu_bwd), (leaky_relu, leaky_relu_bwd), (sigmoid, sigmoid_bwd),
                   (tanh, tanh_bwd), (bias_relu, None)):
    _fwd.register_fake(lambda x, *args: torch.empty_like(x, memory_format=torch.contiguous_format))
    if _bwd is not None:
        _bwd.register_fake(lambda grad, *args: torch.empty_like(
            grad, memory_format=torch.contiguous_format))


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)


def _save_input(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.negative_slope = inputs[1]


relu.register_autograd(lambda ctx, g: torch.ops.pycnn.relu_bwd(g, ctx.saved_tensors[0]),
                       setup_context=_save_output)
sigmoid.register_autograd(lambda ctx, g: torch.ops.pycnn.sigmoid_bwd(g, ctx.saved_tensors[0]),
                          setup_context=_save_output)
tanh.register_autograd(lambda ctx, g: torch.ops.pycnn.tanh_bwd(g, ctx.saved_tensors[0]),
                       setup_context=_save_output)
leaky_relu.register_autograd(
    lambda ctx, g: (torch.ops.pycnn.leaky_relu_bwd(g, ctx.saved_tensors[0], ctx.negative_slope),
                    None),
    setup_context=_save_input)


def _bias_relu_grads(ctx, grad):
    dz = torch.ops.pycnn.relu_bwd(grad, ctx.saved_tensors[0])
    db = torch.ops.pycnn.conv2d_bwd_bias(dz) if ctx.needs_input_grad[1] else None
    return dz, db


bias_relu.register_autograd(_bias_relu_grads, setup_context=_save_output)


# ----------------------------------------------------------------------------- softmax and loss

@_op("softmax")
def softmax(x: Tensor, dim: int) -> Tensor:
    with _backend("softmax", x) as c:
        return c.tensor(c.B.softmax_fwd(c.array("input", x), int(dim)))


@_op("softmax_bwd")
def softmax_bwd(grad: Tensor, y: Tensor, dim: int) -> Tensor:
    with _backend("softmax_bwd", grad) as c:
        return c.tensor(c.B.softmax_bwd(c.array("grad", grad), c.array("output", y), int(dim)))


@_op("log_softmax")
def log_softmax(x: Tensor, dim: int) -> Tensor:
    with _backend("log_softmax", x) as c:
        return c.tensor(c.B.log_softmax_fwd(c.array("input", x), int(dim)))


@_op("log_softmax_bwd")
def log_softmax_bwd(grad: Tensor, y: Tensor, dim: int) -> Tensor:
    with _backend("log_softmax_bwd", grad) as c:
        return c.tensor(c.B.log_softmax_bwd(c.array("grad", grad), c.array("output", y),
                                            int(dim)))


@_op("cross_entropy")
def cross_entropy(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(mean loss as a 0-d tensor, log_probs) of logits (N, classes), int64 target (N,)."""
    with _backend("cross_entropy", logits) as c:
        loss, log_probs = c.B.cross_entropy_fwd(c.array("input", logits),
                                                c.array("target", target, (torch.int64,)))
        return c.tensor(loss), c.tensor(log_probs)


@_op("cross_entropy_bwd")
def cross_entropy_bwd(grad: Tensor, log_probs: Tensor, target: Tensor) -> Tensor:
    with _backend("cross_entropy_bwd", log_probs) as c:
        return c.tensor(c.B.cross_entropy_bwd(c.array("grad", grad),
                                              c.array("log_probs", log_probs),
                                              c.array("target", target, (torch.int64,))))


for _o in (softmax, log_softmax):
    _o.register_fake(lambda x, dim: torch.empty_like(x, memory_format=torch.contiguous_format))
for _o in (softmax_bwd, log_softmax_bwd):
    _o.register_fake(lambda g, y, dim: torch.empty_like(g, memory_format=torch.contiguous_format))


@cross_entropy.register_fake
def _(logits, target):
    return _empty(logits, ()), torch.empty_like(logits, memory_format=torch.contiguous_format)


@cross_entropy_bwd.register_fake
def _(grad, log_probs, target):
    return torch.empty_like(log_probs, memory_format=torch.contiguous_format)


def _softmax_setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


def _cross_entropy_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], inputs[1])


def _cross_entropy_grads(ctx, grad_loss, _grad_log_probs):
    log_probs, target = ctx.saved_tensors
    return torch.ops.pycnn.cross_entropy_bwd(grad_loss, log_probs, target), None


softmax.register_autograd(
    lambda ctx, g: (torch.ops.pycnn.softmax_bwd(g, ctx.saved_tensors[0], ctx.dim), None),
    setup_context=_softmax_setup)
log_softmax.register_autograd(
    lambda ctx, g: (torch.ops.pycnn.log_softmax_bwd(g, ctx.saved_tensors[0], ctx.dim), None),
    setup_context=_softmax_setup)
cross_entropy.register_autograd(_cross_entropy_grads, setup_context=_cross_entropy_setup)


# ----------------------------------------------------------------------------- batch norm

@_op("batch_norm")
def batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
               running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
               momentum: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, save_mean, save_invstd, new_running_mean, new_running_var).

    The running statistics are read, not written: in training the backend updates
    copies of them, which come back as the last two outputs (empty when None).
    """
    with _backend("batch_norm", x) as c:
        new = [None if r is None else r.detach().clone() for r in (running_mean, running_var)]
        y, mean, invstd = c.B.batch_norm_fwd(
            c.array("input", x), c.array("weight", weight), c.array("bias", bias),
            c.array("running_mean", new[0]), c.array("running_var", new[1]), bool(training),
            float(momentum), float(eps))
        new = [x.new_empty((0,)) if r is None else r for r in new]
        return c.tensor(y), c.tensor(mean), c.tensor(invstd), new[0], new[1]


@_op("batch_norm_bwd")
def batch_norm_bwd(grad: Tensor, x: Tensor, weight: Optional[Tensor], save_mean: Tensor,
                   save_invstd: Tensor, training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); dweight and dbias are computed even when weight is None."""
    with _backend("batch_norm_bwd", grad) as c:
        dx, dw, db = c.B.batch_norm_bwd(c.array("grad", grad), c.array("input", x),
                                        c.array("weight", weight), c.array("save_mean", save_mean),
                                        c.array("save_invstd", save_invstd), bool(training))
        return c.tensor(dx), c.tensor(dw), c.tensor(db)


@batch_norm.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps):
    ch = x.shape[1]
    stats = [_empty(x, (0,)) if r is None else torch.empty_like(r) for r in (running_mean,
                                                                               running_var)]
    return (torch.empty_like(x, memory_format=torch.contiguous_format), _empty(x, (ch,)),
            _empty(x, (ch,)), stats[0], stats[1])


@batch_norm_bwd.register_fake
def _(grad, x, weight, save_mean, save_invstd, training):
    ch = x.shape[1]
    return (torch.empty_like(x, memory_format=torch.contiguous_format), _empty(x, (ch,)),
            _empty(x, (ch,)))


def _batch_norm_setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _, _ = inputs
    ctx.training, ctx.has_weight, ctx.has_bias = training, weight is not None, bias is not None
    ctx.save_for_backward(x, weight, output[1], output[2])


def _batch_norm_grads(ctx, grad, *_unused):
    x, weight, mean, invstd = ctx.saved_tensors
    dx, dw, db = torch.ops.pycnn.batch_norm_bwd(grad, x, weight, mean, invstd, ctx.training)
    return (dx if ctx.needs_input_grad[0] else None, dw if ctx.has_weight else None,
            db if ctx.has_bias else None, None, None, None, None, None)


batch_norm.register_autograd(_batch_norm_grads, setup_context=_batch_norm_setup)


# ----------------------------------------------------------------------------- dropout

@_op("dropout")
def dropout(x: Tensor, p: float, seed: Tensor) -> tuple[Tensor, Tensor]:
    """(y, mask): pycnn's counter-based mask for the seed held by the int64 tensor ``seed``
    (one element), uint8, and y = x * mask / (1 - p). The same seed gives the same
    mask on both devices."""
    with _backend("dropout", x) as c:
        _check("dropout", "seed", seed, (torch.int64,))
        if seed.numel() != 1:
            raise ValueError(f"pycnn::dropout: seed must hold one element, got shape "
                             f"{tuple(seed.shape)}")
        y, mask = c.B.dropout_fwd(c.array("input", x), float(p), int(seed.item()))
        return c.tensor(y), c.tensor(mask)


@_op("dropout_bwd")
def dropout_bwd(grad: Tensor, mask: Tensor, p: float) -> Tensor:
    with _backend("dropout_bwd", grad) as c:
        return c.tensor(c.B.dropout_bwd(c.array("grad", grad),
                                        c.array("mask", mask, (torch.uint8,)), float(p)))


@dropout.register_fake
def _(x, p, seed):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, dtype=torch.uint8, memory_format=torch.contiguous_format))


@dropout_bwd.register_fake
def _(grad, mask, p):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _dropout_setup(ctx, inputs, output):
    ctx.p = inputs[1]
    ctx.save_for_backward(output[1])


dropout.register_autograd(
    lambda ctx, g, _g_mask: (torch.ops.pycnn.dropout_bwd(g, ctx.saved_tensors[0], ctx.p),
                             None, None),
    setup_context=_dropout_setup)


#: every registered op, forward ops first (name -> the custom op)
FORWARD = {o._qualname: o for o in (conv2d, conv2d_relu, max_pool2d, avg_pool2d, adaptive_avg_pool2d,
                                relu, leaky_relu, sigmoid, tanh, bias_relu, softmax, log_softmax,
                                cross_entropy, batch_norm, dropout)}
BACKWARD = {o._qualname: o for o in (conv2d_bwd_data, conv2d_bwd_filter, conv2d_bwd_bias,
                                 max_pool2d_bwd, avg_pool2d_bwd, adaptive_avg_pool2d_bwd,
                                 relu_bwd, leaky_relu_bwd, sigmoid_bwd, tanh_bwd, softmax_bwd,
                                 log_softmax_bwd, cross_entropy_bwd, batch_norm_bwd, dropout_bwd)}
