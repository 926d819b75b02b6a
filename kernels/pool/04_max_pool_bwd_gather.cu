// Max pooling backward as a gather: deterministic, no atomics, no zeroing pass.
//
// What changed from 01_max_pool.cu (max_pool2d_bwd_kernel1): that kernel runs
// one thread per OUTPUT and atomicAdds dy at the saved argmax, because the
// backend call had no window geometry. Now max_pool2d_bwd receives kernel
// size, stride, padding and dilation, so this kernel runs one thread per INPUT
// element (n, c, ih, iw), enumerates the output windows that can contain it and
// adds dy of those whose saved index is ih*W + iw. Along the height (the width
// alike) window oh covers the taps oh*sh - ph + r*dh, r in [0, kh), so it can
// contain ih only if
//   oh*sh <= ih + ph <= oh*sh + (kh-1)*dh
//   oh in [ (ih+ph < span) ? 0 : (ih+ph-span)/sh + 1 ,  min((ih+ph)/sh + 1, P) ),
// span = (kh-1)*dh + 1 (the dilated window's extent). With dilation a window in
// that range may skip ih (its taps step over it); the index comparison rejects
// those, so no divisibility test is needed. ceil_mode arrives through P and Q.
//
// Why it is shaped this way: every dx element is written exactly once, by one
// thread, as a sum over its candidate windows in a fixed order (oh, then ow,
// ascending), so the result is bitwise the same on every run and every GPU,
// whatever the overlap (3x3/2 pools make an input the max of up to 4 windows);
// dx needs no cudaMemsetAsync beforehand; consecutive threads own consecutive
// iw, so the dx stores are fully coalesced, where the scatter's atomics landed
// wherever the argmaxes were. dy is loaded only for windows whose index matches.
//
// What limits it: DRAM bandwidth. Each thread reads the int64 indices of its
// ceil(span_h/sh) x ceil(span_w/sw) candidate windows (1 for 2x2/2, up to 4 for
// 3x3/2); neighbouring threads read the same ones, so DRAM traffic stays about
// one pass over indices and dy plus one over dx, the rest is served by L1/L2.
// Indices must be those max_pool2d_fwd produced for the same geometry: an index
// that lies outside its own window (or outside the plane) is never matched, and
// its dy is dropped, where the scatter of version 1 would still add it.
// 32-bit element indexing (launchers reject larger tensors).
//
// Measured: not yet measured on a GPU.
#include "common.cuh"
#include "pool/pool.h"

namespace pycnn {

constexpr int kMaxPoolBwdBlock = 256;

// First output along one axis whose window [o*s, o*s + span) (padded coordinates)
// can contain padded position i: the smallest o with o*s + span > i.
__device__ __forceinline__ int max_pool_first_window(int i, int span, int s) {
  return i < span ? 0 : (i - span) / s + 1;
}

// dx[n, c, ih, iw] = sum of dy[n, c, oh, ow] over the windows whose argmax is (ih, iw).
__global__ void max_pool2d_bwd_kernel2(const float* __restrict__ dy,
                                       const int64_t* __restrict__ indices, float* __restrict__ dx,
                                       int total, int H, int W, int P, int Q, int kh, int kw,
                                       int sh, int sw, int ph, int pw, int dh, int dw) {
  const int span_h = (kh - 1) * dh + 1;  // extent of a dilated window, in input rows
  const int span_w = (kw - 1) * dw + 1;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // i = ((nc * H) + ih) * W + iw; i < total <= 2^31-1, so 32-bit division suffices
    const int li = static_cast<int>(i);
    const int iw = li % W;
    const int ih = (li / W) % H;
    const int nc = li / W / H;
    const int64_t plane_out = static_cast<int64_t>(nc) * P * Q;  // start of dy[n, c] and indices[n, c]
    const float* g = dy + plane_out;
    const int64_t* at = indices + plane_out;
    const int64_t me = static_cast<int64_t>(ih) * W + iw;  // the index a window saves when ih, iw won
    const int hp = ih + ph;  // coordinates in the padded input
    const int wp = iw + pw;
    const int oh_begin = max_pool_first_window(hp, span_h, sh);
    const int oh_end = min(hp / sh + 1, P);  // windows start at oh*sh <= hp
    const int ow_begin = max_pool_first_window(wp, span_w, sw);
    const int ow_end = min(wp / sw + 1, Q);
    float sum = 0.f;
    for (int oh = oh_begin; oh < oh_end; ++oh) {  // fixed order: deterministic sum
      for (int ow = ow_begin; ow < ow_end; ++ow) {
        const int o = oh * Q + ow;
        if (at[o] == me) sum += g[o];
      }
    }
    dx[i] = sum;
  }
}

void max_pool2d_bwd2(const float* dy, const int64_t* indices, float* dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw,
                     int ph, int pw, int dh, int dw, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "max_pool2d_bwd2: dx");
  check_int32_size(n * c * p * q, "max_pool2d_bwd2: dy");
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0) {
    throw std::invalid_argument("max_pool2d_bwd2: expected kernel, stride, dilation >= 1 and padding >= 0");
  }
  const int64_t total = n * c * h * w;
  if (total == 0) return;
  launch("max_pool2d_bwd_kernel2", max_pool2d_bwd_kernel2, grid_for(total, kMaxPoolBwdBlock),
         kMaxPoolBwdBlock, 0, stream, dy, indices, dx, static_cast<int>(total), static_cast<int>(h),
         static_cast<int>(w), static_cast<int>(p), static_cast<int>(q), kh, kw, sh, sw, ph, pw, dh,
         dw);
}

}  // namespace pycnn
