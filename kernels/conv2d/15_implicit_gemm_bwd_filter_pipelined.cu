// conv2d backward-filter, version 15: version 4's split-K implicit GEMM with the
// reduction index stepped instead of divided, double-buffered as forward version 7.
//
// What it does: the same GEMM as version 4 (read its header first),
//   DWt[crs][kg] = sum_j Xt[crs][j] * DYt[j][kg],  j = n*P*Q + op*Q + oq,
// split over j into `splits` chunks, reduced with atomics or in a fixed order
// (split_sum.cuh: the same launch, split counts and workspace as version 4). Two
// things change:
//   1. No division in the main loop. Version 4 decodes its reduction row j into
//      (n, op, oq) at every step, two integer divisions (~20 instructions each) on
//      the loop's critical path. A thread's j advances by BK per step, a fixed
//      change (dn, dop, doq) of the mixed-radix number (n, op, oq) with radices
//      (P, Q): tap_step(BK, P, Q) makes it once, and tap_advance adds it with at
//      most one carry per digit, a few adds (igemm_tile.cuh). Only the first row of
//      the split is decoded.
//   2. Version 7's pipeline: two shared buffers per tile, the next step's global
//      loads in flight in registers during this step's FMAs, one barrier a step, and
//      float4 reads of shared memory (igemm_tile_multiply_vec4: a thread's rows and
//      columns in runs of 4).
//
// Changed from version 4: the two points above; tiles, loaders, split-K and the
// result (up to float rounding, and bit for bit between runs when deterministic)
// are version 4's.
//
// What limits it: both operands are still loaded k-fastest, 8 consecutive floats
// (32 bytes) of a row per step; a thread's rows are runs of 4 consecutive crs, so a
// warp's scalar store of dw spans 4x the bytes of version 4's (the emulator: 14.7
// sectors a request against 4.0, the same sectors in all), and a 128-bit store of the
// run instead costs the 8x8 tile 64 bytes of spills (ptxas, sm_90); the deterministic mode writes and re-reads
// splits * |dw| floats; the FMAs are fp32 on the CUDA cores.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"
#include "conv2d/split_sum.cuh"

namespace pycnn {

// Version 4's loaders, k-fastest (thread t: reduction row j0 + t % BK, columns
// t / BK + i * (THREADS / BK)), as a load (global -> registers) and a store
// (-> one shared buffer) half; load() also steps the row to the next step's.
template <class T>
struct BwdFilter15Gather {
  static constexpr int STEP = T::THREADS / T::BK;
  static constexpr int A_LOADS = T::BM / STEP, B_LOADS = T::BN / STEP;
  static_assert(T::BM % STEP == 0 && T::BN % STEP == 0,
                "k-fastest loaders: BM and BN must be multiples of THREADS/BK");

  const float* x_g;   // x[0, g*Cg, 0, 0]
  const float* dy_g;  // dy[0, g*Kg, 0, 0]
  int a_plane[A_LOADS], a_dh[A_LOADS], a_dw[A_LOADS];  // the crs columns' taps, decoded once
  bool a_ok[A_LOADS];
  int ld_k, ld_c, n_block, Kg, H, W, P, Q, CHW, KPQ, PQ, sh, sw, pt, pl;
  int j, j_end, n, op, oq;  // this thread's next reduction row and its digits
  TapStep bk;               // the digits' change over BK rows
  float a_next[A_LOADS], b_next[B_LOADS];

  __device__ __forceinline__ void load() {
    const bool j_ok = j < j_end;
    const int h0 = op * sh - pt, w0 = oq * sw - pl;  // input row and column of tap (0, 0)
    const int x_n = j_ok ? n * CHW : 0, dy_j = j_ok ? n * KPQ + op * Q + oq : 0;  // (n past N: unread)
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int h = h0 + a_dh[i], ww = w0 + a_dw[i];
      float v = 0.f;
      if (j_ok && a_ok[i] && h >= 0 && h < H && ww >= 0 && ww < W) v = x_g[x_n + a_plane[i] + h * W + ww];
      a_next[i] = v;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kg = n_block + ld_c + i * STEP;
      b_next[i] = (j_ok && kg < Kg) ? dy_g[dy_j + (size_t)kg * PQ] : 0.f;
    }
    j += T::BK;
    tap_advance(n, op, oq, bk, P, Q);  // (past the end it runs on unread: j_ok is false)
  }

  __device__ __forceinline__ void store(float (&As)[T::BK][T::BM + T::PAD],
                                        float (&Bs)[T::BK][T::BN + T::PAD]) const {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[ld_k][ld_c + i * STEP] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[ld_k][ld_c + i * STEP] = b_next[i];
  }
};

