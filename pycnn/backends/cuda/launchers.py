"""Which pycnn._C launcher each CUDA backend function calls, and the kernel file
that defines it. Plain data, no CuPy: tests/test_extension.py reads it on
machines without a GPU to check the built extension against it, and to check
that every kernel file named here carries its header block (what it does, why,
what limits it, its measured figure).

The convolution launchers are listed by ``pycnn.backends.cuda.conv.LAUNCHERS``
and batch norm version 2's by ``pycnn.backends.cuda.batch_norm.LAUNCHERS`` (their
launchers run several kernels each); the package's ``LAUNCHERS`` joins the lists.
"""
from __future__ import annotations

#: launcher name in pycnn._C -> kernel source (relative to the repository root).
#: The number in a name is the kernel version (kernel ``relu_fwd_kernel1``,
#: launcher ``relu_fwd1``); the file's number is its place in the family.
KERNEL_FILES = {
    # activations
    "relu_fwd1": "kernels/activation/01_pointwise.cu",
    "relu_bwd1": "kernels/activation/01_pointwise.cu",
    "leaky_relu_fwd1": "kernels/activation/01_pointwise.cu",
    "leaky_relu_bwd1": "kernels/activation/01_pointwise.cu",
    "sigmoid_fwd1": "kernels/activation/01_pointwise.cu",
    "sigmoid_bwd1": "kernels/activation/01_pointwise.cu",
    "tanh_fwd1": "kernels/activation/01_pointwise.cu",
    "tanh_bwd1": "kernels/activation/01_pointwise.cu",
    "bias_relu_fwd1": "kernels/activation/01_pointwise.cu",
    # pooling
    "max_pool2d_fwd1": "kernels/pool/01_max_pool.cu",
    "max_pool2d_bwd1": "kernels/pool/01_max_pool.cu",
    "max_pool2d_bwd2": "kernels/pool/04_max_pool_bwd_gather.cu",
    "avg_pool2d_fwd1": "kernels/pool/02_avg_pool.cu",
    "avg_pool2d_bwd1": "kernels/pool/02_avg_pool.cu",
    "adaptive_avg_pool2d_fwd1": "kernels/pool/03_adaptive_avg_pool.cu",
    "adaptive_avg_pool2d_bwd1": "kernels/pool/03_adaptive_avg_pool.cu",
    # softmax and loss
    "softmax_fwd1": "kernels/softmax/01_softmax.cu",
    "softmax_bwd1": "kernels/softmax/01_softmax.cu",
    "log_softmax_fwd1": "kernels/softmax/01_softmax.cu",
    "log_softmax_bwd1": "kernels/softmax/01_softmax.cu",
    "cross_entropy_fwd1": "kernels/softmax/01_softmax.cu",
    "cross_entropy_bwd1": "kernels/softmax/01_softmax.cu",
    # batch norm
    "batch_norm_fwd_train1": "kernels/batch_norm/01_batch_norm.cu",
    "batch_norm_fwd_infer1": "kernels/batch_norm/01_batch_norm.cu",
    "batch_norm_bwd1": "kernels/batch_norm/01_batch_norm.cu",
    # dropout
    "dropout_fwd1": "kernels/dropout/01_dropout.cu",
    "dropout_bwd1": "kernels/dropout/01_dropout.cu",
}

#: Every non-convolution launcher the CUDA backend calls.
LAUNCHERS = tuple(KERNEL_FILES)
