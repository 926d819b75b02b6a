// Average pooling, forward and backward, with PyTorch's divisor rules.
//
// What it does: forward, one thread per output (n, c, oh, ow) sums its kh x kw
// window (padding contributes zeros) and divides by the divisor PyTorch uses:
//   start = o*s - pad, end = min(start + k, size + pad)      (per axis)
//   count_include_pad: divisor = (end_h - start_h) * (end_w - start_w)
//   otherwise: the same window clipped to the real input [0, size)
// so a ceil_mode window that overhangs the padded input never counts the
// overhang, and a divisor is at least 1 (the reference guards empty windows the
// same way). Backward, one thread per input element (n, c, ih, iw) gathers
// dy / divisor from every output window that covers it: the outputs oh with
// oh*sh <= ih + ph < oh*sh + kh, i.e.
//   oh in [ (ih+ph < kh) ? 0 : (ih+ph-kh)/sh + 1 ,  min((ih+ph)/sh + 1, P) ).
//
// Why it is shaped this way: the gather backward writes each dx element once, so
// it needs neither atomics nor a zeroed buffer and is deterministic (the sum
// over covering windows runs in a fixed order). The forward sums taps in the
// same row-major order as the NumPy reference, so the two agree to rounding of
// the final division. Consecutive threads own consecutive columns: coalesced.
//
// What limits it: bandwidth, and for large windows the kh*kw loads per output
// through L1 (a sliding-window sum would cut that for big kernels; pools in CNNs
// use 2x2 and 3x3). Integer division per element is noise next to the loads.
// 32-bit element indexing (launchers reject larger tensors).
//
// Measured: not yet measured on a GPU.
#include "common.cuh"
#include "pool/pool.h"

namespace pycnn {

constexpr int kAvgBlock = 256;

// Number of elements the window of output o averages along one axis.
__device__ __forceinline__ int avg_divisor_1d(int o, int size, int k, int s, int pad,
                                              bool count_include_pad) {
  const int start = o * s - pad;
  const int end = min(start + k, size + pad);  // never past the padded input
  if (count_include_pad) return end - start;
  return min(end, size) - max(start, 0);
}

__device__ __forceinline__ float avg_divisor(int oh, int ow, int H, int W, int kh, int kw, int sh,
                                             int sw, int ph, int pw, bool count_include_pad) {
  const int d = avg_divisor_1d(oh, H, kh, sh, ph, count_include_pad) *
                avg_divisor_1d(ow, W, kw, sw, pw, count_include_pad);
  return static_cast<float>(d > 1 ? d : 1);  // an all-padding window divides by 1
}

__global__ void avg_pool2d_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int total,
                                       int H, int W, int P, int Q, int kh, int kw, int sh, int sw,
                                       int ph, int pw, bool count_include_pad) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int li = static_cast<int>(i);  // ((nc * P) + oh) * Q + ow
    const int ow = li % Q;
    const int oh = (li / Q) % P;
    const int nc = li / Q / P;
    const float* plane = x + static_cast<int64_t>(nc) * H * W;
    const int h0 = oh * sh - ph;
    const int w0 = ow * sw - pw;
    float sum = 0.f;
    for (int r = 0; r < kh; ++r) {
      const int ih = h0 + r;
      if (ih < 0 || ih >= H) continue;  // padding adds zero
      for (int s = 0; s < kw; ++s) {
        const int iw = w0 + s;
        if (iw >= 0 && iw < W) sum += plane[ih * W + iw];
      }
    }
    y[i] = sum / avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad);
  }
}

__global__ void avg_pool2d_bwd_kernel1(const float* __restrict__ dy, float* __restrict__ dx,
                                       int total, int H, int W, int P, int Q, int kh, int kw,
                                       int sh, int sw, int ph, int pw, bool count_include_pad) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int li = static_cast<int>(i);  // ((nc * H) + ih) * W + iw
    const int iw = li % W;
    const int ih = (li / W) % H;
    const int nc = li / W / H;
    const float* g = dy + static_cast<int64_t>(nc) * P * Q;  // dy[n, c, :, :]
    const int hp = ih + ph;  // coordinates in the padded input
    const int wp = iw + pw;
    // outputs whose window [o*s, o*s + k) contains hp (resp. wp)
    const int oh_begin = hp < kh ? 0 : (hp - kh) / sh + 1;
    const int oh_end = min(hp / sh + 1, P);
    const int ow_begin = wp < kw ? 0 : (wp - kw) / sw + 1;
    const int ow_end = min(wp / sw + 1, Q);
    float sum = 0.f;
    for (int oh = oh_begin; oh < oh_end; ++oh) {
      for (int ow = ow_begin; ow < ow_end; ++ow) {
        sum += g[oh * Q + ow] / avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad);
      }
    }
    dx[i] = sum;
  }
}

// Launchers.
void avg_pool2d_fwd1(const float* x, float* y, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
                     bool count_include_pad, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "avg_pool2d_fwd1: x");
  check_int32_size(n * c * p * q, "avg_pool2d_fwd1: y");
  const int64_t total = n * c * p * q;
  if (total == 0) return;
  launch("avg_pool2d_fwd_kernel1", avg_pool2d_fwd_kernel1, grid_for(total, kAvgBlock), kAvgBlock, 0,
         stream, x, y, static_cast<int>(total), static_cast<int>(h), static_cast<int>(w),
         static_cast<int>(p), static_cast<int>(q), kh, kw, sh, sw, ph, pw, count_include_pad);
}

void avg_pool2d_bwd1(const float* dy, float* dx, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
                     bool count_include_pad, cudaStream_t stream) {
  check_int32_size(n * c * h * w, "avg_pool2d_bwd1: dx");
  check_int32_size(n * c * p * q, "avg_pool2d_bwd1: dy");
  const int64_t total = n * c * h * w;
  if (total == 0) return;
  launch("avg_pool2d_bwd_kernel1", avg_pool2d_bwd_kernel1, grid_for(total, kAvgBlock), kAvgBlock, 0,
         stream, dy, dx, static_cast<int>(total), static_cast<int>(h), static_cast<int>(w),
         static_cast<int>(p), static_cast<int>(q), kh, kw, sh, sw, ph, pw, count_include_pad);
}

}  // namespace pycnn
