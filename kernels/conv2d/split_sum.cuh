// The second half of a deterministic split reduction, shared by the backward-filter
// versions that split N*P*Q (04_implicit_gemm_bwd_filter.cu, 06_depthwise.cu,
// 10_implicit_gemm_bwd_filter_tf32x3.cu, 15_implicit_gemm_bwd_filter_pipelined.cu,
// 16_implicit_gemm_bwd_filter_warp_tiled.cu):
// every split stored its partial sums as one row of workspace, and this adds the rows
// in split order, so the result has the same bits on every run. Below it, the tile
// rule and the whole split-K launch of versions 4, 10, 15 and 16.
#pragma once

#include <stdexcept>
#include <string>

#include "common.cuh"
#include "conv2d/conv2d.h"

namespace pycnn {

// out[i] = sum over s = 0 .. splits-1 of workspace[s * total + i], in that order.
// Grid-stride over i: launch with grid_for(total, 256) blocks of 256 threads.
static __global__ void conv2d_split_sum_kernel(const float* __restrict__ workspace,
                                               float* __restrict__ out, int total, int splits) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += workspace[(size_t)s * total + i];
    out[i] = sum;
  }
}

// The tile of the split-K backward-filter versions 4, 10, 15 and 16: the large one only
// when the GEMM is at least 96 wide both ways (K/groups channels, C/groups*R*S taps).
inline bool bwd_filter4_large(const Conv2dParams& p) {
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  return Kg >= 96 && Cg * p.R * p.S >= 96;
}

// The checks of the split-K backward-filter launchers (versions 4, 10, 15 and 16), before
// anything is launched: the shape, the split count (grid z = splits * groups), the
// indexing limit (each split's chunk of N*P*Q is rounded up to whole steps of `bk`, and
// version 15 steps its rows one step past the end), and the deterministic mode's workspace.
inline void check_split_k_bwd_filter(const Conv2dParams& p, int splits, bool deterministic,
                                     const float* workspace, int bk, const char* launcher) {
  check_conv2d_params(p, launcher);
  if (splits < 1 || (int64_t)splits * p.groups > 65535)
    throw std::invalid_argument(std::string(launcher) + ": splits must be >= 1 with splits*groups <= "
                                "65535, got splits=" + std::to_string(splits) +
                                " groups=" + std::to_string(p.groups));
  check_int32_size((int64_t)p.N * p.P * p.Q + ((int64_t)splits + 1) * bk, "N*P*Q plus the split rounding");
  if (deterministic && splits > 1 && workspace == nullptr)
    throw std::invalid_argument(std::string(launcher) + ": deterministic with splits=" +
                                std::to_string(splits) + " needs a workspace of " +
                                std::to_string(conv2d_bwd_filter4_workspace_bytes(p, splits, true)) +
                                " bytes, got a null pointer");
}

// A split-K backward-filter kernel (versions 4, 10, 15 and 16): (x, dy, out, p, chunk,
// split_stride), split s writing at out + s * split_stride.
using SplitKFilterKernel = void (*)(const float*, const float*, float*, Conv2dParams, int, int);

// The launch the split-K versions share, for a tile T (BM crs rows, BN channels,
// BK rows of the reduction per step). Grid z = splits * groups; each split takes a
// chunk of N*P*Q rounded up to whole BK steps. One split stores straight into dw;
// several either atomicAdd into dw zeroed first (`atomic`, the kernel's ATOMIC
// instantiation) or, deterministic, store per-split sums into the workspace
// (`store`), which conv2d_split_sum_kernel adds in split order.
template <class T>
void launch_split_k_bwd_filter(SplitKFilterKernel store, SplitKFilterKernel atomic, const float* x,
                               const float* dy, float* dw, float* workspace, const Conv2dParams& p,
                               int splits, bool deterministic, cudaStream_t stream,
                               const char* kernel, const char* launcher) {
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int total = p.K * Cg * p.R * p.S;
  const int64_t npq = (int64_t)p.N * p.P * p.Q;
  const int chunk = (int)(ceil_div(ceil_div(npq, (int64_t)splits), (int64_t)T::BK) * T::BK);
  check_grid_yz(ceil_div(Kg, T::BN), (int64_t)splits * p.groups, launcher);
  const dim3 grid(ceil_div(Cg * p.R * p.S, T::BM), ceil_div(Kg, T::BN), splits * p.groups);
  if (splits == 1) {
    launch(kernel, store, grid, T::THREADS, 0, stream, x, dy, dw, p, chunk, 0);
  } else if (deterministic) {
    launch(kernel, store, grid, T::THREADS, 0, stream, x, dy, workspace, p, chunk, total);
    const int block = 256;
    launch("conv2d_split_sum_kernel", conv2d_split_sum_kernel, grid_for(total, block), block, 0,
           stream, workspace, dw, total, splits);
    return;
  } else {
    const cudaError_t err = cudaMemsetAsync(dw, 0, (size_t)total * sizeof(float), stream);
    if (err != cudaSuccess)
      throw std::runtime_error(std::string(launcher) + ": zeroing dw: " + cudaGetErrorString(err));
    launch((std::string(kernel) + "<atomic>").c_str(), atomic, grid, T::THREADS, 0, stream, x, dy, dw, p, chunk, 0);
  }
}

}  // namespace pycnn
