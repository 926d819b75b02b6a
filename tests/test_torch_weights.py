"""Weights both ways between torchvision-layout torch models and pycnn.models: the same
keys and parameter counts, outputs equal in float64 to 1e-10, export back to torch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import pycnn  # noqa: E402
from pycnn import models  # noqa: E402

try:
    from . import torchvision_layout as tv
except ImportError:
    import torchvision_layout as tv

# name -> (torchvision's parameter count with 1000 classes, the test input's side)
ARCHS = {"resnet18": (11_689_512, 64), "resnet34": (21_797_672, 32),
         "resnet50": (25_557_032, 64), "alexnet": (61_100_840, 64), "vgg16": (138_357_544, 32)}


def _torch_model(name):
    torch.manual_seed(0)
    m = getattr(tv, name)()
    with torch.no_grad():                  # running statistics that are not the defaults
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.num_batches_tracked.fill_(3)
    return m.eval()


@pytest.mark.parametrize("name", ARCHS)
def test_torchvision_weights_load_and_match(name):
    """float64 to 1e-10, and back to torch value for value (VGG-16, 138M parameters,
    without the trip back: it would add about 10 s of copies here)."""
    count, side = ARCHS[name]
    theirs = _torch_model(name)
    assert sum(p.numel() for p in theirs.parameters()) == count      # the layout is torchvision's
    ours = getattr(models, name)(weights=theirs.state_dict())
    assert ours.num_parameters() == count
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.eval().double()
    theirs.double()
    x = torch.randn(2, 3, side, side, dtype=torch.float64)
    with torch.no_grad():
        ref = theirs(x).numpy()
    got = ours(pycnn.tensor(x.numpy())).numpy()
    assert got.shape == ref.shape == (2, 1000)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    if name == "vgg16":
        return
    # and back: pycnn's export loads into the torch model strictly, value for value
    back = getattr(tv, name)().double()
    back.load_state_dict(models.export_weights(ours), strict=True)
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_pt_files_both_ways(tmp_path):
    theirs = _torch_model("resnet18")
    torch.save(theirs.state_dict(), tmp_path / "resnet18.pt")
    ours = models.resnet18(weights=tmp_path / "resnet18.pt")
    assert ours.conv1.weight.shape == (64, 3, 7, 7) and ours.fc.weight.shape == (1000, 512)
    models.export_weights(ours, tmp_path / "back.pt")
    state = torch.load(tmp_path / "back.pt", weights_only=True)
    fresh = tv.resnet18()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.layer3[1].bn2.running_var, theirs.layer3[1].bn2.running_var)
    # a training script's checkpoint that wraps the state_dict
    torch.save({"state_dict": theirs.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    wrapped = models.resnet18(weights=str(tmp_path / "wrapped.pth"))
    np.testing.assert_array_equal(wrapped.fc.bias.numpy(), theirs.fc.bias.detach().numpy())
    # NumPy both ways too, with no torch involved in the file
    models.export_weights(ours, tmp_path / "w.npz", format="numpy")
    again = models.resnet18(weights=tmp_path / "w.npz")
    np.testing.assert_array_equal(again.layer1[0].conv1.weight.numpy(),
                                  theirs.layer1[0].conv1.weight.detach().numpy())


def test_checkpoint_sets_classes_and_stem_unless_told():
    small = tv.resnet18(num_classes=7).state_dict()
    m = models.resnet18(weights=small)
    assert m.fc.weight.shape == (7, 512) and not m.small_input
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint has shape \(7, 512\), model has "
                                         r"\(10, 512\)"):
        models.resnet18(num_classes=10, weights=small)


def test_wrong_weights_are_named():
    with pytest.raises(ValueError, match=r"missing keys: layer1\.0\.conv3\.weight"):
        models.resnet50(weights=tv.resnet18().state_dict())
    with pytest.raises(ValueError, match=r"weights: expected a torchvision-layout state_dict with "
                                         r"the key 'classifier.6.weight'"):
        models.vgg16(weights=tv.resnet18().state_dict())
    with pytest.raises(FileNotFoundError, match=r"weights: file not found: nowhere.pt"):
        models.alexnet(weights="nowhere.pt")
    with pytest.raises(TypeError, match=r"weights: expected a path or a mapping"):
        models.alexnet(weights=3)


def test_pycnn_eval_accepts_a_converted_torchvision_checkpoint(tmp_path, capsys):
    """torch weights -> pycnn model -> a checkpoint as `pycnn train` writes it
    (pycnn.cli.save_checkpoint) -> `pycnn eval` loads and runs it."""
    from pycnn import cli
    torch.manual_seed(0)
    theirs = tv.resnet18(num_classes=10)
    theirs.conv1 = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)   # MNIST's 1 channel
    ours = models.resnet18(weights=theirs.state_dict())
    assert not ours.small_input                   # the 7x7 stem, read off the checkpoint
    meta = {"model": "resnet18", "kwargs": {"num_classes": 10, "in_channels": 1,
                                            "input_size": 224}, "data": "embedded-mnist"}
    cli.save_checkpoint(tmp_path / "model.npz", ours, meta)
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "model.npz"), "--limit", "20",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "resnet18 from" in out and "(20 test samples, cpu)" in out and "test accuracy" in out


def test_a_model_built_for_weights_skips_random_init():
    from pycnn import nn
    pycnn.manual_seed(5)
    with nn.init.skip_init():
        layer = nn.Conv2d(2, 3, 3)
    assert not layer.weight.numpy().any()
    drawn = nn.init.generator().integers(0, 2**32)
    pycnn.manual_seed(5)
    assert nn.init.generator().integers(0, 2**32) == drawn     # the generator did not advance
    assert nn.Conv2d(2, 3, 3).weight.numpy().any()             # and outside it init is back
    sd = tv.alexnet().state_dict()
    np.testing.assert_array_equal(models.alexnet(weights=sd).features[0].bias.numpy(),
                                  sd["features.0.bias"].numpy())
