// Max pooling, forward (with argmax indices) and backward.
//
// What it does: forward, one thread per output element (n, c, oh, ow) scans its
// window kh x kw (dilated by dh, dw) in row-major order and keeps the first
// maximum, as PyTorch and NumPy's argmax do; padding is never read, so it acts
// as -inf. The index saved is ih*W + iw inside the (n, c) plane, int64 as
// PyTorch returns it. A NaN wins over any number (and the first NaN is kept),
// which is what np.argmax does. ceil_mode arrives through P and Q only: a window
// that hangs over the bottom/right edge is clipped like padding.
// Backward, one thread per output element adds dy to dx at its saved index.
//
// Why it is shaped this way: the forward is a gather with no reuse worth
// staging in shared memory for the usual 2x2/3x3 windows (the overlapping rows
// of a 3x3/2 pool are served by L1/L2), so the simple mapping is already
// bandwidth-bound; consecutive threads take consecutive ow, so loads and stores
// coalesce along rows (with a stride of sw elements for the loads).
// The backward is an atomicAdd scatter, not the deterministic gather (one thread
// per input element visiting the windows that cover it), because it was written
// when the backend call max_pool2d_bwd carried no window geometry, and without
// kernel size, stride, padding and dilation the covering windows cannot be
// enumerated. The call now carries it, and 04_max_pool_bwd_gather.cu (version 2)
// is the default backward; this one stays runnable as version 1.
// Consequences of the scatter: dx must be zeroed first (cudaMemsetAsync on the
// same stream), and where windows overlap (stride < kernel) an input that is
// the max of several windows receives its 2-4 contributions in an unspecified
// order, so results may differ in the last bit from run to run. Without overlap
// (stride >= kernel, the common 2x2/2 pool) every dx element gets at most one
// addition and the result is exact and deterministic.
//
// What limits it: DRAM bandwidth; the forward reads each input about
// (kh/sh)*(kw/sw) times through the cache and writes 12 bytes per output (value
// + int64 index). Out-of-range indices in the backward are skipped, never
// written through. 32-bit element indexing (launchers reject larger tensors).
//
// Measured: not yet measured on a GPU.
#include <cmath>

#include "common.cuh"
#include "pool/pool.h"

namespace pycnn {

constexpr int kPoolBlock = 256;

__global__ void max_pool2d_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y,
                                       int64_t* __restrict__ indices, int total, int H, int W,
                                       int P, int Q, int kh, int kw, int sh, int sw, int ph,
                                       int pw, int dh, int dw) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // i = ((nc * P) + oh) * Q + ow; i < total <= 2^31-1, so 32-bit division suffices
    const int li = static_cast<int>(i);
    const int ow = li % Q;
    const int oh = (li / Q) % P;
    const int nc = li / Q / P;
    const float* plane = x + static_cast<int64_t>(nc) * H * W;  // x[n, c, :, :]
    const int h0 = oh * sh - ph;  // top-left tap of the window, in input coordinates
    const int w0 = ow * sw - pw;
    float best = -INFINITY;
    int best_at = -1;  // stays -1 only if the window holds no input pixel (never with valid sizes)
    for (int r = 0; r < kh; ++r) {
      const int ih = h0 + r * dh;
      if (ih < 0 || ih >= H) continue;  // padding row: -inf, never the max
      for (int s = 0; s < kw; ++s) {
        const int iw = w0 + s * dw;
        if (iw < 0 || iw >= W) continue;
        const float v = plane[ih * W + iw];
        // strict '>' keeps the first maximum; a NaN replaces a number, not an earlier NaN
        if (best_at < 0 || v > best || (isnan(v) && !isnan(best))) {
          best = v;
          best_at = ih * W + iw;
        }
      }
    }
    y[i] = best;
    indices[i] = best_at;
  }
}

// dx[nc, indices[i]] += dy[i]; dx was zeroed by the launcher.
__global__ void max_pool2d_bwd_kernel1(const float* __restrict__ dy,
                                       const int64_t* __restrict__ indices, float* __restrict__ dx,
                                       int total, int plane_in, int plane_out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t at = indices[i];
    if (at < 0 || at >= plane_in) continue;  // not an index of this plane: ignore, never write out of bounds
    const int nc = static_cast<int>(i) / plane_out;  // (n, c) plane of this output
    atomicAdd(dx + static_cast<int64_t>(nc) * plane_in + at, dy[i]);
  }
}

// Launchers.
void max_pool2d_fwd1(const float* x, float* y, int64_t* indices, int64_t n, int64_t c, int64_t h,
                     int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph,
                     int pw, int dh, int dw, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "max_pool2d_fwd1: x");
  check_int32_size(n * c * p * q, "max_pool2d_fwd1: y");
  const int64_t total = n * c * p * q;
  if (total == 0) return;
  launch("max_pool2d_fwd_kernel1", max_pool2d_fwd_kernel1, grid_for(total, kPoolBlock), kPoolBlock,
         0, stream, x, y, indices, static_cast<int>(total), static_cast<int>(h),
         static_cast<int>(w), static_cast<int>(p), static_cast<int>(q), kh, kw, sh, sw, ph, pw, dh,
         dw);
}

void max_pool2d_bwd1(const float* dy, const int64_t* indices, float* dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t p, int64_t q, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "max_pool2d_bwd1: dx");
  check_int32_size(n * c * p * q, "max_pool2d_bwd1: dy");
  const int64_t in_total = n * c * h * w;
  if (in_total == 0) return;
  cudaError_t err = cudaMemsetAsync(dx, 0, sizeof(float) * in_total, stream);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("max_pool2d_bwd1: cudaMemsetAsync: ") +
                             cudaGetErrorString(err));
  }
  const int64_t total = n * c * p * q;
  if (total == 0) return;
  launch("max_pool2d_bwd_kernel1", max_pool2d_bwd_kernel1, grid_for(total, kPoolBlock), kPoolBlock,
         0, stream, dy, indices, dx, static_cast<int>(total), static_cast<int>(h * w),
         static_cast<int>(p * q));
}

}  // namespace pycnn
