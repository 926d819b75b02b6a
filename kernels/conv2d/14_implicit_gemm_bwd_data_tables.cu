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
#include "conv2d/bwd_data_tables.cuh"
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

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
  igemm_pipelined_loop<T>(gather, As, Bs, acc, tm, tn, gather.steps());  // as version 7

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

void conv2d_bwd_data14_check(const Conv2dParams& p, const float* workspace, const char* name) {
  check_conv2d_params(p, name);
  const int64_t phases = (int64_t)p.stride_h * p.stride_w;  // as version 11, without overflow
  if (phases > 65535 || p.groups * phases > 65535)
    throw std::invalid_argument(std::string(name) + ": groups * stride_h * stride_w = " +
                                std::to_string(p.groups) + " * " + std::to_string(p.stride_h) +
                                " * " + std::to_string(p.stride_w) +
                                " exceeds the grid's z limit of 65535");
  if (workspace == nullptr)
    throw std::invalid_argument(std::string(name) + ": workspace: expected " +
                                std::to_string(conv2d_bwd_data14_workspace_bytes(p)) +
                                " bytes (conv2d_bwd_data14_workspace_bytes), got a null pointer");
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    throw std::invalid_argument(std::string(name) + ": workspace: expected a 16-byte aligned pointer");
  const int64_t M = bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w);
  // plus one tile of rows: 128, the largest of versions 14 and 17
  check_int32_size(M + 128, "N*ceil(H/stride_h)*ceil(W/stride_w) plus one tile");
}

void conv2d_bwd_data14_prep(const float* w, float* workspace, const Conv2dParams& p, cudaStream_t stream) {
  int4* tab = reinterpret_cast<int4*>(reinterpret_cast<char*>(workspace) + bwd_data14_table_offset(p));
  const int total = p.K * (p.C / p.groups) * p.R * p.S;
  launch("conv2d_bwd_data_prep_kernel14", conv2d_bwd_data_prep_kernel14, grid_for(total, 256), 256, 0,
         stream, w, workspace, tab, p);
}

void conv2d_bwd_data14(const float* dy, const float* w, float* dx, float* workspace,
                       const Conv2dParams& p, cudaStream_t stream) {
  conv2d_bwd_data14_check(p, workspace, "conv2d_bwd_data14");
  const int64_t z = (int64_t)p.groups * p.stride_h * p.stride_w;
  const int64_t M = bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  const float* wt = workspace;
  const int4* tab = reinterpret_cast<const int4*>(reinterpret_cast<const char*>(workspace) +
                                                  bwd_data14_table_offset(p));
  const bool large = igemm_use_large_tile<BwdData14Large>(M, Cg, z);
  check_grid_yz(ceil_div(Cg, (int64_t)(large ? BwdData14Large::BN : BwdData14Small::BN)), z,
                "conv2d_bwd_data14");  // before the prep kernel: nothing runs on a refused shape
  conv2d_bwd_data14_prep(w, workspace, p, stream);
  if (large)
    launch_bwd_data14<BwdData14Large>(dy, wt, tab, dx, p, stream);
  else
    launch_bwd_data14<BwdData14Small>(dy, wt, tab, dx, p, stream);
}

}  // namespace pycnn