// out, chunk, split_stride: as version 4's. Resident blocks asked of the compiler
// as version 7: 2 for the 8x8 tile (128 registers), 4 for the 4x4 one (64).
template <class T, bool ATOMIC>
__global__ void __launch_bounds__(T::THREADS, T::TM * T::TN >= 64 ? 2 : 4)
conv2d_bwd_filter_kernel15(const float* __restrict__ x, const float* __restrict__ dy,
                           float* __restrict__ out, Conv2dParams p, int chunk, int split_stride) {
  struct alignas(16) Tiles {  // rows on 16-byte boundaries, for the float4 reads
    float As[2][T::BK][T::BM + T::PAD];
    float Bs[2][T::BK][T::BN + T::PAD];
  };
  __shared__ Tiles tiles;
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int CRSg = Cg * RS;
  const int NPQ = p.N * PQ;
  const int g = blockIdx.z % p.groups;
  const int split = blockIdx.z / p.groups;
  const int j_begin = split * chunk;
  const int j_end = NPQ < j_begin + chunk ? NPQ : j_begin + chunk;
  const int m_block = blockIdx.x * T::BM;
  const int tid = threadIdx.x;

  BwdFilter15Gather<T> gather;
  gather.ld_k = tid % T::BK;
  gather.ld_c = tid / T::BK;
  gather.n_block = blockIdx.y * T::BN;
  gather.Kg = Kg;
  gather.H = p.H;
  gather.W = p.W;
  gather.P = p.P;
  gather.Q = p.Q;
  gather.CHW = p.C * HW;
  gather.KPQ = p.K * PQ;
  gather.PQ = PQ;
  gather.sh = p.stride_h;
  gather.sw = p.stride_w;
  gather.pt = p.pad_top;
  gather.pl = p.pad_left;
  gather.x_g = x + (size_t)g * Cg * HW;
  gather.dy_g = dy + (size_t)g * Kg * PQ;
#pragma unroll
  for (int i = 0; i < BwdFilter15Gather<T>::A_LOADS; ++i) {
    const int crs = m_block + gather.ld_c + i * BwdFilter15Gather<T>::STEP;
    gather.a_ok[i] = crs < CRSg;
    const int crs_safe = gather.a_ok[i] ? crs : 0;
    const int cg = crs_safe / RS, rs = crs_safe - cg * RS, r = rs / p.S, s = rs - r * p.S;
    gather.a_plane[i] = cg * HW;
    gather.a_dh[i] = r * p.dilation_h;
    gather.a_dw[i] = s * p.dilation_w;
  }
  {  // the split's first row of this thread, decoded once; the rest are stepped
    gather.j = j_begin + gather.ld_k;
    gather.j_end = j_end;
    const TapStep first = tap_step(gather.j < NPQ ? gather.j : 0, p.P, p.Q);
    gather.n = first.dc;
    gather.op = first.dr;
    gather.oq = first.ds;
    gather.bk = tap_step(T::BK, p.P, p.Q);
  }

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};
  const int steps = j_end > j_begin ? (j_end - j_begin + T::BK - 1) / T::BK : 0;  // an empty split: 0
  igemm_pipelined_loop<T>(gather, As, Bs, acc, tm, tn, steps);  // as version 7

  // ---- epilogue: dw[g*Kg + kg, crs] (of this split), as version 4; an empty split
  // writes its zeros (the fixed-order sum reads them). A thread's 4 rows of a run are 4
  // consecutive crs, the contiguous axis of dw: one 128-bit store where C/groups*R*S
  // % 4 == 0 (the run then lies within a channel's row, 16-byte aligned with out),
  // scalar stores otherwise and for the atomics.
  float* out_s = out + (size_t)split * split_stride;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int crs = m_block + igemm_vec4_row<T>(tm, i);
    if (crs >= CRSg) continue;
#pragma unroll
    for (int jn = 0; jn < T::TN; ++jn) {
      const int kg = gather.n_block + igemm_vec4_col<T>(tn, jn);
      if (kg >= Kg) continue;
      float* dst = out_s + (size_t)(g * Kg + kg) * CRSg + crs;
      if (ATOMIC)
        atomicAdd(dst, acc[i][jn]);
      else
        *dst = acc[i][jn];
    }
  }
}

// Version 4's tiles (and its rule between them, bwd_filter4_large, and its splits).
using BwdFilter15Large = IgemmTile<128, 128, 8, 8, 8>;
using BwdFilter15Small = IgemmTile<64, 64, 8, 4, 4>;

template <class T>
static void launch_bwd_filter15(const float* x, const float* dy, float* dw, float* workspace,
                                const Conv2dParams& p, int splits, bool deterministic,
                                cudaStream_t stream) {
  launch_split_k_bwd_filter<T>(conv2d_bwd_filter_kernel15<T, false>, conv2d_bwd_filter_kernel15<T, true>,
                               x, dy, dw, workspace, p, splits, deterministic, stream,
                               "conv2d_bwd_filter_kernel15", "conv2d_bwd_filter15");
}

void conv2d_bwd_filter15(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream) {
  check_split_k_bwd_filter(p, splits, deterministic, workspace, BwdFilter15Large::BK, "conv2d_bwd_filter15");
  if (bwd_filter4_large(p))
    launch_bwd_filter15<BwdFilter15Large>(x, dy, dw, workspace, p, splits, deterministic, stream);
  else
    launch_bwd_filter15<BwdFilter15Small>(x, dy, dw, workspace, p, splits, deterministic, stream);
}

}  // namespace pycnn
