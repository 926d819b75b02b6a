"""pycnn.torch on CUDA tensors: pycnn's CUDA kernels zero copy on torch's current
stream. Needs a CUDA build of torch, CuPy and pycnn._C; skipped with the reason
elsewhere (the CPU wheel of torch that the test extra installs has no CUDA)."""
import copy

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import pycnn  # noqa: E402

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("pycnn.torch's GPU tests need a CUDA build of torch and a GPU (this torch "
                f"is {torch.__version__})", allow_module_level=True)
if not pycnn.cuda_available():
    pytest.skip(f"pycnn.torch's GPU tests need pycnn's cuda backend: {pycnn.cuda_status()}",
                allow_module_level=True)

from torch import nn  # noqa: E402

import pycnn.torch as pt  # noqa: E402

try:
    from . import torchvision_layout as tv
except ImportError:
    import torchvision_layout as tv


@pytest.fixture(autouse=True)
def _fp32():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_ops_on_cuda_equal_the_reference_on_a_side_stream():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 17, 15, requires_grad=True)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    b = torch.randn(16, requires_grad=True)

    def net(x, w, b):
        y = pt.max_pool2d(pt.conv2d_relu(x, w, b, stride=2, padding=1), 3, 2, 1)
        y = pt.batch_norm(y, None, None, training=True)
        return pt.cross_entropy(pt.adaptive_avg_pool2d(y, 1).flatten(1),
                                torch.arange(4, device=x.device))

    loss_cpu = net(x, w, b)
    grads_cpu = torch.autograd.grad(loss_cpu, (x, w, b))
    xs, ws, bs = (t.detach().cuda().requires_grad_(True) for t in (x, w, b))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                       # the kernels must queue on this stream
        loss_gpu = net(xs, ws, bs)
        grads_gpu = torch.autograd.grad(loss_gpu, (xs, ws, bs))
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(g.cpu(), r, rtol=1e-3, atol=1e-4)


def test_cuda_errors_name_the_op_and_the_argument():
    x = torch.randn(2, 3, 8, 8, device="cuda", dtype=torch.float64)
    with pytest.raises(TypeError, match=r"pycnn::relu: input must be float32 on cuda"):
        pt.relu(x)
    with pytest.raises(ValueError, match=r"pycnn::relu: input must be contiguous on cuda"):
        pt.relu(x.float().transpose(2, 3))


def test_converted_resnet18_on_cuda_matches_torch_and_trains_alike():
    torch.manual_seed(0)
    theirs = tv.resnet18(num_classes=10).cuda()
    ours = pt.convert(copy.deepcopy(theirs), verbose=False)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    torch.manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))
               for _ in range(5)]
    losses = []
    for model in (theirs, ours):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
        run = []
        for xb, yb in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    for a, b in zip(*losses):
        assert abs(a - b) <= 1e-3 * abs(a), losses
