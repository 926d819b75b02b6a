"""Nothing computed silently in a precision, with a hyperparameter or from a gradient that
was not meant: float16 is refused like any other dtype that is not float32/float64, an
optimizer checks its hyperparameters on every assignment and refuses NaN/inf gradients,
and anomaly mode names the first op that makes a NaN or inf, forward or backward."""
import math

import numpy as np
import pytest

import pycnn
import pycnn.functional as F
from pycnn import nn, optim

# ----------------------------------------------------------------------------- float16

FLOAT16_OPS = {
    "conv2d": lambda x: F.conv2d(x, x),
    "max_pool2d": lambda x: F.max_pool2d(x, 1),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 1),
    "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1),
    "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "leaky_relu": F.leaky_relu,
    "softmax": F.softmax, "log_softmax": F.log_softmax, "dropout": F.dropout,
    "linear": lambda x: F.linear(x.reshape(1, 4), x.reshape(1, 4)),
    "mse_loss": lambda x: F.mse_loss(x, x),
    "batch_norm": lambda x: F.batch_norm(x, None, None, training=True),
}


@pytest.mark.parametrize("name", sorted(FLOAT16_OPS))
@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_float16_is_refused_like_integers(name, dtype):
    x = pycnn.tensor(np.ones((1, 1, 2, 2), dtype=dtype))
    with pytest.raises(TypeError, match=rf"must be a floating tensor \(float32 or float64\), "
                                        rf"got dtype {np.dtype(dtype).name}"):
        FLOAT16_OPS[name](x)


def test_float16_cannot_require_grad_or_be_a_model_dtype():
    with pytest.raises(TypeError, match=r"float32 or float64.*got dtype float16"):
        pycnn.tensor(np.ones(3, np.float16), requires_grad=True)
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"dtype: expected a floating dtype \(float32 or "
                                        r"float64\), got float16"):
        layer.astype(np.float16)
    assert layer.weight.dtype == np.float32            # untouched
    assert F.relu(pycnn.tensor(np.ones(2, np.float64))).dtype == np.float64


# ----------------------------------------------------------------------------- optimizers

def _param(values=(1.0, 2.0)):
    return pycnn.tensor(np.array(values, np.float32), requires_grad=True)


OPTIMIZERS = [
    (optim.SGD, {"lr": 0.1, "momentum": 0.9}, ["lr", "momentum", "dampening", "weight_decay"]),
    (optim.Adam, {"lr": 0.1}, ["lr", "eps", "weight_decay"]),
    (optim.RMSprop, {"lr": 0.1}, ["lr", "alpha", "eps", "weight_decay", "momentum"]),
    (optim.Adagrad, {"lr": 0.1}, ["lr", "lr_decay", "weight_decay",
                                  "initial_accumulator_value", "eps"]),
]


@pytest.mark.parametrize("cls, kwargs, names", OPTIMIZERS, ids=lambda v: getattr(v, "__name__", ""))
def test_hyperparameters_are_checked_on_every_assignment(cls, kwargs, names):
    opt = cls([_param()], **kwargs)
    for name in names:
        before = getattr(opt, name)
        for bad, error, text in ((math.nan, TypeError, "expected a finite number, got nan"),
                                 (math.inf, TypeError, "expected a finite number, got inf"),
                                 (-1.0, ValueError, "expected a value >= 0.0, got -1.0"),
                                 ("0.1", TypeError, "expected a finite number, got '0.1'")):
            with pytest.raises(error, match=f"^{name}: {text}"):
                setattr(opt, name, bad)
            assert getattr(opt, name) == before          # the refused value was not taken
    opt.lr = np.float32(0.25)                            # a good value is taken, as a float
    assert opt.lr == 0.25 and type(opt.lr) is float


def test_range_rules_and_rules_between_hyperparameters_hold_on_assignment():
    adam = optim.Adam([_param()])
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a value < 1.0, got 1.0"):
        adam.betas = (0.9, 1.0)
    with pytest.raises(TypeError, match="betas: expected a pair of numbers"):
        adam.betas = 0.9
    assert adam.betas == (0.9, 0.999)
    rms = optim.RMSprop([_param()])
    with pytest.raises(ValueError, match="alpha: expected a value <= 1.0, got 1.5"):
        rms.alpha = 1.5
    with pytest.raises(TypeError, match="centered: expected True or False, got 'yes'"):
        rms.centered = "yes"
    sgd = optim.SGD([_param()], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="nesterov: needs momentum > 0 and dampening == 0"):
        sgd.momentum = 0.0
    assert sgd.momentum == 0.9
    # a state_dict that turns nesterov off and momentum to 0 together loads fine
    sgd.load_state_dict(optim.SGD([_param()], lr=0.2).state_dict())
    assert (sgd.lr, sgd.momentum, sgd.nesterov) == (0.2, 0.0, False)
    state = sgd.state_dict()
    state["param_groups"][0]["lr"] = float("nan")
    with pytest.raises(TypeError, match="lr: expected a finite number, got nan"):
        sgd.load_state_dict(state)
    assert sgd.lr == 0.2
    # a scheduler's lr goes through the same check
    scheduler = optim.ExponentialLR(sgd, gamma=0.5)
    scheduler.step()
    assert sgd.lr == 0.1


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.RMSprop, optim.Adagrad])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_is_refused_before_any_weight_moves(cls, bad):
    a, b = _param([1.0, 2.0]), _param([3.0, 4.0, 5.0])
    opt = cls([a, b], lr=0.1)
    a.grad = pycnn.tensor(np.array([0.5, 0.5], np.float32))
    b.grad = pycnn.tensor(np.array([0.5, bad, 0.5], np.float32))
    with pytest.raises(optim.NonFiniteGradient) as e:
        opt.step()
    what = "1 nan value" if np.isnan(bad) else "1 inf value"
    assert str(e.value) == (f"grad of parameter 1 (shape (3,)) holds {what}; the step was "
                            "skipped, no parameter changed")
    assert e.value.index == 1
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])      # a's update did not run either
    np.testing.assert_array_equal(b.numpy(), [3.0, 4.0, 5.0])
    assert all(not s for s in opt.state)


