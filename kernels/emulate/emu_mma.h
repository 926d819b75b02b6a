// kernels/conv2d/mma_ptx.cuh's PTX wrappers for the emulator (emu.h): mma.sync,
// ldmatrix, cp.async and the conversions, with the lane-by-lane layouts that the
// PTX ISA documents, so that a kernel that puts the wrong element in a register, or
// reads a cp.async's destination too early, fails here as it would on the GPU.
//
// Layouts (PTX ISA, "Warp Level Matrix Multiply-Accumulate Instructions"; lane l of
// the warp, groupID g = l / 4, threadID_in_group t = l % 4):
//   mma.m16n8k8 .tf32 (section 9.7.14.5.7, "Matrix Fragments for mma.m16n8k8"):
//     A (16 x 8, row):  a0 = A[g][t]    a1 = A[g+8][t]    a2 = A[g][t+4]    a3 = A[g+8][t+4]
//     B (8 x 8, col):   b0 = B[t][g]    b1 = B[t+4][g]
//     C, D (16 x 8):    c0 = C[g][2t]   c1 = C[g][2t+1]   c2 = C[g+8][2t]   c3 = C[g+8][2t+1]
//   mma.m16n8k16 .bf16 (section 9.7.14.5.8): each 32-bit register holds two bf16, the
//     lower-numbered element in the low half:
//     A (16 x 16): a0,a1 = A[g][2t..2t+1]  a2,a3 = A[g+8][2t..]  a4,a5 = A[g][2t+8..]  a6,a7 = A[g+8][2t+8..]
//       (registers 0..3 hold the pairs a0a1, a2a3, a4a5, a6a7)
//     B (16 x 8):  b0,b1 = B[2t..2t+1][g]  b2,b3 = B[2t+8..2t+9][g]  (registers 0, 1)
//     C, D as for m16n8k8.
//   ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16 (section 9.7.14.5.15): matrix j
//     (8 rows of 8 b16 = 16 bytes) has its row i at the address lane 8j + i gives (lanes
//     0-7 for .x1, 0-15 for .x2, all 32 for .x4; addresses 16-byte aligned); register j
//     of lane l receives row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of matrix j (one
//     32-bit word, word l % 4 of the row); with .trans, elements (2(l % 4), l / 4) and
//     (2(l % 4) + 1, l / 4): the matrix transposed, 16-bit elements each.
// The tensor cores read only the TF32 part of an fp32 input (the top 19 bits: sign,
// exponent, 10 mantissa bits) or a bf16; products accumulate in fp32.
//
// Each warp-wide operation is an exchange: every lane posts its registers (its rows'
// words for ldmatrix) in the runtime's exchange buffer, waits for the warp (all 32
// lanes at the same operation: PTX's .sync.aligned), and computes its own outputs
// from what all lanes posted. The operations do not order memory (no __syncwarp).
//
// cp.async (PTX ISA "Data Movement and Conversion Instructions: cp.async",
// cp.async.commit_group, cp.async.wait_group): emu_runtime.cc's cp_async. The copy lands
// only at the wait_group that covers its group; until then any access to its
// destination is a racecheck finding, and after it another thread sees it only past
// a barrier. Source and destination must be aligned to the copy's size; bytes past
// src-size are zero-filled; .cg (L2 only) takes 16 bytes alone.
#pragma once

#include <cstdint>
#include <cstring>

#include "emulate/emu.h"

namespace emu {
extern float mma_exchange[2][1024][8];  // emu_runtime.cc: the lanes' posted registers

// Post n 32-bit words, wait for the warp at operation `kind`, return the generation.
__attribute__((always_inline)) inline unsigned mma_post(const uint32_t* words, int n, int kind, const char* what) {
  const unsigned gen = thread_counter(kWmmaMma) & 1u;  // one counter for every user of mma_exchange
  for (int i = 0; i < n; ++i) std::memcpy(&mma_exchange[gen][current][i], &words[i], 4);
  warp_arrive(1000000L * kind, what);
  return gen;
}
inline uint32_t mma_word(unsigned gen, int lane, int i) {
  uint32_t w;
  std::memcpy(&w, &mma_exchange[gen][current - current % 32 + lane][i], 4);
  return w;
}
inline float tf32_value(uint32_t bits) {  // what a tensor core reads of a .tf32 operand
  bits &= 0xFFFFE000u;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}
inline float bf16_value(uint32_t half) {
  const uint32_t bits = half << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}
}  // namespace emu

