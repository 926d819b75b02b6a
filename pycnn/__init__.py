"""pycnn: a CNN engine on hand-written CUDA kernels, with a NumPy reference backend.

    import pycnn
    import pycnn.functional as F

    x = pycnn.tensor(numpy_array, requires_grad=True)           # or device="cuda"
    y = F.relu(F.conv2d(x, w, b, stride=1, padding="same"))
    y.sum().backward()
"""
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
