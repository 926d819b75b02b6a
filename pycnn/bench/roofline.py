"""The roofline: attainable FLOP/s = min(peak FP32, arithmetic intensity * bandwidth).

The compute roof is FP32 without tensor cores (what an FFMA kernel can reach),
looked up by GPU name; the memory roof is the copy bandwidth measured in the
same run (bytes read + written), not the datasheet figure.
"""
from __future__ import annotations

# FP32 (non-tensor-core) peaks in TFLOP/s, first matching substring of the device name wins.
PEAK_FP32_TFLOPS = (
    ("H100 PCIe", 51.2),
    ("H100 NVL", 60.0),
    ("H100", 66.9),        # SXM
    ("H200", 66.9),        # same compute as the H100 SXM
    ("A100", 19.5),
)


def peak_fp32_tflops(gpu_name: str | None) -> float | None:
    for key, peak in PEAK_FP32_TFLOPS:
        if gpu_name and key.lower() in gpu_name.lower():
            return peak
    return None


def attainable_tflops(ai: float, peak_tflops: float | None, bandwidth_gbps: float) -> float:
    """min(peak, AI * bandwidth) in TFLOP/s; AI in FLOP/byte, bandwidth in GB/s."""
    memory_roof = ai * bandwidth_gbps / 1e3
    return memory_roof if peak_tflops is None else min(peak_tflops, memory_roof)


def plot(path, points: dict, peak_tflops, bandwidth_gbps, title: str):
    """Log-log roofline. ``points`` maps a label to a list of (AI, TFLOP/s)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ais = [ai for pts in points.values() for ai, _ in pts if ai > 0]
    lo, hi = (min(ais) / 2, max(ais) * 2) if ais else (0.1, 1000.0)
    if peak_tflops is not None:
        hi = max(hi, 4 * peak_tflops * 1e3 / bandwidth_gbps)
        ax.axhline(peak_tflops, color="black", lw=1, ls="--")
        ax.text(hi, peak_tflops, f"FP32 peak {peak_tflops:g} TFLOP/s", ha="right", va="bottom")
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(grid, [attainable_tflops(a, peak_tflops, bandwidth_gbps) for a in grid],
            color="black", lw=1.5, label=f"roof (measured copy {bandwidth_gbps:.0f} GB/s)")
    for (label, pts), marker in zip(points.items(), "oxs^vD"):
        pts = [(a, t) for a, t in pts if a > 0 and t and t > 0]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=28, label=label, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of minimum traffic)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