def test_huge_but_finite_gradients_are_not_mistaken_for_inf():
    # their float32 sum overflows to inf; the exact check sees finite values
    p = pycnn.tensor(np.zeros(4, np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=1e-38)
    p.grad = pycnn.tensor(np.full(4, 3e38, np.float32))
    opt.step()
    assert np.all(np.isfinite(p.numpy())) and np.all(p.numpy() < 0)


class _SqrtScaled(nn.Module):
    """linear(x) * sqrt(scale): finite forward, and an infinite gradient for scale[0] = 0."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.scale = nn.Parameter(np.array([0.0, 1.0], np.float32))

    def forward(self, x):
        return self.linear(x.flatten(1)) * self.scale ** 0.5


def test_fit_reports_a_non_finite_gradient_by_parameter_name():
    from pycnn.data import DataLoader, Dataset
    from pycnn.train import TrainingDiverged, fit
    x = np.random.default_rng(0).standard_normal((8, 1, 2, 2)).astype(np.float32)
    model = _SqrtScaled()
    loader = DataLoader(Dataset(x, np.zeros(8, np.int64)), 4)
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged) as e, np.errstate(divide="ignore", invalid="ignore"):
        fit(model, opt, loader, loader, 2, progress=False, log=None,
            names=[n for n, _ in model.named_parameters()])
    assert (e.value.epoch, e.value.step, e.value.history) == (1, 1, [])
    assert e.value.reason == "the gradient of scale (shape (2,)) holds 1 inf value"
    assert str(e.value) == ("training diverged: the gradient of scale (shape (2,)) holds 1 inf "
                            "value at epoch 1")
    for k, v in model.state_dict().items():               # the refused step moved nothing
        np.testing.assert_array_equal(v, before[k])


# ----------------------------------------------------------------------------- anomaly mode

def test_anomaly_names_the_first_op_that_makes_an_inf_in_the_forward():
    x = pycnn.tensor(np.array([[1.0, 0.0, 2.0]]), requires_grad=True)
    with pycnn.detect_anomaly():
        y = F.relu(x)                                      # finite: passes
        with pytest.raises(pycnn.AnomalyError) as e, np.errstate(divide="ignore"):
            y.log()
    assert not pycnn.is_anomaly_enabled()                  # the context restored it
    assert e.value.op == "log" and e.value.phase == "forward"
    assert str(e.value).startswith("anomaly: log forward (called at ")
    assert __file__ in e.value.where                       # the line here, not pycnn's
    assert str(e.value).endswith("produced 1 inf values in its output of shape (1, 3) from "
                                 "finite inputs")
    with np.errstate(divide="ignore"):
        assert np.isinf(x.log().numpy()).any()             # off: no check


def test_anomaly_says_when_the_nan_came_from_outside_the_graph():
    layer = nn.Linear(3, 2)
    layer.weight.data[0, 0] = np.nan
    pycnn.set_anomaly(True)
    try:
        with pytest.raises(pycnn.AnomalyError, match=r"linear forward .* its input 1 already "
                                                     r"held nan or inf"):
            layer(pycnn.tensor(np.ones((1, 3), np.float32)))
    finally:
        pycnn.set_anomaly(False)
    with pytest.raises(TypeError, match="enabled: expected True or False"):
        pycnn.set_anomaly("on")


def test_anomaly_names_the_op_whose_backward_makes_an_inf():
    x = pycnn.tensor(np.array([0.0, 4.0]), requires_grad=True)
    with pycnn.detect_anomaly():
        y = (x ** 0.5).sum()                               # sqrt(0) = 0 is finite
        with pytest.raises(pycnn.AnomalyError) as e, np.errstate(divide="ignore"):
            y.backward()
    assert e.value.op == "pow" and e.value.phase == "backward"
    assert "produced 1 inf values in the gradient of its input 0 (shape (2,)) from a finite " \
           "gradient" in str(e.value)


def test_train_detect_anomaly_stops_at_the_op_and_says_so(tmp_path, capsys):
    import json
    from pycnn import cli
    code = cli.main(["train", "--lr", "1e30", "--limit", "64", "--epochs", "3", "--out",
                     str(tmp_path), "--device", "cpu", "--no-progress", "--detect-anomaly"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("training stopped by --detect-anomaly: anomaly: ")
    assert "forward (called at " in err and err.count("\n") == 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # the one step of epoch 1 blows the weights up; its evaluation's forward overflows
    assert metrics["diverged"]["phase"] == "forward" and metrics["diverged"]["op"]
    assert metrics["diverged"]["epoch"] == 1 and metrics["epochs"] == []
    assert err.rstrip().endswith("; no model.npz written")
    assert not pycnn.is_anomaly_enabled()
