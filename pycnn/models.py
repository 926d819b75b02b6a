"""Reference models built from pycnn.nn layers.

- ``lenet5``: LeNet-5 as PyTorch tutorials write it today: ReLU and max
  pooling instead of the original tanh and trainable subsampling, and a 5x5
  padding-2 first convolution so that 28x28 MNIST digits work (61,706
  parameters with 10 classes).
- ``keras_mnist``: the small CNN of the Keras/TensorFlow MNIST tutorial
  (55,744 parameters in the convolutions, 93,322 with the dense head).
- ``vgg_small``: VGG-style 3x3 conv + BatchNorm + ReLU stacks for 32x32 inputs.
- ``resnet18``/``resnet34``/``resnet50``: torchvision's ResNet (v1.5: the
  stride of a bottleneck sits on its 3x3 conv), with the same ``state_dict``
  keys. Small inputs (``input_size <= 64``, e.g. CIFAR) get the CIFAR stem: a
  3x3 stride-1 conv and no max pool; larger inputs get the 7x7 stride-2 conv
  and the 3x3 stride-2 max pool. ``input_size`` is an int or an (H, W) pair.
- ``vgg16``/``alexnet``: torchvision's VGG-16 (no batch norm) and AlexNet, with the
  same module names, so the same ``state_dict`` keys (138,357,544 and 61,100,840
  parameters with 1000 classes).

Weights both ways: ``resnet18/34/50``, ``vgg16`` and ``alexnet`` take
``weights=`` (a torchvision-layout state_dict: a ``.pt``/``.pth`` file, a pycnn
``.npz``, or a mapping of NumPy arrays or torch tensors), and ``export_weights``
writes one (torch tensors in a ``.pt`` file, or NumPy arrays). torch is imported
only to read or write ``.pt`` files and to convert torch tensors. Given weights, the
class count, the input channels and (for a ResNet) the stem come from the
checkpoint unless the arguments say otherwise.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict

import numpy as np

from pycnn import nn, shapes


# ---------------------------------------------------------------------- small CNNs
class _FeaturesClassifier(nn.Module):
    """A ``features`` stack then a ``classifier`` head (the torchvision VGG layout, so
    state_dict keys read ``features.0.weight``, ``classifier.1.bias``)."""

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(_FeaturesClassifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        in_channels = shapes.positive_int(in_channels, "in_channels")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )


def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 (ReLU + max-pool variant) for 28x28 inputs."""
    return LeNet5(num_classes, in_channels)


class KerasMNIST(_FeaturesClassifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        in_channels = shapes.positive_int(in_channels, "in_channels")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, 64), nn.ReLU(),
            nn.Linear(64, num_classes),
        )


def keras_mnist(num_classes: int = 10, in_channels: int = 1) -> KerasMNIST:
    """The Keras tutorial's MNIST CNN for 28x28 inputs (flattens NCHW, not NHWC)."""
    return KerasMNIST(num_classes, in_channels)


class VGGSmall(_FeaturesClassifier):
    #: channels per conv, "M" for a 2x2 max pool
    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, "M")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        in_channels = shapes.positive_int(in_channels, "in_channels")
        h, w = shapes.pair(input_size, "input_size")
        if h % 8 or w % 8:
            raise ValueError(f"input_size: expected multiples of 8 (three 2x2 pools), got {input_size!r}")
        layers, c = [], in_channels
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * (h // 8) * (w // 8), 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )


def vgg_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGGSmall:
    """VGG-style net for 32x32 inputs: 2x(64) M 2x(128) M 2x(256) M, conv-BN-ReLU, then 4096->256->classes."""
    return VGGSmall(num_classes, in_channels, input_size)


# ---------------------------------------------------------------------- ResNet
def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the shortcut is the input or a 1x1 conv + BN (``downsample``)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        width = planes
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, in_channels=3, input_size=224):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        in_channels = shapes.positive_int(in_channels, "in_channels")
        if len(layers) != 4:
            raise ValueError(f"layers: expected 4 stage depths, got {layers!r}")
        self.inplanes = 64
        self.small_input = max(shapes.pair(input_size, "input_size")) <= 64
        if self.small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if self.small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # torchvision's initialisation: He-normal (fan_out) convs, BN weight 1 and bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


class _Default:
    """An argument's default that a checkpoint given as ``weights=`` overrides (the class
    count, the input channels, the stem); shown as the plain value in signatures."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


def _given(value, from_checkpoint=None):
    """``value`` if the caller gave it, else the checkpoint's (when there is one) or the default."""
    if not isinstance(value, _Default):
        return value
    return value.value if from_checkpoint is None else from_checkpoint


