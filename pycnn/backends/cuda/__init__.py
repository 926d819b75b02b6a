"""The CUDA backend: pycnn's own kernels (pycnn._C) on CuPy arrays.

Defines every name of ``pycnn.backends.INTERFACE`` with the reference's
signature (``pycnn.backends.numpy_ref``). Every function checks its arrays
(float32, C-contiguous, on the current GPU, within 32-bit indexing) before any
launch, takes its outputs from CuPy's memory pool and launches on CuPy's current
stream, so it orders with CuPy's own work and with ``with cupy.cuda.Stream():``.

``LAUNCHERS`` names every pycnn._C function this backend calls; tests check the
built extension against it.
"""
from __future__ import annotations

from pycnn.backends import INTERFACE

from . import batch_norm as _batch_norm
from . import conv as _conv
from .batch_norm import batch_norm_bwd, batch_norm_fwd
from .conv import (conv2d_bias_relu_fwd, conv2d_bwd_bias, conv2d_bwd_data, conv2d_bwd_filter,
                   conv2d_fwd)
from .launchers import LAUNCHERS as _OWN_LAUNCHERS
from .pointwise import (bias_relu_fwd, dropout_bwd, dropout_fwd, leaky_relu_bwd, leaky_relu_fwd,
                        relu_bwd, relu_fwd, sigmoid_bwd, sigmoid_fwd, tanh_bwd, tanh_fwd)
from .pool import (adaptive_avg_pool2d_bwd, adaptive_avg_pool2d_fwd, avg_pool2d_bwd,
                   avg_pool2d_fwd, max_pool2d_bwd, max_pool2d_fwd)
from .softmax import (cross_entropy_bwd, cross_entropy_fwd, log_softmax_bwd, log_softmax_fwd,
                      softmax_bwd, softmax_fwd)

#: Every pycnn._C launcher this backend calls (convolution and the rest).
LAUNCHERS = tuple(_conv.LAUNCHERS) + tuple(_batch_norm.LAUNCHERS) + _OWN_LAUNCHERS

__all__ = [*INTERFACE, "LAUNCHERS"]
