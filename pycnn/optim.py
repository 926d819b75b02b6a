"""Optimizers and learning-rate schedulers, with PyTorch's update rules.

Every optimizer updates ``p.data`` in place with the array module of the array
(NumPy on the CPU, CuPy on the GPU), so one implementation serves both devices.
Parameters whose ``grad`` is None are skipped (frozen parameters, with
requires_grad False, are accepted and simply never move, as in PyTorch). One parameter group: the
hyperparameters are attributes (``opt.lr``), which is what the schedulers change.

Notation below (per parameter): ``g`` is the gradient, ``p`` the parameter,
``t`` the step count starting at 1, ``wd`` the weight decay (L2, added to g).

The updates run in place where they can, with one scratch array per step for
the elementwise chain (``out=``), because a temporary per operation costs more
than the arithmetic on large parameters (Adam on 11M float32 values: 43 ms ->
25 ms per step on the CPU). The gradient itself is never written: autograd may
hand two parameters the same gradient array.
"""
from __future__ import annotations

import math

import numpy as np

from pycnn import shapes
from pycnn.tensor import Tensor, array_module, move_array


def _check_number(value, name: str, *, minimum: float = 0.0, maximum: float | None = None,
                  open_max: bool = False) -> float:
    """A hyperparameter: a finite number, >= 0 unless ``minimum`` says otherwise."""
    return shapes.number(value, name, minimum=minimum, maximum=maximum, open_max=open_max)


def _host_copy(array) -> np.ndarray:
    """A CPU NumPy copy of a NumPy or CuPy array (one copy either way)."""
    moved = move_array(array, "cpu")
    return np.array(moved, copy=True) if moved is array else moved


def _like(current, value):
    """``value`` as the Python type of the hyperparameter it replaces: a loaded state_dict may
    hold NumPy scalars, and NumPy 2 lets a float64 scalar turn a float32 update float64."""
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, tuple):
        return tuple(float(v) for v in value)
    return float(value)


class NonFiniteGradient(FloatingPointError):
    """A step met a gradient holding NaN or inf. No parameter was updated (the weights stay
    as they were before the step); ``index`` is the first such parameter's position in
    ``optimizer.params``, ``shape`` its shape, ``nan`` and ``inf`` the counts of bad values."""

    def __init__(self, index, shape, nan, inf):
        self.index, self.shape, self.nan, self.inf = index, tuple(shape), nan, inf
        super().__init__(f"grad of parameter {index} (shape {self.shape}) holds "
                         f"{self.describe()}; the step was skipped, no parameter changed")

    def describe(self) -> str:
        return " and ".join(f"{n} {what} value{'s' if n != 1 else ''}"
                            for n, what in ((self.nan, "nan"), (self.inf, "inf")) if n)


def _first_non_finite(grads):
    """(index, nan count, inf count) of the first gradient holding NaN or inf, or None.

    One sum per gradient in its own dtype and, on the GPU, one read-back per step: a sum
    is finite when every element is; a non-finite sum of finite values (an overflow)
    is told apart by the exact elementwise check, which runs only then."""
    if not grads:
        return None
    modules = {id(array_module(g)): array_module(g) for _, g in grads}
    if len(modules) == 1:
        (xp,) = modules.values()
        with np.errstate(over="ignore", invalid="ignore"):   # an overflow is checked below
            sums = xp.stack([g.sum() for _, g in grads])
        if bool(xp.isfinite(sums).all()):
            return None
    for i, g in grads:
        xp = array_module(g)
        if not bool(xp.isfinite(g).all()):
            return i, int(xp.isnan(g).sum()), int(xp.isinf(g).sum())
    return None


