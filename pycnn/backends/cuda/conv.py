"""Convolution on the GPU: forward, backward-data, backward-filter, backward-bias,
and forward with bias + ReLU fused into the kernel's epilogue.

Every kernel version stays callable (``VERSIONS``, and ``version=`` on each
function) so that tests and the benchmark can run each one against the
reference. A call without ``version=`` runs the tuner's choice for its shape on this
GPU (tune.py: the first call of a shape times the eligible versions, a cache file keeps
the fastest); with ``PYCNN_TUNE=0``, or where the tuner has one candidate, it runs the
heuristic default, the promoted version with guarded fallbacks:

    fwd         7 (implicit GEMM, double-buffered)  depthwise -> 6   (also: 1 direct, 2, 8 tensor cores, 12)
    bwd_data    11 (implicit GEMM in stride phases) depthwise -> 6   (also: 1, 3, 9 tensor cores, 14, 17)
    bwd_filter  4 (split-K implicit GEMM)           depthwise -> 6   (also: 1, 10 tensor cores, 15, 16)
    bwd_bias    5

Depthwise means one input channel per group (C/groups = 1, any channel
multiplier K/groups; a first layer on a one-channel image counts too). Those
shapes go to version 6, written for them, because an implicit-GEMM tile 64
columns wide would compute one useful column. Version 6 runs only such shapes:
``versions_for`` lists the versions that can run a given shape.

Version 11 is version 3 split into stride phases, so that it multiplies none of the
zeros version 3 gathers for taps that miss an output (three products in four at stride
2); at stride 1 it is one phase, version 3's work with its own tiles. Version 14 is 11
with its index math in tables that a prep kernel writes into a workspace (no division
in the main loop, coalesced filter loads), double-buffered; unmeasured. Version 17 is 14
warp-tiled as forward 12 is (BK 16, 8x8 outputs a thread), the same phases and tables;
unmeasured. Version 15 is
4 double-buffered with its reduction row stepped, not divided; unmeasured. Version 16 is
15 warp-tiled as forward 12 is (BK 16, 8x8 outputs a thread, the filter taps in a
shared table), the same split-K; unmeasured. Version 7 is
version 2 double-buffered; 8, 9 and 10 are versions 2, 3 and 4 on tensor cores in
3xTF32 (fp32 accuracy from three TF32 products per term; compute capability 8.0+).

The defaults were measured: on an H200 in fp32 (bench/results/), forward 7 beats 2 by
1.35-1.6x (geometric means over the ResNet-50, VGG-16, DeepBench and batch-1 sets) and
backward-data 11 beats 3 by 1.08-1.17x (ResNet-50, VGG-16, batch 1; and each DeepBench case
that is not a one-channel input, which goes to version 6), and version 6 wins on depthwise
shapes; DEFAULT_VERSIONS says more.

Version 12 is a warp-tiled forward (BK 16, a tap table in shared memory instead of
divisions, float4 filter loads, 128-bit y stores) that splits C*R*S over gridDim.z where
its grid would be under one wave (conv2d_fwd12_splits), with a workspace from CuPy's pool
and a fixed-order sum; unmeasured, so not the default: the tuner times it beside 7.

Version 13 is the forward implicit GEMM on mma.sync TF32 tensor cores through explicit
PTX (ldmatrix from a swizzled, conflict-free shared layout; a 3-stage cp.async pipeline),
in 3xTF32 here (fp32 accuracy); unmeasured, so not the default: the tuner times it beside 7
on compute capability 8.0+. Its plain-TF32 mode (``_C.conv2d_fwd13(..., tf32x3=False)``,
about 1e-3 relative error, as cuDNN's TF32 mode) is never picked for an fp32 call, nor is
its BF16 twin ``_C.conv2d_fwd13_bf16`` (mma.sync.m16n8k16, fp32 accumulation, about 4e-3).

A shape whose implicit-GEMM grid would pass CUDA's 65535-block limit in y or z
(more than 65535 groups, or more than 65535 * 64 channels per group) goes to
the direct kernels, whose grids are 1-D.

Padding is ``(top, bottom, left, right)``; the kernels see the top and left
padding and the output size, which carries the bottom and right padding.
"""
from __future__ import annotations

