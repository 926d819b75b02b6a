"""Micro-benchmarks of single kernels with pytest-benchmark (not part of the test run):

    pytest bench/test_kernels_benchmark.py --benchmark-only

The NumPy reference is timed always; the CUDA kernels when a GPU, CuPy and
pycnn._C are present. A GPU call is asynchronous, so the timed function
synchronises the stream: the figure then includes launch overhead and is a
latency, not a kernel time (``pycnn bench`` measures kernel time with CUDA events).
"""

import pytest

from pycnn.bench import sets
from pycnn.bench.harness import find_gpu
from pycnn.bench.metrics import OPS
from pycnn.bench.ops import build

# Small shapes: quick on the NumPy reference, launch-bound on a GPU.
CASES = sets.load_set("tiny")["cases"] + [
    {"op": "conv", "name": "conv3x3_c32_28", "C": 32, "H": 28, "W": 28, "K": 32, "R": 3, "S": 3,
     "stride": (1, 1), "padding": (1, 1), "padding4": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1, "count": 1},
]
PARAMS = [pytest.param(op, case, id=f"{case['name']}-{op}") for case in CASES for op in OPS[case["op"]]]
BATCH = 4

cp, cuda_be, why_not = find_gpu()


@pytest.mark.parametrize("op, case", PARAMS)
def test_numpy_ref(benchmark, op, case):
    import numpy as np
    from pycnn.backends import numpy_ref

    problem = build(op, case, BATCH, numpy_ref, np)
    benchmark.group = f"{case['name']}-{op}"
    benchmark(problem.ours, numpy_ref)


@pytest.mark.gpu
@pytest.mark.skipif(cp is None, reason=f"no GPU: {why_not}")
@pytest.mark.parametrize("op, case", PARAMS)
def test_cuda(benchmark, op, case):
    problem = build(op, case, BATCH, cuda_be, cp)
    stream = cp.cuda.get_current_stream()

    def run():
        problem.ours(cuda_be)
        stream.synchronize()

    run()
    benchmark.group = f"{case['name']}-{op}"
    benchmark(run)
