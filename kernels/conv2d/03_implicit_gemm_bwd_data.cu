// conv2d backward-data, version 3: implicit GEMM, the tiling of forward
// version 2 applied to dx = conv_transpose(dy, w).
//
// What it does: for one group, dx is the matrix product
//   DX[m][cg] = sum_kk DY[m][kk] * Wt[kk][cg]
//   m  = n*H*W + h*W + iw         (M    = N*H*W rows: one per input pixel)
//   cg = input channel in group   (N    = C/groups columns)
//   kk = kg*R*S + r*S + s         (Kdim = (K/groups)*R*S)
//   DY[m][kk] = dy[n, g*Kg + kg, op, oq] where the tap lands on (h, iw):
//               h + pt - r*dh = op*sh and iw + pl - s*dw = oq*sw, both
//               divisible and 0 <= op < P, 0 <= oq < Q; 0 otherwise
//   Wt[kk][cg] = w[g*Kg + kg, cg, r, s]   (the filter, transposed: K and C swap)
// As in version 2, DY is gathered on the fly into shared memory (no col2im
// buffer, no atomics: each dx element is owned by one thread and written once)
// and each thread multiplies a TM x TN register block (igemm_tile.cuh).
// blockIdx.x walks M, blockIdx.y the input channels of the group, blockIdx.z
// is the group.
//
// Changed from version 1 (direct, one thread per dx element, two global loads
// per FMA): the same register blocking as forward version 2, so the reuse
// argument is the same: TM*TN FMAs per TM+TN shared-memory loads.
//
// What limits it: with stride > 1 most taps of a given (h, iw) are not
// divisible, so (1 - 1/(sh*sw)) of the gathered DY elements are zeros that
// still cost FMAs (3/4 of the work at stride 2); the fix is to split dx into
// sh*sw stride phases, each a dense GEMM (version 11, 11_implicit_gemm_bwd_data_phased.cu,
// the default at stride > 1). No double buffering, integer
// divisions in the gather, filter rows read with stride R*S (the transposed
// filter is not contiguous along kk), as in version 2.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

