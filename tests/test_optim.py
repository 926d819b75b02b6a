"""Optimizers against update sequences worked out by hand (two steps each, with
the arithmetic in the comments), plus schedulers and argument checks."""
import math

import numpy as np
import pytest

import pycnn
from pycnn import optim
from pycnn.tensor import Tensor


def _param(values):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


def _run(opt_cls, grads, p0=1.0, **kw):
    """Values of a one-element parameter after each step with the given gradients."""
    p = _param([p0])
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = Tensor(np.array([g], dtype=np.float64))
        opt.step()
        out.append(float(p.data[0]))
    return out


# ---------------------------------------------------------------- SGD
def test_sgd_plain():
    # p = 1 - 0.1*1 = 0.9 ; p = 0.9 - 0.1*2 = 0.7
    assert _run(optim.SGD, [1.0, 2.0], lr=0.1) == pytest.approx([0.9, 0.7])


def test_sgd_momentum_buffer_starts_at_first_gradient():
    # step 1: buf = 1            ; p = 1 - 0.1*1 = 0.9
    # step 2: buf = 0.9*1 + 2 = 2.9 ; p = 0.9 - 0.29 = 0.61
    assert _run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9) == pytest.approx([0.9, 0.61])


def test_sgd_nesterov():
    # step 1: buf = 1   ; g = 1 + 0.9*1 = 1.9   ; p = 1 - 0.19 = 0.81
    # step 2: buf = 2.9 ; g = 2 + 0.9*2.9 = 4.61 ; p = 0.81 - 0.461 = 0.349
    assert _run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9, nesterov=True) == \
        pytest.approx([0.81, 0.349])


def test_sgd_weight_decay():
    # step 1: g = 1 + 0.1*1 = 1.1      ; p = 1 - 0.11 = 0.89
    # step 2: g = 2 + 0.1*0.89 = 2.089 ; p = 0.89 - 0.2089 = 0.6811
    assert _run(optim.SGD, [1.0, 2.0], lr=0.1, weight_decay=0.1) == pytest.approx([0.89, 0.6811])


def test_sgd_dampening_not_applied_on_first_step():
    # step 1: buf = 1 ; p = 0.9 ; step 2: buf = 0.9*1 + 0.5*2 = 1.9 ; p = 0.9 - 0.19 = 0.71
    assert _run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9, dampening=0.5) == \
        pytest.approx([0.9, 0.71])


def test_sgd_momentum_with_weight_decay_three_steps():
    # wd=0.5, mu=0.5, lr=0.1, grads 1, 1, 1, p0 = 2
    # 1: g = 1 + 1 = 2        ; buf = 2                 ; p = 2 - 0.2 = 1.8
    # 2: g = 1 + 0.9 = 1.9    ; buf = 1 + 1.9 = 2.9     ; p = 1.8 - 0.29 = 1.51
    # 3: g = 1 + 0.755 = 1.755; buf = 1.45 + 1.755 = 3.205 ; p = 1.51 - 0.3205 = 1.1895
    assert _run(optim.SGD, [1.0, 1.0, 1.0], p0=2.0, lr=0.1, momentum=0.5, weight_decay=0.5) == \
        pytest.approx([1.8, 1.51, 1.1895])


# ---------------------------------------------------------------- Adam
def test_adam_bias_correction():
    # lr=0.1, betas=(0.9, 0.999), eps=1e-8
    # step 1: m = 0.1, v = 0.001 ; m^ = 1, v^ = 1 ; p = 1 - 0.1 * 1/(1 + 1e-8) = 0.9
    # step 2 (g = 2): m = 0.09 + 0.2 = 0.29 ; v = 0.000999 + 0.004 = 0.004999
    #   m^ = 0.29/0.19 ; v^ = 0.004999/0.001999 ; p = 0.9 - 0.1 * m^/(sqrt(v^) + 1e-8)
    m_hat = 0.29 / 0.19
    v_hat = 0.004999 / (1 - 0.999 ** 2)
    p2 = 0.9 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert p2 == pytest.approx(0.80348, abs=1e-5)
    assert _run(optim.Adam, [1.0, 2.0], lr=0.1) == pytest.approx([0.9, p2], rel=1e-7)


