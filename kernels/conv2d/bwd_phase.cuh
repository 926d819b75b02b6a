// The stride phases of backward-data (versions 11 and 14): one axis of one phase,
// the pixels whose (l + pad) mod stride is the same, and the filter taps that reach
// them. 11_implicit_gemm_bwd_data_phased.cu's header derives the arithmetic.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace pycnn {

// One axis of one stride phase (version 11's header): the pixels l = first + i*stride
// (i < count) with (l + pad) mod stride = a, the taps r = tap0 + j*tap_step (j < taps)
// that reach them, and the output index o0 + i - j*dout that pixel i and tap j read.
struct BwdPhase {
  int first, count, tap0, taps, tap_step, o0, dout;
};

__host__ __device__ inline BwdPhase bwd_phase(int a, int L, int pad, int stride, int dil, int F) {
  BwdPhase ph;
  ph.first = ((a - pad) % stride + stride) % stride;  // the first l >= 0 with (l + pad) % stride = a
  ph.count = ph.first < L ? (L - 1 - ph.first) / stride + 1 : 0;
  int gcd = stride, b = dil;  // gcd(stride, dil), Euclid
  while (b != 0) {
    const int t = gcd % b;
    gcd = b;
    b = t;
  }
  ph.tap_step = stride / gcd;
  ph.dout = dil / gcd;
  ph.tap0 = 0;  // the first r in [0, tap_step) with r*dil = a (mod stride), if any
  // (64-bit products: tap0 < stride, but the dilation may be large)
  while (ph.tap0 < ph.tap_step && (int64_t)ph.tap0 * dil % stride != a) ++ph.tap0;
  ph.taps = ph.tap0 < ph.tap_step && ph.tap0 < F ? (F - 1 - ph.tap0) / ph.tap_step + 1 : 0;
  // exact: the numerator is = 0 mod stride
  ph.o0 = (int)(((int64_t)ph.first + pad - (int64_t)ph.tap0 * dil) / stride);
  return ph;
}

// Taps of one axis in the phases before phase a: #{r < F : r*dil mod stride < a}.
// Each tap belongs to exactly one phase (the one with a = r*dil mod stride), so
// phases taken in order a = 0, 1, .. hold consecutive runs of a table of all F taps,
// and this is where phase a's run starts. A loop over the filter, not the stride.
__host__ __device__ inline int bwd_phase_taps_before(int a, int stride, int dil, int F) {
  int n = 0;
  for (int r = 0; r < F; ++r) n += (int)((int64_t)r * dil % stride) < a;
  return n;
}

// Pixels of the largest phase: N * ceil(H / sh) * ceil(W / sw) (the grid's x extent).
inline int64_t bwd_phase_max_rows(int N, int H, int W, int stride_h, int stride_w) {
  return (int64_t)N * ceil_div((int64_t)H, (int64_t)stride_h) * ceil_div((int64_t)W, (int64_t)stride_w);
}

}  // namespace pycnn
