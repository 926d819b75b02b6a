"""``pycnn bench``: pycnn's kernels side by side with cuDNN (through PyTorch) on
real layer shapes; with no GPU, a smoke run of the NumPy reference.

    pycnn bench --set resnet50 --batch 32 --out bench/results
    python -m pycnn.bench --set tiny --out /tmp/bench

Writes ``bench-<set>-<gpu>-b<N>.json`` (every figure and the setup), ``.md`` (the
table) and ``.png`` (the roofline) per set. Shape sets are data: bench/shapes/.

Stopped part way (SIGTERM, as ``timeout`` sends, Ctrl-C, or an error no case
recovers from, such as a kernel fault that breaks the CUDA context), it still writes
the set's files with the cases finished so far, marked ``"complete": false``, and
exits with status 1: a long run cut short by a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import traceback
from pathlib import Path

from pycnn import paths
from pycnn.bench import sets as _sets
from pycnn.bench.metrics import ALL_OPS

__all__ = ["main"]


def _parser():
    p = argparse.ArgumentParser(prog="pycnn bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="resnet50", choices=(*_sets.SETS, "all"),
                   help="shape set ('all': every set but tiny and core, core being a sample of "
                        "resnet50 and poolact); without a GPU always tiny")
    p.add_argument("--ops", default=None,
                   help=f"comma-separated ops (default all): {', '.join(ALL_OPS)}")
    p.add_argument("--batch", type=_positive, default=None,
                   help=f"batch N (default: the set's, else {_sets.DEFAULT_BATCH}; sets that fix N ignore it)")
    p.add_argument("--out", default=None,
                   help="output folder (default on a GPU: bench/results in a source checkout, "
                        "./pycnn-results in an installed package; without a GPU, "
                        "pycnn-bench in the temporary folder, since CPU runs are not committed)")
    p.add_argument("--reps", type=_positive, default=None,
                   help="exact repetitions per timing (default adaptive: >= 20 and >= 0.2 s)")
    p.add_argument("--min-time", type=_positive_float, default=0.2,
                   help="GPU: measured seconds per timing at the least, with >= 20 repetitions "
                        "(default 0.2; a long set on a time budget can take 0.1)")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="max relative error against the baseline before a case counts as failed")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="FP32 peak for the roofline (default: looked up by GPU name)")
    p.add_argument("--shapes-dir", default=None, help="folder of the shape-set JSON files")
    return p


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _parse_ops(parser, text):
    if text is None:
        return set(ALL_OPS)
    ops = {o.strip() for o in text.split(",") if o.strip()}
    unknown = sorted(ops - set(ALL_OPS))
    if unknown or not ops:
        parser.error(f"--ops: expected a comma-separated list of {', '.join(ALL_OPS)}, got {text!r}")
    return ops


class Stopped(BaseException):
    """SIGTERM arrived: finish the files of the set in progress, then exit 1. A
    BaseException, like KeyboardInterrupt, so that the harness's ``except Exception``
    (which records a failing call and goes on) lets it through."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv=None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)          # only the main thread may take signals
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv=None) -> int:
    from pycnn.bench import harness, report, roofline, timing

    parser = _parser()
    args = parser.parse_args(argv)
    ops = _parse_ops(parser, args.ops)
    names = [s for s in _sets.SETS if s not in ("tiny", "core")] if args.set == "all" else [args.set]
    try:
        _sets.shapes_dir(args.shapes_dir)
    except FileNotFoundError as exc:
        parser.error(str(exc))

    cp = be = torch = gpu = None
    why = "--device cpu"
    if args.device != "cpu":
        cp, be, why = harness.find_gpu()
        if cp is None and args.device == "cuda":
            parser.error(f"--device cuda: {why}")
    if cp is None:
        import numpy as xp
        from pycnn.backends import numpy_ref as be

        print(f"pycnn bench: no GPU baseline available ({why}); timing the NumPy reference "
              f"on the 'tiny' set")
        names = ["tiny"]
        timer = timing.CpuTimer(reps=args.reps, min_reps=5, min_time=0.02, warmup=1)
        bandwidth = timing.copy_bandwidth(xp, timer, 64 << 20)
        precision, fp32 = "fp32 (NumPy reference)", None
    else:
        xp = cp
        torch, no_torch = harness.find_torch()
        if torch is None:
            print(f"pycnn bench: no GPU baseline available ({no_torch}); pycnn figures only")
        fp32 = harness.force_fp32(torch) if torch else None
        timer = timing.GpuTimer(cp, reps=args.reps, min_time=args.min_time)
        gpu = harness.Gpu(cp, be, torch, timer)
        with gpu.on_stream():
            bandwidth = timing.copy_bandwidth(cp, timer, 1 << 30)
        # cuDNN with TF32 off; pycnn's versions labelled 3xTF32 reach fp32 accuracy
        # on TF32 tensor cores (their max rel err column shows it), the rest use FMAs.
        # cuDNN with TF32 on is timed beside them as the tensor cores' ceiling.
        precision = ("fp32 (cuDNN TF32 off; pycnn FFMA, or 3xTF32 where labelled; "
                     "cuDNN TF32 on shown apart)") if torch else "fp32"

    env = harness.environment(paths.checkout() or paths.PACKAGE, cp, torch)
    peak = args.peak_tflops if args.peak_tflops is not None else roofline.peak_fp32_tflops(env["gpu"])
    roof = {"peak_fp32_tflops": peak, "peak_tf32_tflops": roofline.peak_tf32_tflops(env["gpu"]),
            "copy_bandwidth_gbps": bandwidth,
            "peak_source": "--peak-tflops" if args.peak_tflops is not None else "table by GPU name"}
    library = None
    if torch is not None:
        library = (f"PyTorch {torch.__version__} on the same GPU: cuDNN {env['cudnn']} for "
                   "convolutions (default heuristic; autotuned with cudnn.benchmark=True; and "
                   "autotuned with TF32 allowed, as the tensor-core reference), "
                   "PyTorch's own CUDA kernels for pools and activations (cuDNN has none in "
                   "PyTorch's path) and for training batch norm (aten.native_batch_norm and "
                   "its backward); bias+ReLU is PyTorch's unfused add + relu")
    out = args.out
    if out is None:
        out = (paths.results_dir() if cp is not None
               else Path(tempfile.gettempdir()) / "pycnn-bench")
    for name in names:
        doc = _sets.load_set(name, args.shapes_dir)
        batch = _sets.batch_for(doc, args.batch)
        print(f"pycnn bench: set {name}, batch {batch}, {env['gpu'] or 'CPU'}")
        rows, stopped = [], None
        try:
            harness.run_set(doc, batch, ops, be, xp, timer, roof, args.tol, gpu, rows=rows)
        except (Stopped, KeyboardInterrupt, Exception) as exc:
            # a signal, or an error no case can recover from (after a kernel's illegal
            # address every CUDA call fails): keep the cases measured so far
            done = len({r["case"] for r in rows})
            if isinstance(exc, (Stopped, KeyboardInterrupt)):
                why = exc or type(exc).__name__
            else:
                traceback.print_exc()       # where it came from, for the log
                why = f"{type(exc).__name__}: {exc}"
            stopped = f"stopped by {why} after {done} of {len(doc['cases'])} cases"
            print(f"pycnn bench: {stopped}; writing what was measured")
        result = {
            "schema": 1, "set": name, "set_description": doc["description"], "set_source": doc["source"],
            "batch": batch, "device": "cuda" if cp is not None else "cpu", "backend": be.__name__,
            "precision": precision, "baseline_library": library, "fp32_settings": fp32,
            "cudnn_modes": {"default": "cudnn.benchmark=False (heuristic), TF32 off",
                            "autotuned": "cudnn.benchmark=True, TF32 off, timed after the search",
                            "tf32": "cudnn.benchmark=True, TF32 on, timed after the search; less "
                                    "accurate (baseline_tf32_rel_err: its error against TF32 off)"}
                           if torch else None,
            "ratio": harness.RATIO, "tolerance": args.tol, "timing": timer.setup(), "roofline": roof,
            "env": env, "results": rows, "summary": report.summarize(rows),
            "by_shape_class": report.by_shape_class(rows), "complete": stopped is None, "stopped": stopped,
        }
        for path in report.write_all(result, out):
            print(f"  wrote {path}")
        if stopped:
            return 1
    return 0