def test_adam_first_step_is_lr_times_sign():
    # With bias correction the first step moves each element by lr * g/|g| (up to eps).
    p = _param([1.0, -3.0, 0.5])
    opt = optim.Adam([p], lr=0.01)
    p.grad = Tensor(np.array([5.0, -0.001, 2.0]))
    opt.step()
    assert np.allclose(p.data, [0.99, -2.99, 0.49], atol=1e-6)


def test_adam_weight_decay():
    # wd=1: g = 1 + 1*1 = 2 ; first step still lr * sign = 0.1 -> 0.9
    # step 2, g = 0 + 0.9 = 0.9: m = 0.18 + 0.09 = 0.27 ; v = 0.003996 + 0.00081 = 0.004806
    m_hat, v_hat = 0.27 / 0.19, 0.004806 / (1 - 0.999 ** 2)
    expected = 0.9 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert _run(optim.Adam, [1.0, 0.0], lr=0.1, weight_decay=1.0) == pytest.approx([0.9, expected])


# ---------------------------------------------------------------- RMSprop
def test_rmsprop():
    # lr=0.01, alpha=0.99, eps=1e-8
    # step 1: v = 0.01 ; p = 1 - 0.01 * 1/(0.1 + 1e-8) = 0.9
    # step 2: v = 0.0099 + 0.04 = 0.0499 ; p = 0.9 - 0.01 * 2/sqrt(0.0499)
    expected2 = 0.9 - 0.01 * 2 / (math.sqrt(0.0499) + 1e-8)
    assert expected2 == pytest.approx(0.8104677, abs=1e-6)
    assert _run(optim.RMSprop, [1.0, 2.0]) == pytest.approx([0.9, expected2], rel=1e-6)


def test_rmsprop_centered():
    # step 1: v = 0.01, a = 0.01 ; d = sqrt(0.01 - 0.0001) = sqrt(0.0099) ; p = 1 - 0.01/d
    # step 2: v = 0.0499, a = 0.0099 + 0.02 = 0.0299 ; d = sqrt(0.0499 - 0.0299^2)
    p1 = 1 - 0.01 / (math.sqrt(0.0099) + 1e-8)
    p2 = p1 - 0.01 * 2 / (math.sqrt(0.0499 - 0.0299 ** 2) + 1e-8)
    assert _run(optim.RMSprop, [1.0, 2.0], centered=True) == pytest.approx([p1, p2], rel=1e-7)


def test_rmsprop_momentum():
    # step 1: buf = 1/0.1 = 10 ; p = 1 - 0.01*10 = 0.9
    # step 2: buf = 9 + 2/sqrt(0.0499) = 17.95323 ; p = 0.9 - 0.1795323 = 0.7204677
    assert _run(optim.RMSprop, [1.0, 2.0], momentum=0.9) == pytest.approx([0.9, 0.7204677], abs=1e-6)


# ---------------------------------------------------------------- Adagrad
def test_adagrad():
    # lr=0.1: step 1: s = 1 ; p = 1 - 0.1 = 0.9 ; step 2: s = 5 ; p = 0.9 - 0.2/sqrt(5) = 0.8105573
    assert _run(optim.Adagrad, [1.0, 2.0], lr=0.1) == pytest.approx([0.9, 0.8105573], abs=1e-6)


def test_adagrad_lr_decay_and_initial_accumulator():
    # lr_decay=0.5: step 2 uses clr = 0.1/(1 + 0.5) ; p = 0.9 - (0.1/1.5) * 2/sqrt(5)
    assert _run(optim.Adagrad, [1.0, 2.0], lr=0.1, lr_decay=0.5) == \
        pytest.approx([0.9, 0.9 - (0.1 / 1.5) * 2 / math.sqrt(5)])
    # initial_accumulator_value=1: s = 2 after step 1 ; p = 1 - 0.1/sqrt(2) = 0.9292893
    assert _run(optim.Adagrad, [1.0], lr=0.1, initial_accumulator_value=1.0) == \
        pytest.approx([0.9292893], abs=1e-6)


