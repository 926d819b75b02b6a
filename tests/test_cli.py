"""The pycnn command line and the training loop, on small subsets of the embedded digits."""
import json
import os

import numpy as np
import pytest

from pycnn import cli

pytest.importorskip("pycnn.models")
pytest.importorskip("pycnn.optim")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", "--limit", "500", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--device", "cpu"])
    return code, out


def test_train_writes_run_files(trained_run, capsys):
    code, out = trained_run
    assert code == 0
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.json", "model.npz"]

    with np.load(out / "model.npz", allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    assert meta["model"] == "lenet5" and meta["limit"] == 500
    assert arrays and all(a.dtype.kind == "f" for a in arrays.values())

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("model", "data", "device", "args", "versions", "epochs", "final_test_acc"):
        assert key in metrics
    assert metrics["device"] == "cpu" and metrics["data"] == "embedded-mnist"
    assert len(metrics["epochs"]) == 1 and metrics["interrupted"] is False
    assert {"python", "numpy", "pycnn"} <= set(metrics["versions"])
    assert metrics["test_samples"] == 500 and metrics["train_samples"] == 500
    assert metrics["final_test_acc"] == metrics["epochs"][-1]["test_acc"]

    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reproduces_accuracy(trained_run, capsys):
    _, out = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "model.npz"), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "500 test samples" in text
    assert f"test accuracy {100 * metrics['final_test_acc']:.2f}%" in text


def test_eval_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nope.npz"), "--device", "cpu"]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_checkpoint_roundtrip_and_atomic(tmp_path):
    from pycnn import models
    model = models.get_model("lenet5")
    path = str(tmp_path / "m.npz")
    cli.save_checkpoint(path, model, {"model": "lenet5", "kwargs": {}})
    assert os.listdir(tmp_path) == ["m.npz"]          # no temporary file left behind
    state, meta = cli.load_checkpoint(path)
    assert meta == {"model": "lenet5", "kwargs": {}}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(state[k], np.asarray(v))


def test_summary_prints_parameter_count(capsys):
    assert cli.main(["summary", "lenet5"]) == 0
    # the published LeNet-5 count (see test_models), not one recomputed from the model
    assert "Total params: 61,706" in capsys.readouterr().out


def test_summary_keeps_the_models_own_class_count(capsys):
    # torchvision's ResNet-50 (1000 classes) has 25,557,032 parameters
    assert cli.main(["summary", "resnet50"]) == 0
    assert "Total params: 25,557,032" in capsys.readouterr().out
    assert cli.main(["summary", "resnet50", "--num-classes", "10"]) == 0
    assert "Total params: 23,528,522" in capsys.readouterr().out  # 2048*10 + 10 in the head


def test_summary_input_shape_the_model_cannot_take(capsys):
    # LeNet-5's classifier expects 16*5*5 features; 32x32 digits give 16*6*6
    assert cli.main(["summary", "lenet5", "--input-shape", "1", "32", "32"]) == 2
    err = capsys.readouterr().err
    assert "lenet5" in err and "(1, 32, 32)" in err


