"""What a newcomer meets first: summary with a batch-ful shape and Keras-style shapes, the
version line without a GPU, the warning for a model far too big for its data, and the
benchmark's one-line rows staying aligned."""
import numpy as np
import pytest

import importlib

import pycnn
from pycnn import cli, models
from pycnn.data import Dataset

summary_mod = importlib.import_module("pycnn.summary")   # pycnn.summary is the function


def test_summary_takes_a_batchful_shape():
    per_sample = summary_mod.summarize(models.lenet5(), (1, 28, 28))
    batch = summary_mod.summarize(models.lenet5(), (64, 1, 28, 28))
    assert batch["input_shape"] == (64, 1, 28, 28) and batch["output_shape"] == (64, 10)
    assert batch["rows"][0]["output_shape"] == (64, 6, 28, 28)
    assert batch["activation_bytes"] == 64 * per_sample["activation_bytes"]
    assert batch["total_flops"] == per_sample["total_flops"]          # per sample
    text = pycnn.summary(models.lenet5(), (1, 1, 28, 28), print_fn=None)
    assert text.startswith("LeNet5 on input (1, 1, 28, 28)")
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\), got 5 dimensions"):
        summary_mod.summarize(models.lenet5(), (1, 1, 1, 28, 28))


def test_summary_keras_shapes():
    text = pycnn.summary(models.lenet5(), (1, 28, 28), print_fn=None, keras=True)
    assert "LeNet5 on input (None, 28, 28, 1)" in text
    assert "(None, 28, 28, 6)" in text and "(None, 10)" in text
    assert summary_mod.keras_shape((8, 3, 32, 16)) == "(None, 32, 16, 3)"


def test_cli_summary_batch_keras_and_errors(capsys):
    assert cli.main(["summary", "lenet5", "--input-shape", "32", "1", "28", "28", "--keras"]) == 0
    assert "(None, 14, 14, 6)" in capsys.readouterr().out
    assert cli.main(["summary", "lenet5", "--input-shape", "1", "28"]) == 2
    assert "--input-shape: expected C H W or N C H W, got 2 numbers" in capsys.readouterr().err
    assert cli.main(["summary", "lenet5", "--input-shape", "3", "8", "8"]) == 2
    err = capsys.readouterr().err
    assert "model lenet5 does not take inputs of shape (3, 8, 8)" in err and "--model" not in err


def test_version_line_without_a_gpu():
    status = pycnn.cuda_status()
    if status.startswith("available"):
        pytest.skip("a GPU is visible here")
    assert "driver version is insufficient" not in status
    tensor_mod = importlib.import_module("pycnn.tensor")
    if not tensor_mod._nvidia_driver_present() and "CuPy is not installed" not in status \
            and "was not built" not in status:
        assert status == "unavailable: no NVIDIA GPU/driver found; the CPU backend runs everything"


def test_warning_for_a_model_far_too_big(capsys):
    data = Dataset(np.zeros((64, 1, 28, 28), np.float32), np.arange(64) % 10)
    line = cli.warn_if_too_big(models.resnet50(num_classes=10, in_channels=1, input_size=28),
                               "resnet50", data)
    assert line.startswith("pycnn: warning: resnet50 has 23,") and "64 training samples" in line
    assert "\n" not in line and capsys.readouterr().err == line + "\n"
    assert cli.warn_if_too_big(models.lenet5(), "lenet5", data) is None


def test_bench_rows_stay_aligned():
    from pycnn.bench import harness
    row = {"case": "c", "impl": "ours", "error": None, "time": {"median_ms": 1.0},
           "tflops": 1.0, "gbps": 1.0, "ratio_default": None, "ok": True}
    lines = [harness._one_line(dict(row, op=op)) for op in ("conv_fwd", "conv_bias_relu_fwd")]
    assert lines[0].index(" ms ") == lines[1].index(" ms ")
