"""Run by tests/test_distributed.py, in one process or under mpiexec: trains a small CNN
on fixed random digits for a few steps and saves the parameters (rank 0).

    python tests/helpers/ddp_train.py OUT.npz BATCH STEPS MODEL [fail-rank-R-at-step-S | kill-rank-R-at-step-S]

MODEL: plain (no batch norm), bn (batch norm: per-rank statistics, as DDP without
SyncBatchNorm) or syncbn (batch norm over the global batch).
"""
import os
import sys

import numpy as np

import pycnn
from pycnn import distributed, nn, optim
from pycnn import functional as F
from pycnn.data import DataLoader, Dataset
from pycnn.train import train_epoch


class Net(nn.Module):
    """conv, (batch norm,) relu, average pool, linear: small, but every kind of layer the
    data-parallel path treats differently (parameters, buffers).

    Average, not max, pooling: a max pool's choice turns a one-ulp difference between two
    near-equal window values into another gradient path, so two runs that only sum in
    different orders can part by far more than rounding (measured: the fast CPU backend's
    batch norm against the reference's, 4 steps, 1.7e-4 in conv.weight from one flipped
    window; with average pooling both, and the 2-rank sync-BN run, agree to 1e-7)."""

    def __init__(self, bn):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else None
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        x = F.avg_pool2d(F.relu(x), 4)
        return self.fc(x.reshape(x.shape[0], -1))


def main():
    out, batch, steps, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    fault = sys.argv[5] if len(sys.argv) > 5 else None
    comm = distributed.init("cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * 64 + 13, 1, 28, 28)).astype(np.float32)   # a short last batch
    y = rng.integers(0, 10, len(x))
    pycnn.manual_seed(1234 + (comm.rank if comm else 0))       # different inits: the broadcast must fix them
    model = Net(bn=kind != "plain")
    if comm and kind == "syncbn":
        distributed.convert_sync_batchnorm(model, comm)
    ddp = distributed.DataParallel(model, comm, bucket_bytes=2048) if comm else None
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    shard = (comm.rank, comm.size) if comm else None
    loader = DataLoader(Dataset(x, y), batch, shuffle=True, seed=5, shard=shard)

    def run():
        if fault:
            what, _, rank, _, _, step = fault.split("-")
            if comm.rank == int(rank):
                original = opt.step

                def step_then_fault(calls=[0]):
                    calls[0] += 1
                    if calls[0] == int(step):
                        if what == "kill":
                            os.kill(os.getpid(), 9)
                        raise RuntimeError(f"planted failure at step {step}")
                    return original()
                opt.step = step_then_fault
        loss, acc, seen = train_epoch(model, opt, loader, ddp=ddp)
        if ddp is not None:
            ddp.sync_buffers()
        if comm is None or comm.rank == 0:
            np.savez(out, loss=loss, acc=acc, seen=seen,
                     **{k: np.asarray(v) for k, v in model.state_dict().items()})
    distributed.run_guarded(run, comm)


if __name__ == "__main__":
    main()
