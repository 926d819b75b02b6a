// Checks of emu.h itself, so that a passing emulator means something: the warp
// shuffles return what CUDA's do, a barrier orders shared memory, a missing
// barrier and an out-of-bounds write are seen, and the misuse emu.h promises to
// report (a thread that skips __syncthreads, threads at different barriers, a
// full-mask shuffle in a partial warp) ends the run with exit code 1. The same
// for emu_wmma.h: the product of TF32 inputs, the rounding of __float_to_tf32,
// the __syncwarp a fragment's stage needs, and misaligned or divergent calls.
//   emu_selftest            the positive checks, "all ok" at the end
//   emu_selftest deadlock | divergent | partial_warp | wmma_misaligned | wmma_divergent
//                           must fail with a message
// tests/test_kernel_emulation.py builds and runs every mode.
#include <cstdio>
#include <cstring>
#include <vector>

#include "emulate/emu.h"
#include "emulate/emu_wmma.h"

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

namespace wmma = nvcuda::wmma;

// One warp: d = a (16x8, col-major) * b (8x16, row-major) + c, stored row-major.
__global__ void wmma_product_kernel(const float* a, const float* b, float* d) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
  wmma::fill_fragment(fc, 0.5f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

// One warp stores a fragment of ones to shared memory, then lane l sums the 8
// floats at 8l, most of them other lanes' elements: 8 only past the __syncwarp.
template <bool SYNC>
__global__ void wmma_stage_kernel(float* out) {
  alignas(32) __shared__ float stage[256];
  for (int i = threadIdx.x; i < 256; i += 32) stage[i] = 0.f;
  __syncwarp();
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> f;
  wmma::fill_fragment(f, 1.f);
  wmma::store_matrix_sync(stage, f, 16, wmma::mem_row_major);
  if (SYNC) __syncwarp();
  float sum = 0.f;
  for (int i = 0; i < 8; ++i) sum += stage[threadIdx.x * 8 + i];
  out[threadIdx.x] = sum;
}

__global__ void wmma_misaligned_kernel(const float* a) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + 4, 8);  // 16 bytes past a 32-byte boundary
}

__global__ void wmma_divergent_kernel(const float* a) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  if (threadIdx.x < 31) wmma::load_matrix_sync(fa, a, 8);  // lane 31 never comes
}

static void wmma_checks() {
  // TF32 rounding: ties away from zero, 10 mantissa bits.
  const float ulp = std::ldexp(1.f, -10), half = std::ldexp(1.f, -11), tiny = std::ldexp(1.f, -20);
  const bool rounds = wmma::__float_to_tf32(1.f + half) == 1.f + ulp &&
                      wmma::__float_to_tf32(1.f + half - tiny) == 1.f &&
                      wmma::__float_to_tf32(-(1.f + half)) == -(1.f + ulp) &&
                      wmma::__float_to_tf32(1.f + ulp + tiny) == 1.f + ulp;
  emu::report(rounds, "__float_to_tf32 rounds to nearest, ties away from zero");

  // The product reads only the TF32 part of its inputs: 1 + 2^-20 counts as 1.
  alignas(32) static float a[16 * 16], b[16 * 16], d[16 * 16];
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 8; ++k) a[m + 16 * k] = (m == 3 && k == 5) ? 1.f + tiny : float(m - k);
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 16; ++n) b[16 * k + n] = float((k * 3 + n) % 7) - 2.f;
  emu::launch(dim3(1), dim3(32), [&] { wmma_product_kernel(a, b, d); });
  int wrong = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float want = 0.5f;
      for (int k = 0; k < 8; ++k) want += ((m == 3 && k == 5) ? 1.f : float(m - k)) * b[16 * k + n];
      wrong += d[16 * m + n] != want;
    }
  emu::report(wrong == 0, "wmma 16x8 * 8x16 + c on TF32 inputs, every lane's elements: %d wrong", wrong);

  for (bool sync : {true, false}) {
    std::vector<float> out(32, 0.f);
    emu::launch(dim3(1), dim3(32), [&] {
      sync ? wmma_stage_kernel<true>(out.data()) : wmma_stage_kernel<false>(out.data());
    });
    int bad = 0;
    for (float v : out) bad += v != 8.f;
    emu::report(sync ? bad == 0 : bad > 0, "reading a stored fragment %s: %d lanes wrong%s",
                sync ? "past __syncwarp" : "without __syncwarp", bad,
                sync ? "" : " (must be > 0: the schedule exposes the race)");
  }
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
  alignas(32) static float tile[16 * 16 + 8] = {};
  if (!std::strcmp(mode, "wmma_misaligned")) {
    emu::launch(dim3(1), dim3(32), [&] { wmma_misaligned_kernel(tile); });
    return 0;
  }
  if (!std::strcmp(mode, "wmma_divergent")) {
    emu::launch(dim3(1), dim3(32), [&] { wmma_divergent_kernel(tile); });
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
  wmma_checks();
  return emu::finish();
}
