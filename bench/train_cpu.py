"""Wall time of the default `pycnn train` run on the CPU, beside the same run in PyTorch.

Both sides train LeNet-5 on the embedded MNIST digits with the CLI's defaults
(SGD momentum 0.9, lr 0.05 decayed x0.8 per epoch, batch 64, 8 epochs, seed 0),
from the same initial weights (pycnn's, copied into the PyTorch model; the
state_dict keys are the same), on the same batches in the same order (one
pycnn DataLoader per side, same seed), each with 2 threads. Each side is timed
end to end (training plus the per-epoch test pass), best of ``--repeats``
runs, interleaved so that load from other processes hits both alike.

    python bench/train_cpu.py                 # writes bench/results/train-cpu.json

PyTorch is optional (``pip install torch``): without it only pycnn is timed.
It is used here for the comparison only; pycnn does not depend on it.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import pycnn                                  # noqa: E402  (first: its BLAS settings, as `pycnn train`)
import numpy as np                            # noqa: E402
from pycnn import cli                         # noqa: E402
from pycnn.data import DataLoader             # noqa: E402
from pycnn.train import fit                   # noqa: E402
from pycnn.bench.cpu import blas_info, cpu_name  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train-cpu.json")


def config():
    d = cli.DEFAULTS
    return {"model": d["model"], "data": d["data"], "epochs": d["epochs"],
            "batch_size": d["batch_size"], "optimizer": "sgd", "momentum": 0.9,
            "lr": cli.DEFAULT_LR["sgd"], "lr_decay": d["lr_decay"], "seed": d["seed"],
            "threads": THREADS}


def initial_state(cfg, train_set):
    cli.seed_everything(cfg["seed"])
    kwargs = cli.model_kwargs(cfg["model"], train_set.sample_shape, train_set.num_classes)
    model = cli.build_model(cfg["model"], kwargs)
    return {k: np.array(v) for k, v in model.state_dict().items()}, kwargs


def run_pycnn(cfg, data, state, kwargs):
    from pycnn import optim
    train_set, test_set = data
    model = cli.build_model(cfg["model"], kwargs)
    model.load_state_dict(state)
    opt = optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    sched = optim.ExponentialLR(opt, gamma=cfg["lr_decay"])
    start = time.perf_counter()
    history = fit(model, opt, DataLoader(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"]),
                  DataLoader(test_set, cfg["batch_size"]), cfg["epochs"], "cpu", scheduler=sched,
                  progress=False, log=None)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_acc": history[-1]["test_acc"],
            "test_acc_per_epoch": [r["test_acc"] for r in history],
            "train_loss_per_epoch": [r["train_loss"] for r in history]}


def torch_lenet5(torch, num_classes=10, in_channels=1):
    nn = torch.nn
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    model.classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))
    model.forward = lambda x: model.classifier(model.features(x))
    return model


def run_torch(torch, cfg, data, state):
    train_set, test_set = data
    model = torch_lenet5(torch)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg["lr_decay"])
    loss_fn = torch.nn.functional.cross_entropy
    train_loader = DataLoader(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
    test_loader = DataLoader(test_set, cfg["batch_size"])
    accs, losses = [], []
    start = time.perf_counter()
    for _ in range(cfg["epochs"]):
        model.train()
        total, seen = 0.0, 0
        for x, y in train_loader:
            logits = model(torch.from_numpy(x))
            loss = loss_fn(logits, torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            seen += len(y)
        sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
        accs.append(correct / len(test_set))
        losses.append(total / seen)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_acc": accs[-1], "test_acc_per_epoch": accs,
            "train_loss_per_epoch": losses}


def _torch_capability(torch):
    return torch.backends.cpu.get_cpu_capability() if torch is not None else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the best is kept")
    parser.add_argument("--no-torch", action="store_true", help="time pycnn only")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    cfg = config()
    data = cli.load_data(cfg["data"], None, cfg["seed"])
    state, kwargs = initial_state(cfg, data[0])
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(THREADS)
        except ImportError:
            print("torch is not importable: timing pycnn only", file=sys.stderr)

    load_before = os.getloadavg()
    runs = {"pycnn": [], "torch": []}
    for rep in range(args.repeats):
        runs["pycnn"].append(run_pycnn(cfg, data, state, kwargs))
        print(f"run {rep + 1}: pycnn {runs['pycnn'][-1]['seconds']:.2f} s, "
              f"test acc {100 * runs['pycnn'][-1]['test_acc']:.2f}%", flush=True)
        if torch is not None:
            runs["torch"].append(run_torch(torch, cfg, data, state))
            print(f"run {rep + 1}: torch {runs['torch'][-1]['seconds']:.2f} s, "
                  f"test acc {100 * runs['torch'][-1]['test_acc']:.2f}%", flush=True)
    load_after = os.getloadavg()

    def best(side):
        if not runs[side]:
            return None
        b = dict(min(runs[side], key=lambda r: r["seconds"]))
        b["all_seconds"] = [r["seconds"] for r in runs[side]]
        return b

    result = {
        "what": "wall time of the default `pycnn train` configuration on the CPU vs PyTorch",
        "config": cfg,
        "train_samples": len(data[0]), "test_samples": len(data[1]),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "blas": blas_info(),
                    "torch_cpu_capability": _torch_capability(torch),
                    "load_average_before": load_before, "load_average_after": load_after},
        "versions": {"pycnn": pycnn.__version__, "numpy": np.__version__,
                     "python": platform.python_version(),
                     "torch": torch.__version__ if torch is not None else None},
        "pycnn": best("pycnn"),
        "torch": best("torch"),
    }
    p = result["pycnn"]
    line = (f"CPU training, `pycnn train` defaults (LeNet-5, {len(data[0]):,} digits, "
            f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, {THREADS} threads, {cpu_name()}): "
            f"pycnn {p['seconds']:.1f} s, {100 * p['test_acc']:.1f}% test accuracy")
    if result["torch"] is not None:
        t = result["torch"]
        result["ratio_pycnn_over_torch"] = p["seconds"] / t["seconds"]
        line += (f"; PyTorch {torch.__version__} {t['seconds']:.1f} s, {100 * t['test_acc']:.1f}%"
                 f" (pycnn takes {result['ratio_pycnn_over_torch']:.1f}x PyTorch's time)")
    result["readme_line"] = line + "."
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(result["readme_line"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
