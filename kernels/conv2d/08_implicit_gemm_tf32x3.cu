// conv2d forward, version 8: the implicit GEMM on tensor cores (WMMA, TF32), with
// each product split in three so that the result keeps fp32 accuracy ("3xTF32").
//
// What it does: the GEMM of versions 2 and 7 (read version 2's header first),
//   Y[m][kg] = sum_kk X[m][kk] * Wt[kk][kg],  m = n*P*Q + op*Q + oq,  kk = c*R*S + r*S + s,
// with version 7's double-buffered gathers into shared memory (BK = 16 here), but
// the multiply runs on the tensor cores instead of the CUDA cores:
//   1. Each warp owns a WM x WN piece of the block tile, as a grid of 16x16
//      accumulator fragments (wmma::fragment), and for every 8 values of kk loads
//      16x8 fragments of X and 8x16 fragments of W from shared memory.
//   2. A TF32 tensor core reads 10 of a float's 23 mantissa bits, so one TF32
//      product per term would be off by ~1e-3 relative: not the fp32 result.
//      Each operand is split instead, a = a_hi + a_lo with a_hi = tf32(a) and
//      a_lo = tf32(a - a_hi), and the product is taken as
//          a_lo*b_hi + a_hi*b_lo + a_hi*b_hi
//      (small terms first), three tensor-core products that together carry
//      about 21 bits; the dropped a_lo*b_lo is ~2^-22 of the product. That is
//      within fp32's own accumulation error over the sums pycnn's layers take.
//   3. The epilogue stores each warp's fragments through a small shared-memory
//      stage (their lane layout is unspecified), from where every lane writes one
//      output per channel: 32 consecutive m, one 128-byte store per channel.
// The GPU runs three TF32 products per fp32 product and still comes out ahead
// where its TF32 tensor-core rate exceeds three times its fp32 FFMA rate (an H100
// SXM: 494 dense TF32 TFLOP/s against 67 FP32, NVIDIA's H100 datasheet); whether
// this kernel gets there is for the benchmark to say.
//
// Changed from version 7: the multiply (tensor cores, 3xTF32) and the epilogue
// (staged through shared memory); BK = 16 instead of 8. The gathers are version 7's.
//
// What limits it: WMMA fragments are loaded from shared memory by the compiler's
// choice of instructions (no ldmatrix/mma.sync layout control, no wgmma); the
// gather still decodes kk with integer divisions; 3xTF32 triples the tensor-core
// work. Needs compute capability 8.0 (A100) or later. Not the default.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

#ifndef PYCNN_KERNEL_EMULATION
#include <mma.h>
#endif

namespace pycnn {

// A block tile of BM x BN outputs, BK values of kk per step, split among warps in
// WM x WN pieces of 16x16 fragments. PAD keeps every fragment's first row on a
// 32-byte boundary (WMMA's requirement) while shifting successive rows by 4 banks.
template <int BM_, int BN_, int BK_, int WM_, int WN_>
struct Tf32x3Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int FM = WM / 16, FN = WN / 16;  // fragments per warp along m and kg
  static constexpr int PAD = 4;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 32 == 0 && WN % 16 == 0,
                "warp pieces tile the block; the epilogue stages 32 rows (two fragments) at a time");
  static_assert(BK % 8 == 0 && BK <= 32 && 32 % BK == 0, "whole k-steps of 8; k-fastest filter loader");
  static_assert(THREADS % BM == 0 && BK % (THREADS / BM) == 0, "X loader: whole rows of the tile");
  static_assert(BN % (THREADS / BK) == 0, "filter loader: whole columns of the tile");
  // ldm a multiple of 4 floats; with BK and the k-steps multiples of 8 and the
  // fragment columns multiples of 16, every fragment then starts 32-byte aligned.
  static_assert((BM + PAD) % 4 == 0 && (BN + PAD) % 4 == 0, "WMMA's ldm: a multiple of 16 bytes");
};

namespace wmma = nvcuda::wmma;

using Tf32FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using Tf32FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using Tf32FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

// hi <- tf32(v), lo <- tf32(v - tf32(v)), element by element (the same for every
// element, as a fragment's lane layout is unspecified).
template <class Frag>
__device__ __forceinline__ void tf32_split(Frag& hi, Frag& lo) {
#pragma unroll
  for (int t = 0; t < hi.num_elements; ++t) {
    const float v = hi.x[t];
    hi.x[t] = wmma::__float_to_tf32(v);
    lo.x[t] = wmma::__float_to_tf32(v - hi.x[t]);
  }
}