template <class T>
__global__ void __launch_bounds__(T::THREADS)
conv2d_bwd_data_kernel3(const float* __restrict__ dy, const float* __restrict__ w,
                        float* __restrict__ dx, Conv2dParams p) {
  // The DY loader is m-fastest: thread t loads row m = t % BM, k rows
  // t / BM + i * (THREADS / BM) (consecutive m = consecutive iw, so
  // consecutive oq at stride 1).
  static_assert(T::THREADS % T::BM == 0, "DY loader: THREADS must be a multiple of BM");
  constexpr int A_STEP = T::THREADS / T::BM;
  constexpr int A_LOADS = T::BK / A_STEP;
  static_assert(T::BK % A_STEP == 0, "DY loader: BK must be a multiple of THREADS/BM");
  // The filter loader is c-fastest: thread t loads column cg = t % BN, k rows
  // t / BN + i * (THREADS / BN) (for 1x1 filters consecutive cg are adjacent in w).
  static_assert(T::THREADS % T::BN == 0, "filter loader: THREADS must be a multiple of BN");
  constexpr int B_STEP = T::THREADS / T::BN;
  constexpr int B_LOADS = T::BK / B_STEP;
  static_assert(T::BK % B_STEP == 0, "filter loader: BK must be a multiple of THREADS/BN");

  __shared__ float As[T::BK][T::BM + T::PAD];
  __shared__ float Bs[T::BK][T::BN + T::PAD];

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int M = p.N * HW;
  const int Kdim = Kg * RS;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;   // first dx pixel row of this block
  const int n_block = blockIdx.y * T::BN;   // first input channel (in group) of this block
  const int tid = threadIdx.x;

  // ---- DY loader: this thread's row m is fixed; decode it once.
  const int a_m = tid % T::BM;
  const int a_k = tid / T::BM;
  const int m_ld = m_block + a_m;
  const bool m_ok = m_ld < M;
  const int m_safe = m_ok ? m_ld : 0;
  const int n_img = m_safe / HW;            // m = n_img*HW + h*W + iw
  const int hw = m_safe - n_img * HW;
  const int h = hw / p.W;
  const int iw = hw - h * p.W;
  const int hp0 = h + p.pad_top;            // op*sh = hp0 - r*dh
  const int wq0 = iw + p.pad_left;          // oq*sw = wq0 - s*dw
  // dy + offset of dy[n_img, g*Kg, 0, 0]
  const float* dy_m = dy + ((size_t)n_img * p.K + (size_t)g * Kg) * PQ;

  // ---- filter loader: w + offset of w[g*Kg, 0, 0, 0]; w[g*Kg + kg, cg, r, s] is at
  // (kg*Cg + cg)*RS + rs from there.
  const int b_n = tid % T::BN;
  const int b_k = tid / T::BN;
  const float* w_g = w + (size_t)g * Kg * Cg * RS;

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};

  for (int k0 = 0; k0 < Kdim; k0 += T::BK) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int kr = a_k + i * A_STEP;
      const int kk = k0 + kr;               // kk = kg*RS + r*S + s
      float v = 0.f;
      if (m_ok && kk < Kdim) {
        const int kg = kk / RS;
        const int rs = kk - kg * RS;
        const int r = rs / p.S;
        const int s = rs - r * p.S;
        const int hp = hp0 - r * p.dilation_h;   // must be op*sh, 0 <= op < P
        const int wq = wq0 - s * p.dilation_w;   // must be oq*sw, 0 <= oq < Q
        // hp >= 0 is tested first: % of a negative int is negative or zero in C++.
        if (hp >= 0 && wq >= 0 && hp % p.stride_h == 0 && wq % p.stride_w == 0) {
          const int op = hp / p.stride_h;
          const int oq = wq / p.stride_w;
          if (op < p.P && oq < p.Q) v = dy_m[kg * PQ + op * p.Q + oq];
        }
      }
      As[kr][a_m] = v;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kr = b_k + i * B_STEP;
      const int kk = k0 + kr;
      const int cg = n_block + b_n;
      float v = 0.f;
      if (cg < Cg && kk < Kdim) {
        const int kg = kk / RS;
        const int rs = kk - kg * RS;
        v = w_g[((size_t)kg * Cg + cg) * RS + rs];
      }
      Bs[kr][b_n] = v;
    }
    __syncthreads();
    igemm_tile_multiply<T>(As, Bs, acc, tm, tn);
    __syncthreads();
  }

  // ---- epilogue: dx[n_img, g*Cg + cg, h, iw]; offset = (n_img*C + c)*HW + hw
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int m = m_block + tm + i * T::ROWS;
    if (m >= M) continue;
    const int n_o = m / HW;
    const int hw_o = m - n_o * HW;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int cg = n_block + tn + j * T::COLS;
      if (cg >= Cg) continue;
      dx[((size_t)n_o * p.C + (size_t)g * Cg + cg) * HW + hw_o] = acc[i][j];
    }
  }
}

using BwdData3Large = IgemmTile<128, 128, 8, 8, 8>;
using BwdData3Small = IgemmTile<64, 64, 8, 4, 4>;

// Launchers.
template <class T>
static void launch_bwd_data3(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                             cudaStream_t stream) {
  const int M = p.N * p.H * p.W, Cg = p.C / p.groups;
  check_grid_yz(ceil_div(Cg, T::BN), p.groups, "conv2d_bwd_data3");  // y: input channels per group
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Cg, T::BN), p.groups);
  launch("conv2d_bwd_data_kernel3", conv2d_bwd_data_kernel3<T>, grid, T::THREADS, 0, stream, dy, w, dx, p);
}

void conv2d_bwd_data3(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_data3");
  if (p.groups > 65535)
    throw std::invalid_argument("conv2d_bwd_data3: groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.H * p.W, Cg = p.C / p.groups;
  check_int32_size(M + BwdData3Large::BM, "N*H*W plus one tile");
  if (igemm_use_large_tile<BwdData3Large>(M, Cg, p.groups))
    launch_bwd_data3<BwdData3Large>(dy, w, dx, p, stream);
  else
    launch_bwd_data3<BwdData3Small>(dy, w, dx, p, stream);
}

}  // namespace pycnn