import cupy as cp

from pycnn.shapes import conv2d_output_shape

from . import tune
from ._common import _C, check_array, compute_capability, empty, ptr, stream
from ._common import num_sms as _num_sms

#: Every kernel version, per pass: {pass: {version: pycnn._C launcher}}.
VERSIONS = {
    "fwd": {1: _C.conv2d_fwd1, 2: _C.conv2d_fwd2, 6: _C.conv2d_fwd6, 7: _C.conv2d_fwd7,
            8: _C.conv2d_fwd8, 12: _C.conv2d_fwd12, 13: _C.conv2d_fwd13},
    "bwd_data": {1: _C.conv2d_bwd_data1, 3: _C.conv2d_bwd_data3, 6: _C.conv2d_bwd_data6,
                 9: _C.conv2d_bwd_data9, 11: _C.conv2d_bwd_data11, 14: _C.conv2d_bwd_data14,
                 17: _C.conv2d_bwd_data17},
    "bwd_filter": {1: _C.conv2d_bwd_filter1, 4: _C.conv2d_bwd_filter4, 6: _C.conv2d_bwd_filter6,
                   10: _C.conv2d_bwd_filter10, 15: _C.conv2d_bwd_filter15,
                   16: _C.conv2d_bwd_filter16},
    "bwd_bias": {5: _C.conv2d_bwd_bias5},
}

#: The promoted version of each pass, for shapes that are not depthwise: measured on an
#: H200 in fp32 (bench/results/bench-{resnet50,vgg16,deepbench,small}-h200-*.json), the
#: pipelined forward 7 is 1.35-1.6x faster than 2 (geometric means per set) and the phased
#: backward-data 11 1.08-1.17x faster than 3 (ResNet-50, VGG-16, batch 1), stride 1
#: included. Backward-filter stays the FFMA version 4: the 3xTF32 version 10 is only
#: 1.02-1.04x faster, at 3xTF32's accuracy. One choice per pass for every GPU and shape;
#: the per-shape winners are in those files.
DEFAULT_VERSIONS = {"fwd": 7, "bwd_data": 11, "bwd_filter": 4, "bwd_bias": 5}

#: Versions that run depthwise shapes only (C/groups = 1), and the default for those.
DEPTHWISE_VERSION = 6

#: Where the default's grid does not fit (version 11 puts groups x stride phases in
#: gridDim.z), the version that runs instead.
PHASED_FALLBACK = {"bwd_data": 3}

#: The backward-data versions that put groups x stride phases in gridDim.z.
PHASED_VERSIONS = (11, 14, 17)

#: Versions that multiply on TF32 tensor cores, three products per term (3xTF32) for
#: fp32 accuracy; the others use fp32 FMAs. The benchmark labels them. (Version 13 is
#: 3xTF32 as called here; _C.conv2d_fwd13(..., tf32x3=False) is its plain-TF32 mode.)
TENSOR_CORE_VERSIONS = (8, 9, 10, 13)

#: Every pycnn._C function this module calls.
LAUNCHERS = (
    "conv2d_fwd1", "conv2d_fwd2", "conv2d_fwd7", "conv2d_fwd8",
    "conv2d_bwd_data1", "conv2d_bwd_data3", "conv2d_bwd_data9", "conv2d_bwd_data11",
    "conv2d_bwd_data14", "conv2d_bwd_data14_workspace_bytes",
    "conv2d_bwd_data17", "conv2d_bwd_data17_workspace_bytes",
    "conv2d_bwd_filter1", "conv2d_bwd_filter4", "conv2d_bwd_filter10", "conv2d_bwd_filter15",
    "conv2d_bwd_filter16",
    "conv2d_bwd_filter4_splits", "conv2d_bwd_filter4_workspace_bytes",
    "conv2d_fwd6", "conv2d_bwd_data6", "conv2d_bwd_filter6",
    "conv2d_bwd_filter6_splits", "conv2d_bwd_filter6_workspace_bytes",
    "conv2d_bwd_bias5",
    "conv2d_fwd13",
    "conv2d_fwd12", "conv2d_fwd12_splits", "conv2d_fwd12_workspace_bytes",
)


