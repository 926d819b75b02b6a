"""Tensor.max/min/argmax/argmin, F.maxout, ELU, GELU, PReLU, nn.Softmax: forward against
NumPy and loop definitions, backward against central differences (pycnn.gradcheck) and
PyTorch as a peer; and the zoo's new models against torchvision's parameter counts."""
import math

import numpy as np
import pytest

import pycnn
import pycnn.functional as F
from pycnn import models, nn
from pycnn.gradcheck import gradcheck


def _t(a, grad=True):
    return pycnn.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _rand(*shape, seed=0):
    # distinct values: max/argmax without ties, so that differences are smooth
    rng = np.random.default_rng(seed)
    return rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape) + \
        rng.uniform(-1e-3, 1e-3, shape)


# ----------------------------------------------------------------------------- max / min

@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_values_indices_and_gradient(dim, keepdim, op):
    a = _rand(3, 4, 5)
    x = _t(a)
    out = getattr(x, op)(dim, keepdim)
    ref = getattr(np, op)(a, axis=dim, keepdims=keepdim)
    values = out if dim is None else out.values
    np.testing.assert_array_equal(values.numpy(), ref)
    if dim is not None:
        idx = getattr(np, "arg" + op)(a, axis=dim)
        idx = np.expand_dims(idx, dim) if keepdim else idx
        np.testing.assert_array_equal(out.indices.numpy(), idx)
        assert out[0] is out.values and out.indices.dtype == np.int64
    assert gradcheck(lambda t: (getattr(t, op)(dim, keepdim) if dim is None
                                else getattr(t, op)(dim, keepdim).values), [x])


