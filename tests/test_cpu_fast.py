"""The fast CPU backend against the NumPy reference, op by op and option by option.

The reference is itself checked against loop definitions (test_reference.py,
test_edge_shapes.py); here every function numpy_fast redefines must give the
reference's result, and the rest must be the reference's own functions.
"""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import pycnn
from pycnn import backends
from pycnn.backends import INTERFACE
from pycnn.backends import numpy_fast as fast
from pycnn.backends import numpy_ref as ref
from pycnn.shapes import conv2d_output_shape, pool2d_output_shape

RNG = np.random.default_rng(21)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def test_fast_backend_defines_the_interface_and_borrows_the_rest():
    missing = [n for n in INTERFACE if not callable(getattr(fast, n, None))]
    assert not missing, missing
    redone = {n for n in INTERFACE if getattr(fast, n) is not getattr(ref, n)}
    assert redone == {"conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter",
                      "conv2d_bias_relu_fwd", "max_pool2d_bwd", "batch_norm_fwd",
                      "batch_norm_bwd"}


CONV_CASES = [
    # (N, C, H, W, K, R, S, stride, padding (t, b, l, r), dilation, groups)
    (2, 3, 7, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (3, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1),
    (2, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 4, 9, 8, 6, 3, 2, (2, 3), (0, 1, 2, 0), (1, 1), 2),
    (2, 4, 11, 10, 4, 3, 3, (1, 2), (2, 2, 1, 1), (2, 2), 4),        # depthwise, dilated
    (2, 8, 5, 5, 8, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),          # 1x1 stride 2
    (0, 3, 5, 5, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),          # empty batch
    (1, 2, 3, 3, 3, 3, 3, (4, 4), (0, 0, 0, 0), (1, 1), 1),          # kernel = input
    (2, 8, 5, 5, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),         # K >= 64: dw = dy @ cols^T
    (1, 4, 6, 6, 128, 3, 3, (2, 2), (1, 0, 0, 1), (1, 1), 2),        # and so per group
]


@pytest.fixture(params=["one thread", "3 copy threads"])
def copy_threads(request, monkeypatch):
    """Every convolution case on the calling thread alone, and again with the layout
    copies, im2col and col2im cut into 3 uneven channel chunks on the copy threads
    (however small the arrays)."""
    if request.param != "one thread":
        monkeypatch.setattr(fast, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(fast, "_cpu_threads", lambda: 3)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_convolution_matches_the_reference(case, dtype, copy_threads):
    n, c, h, wd, k, r, s, stride, padding, dilation, groups = case
    x, w, b = _rand((n, c, h, wd), dtype), _rand((k, c // groups, r, s), dtype), _rand((k,), dtype)
    args = (stride, padding, dilation, groups)
    tol = TOL[dtype]
    y = fast.conv2d_fwd(x, w, b, *args)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_allclose(y, ref.conv2d_fwd(x, w, b, *args), **tol)
    np.testing.assert_allclose(fast.conv2d_fwd(x, w, None, *args),
                               ref.conv2d_fwd(x, w, None, *args), **tol)
    np.testing.assert_allclose(fast.conv2d_bias_relu_fwd(x, w, b, *args),
                               ref.conv2d_bias_relu_fwd(x, w, b, *args), **tol)
    dy = _rand(conv2d_output_shape(x.shape, w.shape, stride, padding, dilation), dtype)
    # after a forward (the columns come from the cache) and without one
    for _ in range(2):
        dw = fast.conv2d_bwd_filter(x, dy, w.shape, *args)
        dx = fast.conv2d_bwd_data(dy, w, x.shape, *args)
        assert dw.dtype == dx.dtype == dtype
        np.testing.assert_allclose(dw, ref.conv2d_bwd_filter(x, dy, w.shape, *args), **tol)
        np.testing.assert_allclose(dx, ref.conv2d_bwd_data(dy, w, x.shape, *args), **tol)
        fast._cols_cache.clear()
    np.testing.assert_allclose(fast.conv2d_bwd_bias(dy), ref.conv2d_bwd_bias(dy), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 5, 1, 1), (7, 4), (3, 2, 9, 2)], ids=str)
def test_batch_norm_matches_the_reference(shape, affine, training, dtype):
    c = shape[1]
    x, dy = 3 + _rand(shape, dtype), _rand(shape, dtype)     # an offset mean: the centring matters
    weight, bias = (_rand((c,), dtype), _rand((c,), dtype)) if affine else (None, None)
    stats = {}
    for name, be in (("ref", ref), ("fast", fast)):
        rm, rv = np.full(c, 0.5, dtype), np.full(c, 2.0, dtype)
        y, mean, invstd = be.batch_norm_fwd(x, weight, bias, rm, rv, training, 0.1, 1e-5)
        grads = be.batch_norm_bwd(dy, x, weight, mean, invstd, training)
        stats[name] = (y, mean, invstd, rm, rv) + tuple(grads)
        assert all(a.dtype == dtype for a in stats[name])
    for got, want in zip(stats["fast"], stats["ref"]):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_batch_norm_errors_are_the_reference_s():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fast.batch_norm_fwd(np.ones((1, 3), np.float32), None, None, None, None, True, 0.1, 1e-5)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, C\) or \(N, C, H, W\)"):
        fast.batch_norm_fwd(np.ones((2, 3, 4), np.float32), None, None, None, None, True, 0.1, 1e-5)


def test_copy_threads_follow_the_blas_setting_and_pass_errors_on(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert fast._cpu_threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "junk")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fast._cpu_threads() == 1
    monkeypatch.setattr(fast, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    seen = []
    fast._parallel(lambda lo, hi: seen.append((lo, hi)), 5, 1)
    assert sorted(seen) == [(0, 2), (2, 5)]

    def part(lo, hi):
        if lo:
            raise MemoryError("chunk 2")
    with pytest.raises(MemoryError, match="chunk 2"):
        fast._parallel(part, 4, 1)


def test_backward_filter_does_not_use_columns_of_another_geometry():
    x, w = _rand((2, 3, 8, 8), np.float32), _rand((4, 3, 3, 3), np.float32)
    fast.conv2d_fwd(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)        # caches valid-padding columns
    dy = _rand((2, 4, 8, 8), np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_allclose(fast.conv2d_bwd_filter(x, dy, w.shape, *args),
                               ref.conv2d_bwd_filter(x, dy, w.shape, *args), rtol=2e-5, atol=2e-5)


def test_column_cache_is_bounded_keeps_nothing_under_no_grad_and_dies_with_the_input(monkeypatch):
    fast._cols_cache.clear()
    w = _rand((4, 3, 3, 3), np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    with pycnn.no_grad():
        fast.conv2d_fwd(_rand((2, 3, 8, 8), np.float32), w, None, *args)
    assert not fast._cols_cache
    x = _rand((2, 3, 8, 8), np.float32)
    fast.conv2d_fwd(x, w, None, *args)
    assert len(fast._cols_cache) == 1
    del x
    assert not fast._cols_cache
    one = 2 * 3 * 9 * 64 * 4                                  # bytes of one input's columns
    monkeypatch.setattr(fast, "COLS_CACHE_BYTES", 2 * one)
    xs = [_rand((2, 3, 8, 8), np.float32) for _ in range(3)]
    for x in xs:
        fast.conv2d_fwd(x, w, None, *args)
    assert list(fast._cols_cache) == [id(xs[1]), id(xs[2])]  # the oldest went first
    fast._cols_cache.clear()


POOL_CASES = [
    # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((2, 3, 9, 7), (2, 2), (2, 2), (0, 0), (1, 1), True),
    ((2, 3, 9, 9), (3, 3), (2, 2), (1, 1), (1, 1), False),           # overlapping windows
    ((1, 2, 10, 11), (2, 3), (3, 4), (1, 1), (1, 1), True),
    ((1, 2, 11, 11), (2, 2), (3, 3), (0, 0), (2, 2), False),         # dilated, disjoint
    ((1, 2, 11, 11), (3, 3), (3, 3), (1, 1), (2, 2), True),          # dilated, overlapping
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", ["none", "ties", "nan", "-inf", "all -inf"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool_backward_matches_the_reference(case, special, dtype):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    x = _rand(shape, dtype)
    if special == "ties":
        x = np.round(x)
    elif special == "nan":
        x.flat[::7] = np.nan
    elif special == "-inf":
        x[:, :, ::2] = -np.inf
    elif special == "all -inf":               # windows of -inf only: padding must not win
        x[:, :, :3, :3] = -np.inf
    y, idx = fast.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    y_ref, idx_ref = ref.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)                  # NaN where the reference has NaN
    assert y.dtype == y_ref.dtype
    assert y.shape == pool2d_output_shape(shape, kernel, stride, padding, dilation, ceil_mode)
    dy = _rand(y.shape, dtype)
    np.testing.assert_array_equal(
        fast.max_pool2d_bwd(dy, idx, shape, kernel, stride, padding, dilation),
        ref.max_pool2d_bwd(dy, idx, shape, kernel, stride, padding, dilation))


def test_cpu_backend_is_fast_by_default_and_the_reference_is_selectable():
    assert backends.cpu_backend() == "fast"
    assert backends.get_backend("cpu") is fast
    try:
        backends.set_cpu_backend("reference")
        assert backends.get_backend("cpu") is ref
        t = pycnn.tensor(np.ones((1, 1, 4, 4), np.float32))
        y = pycnn.functional.max_pool2d(t, 2)
        np.testing.assert_array_equal(y.numpy(), np.ones((1, 1, 2, 2), np.float32))
    finally:
        backends.set_cpu_backend("fast")
    assert backends.get_backend("cpu") is fast
    with pytest.raises(ValueError, match=r"cpu backend: expected one of \['fast', 'reference'\], "
                                         r"got 'slow'"):
        backends.set_cpu_backend("slow")


@pytest.mark.parametrize("value, expect", [("reference", "reference"), ("fast", "fast"),
                                           ("bogus", "PYCNN_BACKEND: expected one of")])
def test_environment_variable_chooses_the_cpu_backend(value, expect):
    env = dict(os.environ, PYCNN_BACKEND=value)
    code = "from pycnn import backends; print(backends.cpu_backend())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert expect in (done.stdout + done.stderr)


def test_a_training_step_gives_the_reference_gradients():
    from pycnn import models
    grads = {}
    for name in ("reference", "fast"):
        backends.set_cpu_backend(name)
        try:
            pycnn.manual_seed(0)
            model = models.lenet5()
            x = pycnn.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
            loss = pycnn.functional.cross_entropy(model(x), np.array([0, 1, 2, 3]))
            loss.backward()
            grads[name] = [p.grad.numpy().copy() for p in model.parameters()]
        finally:
            backends.set_cpu_backend("fast")
    for g_ref, g_fast in zip(*grads.values()):
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("groups, r", list(itertools.product([1, 2], [1, 3])))
def test_padded_backward_data_workspace_is_not_returned(groups, r):
    dy = _rand((2, 4, 6, 6), np.float32)
    w = _rand((4, 4 // groups, r, r), np.float32)
    pad = (r // 2,) * 4
    a = fast.conv2d_bwd_data(dy, w, (2, 4, 6, 6), (1, 1), pad, (1, 1), groups)
    keep = a.copy()
    fast.conv2d_bwd_data(2 * dy, w, (2, 4, 6, 6), (1, 1), pad, (1, 1), groups)
    np.testing.assert_array_equal(a, keep)


def test_readme_cpu_table_is_generated_from_the_committed_results():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "bench"))
    try:
        import cpu_table
    finally:
        sys.path.pop(0)
    res = root / "bench" / "results"
    body = cpu_table.table(cpu_table._load(res / "train-cpu.json"),
                           cpu_table._load(res / "cpu-bench.json"))
    readme = (root / "README.md").read_text()
    assert cpu_table.replace_between_markers(readme, body) == readme, \
        "README's CPU table is stale: run python bench/cpu_table.py --write"
    with pytest.raises(ValueError, match="expected the markers"):
        cpu_table.replace_between_markers("no markers", body)


def test_the_cpu_benchmarks_record_which_blas_kernels_ran(monkeypatch):
    from pycnn.bench.cpu import blas_info, describe
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = blas_info()
    assert info["OPENBLAS_CORETYPE"] == "Haswell"
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" in blas:         # NumPy's wheels: the library answers for itself
        assert info["core"] and "OpenBLAS" in info["library"]
        assert describe(info) == (f"NumPy's OpenBLAS on its {info['core']} kernels "
                                  f"(pinned by OPENBLAS_CORETYPE=Haswell)")
    assert describe({"core": "SkylakeX", "OPENBLAS_CORETYPE": None}) == \
        "NumPy's OpenBLAS on its SkylakeX kernels (chosen by OpenBLAS for this CPU)"
    assert describe(None) == "NumPy's BLAS kernels not recorded"
