// The forward pass's gathers, double-buffered, shared by versions 7 (CUDA cores)
// and 8 (tensor cores): the loads of version 2 (read its header for the GEMM
// view), split into load(), which issues the global loads of the next step into
// registers, and store(As, Bs), which writes them into one buffer of the shared
// tiles. Between the two the block multiplies the other buffer, so the loads'
// latency hides behind the multiply.
//   X (As[kk][m], im2col on the fly): m-fastest, thread t fills row m = t % BM and
//     k rows t / BM + i * (THREADS / BM); its m is decoded once, here.
//   The filter (Bs[kk][kg]): k-fastest, thread t fills k row t % BK and columns
//     t / BK + i * (THREADS / BK).
// STEPPED: how the X loader finds the tap (c, r, s) of each kk. false: as version
// 2, two integer divisions (~20 instructions each) per element. true: it decodes
// its first kk once and then steps through kk (TapStep, igemm_tile.cuh), a few
// adds per element, for 11 more registers a thread. Version 8 steps; version 7's
// 8x8 register block has no registers to spare (it spills 124 bytes stepping,
// ptxas sm_90) and divides.
// T is the tile: BM, BN, BK, THREADS and the shared rows' PAD.
#pragma once

#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

template <class T, bool STEPPED>
struct FwdGather {
  static_assert(T::THREADS % T::BM == 0 && T::BK % (T::THREADS / T::BM) == 0,
                "X loader: whole rows of the tile");
  static_assert(T::THREADS % T::BK == 0 && T::BN % (T::THREADS / T::BK) == 0,
                "filter loader: whole columns of the tile");
  static constexpr int A_STEP = T::THREADS / T::BM;
  static constexpr int A_LOADS = T::BK / A_STEP;
  static constexpr int B_STEP = T::THREADS / T::BK;
  static constexpr int B_LOADS = T::BN / B_STEP;

  int R, S, H, W, dil_h, dil_w, HW, Kdim, Kg, n_block;  // what load() needs of the shape
  int a_m, a_k, h0, w0;  // X loader: this thread's row m, decoded
  bool m_ok;
  const float* x_m;
  int kk0, c0, r0, s0;       // the first kk this thread loads in the next step, and its tap
  TapStep a_step, bk_step;   // the taps' change over A_STEP and over BK values of kk
  int k0;                    // the next step's first kk (the filter loader's)
  int b_k, b_n;              // filter loader
  const float* w_g;
  float a_next[A_LOADS], b_next[B_LOADS];  // the loads in flight

  // Group g; the block's first row m_block (output pixel) and column n_block (channel).
  __device__ __forceinline__ FwdGather(const float* x, const float* w, const Conv2dParams& p, int g,
                                       int m_block, int n_block_, int tid)
      : R(p.R), S(p.S), H(p.H), W(p.W), dil_h(p.dilation_h), dil_w(p.dilation_w),
        n_block(n_block_), c0(0), r0(0), s0(0), a_step{0, 0, 0}, bk_step{0, 0, 0}, k0(0) {
    const int Cg = p.C / p.groups, PQ = p.P * p.Q, M = p.N * PQ;
    Kg = p.K / p.groups;
    HW = p.H * p.W;
    Kdim = Cg * R * S;
    a_m = tid % T::BM;
    a_k = tid / T::BM;
    const int m = m_block + a_m;
    m_ok = m < M;
    const int m_safe = m_ok ? m : 0;
    const int n_img = m_safe / PQ;
    const int pq = m_safe - n_img * PQ;
    const int op = pq / p.Q;
    const int oq = pq - op * p.Q;
    h0 = op * p.stride_h - p.pad_top;
    w0 = oq * p.stride_w - p.pad_left;
    x_m = x + ((size_t)n_img * p.C + (size_t)g * Cg) * HW;
    kk0 = a_k;
    if constexpr (STEPPED) {  // the only divisions of the stepped loader, once per thread
      const TapStep first = tap_step(a_k, R, S);
      c0 = first.dc;
      r0 = first.dr;
      s0 = first.ds;
      a_step = tap_step(A_STEP, R, S);
      bk_step = tap_step(T::BK, R, S);
    }
    b_k = tid % T::BK;
    b_n = tid / T::BK;
    w_g = w + (size_t)g * Kg * Kdim;
  }

  // Issue the global loads of the next step (kk from k0 to k0 + BK; zeros past the
  // edges), then move on to the step after it.
  __device__ __forceinline__ void load() {
    int c = c0, r = r0, s = s0, kk = kk0;
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      if constexpr (!STEPPED) {  // version 2's decode
        c = kk / (R * S);
        const int rs = kk - c * (R * S);
        r = rs / S;
        s = rs - r * S;
      }
      float v = 0.f;
      if (m_ok && kk < Kdim) {
        const int h = h0 + r * dil_h;
        const int ww = w0 + s * dil_w;
        if (h >= 0 && h < H && ww >= 0 && ww < W) v = x_m[c * HW + h * W + ww];
      }
      a_next[i] = v;
      if (STEPPED && i + 1 < A_LOADS) tap_advance(c, r, s, a_step, R, S);
      kk += A_STEP;
    }
    if (STEPPED) tap_advance(c0, r0, s0, bk_step, R, S);
    kk0 += T::BK;
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kg = n_block + b_n + i * B_STEP;
      const int kk_b = k0 + b_k;
      b_next[i] = (kg < Kg && kk_b < Kdim) ? w_g[(size_t)kg * Kdim + kk_b] : 0.f;
    }
    k0 += T::BK;
  }

  // Write the loaded step into one buffer of the tiles.
  __device__ __forceinline__ void store(float (&As)[T::BK][T::BM + T::PAD],
                                        float (&Bs)[T::BK][T::BN + T::PAD]) const {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[a_k + i * A_STEP][a_m] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[b_k][b_n + i * B_STEP] = b_next[i];
  }
};

}  // namespace pycnn
