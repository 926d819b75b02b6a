"""Tensor and the autograd engine.

A ``Tensor`` wraps an array: a ``numpy.ndarray`` on ``"cpu"``, a ``cupy.ndarray``
on ``"cuda"``. Every differentiable op is a ``Function`` subclass with its
``forward`` and ``backward`` side by side; ``Function.apply`` runs the forward
on raw arrays and, when a gradient is wanted, records the node in the graph.
``Tensor.backward`` walks the graph in reverse topological order with an
explicit stack (no recursion, so a 500-layer chain or a deep ResNet is fine)
and accumulates gradients into the leaves' ``.grad`` as PyTorch does.

The arithmetic here (``+ - * / @``, sum, reshape, indexing) is glue that is
the same on both devices, so it uses the array module of the data (NumPy or
CuPy). The CNN ops live in ``pycnn.functional`` and run on the backend chosen
by the tensor's device.
"""
from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from pycnn.backends import get_backend

# --------------------------------------------------------------------------- #
# Devices and array modules
# --------------------------------------------------------------------------- #

try:  # CuPy is optional: without it only the "cpu" device exists.
    import cupy as _cp
except ImportError:  # pragma: no cover - depends on the install
    _cp = None


def array_module(a):
    """numpy or cupy, whichever owns ``a`` (Chainer's get_array_module idea)."""
    if _cp is not None and isinstance(a, _cp.ndarray):
        return _cp
    return np


def device_of(a) -> str:
    return "cuda" if array_module(a) is not np else "cpu"


@functools.lru_cache(maxsize=None)
def cuda_status() -> str:
    """One line saying whether the "cuda" device works here, and if not, why."""
    if _cp is None:
        return "unavailable: CuPy is not installed (pip install 'pycnn[cuda]')"
    try:
        import pycnn._C  # noqa: F401
    except ImportError:
        return ("unavailable: pycnn._C was not built (no CUDA toolkit at install time, "
                "or PYCNN_CUDA=0)")
    try:
        count = _cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        if not _nvidia_driver_present():
            # CUDA reports a missing driver as "driver version is insufficient": say what it is
            return "unavailable: no NVIDIA GPU/driver found; the CPU backend runs everything"
        if "InsufficientDriver" in str(exc):
            return (f"unavailable: the NVIDIA driver is older than the CUDA runtime CuPy was "
                    f"built for; update the driver or install the CuPy for its CUDA ({exc})")
        return f"unavailable: no usable GPU ({type(exc).__name__}: {exc})"
    if count == 0:
        return "unavailable: no NVIDIA GPU visible; the CPU backend runs everything"
    return f"available: {count} GPU(s)"


def _nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (Linux: /proc/driver/nvidia, /dev/nvidia0)."""
    import os
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0") \
        or os.path.exists("/dev/dxg")                          # WSL's GPU device


def cuda_available() -> bool:
    """True when CuPy sees a GPU and the kernel extension pycnn._C is built."""
    return cuda_status().startswith("available")


def move_array(a, device: str):
    """``a`` (a NumPy or CuPy array) on ``device``; no copy when it is already there."""
    if device == "cpu":
        return a if isinstance(a, np.ndarray) else _cp.asnumpy(a)
    if device == "cuda":
        if not cuda_available():
            raise RuntimeError("device 'cuda' is not available: it needs CuPy, a GPU and the "
                               "compiled extension pycnn._C (see pycnn.cuda_available())")
        return _cp.asarray(a)
    raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")


#: The floating dtypes pycnn computes in. float16 (and longer floats) are refused with
#: the same message as integers: the NumPy reference would compute them silently in
#: another precision than the kernels, and the kernels take float32 only.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_float_dtype(dtype) -> bool:
    """True for float32 and float64, the dtypes ops and gradients work in."""
    return np.dtype(dtype) in FLOAT_DTYPES


# --------------------------------------------------------------------------- #
# Gradient mode
# --------------------------------------------------------------------------- #

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) in which no graph is recorded."""

    def __init__(self):
        self._previous = []  # a stack: one decorator instance may be entered recursively

    def __enter__(self):
        self._previous.append(is_grad_enabled())
        _state.grad_enabled = False
        return self

    def __exit__(self, *exc):
        _state.grad_enabled = self._previous.pop()
        return False


