// The block tile shared by the implicit-GEMM kernels (02, 03, 04): its shape,
// its constraints, and the register-blocked multiply of one BK-slice of shared
// memory. Each kernel writes its own gathers (the part that differs between
// forward, backward-data and backward-filter) next to its own index math.
//
// GEMM view: C[BM x BN] += A[BM x BK] * B[BK x BN] per step. Shared memory holds
// As[kk][m] and Bs[kk][n] (k-major: a thread reads a row of each per kk).
// Thread t of the block owns the rows  m = tm + i*ROWS  (i < TM)
//                         and columns  n = tn + j*COLS  (j < TN)
// with tm = t % ROWS, tn = t / ROWS: rows are strided, not consecutive, so that
// consecutive threads own consecutive m. Shared-memory reads of As are then
// conflict-free, and the epilogue's global stores (m is the contiguous output
// axis in forward and backward-data) coalesce.
#pragma once

#include <cuda_runtime.h>

namespace pycnn {

// SM count of the current device (132 on an H100 SXM), for launchers that size
// their grid to fill the GPU; 132 if the query fails (the launch then reports).
inline int num_sms_of_current_device() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();  // clear the error state; it is not this launcher's to report
    return 132;
  }
  return sms;
}

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct IgemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int ROWS = BM / TM;          // threads along M
  static constexpr int COLS = BN / TN;          // threads along N
  static constexpr int THREADS = ROWS * COLS;
  // Row padding of the shared tiles: loaders that store k-fastest (kk = t % BK)
  // hit banks (kk*(BM+PAD) + m) % 32, distinct for BK=8 and 4 consecutive m
  // only with PAD = 4 (BM a multiple of 32).
  static constexpr int PAD = 4;
  static_assert(BM % TM == 0 && BN % TN == 0, "the register block TMxTN must divide the tile");
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps, at most 1024 threads");
  static_assert(BM % 32 == 0 && BN % 32 == 0, "tiles are whole warps wide (bank-conflict math)");
  static_assert(THREADS % BK == 0, "k-fastest loaders: THREADS/BK rows of the tile per pass");
  static_assert((BM * BK) % THREADS == 0 && (BN * BK) % THREADS == 0,
                "every thread loads the same number of elements of each tile");
  static_assert(BK <= 32 && 32 % BK == 0, "k-fastest loaders: a warp covers whole BK rows");
};

// acc[i][j] += sum_kk As[kk][tm + i*ROWS] * Bs[kk][tn + j*COLS]
template <class T>
__device__ __forceinline__ void igemm_tile_multiply(const float (&As)[T::BK][T::BM + T::PAD],
                                                    const float (&Bs)[T::BK][T::BN + T::PAD],
                                                    float (&acc)[T::TM][T::TN], int tm, int tn) {
#pragma unroll
  for (int kk = 0; kk < T::BK; ++kk) {
    float a[T::TM], b[T::TN];
#pragma unroll
    for (int i = 0; i < T::TM; ++i) a[i] = As[kk][tm + i * T::ROWS];
#pragma unroll
    for (int j = 0; j < T::TN; ++j) b[j] = Bs[kk][tn + j * T::COLS];
#pragma unroll
    for (int i = 0; i < T::TM; ++i)
#pragma unroll
      for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

}  // namespace pycnn
