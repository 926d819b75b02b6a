"""Run a shape set: check each pycnn output against the baseline, then time both.

GPU path: pycnn's CUDA backend against PyTorch on the same device and the same
buffers (DLPack, zero copy), FP32 against FP32 (TF32 off). Everything runs on one
CuPy stream, which PyTorch also uses (ExternalStream), so CUDA events bracket
exactly the work of one call. cuDNN convolutions are measured in three modes:
with the default heuristic on this thread; autotuned (cudnn.benchmark) on a second
thread; and, as the tensor-core reference, autotuned with TF32 allowed on a third.
PyTorch keeps its cuDNN plan cache per thread and consults it in every mode, so one
thread per mode keeps a plan chosen in one mode from being reused in another. The
TF32 mode is less accurate than fp32 (its error against the fp32 result is recorded
beside its time): it is the ceiling of TF32 tensor cores, the figure a TF32 kernel
is to be compared with, not an fp32 baseline.

Each pycnn call is checked against the baseline's output before it is timed, with
the buffers the backend allocates filled with NaN for that call, so that a version
leaving part of its output unwritten fails the check instead of passing on the block
CuPy's pool hands back from the version before.

CPU path: the NumPy reference alone, timed with time.perf_counter.
"""
from __future__ import annotations

import importlib
import inspect
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

from pycnn import paths
from pycnn.bench.metrics import BATCH_NORM_OPS, CONV_OPS, OPS, conv_shapes, op_metrics, shape_class
from pycnn.bench.ops import build, first
from pycnn.bench.roofline import attainable_tflops

RATIO = "baseline time / pycnn time: > 1 means pycnn is faster"
#: ratio_<mode> of a result row -> the row's key holding that baseline's figures
BASELINES = {"default": "baseline", "autotuned": "baseline_autotuned", "tf32": "baseline_tf32"}
#: The backend functions the benchmark calls.
NEEDED = ("conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter", "max_pool2d_fwd", "max_pool2d_bwd",
          "avg_pool2d_fwd", "avg_pool2d_bwd", "adaptive_avg_pool2d_fwd", "adaptive_avg_pool2d_bwd",
          "relu_fwd", "relu_bwd", "leaky_relu_fwd", "leaky_relu_bwd", "sigmoid_fwd", "sigmoid_bwd",
          "tanh_fwd", "tanh_bwd", "bias_relu_fwd", "batch_norm_fwd", "batch_norm_bwd")


def find_gpu():
    """(cupy, pycnn CUDA backend, None), or (None, None, why not)."""
    try:
        import cupy as cp
    except ImportError:
        return None, None, "CuPy is not installed"
    try:
        if not cp.cuda.is_available():
            return None, None, "CuPy sees no CUDA device"
    except Exception as exc:     # a driver or runtime problem: report it, run on the CPU
        return None, None, f"CUDA is unusable ({exc})"
    try:
        importlib.import_module("pycnn._C")
        be = importlib.import_module("pycnn.backends.cuda")
    except ImportError as exc:
        return None, None, f"the CUDA backend is not available ({exc})"
    missing = [name for name in NEEDED if not hasattr(be, name)]
    if missing:
        return None, None, f"pycnn.backends.cuda lacks {', '.join(missing)}"
    return cp, be, None