def _init_unless(state):
    """Random initialisation, unless a checkpoint (``state``) is about to overwrite it:
    strict loading replaces every parameter and buffer."""
    return nn.init.skip_init() if state is not None else contextlib.nullcontext()


def _resnet(block, layers, num_classes, in_channels, input_size, weights):
    state = None if weights is None else read_weights(weights)
    if state is not None:
        conv1, fc = _entry(state, "conv1.weight", 4), _entry(state, "fc.weight", 2)
        num_classes = _given(num_classes, fc.shape[0])
        in_channels = _given(in_channels, conv1.shape[1])
        # the stem tells which input the weights were made for
        input_size = _given(input_size, 224 if conv1.shape[-1] == 7 else 32)
    with _init_unless(state):
        model = ResNet(block, layers, _given(num_classes), _given(in_channels), _given(input_size))
    return model if state is None else load_weights(model, state)


def resnet18(num_classes=_Default(10), in_channels=_Default(3), input_size=_Default(32),
             weights=None) -> ResNet:
    """ResNet-18 (the CIFAR stem at 32x32 by default); with ``weights``, the arguments not
    given come from the checkpoint (torchvision's: 1000 classes, the 7x7 stem)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, input_size, weights)


def resnet34(num_classes=_Default(10), in_channels=_Default(3), input_size=_Default(32),
             weights=None) -> ResNet:
    """ResNet-34; arguments as resnet18's."""
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, input_size, weights)


def resnet50(num_classes=_Default(1000), in_channels=_Default(3), input_size=_Default(224),
             weights=None) -> ResNet:
    """ResNet-50 v1.5; arguments as resnet18's."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, input_size, weights)


def resnet101(num_classes=_Default(1000), in_channels=_Default(3), input_size=_Default(224),
              weights=None) -> ResNet:
    """ResNet-101 v1.5 (44,549,160 parameters for 1000 classes, as torchvision's)."""
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_channels, input_size, weights)


def resnet152(num_classes=_Default(1000), in_channels=_Default(3), input_size=_Default(224),
              weights=None) -> ResNet:
    """ResNet-152 v1.5 (60,192,808 parameters for 1000 classes, as torchvision's)."""
    return _resnet(Bottleneck, (3, 8, 36, 3), num_classes, in_channels, input_size, weights)


# ---------------------------------------------------------------------- VGG-16 and AlexNet
class _TorchvisionClassifier(nn.Module):
    """``features``, ``avgpool`` (adaptive), flatten, ``classifier``: torchvision's VGG and
    AlexNet layout (keys ``features.0.weight``, ``classifier.6.bias``, ...)."""

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class VGG(_TorchvisionClassifier):
    #: torchvision's configuration "D" (VGG-16): channels per 3x3 conv, "M" a 2x2 max pool
    CONFIG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")
    #: configuration "A" (VGG-11)
    CONFIG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, config=CONFIG16, num_classes=1000, in_channels=3, dropout=0.5):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        layers, c = [], shapes.positive_int(in_channels, "in_channels")
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        # torchvision's initialisation: He-normal (fan_out) convs, N(0, 0.01) linears, zero biases
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)


class AlexNet(_TorchvisionClassifier):
    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5):
        super().__init__()
        num_classes = shapes.positive_int(num_classes, "num_classes")
        in_channels = shapes.positive_int(in_channels, "in_channels")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, num_classes),
        )


def _classifier_from(ctor, num_classes, in_channels, weights, **extra):
    state = None if weights is None else read_weights(weights)
    if state is not None:
        num_classes = _given(num_classes, _entry(state, "classifier.6.weight", 2).shape[0])
        in_channels = _given(in_channels, _entry(state, "features.0.weight", 4).shape[1])
    with _init_unless(state):
        model = ctor(num_classes=_given(num_classes), in_channels=_given(in_channels), **extra)
    return model if state is None else load_weights(model, state)


def vgg16(num_classes=_Default(1000), in_channels=_Default(3), weights=None) -> VGG:
    """torchvision's VGG-16 (configuration D, no batch norm); with ``weights``, the
    arguments not given come from the checkpoint."""
    return _classifier_from(VGG, num_classes, in_channels, weights)


def vgg11(num_classes=_Default(1000), in_channels=_Default(3), weights=None) -> VGG:
    """torchvision's VGG-11 (configuration A, no batch norm: 132,863,336 parameters for
    1000 classes); ``weights`` as for vgg16."""
    return _classifier_from(VGG, num_classes, in_channels, weights, config=VGG.CONFIG11)


