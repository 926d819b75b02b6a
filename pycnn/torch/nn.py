"""torch.nn layers whose forward runs pycnn's kernels.

Each class subclasses its torch.nn counterpart and replaces only ``forward``:
constructor arguments, parameters, buffers, ``state_dict`` keys, ``repr`` and
``isinstance`` checks stay torch's, and the gradient runs pycnn's backward
kernels. ``pycnn.torch.convert`` swaps them into an existing model.
"""
from __future__ import annotations

from torch import nn

from pycnn.torch import functional as F

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "BatchNorm2d", "Dropout", "REPLACEMENTS"]


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d on pycnn's convolution (padding_mode='zeros' only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode={self.padding_mode!r} is not supported by "
                             f"pycnn (only 'zeros')")

    def forward(self, input):
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class MaxPool2d(nn.MaxPool2d):
    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)


class ReLU(nn.ReLU):
    """ReLU; ``inplace=True`` is accepted and runs out of place (same result)."""

    def forward(self, input):
        return F.relu(input)


class LeakyReLU(nn.LeakyReLU):
    """LeakyReLU; ``inplace=True`` is accepted and runs out of place (same result)."""

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)


class Sigmoid(nn.Sigmoid):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(nn.Tanh):
    def forward(self, input):
        return F.tanh(input)


class BatchNorm2d(nn.BatchNorm2d):
    """torch.nn.BatchNorm2d's bookkeeping (num_batches_tracked, momentum=None as the
    cumulative average, track_running_stats) around pycnn's batch norm."""

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep else None,
                            self.running_var if keep else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)


class Dropout(nn.Dropout):
    """Dropout with pycnn's mask (seeded from torch's generator); ``inplace=True`` is
    accepted and runs out of place (same result)."""

    def forward(self, input):
        return F.dropout(input, self.p, self.training)


#: torch.nn class -> its pycnn-backed subclass (``convert`` swaps exactly these types)
REPLACEMENTS = {
    nn.Conv2d: Conv2d, nn.MaxPool2d: MaxPool2d, nn.AvgPool2d: AvgPool2d,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d, nn.ReLU: ReLU, nn.LeakyReLU: LeakyReLU,
    nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.BatchNorm2d: BatchNorm2d, nn.Dropout: Dropout,
}
