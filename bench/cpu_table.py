"""Generate the README's CPU figures from the committed CPU results.

    python bench/cpu_table.py            # print the table
    python bench/cpu_table.py --write    # replace the text between the markers in README.md

Reads bench/results/train-cpu.json (bench/train_cpu.py: the default `pycnn train`
run) and bench/results/cpu-bench.json (bench/cpu_bench.py: a ResNet-18 step and the
per-op 'tiny' set), every figure a ratio pycnn time / PyTorch time from one
interleaved run (< 1: pycnn is faster). Only the text between
``<!-- cpu-table:start -->`` and ``<!-- cpu-table:end -->`` is ever rewritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import readme_table  # bench/readme_table.py: the README's markers, printed or written

HERE = Path(__file__).resolve().parent
START, END = "<!-- cpu-table:start -->", "<!-- cpu-table:end -->"


def _load(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _load_avg(machine):
    before = machine.get("load_average_before") or [float("nan")]
    after = machine.get("load_average_after") or [float("nan")]
    return f"load average {before[0]:.1f} before, {after[0]:.1f} after"


def _blas(machine):
    from pycnn.bench.cpu import describe
    cap = machine.get("torch_cpu_capability")
    torch = f", PyTorch on MKL/oneDNN at {cap}" if cap else ""
    return f"{machine.get('cpu', 'CPU not recorded')}, {describe(machine.get('blas'))}{torch}"


def table(train, bench) -> str:
    lines = ["| what | pycnn | PyTorch | pycnn / PyTorch |", "|---|---|---|---|"]
    notes = []
    if train and train.get("torch"):
        p, t = train["pycnn"], train["torch"]
        lines.append(f"| default `pycnn train` run (LeNet-5, 8 epochs, batch 64; test accuracy "
                     f"{100 * p['test_acc']:.1f}% vs {100 * t['test_acc']:.1f}%) | "
                     f"{p['seconds']:.2f} s | {t['seconds']:.2f} s | "
                     f"{train['ratio_pycnn_over_torch']:.2f}x |")
        notes.append(f"train run: best of {len(p['all_seconds'])} each, "
                     f"{_load_avg(train['machine'])}, {_blas(train['machine'])}")
    if bench:
        r = bench["resnet18_step"]
        lines.append(f"| {r['what']} | {r['pycnn_s']:.3f} s | {r['torch_s']:.3f} s | "
                     f"{r['ratio']:.2f}x |")
        op = bench["per_op"]
        for row in op["rows"]:
            lines.append(f"| {op['set']} set, batch {op['batch']}: {row['case']} {row['pass']} | "
                         f"{1e6 * row['pycnn_s']:.0f} us | {1e6 * row['torch_s']:.0f} us | "
                         f"{row['ratio']:.2f}x |")
        lines.append(f"| {op['set']} set: geometric mean | | | {op['geomean_ratio']:.2f}x |")
        notes.append(f"ResNet-18 and per-op: best of {bench['repeats']} rounds each, "
                     f"{_load_avg(bench['machine'])}, {_blas(bench['machine'])}, "
                     f"CPU backend `{bench['cpu_backend']}`, "
                     f"PyTorch {bench['versions']['torch']}")
    if len(lines) == 2:
        return "No CPU results are committed yet (run bench/train_cpu.py and bench/cpu_bench.py)."
    return "\n".join(lines) + "\n\n" + "; ".join(notes) + "."


def replace_between_markers(text: str, body: str) -> str:
    return readme_table.replace_between_markers(text, body, (START, END))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="update README.md between the markers")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--readme", default=str(HERE.parent / "README.md"))
    args = p.parse_args(argv)
    res = Path(args.results)
    body = table(_load(res / "train-cpu.json"), _load(res / "cpu-bench.json"))
    return readme_table.print_or_write(body, args.write, args.readme, (START, END), "cpu_table")


if __name__ == "__main__":
    sys.exit(main())
