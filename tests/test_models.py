"""Reference models (parameter counts against the published figures, structure,
forward shapes, a short training run) and the summary table."""
import numpy as np
import pytest

import pycnn
import pycnn.functional as F
from pycnn import models, nn, optim
from pycnn.summary import summarize, summary


def _count(module):
    return sum(p.size for p in module.parameters())


def _zeros(*shape):
    return pycnn.tensor(np.zeros(shape, np.float32))


# ---------------------------------------------------------------- parameter counts
def test_lenet5_count_and_shape():
    # conv 1*6*25+6 = 156, conv 6*16*25+16 = 2416, fc 400*120+120 = 48120,
    # 120*84+84 = 10164, 84*10+10 = 850 -> 61,706
    m = models.lenet5()
    assert _count(m) == 156 + 2416 + 48120 + 10164 + 850 == 61_706
    assert m(_zeros(2, 1, 28, 28)).shape == (2, 10)


def test_keras_mnist_counts_and_shape():
    # conv 320 + 18,496 + 36,928 = 55,744; dense 576*64+64 = 36,928 and 650 -> 93,322
    m = models.keras_mnist()
    assert _count(m.features) == 55_744
    assert _count(m) == 93_322
    assert m(_zeros(3, 1, 28, 28)).shape == (3, 10)


def test_resnet_counts_match_torchvision():
    assert _count(models.resnet18(num_classes=1000, input_size=224)) == 11_689_512
    assert _count(models.resnet50(num_classes=1000, input_size=224)) == 25_557_032
    # CIFAR stem: the 7x7x3x64 conv (9,408) becomes 3x3x3x64 (1,728); fc 512*10+10
    assert _count(models.resnet18()) == 11_689_512 - 9_408 + 1_728 - 513_000 + 5_130


def test_resnet50_structure_like_torchvision():
    m = models.resnet50()
    sd = m.state_dict()
    assert len(sd) == 320  # torchvision's resnet50 state_dict has 320 entries
    for key in ("conv1.weight", "bn1.num_batches_tracked", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.running_var", "layer3.5.conv3.weight", "layer4.2.bn3.bias",
                "fc.weight", "fc.bias"):
        assert key in sd, key
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["fc.weight"].shape == (1000, 2048)
    block = m.layer2[0]
    # v1.5: the stride sits on the 3x3 conv, not on the first 1x1
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)
    assert isinstance(m.maxpool, nn.MaxPool2d) and m.maxpool.kernel_size == (3, 3)


