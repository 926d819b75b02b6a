"""Run every CUDA kernel against the NumPy reference and record the outcome.

    python -m pycnn.verify [--out bench/results] [--quick] [--sanitizer-log FILE ...]

For every kernel and pass (and every convolution version in
``pycnn.backends.cuda.conv.VERSIONS``) this runs the case grid below on the GPU
and on ``pycnn.backends.numpy_ref``, and records the maximum absolute and
relative error and pass/fail, with the git commit, a sha256 of ``kernels/``
(sorted paths and contents), the GPU, driver and CUDA versions, into
``<out>/verify-<gpu-name>.json``. ``tests/test_gpu.py`` runs the same cases.

The oracle: the reference runs in float64 on the very float32 values the GPU
gets, so the error measured is the kernel's own float32 rounding (plus any bug).
Error of an output: max |gpu - ref| / max |ref| (relative to the output's scale,
so entries near zero do not blow it up); integer outputs (argmax indices,
dropout masks) must match exactly. Tolerances (float32, unit roundoff 6e-8):
  1e-5  pools, activations, softmax, cross-entropy, dropout: a few roundings
        per output, or short sums;
  1e-4  batch norm: per-channel sums over N*H*W values feed every output, and
        dx subtracts two such terms from dy;
  1e-4  convolutions: each output sums C/groups*R*S products (a long
        reduction for bwd_filter) whose rounding order differs from the
        reference's.

compute-sanitizer: run e.g.
    compute-sanitizer --tool memcheck python -m pycnn.verify --quick --no-write --no-memory-pool > memcheck.log
    compute-sanitizer --tool racecheck python -m pycnn.verify --quick --no-write > racecheck.log
(memcheck knows only the bounds of whole cudaMalloc blocks: inside CuPy's pool an
array is a slice of a larger block, and a kernel running past its end into a
neighbour goes unseen; --no-memory-pool gives every array its own allocation.)
then ``python -m pycnn.verify --sanitizer-log memcheck.log racecheck.log`` records
their outcome (tool, error count) in the JSON next to the comparison.

Without a GPU (or CuPy, or the built extension) it exits with status 2 and says why.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import json
import math
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pycnn import paths

TOL_POINTWISE = 1e-5
TOL_BATCH_NORM = 1e-4
TOL_CONV = 1e-4

CONV_OPS = ("conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter")
#: Split counts forced on conv2d_bwd_filter (besides its default) in every conv case.
SPLIT_K_RUNS = (3, 7)


@dataclass
class Case:
    """One call of backend function ``op`` with ``args`` (NumPy arrays and plain values).

    Float arrays hold float32-representable values; the GPU gets them as float32,
    the reference as float64. ``inplace`` lists argument positions the op updates
    in place (compared after the call, like outputs). ``misalign`` puts the GPU's
    float arrays 4 bytes off a 16-byte boundary (the kernels' scalar path).
    """
    name: str
    op: str
    args: tuple
    tol: float = TOL_POINTWISE
    inplace: tuple = ()
    misalign: bool = False
    versions: bool = False          # run every version in conv.VERSIONS for this op
    kwargs: dict = field(default_factory=dict)
    quick: bool = False             # in --quick (the sanitizer runs) whatever its rank


def _rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- the grid

# (N, C, H, W), (K, R, S), stride, padding (top, bottom, left, right), dilation, groups, bias.
# CONV_GRID is the option grid that tests/test_reference.py checks the reference on
# against loop definitions; the GPU cases add sizes that are not multiples of any
# tile (13, 17, K=33, C=20), batch 1, C=1, K=1, 1x1 and 7x7 filters, stride 2 on odd inputs.
CONV_GRID = [
    ((2, 3, 7, 9), (4, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    ((2, 3, 7, 9), (4, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True),
    ((1, 2, 7, 9), (3, 3, 3), (1, 2), (2, 2, 1, 1), (1, 1), 1, False),
    ((2, 2, 6, 5), (3, 2, 2), (1, 1), (0, 1, 0, 1), (1, 1), 1, True),     # 'same', even kernel
    ((2, 2, 6, 7), (3, 4, 4), (1, 1), (1, 2, 1, 2), (1, 1), 1, False),    # 'same', 4x4
    ((2, 2, 7, 9), (3, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 1, True),     # dilation 2
    ((1, 2, 7, 9), (2, 3, 3), (2, 1), (0, 0, 2, 2), (2, 1), 1, True),
    ((2, 4, 7, 9), (6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, True),     # groups 2
    ((2, 3, 7, 9), (3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, True),     # depthwise
    ((2, 3, 7, 9), (6, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 3, False),    # depthwise, K = 2C
    ((2, 2, 7, 9), (3, 1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 1, True),     # 1x3
    ((2, 2, 7, 9), (3, 3, 2), (2, 1), (1, 0, 0, 1), (1, 1), 1, True),     # 3x2, asymmetric pad
    ((1, 2, 7, 9), (2, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1, True),     # 5x5
    ((1, 1, 5, 5), (1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, False),    # batch 1, C = 1, K = 1
    ((2, 4, 7, 9), (4, 3, 2), (2, 2), (0, 2, 1, 0), (2, 2), 2, True),     # everything at once
    ((2, 3, 7, 9), (2, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, True),     # 1x1, stride 2
    ((1, 2, 4, 5), (2, 3, 3), (2, 2), (3, 3, 3, 3), (1, 1), 1, True),     # padding > kernel
]
CONV_CASES = CONV_GRID + [
    ((2, 20, 13, 17), (33, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),  # off-tile sizes
    ((3, 5, 15, 15), (7, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, True),   # 7x7 stride 2, odd input
    ((1, 64, 9, 9), (70, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, False),  # 1x1, K off-tile
    ((2, 32, 11, 11), (32, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 32, True),  # depthwise, stride 2
    ((1, 1, 17, 13), (1, 5, 3), (2, 1), (2, 2, 1, 1), (1, 2), 1, True),   # C = K = 1, odd
    ((2, 8, 24, 23), (16, 5, 5), (1, 1), (4, 3, 4, 2), (2, 2), 8, True),  # depthwise x2, 5x5 dilated,
                                                                           # planes past 256 pixels
    ((1, 6, 19, 18), (6, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 6, False),  # depthwise 7x7 stride 2
    ((2, 24, 15, 14), (40, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True),  # stride 2, phases past a tile
    ((1, 4, 16, 17), (5, 3, 3), (3, 3), (2, 2, 2, 2), (2, 2), 1, False),   # stride 3, dilation 2
    # The launchers take the 128x128 tiles for >= 96 columns and a grid of >= 1 block per
    # SM (132 on an H100): all three passes here (143 and 4 x 36 blocks), a partial tile
    # in M and in the columns; stride 2 for version 11's phases
    ((2, 100, 96, 95), (100, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    ((2, 100, 96, 95), (100, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, False),
]
#: The conv cases of --quick (CONV_CASES indices): two small dense ones, depthwise
#: (version 6), sizes off every tile, and the two large-tile cases.
QUICK_CONV = (0, 1, 8, 17, len(CONV_CASES) - 2, len(CONV_CASES) - 1)

POOL_GRID_SHAPES = [(2, 3, 7, 9), (1, 2, 8, 6)]          # also tests/test_reference.py's
POOL_SHAPES = POOL_GRID_SHAPES + [(2, 5, 13, 11)]
# kernel, stride, padding, dilation
MAX_CASES = [
    ((2, 2), (2, 2), (0, 0), (1, 1)),
    ((3, 3), (2, 2), (1, 1), (1, 1)),     # overlapping 3x3 stride 2 (several windows per input)
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 2), (1, 1), (0, 0), (2, 2)),
    ((3, 3), (2, 2), (1, 1), (2, 2)),
    ((2, 3), (2, 1), (1, 0), (1, 2)),
]
# kernel, stride, padding
AVG_CASES = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 3), (1, 1), (1, 1)),
    ((2, 2), (1, 1), (1, 1)),
    ((3, 2), (2, 1), (1, 0)),
]
ADAPTIVE = [((2, 3, 7, 9), (1, 1)), ((2, 3, 7, 9), (2, 3)), ((2, 3, 7, 9), (3, 3)),
            ((2, 3, 7, 9), (3, 4)), ((2, 3, 7, 9), (7, 9)), ((2, 3, 7, 9), (5, 2)),
            ((1, 2, 14, 14), (4, 4)), ((4, 64, 7, 7), (1, 1)), ((2, 8, 3, 3), (1, 1))]
ACT_SHAPES = [(2, 3, 4, 5), (3, 5, 7), (1,), (4099,), (8, 16, 33, 31)]
SOFTMAX = [((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), 2),
           ((4, 1000), 1), ((2, 10, 7, 7), 1), ((3, 1), 1), ((5, 70), 1)]
CROSS_ENTROPY = [(8, 10), (1, 1), (33, 1000), (5, 3), (1500, 7)]
BATCH_NORM = [(5, 3), (3, 2, 3, 2), (4, 16, 7, 7), (3, 3, 1, 1), (64, 10), (8, 3, 33, 17),
              (16, 4, 32, 32)]     # 16384 values per channel: split by default (version 2)
QUICK_BATCH_NORM = ((16, 4, 32, 32),)    # in --quick besides the first two: several splits
DROPOUT = [((1000,), 0.5, 0), ((2, 3, 5, 7), 0.3, 12345), ((4099,), 0.0, 7),
           ((64, 33), 1.0, 3), ((3, 7), 0.9, -1), ((256,), 0.5, 2**40 + 7)]


def _conv_cases(rng):
    from pycnn.backends import numpy_ref as ref
    out = []
    for i, (x_shape, (k, r, s), stride, pad, dil, groups, has_bias) in enumerate(CONV_CASES):
        n, c, h, w = x_shape
        x = _rand(rng, *x_shape)
        wt = _rand(rng, k, c // groups, r, s)
        b = _rand(rng, k) if has_bias else None
        y_shape = ref.conv2d_fwd(x, wt, None, stride, pad, dil, groups).shape
        dy = _rand(rng, *y_shape)
        tag = f"conv{i:02d}-x{x_shape}-w{(k, c // groups, r, s)}-s{stride}-p{pad}-d{dil}-g{groups}"
        tag = tag.replace(" ", "")
        quick = i in QUICK_CONV
        out += [
            Case(f"conv2d_fwd[{tag}]", "conv2d_fwd", (x, wt, b, stride, pad, dil, groups),
                 TOL_CONV, versions=True, quick=quick),
            Case(f"conv2d_bias_relu_fwd[{tag}]", "conv2d_bias_relu_fwd",
                 (x, wt, b, stride, pad, dil, groups), TOL_CONV, versions=True, quick=quick),
            Case(f"conv2d_bwd_data[{tag}]", "conv2d_bwd_data",
                 (dy, wt, x_shape, stride, pad, dil, groups), TOL_CONV, versions=True, quick=quick),
            Case(f"conv2d_bwd_filter[{tag}]", "conv2d_bwd_filter",
                 (x, dy, wt.shape, stride, pad, dil, groups), TOL_CONV, versions=True, quick=quick),
            Case(f"conv2d_bwd_bias[{tag}]", "conv2d_bwd_bias", (dy,), TOL_CONV, versions=True, quick=quick),
        ]
    return out


def _pool_cases(rng):
    from pycnn.backends import numpy_ref as ref
    out = []
    for shape in POOL_SHAPES:
        for kernel, stride, pad, dil in MAX_CASES:
            for ceil in (False, True):
                tag = f"{shape}-k{kernel}-s{stride}-p{pad}-d{dil}-ceil{int(ceil)}".replace(" ", "")
                x = _rand(rng, *shape)
                try:
                    y, idx = ref.max_pool2d_fwd(x, kernel, stride, pad, dil, ceil)
                except ValueError:       # window larger than the padded input: not a case
                    continue
                dy = _rand(rng, *y.shape)
                bwd_args = (dy, idx, shape, kernel, stride, pad, dil)
                out += [Case(f"max_pool2d_fwd[{tag}]", "max_pool2d_fwd", (x, kernel, stride, pad, dil, ceil)),
                        Case(f"max_pool2d_bwd[{tag}]", "max_pool2d_bwd", bwd_args),
                        # the earlier atomic scatter, still callable as version=1
                        Case(f"max_pool2d_bwd[v1-{tag}]", "max_pool2d_bwd", bwd_args,
                             kwargs={"version": 1})]
        for kernel, stride, pad in AVG_CASES:
            for ceil in (False, True):
                for cip in (False, True):
                    tag = f"{shape}-k{kernel}-s{stride}-p{pad}-ceil{int(ceil)}-cip{int(cip)}".replace(" ", "")
                    x = _rand(rng, *shape)
                    try:
                        y = ref.avg_pool2d_fwd(x, kernel, stride, pad, ceil, cip)
                    except ValueError:
                        continue
                    dy = _rand(rng, *y.shape)
                    out += [Case(f"avg_pool2d_fwd[{tag}]", "avg_pool2d_fwd", (x, kernel, stride, pad, ceil, cip)),
                            Case(f"avg_pool2d_bwd[{tag}]", "avg_pool2d_bwd",
                                 (dy, shape, kernel, stride, pad, ceil, cip))]
    for shape, osize in ADAPTIVE:
        tag = f"{shape}-out{osize}".replace(" ", "")
        x = _rand(rng, *shape)
        dy = _rand(rng, shape[0], shape[1], *osize)
        out += [Case(f"adaptive_avg_pool2d_fwd[{tag}]", "adaptive_avg_pool2d_fwd", (x, osize)),
                Case(f"adaptive_avg_pool2d_bwd[{tag}]", "adaptive_avg_pool2d_bwd", (dy, shape))]
    return out


def _activation_cases(rng):
    out = []
    for shape in ACT_SHAPES:
        for misalign in (False, True):
            tag = f"{shape}{'-misaligned' if misalign else ''}".replace(" ", "")
            x = _rand(rng, *shape, scale=3.0)
            x.flat[0] = 0.0                                 # the kink of relu / leaky_relu
            if x.size > 2:
                x.flat[1], x.flat[2] = 95.0, -95.0          # sigmoid / tanh saturation
            dy = _rand(rng, *shape)
            y_sig = 1 / (1 + np.exp(-x))                    # inputs of the backward passes
            y_sig = y_sig.astype(np.float32).astype(np.float64)
            y_tanh = np.tanh(x).astype(np.float32).astype(np.float64)
            y_relu = np.maximum(x, 0)
            m = dict(misalign=misalign)
            out += [
                Case(f"relu_fwd[{tag}]", "relu_fwd", (x,), **m),
                Case(f"relu_bwd[{tag}]", "relu_bwd", (dy, y_relu), **m),
                Case(f"leaky_relu_fwd[{tag}]", "leaky_relu_fwd", (x, 0.01), **m),
                Case(f"leaky_relu_bwd[{tag}]", "leaky_relu_bwd", (dy, x, 0.2), **m),
                Case(f"sigmoid_fwd[{tag}]", "sigmoid_fwd", (x,), **m),
                Case(f"sigmoid_bwd[{tag}]", "sigmoid_bwd", (dy, y_sig), **m),
                Case(f"tanh_fwd[{tag}]", "tanh_fwd", (x,), **m),
                Case(f"tanh_bwd[{tag}]", "tanh_bwd", (dy, y_tanh), **m),
            ]
    for shape in [(2, 3, 4, 5), (2, 3, 5, 5), (4, 6), (8, 64, 28, 28)]:
        for misalign in (False, True):
            tag = f"{shape}{'-misaligned' if misalign else ''}".replace(" ", "")
            out.append(Case(f"bias_relu_fwd[{tag}]", "bias_relu_fwd",
                            (_rand(rng, *shape), _rand(rng, shape[1])), misalign=misalign))
    return out


def _softmax_cases(rng):
    out = []
    for shape, dim in SOFTMAX:
        for scale in (1.0, 40.0):                           # 40: large logits, exp overflows unshifted
            tag = f"{shape}-dim{dim}-scale{scale:g}".replace(" ", "")
            x = _rand(rng, *shape, scale=scale)
            dy = _rand(rng, *shape)
            e = np.exp(x - x.max(axis=dim, keepdims=True))
            y = (e / e.sum(axis=dim, keepdims=True)).astype(np.float32).astype(np.float64)
            logy = np.log(np.maximum(y, 1e-30)).astype(np.float32).astype(np.float64)
            out += [Case(f"softmax_fwd[{tag}]", "softmax_fwd", (x, dim)),
                    Case(f"log_softmax_fwd[{tag}]", "log_softmax_fwd", (x, dim)),
                    Case(f"log_softmax_bwd[{tag}]", "log_softmax_bwd", (dy, logy, dim))]
            if scale == 1.0:
                # not on near-one-hot y: there dx = y*(dy - sum(dy*y)) is a cancellation whose
                # exact value is far below float32 rounding of its terms (fails in NumPy float32 too)
                out.append(Case(f"softmax_bwd[{tag}]", "softmax_bwd", (dy, y, dim)))
    from pycnn.backends import numpy_ref as ref
    for n, k in CROSS_ENTROPY:
        tag = f"N{n}-classes{k}"
        logits = _rand(rng, n, k, scale=4.0)
        target = rng.integers(0, k, size=n).astype(np.int64)
        log_probs = ref.log_softmax_fwd(logits, 1).astype(np.float32).astype(np.float64)
        out += [Case(f"cross_entropy_fwd[{tag}]", "cross_entropy_fwd", (logits, target)),
                Case(f"cross_entropy_bwd[{tag}]", "cross_entropy_bwd",
                     (np.asarray(1.5), log_probs, target))]
    return out


def _batch_norm_cases(rng):
    out = []
    for shape in BATCH_NORM:
        c = shape[1]
        q = {"quick": shape in QUICK_BATCH_NORM}
        for affine in (True, False):
            for training in (True, False):
                tag = f"{shape}-affine{int(affine)}-train{int(training)}".replace(" ", "")
                x = _rand(rng, *shape, scale=2.0) + 3.0       # mean far from 0: tests the two-pass
                x = x.astype(np.float32).astype(np.float64)
                weight = _rand(rng, c) if affine else None
                bias = _rand(rng, c) if affine else None
                rmean = _rand(rng, c)
                rvar = np.abs(_rand(rng, c)) + 0.5
                # training runs the default and both versions by name (version 2's splits
                # as many as the shape gives: one for the small shapes)
                versions = (None, 1, 2) if training else (None,)
                for v in versions:
                    vtag, kw = (tag, {}) if v is None else (f"v{v}-{tag}", {"version": v})
                    out.append(Case(f"batch_norm_fwd[{vtag}]", "batch_norm_fwd",
                                    (x, weight, bias, rmean, rvar, training, 0.1, 1e-5),
                                    TOL_BATCH_NORM, inplace=(3, 4), kwargs=kw, **q))
                    if training:                              # no running statistics at all
                        out.append(Case(f"batch_norm_fwd[{vtag}-norunning]", "batch_norm_fwd",
                                        (x, weight, bias, None, None, True, 0.1, 1e-5), TOL_BATCH_NORM,
                                        kwargs=kw, **q))
                axes = (0,) if x.ndim == 2 else (0, 2, 3)
                mean = x.mean(axis=axes).astype(np.float32).astype(np.float64)
                invstd = (1 / np.sqrt(x.var(axis=axes) + 1e-5)).astype(np.float32).astype(np.float64)
                dy = _rand(rng, *shape)
                for v in (None, 1, 2):
                    vtag, kw = (tag, {}) if v is None else (f"v{v}-{tag}", {"version": v})
                    out.append(Case(f"batch_norm_bwd[{vtag}]", "batch_norm_bwd",
                                    (dy, x, weight, mean, invstd, training), TOL_BATCH_NORM, kwargs=kw,
                                    **q))
    return out


def _dropout_cases(rng):
    out = []
    for shape, p, seed in DROPOUT:
        tag = f"{shape}-p{p}-seed{seed}".replace(" ", "")
        x = _rand(rng, *shape)
        dy = _rand(rng, *shape)
        mask = (rng.random(shape) >= p).astype(np.uint8)
        out += [Case(f"dropout_fwd[{tag}]", "dropout_fwd", (x, p, seed)),
                Case(f"dropout_bwd[{tag}]", "dropout_bwd", (dy, mask, p))]
    return out


def cases(seed: int = 0) -> list[Case]:
    """The whole grid, deterministic for a seed. NumPy only: importable without a GPU."""
    rng = np.random.default_rng(seed)
    return (_conv_cases(rng) + _pool_cases(rng) + _activation_cases(rng) + _softmax_cases(rng)
            + _batch_norm_cases(rng) + _dropout_cases(rng))


def quick_cases(seed: int = 0) -> list[Case]:
    """For compute-sanitizer runs, which are slow: the first two cases of every op and
    version asked for by name, and the cases marked quick (QUICK_CONV, QUICK_BATCH_NORM:
    the depthwise kernels, the large tiles, batch norm's splits). A conv case runs
    every version anyway."""
    seen: dict[tuple, int] = {}
    out = []
    for case in cases(seed):
        key = (case.op, case.kwargs.get("version"))
        if case.quick or seen.get(key, 0) < 2:
            seen[key] = seen.get(key, 0) + 1
            out.append(case)
    return out


# ----------------------------------------------------------------------------- running a case


def conv_versions(conv, op: str) -> list:
    """Version keys of ``op`` in ``conv.VERSIONS``: keyed by pass (``{"conv2d_fwd": {...}}``
    or ``{"fwd": {...}}``), or one flat table for every pass."""
    versions = getattr(conv, "VERSIONS", None) or {}
    # the fused forward (bias and ReLU in the epilogue) has the forward's versions
    short = "fwd" if op == "conv2d_bias_relu_fwd" else op.replace("conv2d_", "")
    if op in versions:
        return list(versions[op])
    if short in versions:
        return list(versions[short])
    passes = set(CONV_OPS) | {o.replace("conv2d_", "") for o in CONV_OPS} | {"bwd_bias", "conv2d_bwd_bias"}
    return [k for k in versions if k not in passes]


def _to_gpu(a, misalign):
    import cupy as cp
    if not isinstance(a, np.ndarray):
        return a
    if a.dtype.kind == "f":
        if not misalign or a.ndim == 0:
            return cp.asarray(a, dtype=cp.float32)
        buf = cp.empty(a.size + 1, dtype=cp.float32)
        g = buf[1:].reshape(a.shape)                     # contiguous, 4 bytes past 16-byte alignment
        g[...] = cp.asarray(a, dtype=cp.float32)
        return g
    return cp.asarray(a)


def _to_ref(a):
    return a.copy() if isinstance(a, np.ndarray) else a


def _compare(gpu, ref) -> tuple[float, float, bool, str]:
    """(max abs error, max rel error, exact?, note) of one output."""
    ref = np.asarray(ref)
    gpu = np.asarray(gpu)
    if gpu.shape != ref.shape:
        return math.inf, math.inf, False, f"shape {gpu.shape} != reference {ref.shape}"
    if ref.dtype.kind in "iub":
        wrong = int(np.count_nonzero(gpu != ref))
        return float(wrong), float(wrong), True, f"{wrong} of {ref.size} differ" if wrong else ""
    if gpu.size == 0:
        return 0.0, 0.0, False, ""
    g = gpu.astype(np.float64)
    r = ref.astype(np.float64)
    nan_g, nan_r = np.isnan(g), np.isnan(r)
    if not np.array_equal(nan_g, nan_r):
        return math.inf, math.inf, False, "NaN in different places"
    g, r = g[~nan_r], r[~nan_r]
    if g.size == 0:
        return 0.0, 0.0, False, ""
    d = float(np.max(np.abs(g - r)))
    scale = float(np.max(np.abs(r)))
    return d, (d / scale if scale > 0 else d), False, ""


def _conv_w_shape(case: Case):
    """The weight shape of a conv case (its array, or backward-filter's w_shape); None
    for the other ops."""
    if case.op in ("conv2d_fwd", "conv2d_bias_relu_fwd", "conv2d_bwd_data"):
        return tuple(case.args[1].shape)
    if case.op == "conv2d_bwd_filter":
        return tuple(case.args[2])
    return None


def case_runs(case: Case, fn, conv=None) -> list:
    """[(version label, kwargs)] of the calls run_case makes: the case as given, and
    for a conv case every version in ``conv.VERSIONS`` (both split-K reductions for
    backward-filter). Pure: no GPU needed."""
    runs = [(case.kwargs.get("version"), dict(case.kwargs))]
    if conv is None:
        return runs
    params = inspect.signature(fn).parameters
    if "version" in params:
        versions = conv_versions(conv, case.op)
        w_shape = _conv_w_shape(case)
        if w_shape is not None and hasattr(conv, "versions_for"):   # less the depthwise-only ones
            short = "fwd" if case.op == "conv2d_bias_relu_fwd" else case.op.replace("conv2d_", "")
            versions = [v for v in versions if v in conv.versions_for(short, w_shape)]
        runs += [(v, {"version": v}) for v in versions]
    # bwd_filter: every version that splits N*P*Q (all but the direct version 1)
    split_versions = [kw.get("version") for _, kw in runs if kw.get("version") != 1]
    if "deterministic" in params:       # bwd_filter: atomic and fixed-order split-K reductions
        runs = [(f"{v if v is not None else 'default'}-{mode}", {**kw, "deterministic": det})
                for v, kw in runs for det, mode in ((False, "atomic"), (True, "deterministic"))]
    if "splits" in params:
        # The grid's reductions (N*P*Q <= 442) get one or two splits by default, so
        # the atomic and fixed-order split paths would go nearly unchecked: force them, 7
        # splits also leaving trailing splits an empty range (they must write zeros).
        runs += [(f"{v if v is not None else 'default'}-splits{s}-{mode}",
                  {**({} if v is None else {"version": v}), "splits": s, "deterministic": det})
                 for v in split_versions
                 for s in SPLIT_K_RUNS for det, mode in ((False, "atomic"), (True, "deterministic"))]
    return runs


class DeviceFault(RuntimeError):
    """A kernel broke the CUDA context (an illegal address, say): every later CUDA call
    fails, so the run stops here; ``results`` holds the case's runs so far."""

    def __init__(self, message: str, results: list):
        super().__init__(message)
        self.results = results


def _context_error() -> str | None:
    """The CUDA context's sticky error, or None while it still runs work."""
    import cupy as cp
    try:
        cp.cuda.runtime.deviceSynchronize()
    except cp.cuda.runtime.CUDARuntimeError as exc:
        return str(exc)
    return None


def run_case(case: Case, backend, ref) -> list[dict]:
    """Run one case on the GPU backend (every version, for a conv op) and the reference;
    one result dict per version. Every buffer the backend allocates starts as NaN
    (``poisoned_outputs``), so an output a kernel leaves partly unwritten fails even
    where CuPy's pool hands it the block the previous version filled. Raises
    DeviceFault if a run leaves the CUDA context broken."""
    import cupy as cp

    from pycnn.backends.cuda._common import poisoned_outputs
    ref_args = tuple(_to_ref(a) for a in case.args)
    expected = getattr(ref, case.op)(*ref_args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    expected += tuple(ref_args[i] for i in case.inplace)

    fn = getattr(backend, case.op)
    if case.versions:
        import importlib
        conv = importlib.import_module(backend.__name__ + ".conv")
        fn = getattr(conv, case.op)
    runs = case_runs(case, fn, conv if case.versions else None)
    results = []
    for version, kwargs in runs:
        record = {"kernel": case.op, "version": "default" if version is None else version,
                  "case": case.name, "tol": case.tol}
        try:
            gpu_args = tuple(_to_gpu(a, case.misalign) for a in case.args)
            with poisoned_outputs():
                got = fn(*gpu_args, **kwargs)
            got = got if isinstance(got, tuple) else (got,)
            got += tuple(gpu_args[i] for i in case.inplace)
            cp.cuda.get_current_stream().synchronize()
            got = tuple(None if g is None else cp.asnumpy(g) for g in got)
        except Exception as exc:                          # a failing version is a result, not a crash
            record.update(max_abs=None, max_rel=None, passed=False,
                          note=f"{type(exc).__name__}: {exc}")
            results.append(record)
            broken = _context_error()
            if broken:
                raise DeviceFault(f"the CUDA context is broken after {case.name} "
                                  f"v{record['version']} ({broken})", results) from exc
            continue
        worst_abs = worst_rel = 0.0
        ok, notes = True, []
        for i, (g, e) in enumerate(zip(got, expected)):
            if e is None:
                continue
            if g is None:
                ok = False
                notes.append(f"output {i} is None")
                continue
            a, r, exact, note = _compare(g, e)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
            ok &= (a == 0) if exact else (r <= case.tol)
            if note:
                notes.append(f"output {i}: {note}")
        if len(got) != len(expected):
            ok = False
            notes.append(f"{len(got)} outputs, reference has {len(expected)}")
        record.update(max_abs=worst_abs, max_rel=worst_rel, passed=bool(ok), note="; ".join(notes))
        results.append(record)
    return results


# ----------------------------------------------------------------------------- the record


def kernels_hash(root: Path | None = None) -> str | None:
    """sha256 over the sorted file paths under kernels/ and their contents; None outside
    a source checkout (an installed package carries the built kernels, not their sources)."""
    root = root or paths.checkout()
    if root is None:
        return None
    h = hashlib.sha256()
    base = root / "kernels"
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def kernels_newer_than_extension(root: Path | None = None, extension: str | None = None) -> list[str]:
    """Kernel sources modified after the extension was built: the record's kernels hash
    would then name code that is not what ran (rebuild: pip install -e .)."""
    root = root or paths.checkout()
    if root is None:
        return []
    if extension is None:
        try:
            import pycnn._C as ext
        except ImportError:
            return []
        extension = ext.__file__
    built = Path(extension).stat().st_mtime
    return sorted(p.relative_to(root).as_posix() for p in (root / "kernels").rglob("*")
                  if p.is_file() and p.suffix in (".cu", ".cuh", ".h", ".cpp")
                  and p.stat().st_mtime > built)


def git_commit(root: Path | None = None) -> dict:
    """The record's commit, and whether kernels/ differs from it."""
    commit, modified = paths.git_commit(root or paths.checkout(), "kernels")
    return {"commit": commit, "kernels_modified": modified}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def gpu_info() -> dict:
    import cupy as cp
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    from pycnn import _C
    built = getattr(_C, "cuda_runtime_version", None)
    return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "driver_version": nvidia_driver_version(dev.id),
            "driver_cuda_version": _version(cp.cuda.runtime.driverGetVersion()),
            "runtime_cuda_version": _version(cp.cuda.runtime.runtimeGetVersion()),
            "extension_cuda_version": None if built is None else _version(built),
            "cupy": cp.__version__}


def nvidia_driver_version(index: int = 0) -> str | None:
    """The NVIDIA driver's own version (e.g. "570.124.06"; driverGetVersion gives only
    the CUDA version it supports), from nvidia-smi; None if that is not available."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                              "-i", str(index)], capture_output=True, text=True, timeout=20,
                             check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


#: Opens the last line of a verify run (with its counts): a sanitizer log without it
#: is of a run that crashed, was killed or never started.
DONE = "pycnn.verify: done:"


def parse_sanitizer_log(path: str) -> dict:
    """Tool, error and warning counts of a compute-sanitizer log, and whether the
    verify run inside it finished with every comparison passing. memcheck, initcheck
    and synccheck end with "ERROR SUMMARY: N errors"; racecheck with "RACECHECK
    SUMMARY: H hazards displayed (E errors, W warnings)", whose errors are its count
    (a racecheck "ERROR SUMMARY", where printed, counts the same hazards again).
    Passed: a summary, no error, and the run's own DONE line with 0 failed and no abort:
    a sanitizer reports 0 errors for a target that died early too."""
    text = Path(path).read_text(errors="replace")
    tool = next((t for t in ("memcheck", "racecheck", "initcheck", "synccheck")
                 if t in Path(path).name.lower() or f"--tool {t}" in text), None)
    if tool is None:
        tool = "racecheck" if "RACECHECK SUMMARY" in text else "memcheck"
    summaries = [int(n) for n in re.findall(r"ERROR SUMMARY:\s*(\d+)\s+errors?", text)]
    races = re.findall(r"RACECHECK SUMMARY:\s*(\d+)\s+hazards?\s+displayed\s*"
                       r"\((\d+)\s+errors?,\s*(\d+)\s+warnings?\)", text)
    errors = warnings = None
    if tool == "racecheck" and races:
        errors, warnings = int(races[-1][1]), int(races[-1][2])
    elif summaries:
        errors = summaries[-1]
    done = re.findall(re.escape(DONE) + r"\s*(\d+) runs, (\d+) failed, aborted: (yes|no)", text)
    runs = failed = None
    notes = []
    if errors is None:
        notes.append("no summary line found")
    if not done:
        notes.append(f"the verify run did not finish (no '{DONE}' line)")
    else:
        runs, failed = int(done[-1][0]), int(done[-1][1])
        if failed:
            notes.append(f"{failed} of {runs} comparisons failed under the sanitizer")
        if done[-1][2] == "yes":
            notes.append("the verify run was aborted")
    return {"file": str(path), "tool": tool, "errors": errors, "warnings": warnings,
            "verify_runs": runs, "verify_failed": failed,
            "passed": errors == 0 and bool(done) and failed == 0 and done[-1][2] == "no",
            "note": "; ".join(notes)}


def add_sanitizer_logs(record_path: str, logs: list[str]) -> int:
    """Put the outcome of compute-sanitizer logs into a record written earlier (the
    sanitized runs are separate processes) and recompute its ``passed``."""
    if not logs:
        print("pycnn.verify: --record needs --sanitizer-log FILE ...", file=sys.stderr)
        return 2
    path = Path(record_path)
    record = json.loads(path.read_text())
    sanitizer = [parse_sanitizer_log(p) for p in logs]
    for s in sanitizer:
        s["file"] = Path(s["file"]).name
        print(f"{'ok  ' if s['passed'] else 'FAIL'} compute-sanitizer {s['tool']}: {s['errors']} errors"
              f"{', ' + s['note'] if s['note'] else ''} ({s['file']})")
    record["sanitizer"] = sanitizer
    record["passed"] = (not record["failed"] and not record["aborted"]
                        and all(s["passed"] for s in sanitizer))
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0 if record["passed"] else 1


def gpu_unavailable_reason() -> str | None:
    try:
        import cupy as cp
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda13x)"
    try:
        if not cp.cuda.is_available():
            return "no CUDA GPU is visible to CuPy"
    except Exception as exc:                               # driver missing or broken
        return f"CUDA is not usable: {exc}"
    try:
        import pycnn._C  # noqa: F401
    except ImportError as exc:
        return f"the extension pycnn._C is not built ({exc}); PYCNN_CUDA=1 pip install -e ."
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycnn.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="folder for verify-<gpu>.json (default: bench/results in a source "
                             "checkout, ./pycnn-results in an installed package)")
    parser.add_argument("--quick", action="store_true", help="two cases per op (for sanitizer runs)")
    parser.add_argument("--no-write", action="store_true", help="print the summary only")
    parser.add_argument("--no-memory-pool", action="store_true",
                        help="one cudaMalloc per array instead of CuPy's pool, so that "
                             "compute-sanitizer memcheck sees every array's true bounds")
    parser.add_argument("--sanitizer-log", nargs="+", default=[], metavar="FILE",
                        help="compute-sanitizer logs whose outcome goes into the JSON")
    parser.add_argument("--exclude", default=None, metavar="REGEX",
                        help="leave out the cases whose name matches REGEX (e.g. the large "
                             "tiles under racecheck, whose shared-memory tracking is slow)")
    parser.add_argument("--record", default=None, metavar="JSON",
                        help="with --sanitizer-log: add the logs' outcome to this existing "
                             "record instead of running the cases again (no GPU needed)")
    args = parser.parse_args(argv)
    if args.record:
        return add_sanitizer_logs(args.record, args.sanitizer_log)

    why = gpu_unavailable_reason()
    if why:
        print(f"pycnn.verify: cannot verify the CUDA kernels: {why}", file=sys.stderr)
        return 2
    stale = kernels_newer_than_extension()
    if stale:
        print(f"pycnn.verify: WARNING: pycnn._C is older than {', '.join(stale[:5])}"
              f"{' ...' if len(stale) > 5 else ''}: rebuild (pip install -e .) or the record "
              "names sources that did not run", file=sys.stderr)

    import importlib
    if args.no_memory_pool:
        import cupy as cp
        cp.cuda.set_allocator(None)
    backend = importlib.import_module("pycnn.backends.cuda")
    from pycnn.backends import numpy_ref as ref

    todo = quick_cases() if args.quick else cases()
    if args.exclude:
        todo = [c for c in todo if not re.search(args.exclude, c.name)]
    results, aborted = [], None
    for i, case in enumerate(todo):
        try:
            new = run_case(case, backend, ref)
        except DeviceFault as exc:
            new = exc.results
            aborted = f"{exc}; the {len(todo) - i - 1} cases after it did not run"
        results.extend(new)
        for r in new:       # as they come: a run cut short by a time limit still shows them
            if not r["passed"]:
                print(f"  FAIL {r['case']} v{r['version']}: rel {r['max_rel']} {r['note']}", flush=True)
        if aborted:
            print(f"pycnn.verify: ABORTED: {aborted}", flush=True)
            break
    summary: dict[str, dict] = {}
    for r in results:
        key = f"{r['kernel']}[v{r['version']}]" if r["version"] != "default" else r["kernel"]
        s = summary.setdefault(key, {"cases": 0, "passed": 0, "max_rel": 0.0, "tol": r["tol"]})
        s["cases"] += 1
        s["passed"] += int(r["passed"])
        if r["max_rel"] is not None and s["max_rel"] is not None:
            s["max_rel"] = max(s["max_rel"], r["max_rel"])
        else:
            s["max_rel"] = None
    failed = [r for r in results if not r["passed"]]
    sanitizer = [parse_sanitizer_log(p) for p in args.sanitizer_log]

    width = max(len(k) for k in summary)
    for key, s in summary.items():
        flag = "ok  " if s["passed"] == s["cases"] else "FAIL"
        rel = "n/a" if s["max_rel"] is None else f"{s['max_rel']:.2e}"
        print(f"{flag} {key:<{width}}  {s['passed']:>4}/{s['cases']:<4} max rel err {rel} (tol {s['tol']:g})")
    for s in sanitizer:
        print(f"{'ok  ' if s['passed'] else 'FAIL'} compute-sanitizer {s['tool']}: {s['errors']} errors"
              f"{', ' + s['note'] if s['note'] else ''} ({s['file']})")

    record = {
        "pycnn_verify": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **git_commit(),
        "kernels_sha256": kernels_hash(),
        "kernels_newer_than_extension": stale,
        "gpu": gpu_info(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "quick": args.quick,
        "memory_pool": not args.no_memory_pool,
        "cases": len(results),
        "failed": len(failed),
        "aborted": aborted,
        "passed": not failed and not aborted and all(s["passed"] for s in sanitizer),
        "summary": summary,
        "sanitizer": sanitizer,
        "results": results,
    }
    if not args.no_write:
        out = Path(args.out) if args.out else paths.results_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"verify-{slug(record['gpu']['name'])}.json"
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(f"wrote {path}")
    # the line parse_sanitizer_log looks for: the run under the sanitizer finished
    print(f"{DONE} {len(results)} runs, {len(failed)} failed, aborted: {'yes' if aborted else 'no'}",
          flush=True)
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