# --------------------------------------------------------------------------- #
# Anomaly detection: the first op whose forward or backward makes a NaN or inf
# --------------------------------------------------------------------------- #

_anomaly = {"enabled": False}


class AnomalyError(FloatingPointError):
    """Raised in anomaly mode by the first op whose forward output, or whose backward's
    gradient for one of its inputs, holds NaN or inf. ``op`` is its name, ``phase``
    "forward" or "backward", ``where`` the line that called the op (outside pycnn's
    autograd and functional modules)."""

    def __init__(self, message, op, phase, where):
        super().__init__(message)
        self.op, self.phase, self.where = op, phase, where


def set_anomaly(enabled: bool) -> None:
    """Check every op's output and every backward's gradients for NaN and inf, and raise
    :class:`AnomalyError` naming the first op that made one (``pycnn train
    --detect-anomaly``). Costs a pass over every array of the graph: for debugging."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    _anomaly["enabled"] = bool(enabled)


def is_anomaly_enabled() -> bool:
    return _anomaly["enabled"]


class detect_anomaly(contextlib.ContextDecorator):
    """``with pycnn.detect_anomaly(): ...``: anomaly mode (see :func:`set_anomaly`) inside."""

    def __init__(self):
        self._previous = []

    def __enter__(self):
        self._previous.append(is_anomaly_enabled())
        _anomaly["enabled"] = True
        return self

    def __exit__(self, *exc):
        _anomaly["enabled"] = self._previous.pop()
        return False


_AUTOGRAD_FILES = ("tensor.py", "functional.py")


def _call_site() -> str:
    """file:line of the innermost caller outside this module and pycnn.functional."""
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (os.path.dirname(path) == here and os.path.basename(path) in _AUTOGRAD_FILES):
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return "unknown"


def _bad_counts(a):
    """(nan count, inf count) of a floating array, or None when it is finite (or not float)."""
    if not hasattr(a, "dtype") or a.dtype.kind != "f":
        return None
    xp = array_module(a)
    if bool(xp.isfinite(a).all()):
        return None
    return int(xp.isnan(a).sum()), int(xp.isinf(a).sum())


def _describe(counts) -> str:
    nan, inf = counts
    return " and ".join(f"{n} {what}" for n, what in ((nan, "nan"), (inf, "inf")) if n)


def _check_forward(fn, raw, out):
    counts = _bad_counts(out)
    if counts is None:
        return
    bad_inputs = [i for i, a in enumerate(raw) if _bad_counts(a) is not None]
    origin = ("from finite inputs" if not bad_inputs else
              f"and its input {bad_inputs[0]} already held nan or inf (it comes from outside "
              "the graph: data, parameters or an array argument)")
    raise AnomalyError(f"anomaly: {fn.name} forward (called at {fn.created_at}) produced "
                       f"{_describe(counts)} values in its output of shape "
                       f"{tuple(out.shape)} {origin}", fn.name, "forward", fn.created_at)


def _check_backward(fn, grad_in, parent_grads):
    for i, (parent, pg) in enumerate(zip(fn.parents, parent_grads)):
        if pg is None or not isinstance(parent, Tensor):
            continue
        counts = _bad_counts(pg)
        if counts is None:
            continue
        incoming = ("a finite gradient" if _bad_counts(grad_in) is None
                    else "a gradient already holding nan or inf")
        where = getattr(fn, "created_at", "unknown")
        raise AnomalyError(f"anomaly: {fn.name} backward (forward called at {where}) produced "
                           f"{_describe(counts)} values in the gradient of its input {i} "
                           f"(shape {tuple(pg.shape)}) from {incoming}", fn.name, "backward",
                           where)


# --------------------------------------------------------------------------- #
# Function: one op, forward and backward side by side
# --------------------------------------------------------------------------- #

class Function:
    """Base of every differentiable op.

    Subclasses define ``forward(self, *arrays, **params) -> array`` and
    ``backward(self, grad) -> tuple`` with one gradient (or None) per positional
    argument of ``forward``. Positional arguments may be Tensors, arrays,
    scalars or None; only Tensors get gradients. ``self.backend`` is the backend
    of the inputs' device and ``self.needs_input_grad`` says which positional
    arguments want a gradient.
    """

    name = "op"

    @classmethod
    def apply(cls, *args, **params):
        fn = cls()
        tensors = [a for a in args if isinstance(a, Tensor)]
        device, dtype = _common_device_dtype(cls.name, tensors)
        fn.backend = get_backend(device)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        if _anomaly["enabled"]:
            fn.created_at = _call_site()
            out = fn.forward(*raw, **params)
            _check_forward(fn, raw, out)
        else:
            out = fn.forward(*raw, **params)
        fn.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        if is_grad_enabled() and any(fn.needs_input_grad):
            fn.parents = args
            return Tensor(out, requires_grad=True, _ctx=fn)
        return Tensor(out)

    def forward(self, *args, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError


class _Released(Function):
    """Takes the place of a node's Function once backward has released its saved arrays."""

    name = "released"
    parents = ()

    def backward(self, grad):
        raise RuntimeError("backward: trying to go through a graph a second time, but its saved "
                           "arrays were released by the first backward; call the first "
                           "backward with retain_graph=True")


