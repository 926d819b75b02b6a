// The second half of a deterministic split reduction, shared by the backward-filter
// versions that split N*P*Q (04_implicit_gemm_bwd_filter.cu, 06_depthwise.cu,
// 10_implicit_gemm_bwd_filter_tf32x3.cu): every split stored its partial sums as one
// row of workspace, and this adds the rows in split order, so the result has the
// same bits on every run.
#pragma once

#include "common.cuh"

namespace pycnn {

// out[i] = sum over s = 0 .. splits-1 of workspace[s * total + i], in that order.
// Grid-stride over i: launch with grid_for(total, 256) blocks of 256 threads.
static __global__ void conv2d_split_sum_kernel(const float* __restrict__ workspace,
                                               float* __restrict__ out, int total, int splits) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += workspace[(size_t)s * total + i];
    out[i] = sum;
  }
}

}  // namespace pycnn
