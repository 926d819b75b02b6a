# Who is off on deepbench's db_7x7_c832_k128_5x5_s1 backward-filter: pycnn (all versions
# agree) or cuDNN fp32? Both against the float64 NumPy reference on the same inputs.
import sys, numpy as np
from pycnn.backends import numpy_ref as ref
rng = np.random.default_rng(0)
N, C, H, K, R = 16, 832, 7, 128, 5
x = rng.standard_normal((N, C, H, H)).astype(np.float32)
dy = rng.standard_normal((N, K, H, H)).astype(np.float32)
args = ((1, 1), (2, 2, 2, 2), (1, 1), 1)
exact = ref.conv2d_bwd_filter(x.astype(np.float64), dy.astype(np.float64), (K, C, R, R), *args)
scale = np.abs(exact).max()
def err(a): return float(np.abs(np.asarray(a, np.float64) - exact).max() / scale)
out = {}
if len(sys.argv) > 1 and sys.argv[1] == "cpu":
    import torch
    tx = torch.from_numpy(x); tdy = torch.from_numpy(dy)
    out["torch cpu fp32"] = err(torch.nn.grad.conv2d_weight(tx, (K, C, R, R), tdy, padding=2).numpy())
    out["numpy fp32"] = err(ref.conv2d_bwd_filter(x, dy, (K, C, R, R), *args))
else:
    import cupy as cp, torch
    from pycnn.backends.cuda import conv
    gx, gdy = cp.asarray(x), cp.asarray(dy)
    for v in (1, 4, 10):
        out[f"pycnn v{v}"] = err(cp.asnumpy(conv.conv2d_bwd_filter(gx, gdy, (K, C, R, R), *args, version=v)))
    torch.backends.cudnn.allow_tf32 = False
    tx, tdy = torch.as_tensor(gx, device="cuda"), torch.as_tensor(gdy, device="cuda")
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        g = torch.nn.grad.conv2d_weight(tx, (K, C, R, R), tdy, padding=2)
        out[f"cudnn fp32 benchmark={bench}"] = err(g.cpu().numpy())
for k, v in out.items():
    print(f"{k:32s} max rel err vs float64 {v:.2e}")
