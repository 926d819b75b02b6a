// Checks of the emulator itself (emu.h, emu_runtime.cc, emu_wmma.h), so that a
// clean run of a kernel means something: tiny kernels with known answers.
//   emu_selftest          the positive checks (CUDA's shuffle results, barriers,
//                         TF32 products, atomics between blocks): "all ok", no findings
//   emu_selftest MODE     one planted bug; it must end with exit status 1 and the
//                         finding (or error) that tests/test_kernel_emulation.py expects
// Run one: python kernels/emulate/emulate.py selftest (the positive checks), or build
// it and pass a mode. The mutants in tests/mutants/ plant bugs in the real kernels.
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

// Every thread atomically adds into out[0] (and thread 0 of each block plain-adds into
// out[1] when PLAIN). Thread 0 of block 0 adds 1e8, the others 1: in float, the ones
// added after the 1e8 are lost (its ulp is 8), so the sum depends on the order.
template <bool PLAIN>
__global__ void sum_kernel(float* out) {
  atomicAdd(out, blockIdx.x == 0 && threadIdx.x == 0 ? 1e8f : 1.f);
  if (PLAIN && threadIdx.x == 0) out[1] += 1.f;  // a read-modify-write race between blocks
}

__global__ void same_word_kernel(float* out) { out[threadIdx.x / 2] = 1.f; }  // two threads a word

__global__ void read_past_end_kernel(const float* x, float* y, int n, int past) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] + (i == n - 1 ? x[n - 1 + past] : 0.f);
}

__global__ void write_before_kernel(float* y) {
  if (threadIdx.x == 0) y[-1] = 1.f;
}

__global__ void float4_kernel(const float* x, float* y) {
  const float4 v = *reinterpret_cast<const float4*>(x + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

__global__ void unwritten_shared_kernel(float* y) {
  __shared__ float tile[64];
  if (threadIdx.x < 32) tile[threadIdx.x] = 1.f;  // the upper half is never written
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x];
}

__global__ void accumulate_kernel(float* y) { y[threadIdx.x] += 1.f; }  // reads y before any write

__global__ void nothing_kernel(float*) {}

__global__ void wild_kernel(float* y) {
  if (threadIdx.x == 0) y[-(1L << 40)] = 1.f;  // far outside the arena
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

// One warp stores fragments to a shared stage twice; after each store lane l sums
// the 8 floats at 8l, mostly other lanes' elements. SYNC: the __syncwarp after the
// store; TRAILING: the one after the reads, before the next store overwrites them.
template <bool SYNC, bool TRAILING>
__global__ void wmma_stage_kernel(float* out) {
  alignas(32) __shared__ float stage[256];
  float sum = 0.f;
  for (int round = 0; round < 2; ++round) {
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> f;
    wmma::fill_fragment(f, 1.f + round);
    wmma::store_matrix_sync(stage, f, 16, wmma::mem_row_major);
    if (SYNC) __syncwarp();
    for (int i = 0; i < 8; ++i) sum += stage[threadIdx.x * 8 + i];
    if (TRAILING) __syncwarp();
  }
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
  std::vector<float> a(16 * 16), b(16 * 16);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 8; ++k) a[m + 16 * k] = (m == 3 && k == 5) ? 1.f + tiny : float(m - k);
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 16; ++n) b[16 * k + n] = float((k * 3 + n) % 7) - 2.f;
  const emu::Guarded<float> ag(a, 0, "a"), bg(b, 0, "b");
  emu::Guarded<float> d(16 * 16, NAN, 0, "d");
  emu::launch("wmma_product_kernel", dim3(1), dim3(32), [&] { wmma_product_kernel(ag.data(), bg.data(), d.data()); });
  int wrong = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float want = 0.5f;
      for (int k = 0; k < 8; ++k) want += ((m == 3 && k == 5) ? 1.f : float(m - k)) * b[16 * k + n];
      wrong += d[16 * m + n] != want;
    }
  emu::report(wrong == 0, "wmma 16x8 * 8x16 + c on TF32 inputs, every lane's elements: %d wrong", wrong);

  emu::Guarded<float> out(32, NAN, 0, "out");
  emu::launch("wmma_stage_kernel", dim3(1), dim3(32), [&] { wmma_stage_kernel<true, true>(out.data()); });
  int bad = 0;
  for (int i = 0; i < 32; ++i) bad += out[i] != 24.f;
  emu::report(bad == 0, "reading a stored fragment past __syncwarp, twice: %d lanes wrong", bad);
}

