"""pycnn as a PyTorch backend: ``torch.ops.pycnn.*`` custom ops with autograd,
pycnn-backed ``torch.nn`` layers, and ``convert(model)``.

    import torch, pycnn.torch
    model = pycnn.torch.convert(my_torch_model)   # Conv2d, BatchNorm2d, ... run on pycnn
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()                               # through pycnn's backward kernels

torch is this package's host, not a dependency of pycnn: ``import pycnn`` never
imports torch, and only this package needs it. CPU tensors run the NumPy
reference (float32/float64), CUDA tensors pycnn's CUDA kernels (float32) on the
current torch stream, zero copy both ways.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("pycnn.torch needs PyTorch: pip install torch (the CPU build "
                      "suffices)") from exc

from pycnn.torch import ops, functional, nn
from pycnn.torch.convert import ConversionReport, convert
from pycnn.torch.functional import (adaptive_avg_pool2d, avg_pool2d, batch_norm, bias_relu,
                                    conv2d, conv2d_relu, cross_entropy, dropout, leaky_relu,
                                    log_softmax, max_pool2d, relu, sigmoid, softmax, tanh)

__all__ = ["ops", "functional", "nn", "convert", "ConversionReport", *functional.__all__]
