// conv2d forward, version 2: implicit GEMM with shared-memory tiles and a
// register block per thread, bias and ReLU fused into the epilogue.
//
// What it does: the convolution of one group is the matrix product
//   Y[m][kg] = sum_kk X[m][kk] * Wt[kk][kg]
//   m  = n*P*Q + op*Q + oq        (M    = N*P*Q rows: one per output pixel)
//   kg = output channel in group  (N    = K/groups columns)
//   kk = c*R*S + r*S + s          (Kdim = (C/groups)*R*S: one per filter tap)
//   X[m][kk]  = x[n, g*Cg + c, op*sh - pt + r*dh, oq*sw - pl + s*dw]  (0 outside)
//   Wt[kk][kg] = w[g*Kg + kg, c, r, s] = w_flat[(g*Kg + kg)*Kdim + kk]
// X is never materialised (no im2col buffer): each block gathers its BM x BK
// slice of X from x straight into shared memory, zero-filling the padding, and
// loads the BK x BN slice of the filter beside it. Every thread then multiplies
// a TM x TN register block (igemm_tile.cuh). blockIdx.x walks M, blockIdx.y
// walks the output channels of the group, blockIdx.z is the group.
// Epilogue: + b[k], then max(., 0) when RELU, stored straight to NCHW y.
//
// Changed from version 1 (direct, one thread per output): a value of x is read
// from global memory once per block tile instead of once per output channel,
// and from shared memory a thread does TM*TN FMAs per TM+TN loads (8x8: 64 FMAs
// per 16 loads) instead of one FMA per two global loads. The gather of X is
// coalesced: consecutive threads take consecutive m, i.e. consecutive oq,
// which for stride 1 are consecutive addresses of x.
//
// What limits it: no double buffering (global loads and FMAs do not overlap
// within a block; only other resident blocks hide the latency); the gather
// decodes kk -> (c, r, s) with two integer divisions per element; scalar
// shared-memory loads (rows are strided for coalesced stores, so no float4);
// the filter tile is read k-fastest, 8 floats (32 B) per row. Grouped
// convolutions with few channels per group (depthwise: C/groups = 1) waste
// most of the BN columns: the Python side sends depthwise layers to version 6
// (06_depthwise.cu).
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

