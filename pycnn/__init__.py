"""pycnn: a CNN engine on hand-written CUDA kernels, with a NumPy reference backend.

    import pycnn
    import pycnn.functional as F

    x = pycnn.tensor(numpy_array, requires_grad=True)           # or device="cuda"
    y = F.relu(F.conv2d(x, w, b, stride=1, padding="same"))
    y.sum().backward()
"""
import os as _os

# OpenBLAS's worker threads spin for 2^28 cycles (about 0.1 s) after each call before
# they sleep. Between the many small GEMMs of a training step they then take the cores
# from the Python thread's own work (im2col, pools) and from any other process. The
# default `pycnn train` on this project's 2-core machine, 2 BLAS threads (bench/train_cpu.py,
# interleaved runs): with one core busy elsewhere, 21.3 and 24.0 s at 2^28, 6.8 and 9.4 s
# at 2^16; with both cores free, 6.3-9.1 s at 2^28 and 6.5-9.6 s at 2^16 (the machine's
# own drift is larger than the difference). 2^16 cycles still spans the gaps inside a
# step. Read once, when NumPy loads OpenBLAS: a default only, and only if pycnn is
# imported before NumPy (the `pycnn` command always is).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from pycnn.tensor import (AnomalyError, Tensor, cuda_available, cuda_status, detect_anomaly,
                          is_anomaly_enabled, is_grad_enabled, no_grad, set_anomaly, tensor)
from pycnn.random import manual_seed
from pycnn.gradcheck import GradcheckError, gradcheck
from pycnn import functional, shapes
from pycnn import nn, optim, models, data
from pycnn.summary import summary

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "is_grad_enabled", "cuda_available", "cuda_status", "manual_seed",
    "gradcheck", "GradcheckError", "functional", "shapes", "nn", "optim", "models", "data",
    "summary", "set_anomaly", "is_anomaly_enabled", "detect_anomaly", "AnomalyError",
    "__version__",
]