def test_weight_decay_in_rmsprop_and_adagrad():
    # RMSprop, wd=1, g=0: g' = 0 + 1*1 = 1 ; v = 0.01 ; p = 1 - 0.01 * 1/0.1 = 0.9
    assert _run(optim.RMSprop, [0.0], weight_decay=1.0) == pytest.approx([0.9], rel=1e-6)
    # Adagrad, lr=0.1, wd=0.5, g=1, 1:
    # 1: g' = 1.5 ; s = 2.25 ; p = 1 - 0.1 * 1.5/1.5 = 0.9
    # 2: g' = 1 + 0.45 = 1.45 ; s = 2.25 + 2.1025 = 4.3525 ; p = 0.9 - 0.1 * 1.45/sqrt(4.3525)
    assert _run(optim.Adagrad, [1.0, 1.0], lr=0.1, weight_decay=0.5) == \
        pytest.approx([0.9, 0.9 - 0.145 / math.sqrt(4.3525)])


# ---------------------------------------------------------------- common behaviour
@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.RMSprop, optim.Adagrad])
def test_skips_params_without_grad_and_keeps_dtype(cls):
    a = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    opt = cls([a, b], lr=0.1)
    a.grad = Tensor(np.full(3, 0.5, dtype=np.float32))
    opt.step()
    assert np.all(a.data < 1) and np.all(b.data == 1)
    assert a.data.dtype == np.float32
    opt.zero_grad()
    assert a.grad is None


def test_updates_in_place_and_elementwise():
    p = _param([1.0, 2.0])
    before = p.data
    opt = optim.SGD([p], lr=0.5)
    p.grad = Tensor(np.array([2.0, -2.0]))
    opt.step()
    assert p.data is before
    assert np.allclose(p.data, [0.0, 3.0])


