"""The NCCL path of pycnn.distributed on one GPU, end to end (bench/gpu_session.sh's
nccl stage): a communicator of one rank (MPI_COMM_WORLD of a plain process), a training
step of a small CNN through DataParallel with NCCL's all-reduce and broadcast, against
the same step without it. One rank reduces nothing away, so the gradients must come back
as they went (to the float rounding of the synchronised batch norm's own sums); what this
checks is that every call reaches NCCL and returns, on its stream, in order.

    python bench/nccl_check.py
"""
import sys

import numpy as np


def main() -> int:
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError as e:
        print(f"nccl_check: skipped: no mpi4py with an MPI here ({e})")
        return 2
    import cupy as cp

    from pycnn import distributed, nn
    from pycnn import functional as F
    from pycnn.tensor import tensor

    comm = distributed.NCCLComm()
    print(f"NCCL {cp.cuda.nccl.get_version()} on {cp.cuda.runtime.getDeviceProperties(0)['name']}, "
          f"{comm.size} rank")

    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 4, 3, stride=2), nn.ReLU()).to("cuda")
    rng = np.random.default_rng(0)
    x = tensor(rng.standard_normal((8, 3, 16, 16)).astype(np.float32), device="cuda")
    plain, wrapped = net(), net()
    wrapped.load_state_dict(plain.state_dict())
    distributed.convert_sync_batchnorm(wrapped, comm)    # its batch norm through MPI's sums
    ddp = distributed.DataParallel(wrapped, comm, bucket_bytes=1024)
    for model in (plain, wrapped):
        if model is wrapped:
            ddp.begin_step(8, 8, flag=True)
        F.relu(model(x)).sum().backward()
        if model is wrapped:
            ddp.finish()
    worst = max(float(cp.abs(a.grad.data - b.grad.data).max() / (cp.abs(a.grad.data).max() + 1e-30))
                for a, b in zip(plain.parameters(), wrapped.parameters()))
    ok = worst < 1e-4 and ddp.flagged
    print(f"{'ok' if ok else 'FAIL'}: {len(ddp.buckets)} buckets through NCCL, largest gradient "
          f"difference {worst:.2e} of its scale, stop flag {'back' if ddp.flagged else 'LOST'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
