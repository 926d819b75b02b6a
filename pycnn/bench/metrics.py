"""FLOPs and minimum bytes moved per op: the two axes of the roofline.

Convolution: every pass (forward, backward-data, backward-filter) does FLOPs = 2 * N * K * (C/groups) * R * S * P * Q.
Minimum traffic reads each input once and writes each output once:
forward x + w -> y, backward-data dy + w -> dx, backward-filter x + dy -> dw.
Pools and activations are memory-bound, so their FLOP count is nominal (one per
element or window tap); their roofline fraction is set by the bytes alone.
"""
from __future__ import annotations

from pycnn.shapes import conv2d_output_shape, numel, pool2d_output_shape

F32 = 4    # bytes per float32 element
I64 = 8    # bytes per max-pool index (int64, as PyTorch returns them)

CONV_OPS = ("conv_fwd", "conv_bwd_data", "conv_bwd_filter", "conv_bias_relu_fwd")
OPS = {
    "conv": CONV_OPS,
    "max_pool": ("max_pool_fwd", "max_pool_bwd"),
    "avg_pool": ("avg_pool_fwd", "avg_pool_bwd"),
    "global_avg_pool": ("gap_fwd", "gap_bwd"),
    "act": ("relu_fwd", "relu_bwd", "leaky_relu_fwd", "leaky_relu_bwd",
            "sigmoid_fwd", "sigmoid_bwd", "tanh_fwd", "tanh_bwd"),
    "bias_relu": ("bias_relu_fwd",),
    "batch_norm": ("batch_norm_fwd", "batch_norm_bwd"),     # training: batch statistics
}
BATCH_NORM_OPS = OPS["batch_norm"]
ALL_OPS = tuple(op for ops in OPS.values() for op in ops)


def conv_shapes(case: dict, n: int):
    """(x_shape, w_shape, y_shape) of a conv case at batch n."""
    x = (n, case["C"], case["H"], case["W"])
    w = (case["K"], case["C"] // case["groups"], case["R"], case["S"])
    y = conv2d_output_shape(x, w, case["stride"], case["padding4"], case["dilation"])
    return x, w, y


def pool_shapes(case: dict, n: int):
    """(x_shape, y_shape) of a pool case at batch n."""
    x = (n, case["C"], case["H"], case["W"])
    if case["op"] == "global_avg_pool":
        return x, (n, case["C"], 1, 1)
    y = pool2d_output_shape(x, case["kernel"], case["stride"], case["padding"], (1, 1), False)
    return x, y


def shape_class(case: dict) -> str | None:
    """What a conv case is, for comparing kernel versions where they differ:
    "depthwise" (one input channel per group), "grouped", else the filter size
    ("1x1", "3x3", "7x7"); " strided" and " dilated" added where stride or dilation
    passes 1. None for the other ops."""
    if case["op"] != "conv":
        return None
    if case["C"] == case["groups"]:
        name = "depthwise"
    elif case["groups"] > 1:
        name = "grouped"
    else:
        name = f"{case['R']}x{case['S']}"
    if max(case["stride"]) > 1:
        name += " strided"
    if max(case["dilation"]) > 1:
        name += " dilated"
    return name


def conv_flops(case: dict, n: int) -> int:
    _, (k, cg, r, s), (_, _, p, q) = conv_shapes(case, n)
    return 2 * n * k * cg * r * s * p * q


def conv_bytes(op: str, case: dict, n: int) -> int:
    x, w, y = (numel(s) for s in conv_shapes(case, n))
    k = conv_shapes(case, n)[1][0]
    moved = {"conv_fwd": x + w + y, "conv_bwd_data": y + w + x, "conv_bwd_filter": x + y + w,
             "conv_bias_relu_fwd": x + w + k + y}
    return F32 * moved[op]


def op_metrics(op: str, case: dict, n: int) -> tuple[int, int]:
    """(FLOPs, minimum bytes) of ``op`` on ``case`` at batch n."""
    if op in CONV_OPS:
        return conv_flops(case, n), conv_bytes(op, case, n)
    if case["op"] in ("max_pool", "avg_pool", "global_avg_pool"):
        xs, ys = pool_shapes(case, n)
        x, y = numel(xs), numel(ys)
        taps = x if case["op"] == "global_avg_pool" else y * case["kernel"][0] * case["kernel"][1]
        return {
            "max_pool_fwd": (taps, F32 * (x + y) + I64 * y),         # x -> y, indices
            "max_pool_bwd": (y, F32 * (y + x) + I64 * y),            # dy, indices -> dx
            "avg_pool_fwd": (taps, F32 * (x + y)),
            "avg_pool_bwd": (taps, F32 * (y + x)),
            "gap_fwd": (taps, F32 * (x + y)),
            "gap_bwd": (x, F32 * (y + x)),
        }[op]
    x = n * case["C"] * case["H"] * case["W"]
    if op in BATCH_NORM_OPS:          # nominal FLOPs: a few per element; params are per channel
        params = 6 * case["C"]       # weight, bias, running mean and variance, saved mean and invstd
        return 4 * x, F32 * ((2 if op == "batch_norm_fwd" else 3) * x + params)   # x -> y; dy, x -> dx
    if op == "bias_relu_fwd":
        return 2 * x, F32 * (2 * x + case["C"])                      # x, b -> y
    if op.endswith("_fwd"):
        return x, F32 * 2 * x                                         # x -> y
    return x, F32 * 3 * x                                             # dy, y (or x) -> dx