namespace pycnn {
namespace ptx {

// cvt.rna.tf32.f32: the nearest TF32 value, ties away from zero, as fp32 bits.
inline uint32_t tf32_rna(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u) return bits;  // Inf and NaN as they are
  return (bits + 0x1000u) & 0xFFFFE000u;
}
inline float tf32_float(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// cvt.rn.bf16x2.f32 d, hi, lo: two floats to bf16, round to nearest even; lo in the
// low half (the lower-numbered element of an mma operand pair).
inline uint32_t bf16_rn(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (bits >> 16) | 0x40u;  // NaN stays NaN (quiet)
  return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
}
inline uint32_t bf16x2_rn(float lo, float hi) { return bf16_rn(lo) | (bf16_rn(hi) << 16); }

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a * b + c.
__attribute__((always_inline)) inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                             const uint32_t (&b)[2], const float (&c)[4]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const unsigned gen = emu::mma_post(mine, 6, emu::kMmaSync, "mma.sync.m16n8k8.tf32");
  float A[16][8], B[8][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    A[g][t] = emu::tf32_value(emu::mma_word(gen, l, 0));
    A[g + 8][t] = emu::tf32_value(emu::mma_word(gen, l, 1));
    A[g][t + 4] = emu::tf32_value(emu::mma_word(gen, l, 2));
    A[g + 8][t + 4] = emu::tf32_value(emu::mma_word(gen, l, 3));
    B[t][g] = emu::tf32_value(emu::mma_word(gen, l, 4));
    B[t + 4][g] = emu::tf32_value(emu::mma_word(gen, l, 5));
  }
  const int lane = emu::current % 32, g = lane / 4, t = lane % 4;
  const int row[4] = {g, g, g + 8, g + 8}, col[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  float out[4];
  for (int i = 0; i < 4; ++i) {
    float sum = c[i];
    for (int k = 0; k < 8; ++k) sum = std::fmaf(A[row[i]][k], B[k][col[i]], sum);
    out[i] = sum;
  }
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d = a * b + c.
__attribute__((always_inline)) inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                              const uint32_t (&b)[2], const float (&c)[4]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const unsigned gen = emu::mma_post(mine, 6, emu::kMmaSync, "mma.sync.m16n8k16.bf16");
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int arow[4] = {g, g + 8, g, g + 8}, acol[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) {
      const uint32_t w = emu::mma_word(gen, l, r);
      A[arow[r]][acol[r]] = emu::bf16_value(w & 0xFFFFu);
      A[arow[r]][acol[r] + 1] = emu::bf16_value(w >> 16);
    }
    for (int r = 0; r < 2; ++r) {
      const uint32_t w = emu::mma_word(gen, l, 4 + r);
      B[2 * t + 8 * r][g] = emu::bf16_value(w & 0xFFFFu);
      B[2 * t + 8 * r + 1][g] = emu::bf16_value(w >> 16);
    }
  }
  const int lane = emu::current % 32, g = lane / 4, t = lane % 4;
  const int row[4] = {g, g, g + 8, g + 8}, col[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  float out[4];
  for (int i = 0; i < 4; ++i) {
    float sum = c[i];
    for (int k = 0; k < 16; ++k) sum = std::fmaf(A[row[i]][k], B[k][col[i]], sum);
    out[i] = sum;
  }
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16 r, [row]: `row` is this lane's
// row address (used by lanes 0 .. 8*NUM-1).
template <int NUM, bool TRANS>
__attribute__((always_inline)) inline void ldmatrix(uint32_t (&r)[NUM], const void* row) {
  static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix: .x1, .x2 or .x4");
  const int lane = emu::current % 32;
  uint32_t words[4] = {0, 0, 0, 0};
  if (lane < 8 * NUM) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
      emu::fail("ldmatrix: lane %d's row address %p is not 16-byte aligned", lane, row);
    if (!emu::is_shared_address(row)) emu::fail("ldmatrix: lane %d's row address %p is not shared memory", lane, row);
    // one 16-byte read (checked and counted as one access, as the row is on the GPU)
    const emu::Vec4<uint32_t> v = *static_cast<const emu::Vec4<uint32_t>*>(row);
    words[0] = v.x, words[1] = v.y, words[2] = v.z, words[3] = v.w;
  }
  const unsigned gen = emu::mma_post(words, 4, emu::kLdmatrix, TRANS ? "ldmatrix.trans" : "ldmatrix");
  uint32_t out[NUM];
  for (int j = 0; j < NUM; ++j) {
    if (!TRANS) {
      out[j] = emu::mma_word(gen, 8 * j + lane / 4, lane % 4);
    } else {  // elements (2(l%4), l/4) and (2(l%4)+1, l/4): column l/4 of rows 2(l%4), 2(l%4)+1
      const int col = lane / 4, r0 = 2 * (lane % 4);
      const uint32_t w0 = emu::mma_word(gen, 8 * j + r0, col / 2), w1 = emu::mma_word(gen, 8 * j + r0 + 1, col / 2);
      const uint32_t h0 = col % 2 ? w0 >> 16 : w0 & 0xFFFFu, h1 = col % 2 ? w1 >> 16 : w1 & 0xFFFFu;
      out[j] = h0 | (h1 << 16);
    }
  }
  for (int j = 0; j < NUM; ++j) r[j] = out[j];
}
__attribute__((always_inline)) inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix<4, false>(r, row); }
__attribute__((always_inline)) inline void ldmatrix_x2(uint32_t (&r)[2], const void* row) { ldmatrix<2, false>(r, row); }
__attribute__((always_inline)) inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  ldmatrix<4, true>(r, row);
}
__attribute__((always_inline)) inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  ldmatrix<2, true>(r, row);
}

// cp.async.ca.shared.global [dst], [src], BYTES, src_bytes (4, 8 or 16 bytes) and
// cp.async.cg.shared.global [dst], [src], 16, src_bytes.
template <int BYTES>
__attribute__((always_inline)) inline void cp_async_ca(void* dst, const void* src, int src_bytes) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async.ca: 4, 8 or 16 bytes");
  emu::cp_async(dst, src, BYTES, src_bytes, "cp.async.ca");
}
__attribute__((always_inline)) inline void cp_async_cg16(void* dst, const void* src, int src_bytes) {
  emu::cp_async(dst, src, 16, src_bytes, "cp.async.cg");
}
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group N, N >= 0");
  emu::cp_async_wait(N);
}

}  // namespace ptx
}  // namespace pycnn
