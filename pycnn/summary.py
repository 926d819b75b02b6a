"""A Keras-style table of a model: one row per leaf-module call.

``summarize(model, input_shape)`` runs one forward pass on zeros of shape
``(1, C, H, W)`` (``input_shape`` is (C, H, W), or (N, C, H, W): then shapes and
activation memory are for a batch of N, FLOPs still per sample) in eval mode under ``no_grad`` (so BatchNorm's running
statistics do not move), with a forward hook on every leaf module, and returns
the rows and totals; ``summary(...)`` formats them as a table.

FLOP convention (per sample; one multiply-add is 2 FLOPs):

    Conv2d             2 * K * (C/groups) * R * S * P * Q   (+ K*P*Q for the bias)
    Linear             2 * in * out                         (+ out for the bias)
    BatchNorm2d        2 per output element (the normalisation folds to x*scale + shift)
    ReLU, LeakyReLU,
    Sigmoid, Tanh      1 per output element
    MaxPool2d,
    AvgPool2d          R * S per output element (one compare/add per window element)
    AdaptiveAvgPool2d  one add per input element
    Flatten, Identity,
    Dropout            0 (a view, or the identity in eval mode)

Work done outside leaf modules (the residual ``out + identity`` of a ResNet
block) has no row and is not counted. Activation memory is the byte size of
each row's output; the total sums the rows (what a backward pass would keep
alive, roughly). Parameters are counted per module, the first time it is called.
"""
from __future__ import annotations

import math

import numpy as np

from pycnn import nn
from pycnn.tensor import Tensor, no_grad, tensor


def _flops(module, inp, out) -> int:
    n_out = math.prod(out.shape)
    if isinstance(module, nn.Conv2d):
        k, c_g, r, s = module.weight.shape
        n, _, p, q = out.shape
        flops = 2 * n * k * c_g * r * s * p * q
        return flops + (n * k * p * q if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        rows = n_out // module.out_features
        flops = 2 * rows * module.in_features * module.out_features
        return flops + (rows * module.out_features if module.bias is not None else 0)
    if isinstance(module, nn.BatchNorm2d):
        return 2 * n_out
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)):
        return n_out
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return n_out * module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return math.prod(inp.shape)
    return 0


def _check_input_shape(input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints; (C, H, W), or (N, C, H, W) with a batch."""
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape: expected a tuple of ints such as (1, 28, 28) or "
                        f"(64, 1, 28, 28), got {input_shape!r}") from None
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                        for d in shape):
        raise ValueError(f"input_shape: expected positive ints, (C, H, W) such as (1, 28, 28) "
                         f"or with the batch (N, C, H, W) such as (64, 1, 28, 28), got "
                         f"{input_shape!r}")
    if len(shape) > 4:
        raise ValueError(f"input_shape: expected (C, H, W) or (N, C, H, W), got {len(shape)} "
                         f"dimensions {input_shape!r}")
    return tuple(int(d) for d in shape)


def _split_batch(input_shape):
    """(batch, per-sample shape): a 4-D shape carries its batch, a shorter one is one sample."""
    shape = _check_input_shape(input_shape)
    return (shape[0], shape[1:]) if len(shape) == 4 else (1, shape)


def summarize(model, input_shape, device: str = "cpu", dtype=np.float32) -> dict:
    """Rows and totals of one forward pass on a batch of one.

    Returns ``{"rows": [...], "total_params", "trainable_params", "total_flops",
    "activation_bytes", "param_bytes", "input_bytes", "input_shape", "output_shape"}``;
    each row is ``{"name", "type", "output_shape", "params", "trainable_params",
    "flops", "activation_bytes"}``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a pycnn.nn.Module, got {type(model).__name__}")
    batch, sample = _split_batch(input_shape)
    shape = (1,) + sample
    names = {id(m): name for name, m in model.named_modules()}
    rows, counted, handles = [], set(), []

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        params = list(module.parameters(recurse=False)) if id(module) not in counted else []
        counted.add(id(module))
        rows.append({
            "name": names.get(id(module), "") or type(module).__name__,
            "type": type(module).__name__,
            "output_shape": tuple(out.shape),
            "params": sum(p.size for p in params),
            "trainable_params": sum(p.size for p in params if p.requires_grad),
            "flops": int(_flops(module, inputs[0], out)),
            "activation_bytes": int(out.size * out.dtype.itemsize),
        })

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    for m in leaves:
        handles.append(m.register_forward_hook(hook))
    # Each module's own mode comes back (a BatchNorm frozen in eval inside a training
    # model stays frozen), not one flag for the whole tree.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        x = tensor(np.zeros(shape, dtype=dtype), device=device)
        with no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.train(training)

    params = list(model.parameters())
    y0 = y[0] if isinstance(y, tuple) else y
    if batch != 1:      # the pass ran on one sample; shapes and activations are per batch
        for r in rows:
            r["output_shape"] = (batch,) + tuple(r["output_shape"][1:])
            r["activation_bytes"] *= batch
        shape = (batch,) + sample
    return {
        "rows": rows,
        "batch_size": batch,
        "input_shape": shape,
        "output_shape": ((batch,) + tuple(y0.shape[1:])) if isinstance(y0, Tensor) else None,
        "total_params": sum(p.size for p in params),
        "trainable_params": sum(p.size for p in params if p.requires_grad),
        "total_flops": sum(r["flops"] for r in rows),
        "activation_bytes": sum(r["activation_bytes"] for r in rows),
        "param_bytes": sum(p.size * p.dtype.itemsize for p in params),
        "input_bytes": int(math.prod(shape) * np.dtype(dtype).itemsize),
    }


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _bytes(n: int) -> str:
    for suffix, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n} B"


