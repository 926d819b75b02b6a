// The tensor-core block tile shared by the 3xTF32 implicit-GEMM kernels (08 forward,
// 09 backward-data, 10 backward-filter): its shape, the multiply of one BK-slice of shared memory on
// TF32 tensor cores (WMMA) with fp32 accuracy, and the epilogue that takes the
// accumulators out of their fragments. Each kernel keeps its own gathers and
// output indexing, as the CUDA-core kernels do around igemm_tile.cuh.
//
// GEMM view, as igemm_tile.cuh: C[BM x BN] += A[BM x BK] * B[BK x BN] per step,
// shared memory As[kk][m] and Bs[kk][n]. A 16x8 piece of As is a column-major A
// fragment, a 8x16 piece of Bs a row-major B fragment (ldm = the padded row).
//
// 3xTF32: a TF32 tensor core reads 10 of a float's 23 mantissa bits, so one TF32
// product per term would be off by ~1e-3 relative, not the fp32 result. Each
// operand is split, a = a_hi + a_lo with a_hi = tf32(a) and a_lo = tf32(a - a_hi),
// and the product is taken as  a_lo*b_hi + a_hi*b_lo + a_hi*b_hi  (small terms
// first): three tensor-core products that together carry about 21 bits. The
// dropped a_lo*b_lo is ~2^-22 of the product, within fp32's own accumulation
// error over the sums a convolution takes.
#pragma once

#include <stdexcept>
#include <string>

#include "conv2d/igemm_tile.cuh"

#ifdef PYCNN_KERNEL_EMULATION
#include "emulate/emu_wmma.h"  // nvcuda::wmma on the CPU, lane by lane
#else
#include <mma.h>
#endif

namespace pycnn {

namespace wmma = nvcuda::wmma;

// A block tile of BM x BN outputs, BK values of kk per step, split among warps in
// WM x WN pieces of 16x16 fragments. PAD shifts successive rows of the shared
// tiles by 4 banks while keeping ldm a multiple of 16 bytes.
template <int BM_, int BN_, int BK_, int WM_, int WN_>
struct Tf32x3Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int WARPS = WARPS_M * WARPS_N;
  static constexpr int THREADS = 32 * WARPS;
  static constexpr int FM = WM / 16, FN = WN / 16;  // fragments per warp along m and n
  static constexpr int PAD = 4;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 32 == 0 && WN % 16 == 0,
                "warp pieces tile the block; the epilogue stages 32 rows (two fragments) at a time");
  static_assert(BK % 8 == 0 && BK <= 32 && 32 % BK == 0, "whole k-steps of 8; loaders cover whole rows");
  // ldm a multiple of 4 floats; with BK and the k-steps multiples of 8 and the
  // fragment columns multiples of 16, every fragment then starts 32-byte aligned.
  static_assert((BM + PAD) % 4 == 0 && (BN + PAD) % 4 == 0, "WMMA's ldm: a multiple of 16 bytes");
};

using Tf32FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using Tf32FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using Tf32FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

// Shared memory of a kernel: the double-buffered tiles during the main loop;
// afterwards the same bytes hold each warp's epilogue stage (32 rows x 16 columns).
template <class T>
union alignas(32) Tf32x3Smem {
  struct {
    float As[2][T::BK][T::BM + T::PAD];
    float Bs[2][T::BK][T::BN + T::PAD];
  } tiles;
  float stage[T::WARPS][32 * 16];
};

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

template <class T>
__device__ __forceinline__ void tf32x3_fill_zero(Tf32FragC (&acc)[T::FM][T::FN]) {
#pragma unroll
  for (int i = 0; i < T::FM; ++i)
#pragma unroll
    for (int j = 0; j < T::FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);
}

// acc[i][j] += As[:, wm + 16i ..][BK] * Bs[BK][wn + 16j ..] for this warp's piece.
template <class T>
__device__ __forceinline__ void tf32x3_tile_multiply(const float (&As)[T::BK][T::BM + T::PAD],
                                                     const float (&Bs)[T::BK][T::BN + T::PAD],
                                                     Tf32FragC (&acc)[T::FM][T::FN], int wm, int wn) {
#pragma unroll
  for (int kk = 0; kk < T::BK; kk += 8) {
    Tf32FragB b_hi[T::FN], b_lo[T::FN];
#pragma unroll
    for (int j = 0; j < T::FN; ++j) {
      wmma::load_matrix_sync(b_hi[j], &Bs[kk][wn + 16 * j], T::BN + T::PAD);
      tf32_split(b_hi[j], b_lo[j]);
    }
#pragma unroll
    for (int i = 0; i < T::FM; ++i) {
      Tf32FragA a_hi, a_lo;
      wmma::load_matrix_sync(a_hi, &As[kk][wm + 16 * i], T::BM + T::PAD);
      tf32_split(a_hi, a_lo);
#pragma unroll
      for (int j = 0; j < T::FN; ++j) {
        wmma::mma_sync(acc[i][j], a_lo, b_hi[j], acc[i][j]);
        wmma::mma_sync(acc[i][j], a_hi, b_lo[j], acc[i][j]);
        wmma::mma_sync(acc[i][j], a_hi, b_hi[j], acc[i][j]);
      }
    }
  }
}

// The epilogue: two fragments (32 rows) by one (16 columns) at a time go to this
// warp's stage, m fastest; lane l then holds row m = m0 + 16i + l. `row(m)` decodes
// that row once and returns `out(n, v)`, which writes column n of it (or skips a
// row or column past the output). Consecutive lanes write consecutive m: one
// 128-byte store per column where m is the output's contiguous axis.
template <class T, class Row>
__device__ __forceinline__ void tf32x3_store(const Tf32FragC (&acc)[T::FM][T::FN], float* stage,
                                             int lane, int m0, int n0, Row row) {
#pragma unroll
  for (int i = 0; i < T::FM; i += 2) {
    const auto out = row(m0 + 16 * i + lane);
#pragma unroll
    for (int j = 0; j < T::FN; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 32, wmma::mem_col_major);
      wmma::store_matrix_sync(stage + 16, acc[i + 1][j], 32, wmma::mem_col_major);
      __syncwarp();  // every lane's elements are in the stage
#pragma unroll 4
      for (int c = 0; c < 16; ++c) out(n0 + 16 * j + c, stage[lane + 32 * c]);
      __syncwarp();  // read before the next fragments overwrite the stage
    }
  }
}

// TF32 tensor cores need compute capability 8.0. A failed query is not this
// check's to report: the launch that follows reports it.
inline void require_tf32_tensor_cores(const char* launcher) {
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

}  // namespace pycnn
