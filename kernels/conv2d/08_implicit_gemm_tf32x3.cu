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
//      Each operand is split instead into a TF32 part and a TF32 remainder, and
//      each product taken as three tensor-core products ("3xTF32", explained in
//      tf32x3_tile.cuh, which holds this multiply and the epilogue below).
//   3. The epilogue stores each warp's fragments through a small shared-memory
//      stage (their lane layout is unspecified), from where every lane writes one
//      output per channel: 32 consecutive m, one 128-byte store per channel.
// The GPU runs three TF32 products per fp32 product and still comes out ahead
// where its TF32 tensor-core rate exceeds three times its fp32 FFMA rate (an H100
// SXM: 494 dense TF32 TFLOP/s against 67 FP32, NVIDIA's H100 datasheet); whether
// this kernel gets there is for the benchmark to say.
//
// Changed from version 7: the multiply (tensor cores, 3xTF32) and the epilogue
// (staged through shared memory); BK = 16 instead of 8; the gathers are version
// 7's (fwd_gather.cuh), stepping through kk instead of dividing: with the FMAs
// gone to the tensor cores, two integer divisions per gathered element would be
// most of what the CUDA cores issue.
//
// What limits it: WMMA fragments are loaded from shared memory by the compiler's
// choice of instructions (no ldmatrix/mma.sync layout control, no wgmma); the
// loads go through registers (no cp.async); 3xTF32 triples the tensor-core work.
// Needs compute capability 8.0 (A100) or later. Not the default.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"
#include "conv2d/fwd_gather.cuh"
#include "conv2d/tf32x3_tile.cuh"

namespace pycnn {

// Resident blocks per SM asked of the compiler: the large tile takes 210 registers
// unconstrained (one block of 8 warps per SM) and spills when held to 128; the
// small tile spills a little at 128 (four blocks of 4 warps) and takes 154 at
// three blocks' cap of 168. ptxas, sm_90.
template <class T, bool RELU>
__global__ void __launch_bounds__(T::THREADS, T::THREADS >= 256 ? 1 : 3)
conv2d_fwd_kernel8(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  __shared__ Tf32x3Smem<T> smem;
  auto& As = smem.tiles.As;  // As[kk][m]: X
  auto& Bs = smem.tiles.Bs;  // Bs[kk][kg]: the filter

  const int Kg = p.K / p.groups;
  const int PQ = p.P * p.Q;
  const int M = p.N * PQ;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM;
  const int n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x;

  // Version 7's gathers (fwd_gather.cuh): load (global -> registers), store (-> shared).
  FwdGather<T, true> gather(x, w, p, g, m_block, n_block, tid);  // stepping through kk

  // ---- this warp's piece of the tile: rows wm .. wm+WM-1, channels wn .. wn+WN-1
  const int warp = tid / 32, lane = tid % 32;
  const int wm = (warp % T::WARPS_M) * T::WM;
  const int wn = (warp / T::WARPS_M) * T::WN;
  Tf32FragC acc[T::FM][T::FN];
  tf32x3_fill_zero<T>(acc);

  const int steps = (gather.Kdim + T::BK - 1) / T::BK;
  gather.load();
  gather.store(As[0], Bs[0]);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;             // the same for every thread of the block
    if (more) gather.load();      // global loads in flight behind the products
    tf32x3_tile_multiply<T>(As[cur], Bs[cur], acc, wm, wn);
    // The other buffer was last read in the previous step, before that step's barrier.
    if (more) gather.store(As[cur ^ 1], Bs[cur ^ 1]);
    __syncthreads();  // after the last step: every warp is done with the tiles (the stage reuses them)
  }

  // ---- epilogue: y[n_o, g*Kg + kg, pq_o] = act(acc + b)
  const float* b_g = b != nullptr ? b + (size_t)g * Kg : nullptr;
  tf32x3_store<T>(acc, smem.stage[warp], lane, m_block + wm, n_block + wn, [&](int m) {
    const bool m_in = m < M;
    const int n_o = (m_in ? m : 0) / PQ;
    const int pq_o = (m_in ? m : 0) - n_o * PQ;
    float* y_m = y + ((size_t)n_o * p.K + (size_t)g * Kg) * PQ + pq_o;
    return [=](int kg, float v) {
      if (!m_in || kg >= Kg) return;
      v += b_g != nullptr ? b_g[kg] : 0.f;
      if (RELU) v = fmaxf(v, 0.f);
      y_m[(size_t)kg * PQ] = v;
    };
  });
}

// 128x128 with 8 warps of 64x32 (4x2 fragments); 64x64 with 4 warps of 32x32 for
// layers too small to fill the GPU with the large tile (the rule of versions 2 and 7).
using Fwd8Large = Tf32x3Tile<128, 128, 16, 64, 32>;
using Fwd8Small = Tf32x3Tile<64, 64, 16, 32, 32>;

template <class T>
static void launch_fwd8(const float* x, const float* w, const float* b, float* y,
                        const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int M = p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_grid_yz(ceil_div(Kg, T::BN), p.groups, "conv2d_fwd8");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Kg, T::BN), p.groups);
  if (relu)
    launch("conv2d_fwd_kernel8", conv2d_fwd_kernel8<T, true>, grid, T::THREADS, 0, stream, x, w, b, y, p);
  else
    launch("conv2d_fwd_kernel8", conv2d_fwd_kernel8<T, false>, grid, T::THREADS, 0, stream, x, w, b, y, p);
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
}

}  // namespace pycnn
