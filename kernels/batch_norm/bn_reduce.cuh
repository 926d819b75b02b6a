// What the batch-norm versions share: the block size, the block-wide sum in double,
// and where value m of a channel lives in x viewed as (N, C, inner).
#pragma once

#include <cstdint>

#include "common.cuh"

namespace pycnn {

constexpr int kBnBlock = 256;
static_assert(kBnBlock % 32 == 0 && kBnBlock <= 1024, "block_sum needs whole warps, at most 32");

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block, returned to every thread; `scratch` holds 32 doubles.
// Ends with a barrier so scratch can be reused by the next call.
__device__ inline double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double t = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0;
    t = warp_sum(t);
    if (lane == 0) scratch[0] = t;
  }
  __syncthreads();
  const double total = scratch[0];
  __syncthreads();
  return total;
}

// Offset of value m (0 <= m < N*inner) of channel ch in x (N, C, inner).
__device__ __forceinline__ int64_t channel_offset(int m, int ch, int C, int inner) {
  const int nn = m / inner, s = m % inner;
  return (static_cast<int64_t>(nn) * C + ch) * inner + s;
}

}  // namespace pycnn
