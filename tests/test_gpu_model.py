"""Whole models on the "cuda" device: autograd, layers and optimizers above our kernels.

tests/test_gpu.py checks each kernel against the reference; this file checks
that nothing above the backend changes with the device: the same model, from
the same weights, on the same batch gives the same loss, gradients and updated
weights on the GPU as on the CPU (the NumPy reference), to fp32 tolerance.
"""
from __future__ import annotations

import numpy as np
import pytest

import pycnn
import pycnn.functional as F
from pycnn import models, nn, optim

pytestmark = pytest.mark.gpu

if not pycnn.cuda_available():
    pytest.skip(f"GPU tests need a GPU: the cuda backend is {pycnn.cuda_status()}",
                allow_module_level=True)

import cupy as cp  # noqa: E402

# fp32 on both sides, different summation orders: a few 1e-5 relative after
# a forward and backward through several layers.
RTOL = 2e-4


def _close(gpu, cpu, what):
    gpu, cpu = cp.asnumpy(gpu), np.asarray(cpu)
    scale = max(float(np.abs(cpu).max()), 1e-12)
    err = float(np.abs(gpu - cpu).max()) / scale
    assert err < RTOL, f"{what}: max relative error {err:.2e} (>= {RTOL})"


def _pair(name, fuse=False, **kw):
    """The same model twice, on the CPU and on the GPU, with identical weights; with
    ``fuse`` the GPU's Conv2d -> ReLU pairs run as one kernel (nn.fuse_conv_relu)."""
    pycnn.manual_seed(0)
    cpu = models.get_model(name, **kw)
    gpu = models.get_model(name, **kw)
    gpu.load_state_dict(cpu.state_dict())
    if fuse:
        nn.fuse_conv_relu(gpu)
    return cpu, gpu.to("cuda")


@pytest.mark.parametrize("name, shape, kw", [
    ("lenet5", (8, 1, 28, 28), {}),
    ("lenet5", (8, 1, 28, 28), {"fuse": True}),
    ("keras_mnist", (4, 1, 28, 28), {}),
    ("resnet18", (2, 3, 32, 32), {"num_classes": 10}),
])
def test_training_step_matches_the_cpu(name, shape, kw):
    cpu, gpu = _pair(name, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    results = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss = F.cross_entropy(model(pycnn.tensor(x, device=device)), y)
        opt.zero_grad()
        loss.backward()
        grads = {k: p.grad.data for k, p in model.named_parameters()}
        opt.step()
        results.append((loss.item(), grads, model.state_dict()))
    (loss_c, grads_c, sd_c), (loss_g, grads_g, sd_g) = results
    assert loss_g == pytest.approx(loss_c, rel=RTOL)
    for k in grads_c:
        _close(grads_g[k], grads_c[k], f"grad of {k}")
    for k in sd_c:
        if sd_c[k].dtype.kind == "f":
            _close(sd_g[k], sd_c[k], f"updated {k}")


def test_tensor_moves_between_devices_with_gradients():
    x = pycnn.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    y = (x.to("cuda") * 2.0).sum()
    assert y.device == "cuda"
    y.backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0, np.float32))


def test_device_mismatch_is_refused():
    x = pycnn.tensor(np.zeros((1, 1, 4, 4), np.float32), device="cuda")
    w = pycnn.tensor(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="w is on device 'cpu' but x is on 'cuda'"):
        F.conv2d(x, w)


def test_pytorch_tensor_through_pycnn_conv_zero_copy():
    torch = pytest.importorskip("torch")
    from pycnn import interop

    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(4, 8, 15, 15, device="cuda")
    w = torch.randn(16, 8, 3, 3, device="cuda")
    b = torch.randn(16, device="cuda")
    torch.cuda.synchronize()
    y = interop.conv2d(x, w, b, stride=2, padding=1)
    cp.cuda.get_current_stream().synchronize()
    y_torch = torch.from_dlpack(y)
    assert y_torch.data_ptr() == y.data.ptr                      # no copy on the way back
    ref = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1)
    assert float((y_torch - ref).abs().max() / ref.abs().max()) < 1e-4
