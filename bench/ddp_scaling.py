"""Data-parallel scaling: measured here (1 process against 2 ranks, one run) and modelled
for 8 GPUs of one node and 4 such nodes, for AlexNet and ResNet-50.

    python bench/ddp_scaling.py              # measure, model, print
    python bench/ddp_scaling.py --write      # also bench/results/ddp-scaling.json and the README table

The measurement: the default `pycnn train` model (lenet5 on the embedded digits) for one
epoch at a global batch of 64: 1 process with 1 BLAS thread, 2 ranks (mpiexec, 32 each)
with 1 thread each, and for reference 1 process with 2 threads (this machine's 2 cores);
interleaved, best of --repeats, samples per second of the epoch's training as pycnn train
reports it. The speed-up is 2 ranks against 1 process of the same thread count.

The model, per training step of one GPU's batch (its compute time T_fwd + T_bwd measured):
    ring all-reduce of G bytes over p GPUs   T_ar = 2 (p-1)/p * G / B + 2 (p-1) * alpha
    two levels (n nodes of 8)                reduce-scatter and all-gather inside each node
                                             over NVLink, a ring across the nodes over the
                                             network on each GPU's 1/8 of the gradients
    overlap                                  buckets go out as backward completes them: all
                                             but the last bucket's reduction can hide
                                             behind backward, so the step takes
        T = T_fwd + max(T_bwd, T_ar_hidden + T_bwd / k) + T_ar / k,  k = buckets,
    and the scaling efficiency is (T_fwd + T_bwd) / T, the speed-up p times that.
The link figures are assumptions with their source (the vendors' datasheets), not
measurements: NVLink 4 on an H100/H200 SXM node, 900 GB/s per GPU both directions
together, taken as 450 GB/s each way, as the ring's bandwidth B; one 400 Gb/s NDR
InfiniBand adapter per GPU across nodes (DGX H100), 50 GB/s; latency alpha 5 us per
hop in a node, 10 us across. Compute: the fp32 convolution times of pycnn and of cuDNN
on an H200 at batch 32 (bench/results/bench-resnet50-h200-b32.json, the 53 layers with
their counts; the other layers are left out, which flatters neither side); AlexNet's
from its 0.71 GFLOP forward per image (torchvision's) at the rate pycnn's convolutions
reach on ResNet-50.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- ddp-table:start -->", "<!-- ddp-table:end -->"

LINKS = {"nvlink_GBps": 450.0, "network_GBps": 50.0, "alpha_node_us": 5.0, "alpha_net_us": 10.0,
         "gpus_per_node": 8, "bucket_MB": 25}
#: parameters (fp32 gradients all-reduced), torchvision's counts
MODELS = {"alexnet": 61_100_840, "resnet50": 25_557_032}
ALEXNET_FWD_GFLOP = 0.714


def measure(repeats: int) -> dict:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("ddp_scaling: no mpiexec (pip install 'pycnn[dist]')")
    out = {"one": [], "two": [], "one_2_threads": []}
    common = ["train", "--epochs", "1", "--no-progress", "--seed", "0"]
    for _ in range(repeats):
        for key in out:
            with tempfile.TemporaryDirectory() as tmp:
                threads = "2" if key == "one_2_threads" else "1"
                env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
                if key != "two":
                    cmd = [sys.executable, "-m", "pycnn.cli", *common, "--batch-size", "64", "--out", tmp + "/r"]
                else:
                    cmd = [mpiexec, "-n", "2", "--oversubscribe", "--bind-to", "none"]
                    if os.geteuid() == 0:
                        cmd.append("--allow-run-as-root")
                    cmd += ["-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS",
                            sys.executable, "-m", "pycnn.cli", *common, "--batch-size", "32",
                            "--out", tmp + "/r"]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
                if done.returncode != 0:
                    raise SystemExit(f"ddp_scaling: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
                metrics = json.loads(Path(tmp, "r", "metrics.json").read_text())
                out[key].append(metrics["epochs"][0]["samples_per_s"])
    best = {k: max(v) for k, v in out.items()}
    return {"samples_per_s": out, "best": best, "speedup_2_vs_1": best["two"] / best["one"],
            "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}


def _ring(bytes_, p, bw_GBps, alpha_us):
    if p <= 1:
        return 0.0
    return 2 * (p - 1) / p * bytes_ / (bw_GBps * 1e9) + 2 * (p - 1) * alpha_us * 1e-6


def allreduce_seconds(bytes_, gpus) -> float:
    per_node = min(gpus, LINKS["gpus_per_node"])
    nodes = gpus // per_node
    inside = _ring(bytes_, per_node, LINKS["nvlink_GBps"], LINKS["alpha_node_us"])
    across = _ring(bytes_ / per_node, nodes, LINKS["network_GBps"], LINKS["alpha_net_us"])
    return inside + across


def step_seconds(t_fwd, t_bwd, grad_bytes, gpus) -> float:
    t_ar = allreduce_seconds(grad_bytes, gpus)
    k = max(1, round(grad_bytes / (LINKS["bucket_MB"] * 2**20)))
    hidden = t_ar * (k - 1) / k
    return t_fwd + max(t_bwd, hidden + t_bwd / k) + t_ar / k


def compute_times() -> dict:
    """{(model, who): (t_fwd, t_bwd)} in seconds per GPU step at batch 32."""
    doc = json.loads((HERE / "results" / "bench-resnet50-h200-b32.json").read_text())
    sums = {}
    for r in doc["results"]:
        if r["impl"] != "pycnn" or r["op"] not in ("conv_fwd", "conv_bwd_data", "conv_bwd_filter"):
            continue
        ours = r["time"]["median_ms"] * r["count"] * 1e-3
        theirs = r["baseline"]["time"]["median_ms"] * r["count"] * 1e-3 if r.get("baseline") else None
        sums.setdefault(r["op"], [0.0, 0.0, 0.0])
        sums[r["op"]][0] += ours
        sums[r["op"]][1] += theirs or 0.0
        sums[r["op"]][2] += r["flops"] * r["count"]
    times = {("resnet50", "pycnn"): (sums["conv_fwd"][0], sums["conv_bwd_data"][0] + sums["conv_bwd_filter"][0]),
             ("resnet50", "cuDNN"): (sums["conv_fwd"][1], sums["conv_bwd_data"][1] + sums["conv_bwd_filter"][1])}
    rate_ours = sums["conv_fwd"][2] / sums["conv_fwd"][0]           # FLOP/s, forward
    rate_theirs = sums["conv_fwd"][2] / sums["conv_fwd"][1]
    alex = ALEXNET_FWD_GFLOP * 1e9 * doc["batch"]
    times[("alexnet", "pycnn")] = (alex / rate_ours, 2 * alex / rate_ours)
    times[("alexnet", "cuDNN")] = (alex / rate_theirs, 2 * alex / rate_theirs)
    return times


def model_table() -> list[dict]:
    rows = []
    for (model, who), (t_fwd, t_bwd) in sorted(compute_times().items()):
        grad = MODELS[model] * 4
        for gpus in (8, 32):
            t = step_seconds(t_fwd, t_bwd, grad, gpus)
            rows.append({"model": model, "kernels": who, "gpus": gpus, "step_ms": 1e3 * t,
                         "compute_ms": 1e3 * (t_fwd + t_bwd),
                         "allreduce_ms": 1e3 * allreduce_seconds(grad, gpus),
                         "efficiency": (t_fwd + t_bwd) / t, "speedup": gpus * (t_fwd + t_bwd) / t})
    return rows


def markdown(measured: dict | None, rows: list[dict]) -> str:
    lines = []
    if measured:
        lines.append(f"Measured on this {measured['cpus']}-core machine (lenet5, one epoch, global batch "
                     f"64, 1 BLAS thread a process; load average {measured['load_average']:.1f}): "
                     f"1 process {measured['best']['one']:.0f} samples/s, 2 ranks "
                     f"{measured['best']['two']:.0f} samples/s, **{measured['speedup_2_vs_1']:.2f}x** "
                     f"(best of {len(measured['samples_per_s']['one'])} each, interleaved; 1 process "
                     f"with 2 threads: {measured['best']['one_2_threads']:.0f} samples/s).")
        lines.append("")
    lines += ["| model | kernels | GPUs | compute ms | all-reduce ms | step ms | efficiency | speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kernels']} | {r['gpus']} ({r['gpus'] // 8} node"
                     f"{'s' if r['gpus'] > 8 else ''}) | {r['compute_ms']:.1f} | {r['allreduce_ms']:.1f} | "
                     f"{r['step_ms']:.1f} | {100 * r['efficiency']:.0f}% | {r['speedup']:.1f}x |")
    lines += ["", "Modelled, not measured (`bench/ddp_scaling.py` says how): batch 32 per GPU, fp32 "
              "gradients, ring all-reduce in two levels, buckets overlapped with backward; "
              f"NVLink {LINKS['nvlink_GBps']:.0f} GB/s and InfiniBand {LINKS['network_GBps']:.0f} GB/s "
              "per GPU each way (datasheet figures), compute from the H200 convolution times "
              "(convolutions only)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-measure", action="store_true", help="the model only")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    result_path = HERE / "results" / "ddp-scaling.json"
    if args.no_measure:
        measured = json.loads(result_path.read_text())["measured"] if result_path.exists() else None
    else:
        measured = measure(args.repeats)
    rows = model_table()
    text = markdown(measured, rows)
    print(text)
    if args.write:
        result_path.write_text(json.dumps({"measured": measured, "links": LINKS, "models": MODELS,
                                           "model": rows}, indent=1) + "\n")
        sys.path.insert(0, str(HERE))
        from readme_table import print_or_write
        return print_or_write(text, True, ROOT / "README.md", (START, END), "ddp_scaling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
