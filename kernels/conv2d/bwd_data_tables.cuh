// Version 14's tap tables for backward-data, shared with version 17: the workspace
// they live in, the prep kernel that writes them (14_implicit_gemm_bwd_data_tables.cu),
// where a stride phase's run starts, a block's phase, and the two loaders that read
// DY and Wt through them. Version 14's header explains the tables; version 11's the
// phases (bwd_phase.cuh holds their arithmetic).
#pragma once

#include <cstddef>

#include "conv2d/bwd_phase.cuh"
#include "conv2d/conv2d.h"

namespace pycnn {

// Where a phase's run of taps starts in the tables (in taps per kg, times Kg for
// entries): the phases before (a_h, a_w) in row-major order hold
// before_h * S + taps_h * before_w taps.
__host__ __device__ inline int bwd_data14_phase_start(int a_h, int a_w, const BwdPhase& ph,
                                                      const Conv2dParams& p) {
  return bwd_phase_taps_before(a_h, p.stride_h, p.dilation_h, p.R) * p.S +
         ph.taps * bwd_phase_taps_before(a_w, p.stride_w, p.dilation_w, p.S);
}

// The workspace: Wt (groups x |w|/groups floats), then the tap table (Kg * R * S
// int4 entries, shared by the groups) at the next 16-byte boundary.
inline size_t bwd_data14_table_offset(const Conv2dParams& p) {
  const size_t w_bytes = (size_t)p.K * (p.C / p.groups) * p.R * p.S * sizeof(float);
  return (w_bytes + 15) / 16 * 16;
}

// Checks a tables launcher's grid limits and workspace (the caller's name in the
// messages), then launches the prep kernel that fills the workspace from w.
void conv2d_bwd_data14_check(const Conv2dParams& p, const float* workspace, const char* name);
void conv2d_bwd_data14_prep(const float* w, float* workspace, const Conv2dParams& p, cudaStream_t stream);

// The stride phase and group of block z (gridDim.z = groups * stride_h * stride_w),
// its pixel counts, and its runs of the tables.
struct BwdDataBlockPhase {
  int g, a_h, a_w;
  BwdPhase ph, pw;
  int HWa, M;   // pixels of the phase per image, and in all (the GEMM's rows)
  int start;    // the phase's first entry in the tables
};

__device__ __forceinline__ BwdDataBlockPhase bwd_data_block_phase(int z, const Conv2dParams& p) {
  BwdDataBlockPhase b;
  const int phases = p.stride_h * p.stride_w;
  b.g = z / phases;
  const int phase = z - b.g * phases;
  b.a_h = phase / p.stride_w, b.a_w = phase - b.a_h * p.stride_w;
  b.ph = bwd_phase(b.a_h, p.H, p.pad_top, p.stride_h, p.dilation_h, p.R);
  b.pw = bwd_phase(b.a_w, p.W, p.pad_left, p.stride_w, p.dilation_w, p.S);
  b.HWa = b.ph.count * b.pw.count;
  b.M = p.N * b.HWa;
  b.start = (p.K / p.groups) * bwd_data14_phase_start(b.a_h, b.a_w, b.ph, p);
  return b;
}

// The element of dx that row m of the phase's GEMM writes in channel 0 of group 0:
// (n_o, 0, first_h + i*sh, first_w + j*sw) as an offset; channel c adds c*H*W.
__device__ __forceinline__ size_t bwd_data_dx_row(int m, const BwdDataBlockPhase& b, const Conv2dParams& p) {
  const int n_o = m / b.HWa;
  const int ij = m - n_o * b.HWa;
  const int i = ij / b.pw.count, j = ij - i * b.pw.count;
  return (size_t)n_o * p.C * p.H * p.W + (size_t)(b.ph.first + i * p.stride_h) * p.W + b.pw.first +
         j * p.stride_w;
}

// The two loaders of one phase, split as fwd_gather.cuh's: load() issues the next
// step's global loads into registers, store() writes them into one shared buffer.
//   DY (As[kk][m]): m-fastest, thread t fills row m = t % BM and k rows
//     t / BM + l * (THREADS / BM); the warp shares kk, so its table reads broadcast.
//   Wt (Bs[kk][cg]): cg-fastest, thread t fills column t % BN and k rows
//     t / BN + l * (THREADS / BN): consecutive lanes, consecutive floats of Wt.
// Both stores put a warp's 32 lanes on 32 consecutive words of one row: no bank
// conflict, whatever the rows' padding.
template <class T>
struct BwdData14Gather {
  static_assert(T::THREADS % T::BM == 0 && T::BK % (T::THREADS / T::BM) == 0, "DY loader: whole rows");
  static_assert(T::THREADS % T::BN == 0 && T::BK % (T::THREADS / T::BN) == 0, "Wt loader: whole rows");
  static constexpr int A_STEP = T::THREADS / T::BM, A_LOADS = T::BK / A_STEP;
  static constexpr int B_STEP = T::THREADS / T::BN, B_LOADS = T::BK / B_STEP;

