// conv2d backward-data, version 14: version 11's stride phases with the gathers'
// index math done once per call, in tables, so that the main loop divides nothing
// and reads the filter along contiguous memory; double-buffered as version 7.
//
// What it does: the same phase GEMMs as version 11 (read its header first),
//   DX[m][cg] = sum_kk DY[m][kk] * Wt[kk][cg],  kk = kg*TAPS + ri*Sb + si  (per phase),
// but version 11's loaders decode every kk into (kg, ri, si) with two integer
// divisions per element (8 in the main loop, ~20 instructions each), and its
// filter loader walks w[kg, cg, r, s] along cg, a stride of R*S floats: 18.4
// sectors per request on a 3x3 layer (the emulator's counters, kernels/README.md),
// a fifth of each sector used. Three changes:
//   1. A prep kernel (conv2d_bwd_data_prep_kernel14, one pass over w) writes, into
//      the workspace, a table of the taps of every phase: entry kk of a phase holds
//      the offset of DY[m][kk] from DY[m][0] (kg*P*Q - ri*dout_h*Q - si*dout_w) and
//      the output row and column it steps back (ri*dout_h, si*dout_w) for the edge
//      test. The DY loader reads one 16-byte entry per element (the same kk for the
//      whole warp: a broadcast, one sector) where version 11 divided twice.
//   2. The same pass writes the filter again, per group and phase, as Wt[kk][cg]
//      with cg contiguous: the filter loader's 32 lanes read 32 consecutive floats
//      (4 sectors a request), and the decode of (kg, r, s) is gone from it too.
//      Both copies are |w| floats and |w| / C*groups entries: small beside dy and dx.
//   3. Version 7's double buffering and float4 reads of shared memory: the next
//      step's loads are in flight during this step's FMAs, one barrier per step.
// Phase runs in the tables: each tap (r, s) belongs to exactly one phase, so the
// phases, taken in order, hold consecutive runs of one table of all R*S taps per
// kg (bwd_phase_taps_before in bwd_phase.cuh finds where a phase's run starts).
//
// Changed from version 11: the three points above; tiles, grid, phases and the
// result (up to float rounding) are version 11's.
//
// What limits it: the tables cost a second small kernel and a workspace per call
// (a layer called often with the same weights could keep them; the weights change
// every step in training, so here they are rebuilt); dx is written one float at a time,
// at a stride of sw floats in phase order, and a thread's rows are runs of 4 consecutive
// m, so a warp's store spans 4x the bytes of version 11's (the emulator: 15.9 sectors a
// request against 5.1, the same sectors in all; a 128-bit store of the run at stride 1
// costs both tiles spills, ptxas sm_90); the FMAs are fp32 on the CUDA cores.
//
// Measured: not yet measured on a GPU
#include "conv2d/bwd_phase.cuh"
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

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

size_t conv2d_bwd_data14_workspace_bytes(const Conv2dParams& p) {
  return bwd_data14_table_offset(p) + (size_t)(p.K / p.groups) * p.R * p.S * sizeof(int4);
}

// One thread per element of w (grid-stride): its phase, its kk there, and its place
// in Wt; the threads of group 0 and channel 0 also write the tap table's entry.
// Divisions here run once per weight, not once per product.
static __global__ void conv2d_bwd_data_prep_kernel14(const float* __restrict__ w,
                                                     float* __restrict__ wt, int4* __restrict__ tab,
                                                     Conv2dParams p) {
  const int Cg = p.C / p.groups, Kg = p.K / p.groups, RS = p.R * p.S;
  const int total = p.K * Cg * RS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int k = (int)(e / (Cg * RS));
    const int crs = (int)(e - (int64_t)k * Cg * RS);
    const int cg = crs / RS, r = (crs - cg * RS) / p.S, s = crs - cg * RS - r * p.S;
    const int g = k / Kg, kg = k - g * Kg;
    const int a_h = (int)((int64_t)r * p.dilation_h % p.stride_h);
    const int a_w = (int)((int64_t)s * p.dilation_w % p.stride_w);
    const BwdPhase ph = bwd_phase(a_h, p.H, p.pad_top, p.stride_h, p.dilation_h, p.R);
    const BwdPhase pw = bwd_phase(a_w, p.W, p.pad_left, p.stride_w, p.dilation_w, p.S);
    const int ri = (r - ph.tap0) / ph.tap_step, si = (s - pw.tap0) / pw.tap_step;  // exact
    const int kk = kg * (ph.taps * pw.taps) + ri * pw.taps + si;
    const int entry = Kg * bwd_data14_phase_start(a_h, a_w, ph, p) + kk;
    wt[(size_t)g * Kg * RS * Cg + (size_t)entry * Cg + cg] = w[e];
    if (g == 0 && cg == 0) {
      const int dop = ri * ph.dout, doq = si * pw.dout;
      tab[entry] = make_int4(kg * p.P * p.Q - dop * p.Q - doq, dop, doq, 0);
    }
  }
}