def alexnet(num_classes=_Default(1000), in_channels=_Default(3), weights=None) -> AlexNet:
    """torchvision's AlexNet (the one-GPU variant of "One weird trick"); with ``weights``,
    the arguments not given come from the checkpoint."""
    return _classifier_from(AlexNet, num_classes, in_channels, weights)


# ---------------------------------------------------------------------- weights both ways
def _to_numpy(value, key):
    if hasattr(value, "detach") and hasattr(value, "cpu"):        # a torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "data") and hasattr(value, "device") and not isinstance(value, np.ndarray):
        value = value.data                                       # a pycnn Tensor
    if hasattr(value, "get") and not isinstance(value, np.ndarray):  # a CuPy array
        return value.get()
    try:
        return np.asarray(value)
    except Exception:
        raise TypeError(f"weights: entry {key!r} is a {type(value).__name__}, not an array "
                        f"or tensor") from None


def read_weights(source) -> "OrderedDict[str, np.ndarray]":
    """A state_dict as NumPy arrays, from a ``.pt``/``.pth`` file (read with
    ``torch.load(weights_only=True)``: nothing is unpickled but tensors), an ``.npz``
    file, or a mapping of arrays or tensors. A checkpoint that wraps its state_dict
    as ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights: file not found: {path}")
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                source = {k: z[k] for k in z.files if k != "__meta__"}
        else:
            try:
                import torch
            except ImportError:
                raise ImportError(f"weights: reading {path} needs PyTorch (pip install torch); "
                                  f"an .npz needs nothing more") from None
            source = torch.load(path, map_location="cpu", weights_only=True)
    if not hasattr(source, "keys") or not hasattr(source, "__getitem__"):
        raise TypeError(f"weights: expected a path or a mapping of names to arrays, got "
                        f"{type(source).__name__}")
    for wrapper in ("state_dict", "model"):
        if set(source.keys()) >= {wrapper} and hasattr(source[wrapper], "keys") and \
                not any(k.endswith(".weight") for k in source.keys()):
            source = source[wrapper]
    return OrderedDict((k, _to_numpy(v, k)) for k, v in source.items())


def _entry(state, key, ndim):
    if key not in state:
        raise ValueError(f"weights: expected a torchvision-layout state_dict with the key "
                         f"{key!r}; its keys start {', '.join(list(state)[:4])}")
    if state[key].ndim != ndim:
        raise ValueError(f"weights: {key} must be {ndim}-D, got shape {state[key].shape}")
    return state[key]


def load_weights(model, weights, strict: bool = True):
    """Copy a torchvision-layout state_dict (path or mapping, see ``read_weights``) into
    ``model`` in place, cast to its dtype; returns ``model``. Raises ValueError naming
    every missing, unexpected or mismatched key."""
    state = weights if isinstance(weights, OrderedDict) and all(
        isinstance(v, np.ndarray) for v in weights.values()) else read_weights(weights)
    model.load_state_dict(state, strict=strict)
    return model


def export_weights(model, path=None, format: str = "torch"):
    """``model``'s state_dict in torchvision's layout: torch tensors (``format="torch"``)
    or NumPy arrays (``"numpy"``); written to ``path`` when given (``torch.save`` for
    torch, ``numpy.savez`` for numpy). Returns the dict."""
    if format not in ("torch", "numpy"):
        raise ValueError(f"format: expected 'torch' or 'numpy', got {format!r}")
    state = model.state_dict()
    if format == "torch":
        import torch
        state = OrderedDict((k, torch.from_numpy(v)) for k, v in state.items())
        if path is not None:
            torch.save(state, os.fspath(path))
    elif path is not None:
        np.savez(os.fspath(path), **state)
    return state


# ---------------------------------------------------------------------- registry
MODELS = {
    "lenet5": lenet5,
    "keras_mnist": keras_mnist,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "alexnet": alexnet,
}


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        ctor = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"name: expected one of {', '.join(sorted(MODELS))}; got {name!r}") from None
    return ctor(**kwargs)


__all__ = ["LeNet5", "KerasMNIST", "VGGSmall", "BasicBlock", "Bottleneck", "ResNet",
           "VGG", "AlexNet", "lenet5", "keras_mnist", "vgg_small", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "vgg11", "vgg16", "alexnet", "read_weights", "load_weights", "export_weights",
           "MODELS", "get_model"]
