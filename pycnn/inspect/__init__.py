"""``pycnn inspect``: what one kernel does on one shape, the way a profiler would show it,
without a GPU: the launch the launcher chooses, the resources the compiler gave it, its
occupancy and main-loop instruction mix, the memory requests it makes, and the roofline
bound of the op; beside them the GPU's measured time where a benchmark record has the
shape.

    pycnn inspect conv2d --pass fwd --version 7 --shape 32,256,14,14,256,3,3,1,1
    pycnn inspect conv2d --pass fwd --compare 2,7,8 --shape 32,256,14,14,256,3,3,1,1
    pycnn inspect pool --kind max --pass fwd --shape 32,64,112,112,3,2,1
    pycnn inspect activation --fn relu --pass fwd --shape 64,64,112,112
    pycnn inspect batch_norm --pass fwd --version 2 --shape 32,256,56,56
    pycnn inspect softmax --pass fwd --shape 64,1000,1

Where each figure comes from:
- launch (kernel, grid, block): the emulator runs the real launcher once
  (pycnn.inspect.dynamic), which chooses the tile, grid and splits for an H200's 132 SMs;
- resources, occupancy, instruction mix: the compiler's, per kernel instantiation
  (pycnn.inspect.static; the committed bench/results/static-counters.json);
- memory counters: the emulator's, per launch (sectors per request, shared wavefronts,
  bank conflicts; large grids sampled: the output says so);
- FLOPs, ideal bytes, roofline bound: pycnn.bench.metrics and the H200's FP32 peak and
  measured copy bandwidth;
- measured: the benchmark records in bench/results/ (a GPU run of the same shape), if any.
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from pathlib import Path

from pycnn import paths

FAMILIES = ("conv2d", "pool", "activation", "batch_norm", "softmax")


def _parser():
    p = argparse.ArgumentParser(prog="pycnn inspect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=FAMILIES)
    p.add_argument("--pass", dest="pass_name", default="fwd",
                   help="conv2d: fwd, bwd_data, bwd_filter; pool: fwd, bwd (max: also bwd1, the "
                   "atomic scatter); activation, batch_norm, softmax: fwd, bwd (default fwd)")
    p.add_argument("--version", type=int, default=None,
                   help="conv2d, batch_norm: the kernel version (default: the heuristic default's)")
    p.add_argument("--compare", default=None, metavar="V,V,...",
                   help="conv2d, batch_norm: these versions side by side")
    p.add_argument("--shape", required=True,
                   help="conv2d N,C,H,W,K,R,S,stride,pad; pool N,C,H,W,kernel,stride,pad; "
                   "activation N,C,H,W (or a count); batch_norm N,C,H,W; softmax OUTER,DIM,INNER")
    p.add_argument("--groups", type=int, default=1, help="conv2d: groups (default 1)")
    p.add_argument("--kind", default="max", choices=("max", "avg"), help="pool: max or avg")
    p.add_argument("--fn", default="relu", help="activation: relu, leaky_relu, sigmoid, tanh")
    p.add_argument("--arch", default="sm_90", choices=("sm_90", "sm_80"),
                   help="the compiler's resources and SASS for this architecture (default sm_90)")
    p.add_argument("--sample", type=int, default=None,
                   help="blocks each launch runs in the emulator at most (default 16; 0: all); "
                   "the counts of the others are scaled")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    return p


# --------------------------------------------------------------------------- static side

def static_record() -> dict | None:
    """The committed static counters (bench/results/static-counters.json), or None."""
    path = paths.results_dir() / "static-counters.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


_TILE = re.compile(r"(\w+)<(\d+), (\d+)")


def static_entry(record, arch: str, launch: dict) -> dict | None:
    """The static counters of the kernel instantiation that ``launch`` ran: by its
    demangled function name where the emulator gives one, else by kernel name, block size
    and, between tiles of one kernel, the tile height the grid implies."""
    if record is None:
        return None
    kernels = record["kernels"].get(arch, {})
    fn = launch.get("function")
    if fn:
        for short, entry in kernels.items():
            if entry["name"] == fn or short == fn:
                return entry
    base, _, suffix = launch["kernel"].partition("<")
    threads = 1
    for d in launch["block"]:
        threads *= d
    found = [e for short, e in kernels.items()
             if short.split("<")[0] == base and e["threads_per_block"] == threads]
    if len(found) > 1 and suffix.startswith("atomic"):    # split_sum.cuh's name for <T, ATOMIC=true>
        found = [e for e in found if e["name"].split("(")[0].rstrip().endswith("true>")] or found
    elif len(found) > 1 and any(e["name"].split("(")[0].rstrip().endswith(("true>", "false>")) for e in found):
        found = [e for e in found if not e["name"].split("(")[0].rstrip().endswith("true>")] or found
    if len(found) > 1 and "rows" in launch:
        tiled = [e for e in found if _TILE.search(e["name"]) and
                 -(-launch["rows"] // int(_TILE.search(e["name"]).group(2))) == launch["grid"][0]]
        found = tiled or found
    return found[0] if len(found) == 1 else (found[0] if found else None)


def conv_rows(pass_name: str, dims, groups: int = 1, version: int | None = None) -> int:
    """The GEMM rows (M) a conv pass tiles along gridDim.x, which tells its launcher's tiles
    apart: N*P*Q forward, C/groups*R*S backward-filter, N*H*W backward-data, except in the
    stride-phased versions (11, 14, 17), whose grid covers the largest phase's
    N*ceil(H/stride)*ceil(W/stride)."""
    n, c, h, w, k, r, s, stride, pad = dims
    p = (h + 2 * pad - r) // stride + 1
    q = (w + 2 * pad - s) // stride + 1
    if pass_name == "bwd_data":
        from pycnn.backends.cuda.conv import PHASED_VERSIONS  # pure: no GPU needed
        if version in PHASED_VERSIONS:
            return n * -(-h // stride) * -(-w // stride)
        return n * h * w
    return {"fwd": n * p * q, "bwd_filter": c // groups * r * s}[pass_name]


# --------------------------------------------------------------------------- measured side

def measured(op: str, case: dict, n: int, version) -> list[dict]:
    """Benchmark rows (bench/results/bench-*.json, GPU runs) of this op and shape."""
    out = []
    keys = ("C", "H", "W", "K", "R", "S")
    for path in sorted(glob.glob(str(paths.results_dir() / "bench-*.json"))):
        doc = json.loads(Path(path).read_text())
        if doc.get("device") != "cuda":
            continue
        for r in doc["results"]:
            if r["op"] != op or r["N"] != n or r.get("error"):
                continue
            c = next((c for c in [_case_of(doc, r["case"])] if c), None)
            if c is None or any(c.get(k) != case.get(k) for k in keys if k in case):
                continue
            if "stride" in case and tuple(c.get("stride", ())) != tuple(case["stride"]):
                continue
            if version is not None and r.get("version") not in (version, None):
                continue
            if version is not None and r.get("version") is None and r.get("runs") != version:
                continue
            out.append({"set": doc["set"], "gpu": doc["env"]["gpu"], "impl": r["impl"],
                        "median_ms": r["time"]["median_ms"], "tflops": r.get("tflops"),
                        "ratio_default": r.get("ratio_default")})
    return out


_SETS: dict[str, dict] = {}


def _case_of(doc, name):
    from pycnn.bench import sets
    if doc["set"] not in _SETS:
        try:
            _SETS[doc["set"]] = {c["name"]: c for c in sets.load_set(doc["set"])["cases"]}
        except (ValueError, FileNotFoundError, KeyError):
            _SETS[doc["set"]] = {}
    return _SETS[doc["set"]].get(name)


# --------------------------------------------------------------------------- one inspection

def inspect_one(args, version) -> dict:
    from pycnn.inspect import dynamic
    sample = dynamic.DEFAULT_SAMPLE if args.sample is None else args.sample
    fam = args.family
    if fam == "conv2d":
        dims = dynamic._ints(args.shape, 9, "--shape (N,C,H,W,K,R,S,stride,pad)")
        n, c, h, w, k, r, s, stride, pad = dims
        if version is None:
            from pycnn.backends.cuda.conv import default_version  # pure: no GPU needed
            version = default_version(args.pass_name, (n, c, h, w), (k, c // args.groups, r, s),
                                      (stride, stride), args.groups)
        data = dynamic.conv2d(args.pass_name, version, dims, groups=args.groups, sample=sample)
        rows = conv_rows(args.pass_name, dims, args.groups, version)
        case = {"C": c, "H": h, "W": w, "K": k, "R": r, "S": s, "stride": [stride, stride]}
        bench_op = f"conv_{args.pass_name}"
    elif fam == "pool":
        data = dynamic.pool(args.kind, args.pass_name, args.shape, sample=sample)
        n, c, h, w = dynamic._ints(args.shape, 7, "--shape")[:4]
        rows, case = None, {"C": c, "H": h, "W": w}
        bench_op = f"{args.kind}_pool_{'fwd' if args.pass_name == 'fwd' else 'bwd'}"
    elif fam == "activation":
        data = dynamic.activation(args.fn, args.pass_name, args.shape, sample=sample)
        rows, case, n, bench_op = None, None, None, None
    elif fam == "batch_norm":
        version = 2 if version is None else version
        data = dynamic.batch_norm(args.pass_name, version, args.shape, sample=sample)
        n, c, h, w = dynamic._ints(args.shape, 4, "--shape")
        rows, case, bench_op = None, {"C": c, "H": h, "W": w}, f"batch_norm_{args.pass_name}"
    else:
        data = dynamic.softmax(args.pass_name, args.shape, sample=sample)
        rows, case, n, bench_op = None, None, None, None
    record = static_record()
    for launch in data["launches"]:
        if rows is not None:
            launch["rows"] = rows
        launch["static"] = static_entry(record, args.arch, launch)
    data["version"] = version
    data["arch"] = args.arch
    data["measured"] = measured(bench_op, case, n, version) if bench_op and case else []
    data["static_source"] = None if record is None else {
        "file": "bench/results/static-counters.json", "nvcc": record.get("nvcc"),
        "kernels_sha256": record.get("kernels_sha256")}
    return data


def _launch_lines(launch) -> list[str]:
    grid = launch["grid"]
    blocks = grid[0] * grid[1] * grid[2]
    threads = launch["block"][0] * launch["block"][1] * launch["block"][2]
    st = launch.get("static")
    name = st["name"].split("(")[0].replace("void ", "").replace("pycnn::", "") if st else launch["kernel"]
    out = [f"  launch        {name}: grid {grid[0]}x{grid[1]}x{grid[2]} ({blocks} blocks) of {threads} threads"
           + (f", {launch['blocks_run']} of them emulated" if launch.get("sampled") else "")]
    if st:
        o = st["occupancy"]
        spill = st["spill_stores"] + st["spill_loads"]
        out.append(f"  resources     {st['registers']} registers a thread, {st['shared_static'] + st['shared_dynamic']} "
                   f"bytes of shared memory a block, " + (f"{spill} bytes spilled" if spill else "no spills"))
        waves = blocks / (132 * o["blocks_per_sm"]) if o["blocks_per_sm"] else float("inf")
        out.append(f"  occupancy     {o['blocks_per_sm']} blocks an SM ({o['active_warps']} of {o['max_warps']} "
                   f"warps, {100 * o['occupancy']:.1f}%), limited by {', '.join(o['limited_by']) or '-'}; "
                   f"{waves:.2f} waves on 132 SMs")
        loop = (st.get("sass") or {}).get("main_loop")
        if loop:
            mem = ", ".join(f"{n} {k}" for k, n in
                            sorted(((k, v["count"]) for k, v in loop.get("memory", {}).items()),
                                   key=lambda kv: -kv[1]))
            share = loop["hmma_share"] if loop["hmma"] else loop["ffma_share"]
            out.append(f"  main loop     {loop['instructions']} instructions an iteration, "
                       f"{'HMMA' if loop['hmma'] else 'FFMA'} {100 * share:.0f}% of issue slots, "
                       f"{loop['int_div']} integer-division sequences; memory: {mem or 'none'}")
    else:
        out.append("  resources     (no static counters for this kernel: python -m pycnn.inspect.static --write)")
    for kind, label in (("global_ld", "global loads"), ("global_st", "global stores"),
                        ("shared_ld", "shared reads"), ("shared_st", "shared writes")):
        c = launch[kind]
        if not c["requests"]:
            continue
        if kind.startswith("global"):
            out.append(f"  {label:<13} {c['requests']:.0f} requests, {c['sectors_per_request']:.2f} sectors each "
                       f"({c['bytes'] / 1e6:.2f} MB asked, {32 * c['sectors'] / 1e6:.2f} MB in sectors)")
        else:
            out.append(f"  {label:<13} {c['requests']:.0f} requests, {c['wavefronts_per_request']:.2f} wavefronts "
                       f"each, {c['bank_conflicts']:.0f} bank-conflict wavefronts")
    return out


def render(data) -> str:
    lines = [f"{data['op']}   ({data['arch']}; counters from the CPU emulator"
             + (", sampled" if data["sampled"] else "") + ")"]
    for launch in data["launches"]:
        lines += _launch_lines(launch)
    b = data["bound"].get("H200", {})
    ai = data["arithmetic_intensity"]
    if data.get("flops"):
        lines.append(f"  work          {data['flops'] / 1e9:.3g} GFLOP, ideal {data['ideal_bytes'] / 1e6:.3g} MB, "
                     f"{ai:.1f} FLOP/byte: {b.get('limit', '?')}-bound on an H200, at least "
                     f"{b.get('min_time_us', 0):.1f} us")
    if data.get("requested_over_ideal"):
        lines.append(f"  traffic       {data['requested_over_ideal']:.2f}x the ideal bytes asked of global "
                     "memory (what L1 and L2 catch of it is not modelled)")
    for m in data["measured"]:
        lines.append(f"  measured      {m['gpu']}, set {m['set']}: {m['impl']} {m['median_ms']:.4f} ms"
                     + (f", {m['tflops']:.1f} TFLOP/s" if m.get("tflops") else "")
                     + (f", {m['ratio_default']:.2f}x cuDNN's fp32 speed" if m.get("ratio_default") else ""))
    if not data["measured"]:
        lines.append("  measured      no GPU record of this shape (bench/results/): unmeasured")
    return "\n".join(lines)


def compare_table(runs) -> str:
    head = ["version", "kernel", "regs", "occupancy", "loop instr", "FFMA/HMMA %", "div",
            "ld sectors/req", "shared wf/req", "GPU ms"]
    rows = []
    for version, data in runs:
        # the GEMM, not a split-K sum that may run more threads: a launch with a main loop first
        launch = max(data["launches"], key=lambda l: (bool(((l.get("static") or {}).get("sass") or {})
                                                           .get("main_loop")),
                                                      l["grid"][0] * l["grid"][1] * l["grid"][2] * l["block"][0]))
        st = launch.get("static") or {}
        loop = (st.get("sass") or {}).get("main_loop") or {}
        share = loop.get("hmma_share") if loop.get("hmma") else loop.get("ffma_share")
        gpu = next((m["median_ms"] for m in data["measured"]), None)
        rows.append([str(version), launch["kernel"], str(st.get("registers", "-")),
                     f"{100 * st['occupancy']['occupancy']:.1f}%" if st else "-",
                     str(loop.get("instructions", "-")), f"{100 * share:.0f}" if share is not None else "-",
                     str(loop.get("int_div", "-")),
                     f"{launch['global_ld']['sectors_per_request']:.2f}" if launch["global_ld"]["requests"] else "-",
                     f"{launch['shared_ld']['wavefronts_per_request']:.2f}" if launch["shared_ld"]["requests"] else "-",
                     f"{gpu:.4f}" if gpu is not None else "unmeasured"])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in rows])


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from pycnn.inspect import dynamic
    why = dynamic.unavailable()
    if why:
        print(f"pycnn inspect: {why}", file=sys.stderr)
        return 2
    if args.compare and args.family not in ("conv2d", "batch_norm"):
        parser.error("--compare: only conv2d and batch_norm come in versions")
    try:
        versions = ([int(v) for v in args.compare.split(",")] if args.compare else [args.version])
    except ValueError:
        parser.error(f"--compare: expected comma-separated version numbers, got {args.compare!r}")
    try:
        runs = [(v, inspect_one(args, v)) for v in versions]
    except (ValueError, dynamic.CountersError) as e:
        print(f"pycnn inspect: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([d for _, d in runs], indent=1, default=str))
        return 0
    for _, data in runs:
        print(render(data))
        print()
    if len(runs) > 1:
        print(compare_table(runs))
    return 0