def find_torch():
    """(torch, None), or (None, why there is no baseline)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no CUDA device"
    if not torch.backends.cudnn.is_available():
        return None, "PyTorch was built without cuDNN"
    return torch, None


def _has_fp32_precision(torch) -> bool:
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision")


def _set_cudnn_tf32(torch, on: bool):
    """Allow (or forbid) TF32 in cuDNN convolutions, through whichever API this
    PyTorch has. Newer PyTorch has per-backend ``fp32_precision`` attributes and
    raises if they are mixed with the legacy ``allow_tf32`` flags, so only one API
    is used; cuDNN-wide, conv and RNN are set alike because PyTorch raises on a
    cuDNN-wide query when conv and RNN disagree."""
    if _has_fp32_precision(torch):
        for scope in (torch.backends.cudnn, getattr(torch.backends.cudnn, "rnn", None),
                      torch.backends.cudnn.conv):
            if scope is not None and hasattr(scope, "fp32_precision"):
                scope.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = on


def force_fp32(torch) -> dict:
    """Turn TF32 off for cuDNN convolutions and cuBLAS; return the settings as recorded."""
    torch.backends.cudnn.benchmark = False
    _set_cudnn_tf32(torch, False)
    if _has_fp32_precision(torch):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        return {"api": "fp32_precision", "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
                "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"api": "allow_tf32", "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}


@contextmanager
def cudnn_mode(torch, tf32: bool = False):
    """cuDNN autotuned (cudnn.benchmark: the first call of a shape searches the
    algorithms), with TF32 tensor cores allowed if ``tf32``; back to the fp32
    heuristic on the way out, whatever happens inside."""
    torch.backends.cudnn.benchmark = True
    if tf32:
        _set_cudnn_tf32(torch, True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = False
        if tf32:
            _set_cudnn_tf32(torch, False)


class Gpu:
    """CuPy, the CUDA backend, optionally PyTorch, one stream they all use."""

    def __init__(self, cp, be, torch, timer):
        self.cp, self.be, self.torch, self.timer = cp, be, torch, timer
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.torch_stream = torch.cuda.ExternalStream(self.stream.ptr) if torch else None
        # one thread per autotuned mode (fp32, TF32): PyTorch's plan caches are per thread
        self.tuners = {tf32: ThreadPoolExecutor(max_workers=1) for tf32 in (False, True)} if torch else None

    @contextmanager
    def on_stream(self):
        """Make our stream current for CuPy and PyTorch (both keep it per thread)."""
        with self.stream:
            with self.torch.cuda.stream(self.torch_stream) if self.torch else nullcontext():
                yield

    def autotuned(self, problem, tf32: bool = False):
        """(timing, output) of the baseline autotuned, past the search, on the mode's
        own thread; with ``tf32``, cuDNN may use TF32 tensor cores."""
        def work():
            with self.on_stream(), cudnn_mode(self.torch, tf32):
                fn = problem.theirs(self.torch)
                out = fn()      # the first call runs cuDNN's algorithm search
                return self.timer.measure(fn), out
        return self.tuners[tf32].submit(work).result()

    def free(self):
        self.stream.synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()
        if self.torch:
            self.torch.cuda.empty_cache()


#: bench op -> the pass name of the CUDA conv and batch-norm modules
#: The ops whose kernels come in versions: (the CUDA backend's module, the pass name its
#: ``VERSIONS`` and ``default_version`` use). Each version is timed beside the default.
VERSIONED = {"conv_fwd": ("conv", "fwd"), "conv_bias_relu_fwd": ("conv", "fwd"),
             "conv_bwd_data": ("conv", "bwd_data"), "conv_bwd_filter": ("conv", "bwd_filter"),
             "batch_norm_fwd": ("batch_norm", "fwd_train"), "batch_norm_bwd": ("batch_norm", "bwd"),
             "max_pool_bwd": ("pool", "max_bwd")}


def conv_versions(be, op: str, w_shape=None):
    """[(label, version)] of the CUDA conv module's kernel versions for this pass.

    ``VERSIONS`` may be keyed by pass (``{"conv2d_fwd": {1: ..., 2: ...}}``, or
    ``"fwd"``) or flat (one set of versions, for every pass whose function takes
    ``version=``; a version a pass lacks then shows as an error row). Given the
    weight shape, versions that cannot run it (the depthwise-only kernels on a
    dense layer) are left out, through the module's ``versions_for``. Versions in
    the module's ``TENSOR_CORE_VERSIONS`` are labelled "3xTF32": fp32 accuracy
    from TF32 tensor cores, not fp32 FMAs.
    """
    try:
        conv = importlib.import_module(be.__name__ + ".conv")
    except ImportError:
        return None, []
    versions = getattr(conv, "VERSIONS", None) or {}
    name = "conv2d_" + op.removeprefix("conv_")       # conv_bwd_data -> conv2d_bwd_data
    fn = getattr(conv, name, None)
    if fn is None or "version" not in inspect.signature(fn).parameters:
        return conv, []
    # "fwd", "bwd_data", "bwd_filter"; the fused forward has the forward's versions
    short = VERSIONED[op][1]
    passes = {"conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter", "fwd", "bwd_data", "bwd_filter"}
    if name in versions or short in versions:
        keys = list(versions.get(name, versions.get(short)))
    else:
        keys = [k for k in versions if k not in passes]
    if w_shape is not None and hasattr(conv, "versions_for") and short in versions:
        keys = [k for k in keys if k in conv.versions_for(short, tuple(w_shape))]
    tensor_cores = getattr(conv, "TENSOR_CORE_VERSIONS", ())

    def label(k):
        name = f"pycnn v{k:02d}" if isinstance(k, int) else f"pycnn v{k}"
        return name + " 3xTF32" if k in tensor_cores else name
    return conv, [(label(k), k) for k in keys]


def module_versions(be, op: str):
    """(module, [(label, version)]) of a versioned op other than a convolution: the
    backend module's ``VERSIONS`` for this pass (batch norm's "fwd_train" and "bwd",
    max pool's "max_bwd"); (None, []) for a backend without the module."""
    name, pass_name = VERSIONED[op]
    try:
        module = importlib.import_module(f"{be.__name__}.{name}")
    except ImportError:
        return None, []
    keys = (getattr(module, "VERSIONS", None) or {}).get(pass_name, ())
    return module, [(f"pycnn v{k:02d}", k) for k in keys]


