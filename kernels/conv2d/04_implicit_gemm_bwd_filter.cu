// conv2d backward-filter, version 4: implicit GEMM with split-K over N*P*Q,
// reduced either with atomics or deterministically through a workspace.
//
// What it does: for one group, dw (transposed) is the matrix product
//   DWt[crs][kg] = sum_j Xt[crs][j] * DYt[j][kg]
//   crs = cg*R*S + r*S + s        (M    = (C/groups)*R*S rows: one per filter tap)
//   kg  = output channel in group (N    = K/groups columns)
//   j   = n*P*Q + op*Q + oq       (Kdim = N*P*Q: the long reduction)
//   Xt[crs][j] = x[n, g*Cg + cg, op*sh - pt + r*dh, oq*sw - pl + s*dw]  (0 outside)
//   DYt[j][kg] = dy[n, g*Kg + kg, op, oq]
//   dw[g*Kg + kg, cg, r, s] = DWt[crs][kg]  at offset (g*Kg + kg)*CRSg + crs
// This is the GEMM M = K/groups, N = C/groups*R*S, K = N*P*Q with the operands
// swapped, so that consecutive threads own consecutive crs, the contiguous axis
// of dw: the epilogue's stores and atomics coalesce.
// The reduction is long and the output small, so Kdim is split into `splits`
// chunks (blockIdx.z = split * groups + g), enough to fill the GPU:
//   atomic        dw is zeroed, every split atomicAdds its partial sums into it
//                 (fast, but the float sum order changes from run to run);
//   deterministic every split stores its partial sums to workspace[split] and
//                 conv2d_split_sum_kernel (split_sum.cuh) adds them in split order.
// With splits == 1 both modes store straight into dw.
//
// Changed from version 1 (direct, one thread per dw element running the whole
// N*P*Q reduction, so only K*Cg*R*S threads): the register-blocked tiles of
// versions 2 and 3, and split-K so that the grid fills the GPU even when dw has
// fewer elements than the GPU has threads.
//
// What limits it: both operands are loaded k-fastest (j is the contiguous axis
// of dy and, at stride 1, of x), 8 consecutive floats (32 B) per row per step;
// decoding j -> (n, op, oq) costs two divisions per step; no double buffering;
// the deterministic mode writes and re-reads splits * |dw| floats.
//
// Measured: not yet measured on a GPU
#include <algorithm>

#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"
#include "conv2d/split_sum.cuh"

namespace pycnn {

// out: dw (splits == 1, or ATOMIC) or the workspace; split s writes at
// out + s * split_stride (split_stride = 0 for dw).
// chunk: length of each split's j range, a multiple of BK.
template <class T, bool ATOMIC>
__global__ void __launch_bounds__(T::THREADS)
conv2d_bwd_filter_kernel4(const float* __restrict__ x, const float* __restrict__ dy,
                          float* __restrict__ out, Conv2dParams p, int chunk,
                          int split_stride) {
  // Both loaders are k-fastest: thread t loads reduction row j0 + t % BK, and
  // columns t / BK + i * (THREADS / BK) of its tile.
  constexpr int STEP = T::THREADS / T::BK;
  constexpr int A_LOADS = T::BM / STEP;
  constexpr int B_LOADS = T::BN / STEP;
  static_assert(T::BM % STEP == 0 && T::BN % STEP == 0,
                "k-fastest loaders: BM and BN must be multiples of THREADS/BK");

  __shared__ float As[T::BK][T::BM + T::PAD];
  __shared__ float Bs[T::BK][T::BN + T::PAD];

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int CRSg = Cg * RS;                 // GEMM M
  const int NPQ = p.N * PQ;                 // GEMM Kdim
  const int g = blockIdx.z % p.groups;
  const int split = blockIdx.z / p.groups;
  const int j_begin = split * chunk;        // this split's reduction range [j_begin, j_end)
  const int j_end = NPQ < j_begin + chunk ? NPQ : j_begin + chunk;
  const int m_block = blockIdx.x * T::BM;   // first crs of this block
  const int n_block = blockIdx.y * T::BN;   // first output channel (in group) of this block
  const int tid = threadIdx.x;

  const int ld_k = tid % T::BK;             // the reduction row this thread loads, j = j0 + ld_k
  const int ld_c = tid / T::BK;             // its first column (+ i * STEP)

  // ---- x loader: its crs columns are fixed for the whole loop; decode them once
  // into the tap's offsets: channel plane, row shift r*dh, column shift s*dw.
  int a_plane[A_LOADS], a_dh[A_LOADS], a_dw[A_LOADS];
  bool a_ok[A_LOADS];
#pragma unroll
  for (int i = 0; i < A_LOADS; ++i) {
    const int crs = m_block + ld_c + i * STEP;
    a_ok[i] = crs < CRSg;
    const int crs_safe = a_ok[i] ? crs : 0;
    const int cg = crs_safe / RS;
    const int rs = crs_safe - cg * RS;
    const int r = rs / p.S;
    const int s = rs - r * p.S;
    a_plane[i] = cg * HW;
    a_dh[i] = r * p.dilation_h;
    a_dw[i] = s * p.dilation_w;
  }
  // x + offset of x[0, g*Cg, 0, 0]; dy + offset of dy[0, g*Kg, 0, 0]
  const float* x_g = x + (size_t)g * Cg * HW;
  const float* dy_g = dy + (size_t)g * Kg * PQ;

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};

