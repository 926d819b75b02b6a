"""One benchmark problem per (op, case): random inputs, pycnn's call and the
PyTorch call on the same buffers.

``build`` returns a Problem whose ``ours(be, **kw)`` calls a pycnn backend (the
NumPy reference or the CUDA backend, or the CUDA conv module with ``version=``)
and whose ``theirs(torch)`` returns a zero-argument PyTorch call on the same
device buffers (shared through DLPack, no copy). What a backward pass needs from
its forward pass (max-pool indices, the ReLU output) is computed once here, by
each side with its own forward, outside the timed region.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pycnn.bench.metrics import BATCH_NORM_OPS, CONV_OPS, conv_shapes, pool_shapes

LEAKY_SLOPE = 0.01
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


@dataclass
class Problem:
    ours: Callable          # ours(be, **kw) -> output array
    theirs: Callable        # theirs(torch) -> zero-argument callable -> output tensor


def randn(xp, shape, seed=0):
    """Fresh standard-normal float32 inputs (never zeros: some units run faster on zeros)."""
    if xp.__name__ == "numpy":
        return xp.random.default_rng(seed).standard_normal(shape, dtype=xp.float32)
    return xp.random.standard_normal(shape, dtype=xp.float32)


def first(out):
    """The array to check: the output itself, or y of a (y, indices) pair."""
    return out[0] if isinstance(out, tuple) else out


def build(op: str, case: dict, n: int, be, xp) -> Problem:
    if op in CONV_OPS:
        return _conv(op, case, n, xp)
    if op in BATCH_NORM_OPS:
        return _batch_norm(op, case, n, be, xp)
    if case["op"] in ("max_pool", "avg_pool", "global_avg_pool"):
        return _pool(op, case, n, be, xp)
    return _act(op, case, n, be, xp)


def _tensors(torch, *arrays):
    return [torch.from_dlpack(a) for a in arrays]


def _conv(op, c, n, xp):
    xs, ws, ys = conv_shapes(c, n)
    x, w, dy, b = randn(xp, xs, 1), randn(xp, ws, 2), randn(xp, ys, 3), randn(xp, (ws[0],), 4)
    st, p4, dil, g = c["stride"], c["padding4"], c["dilation"], c["groups"]
    pad = list(c["padding"])

    if op == "conv_fwd":
        def ours(be, **kw):
            return be.conv2d_fwd(x, w, None, st, p4, dil, g, **kw)
    elif op == "conv_bias_relu_fwd":
        def ours(be, **kw):
            return be.conv2d_bias_relu_fwd(x, w, b, st, p4, dil, g, **kw)
    elif op == "conv_bwd_data":
        def ours(be, **kw):
            return be.conv2d_bwd_data(dy, w, xs, st, p4, dil, g, **kw)
    else:
        def ours(be, **kw):
            return be.conv2d_bwd_filter(x, dy, ws, st, p4, dil, g, **kw)

    def theirs(torch):
        tx, tw, tdy, tb = _tensors(torch, x, w, dy, b)
        if op == "conv_fwd":
            return lambda: torch.nn.functional.conv2d(tx, tw, None, st, pad, dil, g)
        if op == "conv_bias_relu_fwd":   # eager PyTorch: cuDNN's conv with bias, then a ReLU kernel
            return lambda: torch.relu(torch.nn.functional.conv2d(tx, tw, tb, st, pad, dil, g))
        mask = [op == "conv_bwd_data", op == "conv_bwd_filter", False]
        pick = 0 if op == "conv_bwd_data" else 1
        # aten.convolution_backward(grad_output, input, weight, bias_sizes, stride,
        # padding, dilation, transposed, output_padding, groups, output_mask)
        return lambda: torch.ops.aten.convolution_backward(
            tdy, tx, tw, None, list(st), pad, list(dil), False, [0, 0], g, mask)[pick]
    return Problem(ours, theirs)


def _pool(op, c, n, be, xp):
    xs, ys = pool_shapes(c, n)
    x, dy = randn(xp, xs, 1), randn(xp, ys, 3)
    if c["op"] == "global_avg_pool":
        fwd = op == "gap_fwd"

        def ours(be, **kw):
            return be.adaptive_avg_pool2d_fwd(x, (1, 1)) if fwd else be.adaptive_avg_pool2d_bwd(dy, xs)

        def theirs(torch):
            tx, tdy = _tensors(torch, x, dy)
            if fwd:
                return lambda: torch.nn.functional.adaptive_avg_pool2d(tx, 1)
            return lambda: torch.ops.aten._adaptive_avg_pool2d_backward(tdy, tx)
        return Problem(ours, theirs)

    k, st, pad = c["kernel"], c["stride"], c["padding"]
    kl, sl, pl = list(k), list(st), list(pad)
    if c["op"] == "avg_pool":
        fwd = op == "avg_pool_fwd"

        def ours(be, **kw):
            if fwd:
                return be.avg_pool2d_fwd(x, k, st, pad, False, True)
            return be.avg_pool2d_bwd(dy, xs, k, st, pad, False, True)

        def theirs(torch):
            tx, tdy = _tensors(torch, x, dy)
            if fwd:
                return lambda: torch.nn.functional.avg_pool2d(tx, kl, sl, pl, False, True)
            # avg_pool2d_backward(grad_output, self, kernel_size, stride, padding,
            # ceil_mode, count_include_pad, divisor_override)
            return lambda: torch.ops.aten.avg_pool2d_backward(tdy, tx, kl, sl, pl, False, True, None)
        return Problem(ours, theirs)

    if op == "max_pool_fwd":
        def ours(be, **kw):
            return be.max_pool2d_fwd(x, k, st, pad, (1, 1), False)

        def theirs(torch):
            (tx,) = _tensors(torch, x)
            return lambda: torch.ops.aten.max_pool2d_with_indices(tx, kl, sl, pl, [1, 1], False)[0]
        return Problem(ours, theirs)

    _, indices = be.max_pool2d_fwd(x, k, st, pad, (1, 1), False)

    def ours(be, **kw):
        return be.max_pool2d_bwd(dy, indices, xs, k, st, pad, (1, 1), **kw)

    def theirs(torch):
        tx, tdy = _tensors(torch, x, dy)
        _, tidx = torch.ops.aten.max_pool2d_with_indices(tx, kl, sl, pl, [1, 1], False)
        # max_pool2d_with_indices_backward(grad_output, self, kernel_size, stride,
        # padding, dilation, ceil_mode, indices)
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            tdy, tx, kl, sl, pl, [1, 1], False, tidx)
    return Problem(ours, theirs)


def _act(op, c, n, be, xp):
    shape = (n, c["C"], c["H"], c["W"])
    x, dy = randn(xp, shape, 1), randn(xp, shape, 3)
    if op == "bias_relu_fwd":
        b = randn(xp, (c["C"],), 2)

        def theirs(torch):
            tx, tb = _tensors(torch, x, b)
            tb = tb.view(1, -1, 1, 1)
            return lambda: torch.relu(tx + tb)      # PyTorch has no fused bias+ReLU: two kernels
        return Problem(lambda be, **kw: be.bias_relu_fwd(x, b), theirs)

    name, direction = op.rsplit("_", 1)
    if name == "leaky_relu":
        if direction == "fwd":
            return Problem(lambda be, **kw: be.leaky_relu_fwd(x, LEAKY_SLOPE),
                           lambda torch: _leaky_fwd(torch, x))
        return Problem(lambda be, **kw: be.leaky_relu_bwd(dy, x, LEAKY_SLOPE),
                       lambda torch: _leaky_bwd(torch, dy, x))

    if direction == "fwd":
        def theirs(torch):
            (tx,) = _tensors(torch, x)
            return lambda: getattr(torch, name)(tx)
        return Problem(lambda be, **kw: getattr(be, op)(x), theirs)

    # relu, sigmoid and tanh backward take the forward output y
    y = getattr(be, f"{name}_fwd")(x)

    def theirs(torch):
        tx, tdy = _tensors(torch, x, dy)
        ty = getattr(torch, name)(tx)
        if name == "relu":
            return lambda: torch.ops.aten.threshold_backward(tdy, ty, 0)
        return lambda: getattr(torch.ops.aten, f"{name}_backward")(tdy, ty)
    return Problem(lambda be, **kw: getattr(be, op)(dy, y), theirs)


def _batch_norm(op, c, n, be, xp):
    """Training batch norm, affine, with running statistics (updated by every call,
    on both sides: as in a training step). The backward takes each side's own saved
    statistics from a forward run here, outside the timed region."""
    shape, ch = (n, c["C"], c["H"], c["W"]), c["C"]
    x, dy = randn(xp, shape, 1), randn(xp, shape, 3)
    w, b = randn(xp, (ch,), 2), randn(xp, (ch,), 4)
    rm, rv = xp.zeros(ch, dtype=xp.float32), xp.ones(ch, dtype=xp.float32)
    if op == "batch_norm_fwd":
        def ours(be, **kw):
            return be.batch_norm_fwd(x, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS, **kw)

        def theirs(torch):
            tx, tw, tb, trm, trv = _tensors(torch, x, w, b, rm.copy(), rv.copy())
            # native_batch_norm(input, weight, bias, running_mean, running_var, training,
            # momentum, eps) -> (out, save_mean, save_invstd)
            return lambda: torch.ops.aten.native_batch_norm(tx, tw, tb, trm, trv, True,
                                                            BN_MOMENTUM, BN_EPS)[0]
        return Problem(ours, theirs)

    _, mean, invstd = be.batch_norm_fwd(x, w, b, rm.copy(), rv.copy(), True, BN_MOMENTUM, BN_EPS)

    def ours(be, **kw):
        return be.batch_norm_bwd(dy, x, w, mean, invstd, True, **kw)

    def theirs(torch):
        tx, tdy, tw, tb, trm, trv = _tensors(torch, x, dy, w, b, rm.copy(), rv.copy())
        _, tmean, tinvstd = torch.ops.aten.native_batch_norm(tx, tw, tb, trm, trv, True,
                                                             BN_MOMENTUM, BN_EPS)
        # native_batch_norm_backward(grad_out, input, weight, running_mean, running_var,
        # save_mean, save_invstd, train, eps, output_mask) -> (dx, dweight, dbias)
        return lambda: torch.ops.aten.native_batch_norm_backward(
            tdy, tx, tw, trm, trv, tmean, tinvstd, True, BN_EPS, [True, True, True])[0]
    return Problem(ours, theirs)


def _leaky_fwd(torch, x):
    (tx,) = _tensors(torch, x)
    return lambda: torch.nn.functional.leaky_relu(tx, LEAKY_SLOPE)


def _leaky_bwd(torch, dy, x):
    tdy, tx = _tensors(torch, dy, x)
    # leaky_relu_backward(grad_output, self, negative_slope, self_is_result)
    return lambda: torch.ops.aten.leaky_relu_backward(tdy, tx, LEAKY_SLOPE, False)
