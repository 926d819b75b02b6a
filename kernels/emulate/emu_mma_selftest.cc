// Checks of emu_mma.h (the emulator's mma.sync, ldmatrix and cp.async) against the
// PTX ISA's tables, on matrices whose every element says where it came from, so that
// a wrong lane, register or half shows as a wrong value:
//   emu_mma_selftest          the positive checks; ends "all ok" with no findings
//   emu_mma_selftest MODE     one planted misuse; it must end with exit status 1 and the
//                             finding that tests/test_mma_ptx_emulation.py expects
// The tables are written here a second time, from the ISA's text (section numbers in
// emu_mma.h), as "register i of lane l holds element (row, col)"; the kernels below
// place or read every element through them, and the host compares with a matmul.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emulate/emu.h"
#include "conv2d/mma_ptx.cuh"  // the emulated wrappers (emu_mma.h) under PYCNN_KERNEL_EMULATION

namespace ptx = pycnn::ptx;

// ---- the ISA's fragment tables (g = lane / 4, t = lane % 4)
struct RC {
  int row, col;
};
// m16n8k8 .tf32, section 9.7.14.5.7
static RC tf32_a(int lane, int i) {  // a0..a3
  const int g = lane / 4, t = lane % 4;
  return RC{g + 8 * (i % 2), t + 4 * (i / 2)};
}
static RC tf32_b(int lane, int i) {  // b0, b1: (row k, col n)
  return RC{lane % 4 + 4 * i, lane / 4};
}
static RC acc_c(int lane, int i) {  // c0..c3, both shapes
  return RC{lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2};
}
// m16n8k16 .bf16, section 9.7.14.5.8: element e = 0..7 of A (register e / 2, half e % 2)
static RC bf16_a(int lane, int e) {
  const int g = lane / 4, t = lane % 4;
  const bool upper = (e >= 2 && e < 4) || e >= 6;
  return RC{g + (upper ? 8 : 0), 2 * t + (e & 1) + (e >= 4 ? 8 : 0)};
}
static RC bf16_b(int lane, int e) {  // b0..b3 (register e / 2, half e % 2)
  return RC{2 * (lane % 4) + (e & 1) + (e >= 2 ? 8 : 0), lane / 4};
}

// ---- mma.m16n8k8 tf32: A (16x8) and B (8x8) from global by the tables, D to global
__global__ void mma_tf32_kernel(const float* A, const float* B, const float* C, float* D) {
  const int lane = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) {
    const RC e = tf32_a(lane, i);
    std::memcpy(&a[i], &A[e.row * 8 + e.col], 4);
    const RC o = acc_c(lane, i);
    c[i] = C[o.row * 8 + o.col];
  }
  for (int i = 0; i < 2; ++i) {
    const RC e = tf32_b(lane, i);
    std::memcpy(&b[i], &B[e.row * 8 + e.col], 4);
  }
  ptx::mma_m16n8k8_tf32(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[lane * 4 + i] = d[i];  // by lane: the host applies the table
}

__global__ void mma_bf16_kernel(const float* A, const float* B, const float* C, float* D) {
  const int lane = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int r = 0; r < 4; ++r) {
    const RC lo = bf16_a(lane, 2 * r), hi = bf16_a(lane, 2 * r + 1);
    a[r] = ptx::bf16x2_rn(A[lo.row * 16 + lo.col], A[hi.row * 16 + hi.col]);
    const RC o = acc_c(lane, r);
    c[r] = C[o.row * 8 + o.col];
  }
  for (int r = 0; r < 2; ++r) {
    const RC lo = bf16_b(lane, 2 * r), hi = bf16_b(lane, 2 * r + 1);
    b[r] = ptx::bf16x2_rn(B[lo.row * 8 + lo.col], B[hi.row * 8 + hi.col]);
  }
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[lane * 4 + i] = d[i];
}

// ---- ldmatrix: 4 matrices of 8 rows x 8 b16 in shared memory, element (j, i, e) =
// 1000 + 64j + 8i + e; lane l gives the address of row ROW(l) of the stage, which holds
// row (l % 8) of matrix l / 8, placed at stage row (5 * l + 3) % 32 (rows permuted, so a
// lane that used another lane's address gets another row).
static int stage_row(int lane) { return (5 * lane + 3) % 32; }