_RELEASED = _Released()


def _common_device_dtype(op: str, tensors):
    if not tensors:
        raise TypeError(f"{op}: expected at least one Tensor argument")
    device, dtype = tensors[0].device, tensors[0].dtype
    for i, t in enumerate(tensors[1:], start=1):
        if t.device != device:
            raise ValueError(f"{op}: all tensors must be on one device; tensor argument 0 is on "
                             f"{device!r}, tensor argument {i} is on {t.device!r}")
        if t.dtype != dtype:
            raise TypeError(f"{op}: all tensors must have one dtype; tensor argument 0 is "
                            f"{dtype}, tensor argument {i} is {t.dtype} (convert one of them, "
                            "nothing is promoted silently)")
    return device, dtype


def _unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _shape(a):
    return () if a is None or np.isscalar(a) else a.shape


class Add(Function):
    name = "add"

    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a + b

    def backward(self, g):
        return _unbroadcast(g, self.shapes[0]), _unbroadcast(g, self.shapes[1])


class Sub(Function):
    name = "sub"

    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a - b

    def backward(self, g):
        return _unbroadcast(g, self.shapes[0]), _unbroadcast(-g, self.shapes[1])


class Mul(Function):
    name = "mul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = _unbroadcast(g * self.b, _shape(self.a)) if self.needs_input_grad[0] else None
        gb = _unbroadcast(g * self.a, _shape(self.b)) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    name = "div"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = _unbroadcast(g / self.b, _shape(self.a)) if self.needs_input_grad[0] else None
        gb = (_unbroadcast(-g * self.a / (self.b * self.b), _shape(self.b))
              if self.needs_input_grad[1] else None)
        return ga, gb


class Neg(Function):
    name = "neg"

    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    name = "pow"

    def forward(self, a, exponent):
        self.a, self.exponent = a, exponent
        return a ** exponent

    def backward(self, g):
        if self.exponent == 0:
            return g * 0, None  # d(a**0)/da = 0, also at a = 0
        return g * self.exponent * self.a ** (self.exponent - 1), None


class Exp(Function):
    name = "exp"

    def forward(self, a):
        self.out = array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    name = "log"

    def forward(self, a):
        self.a = a
        return array_module(a).log(a)

    def backward(self, g):
        return (g / self.a,)


class MatMul(Function):
    name = "matmul"

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul: expected two 2-D tensors, got shapes {a.shape} and {b.shape}")
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        ga = g @ self.b.T if self.needs_input_grad[0] else None
        gb = self.a.T @ g if self.needs_input_grad[1] else None
        return ga, gb


class Sum(Function):
    name = "sum"

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return array_module(a).asarray(a.sum(axis=axis, keepdims=keepdims))

    def backward(self, g):
        xp = array_module(g)
        if self.axis is not None and not self.keepdims:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            g = xp.expand_dims(g, tuple(ax % len(self.shape) for ax in axes))
        return (xp.broadcast_to(g, self.shape).copy(),)


