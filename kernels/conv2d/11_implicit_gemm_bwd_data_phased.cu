// conv2d backward-data, version 11: version 3's implicit GEMM split into stride
// phases, so that a strided convolution's backward pass multiplies no zeros.
//
// The waste it removes: dx[h] sums dy[op] * w[r] over the taps with
// h + pad - r*dil = op*stride. Version 3 gathers every tap r of every pixel h and
// zeroes the ones that fail the divisibility test, so at stride 2 it multiplies
// 3 zeros for each useful product (8 of 9 at stride 3), and a 1x1 stride-2 layer
// does 4x the work it needs (three pixels in four get no tap at all).
//
// The phases: pixels h with the same a = (h + pad) mod stride take exactly the
// same taps, those with r*dil = a (mod stride):
//   r = tap0 + j*tap_step,  tap_step = stride / gcd(stride, dil),
// and, with pixel h = first + i*stride, the output row each tap reads is
//   op = o0 + i - j*dout,   o0 = (first + pad - tap0*dil) / stride (exact),
//                           dout = dil / gcd(stride, dil)
// (bwd_phase in bwd_phase.cuh computes first, count, tap0, taps, tap_step, o0,
// dout per axis). So each (a, b) phase of (h, w) is a dense GEMM of its own:
//   DX[m][cg] = sum_kk DY[m][kk] * Wt[kk][cg]
//   m  = n*Ha*Wb + i*Wb + j        the phase's pixels, h = first_h + i*sh, w = first_w + j*sw
//   kk = kg*(Ra*Sb) + ri*Sb + si   the phase's taps, r = tap0_h + ri*step_h (s alike)
//   DY[m][kk] = dy[n, g*Kg + kg, o0_h + i - ri*dout_h, o0_w + j - si*dout_w] (0 off the edge)
//   Wt[kk][cg] = w[g*Kg + kg, cg, r, s]
// with no divisibility test left: only the borders still gather zeros. A phase
// with no tap (Ra*Sb = 0: a 1x1 stride-2 layer's odd pixels) has Kdim = 0 and
// writes zeros. At stride 1 there is one phase and this is version 3.
// blockIdx.z = g * (sh*sw) + phase; blockIdx.x walks the phase's pixels (the grid
// is sized for the largest phase; blocks past a smaller phase's end return).
//
// Changed from version 3: the phases above, and the gathers that follow from them:
// consecutive threads take consecutive j, so at stride 2 the DY loader reads
// consecutive oq (coalesced) where version 3's threads alternated between a load
// and a zero. Tiles, loaders and the register-blocked multiply are version 3's.
//
// What limits it: dx is written at a stride of sw floats (half-used 128-byte
// lines at stride 2); phases of unequal size leave blocks idle at the grid's end;
// no double buffering and integer divisions in the gathers, as in version 3.
// The default for strided backward-data (pycnn/backends/cuda/conv.py), chosen from
// the product count above; to be confirmed against version 3 on a GPU.
//
// Measured: not yet measured on a GPU
#include "conv2d/bwd_phase.cuh"
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