template <int NUM, bool TRANS>
__global__ void ldmatrix_kernel(uint32_t* out) {
  alignas(16) __shared__ uint16_t stage[32][8];
  const int lane = threadIdx.x;
  for (int e = 0; e < 8; ++e) stage[stage_row(lane)][e] = (uint16_t)(1000 + 64 * (lane / 8) + 8 * (lane % 8) + e);
  __syncwarp();
  uint32_t r[NUM];
  const void* row = &stage[stage_row(lane < 8 * NUM ? lane : 0)][0];
  if constexpr (NUM == 4) {
    if (TRANS) ptx::ldmatrix_x4_trans(r, row);
    else ptx::ldmatrix_x4(r, row);
  } else {
    if (TRANS) ptx::ldmatrix_x2_trans(r, row);
    else ptx::ldmatrix_x2(r, row);
  }
  for (int j = 0; j < NUM; ++j) out[lane * 4 + j] = r[j];
}

// ---- cp.async: each thread fills its row of 12 floats with four copies in three
// groups: a 16-byte .ca copy of src-size 12 (the 4th float zero-filled), a 16-byte .cg
// copy, then an 8-byte copy of src-size 0 (zeros) and two 4-byte copies (one of
// src-size 0); it waits for the first two groups, reads two of its own floats, waits
// for all, and the block reads its neighbours' rows past a barrier.
// MODE 0: correct; 1: reads its own destination before the wait; 2: no barrier after
// the wait (reads a neighbour's); 3: a 16-byte copy 4 bytes off alignment; 4: a refill
// of a row another thread has read, with no barrier between.
constexpr int kRow = 12;
template <int MODE>
__global__ void cp_async_kernel(const float* src, float* out) {
  alignas(16) __shared__ float buf[64][kRow];
  const int t = threadIdx.x;
  float* mine = buf[t];
  const float* from = src + kRow * t;
  ptx::cp_async_ca<16>(mine + (MODE == 3 ? 1 : 0), from, 12);
  ptx::cp_async_commit();
  ptx::cp_async_cg16(mine + 4, from + 4, 16);
  ptx::cp_async_commit();
  ptx::cp_async_ca<8>(mine + 8, src, 0);
  ptx::cp_async_ca<4>(mine + 10, from + 10, 4);
  ptx::cp_async_ca<4>(mine + 11, src, 0);
  ptx::cp_async_commit();
  if (MODE == 1) out[64 * kRow + t] = mine[0];  // before any wait: the copy is in flight
  ptx::cp_async_wait<1>();                      // the first two groups have landed
  const float early = mine[0] + mine[5];
  ptx::cp_async_wait<0>();
  if (MODE != 2) __syncthreads();
  const float* next = buf[(t + 1) % 64];
  for (int i = 0; i < kRow; ++i) out[kRow * t + i] = next[i];
  out[64 * kRow + t] = early;
  if (MODE == 4) {
    if (t == 1) ptx::cp_async_ca<4>(buf[0], src, 4);  // thread 63 reads buf[0] above: no barrier between
    ptx::cp_async_wait<0>();
  }
}

__global__ void ldmatrix_misaligned_kernel(uint32_t* out) {
  alignas(16) __shared__ uint16_t stage[40][8];
  for (int e = 0; e < 8; ++e) stage[threadIdx.x][e] = 1;
  __syncwarp();
  uint32_t r[4];
  ptx::ldmatrix_x4(r, &stage[threadIdx.x][0] + (threadIdx.x == 9 ? 4 : 0));  // lane 9: 8 bytes off
  out[threadIdx.x] = r[0];
}

__global__ void mma_divergent_kernel(float* out) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4];
  if (threadIdx.x != 31) ptx::mma_m16n8k8_tf32(d, a, b, c);  // lane 31 never comes
  out[threadIdx.x] = d[0];
}

