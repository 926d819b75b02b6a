"""pycnn.nn: Module, Parameter, layers and initialisation, shaped like torch.nn."""
from pycnn.nn import init
from pycnn.nn.module import Module, Parameter, RemovableHandle
from pycnn.nn.layers import (
    ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvReLU2d, CrossEntropyLoss,
    Dropout, Flatten, Identity, LeakyReLU, Linear, Maxout, MaxPool2d, ModuleList, MSELoss,
    PReLU, ReLU, Sequential, Sigmoid, Softmax, Tanh, fuse_conv_relu,
)

__all__ = [
    "init", "Module", "Parameter", "RemovableHandle",
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "ConvReLU2d", "CrossEntropyLoss",
    "Dropout", "Flatten", "Identity", "LeakyReLU", "Linear", "MaxPool2d", "ModuleList", "MSELoss",
    "ReLU", "Sequential", "Sigmoid", "Tanh", "fuse_conv_relu", "ELU", "GELU", "PReLU",
    "Maxout", "Softmax",
]
