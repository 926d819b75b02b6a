// The block tile shared by the implicit-GEMM kernels (02, 03, 04, 07, 09, 11; 08
// and 10 through fwd_gather.cuh and tf32x3_tile.cuh): its shape, its constraints,
// and the register-blocked multiply of one BK-slice of shared memory. Each kernel writes its own gathers (the part that differs between
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

#include <cstdint>

#include "common.cuh"

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

// The launchers' choice between a large tile L and a small one: L only when the
// GEMM is at least 96 columns wide (else most of L's columns would be padding)
// and a grid of L tiles still gives every SM a block (else the small tile's
// larger grid fills more of the GPU). M rows, `columns` per group, `groups`.
template <class L>
inline bool igemm_use_large_tile(int64_t M, int64_t columns, int64_t groups) {
  const int64_t blocks = ceil_div(M, (int64_t)L::BM) * ceil_div(columns, (int64_t)L::BN) * groups;
  return columns >= 96 && blocks >= num_sms_of_current_device();
}

// Stepping through a reduction index kk = c*R*S + r*S + s (c: a channel; r, s: a
// filter tap) without dividing: a step of d values of kk is a change (dc, dr, ds)
// with d = dc*R*S + dr*S + ds, ds < S, dr < R, so adding it to (c, r, s) carries at
// most once from s into r and once from r into c. Three divisions make a TapStep
// once; each step after costs a few adds (two divisions per element otherwise).
struct TapStep {
  int dc, dr, ds;
};

__host__ __device__ __forceinline__ TapStep tap_step(int d, int R, int S) {
  return TapStep{d / (R * S), d / S % R, d % S};
}

__host__ __device__ __forceinline__ void tap_advance(int& c, int& r, int& s, TapStep d, int R, int S) {
  s += d.ds;
  r += d.dr;
  c += d.dc;
  if (s >= S) { s -= S; ++r; }
  if (r >= R) { r -= R; ++c; }
}

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

// The same product with the rows and columns a thread owns taken in runs of 4
// (version 7): thread (tm, tn) owns the rows  m = (i/4)*ROWS*4 + tm*4 + i%4
// and the columns n = (j/4)*COLS*4 + tn*4 + j%4, so each run is one 16-byte
// float4 read from shared memory: TM/4 + TN/4 loads per kk instead of TM + TN.
// A warp's 16 values of tm read 64 consecutive floats of a row of As (one
// conflict-free wavefront per 8 threads), and its two values of tn are broadcasts.
template <class T>
__device__ __forceinline__ int igemm_vec4_row(int tm, int i) {
  return (i / 4) * T::ROWS * 4 + tm * 4 + i % 4;
}
template <class T>
__device__ __forceinline__ int igemm_vec4_col(int tn, int j) {
  return (j / 4) * T::COLS * 4 + tn * 4 + j % 4;
}

template <class T>
__device__ __forceinline__ void igemm_tile_multiply_vec4(const float (&As)[T::BK][T::BM + T::PAD],
                                                         const float (&Bs)[T::BK][T::BN + T::PAD],
                                                         float (&acc)[T::TM][T::TN], int tm, int tn) {
  static_assert(T::TM % 4 == 0 && T::TN % 4 == 0, "runs of 4 rows and columns");
  static_assert((T::BM + T::PAD) % 4 == 0 && (T::BN + T::PAD) % 4 == 0,
                "rows of the tiles start on 16-byte boundaries");
#pragma unroll
  for (int kk = 0; kk < T::BK; ++kk) {
    float a[T::TM], b[T::TN];
#pragma unroll
    for (int i = 0; i < T::TM; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(&As[kk][igemm_vec4_row<T>(tm, i)]);
      a[i] = v.x; a[i + 1] = v.y; a[i + 2] = v.z; a[i + 3] = v.w;
    }
#pragma unroll
    for (int j = 0; j < T::TN; j += 4) {
      const float4 v = *reinterpret_cast<const float4*>(&Bs[kk][igemm_vec4_col<T>(tn, j)]);
      b[j] = v.x; b[j + 1] = v.y; b[j + 2] = v.z; b[j + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < T::TM; ++i)
#pragma unroll
      for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// Version 7's double-buffered main loop, for versions 14 and 15 (one __syncthreads a step;
// 07 keeps its own copy: through this helper ptxas spills 4 bytes of its 4x4 tile):
// while the block multiplies buffer `cur`, each thread's global loads for the next
// step are in flight in registers, and go into the other buffer after the multiply.
// G is the pass's gather: load() issues the next step's loads (and moves on a step),
// store(As, Bs) writes what it loaded into one buffer. `steps` must be the same for
// every thread of the block (there are barriers inside); 0 leaves acc as it is.
template <class T, class G>
__device__ __forceinline__ void igemm_pipelined_loop(G& gather, float (&As)[2][T::BK][T::BM + T::PAD],
                                                     float (&Bs)[2][T::BK][T::BN + T::PAD],
                                                     float (&acc)[T::TM][T::TN], int tm, int tn, int steps) {
  if (steps > 0) {
    gather.load();
    gather.store(As[0], Bs[0]);
    __syncthreads();
  }
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;
    if (more) gather.load();                                     // global loads in flight ...
    igemm_tile_multiply_vec4<T>(As[cur], Bs[cur], acc, tm, tn);  // ... behind these FMAs
    // The other buffer was last read in the previous step's multiply, which every
    // thread finished before that step's barrier: safe to overwrite now.
    if (more) gather.store(As[cur ^ 1], Bs[cur ^ 1]);
    __syncthreads();
  }
}

}  // namespace pycnn
