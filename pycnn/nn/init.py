"""Weight initialisation and the seedable generator behind every random draw in nn.

All random numbers are drawn on the CPU from one NumPy ``Generator``, the one in
``pycnn.random`` (so that a seed gives the same weights whatever the device), and then copied into the
tensor's array, which may live on the GPU. ``manual_seed(seed)`` resets it;
layers draw their initial weights from it, and ``Dropout`` draws one fresh mask
seed from it per training-mode call.

The ``*_`` functions fill a Tensor in place and return it, like PyTorch's.
Fans follow PyTorch: for a weight of shape ``(out, in, *kernel)``,
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from pycnn import random as _random
from pycnn.tensor import array_module


def manual_seed(seed: int) -> None:
    """Reseed the generator used for initial weights and dropout masks.

    The same generator as ``pycnn.manual_seed``: either call seeds both.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    _random.manual_seed(int(seed))


def generator() -> np.random.Generator:
    """The current generator (replaced by ``manual_seed``)."""
    return _random.generator()


_SKIP = [False]


@contextmanager
def skip_init():
    """Inside, the ``*_`` fill functions leave tensors as they are and draw nothing: a
    model built only to receive a checkpoint's weights skips its random draws (138M
    of them for VGG-16, about 7 s on one core). What is left is zeros (or the ones
    of a BatchNorm weight); the generator does not advance."""
    before = _SKIP[0]
    _SKIP[0] = True
    try:
        yield
    finally:
        _SKIP[0] = before


def _fill(tensor, values: np.ndarray):
    """Copy CPU ``values`` into the tensor's array in place, on its device, in its dtype."""
    data = tensor.data
    if tuple(values.shape) != tuple(data.shape):
        raise ValueError(f"tensor: expected shape {tuple(values.shape)}, got {tuple(data.shape)}")
    xp = array_module(data)
    data[...] = xp.asarray(values.astype(data.dtype, copy=False))
    return tensor


def _fans(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"tensor: fan in/out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


_LINEAR_GAIN = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d",
                "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table)."""
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "selu":
        return 0.75
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"nonlinearity: expected one of {', '.join(_LINEAR_GAIN)}, tanh, selu, "
                     f"relu, leaky_relu; got {nonlinearity!r}")


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = _fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    if _SKIP[0]:
        return tensor
    return _fill(tensor, generator().uniform(a, b, size=tuple(tensor.data.shape)))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    if _SKIP[0]:
        return tensor
    return _fill(tensor, generator().normal(mean, std, size=tuple(tensor.data.shape)))


def constant_(tensor, value: float):
    if _SKIP[0]:
        return tensor
    return _fill(tensor, np.full(tuple(tensor.data.shape), value))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan).

    PyTorch's default for Conv2d and Linear is ``a=sqrt(5)``: gain =
    sqrt(2 / (1 + 5)) = sqrt(1/3), so bound = sqrt(1/3) * sqrt(3 / fan_in) =
    1 / sqrt(fan_in).
    """
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(tensor.data.shape, mode))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """N(0, std^2) with std = gain / sqrt(fan)."""
    gain = calculate_gain(nonlinearity, a)
    std = gain / math.sqrt(_fan(tensor.data.shape, mode))
    return normal_(tensor, 0.0, std)


def xavier_uniform_(tensor, gain: float = 1.0):
    """U(-bound, bound) with bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tensor.data.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain: float = 1.0):
    fan_in, fan_out = _fans(tensor.data.shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