  for (int j0 = j_begin; j0 < j_end; j0 += T::BK) {
    // Decode this thread's reduction row once: j = n*PQ + op*Q + oq.
    const int j = j0 + ld_k;
    const bool j_ok = j < j_end;
    const int j_safe = j_ok ? j : 0;
    const int n = j_safe / PQ;
    const int pq = j_safe - n * PQ;
    const int op = pq / p.Q;
    const int oq = pq - op * p.Q;
    const int h0 = op * p.stride_h - p.pad_top;   // input row of tap r = 0
    const int w0 = oq * p.stride_w - p.pad_left;  // input column of tap s = 0
    const float* x_n = x_g + (size_t)n * p.C * HW;          // x[n, g*Cg, 0, 0]
    const float* dy_n = dy_g + (size_t)n * p.K * PQ + pq;   // dy[n, g*Kg, op, oq]
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int h = h0 + a_dh[i];
      const int ww = w0 + a_dw[i];
      float v = 0.f;
      if (j_ok && a_ok[i] && h >= 0 && h < p.H && ww >= 0 && ww < p.W)
        v = x_n[a_plane[i] + h * p.W + ww];
      As[ld_k][ld_c + i * STEP] = v;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kg = n_block + ld_c + i * STEP;
      Bs[ld_k][ld_c + i * STEP] = (j_ok && kg < Kg) ? dy_n[(size_t)kg * PQ] : 0.f;
    }
    __syncthreads();
    igemm_tile_multiply<T>(As, Bs, acc, tm, tn);
    __syncthreads();
  }

  // ---- epilogue: dw[g*Kg + kg, crs] (of this split) at (g*Kg + kg)*CRSg + crs.
  // A split whose range is empty still writes its zeros: the reduction reads them.
  float* out_s = out + (size_t)split * split_stride;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int crs = m_block + tm + i * T::ROWS;
    if (crs >= CRSg) continue;
#pragma unroll
    for (int jn = 0; jn < T::TN; ++jn) {
      const int kg = n_block + tn + jn * T::COLS;
      if (kg >= Kg) continue;
      float* dst = out_s + (size_t)(g * Kg + kg) * CRSg + crs;
      if (ATOMIC)
        atomicAdd(dst, acc[i][jn]);
      else
        *dst = acc[i][jn];
    }
  }
}

using BwdFilter4Large = IgemmTile<128, 128, 8, 8, 8>;
using BwdFilter4Small = IgemmTile<64, 64, 8, 4, 4>;

// The tile (bwd_filter4_large, split_sum.cuh), the split count and the workspace size
// are pure functions of the shape, so Python can size the workspace and tests can check
// them on a CPU.
static int64_t bwd_filter4_blocks(const Conv2dParams& p, int bm, int bn) {
  const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups;
  return ceil_div(Cg * p.R * p.S, (int64_t)bm) * ceil_div(Kg, (int64_t)bn) * p.groups;
}

// Shortest reduction chunk worth a split of its own: below it the partial
// sums' traffic outweighs the extra parallelism.
constexpr int kMinSplitChunk = 256;

int conv2d_bwd_filter4_splits(const Conv2dParams& p, int num_sms) {
  check_conv2d_params(p, "conv2d_bwd_filter4_splits");
  if (num_sms < 1)
    throw std::invalid_argument("conv2d_bwd_filter4_splits: num_sms must be >= 1, got " +
                                std::to_string(num_sms));
  const int64_t blocks = bwd_filter4_large(p)
                             ? bwd_filter4_blocks(p, BwdFilter4Large::BM, BwdFilter4Large::BN)
                             : bwd_filter4_blocks(p, BwdFilter4Small::BM, BwdFilter4Small::BN);
  const int64_t npq = (int64_t)p.N * p.P * p.Q;
  int64_t splits = ceil_div((int64_t)2 * num_sms, blocks);   // about two waves
  splits = std::min<int64_t>(splits, ceil_div(npq, (int64_t)kMinSplitChunk));
  splits = std::min<int64_t>(splits, 65535 / p.groups);      // grid z = splits * groups
  splits = std::min<int64_t>(splits, 256);
  return (int)std::max<int64_t>(splits, 1);
}

size_t conv2d_bwd_filter4_workspace_bytes(const Conv2dParams& p, int splits, bool deterministic) {
  check_conv2d_params(p, "conv2d_bwd_filter4_workspace_bytes");
  if (splits < 1)
    throw std::invalid_argument("conv2d_bwd_filter4_workspace_bytes: splits must be >= 1, got " +
                                std::to_string(splits));
  if (!deterministic || splits == 1) return 0;
  const size_t dw_elems = (size_t)p.K * (p.C / p.groups) * p.R * p.S;
  return (size_t)splits * dw_elems * sizeof(float);
}

// Launchers.
template <class T>
static void launch_bwd_filter4(const float* x, const float* dy, float* dw, float* workspace,
                               const Conv2dParams& p, int splits, bool deterministic,
                               cudaStream_t stream) {
  launch_split_k_bwd_filter<T>(conv2d_bwd_filter_kernel4<T, false>, conv2d_bwd_filter_kernel4<T, true>,
                               x, dy, dw, workspace, p, splits, deterministic, stream,
                               "conv2d_bwd_filter_kernel4", "conv2d_bwd_filter4");
}

void conv2d_bwd_filter4(const float* x, const float* dy, float* dw, float* workspace,
                        const Conv2dParams& p, int splits, bool deterministic,
                        cudaStream_t stream) {
  check_split_k_bwd_filter(p, splits, deterministic, workspace, BwdFilter4Large::BK, "conv2d_bwd_filter4");
  if (bwd_filter4_large(p))
    launch_bwd_filter4<BwdFilter4Large>(x, dy, dw, workspace, p, splits, deterministic, stream);
  else
    launch_bwd_filter4<BwdFilter4Small>(x, dy, dw, workspace, p, splits, deterministic, stream);
}

}  // namespace pycnn
