"""The autotuner: which kernel version runs a convolution pass, chosen by timing on the
GPU it runs on, and remembered across processes.

Which version is fastest depends on the GPU and the shape (bench/results/ shows forward
version 7 ahead of 2 on most ResNet-50 layers of an H200 and 8 ahead at batch 1), so the
choice is made where the kernels run. On the first call of a pass for a (GPU, shape,
dtype) without ``version=``, ``choose`` runs every eligible version once to warm it up,
then three times more, each behind a write of twice the L2 cache (so no run finds its
operands cached by the previous one), and keeps the fastest median. A version within 3%
of the heuristic default does not displace it: three short runs cannot separate closer
figures, and a choice that flips between processes is worse than a slightly slower one.

The choice goes into an on-disk cache, ``~/.cache/pycnn/tuning-<gpu>.json`` (or under
``$XDG_CACHE_HOME``; ``PYCNN_TUNE_CACHE`` names another file), and later processes read
it instead of timing again. Writes are atomic (a temporary file renamed over the cache)
and serialised by an advisory lock on ``<cache>.lock``, each merging its entry into what
is on disk, so concurrent processes (data-parallel ranks) lose no entry and never read a
torn file. A cache that does not parse is set aside as ``<cache>.bad`` and rebuilt.

``PYCNN_TUNE`` (read at each call):
    unset or 1   tune on first use, reuse the cache (the default)
    0            no timing and no cache: the heuristic defaults (``DEFAULT_VERSIONS``)
    refresh      time again once per shape in this process, overwriting the cache

Never tuned: a call inside a CUDA graph capture (timing would be captured too; the
heuristic runs), and a pass with one eligible version. Tuning never fails a call: a
version that raises while timed is recorded as failed and not kept; if the default
itself raises, nothing is stored and the call runs the default, whose error the caller
then sees; a GPU the timer cannot use gives one warning and the heuristic defaults.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import tempfile
from pathlib import Path

#: Timed runs per version after the warm-up.
REPS = 3
#: A version must beat the heuristic default's median by this factor to replace it.
MARGIN = 0.97

_memo: dict[tuple[str, str], dict] = {}        # (cache path, key) -> entry, this process
_refreshed: set[tuple[str, str]] = set()


def mode() -> str:
    """'on', 'off' or 'refresh', from PYCNN_TUNE."""
    value = os.environ.get("PYCNN_TUNE", "").strip().lower()
    if value in ("", "1", "on"):
        return "on"
    if value in ("0", "off"):
        return "off"
    if value == "refresh":
        return "refresh"
    raise ValueError(f"PYCNN_TUNE: expected 1, 0 or refresh (or unset), got {os.environ['PYCNN_TUNE']!r}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def cache_path(gpu_name: str) -> Path:
    given = os.environ.get("PYCNN_TUNE_CACHE")
    if given:
        return Path(given)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pycnn" / f"tuning-{slug(gpu_name)}.json"


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("entries", {}), dict):
            raise ValueError("not a tuning cache")
        return data.get("entries", {})
    except ValueError:
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(path.suffix + ".bad"))
        return {}


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(path: Path) -> dict:
    """Every entry in the cache file (empty if there is none)."""
    return _read(Path(path))


def store(path: Path, key: str, entry: dict) -> None:
    """Merge one entry into the cache file: under the lock, read, update, write a
    temporary file beside it and rename it over the cache."""
    path = Path(path)
    with _locked(path):
        # A temporary file present while we hold the lock is a writer's that died mid-write
        # (writers make one only under the lock): the cache beside it is the last whole one.
        for stale in path.parent.glob(path.name + ".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        entries = _read(path)
        entries[key] = entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"pycnn_tuning": 1, "entries": dict(sorted(entries.items()))}, f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def pick(times: dict, heuristic: int) -> int:
    """The version to keep from median times in ms (None: the version failed): the
    fastest, unless the heuristic default is within MARGIN of it."""
    ok = {v: t for v, t in times.items() if t is not None}
    if not ok:
        return heuristic
    best = min(ok, key=lambda v: (ok[v], v))
    if heuristic in ok and ok[best] >= ok[heuristic] * MARGIN:
        return heuristic
    return best


def why(entry: dict) -> str:
    """One line: what was timed and what was kept."""
    times = ", ".join(f"v{v} {'failed' if t is None else f'{t:.3f} ms'}"
                      for v, t in sorted(entry["times_ms"].items(), key=lambda kv: int(kv[0])))
    kept = entry["version"]
    how = ("the heuristic default" if kept == entry["heuristic"] else
           f"fastest, over the heuristic v{entry['heuristic']}")
    return f"v{kept}: {how} ({times}; median of {entry.get('reps', REPS)} after an L2 flush)"


class _GpuTimer:
    """Median ms of run() over REPS runs, each behind a write of twice the L2."""

    def __init__(self):
        import cupy as cp
        self.cp = cp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        self.flush = cp.empty(max(2 * int(props.get("l2CacheSize", 0)), 1 << 20) // 4, dtype=cp.float32)

    def __call__(self, run) -> float:
        cp = self.cp
        run()                                             # warm-up: module load, first touch
        times = []
        for _ in range(REPS):
            self.flush.fill(0)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
        return sorted(times)[len(times) // 2]


def _capturing() -> bool:
    import cupy as cp
    try:
        return bool(cp.cuda.get_current_stream().is_capturing())
    except Exception:                                      # noqa: BLE001 (older CuPy, no driver)
        return False


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        import warnings
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def choose(key: str, heuristic: int, candidates, run, *, gpu_name: str | None = None,
           timer=None) -> int:
    """The version for ``key``: from this process's memo, the cache, or timing
    ``run(version)`` for each of ``candidates`` (which include the heuristic).
    ``timer(fn) -> ms`` replaces the GPU timer (tests)."""
    candidates = sorted(set(candidates))
    how = mode()
    if how == "off" or len(candidates) <= 1 or (timer is None and _capturing()):
        return heuristic
    if gpu_name is None:
        from ._common import device_name
        gpu_name = device_name()
    path = cache_path(gpu_name)
    slot = (str(path), key)
    refresh = how == "refresh" and slot not in _refreshed
    if not refresh:
        entry = _memo.get(slot) or load(path).get(key)
        if entry is not None and entry.get("version") in candidates:
            _memo[slot] = entry
            return entry["version"]
    if timer is None:
        try:
            timer = _GpuTimer()
        except Exception as exc:                          # noqa: BLE001 (never fail a call for tuning)
            _warn_once(f"pycnn: the tuner cannot time on this GPU ({type(exc).__name__}: {exc}); "
                       "running the heuristic defaults")
            return heuristic
    times = {}
    for v in candidates:
        try:
            times[v] = float(timer(lambda v=v: run(v)))
        except Exception:                                 # noqa: BLE001 (a version that cannot run this shape)
            times[v] = None
    if times.get(heuristic) is None:
        # The default itself failed: nothing is chosen or stored, and the call runs the
        # default, so that its own error reaches the caller.
        return heuristic
    entry = {"version": pick(times, heuristic), "heuristic": heuristic,
             "times_ms": {str(v): t for v, t in times.items()}, "reps": REPS,
             "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    _memo[slot] = entry
    if how == "refresh":
        _refreshed.add(slot)
    try:
        store(path, key, entry)
    except OSError:               # a read-only home: the choice still holds in this process
        pass
    return entry["version"]


def lookup(key: str, gpu_name: str) -> dict | None:
    """The tuner's entry for ``key`` (this process's or the cache's), or None."""
    path = cache_path(gpu_name)
    return _memo.get((str(path), key)) or load(path).get(key)
