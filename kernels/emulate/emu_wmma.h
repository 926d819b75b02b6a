// nvcuda::wmma for the emulator (emu.h): the part that conv2d version 8 uses,
// m16n16k8 fragments of TF32 inputs with float accumulators.
//
// What CUDA documents, and so what a kernel may rely on, is emulated faithfully:
//   - load_matrix_sync, store_matrix_sync and mma_sync are warp-wide, with PTX's
//     .sync meaning: a lane waits until all 32 lanes reach the same call, then
//     does its part (a lane that never comes is a divergence or deadlock report);
//   - their pointers must be 32-byte aligned and ldm a multiple of 4 floats
//     (16 bytes), else the emulation stops with the offending value;
//   - the tensor cores read only the TF32 part of each input (the top 19 bits:
//     sign, 8 exponent bits, 10 mantissa bits); the rest is dropped, so a kernel
//     that skips __float_to_tf32 or the 3xTF32 correction loses accuracy here
//     as on the GPU;
//   - after store_matrix_sync a lane may read another lane's elements only past
//     a __syncwarp: each lane writes its own elements, and the schedule lets the
//     last lane to arrive run on before the others have written. (The converse,
//     a __syncwarp between those reads and the next store, is still needed on a
//     GPU for memory ordering; here the store's wait already orders them, so
//     leaving it out goes unseen.)
// What CUDA leaves unspecified is made hostile: which lane holds which element of
// a fragment. Here lane l's element t is element (l + 32 t) * 37 mod size of the
// row-major matrix, a scramble no real GPU uses, so that a kernel may touch
// fragment elements only uniformly (x[t] = f(x[t]) for every t), as it must.
#pragma once

#include <cstdint>
#include <cstring>

#include "emulate/emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

// The logical matrix of each use: A is M x K, B is K x N, the accumulator M x N.
template <class Use, int M, int N, int K>
struct Extent;
template <int M, int N, int K>
struct Extent<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Extent<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Extent<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 8, "only the m16n16k8 shape (TF32) is emulated");
  using use = Use;
  using layout = Layout;
  static constexpr int rows = Extent<Use, M, N, K>::rows, cols = Extent<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  float x[num_elements];
};

}  // namespace wmma
}  // namespace nvcuda

namespace emu {

// Which element of the row-major matrix lane `lane` holds as its element t.
inline int wmma_element(int lane, int t, int size) { return (lane + 32 * t) * 37 % size; }

inline void wmma_check(const void* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) fail("%s: pointer %p is not 32-byte aligned", what, p);
  if (ldm % 4 != 0) fail("%s: ldm = %u is not a multiple of 4 floats (16 bytes)", what, ldm);
}

// What a TF32 tensor-core input keeps of a float: sign, exponent, 10 mantissa bits.
inline float tf32_part(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= 0xFFFFE000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// The inputs of every lane's mma_sync, by linear thread id, two generations (as
// the shuffles' exchange buffer): A's 4 elements, then B's 4. In the runtime,
// among the emulator's own variables (not shared memory).
extern float mma_exchange[2][1024][8];

}  // namespace emu

namespace nvcuda {
namespace wmma {

// cvt.rna.tf32.f32: round to the nearest TF32 value, ties away from zero (adding
// half of the dropped part to the magnitude's bits, then dropping it).
inline float __float_to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x1000u) & 0xFFFFE000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const float* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  static_assert(std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value,
                "matrix_a / matrix_b fragments carry their layout");
  emu::wmma_check(p, ldm, "wmma::load_matrix_sync");
  emu::warp_arrive(1000000L * emu::kWmmaLoad, "wmma::load_matrix_sync");
  const int lane = emu::current % 32;
  for (int t = 0; t < F::num_elements; ++t) {
    const int e = emu::wmma_element(lane, t, F::rows * F::cols);
    const int r = e / F::cols, c = e % F::cols;
    f.x[t] = std::is_same<Layout, row_major>::value ? p[(size_t)r * ldm + c] : p[r + (size_t)c * ldm];
  }
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                              layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  emu::wmma_check(p, ldm, "wmma::store_matrix_sync");
  emu::warp_arrive(1000000L * emu::kWmmaStore, "wmma::store_matrix_sync");
  const int lane = emu::current % 32;
  for (int t = 0; t < F::num_elements; ++t) {
    const int e = emu::wmma_element(lane, t, F::rows * F::cols);
    const int r = e / F::cols, c = e % F::cols;
    p[layout == mem_row_major ? (size_t)r * ldm + c : r + (size_t)c * ldm] = f.x[t];
  }
}

template <int M, int N, int K>
inline void fill_fragment(fragment<accumulator, M, N, K, float>& f, float v) {
  for (float& e : f.x) e = v;
}

// d = a * b + c over the whole warp: each lane posts its elements of a and b,
// waits for the warp, rebuilds both matrices, and computes its own elements of d.
template <int M, int N, int K, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  using FA = fragment<matrix_a, M, N, K, precision::tf32, LA>;
  using FB = fragment<matrix_b, M, N, K, precision::tf32, LB>;
  using FC = fragment<accumulator, M, N, K, float>;
  static_assert(FA::num_elements == 4 && FB::num_elements == 4, "exchange slots: 4 + 4 floats");
  const int t = emu::current, lane = t % 32, base = t - lane;
  const unsigned gen = emu::thread_counter(emu::kWmmaMma) & 1u;
  for (int i = 0; i < 4; ++i) {
    emu::mma_exchange[gen][t][i] = a.x[i];
    emu::mma_exchange[gen][t][4 + i] = b.x[i];
  }
  emu::warp_arrive(1000000L * emu::kWmmaMma, "wmma::mma_sync");
  float A[M][K], B[K][N];
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int ea = emu::wmma_element(l, i, M * K), eb = emu::wmma_element(l, i, K * N);
      A[ea / K][ea % K] = emu::tf32_part(emu::mma_exchange[gen][base + l][i]);
      B[eb / N][eb % N] = emu::tf32_part(emu::mma_exchange[gen][base + l][4 + i]);
    }
  float out[FC::num_elements];
  for (int i = 0; i < FC::num_elements; ++i) {
    const int e = emu::wmma_element(lane, i, M * N);
    float sum = c.x[i];
    for (int k = 0; k < K; ++k) sum = std::fmaf(A[e / N][k], B[k][e % N], sum);
    out[i] = sum;
  }
  for (int i = 0; i < FC::num_elements; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