static float bits_float(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

static void mma_checks() {
  // tf32: A[m][k] = 100m + k (exact in TF32), but A[3][5] = 1 + 2^-20, which the
  // tensor core reads as 1 (its low mantissa bits are dropped); B[k][n] one-hot:
  // B[k][n] = 1 where k = (3n + 1) % 8, plus 0.25 on B[2][6]. C[m][n] = 0.5 m + n / 4.
  std::vector<float> A(16 * 8), B(8 * 8, 0.f), C(16 * 8);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 8; ++k) A[m * 8 + k] = float(100 * m + k);
  A[3 * 8 + 5] = 1.f + std::ldexp(1.f, -20);
  for (int n = 0; n < 8; ++n) B[((3 * n + 1) % 8) * 8 + n] = 1.f;
  B[2 * 8 + 6] += 0.25f;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) C[m * 8 + n] = 0.5f * m + 0.25f * n;
  {
    const emu::Guarded<float> Ag(A, 0, "A"), Bg(B, 0, "B"), Cg(C, 0, "C");
    emu::Guarded<float> D(128, NAN, 0, "D");
    emu::launch("mma_tf32_kernel", dim3(1), dim3(32), [&] { mma_tf32_kernel(Ag.data(), Bg.data(), Cg.data(), D.data()); });
    int wrong = 0;
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 4; ++i) {
        const RC o = acc_c(lane, i);
        double want = C[o.row * 8 + o.col];
        for (int k = 0; k < 8; ++k) {
          const double a = (o.row == 3 && k == 5) ? 1.0 : A[o.row * 8 + k];
          want += a * B[k * 8 + o.col];
        }
        if (D[lane * 4 + i] != (float)want) {
          if (wrong++ < 4)
            std::printf("  lane %d c%d (row %d col %d): %g, want %g\n", lane, i, o.row, o.col, D[lane * 4 + i], want);
        }
      }
    emu::report(wrong == 0, "mma.m16n8k8.tf32: every lane's A, B, C, D elements by the ISA's table: %d wrong", wrong);
  }
  // bf16: A[m][k] = 16m + k (exact in bf16: 8 significant bits); B one-hot at k = (5n + 1) % 16.
  std::vector<float> A2(16 * 16), B2(16 * 8, 0.f);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 16; ++k) A2[m * 16 + k] = float(16 * m + k);
  for (int n = 0; n < 8; ++n) B2[((5 * n + 1) % 16) * 8 + n] = 1.f;
  B2[3 * 8 + 2] = 1.f + std::ldexp(1.f, -9);  // rounds to 1 in bf16 (ties to even)
  {
    const emu::Guarded<float> Ag(A2, 0, "A"), Bg(B2, 0, "B"), Cg(C, 0, "C");
    emu::Guarded<float> D(128, NAN, 0, "D");
    emu::launch("mma_bf16_kernel", dim3(1), dim3(32), [&] { mma_bf16_kernel(Ag.data(), Bg.data(), Cg.data(), D.data()); });
    int wrong = 0;
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 4; ++i) {
        const RC o = acc_c(lane, i);
        double want = C[o.row * 8 + o.col];
        for (int k = 0; k < 16; ++k) {
          const double b = (k == 3 && o.col == 2) ? 1.0 : B2[k * 8 + o.col];
          want += A2[o.row * 16 + k] * b;
        }
        if (D[lane * 4 + i] != (float)want) {
          if (wrong++ < 4)
            std::printf("  lane %d c%d (row %d col %d): %g, want %g\n", lane, i, o.row, o.col, D[lane * 4 + i], want);
        }
      }
    emu::report(wrong == 0, "mma.m16n8k16.bf16: every lane's A, B, C, D elements by the ISA's table: %d wrong", wrong);
  }
  // conversions
  const float half = std::ldexp(1.f, -11), tiny = std::ldexp(1.f, -20);
  const bool rna = bits_float(ptx::tf32_rna(1.f + half)) == 1.f + 2 * half &&
                   bits_float(ptx::tf32_rna(1.f + half - tiny)) == 1.f &&
                   bits_float(ptx::tf32_rna(-(1.f + half))) == -(1.f + 2 * half);
  emu::report(rna, "cvt.rna.tf32.f32: nearest, ties away from zero");
  const uint32_t p = ptx::bf16x2_rn(1.f + std::ldexp(1.f, -8), -2.f);  // lo: a tie, to even (1); hi: -2
  const uint32_t q = ptx::bf16x2_rn(1.f + 3 * std::ldexp(1.f, -8), 0.f);  // a tie, to even (1 + 2^-6)
  emu::report(p == (0x3F80u | (0xC000u << 16)) && q == 0x3F82u,
              "cvt.rn.bf16x2.f32: lo in the low half, ties to even (0x%08x 0x%08x)", p, q);
}

