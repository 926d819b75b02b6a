"""torch.ops.pycnn: every op against torch.nn.functional (the oracle), its gradient
through pycnn's backward kernels against finite differences (torch.autograd.gradcheck,
float64), torch.library.opcheck on every forward and backward op, and
torch.compile(fullgraph=True) / torch.export of a small convnet built from the ops."""
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import torch.nn.functional as TF  # noqa: E402

import pycnn.torch as pt  # noqa: E402
from pycnn.torch import ops  # noqa: E402

D = torch.float64


def _t(*shape, grad=True, scale=1.0):
    return (torch.randn(*shape, dtype=D) * scale).requires_grad_(grad)


def _away_from_kinks(x, gap=0.05):
    """x with no value within ``gap`` of 0: finite differences do not cross a ReLU's kink."""
    with torch.no_grad():
        x.add_(torch.where(x >= 0, gap, -gap))
    return x


def _distinct(*shape):
    """Values spread so that no two in a pooling window are within the difference step."""
    n = torch.tensor(shape).prod().item()
    return (torch.randperm(n, dtype=D) * 0.01).reshape(shape).requires_grad_(True)


# name -> (pycnn call, torch call, inputs factory); the calls take the inputs positionally
CASES = {
    "conv2d": (lambda x, w, b: pt.conv2d(x, w, b, stride=2, padding=1),
               lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1),
               lambda: (_t(2, 4, 7, 6), _t(6, 4, 3, 3), _t(6))),
    "conv2d_same_dilated_grouped": (
        lambda x, w, b: pt.conv2d(x, w, b, padding="same", dilation=2, groups=2),
        lambda x, w, b: TF.conv2d(x, w, b, padding="same", dilation=2, groups=2),
        lambda: (_t(2, 4, 7, 6), _t(6, 2, 2, 3), _t(6))),
    "conv2d_no_bias_rect_stride": (
        lambda x, w: pt.conv2d(x, w, stride=(2, 1), padding=(0, 2)),
        lambda x, w: TF.conv2d(x, w, stride=(2, 1), padding=(0, 2)),
        lambda: (_t(1, 3, 6, 5), _t(2, 3, 2, 3))),
    "conv2d_relu": (lambda x, w, b: pt.conv2d_relu(x, w, b, padding=1),
                    lambda x, w, b: TF.relu(TF.conv2d(x, w, b, padding=1)),
                    lambda: (_t(2, 3, 5, 5), _t(4, 3, 3, 3), _t(4))),
    "max_pool2d": (lambda x: pt.max_pool2d(x, 3, 2, 1),
                   lambda x: TF.max_pool2d(x, 3, 2, 1),
                   lambda: (_distinct(2, 3, 7, 7),)),
    "max_pool2d_ceil_dilated": (lambda x: pt.max_pool2d(x, 2, 2, 0, 2, ceil_mode=True),
                                lambda x: TF.max_pool2d(x, 2, 2, 0, 2, ceil_mode=True),
                                lambda: (_distinct(1, 2, 8, 7),)),
    "avg_pool2d": (lambda x: pt.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
                   lambda x: TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
                   lambda: (_t(2, 3, 8, 7),)),
    "avg_pool2d_exclude_pad": (lambda x: pt.avg_pool2d(x, 2, 1, 1, count_include_pad=False),
                               lambda x: TF.avg_pool2d(x, 2, 1, 1, count_include_pad=False),
                               lambda: (_t(2, 3, 5, 4),)),
    "adaptive_avg_pool2d": (lambda x: pt.adaptive_avg_pool2d(x, (3, 2)),
                            lambda x: TF.adaptive_avg_pool2d(x, (3, 2)),
                            lambda: (_t(2, 3, 7, 5),)),
    "relu": (pt.relu, TF.relu, lambda: (_away_from_kinks(_t(3, 4, 5)),)),
    "leaky_relu": (lambda x: pt.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2),
                   lambda: (_away_from_kinks(_t(3, 4, 5)),)),
    "sigmoid": (pt.sigmoid, torch.sigmoid, lambda: (_t(3, 4, 5, scale=3.0),)),
    "tanh": (pt.tanh, torch.tanh, lambda: (_t(3, 4, 5, scale=2.0),)),
    "bias_relu": (pt.bias_relu, lambda x, b: TF.relu(x + b[None, :, None, None]),
                  lambda: (_away_from_kinks(_t(2, 3, 4, 4)), torch.zeros(3, dtype=D,
                                                                         requires_grad=True))),
    "softmax": (lambda x: pt.softmax(x, 1), lambda x: TF.softmax(x, 1),
                lambda: (_t(3, 5, 2),)),
    "log_softmax": (lambda x: pt.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1),
                    lambda: (_t(4, 6),)),
    "cross_entropy": (lambda x: pt.cross_entropy(x, torch.tensor([0, 4, 2, 1])),
                      lambda x: TF.cross_entropy(x, torch.tensor([0, 4, 2, 1])),
                      lambda: (_t(4, 5),)),
    "batch_norm_train": (
        lambda x, w, b: pt.batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
        lambda: (_t(3, 4, 3, 2), _t(4), _t(4))),
    "batch_norm_eval": (
        lambda x, w, b: pt.batch_norm(x, torch.arange(4.0, dtype=D), torch.linspace(1, 2, 4, dtype=D),
                                      w, b, training=False),
        lambda x, w, b: TF.batch_norm(x, torch.arange(4.0, dtype=D), torch.linspace(1, 2, 4, dtype=D),
                                      w, b, training=False),
        lambda: (_t(3, 4, 3, 2), _t(4), _t(4))),
    "batch_norm_2d_input": (lambda x: pt.batch_norm(x, None, None, training=True),
                            lambda x: TF.batch_norm(x, None, None, training=True),
                            lambda: (_t(5, 3),)),
}


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_torch_and_gradient_matches_finite_differences(name):
    ours, theirs, make = CASES[name]
    torch.manual_seed(0)
    inputs = make()
    torch.testing.assert_close(ours(*inputs), theirs(*inputs), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(ours, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradients_run_pycnns_backward_functions(monkeypatch):
    from pycnn.backends import numpy_ref
    called = []
    for name in ("conv2d_bwd_data", "conv2d_bwd_filter", "conv2d_bwd_bias", "relu_bwd",
                 "max_pool2d_bwd", "batch_norm_bwd"):
        def spy(*args, _name=name, _fn=getattr(numpy_ref, name)):
            called.append(_name)
            return _fn(*args)
        monkeypatch.setattr(numpy_ref, name, spy)
    x, w, b = _t(2, 2, 5, 5), _t(3, 2, 3, 3), _t(3)
    y = pt.max_pool2d(pt.relu(pt.batch_norm(pt.conv2d(x, w, b, padding=1), None, None,
                                            training=True)), 2)
    node, todo, names = None, [y.grad_fn], []
    while todo:
        node = todo.pop()
        if node is not None:
            names.append(node.name())
            todo += [n for n, _ in node.next_functions]
    assert {"GeneratedBackwardFor_pycnn_conv2d_defaultBackward",
            "GeneratedBackwardFor_pycnn_max_pool2d_defaultBackward"} <= set(names), names
    y.sum().backward()
    assert sorted(called) == sorted(["max_pool2d_bwd", "relu_bwd", "batch_norm_bwd",
                                     "conv2d_bwd_data", "conv2d_bwd_filter", "conv2d_bwd_bias"])


def test_dropout_mask_is_pycnns_and_follows_torch_manual_seed():
    from pycnn.backends import numpy_ref
    x = _t(4, 50)
    torch.manual_seed(3)
    y1 = pt.dropout(x, 0.3)
    torch.manual_seed(3)
    y2 = pt.dropout(x, 0.3)
    torch.testing.assert_close(y1, y2)
    torch.manual_seed(3)
    seed = int(torch.randint(0, 2**32, (1,), dtype=torch.int64))
    mask = numpy_ref.dropout_mask((4, 50), 0.3, seed)
    torch.testing.assert_close(y1, x * torch.from_numpy(mask) / 0.7)
    assert 0.5 < mask.mean() < 0.9
    y1.sum().backward()
    torch.testing.assert_close(x.grad, torch.from_numpy(mask).to(D) / 0.7)
    assert pt.dropout(x, 0.3, training=False) is x
    # the gradient through pycnn's dropout_bwd, for a fixed mask (seed tensor)
    s = torch.tensor([7])
    assert torch.autograd.gradcheck(lambda a: ops.dropout(a, 0.4, s)[0], (_t(3, 4),))


def test_batch_norm_updates_running_stats_like_torch():
    x = _t(4, 3, 2, 2, grad=False)
    ours_m, ours_v = torch.zeros(3, dtype=D), torch.ones(3, dtype=D)
    ref_m, ref_v = ours_m.clone(), ours_v.clone()
    pt.batch_norm(x, ours_m, ours_v, training=True, momentum=0.3)
    TF.batch_norm(x, ref_m, ref_v, training=True, momentum=0.3)
    torch.testing.assert_close(ours_m, ref_m)
    torch.testing.assert_close(ours_v, ref_v)


def test_max_pool2d_indices_match_torch():
    x = _distinct(2, 2, 6, 6)
    _, ours = pt.max_pool2d(x, 3, 2, 1, return_indices=True)
    _, theirs = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------------ opcheck
def _opcheck_samples():
    x, w, b = _t(2, 4, 6, 5), _t(6, 2, 3, 3), _t(6)
    conv = ([1, 2], [1, 1, 0, 2], [1, 1], 2)
    dy_conv = torch.randn(2, 6, 6, 3, dtype=D)
    xp = _distinct(2, 3, 6, 6)
    pool = ([3, 3], [2, 2], [1, 1], [1, 1])
    _, idx = ops.max_pool2d(xp.detach(), *pool, False)
    dy_pool = torch.randn(2, 3, 3, 3, dtype=D)
    v = _t(3, 4, 5)
    y = torch.rand(3, 4, 5, dtype=D)
    logits, target = _t(4, 5), torch.tensor([0, 4, 2, 1])
    bn_x, bn_w, bn_b = _t(3, 4, 2, 2), _t(4), _t(4)
    rm, rv = torch.zeros(4, dtype=D), torch.ones(4, dtype=D)
    _, mean, invstd, _, _ = ops.batch_norm(bn_x.detach(), bn_w.detach(), None, None, None, True,
                                           0.1, 1e-5)
    mask = (torch.rand(3, 4, 5) > 0.3).to(torch.uint8)
    lp = TF.log_softmax(torch.randn(4, 5, dtype=D), 1)
    return {
        "conv2d": (x, w, b, *conv),
        "conv2d_relu": (x, w, None, *conv),
        "conv2d_bwd_data": (dy_conv, w.detach(), [2, 4, 6, 5], *conv),
        "conv2d_bwd_filter": (x.detach(), dy_conv, [6, 2, 3, 3], *conv),
        "conv2d_bwd_bias": (dy_conv,),
        "max_pool2d": (xp, *pool, False),
        "max_pool2d_bwd": (dy_pool, idx, [2, 3, 6, 6], *pool),
        "avg_pool2d": (x, [2, 3], [2, 1], [1, 1], True, False),
        "avg_pool2d_bwd": (torch.randn(2, 4, 4, 5, dtype=D), [2, 4, 6, 5], [2, 3], [2, 1],
                           [1, 1], True, False),
        "adaptive_avg_pool2d": (x, [3, 2]),
        "adaptive_avg_pool2d_bwd": (torch.randn(2, 4, 3, 2, dtype=D), [2, 4, 6, 5]),
        "relu": (v,), "relu_bwd": (torch.randn(3, 4, 5, dtype=D), y),
        "leaky_relu": (v, 0.1), "leaky_relu_bwd": (torch.randn(3, 4, 5, dtype=D), v.detach(), 0.1),
        "sigmoid": (v,), "sigmoid_bwd": (torch.randn(3, 4, 5, dtype=D), y),
        "tanh": (v,), "tanh_bwd": (torch.randn(3, 4, 5, dtype=D), y),
        "bias_relu": (bn_x, bn_b),
        "softmax": (v, 2), "softmax_bwd": (torch.randn(3, 4, 5, dtype=D), y, 1),
        "log_softmax": (v, 0), "log_softmax_bwd": (torch.randn(3, 4, 5, dtype=D), y.log(), 2),
        "cross_entropy": (logits, target),
        "cross_entropy_bwd": (torch.tensor(0.7, dtype=D), lp, target),
        "batch_norm": (bn_x, bn_w, bn_b, rm, rv, True, 0.2, 1e-5),
        "batch_norm_bwd": (torch.randn(3, 4, 2, 2, dtype=D), bn_x.detach(), bn_w.detach(),
                           mean, invstd, True),
        "dropout": (v, 0.3, torch.tensor([11])),
        "dropout_bwd": (torch.randn(3, 4, 5, dtype=D), mask, 0.3),
    }


def test_every_op_has_an_opcheck_sample():
    assert set(_opcheck_samples()) == {q.split("::")[1] for q in (*ops.FORWARD, *ops.BACKWARD)}


@pytest.mark.parametrize("name", sorted({q.split("::")[1] for q in (*ops.FORWARD, *ops.BACKWARD)}))
def test_opcheck(name):
    torch.manual_seed(0)
    args = _opcheck_samples()[name]
    torch.library.opcheck(getattr(torch.ops.pycnn, name).default, args)


def test_batch_norm_eval_opcheck():
    x, rm, rv = _t(3, 4, 2, 2), torch.randn(4, dtype=D), torch.rand(4, dtype=D) + 0.5
    torch.library.opcheck(torch.ops.pycnn.batch_norm.default,
                          (x, None, None, rm, rv, False, 0.1, 1e-5))


# ------------------------------------------------------------------ errors
def test_errors_name_the_op_and_the_argument():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(TypeError, match=r"pycnn::conv2d: weight must be float32 or float64 on "
                                        r"cpu, got float16"):
        ops.conv2d(x, torch.randn(3, 2, 3, 3).half(), None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(TypeError, match=r"pycnn::relu: input must be float32 or float64 on cpu, "
                                        r"got int64"):
        pt.relu(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"pycnn::relu: input must be a dense \(strided\) tensor"):
        pt.relu(torch.eye(3).to_sparse())
    with pytest.raises(TypeError, match=r"pycnn::cross_entropy_bwd|cross_entropy: target must"):
        pt.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"conv2d: input has C=2 channels, but weight"):
        pt.conv2d(x, torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: padding='same' needs stride 1"):
        pt.conv2d(x, torch.randn(3, 2, 3, 3), padding="same", stride=2)
    with pytest.raises(ValueError, match=r"max_pool2d: padding should be at most half"):
        pt.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"cross_entropy: reduction='sum' is not supported"):
        pt.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="sum")
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D, got shape \(3, 2, 3\)"):
        pt.conv2d(x, torch.randn(3, 2, 3))


def test_non_contiguous_cpu_inputs_are_viewed_not_refused():
    x = torch.randn(2, 5, 5, 3, dtype=D).permute(0, 3, 1, 2)      # channels-last strides
    w = torch.randn(4, 3, 3, 3, dtype=D)
    torch.testing.assert_close(pt.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1))


