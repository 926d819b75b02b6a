"""Results as files: JSON (every figure and the setup), a Markdown table, a roofline PNG."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pycnn.bench.roofline import plot


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarize(rows) -> list[dict]:
    """Per (op, implementation): geometric means of the time ratios over the cases
    that ran and passed the check (a wrong result does not count as fast)."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["op"], row["impl"]), []).append(row)
    summary = []
    for (op, impl), group in groups.items():
        good = [r for r in group if _good(r)]
        summary.append({
            "op": op, "impl": impl, "cases": len(group), "failed": len(group) - len(good),
            "geomean_ratio_default": geomean([r["ratio_default"] for r in good]),
            "geomean_ratio_autotuned": geomean([r["ratio_autotuned"] for r in good]),
            "geomean_ratio_tf32": geomean([r.get("ratio_tf32") for r in good]),
        })
    return summary


def _good(row) -> bool:
    return not row["error"] and row["ok"] is not False


def by_shape_class(rows) -> list[dict]:
    """Per (conv op, shape class): each kernel version against what runs by default,
    as the geometric mean over the class's cases of default time / version time
    (> 1: the version is faster there), over the cases both ran correctly; the
    versions the default ran, and cuDNN autotuned / default. What a promotion (or a
    per-class default, like strided backward-data) is decided from."""
    groups: dict[tuple, list] = {}
    for row in rows:
        if row.get("shape_class"):
            groups.setdefault((row["op"], row["shape_class"]), []).append(row)
    out = []
    for (op, klass), group in groups.items():
        default = {r["case"]: r for r in group if r["impl"] == "pycnn" and _good(r)}
        versions = []
        for impl in dict.fromkeys(r["impl"] for r in group if r["impl"] != "pycnn"):
            mine = [r for r in group if r["impl"] == impl]
            both = [r for r in mine if _good(r) and r["case"] in default]
            versions.append({
                "impl": impl, "cases": len(both), "failed": sum(not _good(r) for r in mine),
                "vs_default": geomean([default[r["case"]]["time"]["median_ms"] / r["time"]["median_ms"]
                                       for r in both])})
        versions.sort(key=lambda v: -(v["vs_default"] or 0))
        out.append({
            "op": op, "shape_class": klass, "cases": len({r["case"] for r in group}),
            "default_runs": sorted({r["runs"] for r in default.values() if r.get("runs") is not None}),
            "geomean_ratio_autotuned": geomean([r["ratio_autotuned"] for r in default.values()]),
            "versions": versions})
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("nvidia", "")).strip("-") or "unknown"