// Resident blocks per SM asked of the compiler: the large tile takes 236 registers
// unconstrained (one block of 8 warps per SM) and spills when held to 128; the
// small tile fits 128 (four blocks of 4 warps). ptxas, sm_90.
template <class T, bool RELU>
__global__ void __launch_bounds__(T::THREADS, T::THREADS >= 256 ? 1 : 4)
conv2d_fwd_kernel8(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  constexpr int A_STEP = T::THREADS / T::BM;  // X loader: m-fastest, as version 7's
  constexpr int A_LOADS = T::BK / A_STEP;
  constexpr int B_STEP = T::THREADS / T::BK;  // filter loader: k-fastest
  constexpr int B_LOADS = T::BN / B_STEP;
  constexpr int WARPS = T::WARPS_M * T::WARPS_N;

  // Shared memory: the double-buffered tiles during the main loop; afterwards the
  // same bytes hold each warp's epilogue stage (32 rows x 16 channels, m fastest).
  union alignas(32) Smem {
    struct {
      float As[2][T::BK][T::BM + T::PAD];  // As[kk][m]: X, read as col-major 16x8 fragments
      float Bs[2][T::BK][T::BN + T::PAD];  // Bs[kk][kg]: the filter, row-major 8x16 fragments
    } tiles;
    float stage[WARPS][32 * 16];
  };
  __shared__ Smem smem;
  auto& As = smem.tiles.As;
  auto& Bs = smem.tiles.Bs;

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, RS = p.R * p.S, HW = p.H * p.W;
  const int M = p.N * PQ;
  const int Kdim = Cg * RS;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;
  const int n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x;

  // ---- X loader: this thread's row m, decoded once (version 7's gather).
  const int a_m = tid % T::BM;
  const int a_k = tid / T::BM;
  const int m_ld = m_block + a_m;
  const bool m_ok = m_ld < M;
  const int m_safe = m_ok ? m_ld : 0;
  const int n_img = m_safe / PQ;
  const int pq = m_safe - n_img * PQ;
  const int op = pq / p.Q;
  const int oq = pq - op * p.Q;
  const int h0 = op * p.stride_h - p.pad_top;
  const int w0 = oq * p.stride_w - p.pad_left;
  const float* x_m = x + ((size_t)n_img * p.C + (size_t)g * Cg) * HW;

  // ---- filter loader
  const int b_k = tid % T::BK;
  const int b_n = tid / T::BK;
  const float* w_g = w + (size_t)g * Kg * Kdim;

  float a_next[A_LOADS], b_next[B_LOADS];
  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
      const int kk = k0 + a_k + i * A_STEP;
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
      a_next[i] = v;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
      const int kg = n_block + b_n + i * B_STEP;
      const int kk = k0 + b_k;
      b_next[i] = (kg < Kg && kk < Kdim) ? w_g[(size_t)kg * Kdim + kk] : 0.f;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[buf][a_k + i * A_STEP][a_m] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[buf][b_k][b_n + i * B_STEP] = b_next[i];
  };

  // ---- this warp's piece of the tile: rows wm .. wm+WM-1, channels wn .. wn+WN-1
  const int warp = tid / 32, lane = tid % 32;
  const int wm = (warp % T::WARPS_M) * T::WM;
  const int wn = (warp / T::WARPS_M) * T::WN;
  Tf32FragC acc[T::FM][T::FN];
#pragma unroll
  for (int i = 0; i < T::FM; ++i)