def test_eval_checkpoint_that_does_not_fit_its_model(tmp_path, capsys):
    from pycnn import models
    path = str(tmp_path / "m.npz")
    cli.save_checkpoint(path, models.get_model("lenet5"), {"model": "keras_mnist", "kwargs": {}})
    assert cli.main(["eval", "--checkpoint", path, "--device", "cpu", "--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert "m.npz" in err and "unexpected keys" in err


def test_negative_seed_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--seed", "-1", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--seed: expected a non-negative integer, got '-1'" in capsys.readouterr().err


def test_summary_unknown_model(capsys):
    assert cli.main(["summary", "alexnet"]) == 2
    assert "alexnet" in capsys.readouterr().err


def test_bad_data_spec(tmp_path, capsys):
    code = cli.main(["train", "--data", "imagenet:/x", "--out", str(tmp_path), "--device", "cpu"])
    assert code == 2
    assert "embedded-mnist" in capsys.readouterr().err


def test_missing_data_dir(tmp_path, capsys):
    code = cli.main(["train", "--data", f"mnist:{tmp_path / 'none'}", "--out", str(tmp_path),
                     "--device", "cpu"])
    assert code == 2
    assert "none" in capsys.readouterr().err


def test_cuda_without_gpu(tmp_path, capsys):
    import pycnn
    if pycnn.cuda_available():
        pytest.skip("a GPU is present")
    code = cli.main(["train", "--device", "cuda", "--out", str(tmp_path), "--limit", "10"])
    assert code == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_version(capsys):
    import pycnn
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert pycnn.__version__ in capsys.readouterr().out


def test_bench_delegates(monkeypatch):
    import sys
    import types
    seen = {}
    fake = types.ModuleType("pycnn.bench")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "pycnn.bench", fake)
    cli.main(["bench", "--op", "conv2d", "--help"])
    assert seen["argv"] == ["--op", "conv2d", "--help"]


def test_interrupt_saves_and_exits_130(tmp_path, monkeypatch):
    import pycnn.train as train_mod
    real = train_mod.train_epoch
    calls = {"n": 0}

    def stop_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_epoch", stop_in_second_epoch)
    code = cli.main(["train", "--limit", "200", "--epochs", "3", "--out", str(tmp_path),
                     "--no-progress", "--device", "cpu"])
    assert code == 130
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is True and len(metrics["epochs"]) == 1
    assert (tmp_path / "curves.png").exists()
    state, meta = cli.load_checkpoint(str(tmp_path / "model.npz"))
    assert meta["model"] == "lenet5" and state


def test_short_training_beats_chance():
    """1,000 training digits, 2 epochs: well above the 10% of guessing (an oracle outside the code:
    a model that learned nothing scores about 10%)."""
    import pycnn
    from pycnn import models, optim
    from pycnn.data import DataLoader, embedded_mnist
    from pycnn.train import evaluate, fit
    train, test = embedded_mnist(seed=0)
    cli.seed_everything(0)
    model = models.get_model("lenet5")
    opt = optim.Adam(model.parameters(), lr=1e-3)
    _, before = evaluate(model, DataLoader(test, 500))
    history = fit(model, opt, DataLoader(train.take(1000), 32, shuffle=True, seed=0),
                  DataLoader(test, 500), 2, "cpu", progress=False, log=None)
    assert len(history) == 2
    assert before < 0.3
    assert history[-1]["test_acc"] > 0.6
    assert pycnn.is_grad_enabled()          # evaluate() left grad mode as it found it


def test_evaluate_weights_batches_by_size_against_numpy():
    """Mean cross-entropy and accuracy over 7 samples in batches of 3, 3, 1, computed
    here with NumPy from the same weights."""
    from pycnn import nn
    from pycnn.data import DataLoader, Dataset
    from pycnn.train import evaluate
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 1, 2, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    logits = x.reshape(7, 4).astype(np.float64) @ model[1].weight.data.T + model[1].bias.data
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    want_loss = -log_probs[np.arange(7), y].mean()
    want_acc = (logits.argmax(axis=1) == y).mean()
    loss, acc = evaluate(model, DataLoader(Dataset(x, y), 3))
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert acc == pytest.approx(want_acc) and isinstance(acc, float)
    assert model.training                 # evaluate() restores the mode it found


def _tiny_fit(lr):
    """(model, SGD optimizer, loader): six 2x2 images, two classes, one linear layer."""
    from pycnn import nn, optim
    from pycnn.data import DataLoader, Dataset
    x = np.random.default_rng(0).standard_normal((6, 1, 2, 2)).astype(np.float32)
    loader = DataLoader(Dataset(x, np.array([0, 1, 0, 1, 0, 1])), 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    return model, optim.SGD(model.parameters(), lr=lr), loader


def test_fit_records_the_lr_of_each_epoch_and_steps_the_scheduler():
    from pycnn import optim
    from pycnn.train import fit
    model, opt, loader = _tiny_fit(0.4)
    seen = []
    history = fit(model, opt, loader, loader, 3, scheduler=optim.ExponentialLR(opt, 0.5),
                  progress=False, log=seen.append,
                  on_epoch_end=lambda record, hist: seen.append(len(hist)))
    assert [r["lr"] for r in history] == pytest.approx([0.4, 0.2, 0.1])
    assert opt.lr == pytest.approx(0.05)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [s for s in seen if isinstance(s, int)] == [1, 2, 3]   # after each epoch
    assert sum(isinstance(s, str) and s.startswith("epoch") for s in seen) == 3
    with pytest.raises(ValueError, match="epochs"):
        fit(model, opt, loader, loader, 0)


@pytest.mark.slow
def test_default_run_reaches_96_percent(tmp_path):
    """`pycnn train` with its defaults (on the CPU here) reaches >= 96% on the 1,000 held-out digits."""
    assert cli.main(["train", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_samples"] == 1000
    assert metrics["final_test_acc"] >= 0.96


def _fake_cifar(directory):
    """Six CIFAR-10 binary batches of two random records each."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))], 1)
        (directory / name).write_bytes(records.astype(np.uint8).tobytes())
    return directory


def test_model_data_mismatch_reported_up_front(tmp_path, capsys):
    data_dir = _fake_cifar(tmp_path / "cifar")
    code = cli.main(["train", "--model", "lenet5", "--data", f"cifar10:{data_dir}",
                     "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "lenet5" in err and "(3, 32, 32)" in err


# ----------------------------------------------------------------------------- bad input

def test_model_that_cannot_be_built_for_the_data_is_an_error(tmp_path, capsys):
    # vgg_small's constructor wants sides that are multiples of 8; the digits are 28x28
    code = cli.main(["train", "--model", "vgg_small", "--limit", "10", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pycnn: error: --model vgg_small")
    assert "(1, 28, 28)" in err and "multiples of 8" in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["summary", "vgg_small", "--input-shape", "3", "30", "30"]) == 2
    err = capsys.readouterr().err
    # summary takes the model as a positional argument: the error names it so, not --model
    assert err.startswith("pycnn: error: model vgg_small") and "(3, 30, 30)" in err
    # resnets take any size; lenet5 fails in its forward pass (reported by check_fits)
    assert cli.main(["summary", "resnet18", "--input-shape", "3", "30", "30"]) == 0


def _lenet_checkpoint(path, meta=None):
    from pycnn import models
    cli.save_checkpoint(str(path), models.get_model("lenet5"),
                        meta or {"model": "lenet5", "kwargs": {}, "data": "embedded-mnist",
                                 "limit": 20, "seed": 0})
    return path


def _with_meta(tmp_path, text):
    """A lenet5 checkpoint whose __meta__ entry is ``text``."""
    with np.load(_lenet_checkpoint(tmp_path / "good.npz")) as z:
        entries = {k: z[k] for k in z.files}
    entries["__meta__"] = np.array(text)
    np.savez(tmp_path / "m.npz", **entries)
    return tmp_path / "m.npz"


@pytest.mark.parametrize("make, expected", [
    (lambda d: (np.save(d / "arr.npy", np.zeros(3)), d / "arr.npy")[1],
     "not a pycnn checkpoint: a single NumPy array (.npy file)"),
    (lambda d: (d / "t.npz").write_text("hello\n") and d / "t.npz",
     "not a pycnn checkpoint: not an .npz archive"),
    (lambda d: (np.savez(d / "o.npz", __meta__=np.array("{}"), w=np.array([{}], dtype=object)),
                d / "o.npz")[1], "entry 'w' holds Python objects"),
    (lambda d: _with_meta(d, "[1, 2]"), "__meta__ entry: expected a JSON object, got list [1, 2]"),
    (lambda d: _with_meta(d, "{oops"), "__meta__ entry: expected JSON"),
    (lambda d: _with_meta(d, '{"model": "lenet5", "limit": 0}'),
     '"limit": expected null or a positive integer, got 0'),
    (lambda d: _with_meta(d, '{"model": "lenet5", "seed": -1}'),
     '"seed": expected a non-negative integer, got -1'),
    (lambda d: _with_meta(d, '{"kwargs": {}}'), 'expected a "model" name'),
], ids=["npy", "text-file", "pickled-entry", "meta-list", "meta-not-json", "meta-limit-0",
        "meta-seed-negative", "meta-no-model"])
def test_eval_bad_checkpoint_is_an_error(tmp_path, capsys, make, expected):
    path = make(tmp_path)
    assert cli.main(["eval", "--checkpoint", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pycnn: error: --checkpoint {path}") and expected in err
    assert "allow_pickle" not in err and "Traceback" not in err


def test_eval_data_the_model_does_not_take(tmp_path, capsys):
    path = _lenet_checkpoint(tmp_path / "m.npz")
    data_dir = _fake_cifar(tmp_path / "cifar")
    code = cli.main(["eval", "--checkpoint", str(path), "--data", f"cifar10:{data_dir}",
                     "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pycnn: error: --data cifar10:{data_dir}")
    assert "lenet5" in err and "(3, 32, 32)" in err


def test_out_that_cannot_be_a_run_directory(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, expected in ((a_file, "got an existing file"),
                          (a_file / "sub", "cannot create the run directory")):
        code = cli.main(["train", "--out", str(out), "--limit", "10", "--epochs", "1",
                         "--device", "cpu", "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pycnn: error: --out {out}: ") and expected in err
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("option, value, expected", [
    ("--lr", "inf", "a finite positive number"), ("--lr", "nan", "a finite positive number"),
    ("--lr", "-1", "a finite positive number"), ("--lr-decay", "inf", "a factor in (0, 1]"),
    ("--lr-decay", "nan", "a factor in (0, 1]"), ("--lr-decay", "1.5", "a factor in (0, 1]"),
])
def test_float_options_must_be_finite_and_in_range(tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", option, value, "--out", str(tmp_path)])
    assert e.value.code == 2
    assert f"{option}: expected {expected}, got {value!r}" in capsys.readouterr().err


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    path = tmp_path / "m.json"
    cli.write_json(str(path), {"a": float("nan"), "b": [np.float32("inf"), -float("inf"), 1.5],
                               "c": np.int64(3)})
    assert _strict_json(path.read_text()) == {"a": None, "b": [None, None, 1.5], "c": 3}


def test_diverging_run_stops_with_status_1_and_valid_metrics(tmp_path, capsys):
    code = cli.main(["train", "--lr", "1e30", "--limit", "64", "--epochs", "3",
                     "--out", str(tmp_path), "--device", "cpu", "--no-progress"])
    # epoch 1 is a single step from sane weights (a finite loss); epoch 2 starts from the
    # weights that step blew up
    assert code == 1
    err = capsys.readouterr().err
    assert "training diverged: loss is nan at epoch 2 step 1; try a smaller --lr" in err
    metrics = _strict_json((tmp_path / "metrics.json").read_text())
    assert metrics["diverged"]["epoch"] == 2 and metrics["diverged"]["train_loss"] is None
    assert [r["epoch"] for r in metrics["epochs"]] == [1]
    assert metrics["final_test_acc"] == metrics["epochs"][0]["test_acc"]
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.json", "model.npz"]
    state, _ = cli.load_checkpoint(str(tmp_path / "model.npz"))   # epoch 1's weights
    assert all(np.isfinite(v).all() for v in state.values())


def test_fit_stops_at_the_first_non_finite_epoch():
    from pycnn.train import TrainingDiverged, fit
    model, opt, loader = _tiny_fit(0.1)
    ends = []

    def poison_after_first(record, history):
        ends.append(record["epoch"])
        model[1].weight.data[...] = np.nan
    with pytest.raises(TrainingDiverged) as e:
        fit(model, opt, loader, loader, 5, progress=False, log=None,
            on_epoch_end=poison_after_first)
    assert e.value.epoch == 2 and [r["epoch"] for r in e.value.history] == [1]
    assert ends == [1]
