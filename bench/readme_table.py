"""Generate the README's performance table from the committed GPU results.

    python bench/readme_table.py            # print the table
    python bench/readme_table.py --write    # replace the text between the markers in README.md

Reads bench/results/bench-*.json (written by ``pycnn bench``), keeps the GPU runs
that had a baseline, and lists per set and op the geometric mean over the cases
of cuDNN time / pycnn time for cuDNN's fp32 modes (heuristic and autotuned) and,
for convolutions, against cuDNN autotuned with TF32 on (the tensor cores' ceiling,
less accurate than fp32) (> 1: pycnn is faster). Only the
text between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` is
ever rewritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    from pycnn.bench.report import summarize
except ImportError:             # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))
    from pycnn.bench.report import summarize
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def load_results(directory) -> list[dict]:
    """GPU results with a baseline, in file-name order."""
    found = []
    for path in sorted(Path(directory).glob("bench-*.json")):
        result = json.loads(path.read_text())
        if result.get("device") == "cuda" and result.get("baseline_library"):
            found.append(result)
    return found


def _fmt(value):
    return "-" if value is None else f"{value:.2f}"


#: Sets that sample others (bench/gpu_session.sh's short set): their own tables only.
SAMPLE_SETS = ("core",)


def _fastest_version(summaries, op, default):
    """'vNN r' for the version of ``op`` whose geometric mean against cuDNN's default beats
    the promoted default's, else 'the default'."""
    best = None
    for s in summaries:
        r = s["geomean_ratio_default"]
        if s["op"] == op and s["impl"] != "pycnn" and r is not None and (best is None or r > best[1]):
            best = (s["impl"].replace("pycnn ", ""), r)
    if best is None or default is None or best[1] <= default * 1.02:
        return "the default"
    return f"{best[0]}: {best[1]:.2f}"


def table(results) -> str:
    results = [r for r in results if r["set"] not in SAMPLE_SETS]
    if not results:
        return "No GPU results are committed yet (run `pycnn bench` on a GPU and commit bench/results/)."
    lines = ["| set | GPU | batch | op | cuDNN default / pycnn | cuDNN autotuned / pycnn "
             "| cuDNN TF32 / pycnn | cases | fastest version (cuDNN default / it) |",
             "|---|---|---|---|---|---|---|---|---|"]
    disagreements = []
    for result in results:
        name = result["set"] if result.get("complete", True) else f"{result['set']} (partial)"
        summaries = summarize(result["results"])
        for s in summaries:
            if s["impl"] != "pycnn":        # the promoted default; versions are in the per-run tables
                continue
            cases = str(s["cases"] - s["failed"])
            if s["failed"]:
                cases += f" ({s['failed']} failed)"
                bad = sorted({r.get("case", "?") for r in result["results"]
                              if r["op"] == s["op"] and r["impl"] == "pycnn" and not r.get("ok", True)})
                disagreements.append(f"{result['set']} {s['op']}: {', '.join(bad)}")
            lines.append(f"| {name} | {result['env']['gpu']} | {result['batch']} | {s['op']} | "
                         f"{_fmt(s['geomean_ratio_default'])} | {_fmt(s['geomean_ratio_autotuned'])} | "
                         f"{_fmt(s['geomean_ratio_tf32'])} | {cases} | "
                         f"{_fastest_version(summaries, s['op'], s['geomean_ratio_default'])} |")
    commits = sorted({r["env"].get("git_commit") or "?" for r in results})
    precisions = sorted({r["precision"] for r in results})
    lines += ["", "Geometric means over each set's cases of baseline time / pycnn time (> 1: pycnn is "
              "faster), for pycnn's default choice of version; the last column names the version "
              "that would beat it, where one does. Precision: " + "; ".join(precisions) + ". "
              "cuDNN default and autotuned run fp32 with TF32 off, like pycnn; \"cuDNN "
              "TF32\" is cuDNN autotuned with TF32 tensor cores allowed, faster and less accurate "
              "(its error is in the per-run tables); pools and activations are compared with "
              "PyTorch's own CUDA kernels. "
              f"Measured at commit {', '.join(c[:10] for c in commits)}; every figure is in bench/results/."]
    if disagreements:
        lines.append("\nFailed: cases where pycnn and the baseline differ by more than the tolerance "
                     "(who is off is not decided by the benchmark): " + "; ".join(disagreements) + ".")
    for result in results:
        if not result.get("complete", True):
            lines.append(f"\n{result['set']} (partial): the run was {result['stopped']}; its means "
                         "cover those cases only.")
    return "\n".join(lines)


def replace_between_markers(text: str, body: str, markers=(START, END)) -> str:
    start_marker, end_marker = markers
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README: expected the markers {start_marker} and {end_marker} (in this "
                         "order), found them missing")
    return text[:start + len(start_marker)] + "\n" + body + "\n" + text[end:]


def print_or_write(body: str, write: bool, readme, markers=(START, END), who="readme_table") -> int:
    """Prints the table, or (``--write``) puts it between the README's markers; the exit status."""
    if not write:
        print(body)
        return 0
    readme = Path(readme)
    try:
        new = replace_between_markers(readme.read_text(), body, markers)
    except (OSError, ValueError) as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 1
    readme.write_text(new)
    print(f"{who}: updated {readme}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="update README.md between the markers")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--readme", default=str(HERE.parent / "README.md"))
    args = p.parse_args(argv)
    return print_or_write(table(load_results(args.results)), args.write, args.readme)


if __name__ == "__main__":
    sys.exit(main())
