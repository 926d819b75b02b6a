"""Argument normalisation and output-size arithmetic shared by every op.

The output size of a convolution or pool along one spatial dimension is the
cuDNN / PyTorch rule::

    out = floor((W + 2P - D(F-1) - 1) / S) + 1

Worked example: W=10, F=3, P=0, S=2, D=1 gives (10 + 0 - 2 - 1)/2 + 1 = 4.5,
floored to 4 (the last column of the input is never read). With
``ceil_mode=True`` (pools only) it rounds up to 5, except that a window may not
start in the right padding: PyTorch drops such a last window, and so do we.
"""
from __future__ import annotations

import math
import numbers


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints as ``(h, w)``, each at least ``minimum``. NumPy
    integers count as ints; bools and floats do not."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    given = value
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name}: expected values >= {minimum}, got {given!r}")
    return int(h), int(w)


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (NumPy integers count; bools do not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
           open_min: bool = False, open_max: bool = False) -> float:
    """``value`` as a finite float within the bounds (NumPy scalars count; bools,
    strings, None, NaN and infinities do not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if open_min else value < minimum):
        raise ValueError(f"{name}: expected a value {'>' if open_min else '>='} {minimum}, got {value!r}")
    if maximum is not None and (value >= maximum if open_max else value > maximum):
        raise ValueError(f"{name}: expected a value {'<' if open_max else '<='} {maximum}, got {value!r}")
    return float(value)


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int, *,
             dim: str, ceil_mode: bool = False, pad_left: int | None = None) -> int:
    """Output length along one dimension; raises ValueError with the numbers if < 1.

    ``pad_total`` is the padding on both sides together (2P when symmetric).
    ``pad_left`` (default ``pad_total // 2``) is only used by the ceil_mode rule.
    """
    span = dilation * (kernel - 1) + 1
    num = size + pad_total - span
    formula = (f"floor(({size} + {pad_total} - {dilation}*({kernel}-1) - 1)/{stride}) + 1"
               if not ceil_mode else
               f"ceil(({size} + {pad_total} - {dilation}*({kernel}-1) - 1)/{stride}) + 1")
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode:
        left = pad_total // 2 if pad_left is None else pad_left
        if (out - 1) * stride >= size + left:
            out -= 1
    if out < 1:
        raise ValueError(
            f"output {dim} size would be below 1: {formula} = {num / stride + 1:g}; "
            f"the input ({dim}={size}, padding {pad_total}) is smaller than the "
            f"dilated window ({span})")
    return out


def pool_geometry(op: str, x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Check and normalise the window of a pool on an NCHW input of ``x_shape``.

    Returns ``(kernel, stride, padding, dilation)`` as pairs (``stride`` defaults to
    the kernel). Raises ValueError naming ``op`` and the argument for padding above
    half the kernel, an output size below 1, or a window that reads only padding
    (which dilation allows even with padding of at most half the kernel).
    """
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    kernel = pair(kernel_size, f"{op}: kernel_size")
    stride = kernel if stride is None else pair(stride, f"{op}: stride")
    padding = pair(padding, f"{op}: padding", minimum=0)
    dilation = pair(dilation, f"{op}: dilation")
    for p, k, axis in zip(padding, kernel, ("height", "width")):
        if 2 * p > k:
            raise ValueError(f"{op}: padding should be at most half the kernel size; got padding "
                             f"{p} for kernel size {k} along the {axis}")
    out_hw = pool2d_output_shape(x_shape, kernel, stride, padding, dilation, ceil_mode)[2:]
    for i, axis in enumerate(("height", "width")):
        size = x_shape[2 + i]
        for o in range(out_hw[i]):
            start = o * stride[i] - padding[i]
            if not any(0 <= start + t * dilation[i] < size for t in range(kernel[i])):
                raise ValueError(
                    f"{op}: the window of output {axis} position {o} reads only padding (input "
                    f"{axis} {size}, kernel {kernel[i]}, padding {padding[i]}, dilation "
                    f"{dilation[i]}); reduce the padding or the dilation")
    return kernel, stride, padding, dilation


def conv_padding(padding, kernel: tuple[int, int], dilation: tuple[int, int],
                 stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """Convolution padding as ``(top, bottom, left, right)``.

    ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'``
    (output size equals input size; stride must be 1; an odd total is padded
    one more on the bottom/right, as PyTorch does).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding: expected an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph, pw, pw)


def conv2d_output_shape(x_shape, w_shape, stride, padding4, dilation) -> tuple[int, int, int, int]:
    n, _, h, w = x_shape
    k, _, r, s = w_shape
    p = out_size(h, r, stride[0], padding4[0] + padding4[1], dilation[0], dim="height")
    q = out_size(w, s, stride[1], padding4[2] + padding4[3], dilation[1], dim="width")
    return (n, k, p, q)


def pool2d_output_shape(x_shape, kernel, stride, padding, dilation, ceil_mode) -> tuple[int, int, int, int]:
    n, c, h, w = x_shape
    p = out_size(h, kernel[0], stride[0], 2 * padding[0], dilation[0], dim="height",
                 ceil_mode=ceil_mode, pad_left=padding[0])
    q = out_size(w, kernel[1], stride[1], 2 * padding[1], dilation[1], dim="width",
                 ceil_mode=ceil_mode, pad_left=padding[1])
    return (n, c, p, q)


def adaptive_bounds(in_size: int, out_size_: int, i: int) -> tuple[int, int]:
    """Window [start, end) of output cell i in adaptive pooling (PyTorch's rule)."""
    start = (i * in_size) // out_size_
    end = -(-((i + 1) * in_size) // out_size_)
    return start, end


def numel(shape) -> int:
    return math.prod(shape)