  const int4* tab;     // the phase's run of the tap table
  const float* dy_m;   // dy[n_img, g*Kg, 0, 0] of this thread's row
  const float* wt;     // the group's and phase's Wt[kk][cg]
  int row_off, op0, oq0, P, Q, Cg, Kdim, k0, a_m, a_k, b_n, b_k, n_block;
  bool m_ok;
  float a_next[A_LOADS], b_next[B_LOADS];

  // The loaders of block phase b, tile (m_block, n_block), thread tid: the thread's
  // DY row is decoded here, once (three divisions), never in the loop. Version 17's;
  // version 14 does the same inline (as a call here, ptxas sm_80 spills its 8x8 tile).
  __device__ __forceinline__ void setup(const float* dy, const float* wt_all, const int4* tab_all,
                                        const Conv2dParams& p, const BwdDataBlockPhase& b, int m_block,
                                        int n_block_, int tid) {
    const int Kg = p.K / p.groups;
    Cg = p.C / p.groups;
    tab = tab_all + b.start;
    wt = wt_all + (size_t)b.g * Kg * p.R * p.S * Cg + (size_t)b.start * Cg;
    P = p.P;
    Q = p.Q;
    Kdim = Kg * b.ph.taps * b.pw.taps;  // 0 for a phase no tap reaches: dx = 0 there
    k0 = 0;
    n_block = n_block_;
    a_m = tid % T::BM;
    a_k = tid / T::BM;
    b_n = tid % T::BN;
    b_k = tid / T::BN;
    const int m = m_block + a_m;  // row m = n_img*HWa + i*Wb + j
    m_ok = m < b.M;
    const int m_safe = m_ok ? m : 0;
    const int n_img = m_safe / b.HWa;
    const int ij = m_safe - n_img * b.HWa;
    const int i = ij / b.pw.count, j = ij - i * b.pw.count;
    op0 = b.ph.o0 + i;
    oq0 = b.pw.o0 + j;
    row_off = op0 * p.Q + oq0;  // may be negative: used only in bounds
    dy_m = dy + ((size_t)n_img * p.K + (size_t)b.g * Kg) * p.P * p.Q;
  }

  // The K extent of the phase's GEMM in steps of BK.
  __device__ __forceinline__ int steps() const { return (Kdim + T::BK - 1) / T::BK; }

  __device__ __forceinline__ void load() {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int kk = k0 + a_k + l * A_STEP;
      float v = 0.f;
      if (m_ok && kk < Kdim) {
        const int4 e = __ldg(&tab[kk]);
        const int op = op0 - e.y, oq = oq0 - e.z;
        if (op >= 0 && op < P && oq >= 0 && oq < Q) v = dy_m[row_off + e.x];
      }
      a_next[l] = v;
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int kk = k0 + b_k + l * B_STEP;
      const int cg = n_block + b_n;
      b_next[l] = (cg < Cg && kk < Kdim) ? wt[(size_t)kk * Cg + cg] : 0.f;
    }
    k0 += T::BK;
  }

  // LDA, LDB: the row lengths of the shared tiles (the tile's BM, BN plus its pad).
  template <int LDA, int LDB>
  __device__ __forceinline__ void store(float (&As)[T::BK][LDA], float (&Bs)[T::BK][LDB]) const {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) As[a_k + l * A_STEP][a_m] = a_next[l];
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) Bs[b_k + l * B_STEP][b_n] = b_next[l];
  }
};

}  // namespace pycnn