def test_importing_pycnn_does_not_import_torch():
    code = "import sys, pycnn, pycnn.models, pycnn.functional; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ compile and export
class SmallNet(torch.nn.Module):
    """conv-bn-relu, pool, conv+relu fused, dropout, global pool, linear: the ops in one net."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding="same")
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = pt.max_pool2d(pt.relu(pt.batch_norm(
            pt.conv2d(x, self.c1.weight, self.c1.bias, padding=1), self.bn.running_mean,
            self.bn.running_var, self.bn.weight, self.bn.bias, self.training)), 2)
        x = pt.conv2d_relu(x, self.c2.weight, self.c2.bias, padding="same")
        x = pt.dropout(x, 0.2, self.training)
        x = pt.adaptive_avg_pool2d(x, 1).flatten(1)
        return pt.log_softmax(pt.tanh(self.fc(x)), 1)


def test_torch_compile_fullgraph_of_a_small_convnet():
    # Inductor (the default backend) for the forward: about 5 s here on 2 cores. Training
    # goes through aot_eager, which traces the same forward and the backward ops through
    # AOTAutograd; Inductor would add about 16 s of compiling to CI for the same graph.
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(torch.compile(net, fullgraph=True)(x), net(x))
    net.train()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    twin = SmallNet().train()
    twin.load_state_dict(net.state_dict())
    grads = []
    for model in (compiled, twin):
        torch.manual_seed(1)                    # the same dropout seed in both
        xg = x.clone().requires_grad_(True)
        pt.cross_entropy(model(xg), torch.tensor([1, 3])).backward()
        grads.append(xg.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(net.c1.weight.grad, twin.c1.weight.grad)
    torch.testing.assert_close(net.bn.running_mean, twin.bn.running_mean)   # stats moved alike
    assert not torch.equal(net.bn.running_mean, torch.zeros(8))


def _precision_scopes():
    return (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn,
            torch.backends.cuda.matmul)


# torch's TF32 settings as this process started (read at collection, before any test ran)
_PRECISION_AT_START = [s.fp32_precision for s in _precision_scopes()]


@pytest.fixture
def torch_precision_defaults():
    """torch.export reads the legacy cudnn.allow_tf32 flag, which raises once the new
    fp32_precision API has set cuDNN-wide values (pycnn.bench.harness.force_fp32 does,
    in test_bench): the export runs under the settings the process started with."""
    saved = [s.fp32_precision for s in _precision_scopes()]
    for scope, value in zip(_precision_scopes(), _PRECISION_AT_START):
        scope.fp32_precision = value
    yield
    for scope, value in zip(_precision_scopes(), saved):
        scope.fp32_precision = value


def test_torch_export_traces_the_ops(torch_precision_defaults):
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(net, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"pycnn.conv2d.default", "pycnn.batch_norm.default", "pycnn.max_pool2d.default",
            "pycnn.conv2d_relu.default"} <= targets, targets
    torch.testing.assert_close(exported.module()(x), net(x))