@pytest.mark.parametrize("cls,kw,word", [
    (optim.SGD, {"lr": -0.1}, "lr"),
    (optim.SGD, {"lr": 0.1, "momentum": -1}, "momentum"),
    (optim.SGD, {"lr": 0.1, "nesterov": True}, "nesterov"),
    (optim.SGD, {"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    (optim.Adam, {"betas": (0.9, 1.0)}, "betas[1]"),
    (optim.Adam, {"eps": -1.0}, "eps"),
    (optim.RMSprop, {"alpha": -0.5}, "alpha"),
    (optim.Adagrad, {"lr_decay": -1}, "lr_decay"),
])
def test_bad_hyperparameters(cls, kw, word):
    with pytest.raises(ValueError, match=word.replace("[", r"\[").replace("]", r"\]")):
        cls([_param([1.0])], **kw)


def test_bad_params():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(_param([1.0]), lr=0.1)
    with pytest.raises(TypeError, match="lr"):
        optim.SGD([_param([1.0])], lr="fast")
    for bad in (float("inf"), float("nan")):
        with pytest.raises(TypeError, match=r"lr: expected a finite number"):
            optim.SGD([_param([1.0])], lr=bad)
    with pytest.raises(ValueError, match=r"params: element 0 is not a leaf tensor"):
        optim.SGD([_param([1.0]) * 2.0], lr=0.1)
    assert optim.SGD([_param([1.0])], lr=np.float32(0.5)).lr == 0.5


def test_state_dict_resumes_identically():
    grads = [np.array([0.3, -1.0]), np.array([2.0, 0.5]), np.array([-1.0, 1.0])]
    p = _param([1.0, -1.0])
    opt = optim.Adam([p], lr=0.05, weight_decay=0.01)
    for g in grads[:2]:
        p.grad = Tensor(g)
        opt.step()
    saved, saved_p = opt.state_dict(), p.data.copy()
    p.grad = Tensor(grads[2])
    opt.step()

    q = _param(saved_p)
    opt2 = optim.Adam([q], lr=1.0)
    opt2.load_state_dict(saved)
    assert opt2.lr == 0.05
    q.grad = Tensor(grads[2])
    opt2.step()
    assert np.array_equal(q.data, p.data)


def test_load_state_dict_keeps_float32_with_numpy_hyperparameters():
    # A state_dict read back from .npz holds NumPy float64 scalars; under NumPy 2 such a
    # scalar times a float32 array is float64, which must not reach the optimizer's buffers.
    p = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    saved = opt.state_dict()
    group = saved["param_groups"][0]
    for name in ("lr", "momentum", "weight_decay"):
        group[name] = np.float64(group[name])
    group["nesterov"] = np.bool_(False)
    opt.load_state_dict(saved)
    assert type(opt.lr) is float and type(opt.nesterov) is bool
    p.grad = Tensor(np.full(3, 0.5, dtype=np.float32))
    opt.step()
    assert opt.state[0]["momentum_buffer"].dtype == np.float32
    # 1 - 0.1 * (0.5 + 0.01 * 1) = 0.949
    assert p.data.dtype == np.float32 and np.allclose(p.data, 0.949)


def test_load_state_dict_checks_state_against_the_parameters():
    p = _param([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = Tensor(np.array([1.0, 1.0]))
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["momentum_buffer"] = saved["state"][0]["momentum_buffer"].astype(np.float32)
    opt.load_state_dict(saved)
    assert opt.state[0]["momentum_buffer"].dtype == np.float64  # the parameter's dtype
    bad = {"state": {3: saved["state"][0]}, "param_groups": saved["param_groups"]}
    with pytest.raises(ValueError, match="parameter 3"):
        opt.load_state_dict(bad)
    bad = {"state": {0: {"momentum_buffer": np.zeros(5)}}, "param_groups": saved["param_groups"]}
    with pytest.raises(ValueError, match=r"\(5,\).*\(2,\)"):
        opt.load_state_dict(bad)


def test_sgd_trains_a_linear_model():
    from pycnn import nn
    import pycnn.functional as F
    pycnn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype=np.float32) + 0.3).astype(np.float32)
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = F.mse_loss(model(pycnn.tensor(x)), pycnn.tensor(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-4 * losses[0]
    assert np.allclose(model.weight.data, [[1.0, -2.0, 0.5]], atol=1e-2)


# ---------------------------------------------------------------- schedulers
def test_step_lr():
    opt = optim.SGD([_param([1.0])], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.1)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    assert sched.get_last_lr() == pytest.approx([0.01])


def test_exponential_lr():
    opt = optim.Adam([_param([1.0])], lr=0.8)
    sched = optim.ExponentialLR(opt, gamma=0.5)
    for expected in (0.4, 0.2, 0.1):
        sched.step()
        assert opt.lr == pytest.approx(expected)
        assert sched.get_last_lr() == pytest.approx([expected])


def test_scheduler_state_dict_resumes_with_python_numbers():
    opt = optim.SGD([_param([1.0])], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    sched.step()
    saved = {k: (np.float64(v) if isinstance(v, float) else v)
             for k, v in sched.state_dict().items()}  # as read back from .npz
    opt2 = optim.SGD([_param([1.0])], lr=1.0)
    sched2 = optim.StepLR(opt2, step_size=2, gamma=0.1)
    sched2.load_state_dict(saved)
    sched2.step()                     # epoch 2: 1.0 * 0.5 ** (2 // 2)
    assert opt2.lr == 0.5 and type(opt2.lr) is float


def test_scheduler_arguments():
    opt = optim.SGD([_param([1.0])], lr=1.0)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(TypeError, match="optimizer"):
        optim.ExponentialLR("sgd", gamma=0.9)
