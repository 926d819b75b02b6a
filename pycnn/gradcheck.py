"""Finite-difference gradient checking.

``gradcheck(fn, inputs)`` compares the analytic backward of ``fn`` with central
differences: for a random cotangent v of the output's shape, the backward gives
J^T v for every input; perturbing each input element by +-eps and measuring
<v, fn(x)> gives the same quantity numerically. Every element of every input
that requires grad is checked. float64 only: in float32 the difference quotient
is mostly rounding noise.
"""
from __future__ import annotations

import numpy as np

from pycnn.tensor import Tensor, array_module, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def _first_tensor(out):
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"gradcheck: fn must return a Tensor (or a tuple starting with one), "
                    f"got {type(out).__name__}")


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              seed: int = 0) -> bool:
    """Check ``fn(*inputs)``'s backward against central differences.

    ``inputs`` is a sequence of Tensors (other values are passed through).
    Returns True, or raises GradcheckError naming the input, the element index
    and both values of the first mismatch.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; gradcheck needs float64 "
                            "inputs, since float32 finite differences are rounding noise "
                            "(use .astype(numpy.float64) and requires_grad=True)")

    # Fresh leaves, so the caller's tensors and their .grad are left alone.
    leaves = [Tensor(t.data.copy(), requires_grad=t.requires_grad) if isinstance(t, Tensor) else t
              for t in inputs]
    out = _first_tensor(fn(*leaves))
    xp = array_module(out.data)
    rng = np.random.default_rng(seed)
    v = xp.asarray(rng.standard_normal(out.shape))
    out.backward(v)

    def project(args) -> float:
        with no_grad():
            return float((_first_tensor(fn(*args)).data * v).sum())

    for i in checked:
        leaf = leaves[i]
        analytic = leaf.grad.data if leaf.grad is not None else xp.zeros(leaf.shape)
        analytic = np.asarray(analytic.get() if xp is not np else analytic).reshape(-1)
        flat = leaf.data.reshape(-1)  # a view: writing it perturbs the input in place
        for j in range(flat.size):
            orig = float(flat[j])
            flat[j] = orig + eps
            plus = project(leaves)
            flat[j] = orig - eps
            minus = project(leaves)
            flat[j] = orig
            numeric = (plus - minus) / (2 * eps)
            if not abs(numeric - analytic[j]) <= atol + rtol * abs(numeric):
                index = np.unravel_index(j, leaf.shape)
                raise GradcheckError(
                    f"gradcheck: gradient mismatch for input {i} (shape {leaf.shape}) at index "
                    f"{tuple(int(k) for k in index)}: analytic {analytic[j]:.10g}, numerical "
                    f"{numeric:.10g} (atol={atol}, rtol={rtol})")
    return True