template <class T>
__global__ void __launch_bounds__(T::THREADS)
conv2d_bwd_data_kernel11(const float* __restrict__ dy, const float* __restrict__ w,
                         float* __restrict__ dx, Conv2dParams p) {
  // Loaders as version 3's: DY m-fastest (thread t: row m = t % BM, k rows
  // t / BM + i * (THREADS / BM)), the filter cg-fastest.
  static_assert(T::THREADS % T::BM == 0, "DY loader: THREADS must be a multiple of BM");
  constexpr int A_STEP = T::THREADS / T::BM;
  constexpr int A_LOADS = T::BK / A_STEP;
  static_assert(T::BK % A_STEP == 0, "DY loader: BK must be a multiple of THREADS/BM");
  static_assert(T::THREADS % T::BN == 0, "filter loader: THREADS must be a multiple of BN");
  constexpr int B_STEP = T::THREADS / T::BN;
  constexpr int B_LOADS = T::BK / B_STEP;
  static_assert(T::BK % B_STEP == 0, "filter loader: BK must be a multiple of THREADS/BN");

  __shared__ float As[T::BK][T::BM + T::PAD];
  __shared__ float Bs[T::BK][T::BN + T::PAD];

  // ---- this block's group and phase, and the phase's geometry
  const int phases = p.stride_h * p.stride_w;
  const int g = blockIdx.z / phases;
  const int phase = blockIdx.z - g * phases;
  const int a_h = phase / p.stride_w, a_w = phase - a_h * p.stride_w;
  const BwdPhase ph = bwd_phase(a_h, p.H, p.pad_top, p.stride_h, p.dilation_h, p.R);
  const BwdPhase pw = bwd_phase(a_w, p.W, p.pad_left, p.stride_w, p.dilation_w, p.S);
  const int HWa = ph.count * pw.count;     // the phase's pixels per image
  const int M = p.N * HWa;
  const int m_block = blockIdx.x * T::BM;  // first pixel row (of the phase) of this block
  if (m_block >= M) return;                // the whole block: before any barrier

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int TAPS = ph.taps * pw.taps;      // the phase's taps per (kg, cg)
  const int Kdim = Kg * TAPS;              // 0 for a phase no tap reaches: dx = 0 there
  const int n_block = blockIdx.y * T::BN;  // first input channel (in group) of this block
  const int tid = threadIdx.x;

  // ---- DY loader: this thread's row m = n_img*HWa + i*Wb + j, decoded once.
  const int a_m = tid % T::BM;
  const int a_k = tid / T::BM;
  const int m_ld = m_block + a_m;
  const bool m_ok = m_ld < M;
  const int m_safe = m_ok ? m_ld : 0;
  const int n_img = m_safe / HWa;
  const int ij = m_safe - n_img * HWa;
  const int i = ij / pw.count;
  const int j = ij - i * pw.count;
  const int op0 = ph.o0 + i;               // op = op0 - ri*dout_h
  const int oq0 = pw.o0 + j;               // oq = oq0 - si*dout_w
  // dy + offset of dy[n_img, g*Kg, 0, 0]
  const float* dy_m = dy + ((size_t)n_img * p.K + (size_t)g * Kg) * PQ;

  // ---- filter loader: w[g*Kg + kg, cg, r, s] is at (kg*Cg + cg)*RS + r*S + s from w_g.
  const int b_n = tid % T::BN;
  const int b_k = tid / T::BN;
  const float* w_g = w + (size_t)g * Kg * Cg * RS;

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};

  for (int k0 = 0; k0 < Kdim; k0 += T::BK) {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int kr = a_k + l * A_STEP;
      const int kk = k0 + kr;              // kk = kg*TAPS + ri*Sb + si
      float v = 0.f;
      if (m_ok && kk < Kdim) {             // (TAPS > 0 here: kk < Kdim)
        const int kg = kk / TAPS;
        const int t = kk - kg * TAPS;
        const int ri = t / pw.taps;
        const int si = t - ri * pw.taps;
        const int op = op0 - ri * ph.dout;
        const int oq = oq0 - si * pw.dout;
        if (op >= 0 && op < p.P && oq >= 0 && oq < p.Q) v = dy_m[kg * PQ + op * p.Q + oq];
      }
      As[kr][a_m] = v;
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int kr = b_k + l * B_STEP;
      const int kk = k0 + kr;
      const int cg = n_block + b_n;
      float v = 0.f;
      if (cg < Cg && kk < Kdim) {
        const int kg = kk / TAPS;
        const int t = kk - kg * TAPS;
        const int ri = t / pw.taps;
        const int si = t - ri * pw.taps;
        const int r = ph.tap0 + ri * ph.tap_step;
        const int s = pw.tap0 + si * pw.tap_step;
        v = w_g[((size_t)kg * Cg + cg) * RS + r * p.S + s];
      }
      Bs[kr][b_n] = v;
    }
    __syncthreads();
    igemm_tile_multiply<T>(As, Bs, acc, tm, tn);
    __syncthreads();
  }

  // ---- epilogue: dx[n_o, g*Cg + cg, first_h + i*sh, first_w + j*sw], each written once
  // (every pixel belongs to exactly one phase)
#pragma unroll
  for (int e = 0; e < T::TM; ++e) {
    const int m = m_block + tm + e * T::ROWS;
    if (m >= M) continue;
    const int n_o = m / HWa;
    const int ij_o = m - n_o * HWa;
    const int i_o = ij_o / pw.count;
    const int j_o = ij_o - i_o * pw.count;
    const int hw_o = (ph.first + i_o * p.stride_h) * p.W + pw.first + j_o * p.stride_w;
#pragma unroll
    for (int f = 0; f < T::TN; ++f) {
      const int cg = n_block + tn + f * T::COLS;
      if (cg >= Cg) continue;
      dx[((size_t)n_o * p.C + (size_t)g * Cg + cg) * HW + hw_o] = acc[e][f];
    }
  }
}

// Version 3's tiles, and its rule between them (on the largest phase's rows).
using BwdData11Large = IgemmTile<128, 128, 8, 8, 8>;
using BwdData11Small = IgemmTile<64, 64, 8, 4, 4>;

// Launchers.
template <class T>
static void launch_bwd_data11(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                              cudaStream_t stream) {
  const int M = (int)bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  const int z = p.groups * p.stride_h * p.stride_w;  // checked against 65535 by the caller
  check_grid_yz(ceil_div(Cg, T::BN), z, "conv2d_bwd_data11");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Cg, T::BN), z);
  launch("conv2d_bwd_data_kernel11", conv2d_bwd_data_kernel11<T>, grid, T::THREADS, 0, stream, dy, w, dx, p);
}

void conv2d_bwd_data11(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                       cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_data11");
  // z = groups * stride phases; the phases alone are < 2^62, and the product is
  // formed only when they are within the limit, so neither overflows
  const int64_t phases = (int64_t)p.stride_h * p.stride_w;
  if (phases > 65535 || p.groups * phases > 65535)
    throw std::invalid_argument("conv2d_bwd_data11: groups * stride_h * stride_w = " +
                                std::to_string(p.groups) + " * " + std::to_string(p.stride_h) +
                                " * " + std::to_string(p.stride_w) +
                                " exceeds the grid's z limit of 65535");
  const int64_t z = p.groups * phases;
  const int64_t M = bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  check_int32_size(M + BwdData11Large::BM, "N*ceil(H/stride_h)*ceil(W/stride_w) plus one tile");
  if (igemm_use_large_tile<BwdData11Large>(M, Cg, z))
    launch_bwd_data11<BwdData11Large>(dy, w, dx, p, stream);
  else
    launch_bwd_data11<BwdData11Small>(dy, w, dx, p, stream);
}

}  // namespace pycnn