template <int NUM, bool TRANS>
static void ldmatrix_check() {
  emu::Guarded<uint32_t> out(128, 0xFFFFFFFFu, 0, "out");
  emu::launch("ldmatrix_kernel", dim3(1), dim3(32), [&] { ldmatrix_kernel<NUM, TRANS>(out.data()); });
  auto elem = [](int j, int i, int e) { return (uint32_t)(1000 + 64 * j + 8 * i + e); };
  int wrong = 0;
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < NUM; ++j) {
      // the ISA: register j of lane l: row l/4, elements 2(l%4), 2(l%4)+1 of matrix j
      // (transposed: elements (2(l%4), l/4) and (2(l%4)+1, l/4))
      const int r = lane / 4, c = 2 * (lane % 4);
      const uint32_t want = TRANS ? elem(j, c, r) | (elem(j, c + 1, r) << 16) : elem(j, r, c) | (elem(j, r, c + 1) << 16);
      wrong += out[lane * 4 + j] != want;
    }
  emu::report(wrong == 0, "ldmatrix.m8n8.x%d%s.b16: every lane's words from the rows the ISA's lanes address: %d wrong",
              NUM, TRANS ? ".trans" : "", wrong);
}

static void cp_async_check() {
  std::vector<float> s(64 * kRow);
  for (size_t i = 0; i < s.size(); ++i) s[i] = 1.f + (float)i;
  const emu::Guarded<float> src(s, 0, "src");
  emu::Guarded<float> out(64 * (kRow + 1), NAN, 0, "out");
  emu::launch("cp_async_kernel", dim3(1), dim3(64), [&] { cp_async_kernel<0>(src.data(), out.data()); });
  int wrong = 0;
  for (int t = 0; t < 64; ++t) {
    const float* u = &s[kRow * ((t + 1) % 64)];
    const float want[kRow] = {u[0], u[1], u[2], 0.f, u[4], u[5], u[6], u[7], 0.f, 0.f, u[10], 0.f};
    for (int i = 0; i < kRow; ++i) wrong += out[kRow * t + i] != want[i];
    wrong += out[64 * kRow + t] != s[kRow * t] + s[kRow * t + 5];  // after wait_group 1
  }
  emu::report(wrong == 0, "cp.async 16/8/4 bytes (.ca, .cg): src-size zero fill, groups landing at their wait_group: "
              "%d wrong", wrong);
}

static int planted(const char* mode) {
  std::vector<float> s(64 * kRow, 1.f);
  const emu::Guarded<float> src(s, 0, "src");
  emu::Guarded<float> out(64 * (kRow + 1), NAN, 0, "out");
  emu::Guarded<uint32_t> words(128, 0u, 0, "words");
  if (!std::strcmp(mode, "cp_async_read_before_wait"))
    emu::launch("cp_async_kernel", dim3(1), dim3(64), [&] { cp_async_kernel<1>(src.data(), out.data()); });
  else if (!std::strcmp(mode, "cp_async_no_barrier"))
    emu::launch("cp_async_kernel", dim3(1), dim3(64), [&] { cp_async_kernel<2>(src.data(), out.data()); });
  else if (!std::strcmp(mode, "cp_async_misaligned"))
    emu::launch("cp_async_kernel", dim3(1), dim3(64), [&] { cp_async_kernel<3>(src.data(), out.data()); });
  else if (!std::strcmp(mode, "cp_async_refill_race"))
    emu::launch("cp_async_kernel", dim3(1), dim3(64), [&] { cp_async_kernel<4>(src.data(), out.data()); });
  else if (!std::strcmp(mode, "ldmatrix_misaligned"))
    emu::launch("ldmatrix_misaligned_kernel", dim3(1), dim3(32), [&] { ldmatrix_misaligned_kernel(words.data()); });
  else if (!std::strcmp(mode, "mma_divergent"))
    emu::launch("mma_divergent_kernel", dim3(1), dim3(32), [&] { mma_divergent_kernel(out.data()); });
  else {
    std::fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  return emu::finish();
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  if (argc > 1 && argv[1][0] != '-') return planted(argv[1]);
  mma_checks();
  ldmatrix_check<4, false>();
  ldmatrix_check<2, false>();
  ldmatrix_check<4, true>();
  ldmatrix_check<2, true>();
  cp_async_check();
  return emu::finish();
}
