"""The convolution ladder of kernels/README.md: per version, what the compiler made of it
(bench/results/static-counters.json) beside what it measured on a GPU
(bench/results/bench-resnet50-h200-b32.json), both generated, nothing typed.

    python bench/ladder_table.py            # print
    python bench/ladder_table.py --write    # replace the table between the markers in kernels/README.md

Static columns are for sm_90, "small / large" tile where a version has two (64x64 and
128x128 blocks: the launcher takes the large one for wide layers that still fill the
GPU). Measured columns: geometric means over ResNet-50's 23 distinct convolutions at
batch 32 of TFLOP/s and of cuDNN fp32 (TF32 off, default heuristic) time / pycnn time.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- ladder:start -->", "<!-- ladder:end -->"
#: (pass, version, kernel name (without template arguments), file)
LADDER = [
    ("fwd", 1, "conv2d_fwd_kernel1", "conv2d/01_direct.cu"),
    ("fwd", 2, "conv2d_fwd_kernel2", "conv2d/02_implicit_gemm.cu"),
    ("fwd", 7, "conv2d_fwd_kernel7", "conv2d/07_implicit_gemm_pipelined.cu"),
    ("fwd", 8, "conv2d_fwd_kernel8", "conv2d/08_implicit_gemm_tf32x3.cu"),
    ("fwd", 12, "conv2d_fwd_kernel12", "conv2d/12_implicit_gemm_warp_tiled.cu"),
    ("fwd", 13, "conv2d_fwd_kernel13", "conv2d/13_implicit_gemm_mma_tf32.cu"),
    ("bwd_data", 1, "conv2d_bwd_data_kernel1", "conv2d/01_direct.cu"),
    ("bwd_data", 3, "conv2d_bwd_data_kernel3", "conv2d/03_implicit_gemm_bwd_data.cu"),
    ("bwd_data", 9, "conv2d_bwd_data_kernel9", "conv2d/09_implicit_gemm_bwd_data_tf32x3.cu"),
    ("bwd_data", 11, "conv2d_bwd_data_kernel11", "conv2d/11_implicit_gemm_bwd_data_phased.cu"),
    ("bwd_data", 14, "conv2d_bwd_data_kernel14", "conv2d/14_implicit_gemm_bwd_data_tables.cu"),
    ("bwd_data", 17, "conv2d_bwd_data_kernel17", "conv2d/17_implicit_gemm_bwd_data_warp_tiled.cu"),
    ("bwd_filter", 1, "conv2d_bwd_filter_kernel1", "conv2d/01_direct.cu"),
    ("bwd_filter", 4, "conv2d_bwd_filter_kernel4", "conv2d/04_implicit_gemm_bwd_filter.cu"),
    ("bwd_filter", 10, "conv2d_bwd_filter_kernel10", "conv2d/10_implicit_gemm_bwd_filter_tf32x3.cu"),
    ("bwd_filter", 15, "conv2d_bwd_filter_kernel15", "conv2d/15_implicit_gemm_bwd_filter_pipelined.cu"),
    ("bwd_filter", 16, "conv2d_bwd_filter_kernel16", "conv2d/16_implicit_gemm_bwd_filter_warp_tiled.cu"),
]
_BM = re.compile(r"Tile<(\d+),")


#: Of a kernel with several precisions, the instantiations the version runs as called
#: (pycnn.backends.cuda.conv.VERSIONS): version 13 in 3xTF32 (its Fwd13Precision 1).
AS_CALLED = {"conv2d_fwd_kernel13": ", 1, "}


def _instances(kernels: dict, name: str) -> list[dict]:
    """The instantiations of kernel ``name``, small tile first; one per tile (the relu and
    atomic variants share a main loop)."""
    found = {}
    for short, entry in kernels.items():
        if short.split("<")[0] != name or AS_CALLED.get(name, "") not in short:
            continue
        m = _BM.search(short)
        tile = int(m.group(1)) if m else 0
        found.setdefault(tile, entry)
    return [found[t] for t in sorted(found)]


def _both(entries, fn) -> str:
    values = [fn(e) for e in entries]
    return " / ".join(values) if values else "-"


def _loop(e):
    return (e.get("sass") or {}).get("main_loop") or {}


def _occupancy(e) -> str:
    return f"{100 * e['occupancy']['occupancy']:.0f}%"


def _share(e) -> str:
    loop = _loop(e)
    if not loop:
        return "-"
    if loop.get("hmma"):
        return f"{100 * loop['hmma_share']:.0f}% HMMA"
    return f"{100 * loop['ffma_share']:.0f}%"


def _geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def measured(doc: dict) -> dict:
    """{(op, version): (geomean TFLOP/s, geomean cuDNN default / pycnn)} of a bench record."""
    out = {}
    for op in ("conv_fwd", "conv_bwd_data", "conv_bwd_filter"):
        for r in doc["results"]:
            if r["op"] != op or r.get("version") is None or r.get("error"):
                continue
            out.setdefault((op, r["version"]), []).append(r)
    return {k: (_geomean([r.get("tflops") for r in rows]), _geomean([r.get("ratio_default") for r in rows]))
            for k, rows in out.items()}


def table(static: dict, bench: dict | None, defaults: dict) -> str:
    kernels = static["kernels"]["sm_90"]
    meas = measured(bench) if bench else {}
    gpu = bench["env"]["gpu"] if bench else "GPU"
    lines = [f"| pass | version | file | registers | occupancy | main-loop instructions | FFMA share | "
             f"divisions in the loop | {gpu}: TFLOP/s | cuDNN fp32 / it |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pass_name, version, prefix, file in LADDER:
        entries = _instances(kernels, prefix)
        tflops, ratio = meas.get((f"conv_{pass_name}", version), (None, None))
        mark = " (default)" if defaults.get(pass_name) == version else ""
        lines.append(
            f"| {pass_name} | {version}{mark} | `{file}` | {_both(entries, lambda e: str(e['registers']))} | "
            f"{_both(entries, _occupancy)} | "
            f"{_both(entries, lambda e: str(_loop(e).get('instructions', '-')))} | "
            f"{_both(entries, _share)} | {_both(entries, lambda e: str(_loop(e).get('int_div', '-')))} | "
            f"{'-' if tflops is None else f'{tflops:.1f}'} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    lines += ["", f"Static columns: sm_90, nvcc {static['nvcc'].split(',')[-1].strip()}, small / large tile "
              "(`python -m pycnn.inspect.static` for every kernel). Main-loop instructions: one "
              "iteration of the loop over K (BK = 8 of the reduction for the FFMA versions but 16 for "
              "the warp-tiled 12, 16 and 17 and the tensor-core ones; version 12's figures are its scalar filter "
              "loads', a few main-loop instructions more than its float4 loads'); FFMA share: the "
              "FFMAs' share of its issue slots (HMMA's for the "
              "tensor-core versions: on sm_90 a TF32 HMMA.1688 does 16x8x8 multiply-adds a warp, "
              "32x an FFMA's, and 3xTF32 spends three on each product). "
              + (f"Measured: {gpu}, fp32, batch {bench['batch']}, geometric means over the "
                 f"{bench['set']} set's {len({r['case'] for r in bench['results']})} convolutions "
                 "(`bench/results/`)." if bench else "Measured: no GPU record yet.")]
    return "\n".join(lines)


def defaults() -> dict:
    """The CUDA backend's default version per pass (pycnn.backends.cuda.conv)."""
    sys.path.insert(0, str(ROOT))
    try:
        from pycnn.backends.cuda.conv import DEFAULT_VERSIONS
        return DEFAULT_VERSIONS
    except ImportError as e:            # no CuPy or no extension: say so rather than guess
        raise SystemExit(f"ladder_table: the CUDA backend does not import here ({e}); "
                         "the defaults it marks come from it") from e
    finally:
        sys.path.pop(0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    static = json.loads((HERE / "results" / "static-counters.json").read_text())
    path = HERE / "results" / "bench-resnet50-h200-b32.json"
    bench = json.loads(path.read_text()) if path.exists() else None
    text = table(static, bench, defaults())
    sys.path.insert(0, str(HERE))
    from readme_table import print_or_write
    return print_or_write(text, args.write, ROOT / "kernels" / "README.md", (START, END), "ladder_table")


if __name__ == "__main__":
    sys.exit(main())
