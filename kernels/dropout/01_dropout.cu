// Dropout, forward (mask from a counter-based hash) and backward.
//
// What it does: element i (flat, C order) is kept iff
//   u = lowbias32(uint32(i) ^ key) / 2^32 >= p,  key = lowbias32(uint32(seed) ^ 0x9E3779B9),
// with lowbias32: h ^= h>>16; h *= 0x7FEB352D; h ^= h>>15; h *= 0x846CA68B; h ^= h>>16.
// The forward writes the uint8 mask and y = x * mask / (1 - p); the backward
// reads the mask back: dx = dy * mask / (1 - p). p == 1 gives zeros (no 1/0).
//
// Why it is shaped this way: a counter-based generator needs no state: any
// thread computes the decision of any element from (seed, i) alone, so the grid
// shape does not change the mask and the NumPy reference reproduces it exactly.
// The float comparison u >= p is done in integers: since h / 2^32 and p * 2^32
// are exact in double, u >= p  <=>  h >= ceil(p * 2^32), a 64-bit threshold
// computed once on the host (2^32 for p == 1: nothing kept). The output is
// computed as the reference writes it, (x * mask) / float(1 - p), so kept values
// agree bit for bit and a dropped inf/NaN gives NaN in both.
//
// What limits it: bandwidth (4 B read, 4 B + 1 B written per element); the
// hash is ~10 integer operations, well under the memory time. The uint8 mask
// costs a quarter of the activations' memory: a bit mask (or recomputing the
// mask from the seed in the backward) would save it. 32-bit element indexing;
// uint32(i) would wrap past 2^32 exactly as the reference's does.
//
// Measured: not yet measured on a GPU.
#include <cmath>

#include "common.cuh"
#include "dropout/dropout.h"

namespace pycnn {

constexpr int kDropoutBlock = 256;

__host__ __device__ __forceinline__ uint32_t lowbias32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

__global__ void dropout_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y,
                                    uint8_t* __restrict__ mask, int n, uint32_t key,
                                    uint64_t threshold, float one_minus_p, bool drop_all) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = lowbias32(static_cast<uint32_t>(i) ^ key);
    const uint8_t keep = static_cast<uint64_t>(h) >= threshold ? 1 : 0;
    mask[i] = keep;
    y[i] = drop_all ? 0.f : (x[i] * static_cast<float>(keep)) / one_minus_p;
  }
}

__global__ void dropout_bwd_kernel1(const float* __restrict__ dy, const uint8_t* __restrict__ mask,
                                    float* __restrict__ dx, int n, float one_minus_p, bool drop_all) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dx[i] = drop_all ? 0.f : (dy[i] * static_cast<float>(mask[i])) / one_minus_p;
  }
}

// Launchers.
namespace {
void check_p(double p, const char* what) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw std::invalid_argument(std::string(what) + ": p: expected a probability in [0, 1], got " +
                                std::to_string(p));
  }
}
}  // namespace

void dropout_fwd1(const float* x, float* y, uint8_t* mask, int64_t n, double p, uint32_t seed,
                  cudaStream_t stream) {
  check_p(p, "dropout_fwd1");
  check_int32_size(n, "dropout_fwd1: x");
  if (n == 0) return;
  const uint32_t key = lowbias32(seed ^ 0x9E3779B9u);
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 4294967296.0));  // exact in double
  launch("dropout_fwd_kernel1", dropout_fwd_kernel1, grid_for(n, kDropoutBlock), kDropoutBlock, 0,
         stream, x, y, mask, static_cast<int>(n), key, threshold, static_cast<float>(1.0 - p),
         p == 1.0);
}

void dropout_bwd1(const float* dy, const uint8_t* mask, float* dx, int64_t n, double p,
                  cudaStream_t stream) {
  check_p(p, "dropout_bwd1");
  check_int32_size(n, "dropout_bwd1: dy");
  if (n == 0) return;
  launch("dropout_bwd_kernel1", dropout_bwd_kernel1, grid_for(n, kDropoutBlock), kDropoutBlock, 0,
         stream, dy, mask, dx, static_cast<int>(n), static_cast<float>(1.0 - p), p == 1.0);
}

}  // namespace pycnn
