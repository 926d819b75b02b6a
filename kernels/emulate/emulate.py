#!/usr/bin/env python3
"""Builds and runs the kernel emulator (kernels/emulate/) on the CPU: no GPU needed.

    python kernels/emulate/emulate.py conv2d                  # every conv2d check, every sanitizer check
    python kernels/emulate/emulate.py conv2d --only fwd7      # the checks whose label contains "fwd7"
    python kernels/emulate/emulate.py pool --seed 12          # a seeded random schedule (replayable)
    python kernels/emulate/emulate.py all                     # every family, one after another

A family's harness, emulate_<family>.cc, is compiled with g++ -fsanitize=thread (its
loads and stores call the checks in emu_runtime.cc, which is compiled without it)
and linked with that runtime, without libtsan. It prints one line per check, every
sanitizer finding as one line naming the check, kernel, source line, thread and
block, the determinism of each kernel, and "all ok" last; it exits 1 on any failure.
tests/test_kernel_emulation.py uses build() and run() from here. counters_binary()
builds emulate_counters.cc, the driver of pycnn/inspect/dynamic.py's memory counters
(one op through its launcher with PYCNN_EMU_COUNTERS set: emu_runtime.cc's "counters").
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parent
FAMILIES = ("activation", "batch_norm", "conv2d", "dropout", "pool", "softmax")
CXXFLAGS = ["-std=c++17", "-O1", "-gdwarf-4",  # DWARF 5 line tables name the wrong file in binutils 2.40's addr2line
            "-fno-omit-frame-pointer",
            # one access per source-level load or store: no merging into wider ones
            "-fno-tree-vectorize", "-fno-tree-slp-vectorize", "-fno-store-merging"]


class BuildError(RuntimeError):
    pass


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


def missing_tools() -> str | None:
    """Why the emulator cannot be built here, or None."""
    for tool in ("g++", "addr2line", "nm"):
        if shutil.which(tool) is None:
            return f"{tool} not found: the kernel emulator needs g++ and binutils"
    if cuda_include_dir() is None:
        return "cuda_runtime.h not found (CUDA_HOME, CUDA_PATH, /usr/local/cuda, /usr/local/cuda-*)"
    return None


def _compile(args: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BuildError(f"building {what} failed:\n{result.stderr[-6000:]}")


def build(source: Path, out_dir: Path, kernels: Path = KERNELS, timeout: float = 900,
          runtime_dir: Path | None = None, defines: tuple[str, ...] = (), name: str | None = None,
          flags: tuple[str, ...] = ()) -> Path:
    """Compiles one harness (or any file including emu.h) against the kernels tree
    `kernels` (a scratch copy, for the mutants) into out_dir; returns the binary. The
    runtime's object is cached in runtime_dir (default out_dir) by its sources' hash.
    `defines` (-D macros) and `name` (the binary's, default the source's stem) build
    one source several ways; `flags` go to the source's compile (not the runtime's)."""
    why = missing_tools()
    if why:
        raise BuildError(why)
    out_dir.mkdir(parents=True, exist_ok=True)
    include = cuda_include_dir()
    common = [*CXXFLAGS, f"-I{include}", f"-I{kernels}"]
    runtime_src = kernels / "emulate" / "emu_runtime.cc"
    digest = hashlib.sha1(runtime_src.read_bytes() + (kernels / "emulate" / "emu.h").read_bytes()).hexdigest()[:12]
    runtime_dir = runtime_dir or out_dir
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runtime_obj = runtime_dir / f"emu_runtime-{digest}.o"
    if not runtime_obj.exists():
        tmp = runtime_obj.with_suffix(f".{os.getpid()}.tmp")
        _compile(["g++", *common, "-c", str(runtime_src), "-o", str(tmp)], "emu_runtime.cc", timeout)
        os.replace(tmp, runtime_obj)
    stem = name or source.stem
    obj = out_dir / (stem + ".o")
    _compile(["g++", *common, *(f"-D{d}" for d in defines), *flags, "-fsanitize=thread", "-c", str(source), "-o", str(obj)],
             source.name, timeout)
    binary = out_dir / stem
    _compile(["g++", "-no-pie", str(obj), str(runtime_obj), "-o", str(binary)], f"{stem} (link)", timeout)
    return binary


COUNTER_FAMILIES = ("conv2d", "pool", "activation", "batch_norm", "softmax")
COUNTERS_SOURCE = HERE / "emulate_counters.cc"


def counters_binary(family: str, out_dir: Path | None = None) -> Path:
    """The counters driver (emulate_counters.cc) for one family (its ops and the probe
    kernels), built once and cached by the hash of everything it includes: the
    runtime, the family's kernels and bench/counter_probes.cu."""
    if family not in COUNTER_FAMILIES:
        raise ValueError(f"family: expected one of {COUNTER_FAMILIES}, got {family!r}")
    out_dir = out_dir or Path(os.environ.get("TMPDIR", "/tmp")) / "pycnn-counters"
    sources = [COUNTERS_SOURCE, HERE / "emu.h", HERE / "emu_runtime.cc", HERE / "emu_wmma.h", HERE / "emu_mma.h",
               KERNELS.parent / "bench" / "counter_probes.cu", KERNELS / "common.cuh",
               *sorted((KERNELS / family).glob("*.cu*")), *sorted((KERNELS / family).glob("*.h"))]
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sources) + " ".join(CXXFLAGS).encode()
                          + b"trace-pc").hexdigest()[:12]
    binary = out_dir / f"emulate_counters_{family}-{digest}"
    if binary.exists():
        return binary
    # built under a name of this process's, then renamed: two builds at once do not collide
    tmp_name = f"emulate_counters_{family}-{digest}.{os.getpid()}"
    built = build(COUNTERS_SOURCE, out_dir, defines=(f"COUNTERS_{family.upper()}",), name=tmp_name,
                  flags=("-fsanitize-coverage=trace-pc",))
    os.replace(built, binary)
    (out_dir / (tmp_name + ".o")).unlink(missing_ok=True)
    return binary


