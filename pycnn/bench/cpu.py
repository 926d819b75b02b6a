"""What the CPU benchmarks record about the BLAS beneath NumPy.

The GEMMs of a CPU step run in NumPy's OpenBLAS, and which of OpenBLAS's kernels runs
them sets much of a step's time: on the AVX-512 EPYC machine of bench/results the
Haswell (AVX2) kernels reach 250 GF/s on a 2048^3 float32 product with 2 threads, the
SkylakeX (AVX-512) ones 460 GF/s. OpenBLAS picks its kernels from the CPU at load time
unless ``OPENBLAS_CORETYPE`` names them; the benchmarks record both, beside PyTorch's own
choice (MKL and oneDNN, which ignore that variable), so that a ratio says what it compares.
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _openblas_library():
    import numpy as np
    here = os.path.dirname(np.__file__)
    patterns = ("../numpy.libs/*openblas*.so*", ".dylibs/*openblas*", "../numpy.libs/*openblas*.dll")
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(here, pattern))):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def _call(lib, names):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return fn().decode(errors="replace").strip()
    return None


def blas_info() -> dict:
    """``{"library", "core", "OPENBLAS_CORETYPE"}``: NumPy's OpenBLAS build string, the
    kernel set in use (None where the library cannot be asked), and the variable that
    pins it (None when unset)."""
    info = {"library": None, "core": None, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    lib = _openblas_library()
    if lib is not None:
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                info["library"] = info["library"] or _call(lib, [f"{prefix}get_config{suffix}"])
                info["core"] = info["core"] or _call(lib, [f"{prefix}get_corename{suffix}"])
    return info


def describe(info: dict | None) -> str:
    """One line for a table's notes: 'NumPy's OpenBLAS on its Haswell kernels (pinned by
    OPENBLAS_CORETYPE=Haswell)'."""
    if not info or not info.get("core"):
        return "NumPy's BLAS kernels not recorded"
    pin = info.get("OPENBLAS_CORETYPE")
    how = f"pinned by OPENBLAS_CORETYPE={pin}" if pin else "chosen by OpenBLAS for this CPU"
    return f"NumPy's OpenBLAS on its {info['core']} kernels ({how})"