// One planted bug per mode: each must end in a finding (exit 1).
static int planted(const char* mode) {
  std::vector<float> ones(1024, 1.f);
  const emu::Guarded<float> x(ones, 0, "x");
  emu::Guarded<float> y(1024, NAN, 0, "y");
  std::vector<int> seq(3 * 96);
  for (size_t i = 0; i < seq.size(); ++i) seq[i] = static_cast<int>(i);
  emu::Guarded<int> data(seq, 0, "data");
  if (!std::strcmp(mode, "deadlock"))
    emu::launch("early_return_kernel", dim3(1), dim3(64), [&] { early_return_kernel(data.data()); });
  else if (!std::strcmp(mode, "divergent"))
    emu::launch("divergent_kernel", dim3(1), dim3(64), [&] { divergent_kernel(data.data()); });
  else if (!std::strcmp(mode, "partial_warp"))
    emu::launch("shuffle_in_partial_warp_kernel", dim3(1), dim3(48), [&] { shuffle_in_partial_warp_kernel(y.data()); });
  else if (!std::strcmp(mode, "wmma_misaligned"))
    emu::launch("wmma_misaligned_kernel", dim3(1), dim3(32), [&] { wmma_misaligned_kernel(x.data()); });
  else if (!std::strcmp(mode, "wmma_divergent"))
    emu::launch("wmma_divergent_kernel", dim3(1), dim3(32), [&] { wmma_divergent_kernel(x.data()); });
  else if (!std::strcmp(mode, "race_shared"))
    emu::launch("reverse_kernel", dim3(3), dim3(96), [&] { reverse_kernel<false>(data.data()); });
  else if (!std::strcmp(mode, "race_warp"))
    emu::launch("wmma_stage_kernel", dim3(1), dim3(32), [&] { wmma_stage_kernel<false, true>(y.data()); });
  else if (!std::strcmp(mode, "race_trailing_syncwarp"))
    emu::launch("wmma_stage_kernel", dim3(1), dim3(32), [&] { wmma_stage_kernel<true, false>(y.data()); });
  else if (!std::strcmp(mode, "race_blocks")) {
    y.assign(0.f);
    emu::launch("sum_kernel", dim3(4), dim3(64), [&] { sum_kernel<true>(y.data()); });
  } else if (!std::strcmp(mode, "race_threads"))
    emu::launch("same_word_kernel", dim3(1), dim3(64), [&] { same_word_kernel(y.data()); });
  else if (!std::strcmp(mode, "oob_far"))
    emu::launch("read_past_end_kernel", dim3(4), dim3(256), [&] { read_past_end_kernel(x.data(), y.data(), 1024, 1000); });
  else if (!std::strcmp(mode, "oob_before"))
    emu::launch("write_before_kernel", dim3(1), dim3(32), [&] { write_before_kernel(y.data()); });
  else if (!std::strcmp(mode, "misaligned"))
    emu::launch("float4_kernel", dim3(1), dim3(32), [&] { float4_kernel(x.data() + 1, y.data()); });
  else if (!std::strcmp(mode, "uninit_shared"))
    emu::launch("unwritten_shared_kernel", dim3(1), dim3(64), [&] { unwritten_shared_kernel(y.data()); });
  else if (!std::strcmp(mode, "uninit_global"))
    emu::launch("accumulate_kernel", dim3(1), dim3(64), [&] { accumulate_kernel(y.data()); });
  else if (!std::strcmp(mode, "launch_threads"))
    emu::launch("nothing_kernel", dim3(1), dim3(2048), 0, nullptr, [&] { nothing_kernel(y.data()); });
  else if (!std::strcmp(mode, "launch_smem"))
    emu::launch("nothing_kernel", dim3(1), dim3(32), 64 * 1024, nullptr, [&] { nothing_kernel(y.data()); });
  else if (!std::strcmp(mode, "wild"))
    emu::launch("wild_kernel", dim3(1), dim3(32), [&] { wild_kernel(y.data()); });
  else if (!std::strcmp(mode, "nondeterministic")) {  // not a failure: the table says "no"
    y.assign(0.f);
    emu::launch("sum_kernel", dim3(8), dim3(64), [&] { sum_kernel<false>(y.data()); });
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  return emu::finish();
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  if (argc > 1 && argv[1][0] != '-') return planted(argv[1]);
  {
    std::vector<int> zeros(256, 0);
    emu::Guarded<int> ints(256, 0, 0, "ints");
    emu::launch("shuffle_kernel", dim3(1), dim3(64), [&] { shuffle_kernel(ints.data()); });
    int wrong = 0;
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, base = 1000 + t - lane;
      const int want[4] = {base + (lane ^ 5), lane + 3 < 32 ? 1000 + t + 3 : 1000 + t,
                           lane >= 3 ? 1000 + t - 3 : 1000 + t, base + 7};
      for (int k = 0; k < 4; ++k) wrong += ints[t * 4 + k] != want[k];
    }
    emu::report(wrong == 0, "shuffles xor/down/up/idx in two warps: %d wrong", wrong);
  }
  {
    std::vector<int> seq(3 * 96);
    for (size_t i = 0; i < seq.size(); ++i) seq[i] = static_cast<int>(i);
    emu::Guarded<int> data(seq, 0, "data");
    emu::launch("reverse_kernel", dim3(3), dim3(96), [&] { reverse_kernel<true>(data.data()); });
    int bad = 0;
    for (int i = 0; i < 3 * 96; ++i) bad += data[i] != (i / 96) * 96 + 95 - i % 96;
    emu::report(bad == 0, "shared-memory reversal with the barrier: %d wrong", bad);
  }
  {  // atomics between blocks are no race; the float sum's order shows in the determinism table
    emu::Guarded<float> sum(2, NAN, 0, "sum");
    sum.assign(0.f);
    emu::launch("sum_kernel", dim3(4), dim3(64), [&] { sum_kernel<false>(sum.data()); });
    emu::report(sum[0] >= 1e8f && sum[0] <= 1e8f + 256.f, "atomicAdd from 4 blocks: %.0f (1e8 plus at most 255 ones)",
                sum[0]);
  }
  wmma_checks();
  return emu::finish();
}