#: gridDim.y / gridDim.z limit, and the narrowest implicit-GEMM tile's columns.
_GRID_YZ_MAX, _GEMM_MIN_BN = 65535, 64


def _gemm_grid_fits(columns: int, groups: int) -> bool:
    """Whether an implicit-GEMM launch fits CUDA's grid: y = ceil(columns / BN) blocks
    (columns: channels per group of the GEMM's N side), z = groups (times the splits)."""
    return groups <= _GRID_YZ_MAX and -(-columns // _GEMM_MIN_BN) <= _GRID_YZ_MAX


def _version(pass_name: str, version, depthwise: bool, gemm_fits: bool = True,
             phased_fits: bool = True) -> int:
    """The version to run: the one asked for, or the promoted one (with its fallbacks).
    ``phased_fits``: the grid of backward-data's version 11 (groups x phases in z) fits."""
    if version is None:
        if depthwise and DEPTHWISE_VERSION in VERSIONS[pass_name]:
            return DEPTHWISE_VERSION
        if not gemm_fits and pass_name in ("fwd", "bwd_data", "bwd_filter"):
            return 1
        if not phased_fits and pass_name in PHASED_FALLBACK:
            return PHASED_FALLBACK[pass_name]
        return DEFAULT_VERSIONS[pass_name]
    if isinstance(version, bool) or version not in VERSIONS[pass_name]:
        raise ValueError(f"version: expected None or one of {sorted(VERSIONS[pass_name])} "
                         f"for conv2d {pass_name}, got {version!r}")
    if version == DEPTHWISE_VERSION and not depthwise:
        raise ValueError(f"version: {version} runs depthwise convolutions only (one input "
                         f"channel per group, w of shape (K, 1, R, S)); this one is not")
    return version


def default_version(pass_name: str, x_shape, w_shape, stride=(1, 1), groups: int = 1) -> int:
    """The version a call without ``version=`` runs for this shape: the promoted one,
    or its depthwise, strided or grid-limit fallback. Pure: no GPU needed (the
    benchmark labels its default rows with it)."""
    if pass_name == "bwd_bias":
        return _version(pass_name, None, False)
    depthwise = _is_depthwise(w_shape)
    if pass_name == "bwd_data":                # the GEMM's columns are input channels
        cg, phases = x_shape[1] // groups, stride[0] * stride[1]
        return _version(pass_name, None, depthwise, _gemm_grid_fits(cg, groups),
                        _gemm_grid_fits(cg, groups * phases))  # 11: groups*phases in z
    return _version(pass_name, None, depthwise, _gemm_grid_fits(w_shape[0] // groups, groups))


def versions_for(pass_name: str, w_shape) -> list[int]:
    """The versions of ``pass_name`` that can run a convolution with weights of
    shape ``w_shape`` (K, C/groups, R, S): all of them, less the depthwise ones
    when C/groups > 1. Pure: no GPU needed."""
    return [v for v in VERSIONS[pass_name]
            if v != DEPTHWISE_VERSION or _is_depthwise(w_shape)]


def tuning_key(op: str, x_shape, w_shape, stride, padding, dilation, groups, extra: str = "") -> str:
    """The tuner's key of one call: the op and every number that shapes its work."""
    def dims(t):
        return "x".join(str(int(d)) for d in t)
    key = (f"{op}|x{dims(x_shape)}|w{dims(w_shape)}|s{dims(stride)}|p{dims(padding)}"
           f"|d{dims(dilation)}|g{groups}|float32")
    return key + (f"|{extra}" if extra else "")


def tuning_candidates(pass_name: str, x_shape, w_shape, stride, groups) -> list[int]:
    """The versions the tuner times for this shape: those that can run it, less the
    direct version 1 on a shape an implicit GEMM takes (it is slower by 10-30x there),
    less the phased version 11 where its grid does not fit and the tensor-core versions
    below compute capability 8.0. Just the default where the grid limits leave no
    choice."""
    heuristic = default_version(pass_name, x_shape, w_shape, stride, groups)
    if heuristic == 1:
        return [1]
    depthwise = _is_depthwise(w_shape)
    out = [v for v in versions_for(pass_name, w_shape) if v != 1 or depthwise]
    if pass_name == "bwd_data" and not _gemm_grid_fits(x_shape[1] // groups, groups * stride[0] * stride[1]):
        out = [v for v in out if v not in PHASED_VERSIONS]
    if compute_capability() < 80:
        out = [v for v in out if v not in TENSOR_CORE_VERSIONS]
    return sorted(set(out) | {heuristic})


def _tuned(op, pass_name, version, x_shape, w_shape, stride, padding, dilation, groups, run,
           extra: str = "") -> int:
    """The version asked for (checked), else the tuner's for this shape (see tune.py),
    which times ``run(v)`` on the first call of a shape."""
    if version is not None:
        return _version(pass_name, version, _is_depthwise(w_shape))
    heuristic = default_version(pass_name, x_shape, w_shape, stride, groups)
    if tune.mode() == "off":
        return heuristic
    return tune.choose(tuning_key(op, x_shape, w_shape, stride, padding, dilation, groups, extra),
                       heuristic, tuning_candidates(pass_name, x_shape, w_shape, stride, groups), run)


def chosen_version(op: str, x_shape, w_shape, stride, padding, dilation, groups,
                   deterministic: bool = True) -> tuple[int, dict | None]:
    """(version, tuner entry or None) that a call without ``version=`` runs now, with no
    timing: the tuner's cached choice where there is one, else the heuristic. ``op`` is
    fwd, bias_relu_fwd, bwd_data or bwd_filter (``pycnn bench`` and ``pycnn inspect``
    label their default rows with it)."""
    pass_name = "fwd" if op == "bias_relu_fwd" else op
    heuristic = default_version(pass_name, x_shape, w_shape, stride, groups)
    if tune.mode() == "off":
        return heuristic, None
    extra = ("deterministic" if deterministic else "atomic") if op == "bwd_filter" else ""
    from ._common import device_name
    entry = tune.lookup(tuning_key(op, x_shape, w_shape, stride, padding, dilation, groups, extra),
                        device_name())
    if entry is None or entry["version"] not in tuning_candidates(pass_name, x_shape, w_shape, stride, groups):
        return heuristic, None
    return entry["version"], entry


def _shape4(shape, name: str) -> tuple[int, int, int, int]:
    try:
        out = tuple(int(v) for v in shape)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple of 4 ints, got {shape!r}") from None
    if len(out) != 4 or min(out) < 0:
        raise ValueError(f"{name}: expected a tuple of 4 sizes >= 0, got {shape!r}")
    return out


def _check_groups(x_shape, w_shape, groups) -> None:
    c, k, cg = x_shape[1], w_shape[0], w_shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups: expected an int >= 1, got {groups!r}")
    if cg * groups != c:
        raise ValueError(f"w: expected C/groups = {c}/{groups} input channels per group "
                         f"(dimension 1 of w), got w of shape {tuple(w_shape)}")
    if k % groups != 0:
        raise ValueError(f"groups: expected a divisor of the output channels K={k}, "
                         f"got groups={groups}")


def _params(x_shape, w_shape, out_hw, stride, padding, dilation, groups) -> tuple:
    """The 16 ints of a launcher's Conv2dParams, in their order."""
    n, c, h, wd = x_shape
    k, _, r, s = w_shape
    p, q = out_hw
    return (n, c, h, wd, k, r, s, p, q, stride[0], stride[1], dilation[0], dilation[1],
            padding[0], padding[2], groups)


def _is_depthwise(w_shape) -> bool:
    """One input channel per group: dimension 1 of w (C/groups) is 1."""
    return w_shape[1] == 1


# ------------------------------------------------------------------ forward


def _fwd(x, w, b, stride, padding, dilation, groups, relu, version):
    check_array(x, "x", ndim=4)
    check_array(w, "w", ndim=4)
    _check_groups(x.shape, w.shape, groups)
    if b is not None:
        check_array(b, "b", ndim=1, shape=(w.shape[0],))
    n, k, p, q = conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)
    y = empty((n, k, p, q))
    if y.size == 0:
        return y
    if x.size == 0 or w.size == 0:  # no channels to sum over: y is the bias
        y[...] = 0 if b is None else b.reshape(1, k, 1, 1)
        return cp.maximum(y, 0, out=y) if relu else y
    v = _tuned("bias_relu_fwd" if relu else "fwd", "fwd", version, x.shape, w.shape, stride,
               padding, dilation, groups,
               lambda u: _fwd(x, w, b, stride, padding, dilation, groups, relu, u))
    params = _params(x.shape, w.shape, (p, q), stride, padding, dilation, groups)
    if v == 12:
        _fwd12(x, w, b, y, params, relu)
        return y
    VERSIONS["fwd"][v](ptr(x), ptr(w), ptr(b), ptr(y), *params, bool(relu), stream())
    return y


def _fwd12(x, w, b, y, params, relu):
    """Version 12 with its split count for this GPU and, where it splits, the workspace
    of its partial sums from CuPy's pool (released on return, as conv2d_bwd_filter's)."""
    splits = _C.conv2d_fwd12_splits(*params, _num_sms())
    nbytes = _C.conv2d_fwd12_workspace_bytes(*params, splits)
    workspace = empty((nbytes // 4,)) if nbytes else None
    VERSIONS["fwd"][12](ptr(x), ptr(w), ptr(b), ptr(y), ptr(workspace), *params, bool(relu), splits,
                        stream())


def conv2d_fwd(x, w, b, stride, padding, dilation, groups, *, version=None):
    """y = conv2d(x, w) + b; ``b`` may be None."""
    return _fwd(x, w, b, stride, padding, dilation, groups, False, version)


def conv2d_bias_relu_fwd(x, w, b, stride, padding, dilation, groups, *, version=None):
    """y = relu(conv2d(x, w) + b) in one kernel (bias and ReLU in its epilogue)."""
    return _fwd(x, w, b, stride, padding, dilation, groups, True, version)


# ------------------------------------------------------------------ backward


def conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups, *, version=None):
    """dx, the gradient of conv2d_fwd with respect to x."""
    check_array(dy, "dy", ndim=4)
    check_array(w, "w", ndim=4)
    x_shape = _shape4(x_shape, "x_shape")
    _check_groups(x_shape, w.shape, groups)
    out = conv2d_output_shape(x_shape, w.shape, stride, padding, dilation)
    if tuple(dy.shape) != out:
        raise ValueError(f"dy: expected shape {out} (the output of x_shape={x_shape} and "
                         f"w of shape {tuple(w.shape)}), got {tuple(dy.shape)}")
    if dy.size == 0 or w.size == 0 or 0 in x_shape:
        return cp.zeros(x_shape, dtype=cp.float32)
    v = _tuned("bwd_data", "bwd_data", version, x_shape, w.shape, stride, padding, dilation, groups,
               lambda u: conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups, version=u))
    dx = empty(x_shape)
    params = _params(x_shape, w.shape, out[2:], stride, padding, dilation, groups)
    if v in (14, 17):  # their tables go in a workspace from CuPy's pool (see conv2d_bwd_filter)
        bytes_of = {14: _C.conv2d_bwd_data14_workspace_bytes, 17: _C.conv2d_bwd_data17_workspace_bytes}
        workspace = empty((bytes_of[v](*params) // 4,))
        VERSIONS["bwd_data"][v](ptr(dy), ptr(w), ptr(dx), ptr(workspace), *params, stream())
        return dx
    VERSIONS["bwd_data"][v](ptr(dy), ptr(w), ptr(dx), *params, stream())
    return dx


def conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups, *, version=None,
                      deterministic=True, splits=None):
    """dw, the gradient of conv2d_fwd with respect to w.

    Versions 4, 6, 10, 15 and 16 split the N*P*Q reduction into ``splits`` parts (default:
    enough to fill the GPU). By default (``deterministic=True``) versions 4, 10, 15 and 16
    reduce the parts in a fixed order through a workspace: the same bits on every
    run, for a workspace write and one more pass over splits x |w| floats.
    ``deterministic=False`` adds them with atomics instead, in whatever order the
    blocks finish. Versions 1 and 6 are deterministic in any case.
    """
    check_array(x, "x", ndim=4)
    check_array(dy, "dy", ndim=4)
    w_shape = _shape4(w_shape, "w_shape")
    _check_groups(x.shape, w_shape, groups)
    out = conv2d_output_shape(x.shape, w_shape, stride, padding, dilation)
    if tuple(dy.shape) != out:
        raise ValueError(f"dy: expected shape {out} (the output of x of shape "
                         f"{tuple(x.shape)} and w_shape={w_shape}), got {tuple(dy.shape)}")
    if 0 in w_shape:
        return empty(w_shape)
    if x.size == 0 or dy.size == 0:
        return cp.zeros(w_shape, dtype=cp.float32)
    v = _tuned("bwd_filter", "bwd_filter", version, x.shape, w_shape, stride, padding, dilation,
               groups, lambda u: conv2d_bwd_filter(x, dy, w_shape, stride, padding, dilation, groups,
                                                   version=u, deterministic=deterministic,
                                                   splits=splits),
               "deterministic" if deterministic else "atomic")
    dw = empty(w_shape)
    params = _params(x.shape, w_shape, out[2:], stride, padding, dilation, groups)
    if v == 1:
        _C.conv2d_bwd_filter1(ptr(x), ptr(dy), ptr(dw), *params, stream())
        return dw
    if splits is None:
        splits = (_C.conv2d_bwd_filter6_splits if v == 6 else _C.conv2d_bwd_filter4_splits)(
            *params, _num_sms())
    elif isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= 65535:
        raise ValueError(f"splits: expected None or an int in [1, 65535], got {splits!r}")
    if v == 6:
        nbytes = _C.conv2d_bwd_filter6_workspace_bytes(*params, splits)
    else:
        nbytes = _C.conv2d_bwd_filter4_workspace_bytes(*params, splits, bool(deterministic))
    # From CuPy's pool, on the current stream: when `workspace` is dropped on
    # return, the pool hands its memory only to later work on this stream, which
    # runs after the reduction has read it.
    workspace = empty((nbytes // 4,)) if nbytes else None
    if v == 6:
        _C.conv2d_bwd_filter6(ptr(x), ptr(dy), ptr(dw), ptr(workspace), *params, splits, stream())
    else:                                     # 4, 10, 15 and 16: the same arguments and sizes
        VERSIONS["bwd_filter"][v](ptr(x), ptr(dy), ptr(dw), ptr(workspace), *params, splits,
                                  bool(deterministic), stream())
    return dw


def conv2d_bwd_bias(dy, *, version=None):
    """db[k] = sum of dy[:, k, :, :] (deterministic)."""
    check_array(dy, "dy", ndim=4)
    n, k, p, q = dy.shape
    if k == 0:
        return empty((0,))
    if dy.size == 0:
        return cp.zeros((k,), dtype=cp.float32)
    v = _version("bwd_bias", version, False)
    db = empty((k,))
    VERSIONS["bwd_bias"][v](ptr(dy), ptr(db), n, k, p * q, stream())
    return db