def write_all(result: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench-{result['set']}-{slug(result['env'].get('gpu') or 'cpu')}-b{result['batch']}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    roof = result["roofline"]
    points = {"pycnn": [(r["ai"], r["tflops"]) for r in result["results"]
                        if r["impl"] == "pycnn" and not r["error"]]}
    for key, label in (("baseline", "PyTorch: cuDNN default heuristic"),
                       ("baseline_autotuned", "PyTorch: cuDNN autotuned"),
                       ("baseline_tf32", "PyTorch: cuDNN autotuned, TF32 on")):
        pts = {(r["case"], r["op"]): (r["ai"], r[key]["tflops"]) for r in result["results"] if r.get(key)}
        if pts:
            points[label] = list(pts.values())
    tf32_peak = roof.get("peak_tf32_tflops") if "PyTorch: cuDNN autotuned, TF32 on" in points else None
    plot(paths[2], points, roof["peak_fp32_tflops"], roof["copy_bandwidth_gbps"],
         f"pycnn bench: {result['set']}, {result['env'].get('gpu') or 'CPU (NumPy reference)'}, "
         f"batch {result['batch']}, {result['precision']}", tf32_peak=tf32_peak)
    return paths


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    env, roof = result["env"], result["roofline"]
    lines = [
        f"# pycnn bench: {result['set']}",
        "",
        f"- device: {env.get('gpu') or 'CPU'} ({result['backend']}); batch {result['batch']} "
        f"(cases that fix N say so); precision: {result['precision']}",
        f"- baseline: {result['baseline_library'] or 'none (no GPU baseline available)'}",
        f"- ratio: {result['ratio']}",
        f"- timing: {result['timing']['method']}, median of the repetitions; spread p10-p90",
        f"- roofline: FP32 peak {_fmt(roof['peak_fp32_tflops'], 'g')} TFLOP/s (cuDNN TF32: "
        f"TF32 peak {_fmt(roof.get('peak_tf32_tflops'), 'g')}), measured copy "
        f"bandwidth {roof['copy_bandwidth_gbps']:.0f} GB/s; check tolerance {result['tolerance']:g} "
        f"(max |pycnn - baseline| / max |baseline|, against cuDNN with TF32 off)",
        f"- commit {env.get('git_commit') or '?'}{' (dirty)' if env.get('git_dirty') else ''}, "
        f"{env['timestamp']}",
    ]
    if result.get("stopped"):
        lines.append(f"- **incomplete**: {result['stopped']}; the figures below cover those cases only")
    lines += [
        "",
        "| op | impl | geomean default / pycnn | geomean autotuned / pycnn "
        "| geomean TF32 / pycnn | cases | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        lines.append(f"| {s['op']} | {s['impl']} | {_fmt(s['geomean_ratio_default'], '.2f')} | "
                     f"{_fmt(s['geomean_ratio_autotuned'], '.2f')} | "
                     f"{_fmt(s.get('geomean_ratio_tf32'), '.2f')} | {s['cases']} | {s['failed']} |")
    classes = result.get("by_shape_class") or []
    if any(c["versions"] for c in classes):
        lines += [
            "",
            "Kernel versions by shape class: default time / version time, geometric mean over the "
            "class's cases that both ran correctly (> 1: the version is faster than what runs by "
            "default there).",
            "",
            "| op | shape class | cases | default runs | cuDNN autotuned / default "
            "| versions, fastest first |",
            "|---|---|---|---|---|---|",
        ]
        for c in classes:
            runs = ", ".join(f"v{v:02d}" for v in c["default_runs"]) or "-"
            versions = ", ".join(
                f"{v['impl'].removeprefix('pycnn ')} {_fmt(v['vs_default'], '.2f')}"
                + (f" ({v['failed']} failed)" if v["failed"] else "") for v in c["versions"])
            lines.append(f"| {c['op']} | {c['shape_class']} | {c['cases']} | {runs} | "
                         f"{_fmt(c['geomean_ratio_autotuned'], '.2f')} | {versions or '-'} |")
    lines += ["", "| case | op | impl | N | ms (p10-p90) | TFLOP/s | GB/s | % roof | max rel err "
              "| default ms | x default | autotuned ms | x autotuned | TF32 ms (its err) | x TF32 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        impl = r["impl"]
        if r.get("version") is None and r.get("runs") is not None:
            impl += f" (v{r['runs']:02d})"          # the default, and the version it ran
        if r["error"]:
            lines.append(f"| {r['case']} | {r['op']} | {impl} | {r['N']} | error: "
                         f"{r['error'][:80]} |||||||||||")
            continue
        t = r["time"]
        frac = None if r["roof_fraction"] is None else 100 * r["roof_fraction"]
        err = _fmt(r["max_rel_err"], ".1e") + (" FAIL" if r["ok"] is False else "")
        tf32 = _baseline_ms(r, "baseline_tf32")
        if r.get("baseline_tf32_rel_err") is not None:
            tf32 += f" ({r['baseline_tf32_rel_err']:.1e})"
        lines.append(
            f"| {r['case']} | {r['op']} | {impl} | {r['N']} | {t['median_ms']:.4f} "
            f"({t['p10_ms']:.4f}-{t['p90_ms']:.4f}) | {r['tflops']:.3f} | {r['gbps']:.1f} | "
            f"{_fmt(frac, '.1f')} | {err} | {_baseline_ms(r, 'baseline')} | "
            f"{_fmt(r['ratio_default'], '.2f')} | {_baseline_ms(r, 'baseline_autotuned')} | "
            f"{_fmt(r['ratio_autotuned'], '.2f')} | {tf32} | {_fmt(r.get('ratio_tf32'), '.2f')} |")
    return "\n".join(lines) + "\n"


def _baseline_ms(row, key) -> str:
    return _fmt(row[key]["time"]["median_ms"] if row.get(key) else None, ".4f")