// The two loaders of one phase, split as fwd_gather.cuh's: load() issues the next
// step's global loads into registers, store() writes them into one shared buffer.
//   DY (As[kk][m]): m-fastest, thread t fills row m = t % BM and k rows
//     t / BM + l * (THREADS / BM); the warp shares kk, so its table reads broadcast.
//   Wt (Bs[kk][cg]): cg-fastest, thread t fills column t % BN and k rows
//     t / BN + l * (THREADS / BN): consecutive lanes, consecutive floats of Wt.
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

  __device__ __forceinline__ void store(float (&As)[T::BK][T::BM + T::PAD],
                                        float (&Bs)[T::BK][T::BN + T::PAD]) const {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) As[a_k + l * A_STEP][a_m] = a_next[l];
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) Bs[b_k + l * B_STEP][b_n] = b_next[l];
  }
};

// Resident blocks per SM asked of the compiler, as version 7: 2 for the 8x8 tile
// (128 registers), 4 for the 4x4 one (64).
template <class T>
__global__ void __launch_bounds__(T::THREADS, T::TM * T::TN >= 64 ? 2 : 4)
conv2d_bwd_data_kernel14(const float* __restrict__ dy, const float* __restrict__ wt_all,
                         const int4* __restrict__ tab_all, float* __restrict__ dx, Conv2dParams p) {
  struct alignas(16) Tiles {  // rows on 16-byte boundaries, for the float4 reads
    float As[2][T::BK][T::BM + T::PAD];
    float Bs[2][T::BK][T::BN + T::PAD];
  };
  __shared__ Tiles tiles;
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;

  // ---- this block's group and phase, as version 11
  const int phases = p.stride_h * p.stride_w;
  const int g = blockIdx.z / phases;
  const int phase = blockIdx.z - g * phases;
  const int a_h = phase / p.stride_w, a_w = phase - a_h * p.stride_w;
  const BwdPhase ph = bwd_phase(a_h, p.H, p.pad_top, p.stride_h, p.dilation_h, p.R);
  const BwdPhase pw = bwd_phase(a_w, p.W, p.pad_left, p.stride_w, p.dilation_w, p.S);
  const int HWa = ph.count * pw.count;
  const int M = p.N * HWa;
  const int m_block = blockIdx.x * T::BM;
  if (m_block >= M) return;  // the whole block: before any barrier

  const int Cg = p.C / p.groups, Kg = p.K / p.groups, HW = p.H * p.W, RS = p.R * p.S;
  const int start = Kg * bwd_data14_phase_start(a_h, a_w, ph, p);  // the phase's first entry
  const int tid = threadIdx.x;

  BwdData14Gather<T> gather;
  gather.tab = tab_all + start;
  gather.wt = wt_all + (size_t)g * Kg * RS * Cg + (size_t)start * Cg;
  gather.P = p.P;
  gather.Q = p.Q;
  gather.Cg = Cg;
  gather.Kdim = Kg * ph.taps * pw.taps;  // 0 for a phase no tap reaches: dx = 0 there
  gather.k0 = 0;
  gather.n_block = blockIdx.y * T::BN;
  gather.a_m = tid % T::BM;
  gather.a_k = tid / T::BM;
  gather.b_n = tid % T::BN;
  gather.b_k = tid / T::BN;
  {  // the DY loader's row m = n_img*HWa + i*Wb + j, decoded once
    const int m = m_block + gather.a_m;
    gather.m_ok = m < M;
    const int m_safe = gather.m_ok ? m : 0;
    const int n_img = m_safe / HWa;
    const int ij = m_safe - n_img * HWa;
    const int i = ij / pw.count, j = ij - i * pw.count;
    gather.op0 = ph.o0 + i;
    gather.oq0 = pw.o0 + j;
    gather.row_off = gather.op0 * p.Q + gather.oq0;  // may be negative: used only in bounds
    gather.dy_m = dy + ((size_t)n_img * p.K + (size_t)g * Kg) * p.P * p.Q;
  }

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};
  igemm_pipelined_loop<T>(gather, As, Bs, acc, tm, tn, (gather.Kdim + T::BK - 1) / T::BK);  // as version 7

  // ---- epilogue: dx[n_o, g*Cg + cg, first_h + i*sh, first_w + j*sw], each written once
