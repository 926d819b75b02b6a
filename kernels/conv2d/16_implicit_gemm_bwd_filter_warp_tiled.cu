// conv2d backward-filter, version 16: version 15's split-K implicit GEMM warp-tiled
// as forward version 12 is, with BK = 16 and a table of the block's filter taps.
//
// What it does: the GEMM of version 4 (read its header first),
//   DWt[crs][kg] = sum_j Xt[crs][j] * DYt[j][kg],  j = n*P*Q + op*Q + oq,
// one block per BM x BN tile of DWt and per group and split of j (gridDim.z), the
// splits reduced with atomics or in a fixed order through the workspace (split_sum.cuh:
// version 4's launch, split counts, tile rule and workspace). What changes:
//   1. Warp tiles (warp_tile.cuh, version 12's): the block's 8 warps (large tile; 4 in
//      the small one) each own a 64 x 32 piece of the 128 x 128 tile (32 x 32 of the
//      64 x 64), in sub-tiles of 32 x 16 where a lane owns 4 x 4 outputs; a thread
//      holds 8 x 8 outputs (4 x 8 small) in runs of 4 and reads them per j as
//      WMITER + WNITER float4s, 128 contiguous bytes of As and 64 of Bs a warp: no
//      bank conflict. Version 15 strides its threads over the whole block tile.
//   2. BK = 16 (version 15: 8): half the barriers and loop overhead per FMA.
//   3. The filter taps of the block's BM rows crs = (cg, r, s) do not change from step
//      to step, so they are decoded once, before the loop, into a table in shared
//      memory, one int4 a row: {cg*H*W + r*dil_h*W + s*dil_w, r*dil_h, s*dil_w}; a
//      row past C/groups*R*S gets r*dil_h = -2^29, which no pixel brings in bounds, so
//      it needs no test of its own. Version 15 keeps 3 ints and a flag a load in
//      registers (12 a thread for its 4 loads; the 8 loads here would need 32, which
//      the 8x8 tile has not got). A loader reads an entry (one LDS.128: a warp reads
//      4 entries), adds its pixel's offsets and checks the two bounds as unsigned
//      compares.
//   4. The reduction row is stepped as in version 15 (tap_step/tap_advance over the
//      radices (P, Q), no division in the loop): each thread owns one row j of every
//      step, so one (n, op, oq) a thread, and its loads of a step share the pixel's
//      offsets in x and dy (computed once a step). Past the split's end the row's
//      h0 is -2^29 and its dy loads are off: the loop may load one step past its last
//      (unused) without touching memory, so the loads need no guard.
// Loads and shared memory, conflict-free by construction: both operands are
// contiguous along j in memory (dy along p*q; x along w at stride 1), so both loaders
// are j-fastest, the same map for A (columns crs) and B (columns kg): thread t loads
// row jl = t % 8 + 8 * (t / 32 % 2) of the step and columns
// c = 4 * (t / 64) + t % 32 / 8 + i * (THREADS / 16), i < LOADS. A warp's load is 8
// consecutive rows j of 4 columns: 4 sectors of 32 bytes (at stride 1 and away from
// row ends), as version 15's 8 rows of 4 columns. It stores them transposed,
// As[j][crs] and Bs[j][kg], rows of BM + 4 and BN + 4 floats (BM, BN multiples of 32):
// word (jl, c) is in bank (jl * (BM + 4) + c) % 32 = (4 jl + c) % 32. Within a warp jl =
// 8 h + l % 8 (h fixed) and c = c0 + l / 8 (c0 a multiple of 4, plus 16 i), so the bank
// is (const + 4 (l % 8) + l / 8) % 32: 32 distinct banks for the 32 lanes. Without the
// pad it would be 8-way (bank c alone; and with version 15's map 16 rows of one column,
// 16-way), and a pad of 1 or 2 would misalign the float4 reads, which never cross a row
// and so are conflict-free whatever the pad (warp_tile.cuh).
// One __syncthreads a step: the loads of step t+1 are issued before the multiply of
// step t and stored after it into the other buffers, as in versions 12 and 15.
//
// Changed from version 15: the four points above; the split-K launch, the result (up to
// float rounding, and bit for bit between runs when deterministic) and the tile rule
// (large where K/groups and C/groups*R*S are both >= 96) are version 4's, so is the
// split count (the same tiles give the same grid).
//
// What limits it: the loads go through registers (no cp.async) and are scalar (x is
// contiguous along j only at stride 1 and within an image row, dy within a plane); the
// epilogue's stores of dw are scalar; the deterministic mode writes and re-reads splits
// x |dw| floats; the FMAs are fp32 on the CUDA cores.
//
// Static counters (sm_90, nvcc 13.0.88, pycnn.inspect.static; versions 15 and 4 in
// brackets): main-loop FFMA share 77% for the 128x128 tile [72%, 61%] and 65% for the
// 64x64 one [50%, 38%]: 1024 FFMAs in 1325 instructions an iteration of BK = 16 (512 in
// 793), no integer division in the loop, 128 / 95 registers, no spills. The small tile
// loads twice the operands per FMA (a thread's 4 x 8 outputs against 8 x 8), so its
// share is lower by construction. The emulator's counters (ResNet-50's layer3 3x3 at
// batch 8): no bank conflict in any shared read or write, 2 wavefronts a float4 read
// (version 15: 3), 4.8 sectors a global load request (as version 15).
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"
#include "conv2d/split_sum.cuh"
#include "conv2d/warp_tile.cuh"

