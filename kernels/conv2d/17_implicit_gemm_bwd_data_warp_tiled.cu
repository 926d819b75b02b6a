// conv2d backward-data, version 17: version 14's phase GEMMs and tap tables, warp-tiled
// as forward version 12 and backward-filter version 16 are, with BK = 16.
//
// What it does: the phase GEMMs of version 11 (read its header first),
//   DX[m][cg] = sum_kk DY[m][kk] * Wt[kk][cg],  kk = kg*TAPS + ri*Sb + si  (per phase),
// with version 14's prep kernel, workspace and loaders (bwd_data_tables.cuh): the
// tables of every phase's taps and the filter again as Wt[kk][cg], so the main loop
// divides nothing and the Wt loader reads contiguous floats. What changes:
//   1. Warp tiles (warp_tile.cuh): the block's 8 warps (large tile; 4 in the small one)
//      each own a 64 x 32 piece of the 128 x 128 tile (32 x 32 of the 64 x 64), in
//      sub-tiles of 32 x 16 where a lane owns 4 x 4 outputs; a thread holds 8 x 8
//      outputs (4 x 8 small) and reads them per kk as WMITER + WNITER float4s, 128
//      contiguous bytes of As and 64 of Bs a warp: no bank conflict in the reads.
//      Version 14's threads stride over the whole block tile (igemm_tile.cuh).
//   2. BK = 16 (version 14: 8): half the barriers and loop overhead per FMA, and each
//      table entry a DY loader reads (one per kk, a warp's broadcast) serves 16 taps'
//      worth of FMAs in the step, not 8.
// The stores into shared memory are version 14's loaders' (a warp's 32 lanes on 32
// consecutive words of one row, As[kk][m] and Bs[kk][cg]): conflict-free whatever the
// pad, so the rows carry the 4 floats of pad only to stay 16-byte aligned for the
// float4 reads (BM + 4, BN + 4).
// One __syncthreads a step: the loads of step t+1 are issued before the multiply of
// step t and stored after it into the other buffers, as in versions 7, 12, 14 and 16.
//
// Changed from version 14: the two points above; phases, tables, workspace, grid
// (x: the largest phase's rows / BM, y: C/groups / BN, z: groups * phases) and the
// rule between the tiles (large where C/groups >= 96 and the large tiles fill the
// GPU) are version 14's; the result is version 14's up to float rounding.
//
// What limits it: dx is written one float at a time, as in version 14, and a warp's
// store of one output covers 8 rows m (4 apart, so 4*stride_w floats apart in dx) of 4
// channels (4*H*W floats apart); the DY loads are scalar and guarded per element (the
// gather of a transposed convolution: a row m reads dy at the tap's output pixel, in
// bounds or not); the loads go through registers (no cp.async); the FMAs are fp32 on
// the CUDA cores.
//
// Static counters (sm_90, nvcc 13.0.88, pycnn.inspect.static; version 14 in brackets):
// main-loop FFMA share 73% for the 128x128 tile [72%] and 59% for the 64x64 one [53%]:
// 1024 FFMAs in 1402 instructions an iteration of BK = 16 (512 in 871) [512 in 712 and
// 128 in 243 for BK = 8], no integer division in the loop, 128 / 120 registers, no
// spills; 25% occupancy for both tiles [25% / 50%]. The emulator's counters (ResNet-50's
// layer3 3x3 at batch 8, the small tile in both): no bank conflict in any shared read or
// write, 2.0 wavefronts a shared read request [3.0] and a quarter fewer requests, 3.3
// sectors a global load request [the same], 18.2 a store request [16.7].
//
// Measured: not yet measured on a GPU
#include "conv2d/bwd_data_tables.cuh"
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"
#include "conv2d/warp_tile.cuh"

