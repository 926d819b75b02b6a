"""Real images end to end through the CLI: train on a folder of JPEG/PNG/BMP files with
augmentation, predict, visualise, and resume to the same weights as an uninterrupted run."""
import json
import os
import signal

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("skimage")
from PIL import Image  # noqa: E402

from pycnn import cli, images, optim  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    images.write_sample_folder(str(root), per_class=8, size=40)
    return root


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCNN_CACHE_DIR", str(tmp_path / "cache"))


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


def _train(photos, out, *extra):
    return cli.main(["train", "--data", f"folder:{photos}", "--model", "lenet5",
                     "--image-size", "28", "--batch-size", "8", "--no-progress",
                     "--device", "cpu", "--out", str(out), *extra])


def test_train_predict_visualize(photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(photos, run, "--epochs", "2",
                  "--augment", "resized-crop=0.5,flip,jitter=0.3,lighting") == 0
    out = capsys.readouterr().out
    assert f"on folder:{photos} (18 train / 6 test)" in out   # 0.2 of each class of 8
    state, meta = cli.load_checkpoint(str(run / "model.npz"))
    assert meta["classes"] == ["astronaut", "cat", "coffee"]
    assert meta["folder"]["size"] == 28 and len(meta["mean"]) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["args"]["augment"] == "resized-crop=0.5,flip,jitter=0.3,lighting"

    cat, coffee = sorted((photos / "cat").iterdir())[0], sorted((photos / "coffee").iterdir())[0]
    assert cli.main(["predict", "--checkpoint", str(run / "model.npz"), str(cat),
                     str(coffee), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{cat}: ")
    assert all(any(c in line for c in ("astronaut", "cat", "coffee")) for line in lines)
    assert cli.main(["predict", "--checkpoint", str(run / "model.npz"), str(cat), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    top = result["predictions"][0]["top"]
    assert len(top) == 3 and abs(sum(t["probability"] for t in top) - 1) < 1e-6
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert {t["class"] for t in top} == {"astronaut", "cat", "coffee"}
    # a file that is not an image: its line, the others still answered, exit 2
    (tmp_path / "bad.jpg").write_text("nope")
    assert cli.main(["predict", "--checkpoint", str(run / "model.npz"),
                     str(tmp_path / "bad.jpg"), str(cat)]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path / 'bad.jpg'}: not an image" in captured.err
    assert captured.out.startswith(f"{cat}: ")

    vis = tmp_path / "vis"
    assert cli.main(["visualize", "--checkpoint", str(run / "model.npz"), "--image", str(cat),
                     "--out", str(vis)]) == 0
    captions = capsys.readouterr().out.strip().splitlines()
    names = sorted(os.listdir(vis))
    assert names == ["confusion.png", "features-features_0.png", "features-features_3.png",
                     "filters.png"]
    assert len(captions) == 4 and all(": " in c for c in captions)
    assert "the 6 filters of the first convolution (features.0, 5x5 over 3 channels)" in \
        captions[0]
    for name in names:
        with Image.open(vis / name) as img:
            assert img.format == "PNG" and img.size[0] >= 300 and img.size[1] >= 100
            assert np.asarray(img.convert("L")).std() > 5     # not a blank canvas


def test_predict_on_a_digit_checkpoint(tmp_path, capsys):
    run = tmp_path / "digits"
    assert cli.main(["train", "--limit", "64", "--epochs", "1", "--no-progress",
                     "--device", "cpu", "--out", str(run)]) == 0
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255                  # a "1", white on black as MNIST draws them
    Image.fromarray(digit).save(tmp_path / "one.png")
    capsys.readouterr()
    assert cli.main(["predict", "--checkpoint", str(run / "model.npz"),
                     str(tmp_path / "one.png"), "--top-k", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'one.png'}: ") and line.endswith("%")


def test_resume_gives_the_uninterrupted_weights(photos, tmp_path, capsys):
    args = ("--augment", "resized-crop=0.5,flip,jitter=0.2", "--optimizer", "adam")
    assert _train(photos, tmp_path / "whole", "--epochs", "3", *args) == 0
    assert _train(photos, tmp_path / "part", "--epochs", "1", *args) == 0
    capsys.readouterr()
    # the first run was told 1 epoch: --epochs 3 carries it on (same schedule: closed form)
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "3",
                     "--no-progress"]) == 0
    assert "resuming run" in capsys.readouterr().out
    whole, part = _weights(tmp_path / "whole" / "model.npz"), _weights(tmp_path / "part" /
                                                                       "model.npz")
    for k in whole:
        np.testing.assert_array_equal(part[k], whole[k], err_msg=k)
    metrics = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]
    assert metrics["resumed"][0]["epoch"] == 1
    # finished: a second resume asks for more epochs
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 2
    assert "has finished its 3 epoch(s)" in capsys.readouterr().err


def test_resume_after_a_sigterm_mid_epoch(photos, tmp_path, capsys, monkeypatch):
    args = ("--augment", "resized-crop=0.5,flip", "--epochs", "2")
    assert _train(photos, tmp_path / "whole", *args) == 0
    real_step, calls = optim.SGD.step, [0]

    def step_then_signal(self):
        real_step(self)
        calls[0] += 1
        if calls[0] == 4:                    # epoch 2 of 3 steps each: its first step
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(optim.SGD, "step", step_then_signal)
    assert _train(photos, tmp_path / "cut", *args) == 143
    _, meta = cli.load_checkpoint(str(tmp_path / "cut" / "model.npz"))
    assert (meta["epochs"], meta["step"]) == (1, 1)
    monkeypatch.setattr(optim.SGD, "step", real_step)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert "after epoch 1 and step 1 of epoch 2" in capsys.readouterr().out
    whole, cut = _weights(tmp_path / "whole" / "model.npz"), _weights(tmp_path / "cut" /
                                                                      "model.npz")
    for k in whole:
        np.testing.assert_array_equal(cut[k], whole[k], err_msg=k)


def test_resume_refuses_other_settings_and_non_runs(photos, tmp_path, capsys):
    assert _train(photos, tmp_path / "r", "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2",
                     "--batch-size", "4"]) == 2
    assert "a resumed run keeps its own settings (--batch-size 8" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "expected a run folder" in capsys.readouterr().err
