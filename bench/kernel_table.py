"""Every default kernel on one real layer: the compiler's resources, the emulator's memory
counters, the roofline bound, the H200's measured time, and a line on what limits it.

    python bench/kernel_table.py --write    # bench/results/kernel-counters.json + kernels/README.md

The emulator runs each op once through its launcher (pycnn.inspect.dynamic, 8 blocks of
each grid, counts scaled); the compiler's figures are bench/results/static-counters.json's;
the measured ones are the benchmark record of the same layer (bench/results/bench-*-h200-*).
The JSON is what the table is made from; a test checks the README against it. The reading
comes from rules written below (``reading``), not by hand per row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- kernels:start -->", "<!-- kernels:end -->"
SAMPLE = 8

#: (label, dynamic call, args, kwargs, (bench set, case, op, impl))
ROWS = [
    ("conv2d fwd v7", "conv2d", ("fwd", 7, "32,256,14,14,256,3,3,1,1"), {},
     ("resnet50", "layer3.1-5.conv2", "conv_fwd", "pycnn v07")),
    ("conv2d bwd_data v11", "conv2d", ("bwd_data", 11, "32,256,14,14,256,3,3,1,1"), {},
     ("resnet50", "layer3.1-5.conv2", "conv_bwd_data", "pycnn v11")),
    ("conv2d bwd_filter v4", "conv2d", ("bwd_filter", 4, "32,256,14,14,256,3,3,1,1"), {},
     ("resnet50", "layer3.1-5.conv2", "conv_bwd_filter", "pycnn v04")),
    ("conv2d fwd v6 (depthwise)", "conv2d", ("fwd", 6, "32,144,56,56,144,3,3,1,1"), {"groups": 144},
     ("depthwise", "dw3x3_c144_56_s1", "conv_fwd", "pycnn v06")),
    ("max pool fwd", "pool", ("max", "fwd", "32,64,112,112,3,2,1"), {},
     ("poolact", "maxpool3x3_s2_c64_112", "max_pool_fwd", "pycnn")),
    ("max pool bwd v2", "pool", ("max", "bwd", "32,64,112,112,3,2,1"), {},
     ("poolact", "maxpool3x3_s2_c64_112", "max_pool_bwd", "pycnn v02")),
    ("avg pool fwd", "pool", ("avg", "fwd", "32,64,112,112,3,2,1"), {},
     ("poolact", "avgpool3x3_s2_c64_112", "avg_pool_fwd", "pycnn")),
    ("relu fwd", "activation", ("relu", "fwd", "64,64,112,112"), {},
     ("poolact", "act_n64_c64_112", "relu_fwd", "pycnn")),
    ("batch norm fwd v2", "batch_norm", ("fwd", 2, "32,256,56,56"), {},
     ("poolact", "bn_n32_c256_56", "batch_norm_fwd", "pycnn v02")),
    ("batch norm bwd v2", "batch_norm", ("bwd", 2, "32,256,56,56"), {},
     ("poolact", "bn_n32_c256_56", "batch_norm_bwd", "pycnn v02")),
    ("softmax fwd", "softmax", ("fwd", "32,1000,1"), {}, None),
]


def _bench_row(spec):
    if spec is None:
        return None
    set_name, case, op, impl = spec
    for path in sorted((HERE / "results").glob(f"bench-{set_name}-h200-*.json")):
        for r in json.loads(path.read_text())["results"]:
            if r["case"] == case and r["op"] == op and r["impl"] == impl and not r.get("error"):
                return {"median_ms": r["time"]["median_ms"], "tflops": r.get("tflops"),
                        "gbps": r.get("gbps"), "roof_fraction": r.get("roof_fraction"),
                        "ratio_default": r.get("ratio_default"), "file": path.name}
    return None


def _static_of(static, launch, fam, args, kwargs):
    from pycnn.inspect import conv_rows, static_entry
    if fam == "conv2d":
        dims = tuple(int(v) for v in args[2].split(","))
        rows = conv_rows(args[0], dims, kwargs.get("groups", 1))
        if rows is not None:
            launch = dict(launch, rows=rows)
    return static_entry(static, "sm_90", launch)


def collect() -> list[dict]:
    from pycnn.inspect import dynamic, static_record
    static = static_record()
    out = []
    for label, fam, args, kwargs, spec in ROWS:
        start = time.perf_counter()
        data = getattr(dynamic, fam)(*args, sample=SAMPLE, checks=False, **kwargs)
        launches = []
        for launch in data["launches"]:
            st = _static_of(static, launch, fam, args, kwargs)
            loop = ((st or {}).get("sass") or {}).get("main_loop") or {}
            launches.append({
                "kernel": st["name"].split("(")[0].replace("void ", "").replace("pycnn::", "") if st else launch["kernel"],
                "grid": launch["grid"], "block": launch["block"], "sampled": launch["sampled"],
                "registers": st and st["registers"], "occupancy": st and st["occupancy"]["occupancy"],
                "limited_by": st and st["occupancy"]["limited_by"],
                "spills": st and st["spill_stores"] + st["spill_loads"],
                "loop_instructions": loop.get("instructions"),
                "ffma_share": loop.get("hmma_share") if loop.get("hmma") else loop.get("ffma_share"),
                "loop_int_div": loop.get("int_div"),
                **{f"{k}_{m}": launch[k].get(m) for k in ("global_ld", "global_st", "shared_ld", "shared_st")
                   for m in ("requests", "bytes", "sectors", "sectors_per_request", "wavefronts_per_request",
                             "bank_conflicts")
                   if m in launch[k]}})
        out.append({"label": label, "op": data["op"], "launches": launches,
                    "flops": data["flops"], "ideal_bytes": data["ideal_bytes"],
                    "arithmetic_intensity": data["arithmetic_intensity"],
                    "requested_over_ideal": data["requested_over_ideal"],
                    "bound_h200": data["bound"]["H200"], "measured": _bench_row(spec),
                    "emulator_seconds": round(time.perf_counter() - start, 1)})
        print(f"{label}: {out[-1]['emulator_seconds']} s", file=sys.stderr)
    return out


def _main_launch(row):
    """The launch that does the op's work: the most memory requests (split-K's reduction
    and batch norm's statistics pass are the others)."""
    return max(row["launches"], key=lambda l: sum(l.get(f"{k}_requests") or 0
                                                  for k in ("global_ld", "global_st", "shared_ld", "shared_st")))


