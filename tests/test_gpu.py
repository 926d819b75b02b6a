"""Every CUDA backend function against the NumPy reference, on a GPU.

The cases (and their tolerances, explained there) live in pycnn/verify.py, so
that ``python -m pycnn.verify`` records exactly what this file tests. The oracle
is numpy_ref in float64 on the same float32 values, itself checked against loop
definitions and finite differences in tests/test_reference.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from pycnn import verify

pytestmark = pytest.mark.gpu

_WHY = verify.gpu_unavailable_reason()
if _WHY:
    pytest.skip(f"GPU tests need a GPU: {_WHY}", allow_module_level=True)

import cupy as cp  # noqa: E402

from pycnn.backends import INTERFACE  # noqa: E402
from pycnn.backends import cuda  # noqa: E402
from pycnn.backends import numpy_ref as ref  # noqa: E402

CASES = verify.cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_reference(case):
    results = verify.run_case(case, cuda, ref)
    bad = [r for r in results if not r["passed"]]
    assert not bad, "\n".join(
        f"{r['case']} version {r['version']}: max rel err {r['max_rel']} > tol {r['tol']} {r['note']}"
        for r in bad)


def test_interface_complete_and_signatures_match():
    import inspect
    for name in INTERFACE:
        ours, theirs = getattr(cuda, name), getattr(ref, name)
        # keyword-only extras (version=, deterministic=) are allowed on top of the reference's
        ours_params = [p.name for p in inspect.signature(ours).parameters.values()
                       if p.kind != p.KEYWORD_ONLY]
        assert ours_params == list(inspect.signature(theirs).parameters), name


def test_dropout_mask_equals_reference_for_same_seed():
    for seed in (0, 1, 2**31 + 5, -3):
        x = cp.ones((3, 1001), dtype=cp.float32)
        _, mask = cuda.dropout_fwd(x, 0.37, seed)
        np.testing.assert_array_equal(cp.asnumpy(mask), ref.dropout_mask((3, 1001), 0.37, seed))


def test_dropout_keeps_about_one_minus_p():
    _, mask = cuda.dropout_fwd(cp.ones(200_000, dtype=cp.float32), 0.25, 11)
    assert abs(float(mask.mean()) - 0.75) < 0.01


@pytest.mark.parametrize("version", [None, 1], ids=["gather", "atomic-v1"])
def test_max_pool_backward_sums_overlapping_windows(version):
    # a constant input: every window's first element wins; hand-computed sums
    x = cp.zeros((1, 1, 3, 3), dtype=cp.float32)
    y, idx = cuda.max_pool2d_fwd(x, (2, 2), (1, 1), (0, 0), (1, 1), False)
    assert cp.asnumpy(idx).ravel().tolist() == [0, 1, 3, 4]
    dx = cuda.max_pool2d_bwd(cp.ones_like(y), idx, (1, 1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1),
                             version=version)
    assert cp.asnumpy(dx).ravel().tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("geometry, ceil_mode", [
    (((3, 3), (2, 2), (1, 1), (1, 1)), False),   # 3x3/2: an input is the max of up to 4 windows
    (((3, 3), (2, 2), (1, 1), (2, 2)), True),    # dilated, ceil_mode
])
def test_max_pool_backward_gather_is_bitwise_deterministic(geometry, ceil_mode):
    # 0/1 inputs: ties everywhere, so the first-max rule makes many inputs the max
    # of several overlapping windows
    rng = np.random.default_rng(3)
    shape = (4, 8, 34, 33)   # H = 34: ceil_mode adds a row of windows in the dilated case
    x = cp.asarray(rng.integers(0, 2, size=shape).astype(np.float32))
    y, idx = cuda.max_pool2d_fwd(x, *geometry, ceil_mode)
    dy = cp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    runs = [cp.asnumpy(cuda.max_pool2d_bwd(dy, idx, shape, *geometry)) for _ in range(3)]
    # oracle: float32 sums in output order (p, then q), a plain loop on the host;
    # the gather adds in that order, so the bits must agree, on every run
    planes = shape[0] * shape[1]
    flat_idx, flat_dy = cp.asnumpy(idx).reshape(planes, -1), cp.asnumpy(dy).reshape(planes, -1)
    expected = np.zeros((planes, shape[2] * shape[3]), dtype=np.float32)
    rows = np.arange(planes)
    for o in range(flat_idx.shape[1]):     # one output position at a time, all planes at once
        expected[rows, flat_idx[:, o]] += flat_dy[:, o]
    assert (expected.reshape(shape) != 0).sum() > 0
    for dx in runs:
        np.testing.assert_array_equal(dx.view(np.uint32), expected.reshape(shape).view(np.uint32))


def test_max_pool_backward_rejects_a_dy_of_another_geometry():
    x = cp.zeros((1, 2, 8, 8), dtype=cp.float32)
    y, idx = cuda.max_pool2d_fwd(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    with pytest.raises(ValueError, match=r"dy: expected spatial size \(8, 8\)"):
        cuda.max_pool2d_bwd(y, idx, x.shape, (3, 3), (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="version"):
        cuda.max_pool2d_bwd(y, idx, x.shape, (2, 2), (2, 2), (0, 0), (1, 1), version=3)


def test_global_avg_pool_hand_computed():
    x = cp.arange(2 * 3 * 7 * 7, dtype=cp.float32).reshape(2, 3, 7, 7)
    y = cuda.adaptive_avg_pool2d_fwd(x, (1, 1))
    expected = np.arange(2 * 3 * 49, dtype=np.float64).reshape(6, 49).mean(axis=1).reshape(2, 3, 1, 1)
    np.testing.assert_allclose(cp.asnumpy(y), expected, rtol=1e-6)


def test_softmax_large_logits_stay_finite():
    x = cp.asarray([[1000.0, 0.0, -1000.0]], dtype=cp.float32)
    np.testing.assert_allclose(cp.asnumpy(cuda.softmax_fwd(x, 1)), [[1, 0, 0]], atol=1e-7)
    assert np.isfinite(cp.asnumpy(cuda.log_softmax_fwd(x, 1))).all()


def test_cross_entropy_is_deterministic():
    rng = np.random.default_rng(1)
    logits = cp.asarray(rng.standard_normal((4097, 13)), dtype=cp.float32)
    target = cp.asarray(rng.integers(0, 13, 4097))
    first = float(cuda.cross_entropy_fwd(logits, target)[0])
    assert all(float(cuda.cross_entropy_fwd(logits, target)[0]) == first for _ in range(5))


def test_batch_norm_split_version_is_bitwise_deterministic():
    # version 2 adds each channel's splits in split order, never with atomics
    rng = np.random.default_rng(2)
    x = cp.asarray(rng.standard_normal((16, 4, 32, 32)) + 3, dtype=cp.float32)
    dy = cp.asarray(rng.standard_normal(x.shape), dtype=cp.float32)

    def both():
        y, mean, invstd = cuda.batch_norm_fwd(x, None, None, None, None, True, 0.1, 1e-5, version=2)
        return (y, mean, invstd) + cuda.batch_norm_bwd(dy, x, None, mean, invstd, True, version=2)
    first = [cp.asnumpy(a) for a in both()]
    for _ in range(3):
        for a, b in zip(first, both()):
            np.testing.assert_array_equal(a, cp.asnumpy(b))


# ----------------------------------------------------------------------------- bad input


def test_rejects_float64():
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        cuda.relu_fwd(cp.zeros(4, dtype=cp.float64))


def test_rejects_non_contiguous():
    x = cp.zeros((2, 3, 8, 8), dtype=cp.float32)[:, :, :, ::2]
    with pytest.raises(ValueError, match="x: expected a C-contiguous"):
        cuda.max_pool2d_fwd(x, (2, 2), (2, 2), (0, 0), (1, 1), False)


def test_rejects_host_array():
    with pytest.raises(TypeError, match="x: expected a cupy.ndarray"):
        cuda.sigmoid_fwd(np.zeros(4, dtype=np.float32))


def test_rejects_array_on_another_gpu():
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(1):
        x = cp.zeros(4, dtype=cp.float32)
    with pytest.raises(ValueError, match="x: array is on GPU 1"):
        cuda.relu_fwd(x)


def test_rejects_wrong_shapes_before_launch():
    with pytest.raises(ValueError, match="y: expected shape"):
        cuda.relu_bwd(cp.zeros(4, dtype=cp.float32), cp.zeros(5, dtype=cp.float32))
    with pytest.raises(ValueError, match="b: expected shape"):
        cuda.bias_relu_fwd(cp.zeros((2, 3, 4, 4), dtype=cp.float32), cp.zeros(4, dtype=cp.float32))


def test_rejects_out_of_range_targets():
    logits = cp.zeros((3, 4), dtype=cp.float32)
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 4\)"):
        cuda.cross_entropy_fwd(logits, cp.asarray([0, 4, 1]))
    with pytest.raises(TypeError, match="target: expected dtype int64"):
        cuda.cross_entropy_fwd(logits, cp.asarray([0, 1, 1], dtype=cp.int32))


def test_rejects_bad_probability_and_batch_norm_of_one_value():
    with pytest.raises(ValueError, match="p: expected a probability"):
        cuda.dropout_fwd(cp.zeros(4, dtype=cp.float32), 1.5, 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cuda.batch_norm_fwd(cp.zeros((1, 3), dtype=cp.float32), None, None, None, None, True, 0.1, 1e-5)


def test_runs_on_a_non_default_stream():
    x = cp.asarray(np.linspace(-3, 3, 1000), dtype=cp.float32)
    # x was written on the default stream, which a non-blocking stream does not wait for
    cp.cuda.get_current_stream().synchronize()
    with cp.cuda.Stream(non_blocking=True) as s:
        y = cuda.relu_fwd(x)
        s.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(y), np.maximum(cp.asnumpy(x), 0))


def test_poisoned_outputs_start_as_nan_and_stop_at_the_end():
    # verify.run_case relies on it: a kernel that skips part of its output must show NaN
    # (or -1 in an index array), not what the pool's previous tenant left there
    from pycnn.backends.cuda._common import empty, poisoned_outputs
    with poisoned_outputs():
        assert bool(cp.isnan(empty((5, 3))).all())
        assert bool(cp.isnan(empty(())))                            # a 0-d loss, too
        assert bool((empty((7,), cp.int64) == -1).all())
        assert bool((empty((4,), cp.uint8) == 255).all())
        relu_out = cuda.relu_fwd(cp.ones(6, dtype=cp.float32))     # kernels still overwrite it
    np.testing.assert_array_equal(cp.asnumpy(relu_out), np.ones(6))
    cp.get_default_memory_pool().free_all_blocks()
    a = empty((1 << 12,))
    a.fill(0)
    del a
    assert not bool(cp.isnan(empty((1 << 12,))).any()), "outside the block, no fill"
