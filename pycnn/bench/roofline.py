"""The roofline: attainable FLOP/s = min(peak FP32, arithmetic intensity * bandwidth).

The compute roof is FP32 without tensor cores (what an FFMA kernel can reach),
looked up by GPU name; cuDNN's TF32 mode is placed under the dense TF32
tensor-core peak instead. The memory roof is the copy bandwidth measured in the
same run (bytes read + written), not the datasheet figure.
"""
from __future__ import annotations

# (name substring, FP32 peak, dense TF32 tensor-core peak) in TFLOP/s from NVIDIA's
# datasheets (the TF32 figures there are quoted with sparsity: halved here); the
# first entry whose name occurs in the device name wins; None: not known here.
PEAKS = (
    ("H100 PCIe", 51.2, 378.0),
    ("H100 NVL", 60.0, None),
    ("H100", 66.9, 494.7),        # SXM
    ("H200", 66.9, 494.7),        # same compute as the H100 SXM
    ("A100", 19.5, 156.0),
)


def _lookup(gpu_name: str | None, column: int) -> float | None:
    for entry in PEAKS:
        if gpu_name and entry[0].lower() in gpu_name.lower():
            return entry[column]
    return None


def peak_fp32_tflops(gpu_name: str | None) -> float | None:
    return _lookup(gpu_name, 1)


def peak_tf32_tflops(gpu_name: str | None) -> float | None:
    return _lookup(gpu_name, 2)


def attainable_tflops(ai: float, peak_tflops: float | None, bandwidth_gbps: float) -> float:
    """min(peak, AI * bandwidth) in TFLOP/s; AI in FLOP/byte, bandwidth in GB/s."""
    memory_roof = ai * bandwidth_gbps / 1e3
    return memory_roof if peak_tflops is None else min(peak_tflops, memory_roof)


def plot(path, points: dict, peak_tflops, bandwidth_gbps, title: str, tf32_peak=None):
    """Log-log roofline. ``points`` maps a label to a list of (AI, TFLOP/s); with
    ``tf32_peak``, the TF32 tensor-core peak is drawn too (dotted)."""
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
    if tf32_peak is not None:
        ax.axhline(tf32_peak, color="gray", lw=1, ls=":")
        ax.text(hi, tf32_peak, f"TF32 tensor-core peak {tf32_peak:g} TFLOP/s", ha="right", va="bottom")
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