namespace pycnn {

// 8 warps of 64 x 32 (8 x 8 outputs a thread), 2 resident blocks (at most 128
// registers); 4 warps of 32 x 32 (4 x 8), 5 resident blocks (at most 102), as version 12.
using BwdFilter16Large = WarpGemmTile<128, 128, 64, 32, 2, 2, 2>;
using BwdFilter16Small = WarpGemmTile<64, 64, 32, 32, 1, 2, 5>;

// Added to a row's h, it puts every pixel out of bounds (points 3 and 4).
constexpr int kBwdFilter16Far = -(1 << 29);

// out, chunk, split_stride: as version 4's (split s writes at out + s * split_stride;
// chunk: the length of each split's j range, a multiple of BK).
template <class T, bool ATOMIC>
__global__ void __launch_bounds__(T::THREADS, T::MIN_BLOCKS)
conv2d_bwd_filter_kernel16(const float* __restrict__ x, const float* __restrict__ dy,
                           float* __restrict__ out, Conv2dParams p, int chunk, int split_stride) {
  constexpr int BK = T::BK, PAD = 4;
  constexpr int CP = T::THREADS / 16;  // columns a loader pass covers
  constexpr int A_LOADS = T::BM / CP, B_LOADS = T::BN / CP;
  static_assert(BK == 16 && T::THREADS % 64 == 0 && T::BM % CP == 0 && T::BN % CP == 0,
                "loaders: 16 rows j of THREADS / 16 columns a pass");
  static_assert(T::BM % 32 == 0 && T::BN % 32 == 0 && T::BM <= T::THREADS, "the bank proof and the tap table");
  struct alignas(16) Smem {  // rows on 16-byte boundaries, for the float4 reads
    float As[2][BK][T::BM + PAD];
    float Bs[2][BK][T::BN + PAD];
    int4 taps[T::BM];
  };
  __shared__ Smem sm;

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int CRSg = Cg * RS, NPQ = p.N * PQ;
  const int g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
  const int j_begin = split * chunk;
  const int j_end = NPQ < j_begin + chunk ? NPQ : j_begin + chunk;
  const int m_block = blockIdx.x * T::BM, n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const float* x_g = x + (size_t)g * Cg * HW;
  const float* dy_g = dy + (size_t)g * Kg * PQ;

  // ---- the tap table: row crs = m_block + tid of the tile (the kernel's divisions).
  if (tid < T::BM) {
    const int crs = m_block + tid;
    int4 e = make_int4(0, kBwdFilter16Far, 0, 0);
    if (crs < CRSg) {
      const int cg = crs / RS, rs = crs - cg * RS, r = rs / p.S, s = rs - r * p.S;
      const int dh = r * p.dilation_h, dw = s * p.dilation_w;
      e = make_int4(cg * HW + dh * p.W + dw, dh, dw, 0);
    }
    sm.taps[tid] = e;
  }

  // ---- loaders: row j_begin + ld_j of the first step, columns ld_c + i * CP.
  const int ld_j = tid % 8 + 8 * (tid / 32 % 2), ld_c = 4 * (tid / 64) + lane / 8;
  int j = j_begin + ld_j;  // this thread's next row and its digits (n, op, oq)
  int n, op, oq;
  {
    const TapStep first = tap_step(j < NPQ ? j : 0, p.P, p.Q);  // once, before the loop
    n = first.dc, op = first.dr, oq = first.ds;
  }
  const TapStep bk = tap_step(BK, p.P, p.Q);
  const int CHW = p.C * HW, KPQ = p.K * PQ;
  const int b_col = n_block + ld_c;               // the first column kg a thread loads
  const int b_stride = CP * PQ;                   // dy's offset from one column to the next
  float a_next[A_LOADS], b_next[B_LOADS];

  // Issue the global loads of the thread's next row, then step the row by BK.
  auto load = [&]() {
    const bool j_ok = j < j_end;
    const int h0 = j_ok ? op * p.stride_h - p.pad_top : kBwdFilter16Far;
    const int w0 = oq * p.stride_w - p.pad_left;
    const int x_j = n * CHW + (op * p.stride_h - p.pad_top) * p.W + w0;  // x at (cg 0, h0, w0)
    const int dy_j = n * KPQ + op * p.Q + oq + b_col * PQ;               // dy at (b_col, op, oq)
    int a_off[A_LOADS];  // the table's reads first, apart from the loads they guard
    bool a_in[A_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int4 e = sm.taps[ld_c + i * CP];
      const int h = h0 + e.y, ww = w0 + e.z;
      a_off[i] = x_j + e.x;
      a_in[i] = (unsigned)h < (unsigned)p.H && (unsigned)ww < (unsigned)p.W;
    }
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) a_next[i] = a_in[i] ? x_g[a_off[i]] : 0.f;
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i)
      b_next[i] = (j_ok && b_col + i * CP < Kg) ? dy_g[dy_j + i * b_stride] : 0.f;
    j += BK;
    tap_advance(n, op, oq, bk, p.P, p.Q);  // (past the end it runs on unread: j_ok is false)
  };
  // Write the loaded row into buffer `buf` of the tiles, transposed (the header's proof).
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) sm.As[buf][ld_j][ld_c + i * CP] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) sm.Bs[buf][ld_j][ld_c + i * CP] = b_next[i];
  };

  const int a_row = warp_tile_row<T>(warp, lane), a_col = warp_tile_col<T>(warp, lane);
  float acc[T::TM][T::TN] = {};
  const int steps = j_end > j_begin ? (j_end - j_begin + BK - 1) / BK : 0;
  if (steps > 0) {  // the same for the whole block
    __syncthreads();  // the tap table
    load();
    store(0);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
      const int cur = step & 1;
      load();  // in flight behind the FMAs (the last step's: past the end, no memory read)
      warp_tile_multiply<T>(sm.As[cur], sm.Bs[cur], acc, a_row, a_col);
      store(cur ^ 1);  // the other buffers were last read before the previous barrier
      __syncthreads();
    }
  }

  // ---- epilogue: dw[g*Kg + kg, crs] (of this split), as version 4; an empty split
  // writes its zeros (the fixed-order sum reads them).
  float* out_s = out + (size_t)split * split_stride;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int crs = m_block + warp_tile_acc_row<T>(a_row, i);
    if (crs >= CRSg) continue;