def test_max_gradient_goes_to_the_first_of_ties():
    x = _t([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    x.max(1).values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    y = _t([5.0, 5.0])
    y.max().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [1, 0])


def test_argmax_argmin():
    a = _rand(4, 6)
    x = _t(a, grad=False)
    assert int(x.argmax().numpy()) == int(np.argmax(a))
    np.testing.assert_array_equal(x.argmin(1).numpy(), np.argmin(a, axis=1))
    np.testing.assert_array_equal(x.argmax(axis=0).numpy(), np.argmax(a, axis=0))
    assert x.argmax(1, keepdim=True).shape == (4, 1)
    assert x.argmax(keepdim=True).shape == (1, 1)


def test_max_bad_arguments():
    x = _t(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dim 2 is out of range for a 2-D tensor"):
        x.max(2)
    with pytest.raises(TypeError, match="dim must be an int"):
        x.argmin(1.5)
    with pytest.raises(ValueError, match="empty"):
        _t(np.zeros((0, 3))).max()


# ----------------------------------------------------------------------------- maxout

def test_maxout_against_a_loop_and_gradcheck():
    a = _rand(2, 6, 3, 2)
    out = F.maxout(_t(a), 3).numpy()
    assert out.shape == (2, 2, 3, 2)
    for n in range(2):
        for g in range(2):
            for i in range(3):
                for j in range(2):
                    assert out[n, g, i, j] == max(a[n, 3 * g + k, i, j] for k in range(3))
    assert gradcheck(lambda t: F.maxout(t, 3), [_t(a)])
    assert gradcheck(lambda t: nn.Maxout(2, dim=-1)(t), [_t(_rand(3, 4))])
    with pytest.raises(ValueError, match="6 entries .* not a multiple of pool_size 4"):
        F.maxout(_t(a), 4)


# ----------------------------------------------------------------------------- ELU, GELU, PReLU

def test_elu_gelu_prelu_against_their_definitions():
    a = _rand(3, 4, 2, 2)
    np.testing.assert_allclose(F.elu(_t(a), 0.7).numpy(), np.where(a > 0, a, 0.7 * np.expm1(a)),
                               rtol=1e-14)
    phi = 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
    np.testing.assert_allclose(F.gelu(_t(a)).numpy(), a * phi, rtol=1e-13, atol=1e-15)
    tanh = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
    np.testing.assert_allclose(F.gelu(_t(a), "tanh").numpy(), tanh, rtol=1e-13)
    w = np.array([0.1, -0.2, 0.3, 0.5])
    np.testing.assert_allclose(F.prelu(_t(a), _t(w)).numpy(),
                               np.where(a > 0, a, w[None, :, None, None] * a), rtol=1e-14)


@pytest.mark.parametrize("fn", [
    lambda x: F.elu(x, 1.3), lambda x: F.gelu(x), lambda x: F.gelu(x, "tanh"),
    lambda x: nn.Softmax(dim=1)(x)])
def test_activation_gradcheck(fn):
    assert gradcheck(fn, [_t(_rand(2, 3, 2, 2, seed=1))])


@pytest.mark.parametrize("slopes", [1, 3])
def test_prelu_gradcheck_on_input_and_slopes(slopes):
    w = _t(np.linspace(0.1, 0.4, slopes))
    assert gradcheck(F.prelu, [_t(_rand(2, 3, 2, 2, seed=2)), w])


def test_against_torch():
    torch = pytest.importorskip("torch")
    a = _rand(2, 4, 3, 3, seed=3)
    w = np.array([0.25, -0.1, 0.4, 0.05])
    cases = [(lambda x, p: F.elu(x, 0.8), lambda x, p: torch.nn.functional.elu(x, 0.8)),
             (lambda x, p: F.gelu(x), lambda x, p: torch.nn.functional.gelu(x)),
             (lambda x, p: F.gelu(x, "tanh"),
              lambda x, p: torch.nn.functional.gelu(x, approximate="tanh")),
             (F.prelu, torch.nn.functional.prelu),
             (lambda x, p: F.maxout(x, 2),
              lambda x, p: x.reshape(2, 2, 2, 3, 3).max(dim=2).values)]
    for ours, theirs in cases:
        x, p = _t(a), _t(w)
        y = ours(x, p)
        g = np.random.default_rng(4).standard_normal(y.shape)
        (y * pycnn.tensor(g)).sum().backward()
        tx = torch.tensor(a, requires_grad=True)
        tp = torch.tensor(w, requires_grad=True)
        ty = theirs(tx, tp)
        (ty * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
        if p.grad is not None:
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12)


def test_layers_like_torch_nn():
    prelu = nn.PReLU(3, init=0.2)
    assert list(prelu.state_dict()) == ["weight"] and prelu.num_parameters() == 3
    np.testing.assert_array_equal(prelu.weight.numpy(), np.float32([0.2] * 3))
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(_t([1.0]), "exact")
    with pytest.raises(ValueError, match="expected 1 or one per channel"):
        F.prelu(_t(np.zeros((2, 3))), _t([1.0, 2.0]))
    x = _t(_rand(2, 5))
    np.testing.assert_allclose(nn.Softmax(1)(x).numpy().sum(axis=1), 1, rtol=1e-14)


# ----------------------------------------------------------------------------- zoo

@pytest.mark.parametrize("name, count", [("vgg11", 132_863_336), ("vgg16", 138_357_544),
                                         ("alexnet", 61_100_840), ("resnet101", 44_549_160),
                                         ("resnet152", 60_192_808)])
def test_parameter_counts_of_torchvision(name, count):
    with nn.init.skip_init():
        model = models.get_model(name)
    assert model.num_parameters() == count


def test_vgg11_layout_and_forward():
    model = models.vgg11(num_classes=5)
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert keys[:2] == ["features.0.weight", "features.3.weight"]
    assert keys[-1] == "classifier.6.weight"
    with pycnn.no_grad():
        out = model.eval()(pycnn.tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert out.shape == (1, 5)


# ----------------------------------------------------------------------------- on the GPU

_GPU_OPS = {
    "max": lambda x, w: x.max(dim=1).values,
    "argmax": lambda x, w: x.argmax(dim=1),
    "maxout": lambda x, w: F.maxout(x, 2, dim=1),
    "elu": lambda x, w: F.elu(x, 0.7),
    "gelu": lambda x, w: F.gelu(x),
    "gelu_tanh": lambda x, w: F.gelu(x, approximate="tanh"),
    "prelu": lambda x, w: F.prelu(x, w),
    "softmax": lambda x, w: F.softmax(x, dim=1),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(_GPU_OPS))
def test_the_new_ops_on_the_gpu_match_the_cpu(name):
    # forward and backward on CuPy arrays against the same ops on NumPy (float32 both)
    if not pycnn.cuda_available():
        pytest.skip(f"GPU tests need a GPU: the cuda backend is {pycnn.cuda_status()}")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    w = rng.uniform(0.05, 0.3, 6).astype(np.float32)
    outs = []
    for device in ("cpu", "cuda"):
        xt = pycnn.tensor(x, requires_grad=True, device=device)
        wt = pycnn.tensor(w, requires_grad=True, device=device)
        y = _GPU_OPS[name](xt, wt)
        if name == "argmax":
            outs.append((np.asarray(y.to("cpu").data), None, None))
            continue
        (y * y).sum().backward()
        outs.append((y.to("cpu").data, xt.grad.to("cpu").data,
                     None if wt.grad is None else wt.grad.to("cpu").data))
    for cpu, gpu in zip(*outs):
        if cpu is not None:
            np.testing.assert_allclose(gpu, cpu, rtol=2e-5, atol=2e-6)
