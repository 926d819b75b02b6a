// Checks of emu.h itself, so that a passing emulator means something: the warp
// shuffles return what CUDA's do, a barrier orders shared memory, a missing
// barrier and an out-of-bounds write are seen, and the misuse emu.h promises to
// report (a thread that skips __syncthreads, threads at different barriers, a
// full-mask shuffle in a partial warp) ends the run with exit code 1.
//   emu_selftest            the positive checks, "all ok" at the end
//   emu_selftest deadlock | divergent | partial_warp   must fail with a message
// tests/test_kernel_emulation.py builds and runs every mode.
#include <cstdio>
#include <cstring>
#include <vector>

#include "emulate/emu.h"

constexpr unsigned kFull = 0xffffffffu;

// Four shuffles per thread of a 64-thread block: xor 5, down 3, up 3, from lane 7.
__global__ void shuffle_kernel(int* out) {
  const int v = 1000 + threadIdx.x;
  int* o = out + threadIdx.x * 4;
  o[0] = __shfl_xor_sync(kFull, v, 5);
  o[1] = __shfl_down_sync(kFull, v, 3);
  o[2] = __shfl_up_sync(kFull, v, 3);
  o[3] = __shfl_sync(kFull, v, 7);
}

// Reverses each block's slice through shared memory; correct only with the barrier.
template <bool BARRIER>
__global__ void reverse_kernel(int* data) {
  __shared__ int tmp[256];
  const int base = blockIdx.x * blockDim.x;
  tmp[threadIdx.x] = data[base + threadIdx.x];
  if (BARRIER) __syncthreads();
  data[base + threadIdx.x] = tmp[blockDim.x - 1 - threadIdx.x];
}

__global__ void early_return_kernel(int* out) {
  if (threadIdx.x == 3) return;  // thread 3 never reaches the barrier
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void divergent_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();  // another barrier: undefined in CUDA
  }
  out[threadIdx.x] = 1;
}

__global__ void shuffle_in_partial_warp_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(kFull, 1.f, 1);
}

__global__ void off_by_one_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // the guard should be i < n
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  std::vector<int> ints(256, 0);
  if (!std::strcmp(mode, "deadlock")) {
    emu::launch(dim3(1), dim3(64), [&] { early_return_kernel(ints.data()); });
    return 0;  // not reached: the emulator reports the deadlock and exits 1
  }
  if (!std::strcmp(mode, "divergent")) {
    emu::launch(dim3(1), dim3(64), [&] { divergent_kernel(ints.data()); });
    return 0;
  }
  if (!std::strcmp(mode, "partial_warp")) {
    std::vector<float> out(48);
    emu::launch(dim3(1), dim3(48), [&] { shuffle_in_partial_warp_kernel(out.data()); });
    return 0;
  }

  emu::launch(dim3(1), dim3(64), [&] { shuffle_kernel(ints.data()); });
  int wrong = 0;
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, base = 1000 + t - lane;
    const int want[4] = {base + (lane ^ 5), lane + 3 < 32 ? 1000 + t + 3 : 1000 + t,
                         lane >= 3 ? 1000 + t - 3 : 1000 + t, base + 7};
    for (int k = 0; k < 4; ++k) wrong += ints[t * 4 + k] != want[k];
  }
  emu::report(wrong == 0, "shuffles xor/down/up/idx in two warps: %d wrong", wrong);

  for (bool barrier : {true, false}) {
    std::vector<int> data(3 * 96);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int>(i);
    emu::launch(dim3(3), dim3(96), [&] {
      barrier ? reverse_kernel<true>(data.data()) : reverse_kernel<false>(data.data());
    });
    int bad = 0;
    for (int i = 0; i < 3 * 96; ++i) bad += data[i] != (i / 96) * 96 + 95 - i % 96;
    emu::report(barrier ? bad == 0 : bad > 0, "shared-memory reversal %s: %d wrong%s",
                barrier ? "with the barrier" : "without the barrier", bad,
                barrier ? "" : " (must be > 0: the schedule exposes the race)");
  }

  emu::Guarded<float> out(300, 0.f);
  emu::launch(dim3(2), dim3(256), [&] { off_by_one_kernel(out.data(), 300); });
  emu::report(!out.intact(), "an off-by-one write past the end is seen by the guard zone");
  return emu::finish();
}