#pragma unroll
    for (int jn = 0; jn < T::TN; ++jn) {
      const int kg = n_block + warp_tile_acc_col<T>(a_col, jn);
      if (kg >= Kg) continue;
      float* dst = out_s + (size_t)(g * Kg + kg) * CRSg + crs;
      if (ATOMIC)
        atomicAdd(dst, acc[i][jn]);
      else
        *dst = acc[i][jn];
    }
  }
}

template <class T>
static void launch_bwd_filter16(const float* x, const float* dy, float* dw, float* workspace,
                                const Conv2dParams& p, int splits, bool deterministic,
                                cudaStream_t stream) {
  launch_split_k_bwd_filter<T>(conv2d_bwd_filter_kernel16<T, false>, conv2d_bwd_filter_kernel16<T, true>,
                               x, dy, dw, workspace, p, splits, deterministic, stream,
                               "conv2d_bwd_filter_kernel16", "conv2d_bwd_filter16");
}

void conv2d_bwd_filter16(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_filter16");
  if (splits < 1 || (int64_t)splits * p.groups > 65535)
    throw std::invalid_argument("conv2d_bwd_filter16: splits must be >= 1 with splits*groups <= "
                                "65535, got splits=" + std::to_string(splits) +
                                " groups=" + std::to_string(p.groups));
  // split * chunk + chunk <= N*P*Q + splits*BK, and the stepped rows up to BK past
  // the end, must stay ints.
  check_int32_size((int64_t)p.N * p.P * p.Q + ((int64_t)splits + 1) * BwdFilter16Large::BK,
                   "N*P*Q plus the split rounding");
  if (deterministic && splits > 1 && workspace == nullptr)
    throw std::invalid_argument("conv2d_bwd_filter16: deterministic with splits=" +
                                std::to_string(splits) + " needs a workspace of " +
                                std::to_string(conv2d_bwd_filter4_workspace_bytes(p, splits, true)) +
                                " bytes, got a null pointer");
  if (bwd_filter4_large(p))
    launch_bwd_filter16<BwdFilter16Large>(x, dy, dw, workspace, p, splits, deterministic, stream);
  else
    launch_bwd_filter16<BwdFilter16Small>(x, dy, dw, workspace, p, splits, deterministic, stream);
}

}  // namespace pycnn
