"""The benchmark harness on the CPU: shape sets, FLOP/byte formulas, the smoke run
of `pycnn bench`, and the README table generator. The GPU path (CUDA events, the
cuDNN baseline) is exercised only on a GPU machine."""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pycnn.bench import main, report, sets
from pycnn.bench.metrics import ALL_OPS, OPS, conv_shapes, op_metrics

ROOT = Path(__file__).resolve().parents[1]

# ResNet-50 v1.5's convolutions (torchvision), typed again here as the oracle:
# count x (C, H, K, R, stride); padding (R-1)/2.
RESNET50 = [(1, 3, 224, 64, 7, 2), (1, 64, 56, 64, 1, 1), (3, 64, 56, 64, 3, 1), (4, 64, 56, 256, 1, 1),
            (2, 256, 56, 64, 1, 1), (1, 256, 56, 128, 1, 1), (1, 128, 56, 128, 3, 2), (1, 256, 56, 512, 1, 2),
            (4, 128, 28, 512, 1, 1), (3, 512, 28, 128, 1, 1), (3, 128, 28, 128, 3, 1), (1, 512, 28, 256, 1, 1),
            (1, 256, 28, 256, 3, 2), (1, 512, 28, 1024, 1, 2), (6, 256, 14, 1024, 1, 1), (5, 1024, 14, 256, 1, 1),
            (5, 256, 14, 256, 3, 1), (1, 1024, 14, 512, 1, 1), (1, 512, 14, 512, 3, 2), (1, 1024, 14, 2048, 1, 2),
            (3, 512, 7, 2048, 1, 1), (2, 2048, 7, 512, 1, 1), (2, 512, 7, 512, 3, 1)]


def test_every_set_loads_with_valid_cases():
    for name in sets.SETS:
        doc = sets.load_set(name)
        assert doc["cases"], name
        for case in doc["cases"]:
            n = case.get("N", sets.batch_for(doc, 2))
            for op in OPS[case["op"]]:
                flops, nbytes = op_metrics(op, case, n)
                assert flops > 0 and nbytes > 0, (name, case["name"], op)