def test_resnet_stem_depends_on_input_size():
    small = models.resnet18(input_size=32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    big = models.resnet18(input_size=224)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.stride == (2, 2)
    assert isinstance(big.maxpool, nn.MaxPool2d)
    assert len(small.state_dict()) == len(big.state_dict()) == 122


def test_small_models_forward_shapes():
    assert models.vgg_small()(_zeros(1, 3, 32, 32)).shape == (1, 10)
    assert models.resnet18(num_classes=7)(_zeros(1, 3, 32, 32)).shape == (1, 7)
    assert models.resnet50(num_classes=5, input_size=16)(_zeros(1, 3, 16, 16)).shape == (1, 5)


def test_resnet_backward_reaches_every_parameter():
    m = models.resnet18(num_classes=3, input_size=8)
    x = pycnn.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    loss = F.cross_entropy(m(x), np.array([0, 2]))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []
    assert int(m.bn1.num_batches_tracked) == 1


@pytest.mark.slow
def test_lenet5_learns_a_small_batch():
    pycnn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=8)
    m = models.lenet5()
    opt = optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(m(pycnn.tensor(x)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0]


def test_registry():
    assert set(models.MODELS) >= {"lenet5", "keras_mnist", "vgg_small", "resnet18", "resnet50",
                                  "vgg16", "alexnet"}
    m = models.get_model("lenet5", num_classes=4)
    assert m.classifier[-1].out_features == 4
    with pytest.raises(ValueError) as err:
        models.get_model("inception_v3")
    assert "inception_v3" in str(err.value) and "resnet18" in str(err.value)


# ---------------------------------------------------------------- summary
def test_summary_keras_mnist_rows():
    info = summarize(models.keras_mnist(), (1, 28, 28))
    shapes = [(r["name"], r["type"], r["output_shape"]) for r in info["rows"]]
    assert shapes == [
        ("features.0", "Conv2d", (1, 32, 26, 26)),
        ("features.1", "ReLU", (1, 32, 26, 26)),
        ("features.2", "MaxPool2d", (1, 32, 13, 13)),
        ("features.3", "Conv2d", (1, 64, 11, 11)),
        ("features.4", "ReLU", (1, 64, 11, 11)),
        ("features.5", "MaxPool2d", (1, 64, 5, 5)),
        ("features.6", "Conv2d", (1, 64, 3, 3)),
        ("features.7", "ReLU", (1, 64, 3, 3)),
        ("classifier.0", "Flatten", (1, 576)),
        ("classifier.1", "Linear", (1, 64)),
        ("classifier.2", "ReLU", (1, 64)),
        ("classifier.3", "Linear", (1, 10)),
    ]
    params = [r["params"] for r in info["rows"]]
    assert params == [320, 0, 0, 18_496, 0, 0, 36_928, 0, 0, 36_928, 0, 650]
    assert sum(params[:8]) == 55_744
    assert info["total_params"] == info["trainable_params"] == 93_322
    # Linear 576 -> 64: 2*576*64 multiply-add FLOPs + 64 bias adds
    assert info["rows"][9]["flops"] == 2 * 576 * 64 + 64
    # activation memory: float32 output of the first conv
    assert info["rows"][0]["activation_bytes"] == 32 * 26 * 26 * 4
    assert info["total_flops"] == sum(r["flops"] for r in info["rows"])


def test_summary_single_conv_flops_and_text(capsys):
    conv = nn.Conv2d(3, 10, 5)
    info = summarize(conv, (3, 32, 32))
    (row,) = info["rows"]
    assert row["params"] == 3 * 10 * 25 + 10 == 760
    assert row["output_shape"] == (1, 10, 28, 28)
    # 2*K*C*R*S*P*Q + K*P*Q = 2*10*3*25*784 + 10*784
    assert row["flops"] == 1_176_000 + 7_840
    text = summary(conv, (3, 32, 32), print_fn=None)
    assert capsys.readouterr().out == ""
    assert "Total params: 760" in text and "1,183,840" in text and "(1, 10, 28, 28)" in text
    summary(conv, (3, 32, 32))
    assert "Total params: 760" in capsys.readouterr().out


def test_summary_lenet5_and_grouped_conv():
    assert summarize(models.lenet5(), (1, 28, 28))["total_params"] == 61_706
    info = summarize(nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False), (8, 6, 6))
    assert info["total_flops"] == 2 * 8 * (8 // 4) * 9 * 36


def test_summary_leaves_model_state_alone():
    m = models.vgg_small()
    m.train()
    before = m.features[1].running_mean.copy()
    info = summarize(m, (3, 32, 32))
    assert m.training and all(mod.training for mod in m.modules())
    assert np.array_equal(m.features[1].running_mean, before)
    assert int(m.features[1].num_batches_tracked) == 0
    assert info["output_shape"] == (1, 10)
    assert not any(mod._forward_hooks for mod in m.modules())
    m.features[1].eval()  # a frozen BatchNorm inside a training model stays frozen
    summarize(m, (3, 32, 32))
    assert m.training and not m.features[1].training and m.features[4].training


def test_summary_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        summarize(models.lenet5(), (1, 0, 28))
    with pytest.raises(TypeError, match="model"):
        summarize("lenet5", (1, 28, 28))


@pytest.mark.parametrize("build", [models.lenet5, models.keras_mnist, models.vgg_small,
                                   models.resnet18, models.resnet34, models.resnet50,
                                   models.vgg16, models.alexnet])
def test_model_arguments_name_themselves(build):
    for bad in (0, -1, 2.5, "10", None):
        with pytest.raises(ValueError, match=r"num_classes: expected a positive int"):
            build(num_classes=bad)
    with pytest.raises(ValueError, match=r"in_channels: expected a positive int, got 0"):
        build(in_channels=0)