class Max(Function):
    """The largest (``smallest``: the smallest) entry along ``axis`` (all, when None).
    The gradient goes to the one entry chosen, the first of tied ones (as argmax picks,
    and as PyTorch's ``max(dim)`` does)."""
    name = "max"

    def forward(self, a, axis=None, keepdims=False, smallest=False):
        xp = array_module(a)
        if a.size == 0:
            raise ValueError(f"{'min' if smallest else 'max'}: the tensor is empty (shape "
                             f"{a.shape}): no {'smallest' if smallest else 'largest'} entry")
        flat = a.reshape(-1) if axis is None else a
        ax = 0 if axis is None else axis
        self.index = xp.expand_dims((flat.argmin if smallest else flat.argmax)(axis=ax), ax)
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        out = xp.take_along_axis(flat, self.index, axis=ax)
        if axis is None:
            return out.reshape(()) if not keepdims else out.reshape((1,) * a.ndim)
        return out if keepdims else out.squeeze(ax)

    def backward(self, g):
        xp = array_module(g)
        if self.axis is None:
            grad = xp.zeros(int(np.prod(self.shape)), dtype=g.dtype)
            grad[self.index.reshape(())] = g.reshape(())
            return (grad.reshape(self.shape),)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        g = g if self.keepdims else xp.expand_dims(g, self.axis)
        xp.put_along_axis(grad, self.index, g, axis=self.axis)
        return (grad,)


class Reshape(Function):
    name = "reshape"

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape), None


class Transpose(Function):
    name = "transpose"

    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        inverse = tuple(np.argsort(self.axes)) if self.axes is not None else None
        return g.transpose(inverse), None


class GetItem(Function):
    name = "getitem"

    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        out = array_module(a).asarray(a[index])    # one element: a 0-d array, not (1,)
        return out if out.flags.c_contiguous else array_module(a).ascontiguousarray(out)

    def backward(self, g):
        xp = array_module(g)
        full = xp.zeros(self.shape, dtype=g.dtype)
        index = self.index if isinstance(self.index, tuple) else (self.index,)
        if any(hasattr(i, "shape") or isinstance(i, list) for i in index):
            xp.add.at(full, self.index, g)  # advanced indexing may repeat positions
        else:
            full[self.index] = g
        return full, None


class ToDevice(Function):
    name = "to"

    def forward(self, a, device):
        self.source = device_of(a)
        return move_array(a, device)

    def backward(self, g):
        return move_array(g, self.source), None


# --------------------------------------------------------------------------- #
# Tensor
# --------------------------------------------------------------------------- #

