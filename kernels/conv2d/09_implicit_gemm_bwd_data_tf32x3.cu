// conv2d backward-data, version 9: version 3's implicit GEMM with double-buffered
// tiles, multiplied on tensor cores (WMMA, TF32) with the 3xTF32 split that keeps
// fp32 accuracy: what forward version 8 does to forward version 2, done to
// backward-data.
//
// What it does: the GEMM of version 3 (read its header first),
//   DX[m][cg] = sum_kk DY[m][kk] * Wt[kk][cg],  m = n*H*W + h*W + iw,  kk = kg*R*S + r*S + s,
// with DY gathered from dy (zero where a tap does not land on an output) and Wt
// from the filter, into shared-memory tiles As[kk][m] and Bs[kk][cg].
//   1. Two buffers per tile (as forward version 7): the next step's global loads
//      are in flight during this step's products; one barrier per step.
//   2. Each warp owns a WM x WN piece of the tile as 16x16 accumulator fragments
//      and multiplies on the tensor cores, three TF32 products per term
//      (tf32x3_tile.cuh explains the split).
//   3. The epilogue stages the fragments in shared memory; lane l writes pixel
//      m = ... + l of each channel: 32 consecutive pixels per 128-byte store.
//
// Changed from version 3: the three points above; BK = 16 instead of 8; the DY
// gather steps through kk = kg*R*S + r*S + s (TapStep, igemm_tile.cuh) instead of
// dividing. Otherwise the gathers and the index math are version 3's.
//
// What limits it: version 3's, less the FMA rate: at stride > 1 most gathered DY
// elements are zeros that still cost products, and the stride test divides; the
// filter gather still divides by R*S; WMMA fragments are loaded from shared memory
// without layout control. Needs compute capability 8.0 (A100) or later. Not the
// default.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/tf32x3_tile.cuh"

namespace pycnn {

// Resident blocks per SM asked of the compiler, as forward version 8: one for the
// large tile (204 registers), three for the small one (at four, capped at 128, it
// spills). ptxas, sm_90.
template <class T>
__global__ void __launch_bounds__(T::THREADS, T::THREADS >= 256 ? 1 : 3)
conv2d_bwd_data_kernel9(const float* __restrict__ dy, const float* __restrict__ w,
                        float* __restrict__ dx, Conv2dParams p) {
  static_assert(T::THREADS % T::BM == 0 && T::BK % (T::THREADS / T::BM) == 0,
                "DY loader: whole rows of the tile");
  static_assert(T::THREADS % T::BN == 0 && T::BK % (T::THREADS / T::BN) == 0,
                "filter loader: whole columns of the tile");
  constexpr int A_STEP = T::THREADS / T::BM;  // DY loader: m-fastest, as version 3's
  constexpr int A_LOADS = T::BK / A_STEP;
  constexpr int B_STEP = T::THREADS / T::BN;  // filter loader: cg-fastest, as version 3's
  constexpr int B_LOADS = T::BK / B_STEP;

  __shared__ Tf32x3Smem<T> smem;
  auto& As = smem.tiles.As;  // As[kk][m]: DY
  auto& Bs = smem.tiles.Bs;  // Bs[kk][cg]: the transposed filter

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int M = p.N * HW;
  const int Kdim = Kg * RS;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;  // first dx pixel row of this block
  const int n_block = blockIdx.y * T::BN;  // first input channel (in group) of this block
  const int tid = threadIdx.x;

  // ---- DY loader: this thread's row m, decoded once (version 3's gather).
  const int a_m = tid % T::BM;
  const int a_k = tid / T::BM;
  const int m_ld = m_block + a_m;
  const bool m_ok = m_ld < M;
  const int m_safe = m_ok ? m_ld : 0;
  const int n_img = m_safe / HW;
  const int hw = m_safe - n_img * HW;
  const int h = hw / p.W;
  const int iw = hw - h * p.W;
  const int hp0 = h + p.pad_top;   // op*sh = hp0 - r*dh
  const int wq0 = iw + p.pad_left;  // oq*sw = wq0 - s*dw
  const float* dy_m = dy + ((size_t)n_img * p.K + (size_t)g * Kg) * PQ;

  // ---- filter loader: w[g*Kg + kg, cg, r, s] is at (kg*Cg + cg)*RS + rs from w_g.
  const int b_n = tid % T::BN;
  const int b_k = tid / T::BN;
  const float* w_g = w + (size_t)g * Kg * Cg * RS;

  // The DY loader steps through kk = kg*R*S + r*S + s (TapStep, igemm_tile.cuh)
  // instead of dividing: (kg0, r0, s0) is the tap of its first kk in the next step.
  const TapStep a_step = tap_step(A_STEP, p.R, p.S), bk_step = tap_step(T::BK, p.R, p.S);
  const TapStep first = tap_step(a_k, p.R, p.S);
  int kg0 = first.dc, r0 = first.dr, s0 = first.ds;

  float a_next[A_LOADS], b_next[B_LOADS];
  auto load = [&](int k0) {
    int kg = kg0, r = r0, s = s0;
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int kk = k0 + a_k + i * A_STEP;
      float v = 0.f;
      if (m_ok && kk < Kdim) {
        const int hp = hp0 - r * p.dilation_h;  // must be op*sh, 0 <= op < P
        const int wq = wq0 - s * p.dilation_w;  // must be oq*sw, 0 <= oq < Q
        // hp >= 0 is tested first: % of a negative int is negative or zero in C++.
        if (hp >= 0 && wq >= 0 && hp % p.stride_h == 0 && wq % p.stride_w == 0) {
          const int op = hp / p.stride_h;
          const int oq = wq / p.stride_w;
          if (op < p.P && oq < p.Q) v = dy_m[kg * PQ + op * p.Q + oq];
        }
      }
      a_next[i] = v;
      if (i + 1 < A_LOADS) tap_advance(kg, r, s, a_step, p.R, p.S);
    }
    tap_advance(kg0, r0, s0, bk_step, p.R, p.S);  // load() runs once per step, in order
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kk = k0 + b_k + i * B_STEP;
      const int cg = n_block + b_n;
      float v = 0.f;
      if (cg < Cg && kk < Kdim) {
        const int kg = kk / RS;
        const int rs = kk - kg * RS;
        v = w_g[((size_t)kg * Cg + cg) * RS + rs];
      }
      b_next[i] = v;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[buf][a_k + i * A_STEP][a_m] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[buf][b_k + i * B_STEP][b_n] = b_next[i];
  };

