// conv2d forward, version 7: version 2's implicit GEMM with the tiles double
// buffered, float4 reads of shared memory, and float4 stores of y.
//
// What it does: the same GEMM as version 2 (read its header first),
//   Y[m][kg] = sum_kk X[m][kk] * Wt[kk][kg],  m = n*P*Q + op*Q + oq,  kk = c*R*S + r*S + s,
// gathered from x and w into shared-memory tiles, a TM x TN register block per
// thread, bias and ReLU in the epilogue. Three things change:
//   1. Two buffers per tile. While the block multiplies the tiles of step t, each
//      thread has already issued its global loads for step t+1 into registers;
//      it stores them into the other buffer after the multiply. The loads' latency
//      hides behind the FMAs of the same block, and one __syncthreads per step
//      suffices (version 2 needs two: before and after the multiply).
//   2. A thread owns its rows and columns in runs of 4 (igemm_tile_multiply_vec4):
//      one float4 read of shared memory fetches 4 operands, so a step of BK
//      costs TM/4 + TN/4 shared loads per kk instead of TM + TN (8x8: 4, not 16).
//   3. The epilogue stores 4 consecutive outputs of a channel as one float4 when
//      P*Q is a multiple of 4 (the 4 then lie in one image plane, 16-byte aligned).
//
// Changed from version 2: the three points above. The gathers, the index math
// and the tiles' shapes are the same (the gathers, split into a load and a store
// half, are in fwd_gather.cuh, shared with version 8); so is the result, up to
// float rounding.
//
// What limits it: the gather still decodes kk -> (c, r, s) with two integer
// divisions per element; the loads go through registers (no cp.async straight to
// shared memory, no TMA); the FMAs are fp32 on the CUDA cores (no tensor cores);
// 7x7 layers (P*Q = 49) keep scalar stores. Not the default until a GPU run shows it beats
// version 2 (pycnn bench times both).
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/fwd_gather.cuh"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

// Resident blocks per SM asked of the compiler: 2 caps the 8x8 tile at 128
// registers (it would take 129 otherwise, leaving room for one block of 256
// threads); 4 keeps the 4x4 tile at 64, as version 2's.
template <class T, bool RELU>
__global__ void __launch_bounds__(T::THREADS, T::TM * T::TN >= 64 ? 2 : 4)
conv2d_fwd_kernel7(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  // Rows start on 16-byte boundaries (the float4 reads): the struct carries the alignment.
  struct alignas(16) Tiles {
    float As[2][T::BK][T::BM + T::PAD];
    float Bs[2][T::BK][T::BN + T::PAD];
  };
  __shared__ Tiles tiles;
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;

  const int Kg = p.K / p.groups;
  const int PQ = p.P * p.Q;
  const int M = p.N * PQ;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;
  const int n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x;

  // Version 2's gathers, as load (global -> registers) and store (-> shared) halves.
  FwdGather<T, false> gather(x, w, p, g, m_block, n_block, tid);  // dividing, as version 2
  const int tm = tid % T::ROWS, tn = tid / T::ROWS;
  float acc[T::TM][T::TN] = {};

  const int steps = (gather.Kdim + T::BK - 1) / T::BK;
  gather.load();
  gather.store(As[0], Bs[0]);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;            // the same for every thread of the block
    if (more) gather.load();     // global loads in flight ...
    igemm_tile_multiply_vec4<T>(As[cur], Bs[cur], acc, tm, tn);  // ... behind these FMAs
    // The other buffer was last read in the previous step's multiply, which every
    // thread finished before that step's barrier: safe to overwrite now.
    if (more) gather.store(As[cur ^ 1], Bs[cur ^ 1]);
    __syncthreads();
  }

  // ---- epilogue: y[n_o, g*Kg + kg, pq_o] = act(acc + b), 4 rows (4 consecutive m) at a time.
  const bool vec_store = PQ % 4 == 0 && (reinterpret_cast<uintptr_t>(y) & 15) == 0;
#pragma unroll
  for (int i = 0; i < T::TM; i += 4) {
    const int m = m_block + igemm_vec4_row<T>(tm, i);  // a multiple of 4, as BM, ROWS*4, tm*4 are
    if (m >= M) continue;
    const int n_o = m / PQ;
    const int pq_o = m - n_o * PQ;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int kg = n_block + igemm_vec4_col<T>(tn, j);
      if (kg >= Kg) continue;
      const int k = g * Kg + kg;
      const float bias = b != nullptr ? b[k] : 0.f;
      float v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[e] = acc[i + e][j] + bias;
        if (RELU) v[e] = fmaxf(v[e], 0.f);
      }
      float* dst = y + ((size_t)n_o * p.K + k) * PQ + pq_o;
      if (vec_store) {  // PQ % 4 == 0: m .. m+3 lie in image n_o, and dst is 16-byte aligned
        if (m + 3 < M) {
          *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
          continue;
        }
      }
      // Scalar: rows past M are skipped, and m+e may start the next image.
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int me = m + e;
        if (me >= M) break;
        const int ne = me / PQ;
        y[((size_t)ne * p.K + k) * PQ + (me - ne * PQ)] = v[e];
      }
    }
  }
}

// The tiles of version 2: 128x128 with 8x8 per thread, and 64x64 with 4x4 for
// layers too small to fill the GPU with the large one.
using Fwd7Large = IgemmTile<128, 128, 8, 8, 8>;
using Fwd7Small = IgemmTile<64, 64, 8, 4, 4>;

// Launchers.
template <class T>
static void launch_fwd7(const float* x, const float* w, const float* b, float* y,
                        const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int M = p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_grid_yz(ceil_div(Kg, T::BN), p.groups, "conv2d_fwd7");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Kg, T::BN), p.groups);
  if (relu)
    launch("conv2d_fwd_kernel7", conv2d_fwd_kernel7<T, true>, grid, T::THREADS, 0, stream, x, w, b, y, p);
  else
    launch("conv2d_fwd_kernel7", conv2d_fwd_kernel7<T, false>, grid, T::THREADS, 0, stream, x, w, b, y, p);
}

void conv2d_fwd7(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_fwd7");
  if (p.groups > 65535)
    throw std::invalid_argument("conv2d_fwd7: groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_int32_size(M + Fwd7Large::BM, "N*P*Q plus one tile");
  if (igemm_use_large_tile<Fwd7Large>(M, Kg, p.groups))  // the same rule as version 2
    launch_fwd7<Fwd7Large>(x, w, b, y, p, relu, stream);
  else
    launch_fwd7<Fwd7Small>(x, w, b, y, p, relu, stream);
}

}  // namespace pycnn