def keras_shape(shape) -> str:
    """``(N, C, H, W)`` as Keras prints it: ``(None, H, W, C)`` (channels last, batch None)."""
    rest = tuple(shape[1:])
    if len(rest) == 3:
        rest = (rest[1], rest[2], rest[0])
    return "(" + ", ".join(["None"] + [str(d) for d in rest]) + ")"


def summary(model, input_shape, device: str = "cpu", dtype=np.float32, print_fn=print,
            keras: bool = False) -> str:
    """The summary table as a string; also passed to ``print_fn`` unless it is None.

    ``input_shape``: (C, H, W), or (N, C, H, W) to size activations for a batch of N.
    ``keras``: shapes as Keras prints them, ``(None, H, W, C)``."""
    info = summarize(model, input_shape, device=device, dtype=dtype)
    show = keras_shape if keras else (lambda s: str(tuple(s)))
    header = ("Layer (type)", "Output Shape", "Param #", "FLOPs", "Act. memory")
    body = [(f"{r['name']} ({r['type']})", show(r["output_shape"]), f"{r['params']:,}",
             f"{r['flops']:,}", _bytes(r["activation_bytes"])) for r in info["rows"]]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def fmt(row):
        left = row[0].ljust(widths[0])
        return "  ".join([left, row[1].ljust(widths[1])] +
                         [c.rjust(w) for c, w in zip(row[2:], widths[2:])])

    rule_len = len(fmt(header))
    shown = show(info["input_shape"]) if keras else str(info["input_shape"])
    lines = [f"{type(model).__name__} on input {shown}", "=" * rule_len,
             fmt(header), "=" * rule_len]
    lines += [fmt(row) for row in body]
    total, trainable = info["total_params"], info["trainable_params"]
    lines += [
        "=" * rule_len,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Total FLOPs (per sample, multiply-add = 2): {info['total_flops']:,} "
        f"({_human(info['total_flops'], 'FLOP')})",
        "-" * rule_len,
        f"Input size: {_bytes(info['input_bytes'])}",
        f"Activation memory (outputs of all rows"
        + (f", batch of {info['batch_size']}" if info["batch_size"] != 1 else "")
        + f"): {_bytes(info['activation_bytes'])}",
        f"Params size: {_bytes(info['param_bytes'])}",
        "=" * rule_len,
    ]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text


__all__ = ["summary", "summarize"]
