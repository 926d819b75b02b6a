"""Every CUDA kernel of pycnn, run on the CPU and compared with plain loops.

Each ``kernels/emulate/emulate_<family>.cc`` includes the real kernel bodies of
one family (the launchers are hidden by ``PYCNN_KERNEL_EMULATION``), runs them
through ``kernels/emulate/emu.h`` (CUDA threads as fibers, real barriers,
emulated warp shuffles and atomics) on odd shapes with the launchers' block
sizes and grids, and compares with loops written from the definitions. So CI,
without a GPU, still checks each kernel's index math, bounds guards, barrier
placement and shuffle logic. Needs g++ and the CUDA headers (for dim3, float4),
not a GPU; skipped with the reason when either is missing.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
EMULATORS = sorted(p.stem.removeprefix("emulate_") for p in (KERNELS / "emulate").glob("emulate_*.cc"))
FAMILIES = ("activation", "batch_norm", "conv2d", "dropout", "pool", "softmax")


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's include dir (with cuda_runtime.h): CUDA_HOME, CUDA_PATH,
    /usr/local/cuda, then the newest /usr/local/cuda-*. Not found through nvcc on
    PATH, which may be a wrapper script."""
    def version(path: str) -> tuple:
        return tuple(int(part) if part.isdigit() else -1 for part in path.rsplit("-", 1)[-1].split("."))

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates += sorted(glob.glob("/usr/local/cuda-*"), key=version, reverse=True)
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_runtime.h").is_file():
            return Path(root) / "include"
    return None


def test_every_kernel_family_has_an_emulator():
    kernel_dirs = sorted(p.name for p in KERNELS.iterdir() if p.is_dir() and any(p.glob("*.cu")))
    assert sorted(FAMILIES) == kernel_dirs, "a kernel family without an emulator (or a stale list)"
    assert sorted(FAMILIES) == EMULATORS


def build(source: Path, tmp_path: Path) -> Path:
    """Compiles one emulator source with g++ into tmp_path; skips without g++ or CUDA headers."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the kernel emulators are built with it")
    include = cuda_include_dir()
    if include is None:
        pytest.skip("cuda_runtime.h not found (CUDA_HOME, CUDA_PATH, /usr/local/cuda, /usr/local/cuda-*)")
    binary = tmp_path / source.stem
    result = subprocess.run(
        [gxx, "-std=c++17", "-O1", "-pthread", f"-I{include}", f"-I{KERNELS}", str(source), "-o", str(binary)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"building {source.name} failed:\n{result.stderr[-6000:]}"
    return binary


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_match_loops_on_cpu(family, tmp_path):
    source = KERNELS / "emulate" / f"emulate_{family}.cc"
    run = subprocess.run([str(build(source, tmp_path))], capture_output=True, text=True, timeout=300)
    failed = "\n".join(line for line in run.stdout.splitlines() if "MISMATCH" in line)
    assert run.returncode == 0, (f"{source.name} exited {run.returncode}:\n{failed[-6000:]}\n"
                                 f"{run.stdout[-1500:]}\n{run.stderr[-3000:]}")
    last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert last.startswith("all ok"), f"{source.name} did not finish with 'all ok':\n{run.stdout[-3000:]}"


def test_emulator_runtime_catches_what_it_promises(tmp_path):
    """emu.h itself: CUDA's shuffle results, a missing barrier and an off-by-one
    write are seen; a skipped, divergent barrier or a partial-warp shuffle fails the run;
    and emu_wmma.h's TF32 product, rounding, and misaligned or divergent calls."""
    binary = build(KERNELS / "emulate" / "emu_selftest.cc", tmp_path)
    ok = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1].startswith("all ok"), ok.stdout + ok.stderr
    for mode, message in [("deadlock", "deadlock: waits at __syncthreads"),
                          ("divergent", "divergent"),
                          ("partial_warp", "full-mask shuffle in a warp of 16 threads"),
                          ("wmma_misaligned", "is not 32-byte aligned"),
                          ("wmma_divergent", "deadlock: waits at wmma::load_matrix_sync")]:
        bad = subprocess.run([str(binary), mode], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1, f"{mode}: exit {bad.returncode}\n{bad.stdout}{bad.stderr}"
        assert message in bad.stderr, f"{mode}: {bad.stderr!r}"