#pragma unroll
  for (int e = 0; e < T::TM; ++e) {
    const int m = m_block + igemm_vec4_row<T>(tm, e);
    if (m >= M) continue;
    const int n_o = m / HWa;
    const int ij_o = m - n_o * HWa;
    const int i_o = ij_o / pw.count;
    const int j_o = ij_o - i_o * pw.count;
    const int hw_o = (ph.first + i_o * p.stride_h) * p.W + pw.first + j_o * p.stride_w;
#pragma unroll
    for (int f = 0; f < T::TN; ++f) {
      const int cg = gather.n_block + igemm_vec4_col<T>(tn, f);
      if (cg >= Cg) continue;
      dx[((size_t)n_o * p.C + (size_t)g * Cg + cg) * HW + hw_o] = acc[e][f];
    }
  }
}

// Version 11's tiles and its rule between them (on the largest phase's rows).
using BwdData14Large = IgemmTile<128, 128, 8, 8, 8>;
using BwdData14Small = IgemmTile<64, 64, 8, 4, 4>;

template <class T>
static void launch_bwd_data14(const float* dy, const float* wt, const int4* tab, float* dx,
                              const Conv2dParams& p, cudaStream_t stream) {
  const int M = (int)bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  const int z = p.groups * p.stride_h * p.stride_w;  // the grid checked by the caller
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Cg, T::BN), z);
  launch("conv2d_bwd_data_kernel14", conv2d_bwd_data_kernel14<T>, grid, T::THREADS, 0, stream, dy, wt,
         tab, dx, p);
}

void conv2d_bwd_data14(const float* dy, const float* w, float* dx, float* workspace,
                       const Conv2dParams& p, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_data14");
  const int64_t phases = (int64_t)p.stride_h * p.stride_w;  // as version 11, without overflow
  if (phases > 65535 || p.groups * phases > 65535)
    throw std::invalid_argument("conv2d_bwd_data14: groups * stride_h * stride_w = " +
                                std::to_string(p.groups) + " * " + std::to_string(p.stride_h) +
                                " * " + std::to_string(p.stride_w) +
                                " exceeds the grid's z limit of 65535");
  if (workspace == nullptr)
    throw std::invalid_argument("conv2d_bwd_data14: workspace: expected " +
                                std::to_string(conv2d_bwd_data14_workspace_bytes(p)) +
                                " bytes (conv2d_bwd_data14_workspace_bytes), got a null pointer");
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    throw std::invalid_argument("conv2d_bwd_data14: workspace: expected a 16-byte aligned pointer");
  const int64_t z = p.groups * phases;
  const int64_t M = bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  check_int32_size(M + BwdData14Large::BM, "N*ceil(H/stride_h)*ceil(W/stride_w) plus one tile");
  float* wt = workspace;
  int4* tab = reinterpret_cast<int4*>(reinterpret_cast<char*>(workspace) + bwd_data14_table_offset(p));
  const bool large = igemm_use_large_tile<BwdData14Large>(M, Cg, z);
  check_grid_yz(ceil_div(Cg, (int64_t)(large ? BwdData14Large::BN : BwdData14Small::BN)), z,
                "conv2d_bwd_data14");  // before the prep kernel: nothing runs on a refused shape
  const int total = p.K * (p.C / p.groups) * p.R * p.S;
  launch("conv2d_bwd_data_prep_kernel14", conv2d_bwd_data_prep_kernel14, grid_for(total, 256), 256, 0,
         stream, w, wt, tab, p);
  if (large)
    launch_bwd_data14<BwdData14Large>(dy, wt, tab, dx, p, stream);
  else
    launch_bwd_data14<BwdData14Small>(dy, wt, tab, dx, p, stream);
}

}  // namespace pycnn
