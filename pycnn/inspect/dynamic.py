"""Dynamic memory counters of one op, from the CPU kernel emulator: what ``ncu`` would
read on a GPU, without one.

The op runs once through its real launcher (the launcher picks its tile, grid and
splits for an H200's 132 SMs) in kernels/emulate/emulate_counters.cc; the emulator
groups the lanes of each warp into requests the way the hardware does and counts,
per launch: global load / store / atomic requests, bytes and 32-byte sectors, and
shared-memory requests, wavefronts and bank conflicts (kernels/emulate/emu_runtime.cc,
"counters", says how). Here they are added over the op's launches and set beside the
op's FLOPs and ideal bytes (pycnn.bench.metrics: each input read once, each output
written once), its arithmetic intensity and the roofline bound on the H200 and H100.

    from pycnn.inspect import dynamic
    c = dynamic.conv2d("fwd", 7, (32, 256, 14, 14, 256, 3, 3, 1, 1))   # ResNet-50 layer3
    c["launches"][0]["global_ld"]["sectors_per_request"]

Not counted, because the source does not show them: whether a global load is cached
in L1 or streams (nvcc's choice of ld.global.ca/.cg/.nc), L2 and DRAM traffic, and
nvcc's own merging or splitting of accesses (the emulator follows the source: see
tests/test_dynamic_counters.py for where ncu on the H200 differs, and why). The
tensor-core versions (conv2d 8, 9, 10): wmma::load_matrix_sync and store_matrix_sync
are emulated with a lane-to-element mapping of the emulator's own
(kernels/emulate/emu_wmma.h), not the hardware's, so their shared-memory wavefronts
and bank conflicts say nothing about the GPU; their other accesses are counted as usual.

Large grids are sampled (``sample``: that many blocks, the first, the last and evenly
spaced ones; counts scaled by blocks / sample; every launch says whether it was);
shapes whose tensors exceed ``CHECKS_LIMIT_BYTES`` run without the sanitizer's checks,
whose shadow memory takes 56 bytes per byte and doubles the time (the family harnesses
run the checks; the counters need none). A ResNet-50 3x3 layer at batch 32 (layer3,
256 channels, 14x14) takes about 20 s on one core with 16 blocks.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from pycnn.bench import metrics, roofline
from pycnn.paths import checkout

#: Blocks a launch runs at most by default; the counts of the others are scaled.
DEFAULT_SAMPLE = 16
#: The tensors' total size above which the sanitizer's checks are off by default.
CHECKS_LIMIT_BYTES = 4 << 20
#: The GPUs of the roofline: FP32 peak (pycnn.bench.roofline.PEAKS) and the copy
#: bandwidth measured on them (bytes read + written): the H200's from
#: bench/results/bench-core-h200-b32.json (4242 GB/s), the H100's from PERF.md (about 3.0 TB/s).
GPUS = {"H200": 4242.3, "H100": 3000.0}
KINDS = ("global_ld", "global_st", "global_atomic", "shared_ld", "shared_st", "shared_atomic")
_SUMMED = ("requests", "bytes", "lanes", "sectors", "wavefronts", "wavefronts_whole_warp",
           "ideal_wavefronts", "bank_conflicts")


class CountersError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def _emulate():
    """kernels/emulate/emulate.py, the emulator's build machinery."""
    root = checkout()
    if root is None:
        raise CountersError("the kernel emulator needs a source checkout (kernels/emulate/ beside pycnn/)")
    spec = importlib.util.spec_from_file_location("_pycnn_emulate", root / "kernels" / "emulate" / "emulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unavailable() -> str | None:
    """Why the counters cannot run here (no g++, no CUDA headers, no checkout), or None."""
    try:
        return _emulate().missing_tools()
    except CountersError as err:
        return str(err)


def binary(family: str) -> Path:
    """The counters driver for `family`, built on first use and cached by its sources' hash."""
    emulate = _emulate()
    try:
        return emulate.counters_binary(family)
    except emulate.BuildError as err:
        raise CountersError(str(err)) from None


def run(family: str, args: list[str], *, sample: int | None = DEFAULT_SAMPLE, checks: bool = True,
        timeout: float = 900) -> dict:
    """Runs the driver of `family` with `args` (emulate_counters.cc's usage) and returns
    its counters: {"launches": [...], "checks", "sample_blocks", "command", "seconds"}.
    ``sample`` None or 0 runs every block. A sanitizer finding or a failed run raises."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0):
        raise ValueError(f"sample: expected None or an int >= 0, got {sample!r}")
    exe = binary(family)
    with tempfile.TemporaryDirectory(prefix="pycnn-counters-") as tmp:
        out = Path(tmp) / "counters.json"
        env = dict(os.environ, PYCNN_EMU_COUNTERS=str(out), PYCNN_EMU_SAMPLE=str(sample or 0),
                   PYCNN_EMU_CHECKS="1" if checks else "0")
        env.pop("PYCNN_EMU_SEED", None)
        start = time.perf_counter()
        result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env)
        seconds = time.perf_counter() - start
        if result.returncode != 0 or not out.exists():
            raise CountersError(f"{exe.name} {' '.join(args)} failed (exit {result.returncode}):\n"
                                f"{(result.stderr or result.stdout)[-4000:]}")
        data = json.loads(out.read_text())
    data["command"] = [exe.name, *args]
    data["seconds"] = seconds
    return data


def totals(launches: list[dict]) -> dict:
    """The counters added over launches, with the per-request ratios recomputed."""
    out = {}
    for kind in KINDS:
        s = {key: sum(launch[kind].get(key, 0) for launch in launches) for key in _SUMMED
             if key in launches[0][kind]} if launches else {}
        req = s.get("requests", 0)
        if "sectors" in s:
            s["sectors_per_request"] = s["sectors"] / req if req else 0.0
        if "wavefronts" in s:
            s["wavefronts_per_request"] = s["wavefronts"] / req if req else 0.0
        out[kind] = s
    return out


def _roofline(flops: float | None, ideal_bytes: float) -> dict:
    ai = flops / ideal_bytes if flops and ideal_bytes else None
    out = {"flops": flops, "ideal_bytes": ideal_bytes, "arithmetic_intensity": ai, "bound": {}}
    for gpu, bandwidth in GPUS.items():
        peak = roofline.peak_fp32_tflops(gpu)
        if ai is None:
            out["bound"][gpu] = {"tflops": None, "limit": "memory", "min_time_us": ideal_bytes / bandwidth / 1e3}
            continue
        tflops = roofline.attainable_tflops(ai, peak, bandwidth)
        out["bound"][gpu] = {"tflops": tflops, "limit": "compute" if tflops >= peak else "memory",
                             "min_time_us": flops / (tflops * 1e12) * 1e6, "peak_fp32_tflops": peak,
                             "copy_bandwidth_gbps": bandwidth}
    return out


def _finish(data: dict, op: str, flops: float | None, ideal_bytes: float) -> dict:
    data["op"] = op
    data["totals"] = totals(data["launches"])
    t = data["totals"]
    requested = sum(t[k].get("bytes", 0) for k in ("global_ld", "global_st", "global_atomic"))
    moved = 32 * sum(t[k].get("sectors", 0) for k in ("global_ld", "global_st", "global_atomic"))
    data["global_bytes_requested"] = requested
    data["global_sector_bytes"] = moved
    data["requested_over_ideal"] = requested / ideal_bytes if ideal_bytes else None
    data["sampled"] = any(launch["sampled"] for launch in data["launches"])
    data.update(_roofline(flops, ideal_bytes))
    data["reading"] = reading(data)
    return data


def reading(data: dict) -> list[str]:
    """One line per counter that explains something: coalescing, bank conflicts, the
    bytes requested against the op's ideal."""
    lines = []
    for launch in data["launches"]:
        name = launch["kernel"]
        for kind in ("global_ld", "global_st"):
            c = launch[kind]
            if not c["requests"]:
                continue
            useful = c["bytes"] / (32 * c["sectors"]) if c["sectors"] else 1.0
            lanes = c["lanes"] / c["requests"]
            best = c["bytes"] / c["requests"] / 32
            what = "load" if kind == "global_ld" else "store"
            lines.append(f"{name}: each warp's {what} touches {c['sectors_per_request']:.1f} sectors "
                         f"({lanes:.0f} lanes, {best:.1f} sectors' worth of bytes): {useful:.0%} of the "
                         f"bytes moved are used" + ("" if useful > 0.9 else "; the lanes' addresses are not contiguous"))
        for kind in ("shared_ld", "shared_st"):
            c = launch[kind]
            if not c["requests"]:
                continue
            what = "read" if kind == "shared_ld" else "write"
            extra = c["bank_conflicts"] / c["requests"]
            lines.append(f"{name}: shared-memory {what}s take {c['wavefronts_per_request']:.2f} wavefronts per request"
                         + (f", {extra:.2f} of them bank conflicts" if extra > 0.01 else ", no bank conflicts"))
    if data.get("requested_over_ideal"):
        lines.append(f"global bytes requested: {data['requested_over_ideal']:.2f}x the op's ideal "
                     f"({data['global_bytes_requested'] / 1e6:.2f} MB against {data['ideal_bytes'] / 1e6:.2f} MB; "
                     "what the caches catch of the excess is not modelled)")
    if data["sampled"]:
        lines.append("sampled: some launches ran only some of their blocks; their counts are scaled by blocks / blocks run")
    return lines


def _auto_checks(checks: bool | None, nbytes: int) -> bool:
    return nbytes <= CHECKS_LIMIT_BYTES if checks is None else bool(checks)


def _ints(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = value.split(",")
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {n} integers, got {value!r}") from None
    if len(out) != n or any(v < 0 for v in out):
        raise ValueError(f"{name}: expected {n} integers >= 0, got {value!r}")
    return out


def conv2d(pass_name: str, version: int, shape, *, groups: int = 1, sample: int | None = DEFAULT_SAMPLE,
           checks: bool | None = None) -> dict:
    """Counters of conv2d `pass_name` ("fwd", "bwd_data", "bwd_filter") version `version`
    on `shape` = N,C,H,W,K,R,S,stride,pad (a string or 9 integers)."""
    if pass_name not in ("fwd", "bwd_data", "bwd_filter"):
        raise ValueError(f"pass_name: expected 'fwd', 'bwd_data' or 'bwd_filter', got {pass_name!r}")
    n, c, h, w, k, r, s, stride, pad = _ints(shape, 9, "shape (N,C,H,W,K,R,S,stride,pad)")
    case = {"op": "conv", "C": c, "H": h, "W": w, "K": k, "R": r, "S": s, "groups": groups,
            "stride": (stride, stride), "padding4": (pad, pad, pad, pad), "dilation": (1, 1)}
    op = f"conv_{pass_name}"
    flops, ideal = metrics.op_metrics(op, case, n)
    data = run("conv2d", ["conv2d", pass_name, str(int(version)), ",".join(map(str, (n, c, h, w, k, r, s, stride, pad))),
                          str(groups)], sample=sample, checks=_auto_checks(checks, ideal))
    return _finish(data, f"conv2d {pass_name} v{version} N{n} C{c} H{h} W{w} K{k} {r}x{s} s{stride} p{pad}"
                   + (f" g{groups}" if groups != 1 else ""), flops, ideal)


def pool(kind: str, pass_name: str, shape, *, sample: int | None = DEFAULT_SAMPLE, checks: bool | None = None) -> dict:
    """Counters of a max or avg pool (`kind` "max" / "avg"), `pass_name` "fwd" or "bwd"
    (max: "bwd" is version 2, the default gather; "bwd1" the atomic scatter), on
    `shape` = N,C,H,W,kernel,stride,pad."""
    if kind not in ("max", "avg"):
        raise ValueError(f"kind: expected 'max' or 'avg', got {kind!r}")
    passes = ("fwd", "bwd", "bwd1", "bwd2") if kind == "max" else ("fwd", "bwd")
    if pass_name not in passes:
        raise ValueError(f"pass_name: expected one of {passes}, got {pass_name!r}")
    n, c, h, w, k, stride, pad = _ints(shape, 7, "shape (N,C,H,W,kernel,stride,pad)")
    driver_pass = "bwd2" if (kind == "max" and pass_name == "bwd") else pass_name
    case = {"op": f"{kind}_pool", "C": c, "H": h, "W": w, "kernel": (k, k), "stride": (stride, stride),
            "padding": (pad, pad)}
    op = f"{kind}_pool_{'fwd' if pass_name == 'fwd' else 'bwd'}"
    flops, ideal = metrics.op_metrics(op, case, n)
    data = run("pool", [f"{kind}_pool2d", driver_pass, ",".join(map(str, (n, c, h, w, k, stride, pad)))],
               sample=sample, checks=_auto_checks(checks, ideal))
    return _finish(data, f"{kind}_pool2d {driver_pass} N{n} C{c} H{h} W{w} {k}x{k} s{stride} p{pad}", flops, ideal)


def activation(fn: str, pass_name: str, shape, *, sample: int | None = DEFAULT_SAMPLE,
               checks: bool | None = None) -> dict:
    """Counters of `fn` ("relu", "leaky_relu", "sigmoid", "tanh") `pass_name` on a tensor
    of `shape` (N,C,H,W, or a count)."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, str):
        shape = shape.split(",")
    dims = _ints(shape, len(tuple(shape)), "shape")
    count = 1
    for d in dims:
        count *= d
    op = f"{fn}_{pass_name}"
    if op not in metrics.OPS["act"]:
        raise ValueError(f"fn, pass_name: expected one of {metrics.OPS['act']}, got {op!r}")
    flops, ideal = metrics.op_metrics(op, {"op": "act", "C": count, "H": 1, "W": 1}, 1)
    data = run("activation", ["activation", fn, pass_name, str(count)], sample=sample,
               checks=_auto_checks(checks, ideal))
    return _finish(data, f"{fn} {pass_name} ({count} elements)", flops, ideal)


def batch_norm(pass_name: str, version: int, shape, *, sample: int | None = DEFAULT_SAMPLE,
               checks: bool | None = None) -> dict:
    """Counters of training batch norm `pass_name` ("fwd", "bwd") `version` (1, 2) on N,C,H,W."""
    n, c, h, w = _ints(shape, 4, "shape (N,C,H,W)")
    op = f"batch_norm_{pass_name}"
    if op not in metrics.BATCH_NORM_OPS:
        raise ValueError(f"pass_name: expected 'fwd' or 'bwd', got {pass_name!r}")
    flops, ideal = metrics.op_metrics(op, {"op": "batch_norm", "C": c, "H": h, "W": w}, n)
    data = run("batch_norm", ["batch_norm", pass_name, str(int(version)), f"{n},{c},{h},{w}"], sample=sample,
               checks=_auto_checks(checks, ideal))
    return _finish(data, f"batch_norm {pass_name} v{version} N{n} C{c} H{h} W{w}", flops, ideal)


def softmax(pass_name: str, shape, *, sample: int | None = DEFAULT_SAMPLE, checks: bool | None = None) -> dict:
    """Counters of softmax `pass_name` ("fwd", "bwd") over `shape` = OUTER,DIM,INNER (the
    softmax runs along DIM). pycnn.bench.metrics has no softmax: ideal bytes here are x
    read and y written (forward) or dy, y read and dx written (backward); FLOPs nominal,
    one per element."""
    outer, dim, inner = _ints(shape, 3, "shape (OUTER,DIM,INNER)")
    if pass_name not in ("fwd", "bwd"):
        raise ValueError(f"pass_name: expected 'fwd' or 'bwd', got {pass_name!r}")
    count = outer * dim * inner
    ideal = metrics.F32 * count * (2 if pass_name == "fwd" else 3)
    data = run("softmax", ["softmax", pass_name, f"{outer},{dim},{inner}"], sample=sample,
               checks=_auto_checks(checks, ideal))
    return _finish(data, f"softmax {pass_name} outer {outer} dim {dim} inner {inner}", count, ideal)


def probe(name: str, n: int = 1 << 20, *, sample: int | None = None, checks: bool = True) -> dict:
    """Counters of a probe kernel of bench/counter_probes.cu, launched as
    bench/ncu_probe.py launches it (n floats, blocks of 256; float4: n/4 threads)."""
    return run("pool", ["probe", name, str(int(n))], sample=sample, checks=checks)