def default_runs(be, op: str, case: dict, n: int):
    """The kernel version a call without ``version=`` runs on this case (the
    module's ``default_version``), or None where the backend has no versions."""
    if op not in VERSIONED:
        return None
    name, pass_name = VERSIONED[op]
    try:
        module = importlib.import_module(f"{be.__name__}.{name}")
    except ImportError:
        return None
    pick = getattr(module, "default_version", None)
    if pick is None:
        return None
    if op in CONV_OPS:
        x_shape, w_shape, _ = conv_shapes(case, n)
        chosen = getattr(module, "chosen_version", None)
        if chosen is not None:          # the tuner's choice once the first call has made it
            return chosen(op.removeprefix("conv_"), x_shape, w_shape, case["stride"],
                          case["padding4"], case["dilation"], case["groups"])[0]
        return pick(pass_name, x_shape, w_shape, case["stride"], case["groups"])
    if op in BATCH_NORM_OPS:
        return pick(n, case["C"], case["H"] * case["W"])
    return pick(pass_name)


def tuner_note(be, op: str, case: dict, n: int) -> str | None:
    """Why the default call of a conv case ran the version it ran: the tuner's entry
    (what it timed, what it kept), or None where the heuristic decided."""
    if op not in CONV_OPS:
        return None
    try:
        conv = importlib.import_module(be.__name__ + ".conv")
        tune = importlib.import_module(be.__name__ + ".tune")
    except ImportError:
        return None
    x_shape, w_shape, _ = conv_shapes(case, n)
    _, entry = conv.chosen_version(op.removeprefix("conv_"), x_shape, w_shape, case["stride"],
                                   case["padding4"], case["dilation"], case["groups"])
    return None if entry is None else "tuned " + tune.why(entry)


def poisoned(be):
    """The backend's ``poisoned_outputs`` (buffers it allocates start as NaN), or a
    no-op context for a backend without one (the NumPy reference)."""
    try:
        return importlib.import_module(be.__name__ + "._common").poisoned_outputs()
    except (ImportError, AttributeError):
        return nullcontext()


def rel_err(xp, ours, ref) -> float:
    """max |ours - ref| / max |ref|: relative to the output's scale, so that
    entries near zero do not blow it up."""
    ours = xp.asarray(ours, dtype=xp.float64)
    ref = xp.asarray(ref, dtype=xp.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"output shape {tuple(ours.shape)} differs from the baseline's "
                         f"{tuple(ref.shape)}")
    scale = max(float(xp.abs(ref).max()), 1e-30)
    return float(xp.abs(ours - ref).max()) / scale


def figures(stats, flops, nbytes, roof, peak="peak_fp32_tflops") -> dict:
    """Throughput and roofline fraction of one timing, under the compute roof
    ``roof[peak]`` (FP32 FFMA; TF32 tensor cores for cuDNN's TF32 mode)."""
    seconds = stats["median_ms"] * 1e-3
    tflops = flops / seconds / 1e12
    out = {"time": stats, "tflops": tflops, "gbps": nbytes / seconds / 1e9}
    if roof.get(peak) is not None:
        out["roof_fraction"] = tflops / attainable_tflops(
            flops / nbytes, roof[peak], roof["copy_bandwidth_gbps"])
    else:
        out["roof_fraction"] = None
    return out


def run_set(doc, batch, ops, be, xp, timer, roof, tol, gpu: Gpu | None = None, log=print,
            rows: list | None = None):
    """Every (case, op, implementation) of one set, as a list of result rows; appended
    to ``rows`` as each op finishes, so that a caller stopped part way keeps them."""
    rows = [] if rows is None else rows
    torch = gpu.torch if gpu else None
    for case in doc["cases"]:
        n = case.get("N", batch)
        for op in OPS[case["op"]]:
            if op not in ops:
                continue
            with gpu.on_stream() if gpu else nullcontext():
                new = _run_op(op, case, n, be, xp, timer, roof, tol, gpu, torch)
            for row in new:
                log(_one_line(row))
            rows.extend(new)
        if gpu:
            gpu.free()
    return rows


