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
"""
from __future__ import annotations

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


def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, input_size)


def resnet34(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, input_size)


def resnet50(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, input_size)


# ---------------------------------------------------------------------- registry
MODELS = {
    "lenet5": lenet5,
    "keras_mnist": keras_mnist,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        ctor = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"name: expected one of {', '.join(sorted(MODELS))}; got {name!r}") from None
    return ctor(**kwargs)


__all__ = ["LeNet5", "KerasMNIST", "VGGSmall", "BasicBlock", "Bottleneck", "ResNet",
           "lenet5", "keras_mnist", "vgg_small", "resnet18", "resnet34", "resnet50",
           "MODELS", "get_model"]
