"""Module and Parameter: the containers every layer and model is built from.

A Module registers what is assigned to it: a ``Parameter`` goes to
``_parameters``, a ``Module`` to ``_modules``, an array given to
``register_buffer`` to ``_buffers``, each in definition order. Everything else
(``parameters()``, ``state_dict()``, ``to()``, ``train()``) walks those three
dictionaries, so the dotted names (``layer1.0.conv1.weight``) come out the way
PyTorch spells them.

Buffers are plain arrays (NumPy on the CPU, CuPy on the GPU), not Tensors: they
hold state such as BatchNorm's running statistics, which the op updates in
place and which no gradient flows through.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from pycnn.tensor import Tensor, array_module, device_of, is_float_dtype, move_array


def _to_numpy(array) -> np.ndarray:
    """A CPU NumPy copy of a NumPy/CuPy array or a Tensor."""
    if isinstance(array, Tensor):
        array = array.data
    if array_module(array) is not np:
        return array.get()  # already a fresh host copy
    return np.array(array, copy=True)


def _check_name(name) -> None:
    """A registry key must be a non-empty string without '.' (the state_dict separator)."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")


def _buffer_array(what: str, value):
    """The array a buffer holds: NumPy/CuPy array (a Tensor gives its array) or None."""
    if isinstance(value, Tensor):
        value = value.data
    if value is not None and not hasattr(value, "shape"):
        raise TypeError(f"{what}: expected an ndarray or None, got {type(value).__name__}")
    return value


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable weight (requires_grad=True)."""

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class RemovableHandle:
    """Returned by ``register_forward_hook``; ``remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


class Module:
    """Base class of layers and models; subclasses define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before "
                               f"assigning attributes (got {name!r})")
        # As in torch.nn: a name lives in one registry at a time; a registered
        # parameter or submodule can be replaced only by its own kind or None
        # (so ``layer.weight = some_tensor`` cannot silently drop the weight from
        # parameters()); assigning to a buffer name updates the buffer.
        if isinstance(value, (Parameter, Module)):
            self._unregister(name)
            store = self._parameters if isinstance(value, Parameter) else self._modules
            store[name] = value
        elif name in self._parameters or name in self._modules:
            kind = "parameter" if name in self._parameters else "submodule"
            if value is not None:
                expected = "a Parameter" if kind == "parameter" else "a Module"
                raise TypeError(f"{name}: cannot assign a {type(value).__name__} to {kind} "
                                f"{name!r} (expected {expected} or None)")
            (self._parameters if kind == "parameter" else self._modules)[name] = None
        elif name in self._buffers:
            self._buffers[name] = _buffer_array(name, value)
        else:
            object.__setattr__(self, name, value)

    def _unregister(self, name: str) -> None:
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        _check_name(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param: expected a Parameter or None, got {type(param).__name__}")
        self._unregister(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, array) -> None:
        """Register ``array`` (NumPy/CuPy array or None) as state saved in state_dict."""
        _check_name(name)
        array = _buffer_array("array", array)
        if name in self._parameters or name in self._modules:
            raise ValueError(f"name: {name!r} is already a parameter or submodule")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def add_module(self, name: str, module) -> None:
        _check_name(name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module: expected a Module or None, got {type(module).__name__}")
        self._unregister(name)
        self._modules[name] = module

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_hook(self, hook) -> RemovableHandle:
        """``hook(module, inputs, output)`` runs after every forward; may replace the output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ traversal
    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = ""):
        """This module (name ``prefix``) and every submodule, depth first, each once."""
        seen = set()

        def walk(module, name):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """``(dotted name, Parameter)`` pairs; a parameter shared by two modules appears once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule (children first) and on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes, grads, device
    def train(self, mode: bool = True):
        """Set training mode here and, through each child's own ``train``, below (so a
        submodule that overrides ``train``, e.g. to keep its BatchNorm frozen, is asked)."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected a bool, got {mode!r}")
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's gradient (or zero it in place with set_to_none=False)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def to(self, device: str):
        """Move every parameter, gradient and buffer to ``device`` in place; returns self."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        # The Tensor objects stay (an optimizer holds them); only their arrays move.
        for p in self.parameters():
            p.data = move_array(p.data, device)
            if p.grad is not None:
                p.grad.data = move_array(p.grad.data, device)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = move_array(b, device)
        return self

    def cpu(self):
        return self.to("cpu")

    def astype(self, dtype):
        """Cast every parameter and floating-point buffer to ``dtype`` in place
        (``model.astype(numpy.float64)`` for gradient checks); returns self."""
        dtype = np.dtype(dtype)
        if not is_float_dtype(dtype):
            raise TypeError(f"dtype: expected a floating dtype (float32 or float64), got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            if p.grad is not None:
                p.grad.data = p.grad.data.astype(dtype)
        for m in self.modules():
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f":
                    m._buffers[name] = b.astype(dtype)
        return self

    def double(self):
        return self.astype(np.float64)

    def float(self):
        return self.astype(np.float32)

    def cuda(self):
        return self.to("cuda")

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(int(p.size) for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers as CPU NumPy copies, keyed like PyTorch's.

        Order: a module's own parameters, then its buffers, then each child's
        entries under ``child_name.`` (recursively).
        """
        return OrderedDict((key, _to_numpy(array)) for key, array in self._state_arrays().items())

    def _state_arrays(self) -> "OrderedDict[str, object]":
        """Every state_dict key -> the live array behind it (a parameter's data or a buffer)."""
        arrays = OrderedDict()

        def walk(module, prefix):
            for name, p in module._parameters.items():
                if p is not None:
                    arrays[prefix + name] = p.data
            for name, b in module._buffers.items():
                if b is not None:
                    arrays[prefix + name] = b
            for name, child in module.named_children():
                walk(child, prefix + name + ".")

        walk(self, "")
        return arrays

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into this module's parameters and buffers, in place
        (on their device, cast to their dtype).

        Raises ValueError naming every missing key and unexpected key (when
        ``strict``) and every key whose shape differs or that holds no numbers
        (always); nothing is copied when it raises. Returns the missing and
        unexpected keys.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        targets = self._state_arrays()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in targets]
        values, mismatched, not_numbers = {}, [], []
        for key, current in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else value
            if array_module(value) is np:
                value = np.asarray(value)  # lists, NumPy scalars
            if value.dtype.kind not in "fiub":
                not_numbers.append(f"{key} (dtype {value.dtype})")
                continue
            if tuple(value.shape) != tuple(current.shape):
                mismatched.append(f"{key}: checkpoint has shape {tuple(value.shape)}, "
                                  f"model has {tuple(current.shape)}")
            values[key] = value
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if not_numbers:
            problems.append("not numbers: " + ", ".join(not_numbers))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__} failed:\n  "
                             + "\n  ".join(problems))
        for key, value in values.items():
            current = targets[key]
            current[...] = move_array(value, device_of(current)).astype(current.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (f"{extra}\n" if extra else "\n")
        return head + "\n".join(lines) + "\n)"

