"""Static counters from the compiler, for every kernel instantiation in kernels/, on sm_90
and sm_80: what ptxas allocated, how many blocks of it fit on an SM, and its instruction
mix. No GPU is needed: nvcc compiles, cuobjdump disassembles.

    python -m pycnn.inspect.static            # the table
    python -m pycnn.inspect.static --write    # regenerate bench/results/static-counters.json

How the figures are made:
- Each kernels/**/*.cu is compiled per arch to a cubin with the flags of the real build
  (CMakeLists.txt: -Ikernels -std=c++17 -O3 -lineinfo) and `-Xptxas -v`; ptxas then
  prints, per entry function: registers per thread, barriers, static shared memory
  ("smem"), stack frame, spill stores and spill loads in bytes (a spill is a register
  moved to local memory, i.e. DRAM through L1: slow). Compiles run 2 at a time, and are
  cached in a temporary folder per content of the compiled sources (kernels/ less the
  emulator), nvcc version and flags. The JSON records pycnn.verify's kernels_hash.
- Constant memory comes from the cubin's `.nv.constant<bank>.<kernel>` sections (bank 0
  holds the kernel's parameters; nvcc 13.0's ptxas prints it on sm_80 but not on sm_90).
- Names are demangled with c++filt; "short" drops the return type, the parameter list and
  the pycnn:: qualifiers: `conv2d_fwd_kernel7<IgemmTile<64, 64, 8, 4, 4>, false>`.
- Threads per block come from the launchers' source, not from a table: every
  `launch("name", kernel<...>, grid, BLOCK, SMEM, ...)` call in kernels/ gives BLOCK for
  that kernel, evaluated from integer literals, `const`/`constexpr int` definitions
  (`kBlock`, `block = 256`) and the tile's `T::THREADS`, computed from the tile struct's
  own `static constexpr int` lines with the template arguments of the instantiation
  (IgemmTile<64, 64, 8, 4, 4>: (64/4) x (64/4) = 256). Kernels launched from a helper
  with a variable (split_sum.cuh's split-K launches) take their `__launch_bounds__`.
  Depthwise blocks are as wide as the plane (`dw_plane_threads`), at most kDwThreads:
  the most is used. SMEM is the dynamic shared memory, evaluated the same way.
- Occupancy is pycnn.inspect.occupancy's, for those registers, static + dynamic shared
  memory and threads per block.
- The SASS mix is pycnn.inspect.sass's reading of `cuobjdump --dump-sass` (cuobjdump and
  nvdisasm: on PATH, or from the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycnn import paths
from pycnn.inspect import occupancy as occ
from pycnn.inspect import sass as sass_mod
from pycnn.verify import kernels_hash

ARCHS = ("sm_90", "sm_80")
NVCC_FLAGS = ("-Ikernels", "-std=c++17", "-O3", "-lineinfo")
RESULTS_NAME = "static-counters.json"
# launcher helpers whose result is a block size bounded by a constant (see the header)
UPPER_BOUNDS = {"dw_plane_threads": "kDwThreads"}


# --- tools -------------------------------------------------------------------------------

def find_tool(name: str) -> str | None:
    """`name` on PATH, else the binary that an nvidia-cuda-* wheel installs
    (site-packages/nvidia/cu13/bin/NAME)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for candidate in sorted(Path(base).glob(f"*/bin/{name}")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def nvcc_version(nvcc: str = "nvcc") -> str:
    """'13.0.88' from `nvcc --version`."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release [\d.]+, V([\d.]+)", out)
    if not m:
        raise RuntimeError(f"nvcc --version: no 'release X, VX.Y.Z' line in {out!r}")
    return m.group(1)


def tool_version(path: str) -> str | None:
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [\d.]+, V([\d.]+)", out)
    return m.group(1) if m else None


def demangle(names: list[str]) -> dict[str, str]:
    """{mangled: demangled} through one c++filt call."""
    if not names:
        return {}
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        raise RuntimeError("c++filt not found on PATH (binutils): it demangles the kernel names")
    out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return dict(zip(names, out))


def short_name(demangled: str) -> str:
    """`void pycnn::k<pycnn::T<1, 2>, false>(float const*, ...)` -> `k<T<1, 2>, false>`."""
    name = demangled[5:] if demangled.startswith("void ") else demangled
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            name = name[:i]
            break
    return name.replace("pycnn::", "")


def base_name(short: str) -> str:
    return short.split("<", 1)[0]


# --- ptxas -v and the cubin ---------------------------------------------------------------

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> dict[str, dict]:
    """{mangled entry: resources} from the text `-Xptxas -v` prints. Device functions
    (`Function properties for` without a `Compiling entry function`) are skipped."""
    out: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = {"arch": m.group(2), "registers": None, "barriers": 0, "shared_static": 0,
                       "stack_frame": 0, "spill_stores": 0, "spill_loads": 0, "ptxas_cmem": {}}
            out[m.group(1)] = current
            continue
        if current is None:
            continue
        m = _PROPS.search(line)
        if m:
            current["stack_frame"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
            for part in line.split(",")[1:]:
                part = part.strip()
                if mm := re.fullmatch(r"used (\d+) barriers?", part):
                    current["barriers"] = int(mm.group(1))
                elif mm := re.fullmatch(r"(\d+) bytes smem", part):
                    current["shared_static"] = int(mm.group(1))
                elif mm := re.fullmatch(r"(\d+) bytes cmem\[(\d+)\]", part):
                    current["ptxas_cmem"][mm.group(2)] = int(mm.group(1))
            current = None  # the Used line closes an entry
    return out


def cubin_constant_banks(data: bytes) -> dict[str, dict[str, int]]:
    """{mangled kernel: {bank: bytes}} from the `.nv.constant<bank>.<kernel>` sections of
    an ELF64 cubin (read with struct: the section header table and its name table)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("cubin: expected an ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]
    out: dict[str, dict[str, int]] = {}
    for h in headers:
        start = names_off + h[0]
        name = data[start:data.index(b"\0", start)].decode()
        m = re.fullmatch(r"\.nv\.constant(\d+)\.(.+)", name)
        if m:
            out.setdefault(m.group(2), {})[m.group(1)] = h[5]
    return out


# --- compiling, cached ----------------------------------------------------------------------

def kernel_sources(root: Path) -> list[Path]:
    return sorted(p for p in (root / "kernels").rglob("*.cu") if "emulate" not in p.parts)


def compiled_sources(root: Path) -> list[Path]:
    """What the cubins are made of: kernels/ less the emulator (whose edits leave them alone)."""
    return sorted(p for p in (root / "kernels").rglob("*")
                  if p.suffix in (".cu", ".cuh", ".h") and "emulate" not in p.parts)


def cache_dir(root: Path, nvcc: str) -> Path:
    """A temporary folder per content of the compiled sources, nvcc version and flags."""
    h = hashlib.sha256(f"{nvcc_version(nvcc)} {' '.join(NVCC_FLAGS)}".encode())
    for path in compiled_sources(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return Path(tempfile.gettempdir()) / f"pycnn-static-{h.hexdigest()[:16]}"


def _compile_one(root: Path, nvcc: str, src: Path, arch: str, out: Path) -> tuple[Path, Path]:
    stem = src.relative_to(root / "kernels").with_suffix("").as_posix().replace("/", "__")
    cubin, log = out / f"{stem}.{arch}.cubin", out / f"{stem}.{arch}.ptxas.txt"
    if cubin.exists() and log.exists():
        return cubin, log
    tmp = cubin.with_suffix(f".tmp{os.getpid()}")
    cmd = [nvcc, "-cubin", f"-arch={arch}", *NVCC_FLAGS, "-Xptxas", "-v", str(src.relative_to(root)),
           "-o", str(tmp)]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"nvcc failed on {src.relative_to(root)} for {arch}:\n{run.stderr[-4000:]}")
    tmp.replace(cubin)
    log_tmp = log.with_suffix(f".tmp{os.getpid()}")
    log_tmp.write_text(run.stdout + run.stderr)
    log_tmp.replace(log)
    return cubin, log


def compile_all(root: Path, jobs: int = 2, nvcc: str | None = None) -> dict[tuple[str, str], tuple[Path, Path]]:
    """{(arch, source relative to root): (cubin, ptxas log)}, compiled in parallel or cached."""
    nvcc = nvcc or find_tool("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH: the static counters need the CUDA compiler")
    out = cache_dir(root, nvcc)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(src, arch) for arch in ARCHS for src in kernel_sources(root)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda t: _compile_one(root, nvcc, t[0], t[1], out), tasks))
    return {(arch, src.relative_to(root).as_posix()): r for (src, arch), r in zip(tasks, results)}


