// conv2d backward-filter, version 10: version 4's split-K implicit GEMM with
// double-buffered tiles, multiplied on tensor cores (WMMA, TF32) with the 3xTF32
// split that keeps fp32 accuracy: what versions 8 and 9 do to the other passes.
//
// What it does: the GEMM of version 4 (read its header first),
//   DWt[crs][kg] = sum_j Xt[crs][j] * DYt[j][kg],  crs = cg*R*S + r*S + s,  j = n*P*Q + op*Q + oq,
// with the long reduction over j split into `splits` chunks (blockIdx.z = split *
// groups + g), reduced with atomics or deterministically through a workspace and
// conv2d_split_sum_kernel, exactly as version 4 (the same split count and
// workspace size: conv2d_bwd_filter4_splits and _workspace_bytes). Changed:
//   1. Two buffers per tile: the next step's global loads (x and dy rows, both
//      j-fastest) are in flight during this step's products; one barrier per step.
//   2. Each warp multiplies a WM x WN piece of the tile on the tensor cores, three
//      TF32 products per term (tf32x3_tile.cuh explains the split).
//   3. The epilogue stages the fragments in shared memory; lane l then writes (or
//      atomically adds) tap crs = ... + l of each output channel: 32 consecutive
//      floats of dw per store.
// BK = 16 instead of 8, so each split's chunk is a multiple of 16.
//
// What limits it: version 4's loads (j-fastest, 16 consecutive floats per row per
// step, two divisions per step to decode j); WMMA fragments loaded from shared
// memory without layout control; the deterministic mode's workspace traffic.
// Needs compute capability 8.0 (A100) or later. Not the default.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/split_sum.cuh"
#include "conv2d/tf32x3_tile.cuh"