def _run_op(op, case, n, be, xp, timer, roof, tol, gpu, torch):
    flops, nbytes = op_metrics(op, case, n)
    base = {"case": case["name"], "op": op, "shape_class": shape_class(case), "N": n, "count": case["count"],
            "flops": flops, "bytes": nbytes, "ai": flops / nbytes,
            "baseline": None, "baseline_autotuned": None, "baseline_error": None,
            "baseline_tf32": None, "baseline_tf32_rel_err": None,
            "ratio_default": None, "ratio_autotuned": None, "ratio_tf32": None}
    problem = build(op, case, n, be, xp)
    ref = None
    if torch is not None:
        try:
            fn = problem.theirs(torch)
            ref = xp.from_dlpack(fn())
            base["baseline"] = figures(timer.measure(fn), flops, nbytes, roof)
            if op in CONV_OPS:
                base["baseline_autotuned"] = figures(gpu.autotuned(problem)[0], flops, nbytes, roof)
                stats, out = gpu.autotuned(problem, tf32=True)
                base["baseline_tf32"] = figures(stats, flops, nbytes, roof, "peak_tf32_tflops")
                base["baseline_tf32_rel_err"] = rel_err(xp, xp.from_dlpack(out), ref)
        except Exception as exc:     # keep going: pycnn's figures are still worth having
            base["baseline_error"] = f"{type(exc).__name__}: {exc}"

    impls = [("pycnn", None, be)]
    runs = default_runs(be, op, case, n) if gpu else None
    if gpu and op in CONV_OPS:
        conv, versions = conv_versions(be, op, conv_shapes(case, n)[1])
        impls += [(label, v, conv) for label, v in versions]
    elif gpu and op in VERSIONED:
        module, versions = module_versions(be, op)
        impls += [(label, v, module) for label, v in versions]
    rows = []
    for label, version, target in impls:
        kw = {} if version is None else {"version": version}
        row = dict(base, impl=label, version=version, runs=runs if version is None else version,
                   error=None, max_rel_err=None, ok=None)
        try:
            with poisoned(be):          # the checked call: no stale result can pass for it
                out = first(problem.ours(target, **kw))
            if version is None and gpu:   # the first call of a shape is where the tuner chooses
                row["runs"] = default_runs(be, op, case, n)
                row["tuned"] = tuner_note(be, op, case, n)
            if ref is not None:
                row["max_rel_err"] = rel_err(xp, out, ref)
                row["ok"] = row["max_rel_err"] <= tol
            row.update(figures(timer.measure(lambda: problem.ours(target, **kw)), flops, nbytes, roof))
        except Exception as exc:
            row.update(error=f"{type(exc).__name__}: {exc}", ok=False)
            rows.append(row)
            continue
        for mode, key in BASELINES.items():
            if base[key] is not None:
                row[f"ratio_{mode}"] = base[key]["time"]["median_ms"] / row["time"]["median_ms"]
        rows.append(row)
    return rows


def _one_line(row) -> str:
    # op column 18 wide: the longest op name, conv_bias_relu_fwd, is 18 characters
    if row["error"]:
        return f"  {row['case']:<36} {row['op']:<18} {row['impl']:<12} ERROR {row['error']}"
    text = (f"  {row['case']:<36} {row['op']:<18} {row['impl']:<12} "
            f"{row['time']['median_ms']:9.4f} ms {row['tflops']:9.3g} TFLOP/s {row['gbps']:9.3g} GB/s")
    if row["ratio_default"] is not None:
        text += f"  x{row['ratio_default']:.2f} vs default"
    if row["ok"] is False:
        text += f"  FAILED (err {row['max_rel_err']:.1e})"
    if row.get("tuned"):
        text += f"\n      {row['tuned']}"
    return text


def nvidia_smi(index: int):
    """Clocks, power limit and temperature as nvidia-smi reports them, or None."""
    fields = ("driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
              "power.limit", "temperature.gpu", "persistence_mode")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader",
                              "-i", str(index)], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    values = [v.strip() for v in out.stdout.strip().split(",")]
    return dict(zip(fields, values)) if len(values) == len(fields) else None


def environment(root, cp=None, torch=None) -> dict:
    """Versions, device, commit and time: what a reader needs to trust a figure."""
    import datetime
    import platform

    import numpy as np

    commit, dirty = paths.git_commit(root)
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu": platform.processor(),
           "git_commit": commit, "git_dirty": dirty, "gpu": None,
           "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if cp is not None:
        rt = cp.cuda.runtime
        dev = cp.cuda.Device().id
        props = rt.getDeviceProperties(dev)
        version = lambda v: f"{v // 1000}.{v % 1000 // 10}"     # 12040 -> "12.4"
        name = props["name"]
        env.update(gpu=name.decode() if isinstance(name, bytes) else str(name), gpu_index=dev, sm_count=props.get("multiProcessorCount"),
                   l2_bytes=props.get("l2CacheSize"), cupy=cp.__version__,
                   cuda_driver=version(rt.driverGetVersion()), cuda_runtime=version(rt.runtimeGetVersion()),
                   nvidia_smi=nvidia_smi(dev))
    if torch is not None:
        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env