def dump_sass(cubin: Path, cuobjdump: str) -> str:
    """cuobjdump --dump-sass of a cubin, cached beside it."""
    cached = cubin.with_suffix(".sass")
    if cached.exists():
        return cached.read_text()
    env = dict(os.environ)
    nvdisasm = find_tool("nvdisasm")
    if nvdisasm and "NVDISASM_PATH" not in env:
        env["NVDISASM_PATH"] = nvdisasm
    run = subprocess.run([cuobjdump, "--dump-sass", str(cubin)], capture_output=True, text=True, env=env)
    if run.returncode != 0 or "fatal" in run.stderr + run.stdout[:200]:
        raise RuntimeError(f"cuobjdump --dump-sass {cubin.name} failed: {(run.stderr or run.stdout)[-2000:]}")
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(run.stdout)
    tmp.replace(cached)
    return run.stdout


# --- threads per block from the launchers ----------------------------------------------------

def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _call_args(text: str, open_paren: int) -> tuple[list[str], int]:
    """(top-level arguments, index of the closing ')') of the call whose '(' is at
    open_paren; template brackets count when '<' follows a name directly (kernel<T, true>)."""
    depth, args, start = 0, [], open_paren + 1
    i = open_paren
    while i < len(text):
        ch = text[i]
        if ch in "([{" or (ch == "<" and text[i - 1].isalnum() and text[i + 1] not in " =<"):
            depth += 1
        elif ch in ")]}" or (ch == ">" and depth > 1 and text[i - 1] not in " -" and text[i + 1] != "="):
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return args, i
        elif ch == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    raise ValueError(f"unbalanced call at offset {open_paren}")