class Tensor:
    """An array with an optional gradient. See ``pycnn.tensor`` to make one."""

    __array_priority__ = 1000  # so ndarray + Tensor uses Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, _ctx: Function | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if not isinstance(data, np.ndarray) and array_module(data) is np:
            data = np.asarray(data)
        if requires_grad and not is_float_dtype(data.dtype):
            raise TypeError(f"requires_grad: only floating tensors (float32 or float64) can "
                            f"require gradients, got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._ctx = _ctx

    # ---- properties ------------------------------------------------------- #
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", threshold=20, edgeitems=2)
        extra = f", device='{self.device}'" if self.device != "cpu" else ""
        extra += ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # ---- conversions ------------------------------------------------------ #
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shared on the cpu, copied from the gpu)."""
        return self.data if isinstance(self.data, np.ndarray) else _cp.asnumpy(self.data)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item: expected a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        if device == self.device:
            return self
        return ToDevice.apply(self, device)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def astype(self, dtype) -> "Tensor":
        """A copy with another dtype, cut from the graph."""
        return Tensor(self.data.astype(dtype))

    # ---- autograd --------------------------------------------------------- #
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient flowing into this tensor (an array or Tensor of
        this tensor's shape); it may be left out only for a one-element tensor.
        As in PyTorch, each node's saved arrays are released once its backward
        has run (activations do not outlive the pass), so going through the same
        graph again needs ``retain_graph=True`` the first time.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph")
        xp = array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: grad can be omitted only for a one-element "
                                 f"output, got shape {self.shape}")
            grad = xp.ones(self.data.shape, dtype=self.dtype)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad must have the output's shape {self.shape}, "
                                 f"got {tuple(grad.shape)}")
            grad = grad.astype(self.dtype, copy=False)

        order = self._topological_order()
        # Edges into each leaf: a leaf's gradient is complete once every node that uses it
        # has run backward, and is accumulated then (not when the reverse order reaches
        # the leaf itself, which can be the very end), so that hooks on it (data
        # parallelism's all-reduce) start as early as the graph allows.
        uses: dict[int, int] = {}
        for node in order:
            if node._ctx is not None:
                for parent in node._ctx.parents:
                    if isinstance(parent, Tensor) and parent.requires_grad and parent._ctx is None:
                        uses[id(parent)] = uses.get(id(parent), 0) + 1
        grads = {id(self): grad}

        def accumulate(leaf, g):
            # (copied: ops may hand one gradient array to several parents)
            leaf.grad = Tensor(g.copy() if leaf.grad is None else leaf.grad.data + g)
            for hook in getattr(leaf, "_grad_hooks", ()):
                hook(leaf)

        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf (only the root can still be one here)
                accumulate(node, g)
                continue
            fn = node._ctx
            parent_grads = fn.backward(g)
            if _anomaly["enabled"]:
                _check_backward(fn, g, parent_grads)
            if not retain_graph:
                node._ctx = _RELEASED
            for parent, pg in zip(fn.parents, parent_grads):
                if not isinstance(parent, Tensor) or not parent.requires_grad:
                    continue
                key = id(parent)
                if pg is not None:
                    grads[key] = pg if key not in grads else grads[key] + pg
                if key in uses:                  # a leaf: complete after its last use
                    uses[key] -= 1
                    if uses[key] == 0:
                        done = grads.pop(key, None)
                        if done is not None:
                            accumulate(parent, done)

    def _topological_order(self):
        """Nodes that require grad, each after all its inputs (iterative DFS)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in node._ctx.parents:
                    if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in visited:
                        stack.append((parent, False))
        return order

    def zero_grad(self) -> None:
        self.grad = None

    def register_post_accumulate_grad_hook(self, hook) -> None:
        """Call ``hook(self)`` each time a backward pass has finished accumulating this
        leaf's gradient (``self.grad`` then holds the pass's full contribution), as
        PyTorch's method of that name does. Leaves only."""
        if self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors (a "
                               "parameter, an input) accumulate gradients; this one has a graph")
        if not callable(hook):
            raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
        if "_grad_hooks" not in self.__dict__:
            self._grad_hooks = []
        self._grad_hooks.append(hook)

    # ---- arithmetic ------------------------------------------------------- #
    def _other(self, other):
        """The other operand of an arithmetic op. A number (Python's or a NumPy
        scalar) keeps the tensor's dtype, as NumPy's weak scalars do; an array
        takes the tensor's dtype (float32 math stays float32), except that a float
        array with an integer tensor is refused rather than truncated: nothing is
        promoted silently."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.generic) and other.dtype.kind in "iuf":
            other = other.item()
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return other
        arr = other if array_module(other) is not np else np.asarray(other)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"operand: expected a number, an array of numbers or a Tensor, "
                            f"got {type(other).__name__} of dtype {arr.dtype}")
        if arr.dtype.kind == "f" and self.dtype.kind != "f":
            raise TypeError(f"operand: a float array with an integer tensor ({self.dtype}) would "
                            f"be truncated; convert the tensor first (tensor.astype(np.float32))")
        return Tensor(arr.astype(self.dtype) if arr.dtype != self.dtype else arr)

    def __add__(self, other):
        return Add.apply(self, self._other(other))

    def __radd__(self, other):
        return Add.apply(self._other(other), self)

    def __sub__(self, other):
        return Sub.apply(self, self._other(other))

    def __rsub__(self, other):
        return Sub.apply(self._other(other), self)

    def __mul__(self, other):
        return Mul.apply(self, self._other(other))

    def __rmul__(self, other):
        return Mul.apply(self._other(other), self)

    def __truediv__(self, other):
        return Div.apply(self, self._other(other))

    def __rtruediv__(self, other):
        return Div.apply(self._other(other), self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"pow: expected a Python number as exponent, got {type(exponent).__name__}")
        return Pow.apply(self, exponent)

    def __matmul__(self, other):
        return MatMul.apply(self, self._other(other))

    def __rmatmul__(self, other):
        return MatMul.apply(self._other(other), self)

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sum(self, axis=None, keepdims: bool = False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        if axis is None:
            count = self.size
        else:
            axes = (axis,) if isinstance(axis, int) else axis
            count = int(np.prod([self.shape[a] for a in axes]))
        # the mean of nothing is NaN, as in NumPy and PyTorch (not a ZeroDivisionError)
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count if count else float("nan"))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        nd = max(self.ndim, 1)
        for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not -nd <= d < nd:
                raise IndexError(f"flatten: {name} must be an int in [{-nd}, {nd - 1}] for a "
                                 f"tensor of shape {self.shape}, got {d!r}")
        start, end = start_dim % nd, end_dim % nd
        if start > end:
            raise ValueError(f"flatten: start_dim ({start_dim}) comes after end_dim ({end_dim})")
        # the flattened size spelled out: NumPy cannot infer a -1 in an empty array
        # (a batch of N=0), and PyTorch flattens that to (0, C*H*W)
        merged = int(np.prod(self.shape[start:end + 1], dtype=np.int64))
        shape = self.shape[:start] + (merged,) + self.shape[end + 1:]
        return self.reshape(shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes or None)

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index)

    def _dim(self, dim, op):
        if dim is None:
            return None
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"{op}: dim must be an int or None, got {dim!r}")
        if not -max(self.ndim, 1) <= dim < max(self.ndim, 1):
            raise ValueError(f"{op}: dim {dim} is out of range for a {self.ndim}-D tensor "
                             f"(shape {self.shape})")
        return int(dim) % max(self.ndim, 1)

    def max(self, dim=None, keepdim: bool = False):
        """The largest entry (a 0-d tensor), or with ``dim`` the pair ``(values, indices)``
        along it, as ``torch.max``; the gradient flows to the entries chosen."""
        return self._extreme(dim, keepdim, False, "max")

    def min(self, dim=None, keepdim: bool = False):
        """As :meth:`max`, for the smallest entries."""
        return self._extreme(dim, keepdim, True, "min")

    def _extreme(self, dim, keepdim, smallest, op):
        d = self._dim(dim, op)
        values = Max.apply(self, axis=d, keepdims=bool(keepdim), smallest=smallest)
        if d is None:
            return values
        return MinMax(values, self.argmin(d, keepdim) if smallest else self.argmax(d, keepdim))

    def argmax(self, dim=None, keepdim: bool = False, axis=None):
        """Indices of the maxima (int64, no gradient): of the flattened tensor, or along
        ``dim`` (``axis`` is NumPy's name for it); the first of tied ones."""
        return self._arg(dim if axis is None else axis, keepdim, "argmax")

    def argmin(self, dim=None, keepdim: bool = False, axis=None):
        """Indices of the minima, as :meth:`argmax`."""
        return self._arg(dim if axis is None else axis, keepdim, "argmin")

    def _arg(self, dim, keepdim, op):
        d = self._dim(dim, op)
        if self.data.size == 0:
            raise ValueError(f"{op}: the tensor is empty (shape {self.shape})")
        index = getattr(self.data, op)(axis=d)
        if keepdim:
            index = (index.reshape((1,) * self.ndim) if d is None else
                     array_module(index).expand_dims(index, d))
        return Tensor(index.astype(np.int64))


class MinMax(tuple):
    """``(values, indices)`` of :meth:`Tensor.max` / :meth:`Tensor.min` along a dim, also
    readable as ``.values`` and ``.indices`` (torch's ``torch.return_types.max``)."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def tensor(data, requires_grad: bool = False, device: str = "cpu", dtype=None) -> Tensor:
    """Make a Tensor from a list, a scalar, a NumPy/CuPy array or a Tensor.

    Python floats become float32 (the default); NumPy arrays keep their dtype
    unless ``dtype`` says otherwise, as ``torch.tensor`` does. The data is copied.
    """
    if isinstance(data, Tensor):
        data = data.data
    if array_module(data) is np:
        if isinstance(data, np.ndarray):
            arr = np.array(data, dtype=dtype, copy=True)
        else:
            arr = np.array(data, dtype=dtype)
            if dtype is None and arr.dtype == np.float64:
                arr = arr.astype(np.float32)
    else:
        arr = data.astype(dtype) if dtype is not None else data.copy()
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"data: expected numbers, got an array of dtype {arr.dtype}")
    return Tensor(move_array(arr, device), requires_grad=requires_grad)
