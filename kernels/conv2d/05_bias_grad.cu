// conv2d backward-bias, version 5: db[k] = sum over n, op, oq of dy[n, k, op, oq].
//
// What it does: one block per output channel k. Thread t sums the elements
// i = t, t + blockDim, ... of that channel's N*PQ values (i = n*PQ + pq,
// address (n*K + k)*PQ + pq), so consecutive threads read consecutive pq:
// coalesced within each image plane. Each warp then reduces its 32 sums with
// shuffles (__shfl_down_sync), warp leaders write to shared memory, and the
// first warp reduces those. Every float is added in an order fixed by the
// shape alone, so the result is the same bit for bit on every run
// (deterministic, unlike an atomicAdd reduction).
//
// Changed from the previous version: none for this pass; it is the first
// bias-gradient kernel (numbered 5 after the four convolution files).
//
// What limits it: memory bandwidth, as it should (one read of dy); but with
// only K blocks a layer with few channels (K < ~2 * SMs) leaves SMs idle, and
// small planes (7x7 = 49 floats) make each image's run of addresses short.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"

namespace pycnn {

constexpr int kBiasThreads = 256;
static_assert(kBiasThreads % 32 == 0 && kBiasThreads <= 1024, "whole warps, at most 32 of them");

__global__ void __launch_bounds__(kBiasThreads)
conv2d_bwd_bias_kernel5(const float* __restrict__ dy, float* __restrict__ db, int N, int K,
                        int PQ) {
  __shared__ float warp_sums[kBiasThreads / 32];
  const int k = blockIdx.x;
  const int tid = threadIdx.x;
  const int count = N * PQ;
  float sum = 0.f;
  for (int i = tid; i < count; i += kBiasThreads) {
    const int n = i / PQ;                  // i = n*PQ + pq
    const int pq = i - n * PQ;
    sum += dy[((size_t)n * K + k) * PQ + pq];
  }
  // Warp tree: after offsets 16, 8, 4, 2, 1 lane 0 holds the warp's sum.
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  const int lane = tid % 32, warp = tid / 32;
  if (lane == 0) warp_sums[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    sum = lane < kBiasThreads / 32 ? warp_sums[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) db[k] = sum;
  }
}

// Launchers.
void conv2d_bwd_bias5(const float* dy, float* db, int N, int K, int PQ, cudaStream_t stream) {
  if (N < 1 || K < 1 || PQ < 1)
    throw std::invalid_argument("conv2d_bwd_bias5: expected N, K, PQ >= 1, got N=" +
                                std::to_string(N) + " K=" + std::to_string(K) +
                                " PQ=" + std::to_string(PQ));
  check_int32_size((int64_t)N * K * PQ, "dy");
  check_int32_size((int64_t)N * PQ + kBiasThreads, "N*P*Q plus one block");  // i + blockDim stays an int
  launch("conv2d_bwd_bias_kernel5", conv2d_bwd_bias_kernel5, K, kBiasThreads, 0, stream, dy, db, N, K, PQ);
}

}  // namespace pycnn
