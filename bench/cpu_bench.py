"""CPU timings beside PyTorch's on the same machine, in the same run: a ResNet-18
training step (32x32, batch 32, the CIFAR stem) and per-op forward/backward at the
'tiny' shape set (bench/shapes/tiny.json), each as a ratio pycnn time / PyTorch time.

Both sides run with 2 threads on the same float32 inputs and weights. Each pair is
timed interleaved (pycnn, torch, pycnn, torch, ...), best of ``--repeats``, so that
load from other processes hits both alike. The default ``pycnn train`` run is timed
by bench/train_cpu.py.

    python bench/cpu_bench.py        # writes bench/results/cpu-bench.json

The PyTorch ResNet-18 is tests/torchvision_layout.py's (torchvision's module names),
given the CIFAR stem pycnn uses at 32x32 and pycnn's initial weights.
"""
from __future__ import annotations

import os

THREADS = 2
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))   # before NumPy loads its BLAS

import argparse      # noqa: E402
import json          # noqa: E402
import platform      # noqa: E402
import sys           # noqa: E402
import time          # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pycnn                                        # noqa: E402  (first: its BLAS settings, as `pycnn train`)
import numpy as np                                  # noqa: E402
from pycnn import backends, models, optim           # noqa: E402
from pycnn import functional as F                   # noqa: E402
from pycnn.bench.sets import load_set               # noqa: E402
from pycnn.bench.cpu import blas_info, cpu_name      # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu-bench.json")


def best_interleaved(fns, repeats, inner):
    """Best seconds per call of each callable, the callables taking turns."""
    for f in fns:
        f()                                            # warm up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            for _ in range(inner):
                f()
            best[i] = min(best[i], (time.perf_counter() - start) / inner)
    return best


def resnet18_step(torch, repeats, batch=32):
    import torchvision_layout as tvl
    pycnn.manual_seed(0)
    model = models.resnet18(num_classes=10, input_size=32)
    t_model = tvl.resnet18(num_classes=10)
    t_model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)   # CIFAR stem
    t_model.maxpool = torch.nn.Identity()
    t_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t_opt = torch.optim.SGD(t_model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    t_model.train()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def ours():
        loss = F.cross_entropy(model(pycnn.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def theirs():
        loss = torch.nn.functional.cross_entropy(t_model(tx), ty)
        t_opt.zero_grad()
        loss.backward()
        t_opt.step()

    p, t = best_interleaved([ours, theirs], repeats, 1)
    return {"what": f"ResNet-18 training step, 32x32, batch {batch}, SGD momentum", "pycnn_s": p,
            "torch_s": t, "ratio": p / t}


def _pair_ops(torch, case, batch):
    """(label, pycnn callable, torch callable) for the forward and backward of one case."""
    rng = np.random.default_rng(1)
    c, h, w = case["C"], case["H"], case.get("W", case["H"])
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    tnn = torch.nn.functional
    out = []
    if case["op"] == "conv":
        k, r, s = case["K"], case["R"], case["S"]
        g = case.get("groups", 1)
        wt = rng.standard_normal((k, c // g, r, s)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        kw = dict(stride=tuple(case["stride"]), padding=tuple(case["padding"]),
                  dilation=tuple(case["dilation"]), groups=g)
        out.append(("fwd", lambda: F.conv2d(pycnn.tensor(x), pycnn.tensor(wt), pycnn.tensor(b), **kw),
                    lambda: tnn.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b), **kw)))

        def ours():
            xt, wtt = pycnn.tensor(x, requires_grad=True), pycnn.tensor(wt, requires_grad=True)
            F.conv2d(xt, wtt, pycnn.tensor(b, requires_grad=True), **kw).sum().backward()

        def theirs():
            xt = torch.from_numpy(x).requires_grad_()
            wtt = torch.from_numpy(wt).requires_grad_()
            tnn.conv2d(xt, wtt, torch.from_numpy(b).requires_grad_(), **kw).sum().backward()
        out.append(("fwd+bwd", ours, theirs))
    elif case["op"] == "max_pool":
        kw = dict(kernel_size=tuple(case["kernel"]), stride=tuple(case["stride"]),
                  padding=tuple(case["padding"]))
        out.append(("fwd", lambda: F.max_pool2d(pycnn.tensor(x), **kw),
                    lambda: tnn.max_pool2d(torch.from_numpy(x), **kw)))
        out.append(("fwd+bwd",
                    lambda: F.max_pool2d(pycnn.tensor(x, requires_grad=True), **kw).sum().backward(),
                    lambda: tnn.max_pool2d(torch.from_numpy(x).requires_grad_(), **kw).sum().backward()))
    elif case["op"] == "act":
        out.append(("relu fwd+bwd", lambda: F.relu(pycnn.tensor(x, requires_grad=True)).sum().backward(),
                    lambda: tnn.relu(torch.from_numpy(x).requires_grad_()).sum().backward()))
    return out


def per_op(torch, repeats, inner=50):
    doc = load_set("tiny")
    batch = doc.get("batch", 2) if isinstance(doc, dict) else 2
    cases = doc["cases"] if isinstance(doc, dict) else doc
    rows = []
    for case in cases:
        for label, ours, theirs in _pair_ops(torch, case, batch):
            p, t = best_interleaved([ours, theirs], repeats, inner)
            rows.append({"case": case["name"], "pass": label, "pycnn_s": p, "torch_s": t,
                         "ratio": p / t})
    return {"set": "tiny", "batch": batch, "rows": rows,
            "geomean_ratio": float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per side; the best is kept")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    result = {"what": "pycnn CPU time / PyTorch CPU time, interleaved, best of N",
              "cpu_backend": backends.cpu_backend(), "repeats": args.repeats,
              "resnet18_step": resnet18_step(torch, args.repeats),
              "per_op": per_op(torch, args.repeats)}
    result["machine"] = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": THREADS,
                         "blas": blas_info(),
                         "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                         "load_average_before": load_before, "load_average_after": os.getloadavg()}
    result["versions"] = {"pycnn": pycnn.__version__, "numpy": np.__version__,
                          "python": platform.python_version(), "torch": torch.__version__}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    r = result["resnet18_step"]
    print(f"ResNet-18 step: pycnn {r['pycnn_s']:.3f} s, torch {r['torch_s']:.3f} s, {r['ratio']:.2f}x")
    for row in result["per_op"]["rows"]:
        print(f"  {row['case']:<22} {row['pass']:<13} {row['ratio']:.2f}x")
    print(f"per-op geomean {result['per_op']['geomean_ratio']:.2f}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