def run(binary: Path, args: list[str] = (), seed: int | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYCNN_EMU_SEED", None)
    if seed is not None:
        env["PYCNN_EMU_SEED"] = str(seed)
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env)


README = KERNELS / "README.md"
TABLE_START, TABLE_END = "<!-- determinism:start -->", "<!-- determinism:end -->"


def determinism(stdout: str) -> dict[str, str]:
    """kernel name -> its verdict line's reading, from a harness's determinism table.
    Launches a harness made itself (names with spaces) are left out."""
    out = {}
    for line in stdout.splitlines():
        if not line.startswith("deterministic "):
            continue
        name, _, rest = line[len("deterministic "):].partition(": ")
        if " " in name or "(" in name:
            continue
        verdict = rest.split(" ", 1)[0]
        atomics = "0 with atomics" not in rest
        differs = "0 gave other bits" not in rest
        out[name] = ("no: float atomicAdd, and other bits in reverse block order" if verdict == "no" and differs
                     else "no: float atomicAdd (the sum's order is the schedule's)" if verdict == "no"
                     else "yes: atomics that do not depend on order, no races" if atomics
                     else "yes: no atomics, no races")
    return out


def determinism_table(verdicts: dict[str, str]) -> str:
    rows = ["| kernel | deterministic (from the emulator) |", "|---|---|"]
    rows += [f"| `{name}` | {verdict} |" for name, verdict in sorted(verdicts.items())]
    return "\n".join(rows)


def write_readme_table(verdicts: dict[str, str], readme: Path = README) -> bool:
    """Puts the table between the markers in kernels/README.md; True if it changed."""
    text = readme.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    new = text[:start] + "\n" + determinism_table(verdicts) + "\n" + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=[*FAMILIES, "selftest", "all"])
    parser.add_argument("--only", help="run only the checks whose label contains this")
    parser.add_argument("--seed", type=int, help="seeded random schedule of threads, blocks and accesses")
    parser.add_argument("--quiet", action="store_true", help="print failing checks only")
    parser.add_argument("--build-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pycnn-emulate")
    parser.add_argument("--kernels", type=Path, default=KERNELS, help="the kernels tree to build (default: this one)")
    parser.add_argument("--write-readme", action="store_true",
                        help="(with all) rewrite kernels/README.md's determinism table from this run")
    opts = parser.parse_args(argv)
    families = FAMILIES if opts.family == "all" else (opts.family,)
    status = 0
    verdicts: dict[str, str] = {}
    for family in families:
        name = "emu_selftest.cc" if family == "selftest" else f"emulate_{family}.cc"
        try:
            binary = build(opts.kernels / "emulate" / name, opts.build_dir, opts.kernels)
        except BuildError as err:
            print(err, file=sys.stderr)
            return 2
        args = (["--only", opts.only] if opts.only else []) + (["--quiet"] if opts.quiet else [])
        result = run(binary, args, opts.seed)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        status = status or result.returncode
        verdicts.update(determinism(result.stdout))
    if opts.write_readme:
        if opts.family != "all" or opts.only or status:
            print("--write-readme needs a clean run of all families", file=sys.stderr)
            return 2
        print("kernels/README.md:", "updated" if write_readme_table(verdicts) else "unchanged")
    return status


if __name__ == "__main__":
    sys.exit(main())