template <class T, bool RELU>
__global__ void __launch_bounds__(T::THREADS)
conv2d_fwd_kernel2(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  // The X loader is m-fastest: thread t loads row m = t % BM, k rows
  // t / BM + i * (THREADS / BM).
  static_assert(T::THREADS % T::BM == 0, "X loader: THREADS must be a multiple of BM");
  constexpr int A_STEP = T::THREADS / T::BM;           // k rows per pass of the X loader
  constexpr int A_LOADS = T::BK / A_STEP;              // X elements per thread per tile
  static_assert(T::BK % A_STEP == 0, "X loader: BK must be a multiple of THREADS/BM");
  // The filter loader is k-fastest: thread t loads k row t % BK, columns
  // t / BK + i * (THREADS / BK) (kk is the contiguous axis of w).
  constexpr int B_STEP = T::THREADS / T::BK;
  constexpr int B_LOADS = T::BN / B_STEP;

  __shared__ float As[T::BK][T::BM + T::PAD];
  __shared__ float Bs[T::BK][T::BN + T::PAD];

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int M = p.N * PQ;
  const int Kdim = Cg * RS;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;   // first GEMM row of this block
  const int n_block = blockIdx.y * T::BN;   // first output channel (in group) of this block
  const int tid = threadIdx.x;

  // ---- X loader: this thread's row m is fixed for the whole k loop; decode it once.
  const int a_m = tid % T::BM;              // row of As this thread fills
  const int a_k = tid / T::BM;              // first k row it fills
  const int m_ld = m_block + a_m;
  const bool m_ok = m_ld < M;
  const int m_safe = m_ok ? m_ld : 0;       // decode a valid row even past M (never read)
  const int n_img = m_safe / PQ;            // m = n_img*PQ + op*Q + oq
  const int pq = m_safe - n_img * PQ;
  const int op = pq / p.Q;
  const int oq = pq - op * p.Q;
  const int h0 = op * p.stride_h - p.pad_top;     // input row of tap r = 0
  const int w0 = oq * p.stride_w - p.pad_left;    // input column of tap s = 0
  // x + offset of x[n_img, g*Cg, 0, 0]
  const float* x_m = x + ((size_t)n_img * p.C + (size_t)g * Cg) * HW;

  // ---- filter loader: w + offset of w[g*Kg, 0, 0, 0]; row kg of Wt^T is contiguous in kk.
  const int b_k = tid % T::BK;              // k row of Bs this thread fills
  const int b_n = tid / T::BK;              // first column it fills
  const float* w_g = w + (size_t)g * Kg * Kdim;

  const int tm = tid % T::ROWS, tn = tid / T::ROWS;  // this thread's register block
  float acc[T::TM][T::TN] = {};

  for (int k0 = 0; k0 < Kdim; k0 += T::BK) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int kr = a_k + i * A_STEP;      // k row inside the tile
      const int kk = k0 + kr;               // kk = c*RS + r*S + s
      float v = 0.f;
      if (m_ok && kk < Kdim) {
        const int c = kk / RS;
        const int rs = kk - c * RS;
        const int r = rs / p.S;
        const int s = rs - r * p.S;
        const int h = h0 + r * p.dilation_h;
        const int ww = w0 + s * p.dilation_w;
        if (h >= 0 && h < p.H && ww >= 0 && ww < p.W) v = x_m[c * HW + h * p.W + ww];
      }
      As[kr][a_m] = v;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int nc = b_n + i * B_STEP;      // column inside the tile
      const int kg = n_block + nc;          // output channel inside the group
      const int kk = k0 + b_k;
      Bs[b_k][nc] = (kg < Kg && kk < Kdim) ? w_g[(size_t)kg * Kdim + kk] : 0.f;
    }
    __syncthreads();
    igemm_tile_multiply<T>(As, Bs, acc, tm, tn);
    __syncthreads();  // the next iteration overwrites the tiles
  }

  // ---- epilogue: y[n_img, g*Kg + kg, op, oq] = act(acc + b); y offset = (n_img*K + k)*PQ + pq
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int m = m_block + tm + i * T::ROWS;
    if (m >= M) continue;
    const int n_o = m / PQ;
    const int pq_o = m - n_o * PQ;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int kg = n_block + tn + j * T::COLS;
      if (kg >= Kg) continue;
      const int k = g * Kg + kg;
      float v = acc[i][j];
      if (b != nullptr) v += b[k];
      if (RELU) v = fmaxf(v, 0.f);
      y[((size_t)n_o * p.K + k) * PQ + pq_o] = v;
    }
  }
}

// Two tunings: 128x128 tiles with 8x8 per thread for large layers, 64x64 with
// 4x4 for layers too small to fill the GPU with 128x128 tiles.
using Fwd2Large = IgemmTile<128, 128, 8, 8, 8>;
using Fwd2Small = IgemmTile<64, 64, 8, 4, 4>;

// Launchers.
template <class T>
static void launch_fwd2(const float* x, const float* w, const float* b, float* y,
                        const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int M = p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_grid_yz(ceil_div(Kg, T::BN), p.groups, "conv2d_fwd2");  // y: output channels per group
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Kg, T::BN), p.groups);
  if (relu)
    launch("conv2d_fwd_kernel2", conv2d_fwd_kernel2<T, true>, grid, T::THREADS, 0, stream, x, w, b, y, p);
  else
    launch("conv2d_fwd_kernel2", conv2d_fwd_kernel2<T, false>, grid, T::THREADS, 0, stream, x, w, b, y, p);
}

void conv2d_fwd2(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_fwd2");
  if (p.groups > 65535)
    throw std::invalid_argument("conv2d_fwd2: groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_int32_size(M + Fwd2Large::BM, "N*P*Q plus one tile");  // m_block + row stays an int
  const bool large = igemm_use_large_tile<Fwd2Large>(M, Kg, p.groups);
  if (large)
    launch_fwd2<Fwd2Large>(x, w, b, y, p, relu, stream);
  else
    launch_fwd2<Fwd2Small>(x, w, b, y, p, relu, stream);
}

}  // namespace pycnn
