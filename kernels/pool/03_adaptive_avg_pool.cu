// Adaptive average pooling, forward and backward; the global average pool
// (output 1x1) as its own warp-per-plane reduction.
//
// What it does: output cell (i, j) of a P x Q output averages the input window
// rows [floor(i*H/P), ceil((i+1)*H/P)) x cols [floor(j*W/Q), ceil((j+1)*W/Q)),
// PyTorch's bounds (windows may overlap by one when P does not divide H).
// Forward: one thread per output cell, or for P = Q = 1 one warp per (n, c)
// plane: the 32 lanes stride over the H*W elements (coalesced) and combine their
// partial sums with __shfl_xor_sync, lane 0 writes sum / (H*W).
// Backward: one thread per input element gathers dy / window size from the
// output cells whose windows contain it. Those are exactly
//   i in [floor(ih*P/H), ceil((ih+1)*P/H))
// (the same bound formula with the roles of H and P swapped; checked against
// the definition for every H, P < 70), so no atomics and no zeroing: each dx is
// written once, deterministically.
//
// Why it is shaped this way: a general adaptive pool has as many windows as
// outputs and no reuse to exploit. The global pool (ResNet's head: N*C planes of
// 7x7) is a pure reduction where one thread per output would read a 49-element
// row serially; a warp per plane reads it in two coalesced trips.
//
// What limits it: bandwidth. A warp per plane idles lanes when H*W is far below
// 32 (e.g. 2x2 planes) and a plane longer than ~32K elements would want a block
// instead; neither occurs in the CNNs pycnn targets. Window products use 64-bit
// integers (i*H can pass 2^31 for large sizes); elements are 32-bit indexed.
//
// Measured: not yet measured on a GPU.
#include <algorithm>

#include "common.cuh"
#include "pool/pool.h"

namespace pycnn {

constexpr int kAdaptiveBlock = 256;

// [start, end) of output cell i of `out` cells over `in` inputs (PyTorch's rule).
__device__ __forceinline__ int adaptive_start(int i, int in, int out) {
  return static_cast<int>((static_cast<int64_t>(i) * in) / out);
}
__device__ __forceinline__ int adaptive_end(int i, int in, int out) {
  return static_cast<int>((static_cast<int64_t>(i + 1) * in + out - 1) / out);
}

__global__ void adaptive_avg_pool2d_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y,
                                                int total, int H, int W, int P, int Q) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int li = static_cast<int>(i);  // ((nc * P) + oh) * Q + ow
    const int ow = li % Q;
    const int oh = (li / Q) % P;
    const int nc = li / Q / P;
    const float* plane = x + static_cast<int64_t>(nc) * H * W;
    const int h0 = adaptive_start(oh, H, P), h1 = adaptive_end(oh, H, P);
    const int w0 = adaptive_start(ow, W, Q), w1 = adaptive_end(ow, W, Q);
    float sum = 0.f;
    for (int ih = h0; ih < h1; ++ih) {
      for (int iw = w0; iw < w1; ++iw) sum += plane[ih * W + iw];
    }
    y[i] = sum / static_cast<float>((h1 - h0) * (w1 - w0));
  }
}

// One warp per (n, c) plane of hw elements; planes = N*C.
__global__ void global_avg_pool2d_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y,
                                              int planes, int hw) {
  const int lane = threadIdx.x % 32;
  const int warps_per_block = blockDim.x / 32;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t plane = first; plane < planes; plane += warp_stride) {  // uniform per warp
    const float* src = x + plane * hw;
    float sum = 0.f;
    for (int k = lane; k < hw; k += 32) sum += src[k];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) y[plane] = sum / static_cast<float>(hw);
  }
}

__global__ void adaptive_avg_pool2d_bwd_kernel1(const float* __restrict__ dy, float* __restrict__ dx,
                                                int total, int H, int W, int P, int Q) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int li = static_cast<int>(i);  // ((nc * H) + ih) * W + iw
    const int iw = li % W;
    const int ih = (li / W) % H;
    const int nc = li / W / H;
    const float* g = dy + static_cast<int64_t>(nc) * P * Q;
    // output cells whose window contains (ih, iw): the bound formula with in/out swapped
    const int oh0 = adaptive_start(ih, P, H), oh1 = adaptive_end(ih, P, H);
    const int ow0 = adaptive_start(iw, Q, W), ow1 = adaptive_end(iw, Q, W);
    float sum = 0.f;
    for (int oh = oh0; oh < oh1; ++oh) {
      const int rows = adaptive_end(oh, H, P) - adaptive_start(oh, H, P);
      for (int ow = ow0; ow < ow1; ++ow) {
        const int cols = adaptive_end(ow, W, Q) - adaptive_start(ow, W, Q);
        sum += g[oh * Q + ow] / static_cast<float>(rows * cols);
      }
    }
    dx[i] = sum;
  }
}

// Launchers.
void adaptive_avg_pool2d_fwd1(const float* x, float* y, int64_t n, int64_t c, int64_t h,
                              int64_t w, int64_t p, int64_t q, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "adaptive_avg_pool2d_fwd1: x");
  check_int32_size(n * c * p * q, "adaptive_avg_pool2d_fwd1: y");
  const int64_t total = n * c * p * q;
  if (total == 0 || h * w == 0) return;
  if (p == 1 && q == 1) {
    const int warps = kAdaptiveBlock / 32;
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, int64_t{warps}), 65535 * 8));
    launch("global_avg_pool2d_fwd_kernel1", global_avg_pool2d_fwd_kernel1, blocks, kAdaptiveBlock,
           0, stream, x, y, static_cast<int>(total), static_cast<int>(h * w));
    return;
  }
  launch("adaptive_avg_pool2d_fwd_kernel1", adaptive_avg_pool2d_fwd_kernel1,
         grid_for(total, kAdaptiveBlock), kAdaptiveBlock, 0, stream, x, y, static_cast<int>(total),
         static_cast<int>(h), static_cast<int>(w), static_cast<int>(p), static_cast<int>(q));
}

void adaptive_avg_pool2d_bwd1(const float* dy, float* dx, int64_t n, int64_t c, int64_t h,
                              int64_t w, int64_t p, int64_t q, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "adaptive_avg_pool2d_bwd1: dx");
  check_int32_size(n * c * p * q, "adaptive_avg_pool2d_bwd1: dy");
  const int64_t total = n * c * h * w;
  if (total == 0 || p * q == 0) return;
  launch("adaptive_avg_pool2d_bwd_kernel1", adaptive_avg_pool2d_bwd_kernel1,
         grid_for(total, kAdaptiveBlock), kAdaptiveBlock, 0, stream, dy, dx,
         static_cast<int>(total), static_cast<int>(h), static_cast<int>(w), static_cast<int>(p),
         static_cast<int>(q));
}

}  // namespace pycnn