namespace pycnn {

// out: dw (splits == 1, or ATOMIC) or the workspace; split s writes at
// out + s * split_stride (split_stride = 0 for dw). chunk: each split's j range,
// a multiple of BK. Resident blocks per SM asked of the compiler: one for the large
// tile (236 registers), three for the small one (at four, 128 registers, it spills).
template <class T, bool ATOMIC>
__global__ void __launch_bounds__(T::THREADS, T::THREADS >= 256 ? 1 : 3)
conv2d_bwd_filter_kernel10(const float* __restrict__ x, const float* __restrict__ dy,
                           float* __restrict__ out, Conv2dParams p, int chunk, int split_stride) {
  // Both loaders are j-fastest, as version 4's: thread t loads reduction row
  // j0 + t % BK, columns t / BK + i * (THREADS / BK) of its tile.
  constexpr int STEP = T::THREADS / T::BK;
  constexpr int A_LOADS = T::BM / STEP;
  constexpr int B_LOADS = T::BN / STEP;
  static_assert(T::THREADS % T::BK == 0 && T::BM % STEP == 0 && T::BN % STEP == 0,
                "j-fastest loaders: BM and BN must be multiples of THREADS/BK");

  __shared__ Tf32x3Smem<T> smem;
  auto& As = smem.tiles.As;  // As[j][crs]: x, gathered
  auto& Bs = smem.tiles.Bs;  // Bs[j][kg]: dy

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int CRSg = Cg * RS;  // GEMM M
  const int NPQ = p.N * PQ;  // GEMM Kdim
  const int g = blockIdx.z % p.groups;
  const int split = blockIdx.z / p.groups;
  const int j_begin = split * chunk;  // this split's range [j_begin, j_end), maybe empty
  const int j_end = NPQ < j_begin + chunk ? NPQ : j_begin + chunk;
  const int m_block = blockIdx.x * T::BM;  // first crs of this block
  const int n_block = blockIdx.y * T::BN;  // first output channel (in group) of this block
  const int tid = threadIdx.x;

  const int ld_k = tid % T::BK;  // the reduction row this thread loads, j = j0 + ld_k
  const int ld_c = tid / T::BK;  // its first column (+ i * STEP)

  // ---- x loader: the tile's crs columns are fixed; each is decoded once into a
  // table in shared memory (x plane offset, r*dh, s*dw, in range), where version 4
  // keeps them in registers: next to the fragments and the loads in flight, 32
  // registers per thread would spill.
  __shared__ int4 taps[T::BM];
  for (int c = tid; c < T::BM; c += T::THREADS) {
    const int crs = m_block + c;
    const int crs_safe = crs < CRSg ? crs : 0;
    const int cg = crs_safe / RS;
    const int rs = crs_safe - cg * RS;
    const int r = rs / p.S;
    const int s = rs - r * p.S;
    taps[c] = make_int4(cg * HW, r * p.dilation_h, s * p.dilation_w, crs < CRSg);
  }
  __syncthreads();  // the table is complete before the first load reads it
  const float* x_g = x + (size_t)g * Cg * HW;   // x[0, g*Cg, 0, 0]
  const float* dy_g = dy + (size_t)g * Kg * PQ;  // dy[0, g*Kg, 0, 0]

  float a_next[A_LOADS], b_next[B_LOADS];
  auto load = [&](int j0) {
    const int j = j0 + ld_k;  // decoded once per step: j = n*PQ + op*Q + oq
    const bool j_ok = j < j_end;
    const int j_safe = j_ok ? j : 0;
    const int n = j_safe / PQ;
    const int pq = j_safe - n * PQ;
    const int op = pq / p.Q;
    const int oq = pq - op * p.Q;
    const int h0 = op * p.stride_h - p.pad_top;
    const int w0 = oq * p.stride_w - p.pad_left;
    const float* x_n = x_g + (size_t)n * p.C * HW;
    const float* dy_n = dy_g + (size_t)n * p.K * PQ + pq;
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int4 tap = taps[ld_c + i * STEP];  // a warp reads 2 entries: broadcasts
      const int h = h0 + tap.y;
      const int ww = w0 + tap.z;
      a_next[i] = (j_ok && tap.w && h >= 0 && h < p.H && ww >= 0 && ww < p.W)
                      ? x_n[tap.x + h * p.W + ww] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kg = n_block + ld_c + i * STEP;
      b_next[i] = (j_ok && kg < Kg) ? dy_n[(size_t)kg * PQ] : 0.f;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[buf][ld_k][ld_c + i * STEP] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[buf][ld_k][ld_c + i * STEP] = b_next[i];
  };

  const int warp = tid / 32, lane = tid % 32;
  const int wm = (warp % T::WARPS_M) * T::WM;
  const int wn = (warp / T::WARPS_M) * T::WN;
  Tf32FragC acc[T::FM][T::FN];
  tf32x3_fill_zero<T>(acc);

  // An empty split (j_begin >= N*P*Q) runs no step and writes its zeros: the
  // deterministic reduction reads them.
  const int steps = j_end > j_begin ? (j_end - j_begin + T::BK - 1) / T::BK : 0;
  load(j_begin);
  store(0);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;  // the same for every thread of the block
    if (more) load(j_begin + (step + 1) * T::BK);
    tf32x3_tile_multiply<T>(As[cur], Bs[cur], acc, wm, wn);
    if (more) store(cur ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();           // after the last step: the stage may reuse the tiles
  }

  // ---- epilogue: dw[g*Kg + kg, crs] (of this split) at (g*Kg + kg)*CRSg + crs
  float* out_g = out + (size_t)split * split_stride + (size_t)g * Kg * CRSg;
  tf32x3_store<T>(acc, smem.stage[warp], lane, m_block + wm, n_block + wn, [&](int crs) {
    const bool crs_in = crs < CRSg;
    return [=](int kg, float v) {
      if (!crs_in || kg >= Kg) return;
      float* dst = out_g + (size_t)kg * CRSg + crs;
      if (ATOMIC)
        atomicAdd(dst, v);
      else
        *dst = v;
    };
  });
}

using BwdFilter10Large = Tf32x3Tile<128, 128, 16, 64, 32>;
using BwdFilter10Small = Tf32x3Tile<64, 64, 16, 32, 32>;

template <class T>
static void launch_bwd_filter10(const float* x, const float* dy, float* dw, float* workspace,
                                const Conv2dParams& p, int splits, bool deterministic,
                                cudaStream_t stream) {
  launch_split_k_bwd_filter<T>(conv2d_bwd_filter_kernel10<T, false>,
                               conv2d_bwd_filter_kernel10<T, true>, x, dy, dw, workspace, p,
                               splits, deterministic, stream, "conv2d_bwd_filter_kernel10",
                               "conv2d_bwd_filter10");
}

// The split count and workspace size are version 4's (conv2d_bwd_filter4_splits,
// conv2d_bwd_filter4_workspace_bytes): the same tiles, the same tile rule.
void conv2d_bwd_filter10(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream) {
  check_split_k_bwd_filter(p, splits, deterministic, workspace, BwdFilter10Large::BK, "conv2d_bwd_filter10");
  require_tf32_tensor_cores("conv2d_bwd_filter10");
  if (bwd_filter4_large(p))  // version 4's rule
    launch_bwd_filter10<BwdFilter10Large>(x, dy, dw, workspace, p, splits, deterministic, stream);
  else
    launch_bwd_filter10<BwdFilter10Small>(x, dy, dw, workspace, p, splits, deterministic, stream);
}

}  // namespace pycnn