def reading(row) -> str:
    """What limits the kernel, from its figures, by rules: the measured fraction of the
    roofline first, then the first cause that applies."""
    m, main, bound = row["measured"], _main_launch(row), row["bound_h200"]
    roof = m and m.get("roof_fraction")
    head = f"{100 * roof:.0f}% of the H200's {bound['limit']} roof" if roof else "unmeasured"
    causes = []
    if main.get("spills"):
        causes.append(f"spills {main['spills']} bytes")
    for kind, what in (("global_ld", "loads"), ("global_st", "stores")):
        sectors, nbytes = main.get(f"{kind}_sectors"), main.get(f"{kind}_bytes")
        if sectors and nbytes is not None and nbytes / (32 * sectors) < 0.5:   # under half of each sector used
            causes.append(f"scattered {what}: {100 * nbytes / (32 * sectors):.0f}% of the sectors' bytes used "
                          f"({main[f'{kind}_sectors_per_request']:.1f} sectors a request)")
    req = main.get("shared_ld_requests") or 0
    if req and (main.get("shared_ld_bank_conflicts") or 0) / req > 0.1:
        causes.append(f"bank conflicts ({main['shared_ld_bank_conflicts'] / req:.2f} extra wavefronts a read)")
    if bound["limit"] == "compute":
        share = main.get("ffma_share")
        if share is not None and share < 0.75:
            causes.append(f"issue slots: FFMA/HMMA {100 * share:.0f}% of the main loop"
                          + (f", {main['loop_int_div']} integer divisions in it" if main.get("loop_int_div") else ""))
        occ = main.get("occupancy")
        if occ is not None and occ <= 0.25:
            causes.append(f"occupancy {100 * occ:.0f}% ({', '.join(main['limited_by'])})")
    else:
        over = row.get("requested_over_ideal")
        if over and over > 1.5:
            causes.append(f"{over:.1f}x the ideal bytes requested (re-reads that L1 and L2 must catch)")
        blocks = main["grid"][0] * main["grid"][1] * main["grid"][2]
        if blocks < 264:
            causes.append(f"{blocks} blocks: too few to fill 132 SMs")
    return head + ("; " + "; ".join(causes) if causes else "; no cause visible in the counters")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(rows) -> str:
    lines = ["| kernel | layer | launch | regs | occ. | main loop: instr, FFMA % | global ld / st sectors a request | "
             "shared wavefronts a read | bound on an H200 | H200 measured | reading |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        main = _main_launch(row)
        g = main["grid"]
        loop = (f"{main['loop_instructions']}, {100 * main['ffma_share']:.0f}%"
                if main.get("loop_instructions") and main.get("ffma_share") is not None else "-")
        ld, st = main.get("global_ld_sectors_per_request"), main.get("global_st_sectors_per_request")
        wf = main.get("shared_ld_wavefronts_per_request") if main.get("shared_ld_requests") else None
        b = row["bound_h200"]
        m = row["measured"]
        meas = "-" if not m else (f"{m['median_ms']:.3f} ms, " +
                                  (f"{m['tflops']:.1f} TFLOP/s" if b["limit"] == "compute" else f"{m['gbps']:.0f} GB/s"))
        lines.append(
            f"| {row['label']} | {row['op'].split(' ', 3)[-1] if row['label'].startswith('conv') else row['op']} | "
            f"`{main['kernel']}` {g[0]}x{g[1]}x{g[2]} x {main['block'][0]} | {main.get('registers') or '-'} | "
            f"{_pct(main.get('occupancy'))} | {loop} | "
            f"{'-' if ld is None else f'{ld:.2f}'} / {'-' if st is None else f'{st:.2f}'} | "
            f"{'-' if wf is None else f'{wf:.2f}'} | {b['limit']}, {b['min_time_us']:.0f} us | {meas} | {reading(row)} |")
    lines += ["", f"The emulator ran {SAMPLE} blocks of each grid (counts scaled; ratios per request are "
              "exact for the blocks run); sm_90 resources; the bound is the roofline's shortest time "
              "on an H200 (FP32 67 TFLOP/s, 4.24 TB/s measured copy); measured: the benchmark's median, "
              "fp32 (its backward-filter rows were timed with the atomic split-K reduction, the default "
              "then; the emulator runs today's fixed-order one). Regenerate with "
              "`python bench/kernel_table.py --write`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true")
    p.add_argument("--from-json", action="store_true", help="rebuild the table from the committed JSON")
    args = p.parse_args(argv)
    path = HERE / "results" / "kernel-counters.json"
    rows = json.loads(path.read_text())["rows"] if args.from_json else collect()
    text = table(rows)
    if args.write and not args.from_json:
        path.write_text(json.dumps({"sample_blocks": SAMPLE, "rows": rows}, indent=1) + "\n")
    sys.path.insert(0, str(HERE))
    from readme_table import print_or_write
    return print_or_write(text, args.write, ROOT / "kernels" / "README.md", (START, END), "kernel_table")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