namespace pycnn {

// 8 warps of 64 x 32 (8 x 8 outputs a thread), 2 resident blocks (at most 128
// registers), as versions 12 and 16; 4 warps of 32 x 32 (4 x 8), 4 resident blocks (at
// most 128 registers: with version 16's 5, at most 96, the loaders' state spills
// inside the loop, ptxas sm_90).
using BwdData17Large = WarpGemmTile<128, 128, 64, 32, 2, 2, 2>;
using BwdData17Small = WarpGemmTile<64, 64, 32, 32, 1, 2, 4>;

template <class T>
__global__ void __launch_bounds__(T::THREADS, T::MIN_BLOCKS)
conv2d_bwd_data_kernel17(const float* __restrict__ dy, const float* __restrict__ wt_all,
                         const int4* __restrict__ tab_all, float* __restrict__ dx, Conv2dParams p) {
  constexpr int PAD = 4;  // keeps the rows 16-byte aligned (the stores need no pad)
  struct alignas(16) Tiles {
    float As[2][T::BK][T::BM + PAD];
    float Bs[2][T::BK][T::BN + PAD];
  };
  __shared__ Tiles tiles;

  // ---- this block's group and phase, as version 14
  const BwdDataBlockPhase bp = bwd_data_block_phase(blockIdx.z, p);
  const int m_block = blockIdx.x * T::BM;
  if (m_block >= bp.M) return;  // the whole block: before any barrier
  const int Cg = p.C / p.groups, HW = p.H * p.W;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  BwdData14Gather<T> gather;
  gather.setup(dy, wt_all, tab_all, p, bp, m_block, blockIdx.y * T::BN, tid);

  const int a_row = warp_tile_row<T>(warp, lane), b_col = warp_tile_col<T>(warp, lane);
  float acc[T::TM][T::TN] = {};
  const int steps = gather.steps();  // the same for the whole block
  if (steps > 0) {
    gather.load();
    gather.store(tiles.As[0], tiles.Bs[0]);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
      const int cur = step & 1;
      // in flight behind the FMAs; the last step's loads are past Kdim: zeros, no memory read
      gather.load();
      warp_tile_multiply<T>(tiles.As[cur], tiles.Bs[cur], acc, a_row, b_col);
      // the other buffers were last read before the previous barrier
      gather.store(tiles.As[cur ^ 1], tiles.Bs[cur ^ 1]);
      __syncthreads();
    }
  }

  // ---- epilogue: dx[n_o, g*Cg + cg, first_h + i*sh, first_w + j*sw], each written once
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int m = m_block + warp_tile_acc_row<T>(a_row, i);
    if (m >= bp.M) continue;
    float* dx_m = dx + bwd_data_dx_row(m, bp, p) + (size_t)bp.g * Cg * HW;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int cg = gather.n_block + warp_tile_acc_col<T>(b_col, j);
      if (cg >= Cg) continue;
      dx_m[(size_t)cg * HW] = acc[i][j];
    }
  }
}

template <class T>
static void launch_bwd_data17(const float* dy, const float* wt, const int4* tab, float* dx,
                              const Conv2dParams& p, cudaStream_t stream) {
  const int M = (int)bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  const int z = p.groups * p.stride_h * p.stride_w;  // the grid checked by the caller
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Cg, T::BN), z);
  launch("conv2d_bwd_data_kernel17", conv2d_bwd_data_kernel17<T>, grid, T::THREADS, 0, stream, dy, wt,
         tab, dx, p);
}

size_t conv2d_bwd_data17_workspace_bytes(const Conv2dParams& p) {
  return conv2d_bwd_data14_workspace_bytes(p);  // version 14's tables
}

void conv2d_bwd_data17(const float* dy, const float* w, float* dx, float* workspace,
                       const Conv2dParams& p, cudaStream_t stream) {
  conv2d_bwd_data14_check(p, workspace, "conv2d_bwd_data17");
  const int64_t z = (int64_t)p.groups * p.stride_h * p.stride_w;
  const int64_t M = bwd_phase_max_rows(p.N, p.H, p.W, p.stride_h, p.stride_w), Cg = p.C / p.groups;
  const bool large = igemm_use_large_tile<BwdData17Large>(M, Cg, z);
  check_grid_yz(ceil_div(Cg, (int64_t)(large ? BwdData17Large::BN : BwdData17Small::BN)), z,
                "conv2d_bwd_data17");  // before the prep kernel: nothing runs on a refused shape
  conv2d_bwd_data14_prep(w, workspace, p, stream);
  const float* wt = workspace;
  const int4* tab = reinterpret_cast<const int4*>(reinterpret_cast<const char*>(workspace) +
                                                  bwd_data14_table_offset(p));
  if (large)
    launch_bwd_data17<BwdData17Large>(dy, wt, tab, dx, p, stream);
  else
    launch_bwd_data17<BwdData17Small>(dy, wt, tab, dx, p, stream);
}

}  // namespace pycnn
