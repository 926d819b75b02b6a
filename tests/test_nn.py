"""pycnn.nn: registration, naming, state_dict, modes, initialisation and layers,
checked against plain NumPy loops and hand-worked numbers."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import pycnn
import pycnn.functional as F
from pycnn import nn


def _x(*shape, seed=0, dtype=np.float32):
    return pycnn.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        self.scale = 2.0  # a plain attribute: not registered

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x)))) * self.scale


# ---------------------------------------------------------------- registration
def test_parameters_are_registered_in_definition_order_with_dotted_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["conv.weight", "conv.bias", "bn.weight", "bn.bias",
                     "head.1.weight", "head.1.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_children()] == ["conv", "bn", "head"]
    assert [type(m).__name__ for m in net.modules()] == \
        ["Net", "Conv2d", "BatchNorm2d", "Sequential", "Flatten", "Linear"]
    assert net.scale == 2.0 and "scale" not in dict(net.named_parameters())
    assert [n for n, _ in net.named_buffers()] == \
        ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


def test_shared_parameter_listed_once_and_reassignment_replaces():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2
    net = Net()
    net.conv = nn.Identity()
    assert "conv.weight" not in dict(net.named_parameters())
    del net.bn
    assert "bn.weight" not in dict(net.named_parameters())


def test_assignment_keeps_registered_kinds_like_torch():
    lin = nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"weight.*Tensor.*Parameter or None"):
        lin.weight = pycnn.tensor(np.zeros((3, 2), np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]  # still registered
    lin.bias = None  # None keeps the slot: the forward runs without a bias
    assert [n for n, _ in lin.named_parameters()] == ["weight"] and lin.bias is None
    assert lin(_x(4, 2)).shape == (4, 3)
    lin.bias = nn.Parameter(np.ones(3, np.float32))
    assert list(lin.state_dict()) == ["weight", "bias"]

    seq = nn.Sequential(nn.ReLU())
    with pytest.raises(TypeError, match="submodule '0'"):
        setattr(seq, "0", "relu")
    bn = nn.BatchNorm2d(2)
    with pytest.raises(TypeError, match="running_mean"):
        bn.running_mean = 0.0
    with pytest.raises(ValueError, match="name"):
        lin.register_parameter("a.b", None)
    with pytest.raises(ValueError, match="name"):
        seq.add_module("", nn.ReLU())


def test_setattr_before_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2, np.float32))
    with pytest.raises(RuntimeError, match="Module.__init__"):
        Bad()


def test_register_buffer_checks():
    m = nn.Module()
    m.register_buffer("steps", np.zeros(3))
    m.steps = np.ones(3)  # assignment to a buffer name updates the buffer
    assert np.array_equal(m.state_dict()["steps"], np.ones(3))
    with pytest.raises(ValueError, match="name"):
        m.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="array"):
        m.register_buffer("c", "nope")


def test_zero_grad_and_module_call_runs_forward_hooks():
    lin = nn.Linear(3, 2)
    calls = []
    handle = lin.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    lin(_x(4, 3)).sum().backward()
    assert calls == [(4, 2)]
    assert lin.weight.grad is not None
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    handle.remove()
    lin(_x(1, 3))
    assert len(calls) == 1


def test_hook_replaces_output_grads_and_freezing():
    lin = nn.Linear(3, 2)
    lin.register_forward_hook(lambda mod, inp, out: out * 2.0)
    x = _x(4, 3)
    assert np.allclose(lin(x).numpy(), 2 * (x.numpy() @ lin.weight.data.T + lin.bias.data))

    net = Net()
    net(_x(2, 2, 4, 4)).sum().backward()
    grad = net.conv.weight.grad
    net.zero_grad(set_to_none=False)  # zeroed in place, the same Tensor kept
    assert net.conv.weight.grad is grad and np.all(grad.data == 0)
    assert net.num_parameters() == 2 * 4 * 9 + 4 + 4 + 4 + 64 * 3 + 3
    net.conv.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == 4 + 4 + 64 * 3 + 3
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Conv2d", "BatchNorm2d", "Flatten", "Linear", "Sequential", "Net"]


def test_repr_is_readable():
    text = repr(nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, bias=False), nn.ReLU()))
    assert text.splitlines() == [
        "Sequential(",
        "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2), bias=False)",
        "  (1): ReLU()",
        ")",
    ]


# ---------------------------------------------------------------- state_dict
def test_state_dict_keys_like_pytorch_and_values_are_cpu_copies():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Linear(2, 2))
    sd = seq.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked", "3.weight", "3.bias"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
    sd["0.weight"][...] = 123.0
    assert not np.any(seq[0].weight.data == 123.0)


def test_state_dict_round_trip_gives_identical_outputs():
    pycnn.manual_seed(1)
    a = Net()
    a(_x(8, 2, 4, 4, seed=3))  # one training-mode pass moves the running statistics
    sd = a.state_dict()
    assert int(sd["bn.num_batches_tracked"]) == 1
    pycnn.manual_seed(2)
    b = Net()
    x = _x(2, 2, 4, 4, seed=4)
    a.eval(), b.eval()
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert np.array_equal(a(x).numpy(), b(x).numpy())
    assert np.array_equal(b.bn.running_mean, a.bn.running_mean)
    assert int(b.bn.num_batches_tracked) == 1


def test_load_state_dict_reports_missing_unexpected_and_mismatched_keys():
    net = Net()
    before = net.conv.weight.data.copy()
    sd = net.state_dict()
    sd["conv.weight"] = np.zeros((4, 2, 5, 5), np.float32)
    del sd["bn.running_var"]
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert "missing keys: bn.running_var" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "conv.weight" in msg and "(4, 2, 5, 5)" in msg and "(4, 2, 3, 3)" in msg
    assert np.array_equal(net.conv.weight.data, before)  # nothing copied

    # strict=False tolerates missing/unexpected keys but never a wrong shape
    with pytest.raises(ValueError, match="shape mismatch"):
        net.load_state_dict(sd, strict=False)
    sd["conv.weight"] = np.ones((4, 2, 3, 3), np.float32)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bn.running_var"]
    assert result.unexpected_keys == ["extra.weight"]
    assert np.all(net.conv.weight.data == 1.0)
    with pytest.raises(TypeError, match="state_dict"):
        net.load_state_dict([1, 2])
    # a value that is not numbers fails the whole load before anything is copied
    sd = {k: np.full_like(v, 7.0) for k, v in net.state_dict().items()}
    sd["conv.bias"] = np.array(["x"] * 4)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"not numbers: conv.bias \(dtype <U1\)"):
        net.load_state_dict(sd)
    assert all(np.array_equal(net.state_dict()[k], v) for k, v in before.items())


def test_load_state_dict_copies_in_place_in_the_model_dtype():
    bn = nn.BatchNorm2d(3)
    weight, running_var = bn.weight.data, bn.running_var
    sd = {"weight": pycnn.tensor(np.full(3, 2.0)),                 # a Tensor, float64
          "bias": [0.5, 0.5, 0.5],                                  # a list
          "running_mean": np.arange(3, dtype=np.float64),
          "running_var": np.full(3, 4.0, np.float64),
          "num_batches_tracked": np.int64(7)}                       # a NumPy scalar
    bn.load_state_dict(sd)
    assert bn.weight.data is weight and bn.running_var is running_var  # same arrays, new values
    assert bn.weight.dtype == np.float32 and bn.running_mean.dtype == np.float32
    assert np.array_equal(bn.weight.data, [2, 2, 2]) and np.array_equal(bn.bias.data, [0.5] * 3)
    assert np.array_equal(bn.running_mean, [0, 1, 2]) and np.array_equal(running_var, [4, 4, 4])
    assert bn.num_batches_tracked.dtype == np.int64 and int(bn.num_batches_tracked) == 7
    sd["running_mean"][0] = 9.0
    assert bn.running_mean[0] == 0.0  # copied, not aliased


# ---------------------------------------------------------------- modes
def test_train_eval_switches_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_train_calls_each_submodules_own_train():
    class FrozenNorm(nn.BatchNorm2d):
        def train(self, mode=True):
            return super().train(False)  # always in eval: running statistics stay fixed
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), FrozenNorm(2)), nn.ReLU())
    net.eval().train()
    assert net.training and net[0].training and net[1].training
    assert not net[0][1].training
    with pytest.raises(TypeError, match="mode"):
        net.train("yes")


def test_dropout_train_and_eval():
    drop = nn.Dropout(0.25)
    x = pycnn.tensor(np.ones((200, 50), np.float32))
    y1, y2 = drop(x).numpy(), drop(x).numpy()
    for y in (y1, y2):
        kept = y != 0
        assert np.allclose(y[kept], 1 / 0.75)
        assert 0.70 < kept.mean() < 0.80
    assert not np.array_equal(y1, y2)  # a fresh mask per call
    drop.eval()
    assert drop(x) is x
    # seeding makes the masks repeatable
    drop.train()
    nn.init.manual_seed(7)
    a = drop(x).numpy()
    nn.init.manual_seed(7)
    assert np.array_equal(a, drop(x).numpy())
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(1.5)


def test_batchnorm_training_and_eval_against_numpy():
    x = _x(4, 3, 5, 5, seed=5, dtype=np.float64).numpy() * 2 + 1
    bn = nn.BatchNorm2d(3, momentum=0.1).double()
    y = bn(pycnn.tensor(x)).numpy()
    mean = x.mean(axis=(0, 2, 3))
    var_biased = x.var(axis=(0, 2, 3))
    var_unbiased = x.var(axis=(0, 2, 3), ddof=1)
    expected = (x - mean[None, :, None, None]) / np.sqrt(var_biased[None, :, None, None] + 1e-5)
    assert np.allclose(y, expected, atol=1e-10)
    assert np.allclose(bn.running_mean, 0.9 * 0 + 0.1 * mean)
    assert np.allclose(bn.running_var, 0.9 * 1 + 0.1 * var_unbiased)
    assert int(bn.num_batches_tracked) == 1

    bn.eval()
    y_eval = bn(pycnn.tensor(x)).numpy()
    rm, rv = bn.running_mean, bn.running_var
    assert np.allclose(y_eval, (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5))
    assert int(bn.num_batches_tracked) == 1  # eval does not count


def test_batchnorm_updates_and_resets_its_buffers_in_place():
    # In-place updates keep every buffer on the device Module.to put it on.
    bn = nn.BatchNorm2d(2)
    count, mean = bn.num_batches_tracked, bn.running_mean
    bn(_x(2, 2, 3, 3))
    bn(_x(2, 2, 3, 3, seed=1))
    assert bn.num_batches_tracked is count and int(count) == 2
    assert bn.running_mean is mean and np.any(mean != 0)
    bn.reset_running_stats()
    assert bn.num_batches_tracked is count and int(count) == 0
    assert bn.running_mean is mean and np.all(mean == 0) and np.all(bn.running_var == 1)


def test_batchnorm_cumulative_average_and_no_running_stats():
    xs = [_x(2, 2, 3, 3, seed=s, dtype=np.float64).numpy() for s in (1, 2)]
    bn = nn.BatchNorm2d(2, momentum=None).double()
    for x in xs:
        bn(pycnn.tensor(x))
    expected = np.mean([x.mean(axis=(0, 2, 3)) for x in xs], axis=0)
    assert np.allclose(bn.running_mean, expected)

    plain = nn.BatchNorm2d(2, affine=False, track_running_stats=False)
    assert list(plain.state_dict()) == []
    plain.eval()  # still uses batch statistics
    y = plain(pycnn.tensor(xs[0].astype(np.float32))).numpy()
    assert np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        bn(_x(2, 3, 3, 3, dtype=np.float64))


# ---------------------------------------------------------------- initialisation
def test_default_init_bounds_like_pytorch():
    nn.init.manual_seed(0)
    conv = nn.Conv2d(3, 64, 5)
    bound = 1 / math.sqrt(3 * 5 * 5)  # kaiming_uniform(a=sqrt(5)) reduces to 1/sqrt(fan_in)
    w = conv.weight.data
    assert w.dtype == np.float32 and w.shape == (64, 3, 5, 5)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform std
    assert np.abs(conv.bias.data).max() <= bound
    lin = nn.Linear(400, 120)
    assert np.abs(lin.weight.data).max() <= 1 / 20 and np.abs(lin.bias.data).max() <= 1 / 20
    grouped = nn.Conv2d(8, 4, 3, groups=4)  # fan_in = (8/4) * 9 = 18
    assert np.abs(grouped.weight.data).max() <= 1 / math.sqrt(18)
    bn = nn.BatchNorm2d(5)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)


def test_manual_seed_reproduces_weights():
    nn.init.manual_seed(3)
    a = nn.Conv2d(2, 3, 3).weight.data.copy()
    pycnn.manual_seed(3)  # the same generator
    b = nn.Conv2d(2, 3, 3).weight.data
    assert np.array_equal(a, b)
    assert not np.array_equal(b, nn.Conv2d(2, 3, 3).weight.data)
    with pytest.raises(TypeError, match="seed"):
        nn.init.manual_seed(1.5)


def test_init_functions():
    nn.init.manual_seed(0)
    w = nn.Parameter(np.zeros((256, 128, 3, 3), np.float32))
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert np.std(w.data) == pytest.approx(math.sqrt(2) / math.sqrt(256 * 9), rel=0.02)
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(w.data).max() <= math.sqrt(2) * math.sqrt(3 / (128 * 9))
    nn.init.xavier_uniform_(w)
    b = math.sqrt(6 / (128 * 9 + 256 * 9))
    assert np.abs(w.data).max() <= b and np.abs(w.data).max() > 0.99 * b
    assert np.all(nn.init.zeros_(w).data == 0) and np.all(nn.init.ones_(w).data == 1)
    assert w.data.dtype == np.float32
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_normal_(w, mode="fan_sideways")
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.kaiming_normal_(w, nonlinearity="swish")
    # torch.nn.init.calculate_gain's table
    gains = {"conv_transpose2d": 1.0, "sigmoid": 1.0, "tanh": 5 / 3, "selu": 3 / 4,
             "relu": math.sqrt(2)}
    for name, gain in gains.items():
        assert nn.init.calculate_gain(name) == pytest.approx(gain)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))


# ---------------------------------------------------------------- layers against loops
def _conv_loops(x, w, b, stride, pad, dil, groups):
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    p = (h + 2 * pad - dil * (r - 1) - 1) // stride + 1
    q = (wd + 2 * pad - dil * (s - 1) - 1) // stride + 1
    out = np.zeros((n, k, p, q))
    kg = k // groups
    for ni in range(n):
        for ki in range(k):
            g = ki // kg
            for i in range(p):
                for j in range(q):
                    acc = b[ki]
                    for ci in range(cg):
                        for u in range(r):
                            for v in range(s):
                                acc += w[ki, ci, u, v] * xp[ni, g * cg + ci, i * stride + u * dil,
                                                            j * stride + v * dil]
                    out[ni, ki, i, j] = acc
    return out


def test_conv2d_layer_passes_its_arguments():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2).double()
    x = _x(1, 4, 7, 7, seed=2, dtype=np.float64)
    expected = _conv_loops(x.numpy(), conv.weight.data, conv.bias.data, 2, 1, 2, 2)
    assert np.allclose(conv(x).numpy(), expected, atol=1e-10)


def test_linear_forward_and_backward_against_numpy():
    lin = nn.Linear(3, 2).double()
    x = _x(5, 3, dtype=np.float64)
    y = lin(x)
    assert np.allclose(y.numpy(), x.numpy() @ lin.weight.data.T + lin.bias.data)
    y.sum().backward()
    assert np.allclose(lin.weight.grad.numpy(), np.ones((5, 2)).T @ x.numpy())
    assert np.allclose(lin.bias.grad.numpy(), [5, 5])


def test_pool_activation_and_shape_layers():
    x = _x(2, 3, 6, 6, seed=9)
    a = x.numpy()
    assert np.allclose(nn.MaxPool2d(2)(x).numpy(), a.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    assert np.allclose(nn.AvgPool2d(3)(x).numpy(), a.reshape(2, 3, 2, 3, 2, 3).mean(axis=(3, 5)),
                       atol=1e-6)
    assert np.allclose(nn.AdaptiveAvgPool2d(1)(x).numpy(), a.mean(axis=(2, 3), keepdims=True),
                       atol=1e-6)
    assert np.allclose(nn.ReLU()(x).numpy(), np.maximum(a, 0))
    assert np.allclose(nn.LeakyReLU(0.2)(x).numpy(), np.where(a > 0, a, 0.2 * a))
    assert np.allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-a)), atol=1e-6)
    assert np.allclose(nn.Tanh()(x).numpy(), np.tanh(a), atol=1e-6)
    assert nn.Flatten()(x).shape == (2, 108)
    assert nn.Flatten(0)(x).shape == (216,)
    assert nn.Identity(5, key=1)(x) is x
    assert nn.MaxPool2d(3, stride=2, padding=1)(x).shape == (2, 3, 3, 3)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="in_channels"):
        nn.Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match="out_features"):
        nn.Linear(3, -1)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=2.0)
    with pytest.raises(TypeError, match=r"momentum: expected a finite number, got 'a'"):
        nn.BatchNorm2d(3, momentum="a")
    with pytest.raises(TypeError, match=r"eps: expected a finite number, got None"):
        nn.BatchNorm2d(3, eps=None)
    with pytest.raises(TypeError, match=r"negative_slope: expected a finite number, got 'a'"):
        nn.LeakyReLU("a")
    with pytest.raises(IndexError, match=r"flatten: start_dim must be an int in \[-2, 1\]"):
        nn.Flatten(5)(_x(2, 3))
    # NumPy numbers count, as in torch.nn
    conv = nn.Conv2d(np.int64(3), 4, np.int64(3), stride=np.int64(2), padding=np.int32(1))
    assert conv(_x(1, 3, 8, 8)).shape == (1, 4, 4, 4)
    assert nn.Dropout(np.float32(0.25)).p == 0.25
    assert nn.BatchNorm2d(3, momentum=None, eps=np.float32(1e-3)).momentum is None


def test_sequential_container():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:]
    with pytest.raises(IndexError):
        seq[3]
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    x = _x(4, 2)
    manual = layers[2](layers[1](layers[0](x)))
    assert np.array_equal(seq(x).numpy(), manual.numpy())
    ml = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    assert len(ml) == 2 and list(ml.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    tail = ml[1:]
    assert isinstance(tail, nn.ModuleList) and tail[0] is ml[1] and tail[-1] is ml[-1]
    assert list(tail.state_dict()) == ["0.weight", "0.bias"]
    with pytest.raises(IndexError, match="ModuleList of length 2"):
        ml[2]


def test_astype_double_casts_params_and_buffers():
    net = Net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.bn.running_mean.dtype == np.float64
    assert net.bn.num_batches_tracked.dtype == np.int64
    assert net(_x(2, 2, 4, 4, dtype=np.float64)).dtype == np.float64


def test_to_cpu_is_a_no_op_and_bad_device_is_an_error():
    net = Net()
    w = net.conv.weight.data
    assert net.to("cpu") is net and net.conv.weight.data is w
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not pycnn.cuda_available(), reason="needs CuPy, a GPU and pycnn._C")
def test_to_cuda_moves_parameters_and_buffers():
    net = Net()
    x = _x(3, 2, 4, 4)
    net.eval()
    expected = net(x).numpy()
    param = net.conv.weight
    net.to("cuda")
    assert net.conv.weight is param and param.device == "cuda"
    assert all(b.__class__.__module__.startswith("cupy") for b in net.buffers())
    got = net(x.to("cuda")).numpy()
    assert np.allclose(got, expected, atol=1e-4)
    net.train()
    net(x.to("cuda")).sum().backward()
    assert net.conv.weight.grad.device == "cuda"
    sd = net.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    net.to("cpu")
    assert param.device == "cpu"


def test_fuse_conv_relu_keeps_parameters_keys_and_results():
    from pycnn import models, optim
    import pycnn.functional as F

    pycnn.manual_seed(0)
    plain = models.lenet5()
    fused = models.lenet5()
    fused.load_state_dict(plain.state_dict())
    params_before = list(fused.parameters())
    opt = optim.SGD(fused.parameters(), lr=0.1)          # made before fusing: must keep working
    nn.fuse_conv_relu(fused)
    assert isinstance(fused.features[0], nn.ConvReLU2d) and isinstance(fused.features[1], nn.Identity)
    assert isinstance(fused.features[3], nn.ConvReLU2d) and isinstance(fused.features[4], nn.Identity)
    assert isinstance(fused.classifier[2], nn.ReLU)      # a Linear's ReLU is left alone
    assert all(a is b for a, b in zip(fused.parameters(), params_before))
    assert list(fused.state_dict()) == list(plain.state_dict())

    x = pycnn.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
    y = np.array([0, 1, 2, 3])
    losses = []
    for model in (plain, fused):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    opt.step()
    assert not np.array_equal(fused.features[0].weight.numpy(), plain.features[0].weight.numpy())