  const int warp = tid / 32, lane = tid % 32;
  const int wm = (warp % T::WARPS_M) * T::WM;
  const int wn = (warp / T::WARPS_M) * T::WN;
  Tf32FragC acc[T::FM][T::FN];
  tf32x3_fill_zero<T>(acc);

  const int steps = (Kdim + T::BK - 1) / T::BK;
  load(0);
  store(0);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;  // the same for every thread of the block
    if (more) load((step + 1) * T::BK);
    tf32x3_tile_multiply<T>(As[cur], Bs[cur], acc, wm, wn);
    if (more) store(cur ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();           // after the last step: the stage may reuse the tiles
  }

  // ---- epilogue: dx[n_o, g*Cg + cg, hw_o], every element written once
  tf32x3_store<T>(acc, smem.stage[warp], lane, m_block + wm, n_block + wn, [&](int m) {
    const bool m_in = m < M;
    const int n_o = (m_in ? m : 0) / HW;
    const int hw_o = (m_in ? m : 0) - n_o * HW;
    float* dx_m = dx + ((size_t)n_o * p.C + (size_t)g * Cg) * HW + hw_o;
    return [=](int cg, float v) {
      if (m_in && cg < Cg) dx_m[(size_t)cg * HW] = v;
    };
  });
}

using BwdData9Large = Tf32x3Tile<128, 128, 16, 64, 32>;
using BwdData9Small = Tf32x3Tile<64, 64, 16, 32, 32>;

template <class T>
static void launch_bwd_data9(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                             cudaStream_t stream) {
  const int M = p.N * p.H * p.W, Cg = p.C / p.groups;
  check_grid_yz(ceil_div(Cg, T::BN), p.groups, "conv2d_bwd_data9");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Cg, T::BN), p.groups);
  launch("conv2d_bwd_data_kernel9", conv2d_bwd_data_kernel9<T>, grid, T::THREADS, 0, stream, dy, w, dx, p);
}

void conv2d_bwd_data9(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_data9");
  if (p.groups > 65535)
    throw std::invalid_argument("conv2d_bwd_data9: groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.H * p.W, Cg = p.C / p.groups;
  check_int32_size(M + BwdData9Large::BM, "N*H*W plus one tile");
  require_tf32_tensor_cores("conv2d_bwd_data9");
  if (igemm_use_large_tile<BwdData9Large>(M, Cg, p.groups))  // the same rule as version 3
    launch_bwd_data9<BwdData9Large>(dy, w, dx, p, stream);
  else
    launch_bwd_data9<BwdData9Small>(dy, w, dx, p, stream);
}

}  // namespace pycnn