#pragma unroll
    for (int j = 0; j < T::FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int steps = (Kdim + T::BK - 1) / T::BK;
  load(0);
  store(0);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;  // the same for every thread of the block
    if (more) load((step + 1) * T::BK);  // global loads in flight behind the products
#pragma unroll
    for (int kk = 0; kk < T::BK; kk += 8) {
      Tf32FragB b_hi[T::FN], b_lo[T::FN];
#pragma unroll
      for (int j = 0; j < T::FN; ++j) {
        wmma::load_matrix_sync(b_hi[j], &Bs[cur][kk][wn + 16 * j], T::BN + T::PAD);
        tf32_split(b_hi[j], b_lo[j]);
      }
#pragma unroll
      for (int i = 0; i < T::FM; ++i) {
        Tf32FragA a_hi, a_lo;
        wmma::load_matrix_sync(a_hi, &As[cur][kk][wm + 16 * i], T::BM + T::PAD);
        tf32_split(a_hi, a_lo);
#pragma unroll
        for (int j = 0; j < T::FN; ++j) {
          wmma::mma_sync(acc[i][j], a_lo, b_hi[j], acc[i][j]);
          wmma::mma_sync(acc[i][j], a_hi, b_lo[j], acc[i][j]);
          wmma::mma_sync(acc[i][j], a_hi, b_hi[j], acc[i][j]);
        }
      }
    }
    // The other buffer was last read in the previous step, before that step's barrier.
    if (more) store(cur ^ 1);
    __syncthreads();  // after the last step: every warp is done with the tiles (the stage reuses them)
  }

  // ---- epilogue: y[n_o, g*Kg + kg, pq_o] = act(acc + b). Two fragments (32 rows)
  // by one (16 channels) at a time go to this warp's stage, m fastest; lane l then
  // writes row m = ... + l of each of the 16 channels.
  float* stage = smem.stage[warp];
#pragma unroll
  for (int i = 0; i < T::FM; i += 2) {
    const int m = m_block + wm + 16 * i + lane;
    const bool m_in = m < M;
    const int m_safe_o = m_in ? m : 0;
    const int n_o = m_safe_o / PQ;
    const int pq_o = m_safe_o - n_o * PQ;
    float* y_m = y + ((size_t)n_o * p.K + (size_t)g * Kg) * PQ + pq_o;
#pragma unroll
    for (int j = 0; j < T::FN; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 32, wmma::mem_col_major);
      wmma::store_matrix_sync(stage + 16, acc[i + 1][j], 32, wmma::mem_col_major);
      __syncwarp();  // every lane's elements are in the stage
#pragma unroll 4
      for (int c = 0; c < 16; ++c) {
        const int kg = n_block + wn + 16 * j + c;
        if (!m_in || kg >= Kg) continue;
        float v = stage[lane + 32 * c] + (b != nullptr ? b[g * Kg + kg] : 0.f);
        if (RELU) v = fmaxf(v, 0.f);
        y_m[(size_t)kg * PQ] = v;
      }
      __syncwarp();  // read before the next fragments overwrite the stage
    }
  }
}

// 128x128 with 8 warps of 64x32 (4x2 fragments); 64x64 with 4 warps of 32x32 for
// layers too small to fill the GPU with the large tile (the rule of versions 2 and 7).
using Fwd8Large = Tf32x3Tile<128, 128, 16, 64, 32>;
using Fwd8Small = Tf32x3Tile<64, 64, 16, 32, 32>;

#ifndef PYCNN_KERNEL_EMULATION

// TF32 tensor cores need compute capability 8.0. A failed query is not this
// check's to report: the launch that follows reports it.
static void require_tf32_tensor_cores(const char* launcher) {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (major < 8)
    throw std::runtime_error(std::string(launcher) + ": needs TF32 tensor cores (compute capability "
                             "8.0 or later); this GPU is " + std::to_string(major) + "." +
                             std::to_string(minor));
}

template <class T>
static void launch_fwd8(const float* x, const float* w, const float* b, float* y,
                        const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int M = p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_grid_yz(ceil_div(Kg, T::BN), p.groups, "conv2d_fwd8");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Kg, T::BN), p.groups);
  if (relu)
    conv2d_fwd_kernel8<T, true><<<grid, T::THREADS, 0, stream>>>(x, w, b, y, p);
  else
    conv2d_fwd_kernel8<T, false><<<grid, T::THREADS, 0, stream>>>(x, w, b, y, p);
}

void conv2d_fwd8(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_fwd8");
  if (p.groups > 65535)
    throw std::invalid_argument("conv2d_fwd8: groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_int32_size(M + Fwd8Large::BM, "N*P*Q plus one tile");
  require_tf32_tensor_cores("conv2d_fwd8");
  if (igemm_use_large_tile<Fwd8Large>(M, Kg, p.groups))
    launch_fwd8<Fwd8Large>(x, w, b, y, p, relu, stream);
  else
    launch_fwd8<Fwd8Small>(x, w, b, y, p, relu, stream);
  PYCNN_CHECK_LAUNCH("conv2d_fwd_kernel8");
}

#endif  // PYCNN_KERNEL_EMULATION

}  // namespace pycnn
