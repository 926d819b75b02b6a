"""The autotuner (pycnn/backends/cuda/tune.py) without a GPU: a fake timer stands in
for the CUDA events, so what is tested is the choice, the cache and its sharing
between processes; tests/test_gpu.py runs the real timer."""
import json
import multiprocessing
import os

import pytest

cp = pytest.importorskip("cupy")
try:
    from pycnn.backends.cuda import conv, tune
except ImportError as exc:                         # no extension built
    pytest.skip(f"the CUDA backend does not import here ({exc})", allow_module_level=True)

GPU = "NVIDIA Test GPU"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv("PYCNN_TUNE_CACHE", str(path))
    monkeypatch.delenv("PYCNN_TUNE", raising=False)
    tune._memo.clear()
    tune._refreshed.clear()
    yield path
    tune._memo.clear()
    tune._refreshed.clear()


class FakeTimer:
    """ms per version; records what it timed; a version in ``fail`` raises."""

    def __init__(self, ms, fail=()):
        self.ms, self.fail, self.timed = ms, set(fail), []

    def __call__(self, fn):
        return fn()

    def run(self, v):
        self.timed.append(v)
        if v in self.fail:
            raise RuntimeError(f"conv2d_fwd{v}: too many resources requested for launch")
        return self.ms[v]


def _choose(timer, key="fwd|x1", heuristic=2, candidates=(2, 7, 8)):
    return tune.choose(key, heuristic, candidates, timer.run, gpu_name=GPU, timer=timer)


def test_pick_keeps_the_heuristic_unless_a_version_beats_it_by_the_margin():
    assert tune.pick({2: 1.0, 7: 0.5, 8: 0.6}, 2) == 7
    assert tune.pick({2: 1.0, 7: 0.98}, 2) == 2              # 2% faster: noise at 3 reps
    assert tune.pick({2: 1.0, 7: 0.96}, 2) == 7
    assert tune.pick({2: 1.0, 7: None}, 2) == 2              # a failed version is never kept
    assert tune.pick({2: None, 7: None}, 2) == 2
    assert tune.pick({7: 0.5, 8: 0.5}, 2) == 7               # ties: the lower version


def test_the_first_call_times_every_candidate_and_the_cache_answers_later_processes(cache):
    timer = FakeTimer({2: 0.30, 7: 0.21, 8: 0.25})
    assert _choose(timer) == 7
    assert sorted(timer.timed) == [2, 7, 8]
    entry = json.loads(cache.read_text())["entries"]["fwd|x1"]
    assert entry["version"] == 7 and entry["heuristic"] == 2
    assert entry["times_ms"] == {"2": 0.30, "7": 0.21, "8": 0.25}
    assert tune.why(entry).startswith("v7: fastest, over the heuristic v2 (v2 0.300 ms, v7 0.210 ms")
    again = FakeTimer({})
    assert _choose(again) == 7 and again.timed == []         # this process: the memo
    tune._memo.clear()                                       # a new process: the file
    assert _choose(again) == 7 and again.timed == []
    assert _choose(FakeTimer({2: 0.3, 7: 0.9}), key="fwd|x2", candidates=(2, 7)) == 2   # its own entry
    assert set(tune.load(cache)) == {"fwd|x1", "fwd|x2"}


def test_refresh_times_again_once_per_shape_and_off_never_times(cache, monkeypatch):
    _choose(FakeTimer({2: 0.3, 7: 0.2, 8: 0.25}))
    monkeypatch.setenv("PYCNN_TUNE", "refresh")
    timer = FakeTimer({2: 0.3, 7: 0.4, 8: 0.1})
    assert _choose(timer) == 8 and len(timer.timed) == 3
    assert _choose(timer) == 8 and len(timer.timed) == 3     # once per process
    assert tune.load(cache)["fwd|x1"]["version"] == 8
    monkeypatch.setenv("PYCNN_TUNE", "0")
    never = FakeTimer({})
    assert _choose(never, heuristic=2) == 2 and never.timed == []
    monkeypatch.setenv("PYCNN_TUNE", "sometimes")
    with pytest.raises(ValueError, match="PYCNN_TUNE: expected 1, 0 or refresh .*'sometimes'"):
        _choose(never)


def test_a_version_that_fails_is_skipped_and_a_failing_default_is_left_to_the_call(cache):
    timer = FakeTimer({2: 0.3, 7: 0.2, 8: 0.1}, fail={8})
    assert _choose(timer) == 7
    assert tune.lookup("fwd|x1", GPU)["times_ms"]["8"] is None
    # the default fails: it is returned (the call then runs it and raises its own error),
    # and nothing is stored
    assert _choose(FakeTimer({7: 0.2, 8: 0.1}, fail={2}), key="fwd|x3") == 2
    assert "fwd|x3" not in tune.load(cache)


def test_a_timer_that_cannot_start_falls_back_to_the_heuristic_with_one_warning(monkeypatch):
    def broken():
        raise RuntimeError("no events here")
    monkeypatch.setattr(tune, "_GpuTimer", broken)
    monkeypatch.setattr(tune, "_capturing", lambda: False)
    tune._warned.clear()
    with pytest.warns(RuntimeWarning, match="the tuner cannot time on this GPU .*no events here"):
        assert tune.choose("fwd|x9", 2, (2, 7), lambda v: None, gpu_name=GPU) == 2