class Optimizer:
    """Base class: holds ``params`` (a list of Tensors) and per-parameter ``state``.

    Subclasses list their hyperparameter names in ``_hyper``, the rules for each in
    ``_rules`` (checked on every assignment, ``opt.lr = nan`` included, not only by the
    constructor), and implement ``_update(p, g, state, xp)`` for one parameter.

    ``step()`` refuses a gradient holding NaN or inf: it raises :class:`NonFiniteGradient`
    naming the parameter, before any parameter is updated.
    """

    _hyper: tuple[str, ...] = ("lr",)
    #: name -> keyword arguments of shapes.number, or "bool", or "betas"
    _rules: dict = {"lr": {}}

    def __setattr__(self, name, value):
        if name not in type(self)._hyper:
            object.__setattr__(self, name, value)
            return
        value = self._checked(name, value)
        missing = object()
        previous = self.__dict__.get(name, missing)
        object.__setattr__(self, name, value)
        try:
            self._check_together()
        except ValueError:               # refused: the optimizer keeps its previous value
            if previous is missing:
                del self.__dict__[name]
            else:
                object.__setattr__(self, name, previous)
            raise

    def _checked(self, name, value):
        rule = self._rules.get(name, {})
        if rule == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: expected True or False, got {value!r}")
            return bool(value)
        if rule == "betas":
            try:
                b1, b2 = value
            except (TypeError, ValueError):
                raise TypeError(f"{name}: expected a pair of numbers, got {value!r}") from None
            return (_check_number(b1, f"{name}[0]", maximum=1.0, open_max=True),
                    _check_number(b2, f"{name}[1]", maximum=1.0, open_max=True))
        return _check_number(value, name, **rule)

    def _check_together(self) -> None:
        """Rules between hyperparameters, once all of them are set (SGD's nesterov)."""

    def __init__(self, params, lr):
        if isinstance(params, Tensor):
            raise TypeError("params: expected an iterable of Tensors (e.g. model.parameters()), "
                            "got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("params: the optimizer got an empty parameter list")
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params: element {i} is a {type(p).__name__}, expected a Tensor")
            if p._ctx is not None:
                raise ValueError(f"params: element {i} is not a leaf tensor (it is computed from "
                                 "other tensors, so a step on it would be lost); pass the "
                                 "tensors it is computed from")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params: some parameters appear more than once")
        self.params = params
        self.lr = lr
        self.state: list[dict] = [{} for _ in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def step(self) -> None:
        grads = []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            if tuple(g.shape) != tuple(p.data.shape):
                raise ValueError(f"grad: expected shape {p.shape} like its parameter, got {tuple(g.shape)}")
            grads.append((i, g))
        bad = _first_non_finite(grads)
        if bad is not None:
            i, nan, inf = bad
            raise NonFiniteGradient(i, self.params[i].shape, nan, inf)
        for i, g in grads:
            p = self.params[i]
            self._update(p.data, g, self.state[i], array_module(p.data))

    def _update(self, p, g, state, xp) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- saving ----------------------------------------------------------- #
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or int}}, "param_groups": [{hyper..., "params": [...]}]}``,
        PyTorch's layout with one group; arrays are CPU NumPy copies."""
        state = {}
        for i, s in enumerate(self.state):
            if s:
                state[i] = {k: (_host_copy(v) if hasattr(v, "shape") else v) for k, v in s.items()}
        group = {name: getattr(self, name) for name in self._hyper}
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        try:
            (group,) = state_dict["param_groups"]
            saved = state_dict["state"]
        except (KeyError, TypeError, ValueError):
            raise ValueError("state_dict: expected {'state': ..., 'param_groups': [one group]} "
                             "as Optimizer.state_dict() returns") from None
        if len(group["params"]) != len(self.params):
            raise ValueError(f"state_dict: holds {len(group['params'])} parameters, "
                             f"this optimizer has {len(self.params)}")
        new_state = [{} for _ in self.params]
        for i, s in saved.items():
            i = int(i)
            if not 0 <= i < len(self.params):
                raise ValueError(f"state_dict: holds state for parameter {i}, this optimizer has "
                                 f"parameters 0..{len(self.params) - 1}")
            p = self.params[i]
            for k, v in s.items():
                if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"state_dict: state {k!r} of parameter {i} has shape "
                                         f"{tuple(v.shape)}, the parameter has {p.shape}")
                    # A copy on the parameter's device in its dtype (the saved arrays may be
                    # NumPy or CuPy, and a float64 buffer would turn every update float64).
                    v = move_array(v, p.device).astype(p.dtype, copy=True)
                new_state[i][k] = v
        # each checked on its own, then the rules between them once all are set (a
        # nesterov=False group may lower momentum to 0 before it turns nesterov off)
        checked = {name: self._checked(name, _like(getattr(self, name), group[name]))
                   for name in self._hyper if name in group}
        previous = {name: getattr(self, name) for name in checked}
        self.__dict__.update(checked)
        try:
            self._check_together()
        except ValueError:
            self.__dict__.update(previous)
            raise
        self.state = new_state

    def __repr__(self):
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._hyper)
        return f"{type(self).__name__}({hyper}, params={len(self.params)})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's formulation).

        g = g + wd * p
        if momentum:  buf = g (first step)  else  buf = momentum * buf + (1 - dampening) * g
                      g = g + momentum * buf  (nesterov)  or  g = buf
        p = p - lr * g
    """

    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    _rules = {"lr": {}, "momentum": {}, "dampening": {}, "weight_decay": {}, "nesterov": "bool"}

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov

    def _check_together(self):
        if all(hasattr(self, n) for n in self._hyper) and self.nesterov and (
                self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov: needs momentum > 0 and dampening == 0, got "
                             f"momentum={self.momentum}, dampening={self.dampening}")

    def _update(self, p, g, state, xp):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += g if self.dampening == 0 else (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam with bias correction (PyTorch's, without amsgrad).

        g = g + wd * p
        m = b1 * m + (1 - b1) * g ;  v = b2 * v + (1 - b2) * g^2
        p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _rules = {"lr": {}, "betas": "betas", "eps": {}, "weight_decay": {}}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

    def _update(self, p, g, state, xp):
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * g
        tmp = g * g
        tmp *= 1.0 - b2
        v *= b2
        v += tmp
        bias1 = 1.0 - b1 ** t
        bias2 = 1.0 - b2 ** t
        xp.sqrt(v, out=tmp)                 # tmp = sqrt(v) / sqrt(bias2) + eps
        tmp /= math.sqrt(bias2)
        tmp += self.eps
        xp.divide(m, tmp, out=tmp)          # tmp = lr / bias1 * m / tmp
        tmp *= self.lr / bias1
        p -= tmp


class RMSprop(Optimizer):
    """RMSprop (PyTorch's: eps added outside the square root).

        g = g + wd * p
        v = alpha * v + (1 - alpha) * g^2
        centered:  a = alpha * a + (1 - alpha) * g ;  d = sqrt(v - a^2) + eps   else  d = sqrt(v) + eps
        momentum:  buf = momentum * buf + g / d ;  p = p - lr * buf             else  p = p - lr * g / d
    """

    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _rules = {"lr": {}, "alpha": {"maximum": 1.0}, "eps": {}, "weight_decay": {},
              "momentum": {}, "centered": "bool"}

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, lr)
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.centered = centered

    def _update(self, p, g, state, xp):
        a = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p)
            if self.momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p)
            if self.centered:
                state["grad_avg"] = xp.zeros_like(p)
        state["step"] += 1
        v = state["square_avg"]
        tmp = g * g
        tmp *= 1.0 - a
        v *= a
        v += tmp
        if self.centered:                   # tmp = sqrt(v - ga^2) + eps
            ga = state["grad_avg"]
            ga *= a
            ga += (1.0 - a) * g
            xp.multiply(ga, ga, out=tmp)
            xp.subtract(v, tmp, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:                               # tmp = sqrt(v) + eps
            xp.sqrt(v, out=tmp)
        tmp += self.eps
        xp.divide(g, tmp, out=tmp)          # tmp = g / denominator
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp
            p -= self.lr * buf
        else:
            tmp *= self.lr
            p -= tmp


class Adagrad(Optimizer):
    """Adagrad (PyTorch's).

        g = g + wd * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g^2        (s starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(s) + eps)
    """

    _hyper = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    _rules = {name: {} for name in _hyper}

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, lr)
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps

    def _update(self, p, g, state, xp):
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(p, self.initial_accumulator_value)
        state["step"] += 1
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1.0 + (state["step"] - 1) * self.lr_decay)
        s = state["sum"]
        tmp = g * g
        s += tmp
        xp.sqrt(s, out=tmp)                 # tmp = clr * g / (sqrt(s) + eps)
        tmp += self.eps
        xp.divide(g, tmp, out=tmp)
        tmp *= clr
        p -= tmp


# --------------------------------------------------------------------------- #
# Learning-rate schedulers
# --------------------------------------------------------------------------- #

class LRScheduler:
    """Sets ``optimizer.lr`` from the epoch count; call ``step()`` once per epoch,
    after the optimizer's steps. ``get_last_lr()`` returns ``[lr]`` like PyTorch.

    The learning rate is a closed form of the epoch and the lr the optimizer had
    when the scheduler was made: one scheduler alone gives PyTorch's values, but
    two on one optimizer, or an lr changed by hand, are not chained as PyTorch's
    chainable schedulers are (the last to step wins)."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a pycnn.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._last_lr = [optimizer.lr]

    def _lr_at(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        # float(): a state_dict loaded from disk may hold NumPy scalars (see _like)
        self.optimizer.lr = float(self._lr_at(self.last_epoch))
        self._last_lr = [self.optimizer.lr]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"step_size: expected a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check_number(gamma, "gamma")
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float):
        self.gamma = _check_number(gamma, "gamma")
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


__all__ = ["Optimizer", "NonFiniteGradient", "SGD", "Adam", "RMSprop", "Adagrad", "LRScheduler", "StepLR",
           "ExponentialLR"]
