"""Timers: CUDA events on the GPU, time.perf_counter on the CPU; same statistics.

Each measurement warms up, estimates one call, then repeats until both at least
``min_reps`` repetitions and ``min_time`` seconds of measured work are reached
(or exactly ``reps`` when given), except that a slow call (a direct kernel on a
large layer can take a second) stops after ``max_time`` seconds but never below
``floor_reps`` repetitions, so that one slow case cannot eat a GPU session; and a
call slower than ``slow_s`` (the direct kernels' backward-filter on a large layer can
take seconds) is timed once, by its first call, with no warm-ups: statistics over
several such calls would cost more than a GPU session has. On the GPU, L2 is flushed before every
repetition by writing a buffer much larger than L2, outside the timed region, so
that no repetition finds its inputs in cache from the previous one.
"""
from __future__ import annotations

import math
import time

import numpy as np


def summarize(times_ms) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    return {"median_ms": float(np.median(t)), "min_ms": float(t.min()),
            "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "reps": int(t.size)}


def repetitions(estimate_ms, min_reps, min_time, max_reps, max_time, floor_reps) -> int:
    """Repetitions for a call of about ``estimate_ms``: enough for ``min_time`` seconds
    and ``min_reps``, at most ``max_reps``, and at most ``max_time`` seconds unless that
    leaves fewer than ``floor_reps``."""
    wanted = max(math.ceil(min_time * 1e3 / estimate_ms), min_reps)
    affordable = max(math.floor(max_time * 1e3 / estimate_ms), floor_reps)
    return max(min(wanted, affordable, max_reps), 1)


class _Timer:
    def __init__(self, reps=None, min_reps=20, min_time=0.2, max_reps=2000, warmup=3,
                 max_time=2.0, floor_reps=5, slow_s=1.0):
        self.reps, self.min_reps, self.min_time = reps, min_reps, min_time
        self.max_reps, self.warmup = max_reps, warmup
        self.max_time, self.floor_reps = max_time, floor_reps
        self.slow_s = slow_s

    def measure(self, fn) -> dict:
        first = self._run(fn, 1)            # the first warm-up, timed
        if first[0] > self.slow_s * 1e3:
            return summarize(first)         # reps = 1: too slow for statistics
        for _ in range(self.warmup - 1):
            fn()
        reps = self.reps
        if reps is None:
            estimate_ms = max(float(np.median(self._run(fn, 3))), 1e-6)
            reps = repetitions(estimate_ms, self.min_reps, self.min_time, self.max_reps,
                               self.max_time, self.floor_reps)
        return summarize(self._run(fn, reps))

    def setup(self) -> dict:
        return {"method": self.method, "warmup": self.warmup, "reps": self.reps,
                "min_reps": self.min_reps, "min_time_s": self.min_time, "max_reps": self.max_reps,
                "max_time_s": self.max_time, "floor_reps": self.floor_reps,
                "slow_s": self.slow_s}


class CpuTimer(_Timer):
    method = "time.perf_counter"

    def _run(self, fn, reps):
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return times


class GpuTimer(_Timer):
    """CUDA events recorded on CuPy's current stream (PyTorch work must run on it too)."""
    method = "cuda events"

    def __init__(self, cp, flush_bytes=256 << 20, **kw):
        super().__init__(**kw)
        self.cp = cp
        self.flush_bytes = flush_bytes
        self._flush_buf = cp.empty(flush_bytes, dtype=cp.uint8)
        self._flips = 0

    def flush_l2(self):
        self._flips ^= 1
        stream = self.cp.cuda.get_current_stream()
        self.cp.cuda.runtime.memsetAsync(self._flush_buf.data.ptr, self._flips,
                                         self.flush_bytes, stream.ptr)

    def _run(self, fn, reps):
        # The host queues repetition i+1 while the GPU still runs repetition i, and each
        # flush (about 0.1 ms on an H100) runs before its start event: host work per call
        # shorter than that (pycnn's argument checks, PyTorch's dispatch) stays outside
        # the timed window.
        cuda = self.cp.cuda
        stream = cuda.get_current_stream()
        pairs = []
        for _ in range(reps):
            self.flush_l2()
            start, end = cuda.Event(), cuda.Event()
            start.record(stream)
            fn()
            end.record(stream)
            pairs.append((start, end))
        pairs[-1][1].synchronize()
        return [cuda.get_elapsed_time(s, e) for s, e in pairs]

    def setup(self) -> dict:
        return {**super().setup(), "l2_flush_bytes": self.flush_bytes}


def copy_bandwidth(xp, timer, nbytes) -> float:
    """Device (or host) copy bandwidth in GB/s, counting bytes read + written."""
    n = nbytes // 4
    src, dst = xp.ones(n, dtype=xp.float32), xp.empty(n, dtype=xp.float32)
    if xp.__name__ == "numpy":
        stats = timer.measure(lambda: np.copyto(dst, src))
    else:
        stream = xp.cuda.get_current_stream()
        stats = timer.measure(lambda: dst.data.copy_from_device_async(src.data, n * 4, stream))
    return 2 * n * 4 / (stats["median_ms"] * 1e-3) / 1e9