def _tile_structs(texts: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """{struct name: (template parameter names, {constant: expression})} of the
    `template <int A_, ...> struct Name { static constexpr int X = ...; }` in kernels/."""
    out = {}
    for text in texts.values():
        for m in re.finditer(r"template\s*<([^>]*)>\s*struct\s+(\w+)\s*\{", text):
            params = [p.split()[-1] for p in m.group(1).split(",")]
            body_end = text.find("\n};", m.end())
            consts = {}
            for stmt in re.finditer(r"static\s+constexpr\s+int\s+([^;]+);", text[m.end():body_end]):
                for decl in stmt.group(1).split(","):
                    if "=" in decl:
                        k, v = decl.split("=", 1)
                        consts[k.strip()] = v.strip()
            out[m.group(2)] = (params, consts)
    return out


def _eval_int(expr: str, lookup) -> int:
    """An integer C++ expression of literals, names (through lookup) and + - * / %."""
    tree = ast.parse(expr.replace("::", "__").strip(), mode="eval")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return lookup(node.id.replace("__", "::"))
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a // b, ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in UPPER_BOUNDS:
            return lookup(UPPER_BOUNDS[node.func.id])
        raise ValueError(f"cannot evaluate {expr!r} to an integer at compile time")

    return ev(tree)


class LaunchConfigs:
    """Threads per block and dynamic shared memory of each kernel, from the source."""

    def __init__(self, root: Path):
        self.root = root
        files = compiled_sources(root)
        self.texts = {p.relative_to(root).as_posix(): _strip_comments(p.read_text()) for p in files}
        self.tiles = _tile_structs(self.texts)
        self.launches: dict[str, list[tuple[str, int, str, str]]] = {}
        self.bounds: dict[str, tuple[str, int, str]] = {}
        for rel, text in self.texts.items():
            for m in re.finditer(r"\blaunch\s*\(", text):
                args, _ = _call_args(text, m.end() - 1)
                if len(args) < 5:
                    continue
                kernel = re.match(r"\w+", args[1])
                if kernel:
                    self.launches.setdefault(kernel.group(0), []).append((rel, m.start(), args[3], args[4]))
            for m in re.finditer(r"__launch_bounds__\s*\(", text):
                args, close = _call_args(text, m.end() - 1)
                nm = re.match(r"\s*(\w+)\s*\(", text[close + 1:])
                if nm:
                    self.bounds[nm.group(1)] = (rel, m.start(), args[0])

    def _lookup(self, rel: str, pos: int, tile: tuple[str, list[int]] | None):
        def lookup(name: str) -> int:
            if name.startswith("T::"):
                if tile is None or tile[0] not in self.tiles:
                    raise ValueError(f"{name}: the kernel has no tile template argument")
                params, consts = self.tiles[tile[0]]
                env = dict(zip(params, tile[1]))

                def tile_lookup(n: str) -> int:
                    if n in env:
                        return env[n]
                    if n in consts:
                        env[n] = _eval_int(consts[n], tile_lookup)
                        return env[n]
                    raise ValueError(f"{tile[0]} has no constant {n}")
                return tile_lookup(name[3:])
            pattern = re.compile(r"\b(?:const|constexpr)\s+int\b[^;]*?\b" + re.escape(name) + r"\s*=\s*([^,;]+)")
            here = [m for m in pattern.finditer(self.texts[rel]) if m.start() < pos]
            if here:
                m = here[-1]
                return _eval_int(m.group(1), self._lookup(rel, m.start(), tile))
            for other, text in self.texts.items():
                m = pattern.search(text)
                if m and other != rel:
                    return _eval_int(m.group(1), self._lookup(other, m.start(), tile))
            raise ValueError(f"no const int {name} in kernels/")
        return lookup

    def config(self, short: str) -> dict:
        """{"threads": n, "shared_dynamic": bytes, "source": "file: expression"} of a kernel."""
        base = base_name(short)
        m = re.search(r"(\w+)<([\d, ]+)>", short)
        tile = (m.group(1), [int(x) for x in m.group(2).split(",")]) if m else None
        found = []
        for rel, pos, block, smem in self.launches.get(base, []):
            found.append((_eval_int(block, self._lookup(rel, pos, tile)),
                          _eval_int(smem, self._lookup(rel, pos, tile)), f"{rel}: launch block {block}"))
        if not found and base in self.bounds:
            rel, pos, expr = self.bounds[base]
            found.append((_eval_int(expr, self._lookup(rel, pos, tile)), 0, f"{rel}: __launch_bounds__({expr})"))
        if not found:
            raise LookupError(f"{short}: no launch(...) call nor __launch_bounds__ in kernels/ gives its block size")
        threads = max(f[0] for f in found)
        chosen = next(f for f in found if f[0] == threads)
        return {"threads": threads, "shared_dynamic": max(f[1] for f in found), "block_source": chosen[2]}


# --- the record ------------------------------------------------------------------------------

def collect(root: Path | None = None, jobs: int = 2, with_sass: bool | None = None) -> dict:
    """Every kernel's counters per arch. with_sass: None = when cuobjdump is found,
    True = insist (error without it), False = skip."""
    root = root or paths.checkout()
    if root is None:
        raise RuntimeError("the static counters need a source checkout (kernels/ beside pycnn/)")
    nvcc = find_tool("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH: the static counters need the CUDA compiler")
    cuobjdump = find_tool("cuobjdump") if with_sass is not False else None
    if with_sass and cuobjdump is None:
        raise RuntimeError("cuobjdump not found on PATH nor in the nvidia-cuda-cuobjdump wheel "
                           "(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    built = compile_all(root, jobs=jobs, nvcc=nvcc)
    launches = LaunchConfigs(root)
    raw = {}
    for (arch, src), (cubin, log) in sorted(built.items()):
        res = parse_ptxas(log.read_text())
        banks = cubin_constant_banks(cubin.read_bytes())
        functions = sass_mod.parse_sass(dump_sass(cubin, cuobjdump)) if cuobjdump else {}
        for mangled, r in res.items():
            entry = raw.setdefault((arch, mangled), {**r, "mangled": mangled, "sources": []})
            entry["sources"].append(src)
            entry["constant"] = dict(sorted(banks.get(mangled, {}).items()))
            if cuobjdump:
                if mangled not in functions:
                    raise RuntimeError(f"{mangled}: in ptxas's output of {src} but not in cuobjdump's SASS")
                entry["sass"] = sass_mod.analyze(functions[mangled])
    names = demangle(sorted({m for _, m in raw}))
    kernels: dict[str, dict] = {arch: {} for arch in ARCHS}
    for (arch, mangled), r in raw.items():
        short = short_name(names[mangled])
        cfg = launches.config(short)
        o = occ.occupancy(arch, r["registers"], r["shared_static"] + cfg["shared_dynamic"], cfg["threads"])
        kernels[arch][short] = {
            "name": names[mangled], "mangled": mangled, "sources": sorted(set(r["sources"])),
            "registers": r["registers"], "barriers": r["barriers"],
            "shared_static": r["shared_static"], "shared_dynamic": cfg["shared_dynamic"],
            "stack_frame": r["stack_frame"], "spill_stores": r["spill_stores"],
            "spill_loads": r["spill_loads"], "constant": r["constant"],
            "threads_per_block": cfg["threads"], "block_source": cfg["block_source"],
            "registers_per_block": r["registers"] * cfg["threads"],
            "occupancy": o.as_dict(),
        }
        if "sass" in r:
            kernels[arch][short]["sass"] = r["sass"]
    return {
        "nvcc": nvcc_version(nvcc),
        "cuobjdump": tool_version(cuobjdump) if cuobjdump else None,
        "flags": list(NVCC_FLAGS) + ["-Xptxas", "-v"],
        "kernels_sha256": kernels_hash(root),
        "kernels": {arch: dict(sorted(k.items())) for arch, k in kernels.items()},
    }


def results_path(root: Path | None = None) -> Path:
    root = root or paths.checkout()
    return root / "bench" / "results" / RESULTS_NAME


def write(record: dict, path: Path, accepted: dict | None = None) -> None:
    """The JSON, with the hand-kept "accepted_spills" of the previous file carried over."""
    if accepted is None and path.exists():
        accepted = json.loads(path.read_text()).get("accepted_spills", {})
    out = {"date": datetime.date.today().isoformat(), **record,
           "accepted_spills": {a: dict(sorted((accepted or {}).get(a, {}).items())) for a in ARCHS}}
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def _pct(loop: dict, key: str) -> str:
    return f"{100 * loop[key]:.0f}" if loop else ""


def table(record: dict, arch: str) -> str:
    head = (f"{'kernel':68} {'regs':>4} {'smem':>6} {'spill':>5} {'thr':>4} {'occ':>5} {'limit':>9} "
            f"{'instr':>5} {'loop':>5} {'ffma%':>5} {'hmma%':>5} {'div':>3} {'ldiv':>4}")
    lines = [f"{arch} (nvcc {record['nvcc']})", head]
    for short, k in record["kernels"][arch].items():
        s = k.get("sass") or {}
        loop = s.get("main_loop") or {}
        o = k["occupancy"]
        lines.append(
            f"{short:68} {k['registers']:>4} {k['shared_static'] + k['shared_dynamic']:>6} "
            f"{k['spill_stores'] + k['spill_loads']:>5} {k['threads_per_block']:>4} "
            f"{o['occupancy'] * 100:>4.0f}% {(o['limited_by'] or ['-'])[0][:9]:>9} "
            f"{s.get('total_instructions', ''):>5} {loop.get('instructions', ''):>5} "
            f"{_pct(loop, 'ffma_share'):>5} {_pct(loop, 'hmma_share'):>5} "
            f"{s.get('int_div', ''):>3} {loop.get('int_div', ''):>4}")
    lines.append("regs: registers a thread; smem: shared bytes a block; spill: spill bytes stored + "
                 "loaded; thr: threads a block; occ: theoretical occupancy and its limit; instr: "
                 "SASS instructions; loop: main-loop instructions an iteration; ffma%/hmma%: their "
                 "share of its issue slots; div/ldiv: integer divisions in the kernel / in the loop")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pycnn.inspect.static", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"regenerate bench/results/{RESULTS_NAME}")
    ap.add_argument("--arch", choices=ARCHS, help="print one arch only")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel compiles (default 2)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs: expected at least 1, got {args.jobs}")
    record = collect(jobs=args.jobs, with_sass=True if args.write else None)
    if args.write:
        path = results_path()
        write(record, path)
        print(f"wrote {path}")
        return 0
    for arch in ([args.arch] if args.arch else ARCHS):
        print(table(record, arch))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
