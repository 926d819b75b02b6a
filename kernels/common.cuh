// Shared by every kernel: launch checking, ceil_div, the indexing limit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace pycnn {

// A failed launch becomes a std::runtime_error naming the kernel, which pybind11
// turns into RuntimeError.
inline void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(kernel) + ": " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

// The one way a launcher starts a kernel:
//   launch("relu_fwd_kernel1", relu_fwd_kernel1, grid, block, smem, stream, x, y, n, vec);
// is relu_fwd_kernel1<<<grid, block, smem, stream>>>(x, y, n, vec) followed by the
// launch check. Built for the CPU emulator (kernels/emulate/emu.h, which defines
// PYCNN_KERNEL_EMULATION), the same call runs the grid on CPU fibers under the
// emulator's checks, so the launcher code that chose the tile, grid and split
// count is what the emulator tests, not a copy of it.
#if defined(PYCNN_KERNEL_EMULATION) || defined(__CUDACC__)
template <class... Params, class... Args>
inline void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
#ifdef PYCNN_KERNEL_EMULATION
  (void)stream;  // one stream: launches run in program order
  ::emu::launch(name, grid, block, smem, reinterpret_cast<const void*>(kernel),
                [&] { kernel(args...); });
#else
  kernel<<<grid, block, smem, stream>>>(static_cast<Args&&>(args)...);
#endif
  check_launch(name);
}
#endif

// 16 bytes to global memory at dst (16-byte aligned) as one st.global.v4.f32 (STG.128).
// The C++ form, *reinterpret_cast<float4*>(dst) = make_float4(...), is what a reader
// expects, but nvcc 13.0 compiled it into four STG.32 in versions 7 and 12 (their SASS
// and ncu's store requests on an H200 agree), so kernels that store vectors say it here.
#if defined(PYCNN_KERNEL_EMULATION) || defined(__CUDACC__)
__device__ __forceinline__ void store_global_v4(float* dst, float a, float b, float c, float d) {
#ifdef PYCNN_KERNEL_EMULATION
  *reinterpret_cast<float4*>(dst) = make_float4(a, b, c, d);  // checked as one 16-byte access
#else
  asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
#endif
}
#endif

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Kernels index with 32-bit ints. A launcher calls this for every tensor it
// touches; larger tensors get a clear error instead of a silent overflow.
inline void check_int32_size(int64_t numel, const char* what) {
  if (numel > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(numel) +
                                " elements exceed the 32-bit indexing limit of 2^31-1");
  }
}

// CUDA limits gridDim.y and gridDim.z to 65535 (gridDim.x to 2^31-1). A launcher whose
// grid grows in y or z with a tensor size calls this before the launch, so that a shape
// past the limit is a ValueError naming it rather than a failed launch.
inline void check_grid_yz(int64_t y, int64_t z, const char* launcher) {
  if (y > 65535 || z > 65535) {
    throw std::invalid_argument(std::string(launcher) + ": grid y=" + std::to_string(y) +
                                ", z=" + std::to_string(z) +
                                " exceeds CUDA's limit of 65535 blocks in y and z");
  }
}

// A grid-stride loop's grid: enough blocks to fill the GPU, not one per element.
inline int grid_for(int64_t n, int block, int max_blocks = 65535 * 8) {
  int64_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace pycnn
