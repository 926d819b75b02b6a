"""The launches that bench/gpu_session.sh profiles with ncu: the probe kernels of
bench/counter_probes.cu (known answers), three of pycnn's kernels, then the newer
convolution versions (NEWER), on shapes small enough for the emulator to run the same
launches on the CPU.

    ncu --clock-control none --csv --page raw --metrics ... python bench/ncu_probe.py

Every launch is made once, in the order of LAUNCHES, so that ncu's rows map onto it;
what was launched goes to stderr, keeping ncu's CSV on stdout clean.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PROBE_N = 1 << 20          # floats: 4 MiB, 4096 blocks of 256
PROBES = ("probe_copy", "probe_copy_stride32", "probe_copy_float4",
          "probe_smem_conflict32", "probe_smem_padded", "probe_smem_broadcast")
#: (label, backend call) of the pycnn launches; shapes shared with the emulator's counters.
CONV_X, CONV_W = (2, 32, 16, 16), (64, 32, 3, 3)
POOL_X = (2, 32, 16, 16)
LAUNCHES = ["conv2d_fwd v2 x(2,32,16,16) w(64,32,3,3) s1 p1",
            "conv2d_fwd v7 x(2,32,16,16) w(64,32,3,3) s1 p1",
            "max_pool2d_fwd x(2,32,16,16) 3x3 s2 p1"]
#: The newer convolution versions after them, on the same shape (a version this build
#: lacks is skipped with a line on stderr): rows for the emulator's counters to match
#: next (stride 2 for backward-data, so that version 14 runs four phases).
NEWER = [("fwd", 12, (1, 1)), ("fwd", 13, (1, 1)), ("bwd_data", 14, (2, 2)), ("bwd_filter", 15, (1, 1)),
         ("bwd_filter", 16, (1, 1))]


def main() -> int:
    import cupy as cp

    from pycnn.backends.cuda import conv, pool
    from pycnn.shapes import conv2d_output_shape

    src = (Path(__file__).resolve().parent / "counter_probes.cu").read_text()
    module = cp.RawModule(code=src)
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal(PROBE_N, dtype=np.float32))
    y = cp.empty_like(x)
    for name in PROBES:
        kernel = module.get_function(name)
        n = PROBE_N // 4 if name == "probe_copy_float4" else PROBE_N
        kernel(((n + 255) // 256,), (256,), (x, y, np.int32(n)))
        cp.cuda.runtime.deviceSynchronize()
        print(f"launched {name} n={n}", file=sys.stderr)

    cx = cp.asarray(rng.standard_normal(CONV_X, dtype=np.float32))
    cw = cp.asarray(rng.standard_normal(CONV_W, dtype=np.float32))
    for label, version in zip(LAUNCHES[:2], (2, 7)):
        conv.conv2d_fwd(cx, cw, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, version=version)
        cp.cuda.runtime.deviceSynchronize()
        print(f"launched {label}", file=sys.stderr)
    px = cp.asarray(rng.standard_normal(POOL_X, dtype=np.float32))
    pool.max_pool2d_fwd(px, (3, 3), (2, 2), (1, 1), (1, 1), False)
    cp.cuda.runtime.deviceSynchronize()
    print(f"launched {LAUNCHES[2]}", file=sys.stderr)
    for pass_name, version, stride in NEWER:
        label = f"conv2d_{pass_name} v{version} x{CONV_X} w{CONV_W} s{stride[0]} p1"
        out = conv2d_output_shape(CONV_X, CONV_W, stride, (1, 1, 1, 1), (1, 1))
        dy = cp.asarray(rng.standard_normal(out, dtype=np.float32))
        run = {"fwd": lambda: conv.conv2d_fwd(cx, cw, None, stride, (1, 1, 1, 1), (1, 1), 1, version=version),
               "bwd_data": lambda: conv.conv2d_bwd_data(dy, cw, CONV_X, stride, (1, 1, 1, 1), (1, 1), 1,
                                                        version=version),
               "bwd_filter": lambda: conv.conv2d_bwd_filter(cx, dy, CONV_W, stride, (1, 1, 1, 1), (1, 1), 1,
                                                            version=version)}[pass_name]
        try:
            run()
            cp.cuda.runtime.deviceSynchronize()
        except ValueError as err:  # a version this build does not have
            print(f"skipped {label}: {err}", file=sys.stderr)
            continue
        print(f"launched {label}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