def test_one_candidate_is_not_timed_and_a_stale_entry_is_timed_again(cache):
    never = FakeTimer({})
    assert _choose(never, candidates=(1,), heuristic=1) == 1 and never.timed == []
    _choose(FakeTimer({2: 0.3, 7: 0.2, 8: 0.25}))
    tune._memo.clear()
    timer = FakeTimer({2: 0.3, 8: 0.25})                     # 7 no longer eligible here
    assert _choose(timer, candidates=(2, 8)) == 8 and sorted(timer.timed) == [2, 8]


def test_a_corrupt_cache_is_set_aside_and_rebuilt(cache):
    cache.write_text("{not json")
    assert _choose(FakeTimer({2: 0.3, 7: 0.2, 8: 0.25})) == 7
    assert json.loads(cache.read_text())["entries"]["fwd|x1"]["version"] == 7
    assert (cache.parent / "tuning.json.bad").read_text() == "{not json"


def _store_many(path, rank, count):
    for i in range(count):
        tune.store(path, f"key-{rank}-{i}", {"version": rank, "heuristic": 2, "times_ms": {}})


def test_concurrent_processes_lose_no_entry(cache):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_store_many, args=(cache, rank, 25)) for rank in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = tune.load(cache)
    assert len(entries) == 100 and entries["key-3-24"]["version"] == 3
    assert not [p for p in os.listdir(cache.parent) if p.endswith(".tmp")]


def test_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PYCNN_TUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tune.cache_path("NVIDIA H200") == tmp_path / "xdg" / "pycnn" / "tuning-nvidia-h200.json"


def test_the_candidates_of_a_shape(monkeypatch):
    monkeypatch.setattr(conv, "compute_capability", lambda: 90)
    dense, dw = (2, 64, 14, 14), (2, 64, 14, 14)
    assert conv.tuning_candidates("fwd", dense, (64, 64, 3, 3), (1, 1), 1) == [2, 7, 8, 12, 13]
    assert conv.tuning_candidates("bwd_data", dense, (64, 64, 3, 3), (2, 2), 1) == [3, 9, 11, 14, 17]
    assert conv.tuning_candidates("bwd_filter", dense, (64, 64, 3, 3), (1, 1), 1) == [4, 10, 15, 16]
    assert conv.tuning_candidates("fwd", dw, (64, 1, 3, 3), (1, 1), 64) == [1, 2, 6, 7, 8, 12, 13]
    # too many groups x phases for the phased versions' grid: 3 is the default, 11, 14, 17 are not timed
    many = conv.tuning_candidates("bwd_data", (1, 40000, 9, 9), (20000, 2, 1, 1), (2, 2), 20000)
    assert 3 in many and not {11, 14, 17} & set(many)
    assert conv.tuning_candidates("fwd", (1, 2, 4, 4), (65535 * 64 + 1, 2, 1, 1), (1, 1), 1) == [1]
    monkeypatch.setattr(conv, "compute_capability", lambda: 75)   # no TF32 tensor cores
    assert conv.tuning_candidates("fwd", dense, (64, 64, 3, 3), (1, 1), 1) == [2, 7, 12]
    key = conv.tuning_key("bwd_filter", dense, (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "atomic")
    assert key == "bwd_filter|x2x64x14x14|w64x64x3x3|s1x1|p1x1x1x1|d1x1|g1|float32|atomic"


@pytest.mark.gpu
def test_the_real_timer_tunes_a_convolution_on_the_gpu(cache):
    import pycnn
    if not pycnn.cuda_available():
        pytest.skip(f"GPU tests need a GPU: the cuda backend is {pycnn.cuda_status()}")
    import numpy as np
    from pycnn.backends import numpy_ref as ref
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 14, 14)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    y = conv.conv2d_fwd(cp.asarray(x), cp.asarray(w), None, *geometry)   # the first call tunes
    np.testing.assert_allclose(cp.asnumpy(y), ref.conv2d_fwd(x, w, None, *geometry), rtol=1e-4, atol=1e-3)
    version, entry = conv.chosen_version("fwd", x.shape, w.shape, *geometry)
    assert entry is not None and version == entry["version"] in (2, 7, 8)
    assert all(t is not None and t > 0 for t in entry["times_ms"].values()), entry
    assert tune.load(cache)               # written to the cache file


_KILL_MID_WRITE = """
import json, os, sys
from pycnn.backends.cuda import tune
real = json.dump
def dump_then_die(obj, f, **kw):
    f.write(json.dumps(obj)[:40])            # half an entry on disk, then the process is gone
    f.flush()
    os.kill(os.getpid(), 9)
json.dump = dump_then_die
tune.store(sys.argv[1], "killed-key", {"version": 8, "heuristic": 2, "times_ms": {}})
"""


def test_a_process_killed_mid_write_leaves_the_last_whole_cache(cache):
    import subprocess
    import sys
    tune.store(cache, "kept", {"version": 7, "heuristic": 2, "times_ms": {"7": 0.1}})
    done = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(cache)], capture_output=True,
                          timeout=120)
    assert done.returncode == -9
    assert [p.name for p in cache.parent.glob("tuning.json.*.tmp")]        # its half-written file
    assert tune.load(cache) == {"kept": {"version": 7, "heuristic": 2, "times_ms": {"7": 0.1}}}
    tune.store(cache, "next", {"version": 2, "heuristic": 2, "times_ms": {}})
    assert set(tune.load(cache)) == {"kept", "next"}
    assert not list(cache.parent.glob("tuning.json.*.tmp"))                 # swept under the lock