def test_resnet50_counts_shapes_and_flops():
    cases = sets.load_set("resnet50")["cases"]
    assert len(cases) == 23
    assert sum(c["count"] for c in cases) == 53
    got = [(c["count"], c["C"], c["H"], c["K"], c["R"], c["stride"][0]) for c in cases]
    assert sorted(got) == sorted(RESNET50)
    # Forward FLOPs per image, by hand from that list: the output side is H/stride.
    by_hand = sum(cnt * 2 * k * c * r * r * (h // s) ** 2 for cnt, c, h, k, r, s in RESNET50)
    assert by_hand == 8_174_272_512
    from_file = sum(c["count"] * op_metrics("conv_fwd", c, 1)[0] for c in cases)
    assert from_file == by_hand
    assert from_file == pytest.approx(8.17e9, rel=0.02)     # the commonly quoted ~4.1 GMAC, FC excluded


def test_output_sizes_agree_with_the_networks():
    # ResNet-50 and VGG-16 pad to keep H/stride: P = Q = H / stride.
    for name in ("resnet50", "vgg16", "small"):
        for c in sets.load_set(name)["cases"]:
            _, _, (_, k, p, q) = conv_shapes(c, 1)
            assert (k, p, q) == (c["K"], c["H"] // c["stride"][0], c["W"] // c["stride"][1]), c["name"]
    # DeepBench's first speech layer (700 wide, 161 high, 5 high x 20 wide filter,
    # stride 2) feeds its next listed layer, 341 wide and 79 high.
    first = sets.load_set("deepbench")["cases"][0]
    assert (first["R"], first["S"], first["W"], first["H"]) == (5, 20, 700, 161)
    assert conv_shapes(first, 4)[2] == (4, 32, 79, 341)


def test_other_sets_have_the_documented_cases():
    vgg = sets.load_set("vgg16")["cases"]
    assert (len(vgg), sum(c["count"] for c in vgg)) == (9, 13)
    dw = sets.load_set("depthwise")["cases"]
    assert sum(c["groups"] == c["C"] == c["K"] for c in dw) == 8
    assert sorted(c["groups"] for c in dw if c["groups"] != c["C"]) == [32, 32]
    small = sets.load_set("small")
    assert sets.batch_for(small, 64) == 1 and len(small["cases"]) == 23
    assert sets.batch_for(sets.load_set("deepbench"), None) == 16
    assert sets.batch_for(sets.load_set("resnet50"), None) == 32
    assert sets.batch_for(sets.load_set("resnet50"), 8) == 8


def test_conv_flops_and_bytes_by_hand():
    # N=2, C=4, 5x5, K=6, 3x3, stride 1, pad 1 -> P=Q=5.
    case = {"op": "conv", "C": 4, "H": 5, "W": 5, "K": 6, "R": 3, "S": 3, "stride": (1, 1),
            "padding4": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    flops = 2 * 2 * 6 * 4 * 9 * 25                      # 21600
    x, w, y = 2 * 4 * 25, 6 * 4 * 9, 2 * 6 * 25           # 200, 216, 300 elements
    for op in ("conv_fwd", "conv_bwd_data", "conv_bwd_filter"):
        assert op_metrics(op, case, 2) == (21600, 4 * (x + w + y)) == (flops, 2864)
    # groups=2 halves the work and the weight: w is 6 x 2 x 3 x 3.
    grouped = dict(case, groups=2)
    assert op_metrics("conv_fwd", grouped, 2) == (10800, 4 * (200 + 108 + 300))
    # stride 2, no padding on 7x7 with 3x3: P = Q = floor((7 - 3) / 2) + 1 = 3.
    strided = dict(case, H=7, W=7, stride=(2, 2), padding4=(0, 0, 0, 0))
    assert op_metrics("conv_fwd", strided, 1)[0] == 2 * 1 * 6 * 4 * 9 * 9


def test_pool_and_activation_bytes_by_hand():
    pool = {"op": "max_pool", "C": 1, "H": 8, "W": 8, "kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    # 8x8 -> 4x4; forward reads 64 floats, writes 16 floats and 16 int64 indices.
    assert op_metrics("max_pool_fwd", pool, 1) == (16 * 9, 4 * (64 + 16) + 8 * 16)
    assert op_metrics("max_pool_bwd", pool, 1) == (16, 4 * (16 + 64) + 8 * 16)
    act = {"op": "act", "C": 2, "H": 3, "W": 3}
    assert op_metrics("relu_fwd", act, 2) == (36, 4 * 72)
    assert op_metrics("tanh_bwd", act, 2) == (36, 4 * 108)
    assert op_metrics("bias_relu_fwd", dict(act, op="bias_relu"), 2) == (72, 4 * (72 + 2))
    gap = {"op": "global_avg_pool", "C": 3, "H": 7, "W": 7}
    assert op_metrics("gap_fwd", gap, 2) == (294, 4 * (294 + 6))


def test_bad_input_names_the_argument(tmp_path, capsys):
    with pytest.raises(ValueError, match="set: expected one of"):
        sets.load_set("alexnet")
    with pytest.raises(FileNotFoundError, match="--shapes-dir"):
        sets.shapes_dir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(
        {"name": "tiny", "description": "", "source": "", "cases": [{"op": "fft", "name": "x"}]}))
    with pytest.raises(ValueError, match="op: expected one of"):
        sets.load_set("tiny", tmp_path)
    with pytest.raises(SystemExit):
        main(["--ops", "conv_fwd,conv_sideways"])
    with pytest.raises(SystemExit):
        main(["--batch", "0"])
    for bad in ("0", "-1", "fast"):
        with pytest.raises(SystemExit):
            main(["--min-time", bad])
    assert "--min-time: expected a positive number, got 'fast'" in capsys.readouterr().err


def test_cpu_smoke_run_writes_json_markdown_and_png(tmp_path, capsys):
    assert main(["--set", "tiny", "--device", "cpu", "--reps", "2", "--out", str(tmp_path)]) == 0
    assert "no GPU baseline available" in capsys.readouterr().out
    stem = tmp_path / "bench-tiny-cpu-b2"
    result = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = stem.with_suffix(".md").read_text()
    assert "| conv_fwd | pycnn |" in md and "> 1 means pycnn is faster" in md
    assert result["device"] == "cpu" and result["backend"] == "pycnn.backends.numpy_ref"
    assert result["batch"] == 2 and result["env"]["gpu"] is None and result["baseline_library"] is None
    for key in ("python", "numpy", "git_commit", "timestamp"):
        assert key in result["env"]
    assert result["roofline"]["copy_bandwidth_gbps"] > 0
    assert {r["op"] for r in result["results"]} == set(ALL_OPS)
    for r in result["results"]:
        assert r["error"] is None, r
        assert r["time"]["reps"] == 2 and 0 < r["time"]["min_ms"] <= r["time"]["median_ms"]
        assert r["baseline"] is None and r["ratio_default"] is None and r["max_rel_err"] is None
        assert r["tflops"] == pytest.approx(r["flops"] / (r["time"]["median_ms"] * 1e-3) / 1e12)
    assert {s["op"] for s in result["summary"]} == set(ALL_OPS)


def test_cpu_run_honours_ops_and_batch(tmp_path):
    main(["--set", "resnet50", "--device", "cpu", "--reps", "1", "--ops", "relu_fwd,conv_fwd",
          "--batch", "3", "--out", str(tmp_path)])
    # without a GPU any set falls back to tiny
    result = json.loads((tmp_path / "bench-tiny-cpu-b3.json").read_text())
    assert {r["op"] for r in result["results"]} == {"relu_fwd", "conv_fwd"}
    assert {r["N"] for r in result["results"]} == {3}


def test_a_run_stopped_by_sigterm_writes_what_it_measured(tmp_path, monkeypatch, capsys):
    # `timeout` ends a GPU session's bench step with SIGTERM: the finished cases must
    # still reach the files, marked incomplete, and the exit status must say so.
    import os
    import signal

    from pycnn.bench import harness, timing
    real_run_op, real_run, seen = harness._run_op, timing.CpuTimer._run, []

    def run_op(op, case, *args):
        if case["name"] not in seen:
            seen.append(case["name"])
        return real_run_op(op, case, *args)

    def run(self, fn, reps):      # the signal lands while a call is timed, as it will on a GPU
        if len(seen) == 3 and not getattr(run, "sent", False):
            run.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return real_run(self, fn, reps)

    monkeypatch.setattr(harness, "_run_op", run_op)
    monkeypatch.setattr(timing.CpuTimer, "_run", run)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["--set", "tiny", "--device", "cpu", "--reps", "1", "--out", str(tmp_path)]) == 1
    assert signal.getsignal(signal.SIGTERM) is before, "the handler is restored"
    assert "stopped by SIGTERM after 2 of 9 cases" in capsys.readouterr().out
    stem = tmp_path / "bench-tiny-cpu-b2"
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["complete"] is False and "after 2 of 9 cases" in result["stopped"]
    assert [c for c in dict.fromkeys(r["case"] for r in result["results"])] == seen[:2]
    assert "**incomplete**" in stem.with_suffix(".md").read_text()
    assert stem.with_suffix(".png").exists()


def test_a_run_cut_short_by_an_error_writes_what_it_measured(tmp_path, monkeypatch, capsys):
    # After a kernel fault every CUDA call fails, building the next case's inputs too:
    # the cases measured before it must still reach the files.
    from pycnn.bench import harness
    real_build, seen = harness.build, []

    def build(op, case, *args):
        seen.append(case["name"])
        if len(set(seen)) == 4:
            raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
        return real_build(op, case, *args)

    monkeypatch.setattr(harness, "build", build)
    assert main(["--set", "tiny", "--device", "cpu", "--reps", "1", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "stopped by RuntimeError: cudaErrorIllegalAddress" in out and "after 3 of 9 cases" in out
    result = json.loads((tmp_path / "bench-tiny-cpu-b2.json").read_text())
    assert result["complete"] is False and len({r["case"] for r in result["results"]}) == 3


def _row(op, impl, default, autotuned, tf32=None, ok=True, error=None):
    return {"op": op, "impl": impl, "ratio_default": default, "ratio_autotuned": autotuned,
            "ratio_tf32": tf32, "ok": ok, "error": error}


def _readme_table():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "bench" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_geometric_means(tmp_path):
    rows = [_row("conv_fwd", "pycnn", 2.0, 1.0, 0.5), _row("conv_fwd", "pycnn", 0.5, 0.25, 0.125),
            _row("conv_fwd", "pycnn", 8.0, 4.0, 2.0),
            _row("conv_fwd", "pycnn", 100.0, 100.0, ok=False),        # wrong result: not counted
            _row("conv_fwd", "pycnn v01", 0.1, 0.1),                  # a version: not in the README
            _row("relu_fwd", "pycnn", 1.5, None), _row("relu_fwd", "pycnn", 6.0, None)]
    fake = {"device": "cuda", "baseline_library": "PyTorch", "set": "resnet50", "batch": 32,
            "precision": "fp32 FFMA, TF32 off", "env": {"gpu": "NVIDIA H100 80GB HBM3", "git_commit": "abc"},
            "results": rows}
    (tmp_path / "bench-resnet50-h100-b32.json").write_text(json.dumps(fake))
    (tmp_path / "bench-tiny-cpu-b2.json").write_text(json.dumps(dict(fake, device="cpu")))
    rt = _readme_table()
    results = rt.load_results(tmp_path)
    assert len(results) == 1
    text = rt.table(results)
    # conv: cbrt(2 * 0.5 * 8) = 2, cbrt(1 * 0.25 * 4) = 1 and cbrt(0.5 * 0.125 * 2) = 0.5;
    # relu: sqrt(1.5 * 6) = 3, and no autotuned or TF32 mode
    assert "| conv_fwd | 2.00 | 1.00 | 0.50 | 3 (1 failed) | the default |" in text
    assert "| relu_fwd | 3.00 | - | - | 2 | the default |" in text
    assert "fp32 FFMA, TF32 off" in text
    assert "pycnn v01" not in text and "NVIDIA H100 80GB HBM3" in text and "partial" not in text
    cut = dict(fake, complete=False, stopped="stopped by SIGTERM after 18 of 23 cases")
    cut_text = rt.table([cut])
    assert "| resnet50 (partial) |" in cut_text and "after 18 of 23 cases" in cut_text
    summary = {(s["op"], s["impl"]): s for s in report.summarize(rows)}
    assert math.isclose(summary["conv_fwd", "pycnn"]["geomean_ratio_default"], 2.0)

    readme = tmp_path / "README.md"
    readme.write_text(f"# pycnn\nintro\n{rt.START}\nold table\n{rt.END}\ntail\n")
    assert rt.main(["--write", "--results", str(tmp_path), "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith(f"# pycnn\nintro\n{rt.START}\n| set |") and new.endswith(f"{rt.END}\ntail\n")
    assert "old table" not in new

    empty = tmp_path / "none"
    empty.mkdir()
    assert rt.main(["--write", "--results", str(empty), "--readme", str(readme)]) == 0
    assert "No GPU results are committed yet" in readme.read_text()
    readme.write_text("no markers\n")
    assert rt.main(["--write", "--results", str(empty), "--readme", str(readme)]) == 1
    assert readme.read_text() == "no markers\n"


def test_shape_classes_of_the_sets():
    from pycnn.bench.metrics import shape_class
    classes = {shape_class(c) for c in sets.load_set("resnet50")["cases"]}
    assert classes == {"7x7 strided", "1x1", "3x3", "3x3 strided", "1x1 strided"}
    depthwise = {shape_class(c) for c in sets.load_set("depthwise")["cases"]}
    assert "depthwise" in depthwise and "depthwise strided" in depthwise
    assert shape_class(sets.load_set("poolact")["cases"][0]) is None
    dilated = dict(sets.load_set("resnet50")["cases"][2], dilation=(2, 2), groups=4)
    assert shape_class(dilated) == "grouped dilated"


def _timed(case, op, klass, impl, ms, runs=None, ok=True, autotuned=None):
    return {"case": case, "op": op, "shape_class": klass, "impl": impl, "runs": runs, "ok": ok,
            "error": None, "time": {"median_ms": ms}, "ratio_autotuned": autotuned}


def test_versions_by_shape_class_compare_each_version_with_the_default():
    rows = [_timed("a", "conv_bwd_data", "3x3 strided", "pycnn", 2.0, runs=11, autotuned=0.5),
            _timed("a", "conv_bwd_data", "3x3 strided", "pycnn v03", 4.0),
            _timed("a", "conv_bwd_data", "3x3 strided", "pycnn v09 3xTF32", 1.0),
            _timed("b", "conv_bwd_data", "3x3 strided", "pycnn", 8.0, runs=11, autotuned=2.0),
            _timed("b", "conv_bwd_data", "3x3 strided", "pycnn v03", 8.0),
            _timed("b", "conv_bwd_data", "3x3 strided", "pycnn v09 3xTF32", 1.0, ok=False),
            _timed("c", "conv_bwd_data", "3x3", "pycnn", 1.0, runs=3),
            _timed("c", "relu_fwd", None, "pycnn", 1.0)]
    classes = {(c["op"], c["shape_class"]): c for c in report.by_shape_class(rows)}
    assert set(classes) == {("conv_bwd_data", "3x3 strided"), ("conv_bwd_data", "3x3")}
    strided = classes["conv_bwd_data", "3x3 strided"]
    assert strided["cases"] == 2 and strided["default_runs"] == [11]
    assert math.isclose(strided["geomean_ratio_autotuned"], 1.0)          # sqrt(0.5 * 2)
    v09, v03 = strided["versions"]                                        # fastest first
    assert v09["impl"] == "pycnn v09 3xTF32" and v09["cases"] == 1 and v09["failed"] == 1
    assert math.isclose(v09["vs_default"], 2.0)                           # the failed case not counted
    assert math.isclose(v03["vs_default"], math.sqrt(0.5 * 1.0))
    assert classes["conv_bwd_data", "3x3"]["versions"] == []
    result = {"set": "s", "batch": 2, "backend": "b", "precision": "fp32", "baseline_library": None,
              "ratio": "r", "tolerance": 1e-4, "timing": {"method": "m"},
              "roofline": {"peak_fp32_tflops": None, "copy_bandwidth_gbps": 1.0},
              "env": {"gpu": "g", "timestamp": "now"}, "results": [], "summary": [],
              "by_shape_class": list(classes.values())}
    md = report.markdown(result)
    assert "| conv_bwd_data | 3x3 strided | 2 | v11 | 1.00 | v09 3xTF32 2.00 (1 failed), v03 0.71 |" in md
    assert "| conv_bwd_data | 3x3 | 1 | v03 | - | - |" in md
    assert "Kernel versions by shape class" not in report.markdown(dict(result, by_shape_class=[]))


def test_a_call_slower_than_slow_s_is_timed_once_by_its_first_call():
    from pycnn.bench.timing import CpuTimer
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.03)

    stats = CpuTimer(slow_s=0.01).measure(slow)
    assert len(calls) == 1 and stats["reps"] == 1 and stats["median_ms"] >= 30
    calls.clear()
    stats = CpuTimer(slow_s=1.0, warmup=3, reps=4).measure(slow)
    assert len(calls) == 3 + 4 and stats["reps"] == 4  # below slow_s: warm-ups, then the reps


def test_repetitions_fill_min_time_but_a_slow_call_stops_at_max_time():
    from pycnn.bench.timing import repetitions
    args = dict(min_reps=20, min_time=0.2, max_reps=2000, max_time=2.0, floor_reps=5)
    assert repetitions(0.001, **args) == 2000      # 200 000 wanted, capped by max_reps
    assert repetitions(0.5, **args) == 400         # 0.2 s / 0.5 ms
    assert repetitions(50.0, **args) == 20         # min_reps: 1 s, under max_time
    assert repetitions(200.0, **args) == 10        # 20 would take 4 s: 2 s / 200 ms
    assert repetitions(1500.0, **args) == 5        # floor_reps even past max_time


# ------------------------------------------------------------------ the baseline's calls
# The cuDNN side of every benchmark problem is a PyTorch call (aten backward ops with
# long positional signatures). PyTorch's CPU build runs the same calls, so where
# PyTorch is installed they are checked here, on every case of every set at batch 1,
# against pycnn's NumPy reference: a wrong argument in a baseline call shows up now,
# not as a "FAILED" row in the first GPU run.

@pytest.mark.parametrize("name", sets.SETS)
def test_baseline_calls_agree_with_the_reference_on_every_case(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the CPU build suffices)")
    import numpy as np
    from pycnn.backends import numpy_ref
    from pycnn.bench.harness import rel_err
    from pycnn.bench.ops import build, first
    for case in sets.load_set(name)["cases"]:
        for op in OPS[case["op"]]:
            problem = build(op, case, 1, numpy_ref, np)
            ours = first(problem.ours(numpy_ref))
            theirs = problem.theirs(torch)().numpy()
            assert rel_err(np, ours, theirs) <= 1e-4, (case["name"], op)


def test_force_fp32_turns_tf32_off_with_the_installed_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the CPU build suffices)")
    from pycnn.bench.harness import force_fp32
    settings = force_fp32(torch)
    assert force_fp32(torch) == settings          # twice in one process must not raise
    if settings["api"] == "fp32_precision":
        assert settings["cudnn.conv.fp32_precision"] == "ieee"
    else:
        assert settings["cudnn.allow_tf32"] is False


# ------------------------------------------------------------ the baseline path, on the CPU
# On a GPU, _run_op checks pycnn against cuDNN and times cuDNN in three modes on
# their own threads. PyTorch's CPU build takes every call and flag involved, so the
# whole path (modes, threads, ratios, the files written) runs here with NumPy in
# CuPy's place and the CPU PyTorch in cuDNN's.

def _cpu_baseline(torch):
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from pycnn.backends import numpy_ref
    from pycnn.bench import harness
    from pycnn.bench.timing import CpuTimer

    class CpuBaseline(harness.Gpu):
        def __init__(self):     # no CuPy stream: only the streams are GPU-specific
            self.cp, self.be, self.torch, self.timer = None, numpy_ref, torch, CpuTimer(reps=1, warmup=1)
            self.tuners = {tf32: ThreadPoolExecutor(max_workers=1) for tf32 in (False, True)}

        def on_stream(self):
            return nullcontext()

        def free(self):
            pass
    return CpuBaseline()


def test_cudnn_mode_allows_tf32_inside_and_restores_fp32_even_on_error():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the CPU build suffices)")
    from pycnn.bench.harness import cudnn_mode, force_fp32
    fp32 = force_fp32(torch)

    def tf32_on():
        conv = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and hasattr(conv, "fp32_precision"):
            return conv.fp32_precision == "tf32"
        return torch.backends.cudnn.allow_tf32

    with pytest.raises(RuntimeError, match="inside"):
        with cudnn_mode(torch, tf32=True):
            assert torch.backends.cudnn.benchmark and tf32_on()
            raise RuntimeError("inside")
    assert not torch.backends.cudnn.benchmark and not tf32_on()
    with cudnn_mode(torch):
        assert torch.backends.cudnn.benchmark and not tf32_on()
    assert force_fp32(torch) == fp32


def test_baseline_path_times_three_cudnn_modes_and_writes_their_columns(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the CPU build suffices)")
    import numpy as np
    from pycnn.backends import numpy_ref
    from pycnn.bench import harness
    from pycnn.bench.metrics import CONV_OPS
    harness.force_fp32(torch)
    gpu = _cpu_baseline(torch)
    roof = {"peak_fp32_tflops": 66.9, "peak_tf32_tflops": 494.7, "copy_bandwidth_gbps": 3000.0}
    doc = sets.load_set("tiny")
    rows = harness.run_set(doc, 1, set(ALL_OPS), numpy_ref, np, gpu.timer, roof, 1e-4, gpu,
                           log=lambda line: None)
    assert {r["op"] for r in rows} == set(ALL_OPS) and {r["impl"] for r in rows} == {"pycnn"}
    for r in rows:
        assert r["error"] is None and r["baseline_error"] is None, r
        assert r["ok"] is True and r["max_rel_err"] <= 1e-5, (r["case"], r["op"])
        assert r["ratio_default"] == pytest.approx(
            r["baseline"]["time"]["median_ms"] / r["time"]["median_ms"])
        conv = r["op"] in CONV_OPS
        for key in ("baseline_autotuned", "baseline_tf32", "ratio_autotuned", "ratio_tf32"):
            assert (r[key] is not None) == conv, (r["op"], key)
        if conv:     # no TF32 on a CPU: the "TF32" result is the fp32 one
            assert r["baseline_tf32_rel_err"] <= 1e-6
            assert r["ratio_tf32"] == pytest.approx(
                r["baseline_tf32"]["time"]["median_ms"] / r["time"]["median_ms"])
            assert r["baseline_tf32"]["roof_fraction"] < r["baseline_autotuned"]["roof_fraction"] * 494.7
    assert not torch.backends.cudnn.benchmark, "every mode hands back the fp32 heuristic"

    summary = {(s["op"], s["impl"]): s for s in report.summarize(rows)}
    assert summary["conv_fwd", "pycnn"]["geomean_ratio_tf32"] is not None
    assert summary["relu_fwd", "pycnn"]["geomean_ratio_tf32"] is None
    result = {"set": "tiny", "batch": 1, "device": "cuda", "backend": "cpu stand-in",
              "precision": "fp32", "baseline_library": "PyTorch (CPU)", "ratio": harness.RATIO,
              "tolerance": 1e-4, "timing": gpu.timer.setup(), "roofline": roof,
              "env": {"gpu": "test", "timestamp": "now", "git_commit": "abc"},
              "results": rows, "summary": report.summarize(rows)}
    md_path = report.write_all(result, tmp_path)[1]
    md = md_path.read_text()
    assert "| geomean TF32 / pycnn |" in md and "| TF32 ms (its err) | x TF32 |" in md
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| case |"))
    case_lines = lines[at + 2:]
    assert len(case_lines) == len(rows)
    for line in case_lines:     # every case row has the header's columns
        assert line.count("|") == lines[at].count("|"), line
    rt = _readme_table()
    assert "| cuDNN TF32 / pycnn |" in rt.table([result])


def test_a_tree_without_git_takes_its_commit_from_the_environment(tmp_path, monkeypatch):
    # the GPU machine gets a copy of the working tree without .git: gpu_session.sh's
    # caller passes the commit, or the records would name none
    from pycnn import paths, verify
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("PYCNN_COMMIT", raising=False)
    assert paths.git_commit(tmp_path) == (None, None)
    assert verify.git_commit(tmp_path)["commit"] is None
    monkeypatch.setenv("PYCNN_COMMIT", "0123abc")
    assert paths.git_commit(tmp_path) == ("0123abc", None)
    assert paths.git_commit(None) == ("0123abc", None), "an installed package has no git of its own"
    assert verify.git_commit(tmp_path)["commit"] == "0123abc"
    # given, it wins over git: a GPU machine's copy of the tree carried a .git older than
    # its files, whose HEAD named the wrong commit
    assert paths.git_commit(ROOT) == ("0123abc", None)
    monkeypatch.delenv("PYCNN_COMMIT")
    assert paths.git_commit(ROOT)[0] not in (None, "0123abc")


def test_an_installed_package_finds_its_shapes_and_writes_to_the_current_folder(tmp_path, monkeypatch):
    # site-packages/pycnn has no kernels/ or bench/ beside it: the shape sets are the
    # packaged copy, results go to ./pycnn-results (never into site-packages), and the
    # verification record names no kernel sources it does not have
    from pycnn import paths, verify
    package = tmp_path / "site-packages" / "pycnn"
    (package / "bench" / "shapes").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert paths.checkout(package) is None
    assert paths.shapes_dir(package) == package / "bench" / "shapes"
    assert paths.results_dir(package) == tmp_path / "pycnn-results"
    # the checkout this test runs from
    assert paths.checkout() == ROOT
    assert paths.shapes_dir() == ROOT / "bench" / "shapes"
    assert paths.results_dir() == ROOT / "bench" / "results"
    monkeypatch.setattr(paths, "checkout", lambda package=None: None)
    assert verify.kernels_hash() is None
    assert verify.kernels_newer_than_extension() == []


def test_a_regular_install_carries_the_shape_sets(tmp_path):
    # setup.py's build_py puts a copy of bench/shapes/*.json into pycnn/bench/shapes/,
    # so `pycnn bench` runs from a wheel or `pip install .`
    pytest.importorskip("setuptools", reason="setup.py needs setuptools (a Python 3.12+ venv has none)")
    env = dict(os.environ, PYCNN_CUDA="0")
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    copied = sorted(p.name for p in (tmp_path / "pycnn" / "bench" / "shapes").glob("*.json"))
    assert copied == sorted(p.name for p in (ROOT / "bench" / "shapes").glob("*.json"))
    assert len(sets.load_set("resnet50", tmp_path / "pycnn" / "bench" / "shapes")["cases"]) > 10


def test_generated_tables_are_in_step_with_the_committed_records():
    # kernels/README.md's ladder and the README's GPU table are written from bench/results/
    # by their scripts; a record changed without them (or a hand edit) shows here
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import kernel_table
        import ladder_table
        import readme_table as rt
    finally:
        sys.path.pop(0)
    res = ROOT / "bench" / "results"
    static = json.loads((res / "static-counters.json").read_text())
    bench = json.loads((res / "bench-resnet50-h200-b32.json").read_text())
    pytest.importorskip("cupy")
    body = ladder_table.table(static, bench, ladder_table.defaults())
    kernels_readme = (ROOT / "kernels" / "README.md").read_text()
    assert rt.replace_between_markers(kernels_readme, body, (ladder_table.START, ladder_table.END)) \
        == kernels_readme, "kernels/README.md's ladder is stale: run python bench/ladder_table.py --write"
    rows = json.loads((res / "kernel-counters.json").read_text())["rows"]
    assert rt.replace_between_markers(kernels_readme, kernel_table.table(rows),
                                      (kernel_table.START, kernel_table.END)) == kernels_readme, \
        "kernels/README.md's kernel table is stale: run python bench/kernel_table.py --from-json --write"
    assert len(rows) == len(kernel_table.ROWS) and all(r["launches"] for r in rows)
    readme = (ROOT / "README.md").read_text()
    assert rt.replace_between_markers(readme, rt.table(rt.load_results(res))) == readme, \
        "README's GPU table is stale: run python bench/readme_table.py --write"
