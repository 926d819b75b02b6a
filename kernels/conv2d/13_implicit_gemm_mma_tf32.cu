// conv2d forward, version 13: the implicit GEMM on tensor cores through explicit PTX
// (mma.sync.m16n8k8 TF32, ldmatrix, cp.async; kernels/conv2d/mma_ptx.cuh), in three
// precisions: plain TF32 (the inputs rounded to TF32, as cuDNN's TF32 mode; about 1e-3
// relative error), 3xTF32 (fp32 accuracy, as version 8), and BF16 (conv2d_fwd13_bf16:
// mma.sync.m16n8k16 on bf16 inputs with fp32 accumulation, about 4e-3).
//
// What it does: the GEMM of version 2 (read its header first),
//   Y[m][kg] = sum_kk X[m][kk] * Wt[kk][kg],  m = n*P*Q + op*Q + oq,  kk = c*R*S + r*S + s,
// a 64x64 block tile of 4 warps (32x32 each), BK = 16 values of kk per step:
//   1. Shared memory holds both tiles k-contiguous, As[m][kk] and Bs[kg][kk], 16 floats
//      (64 bytes, four 16-byte chunks) a row, so that an 8x4 block of fp32 is an 8x8
//      block of b16 to ldmatrix: one ldmatrix.x4 fetches a whole m16 x k8 A fragment,
//      and one a pair of n8 x k8 B fragments, each register in the place the mma wants
//      (the PTX ISA's tables: emulate/emu_mma.h). TF32 cannot use ldmatrix's .trans
//      (it transposes 16-bit elements), hence k-contiguous rows for both operands.
//   2. The rows are swizzled (below) so that neither the cp.async stores nor the
//      ldmatrix reads have bank conflicts.
//   3. A 3-stage cp.async pipeline: while the tensor cores multiply step i, the copies
//      of steps i+1 and i+2 are in flight. X's elements are gathered 4 bytes each
//      (cp.async.ca; m, not kk, is contiguous in NCHW); the filter's rows are contiguous
//      in kk, so they go 16 bytes at a time (cp.async.cg) where C/groups*R*S % 4 == 0 and
//      w is 16-byte aligned, else 4 bytes. Padding taps, K tails and rows or channels
//      past the GEMM are zero-filled by the copy itself (src-size 0), with no branch
//      around it and nothing read.
//   4. Each thread steps through the taps (c, r, s) of its kk values, 4 apart, with
//      adds only (TapStep, igemm_tile.cuh): no integer division in the loop.
//   5. The TF32 rounding (and, for 3xTF32, the split a = hi + lo of tf32x3_tile.cuh) is
//      done once per element after its tile lands: each thread converts the elements
//      its own copies brought (visible to it after its cp.async.wait_group), hi in place
//      and lo into a second (double-buffered) tile, and the barrier that every step has
//      anyway publishes both. The fragments are then loaded ready to multiply: 3xTF32
//      costs two more ldmatrix per fragment pair and three mma per product, no
//      conversion in the multiply loop.
//   6. BF16: the landed fp32 tiles are converted to bf16 tiles (16 bf16 = 32 bytes a
//      row, swizzled by bf16_swz) two elements a thread, which are other threads'
//      copies: a second barrier a step. ldmatrix.x4 then fetches an m16 x k16 A fragment
//      (or two n8 x k16 B fragments) in one go, and one mma.m16n8k16 covers the step's
//      16 values of kk (two m16n8k8 in TF32).
//   7. Bias + ReLU in the epilogue, straight from the accumulators: c0..c3 of a lane are
//      rows g, g+8 and channels 2t, 2t+1, so a store instruction writes 8 consecutive m
//      of 4 channels: four whole 32-byte sectors.
//
// The shared layout and why it has no bank conflicts. A tile row holds 16 floats in 4
// chunks of 16 bytes; logical chunk c of row r is stored at chunk  c ^ ((r >> 1) & 3),
// i.e. float (r, kk) at  r*16 + ((kk/4 ^ (r>>1)&3) * 4) + kk%4  (swz below). Shared
// memory has 32 banks of 4 bytes: 8 chunk slots a 128-byte line, and row r starts at
// slot (r % 2) * 4. Chunk c of row r so sits in slot  u(r, c) = (r % 2) * 4 + (c ^ (r>>1)&3).
//   - For 8 consecutive rows r0..r0+7 (r0 a multiple of 8) and one c, the pairs
//     (r % 2, (r >> 1) & 3) run through all 8 values, and c ^ x is a bijection of x, so
//     u takes all 8 slots once: the 8 rows' chunks cover the 32 banks exactly once.
//   - ldmatrix serves 8 row addresses (one 8x8 matrix) a pass; every matrix here is 8
//     consecutive rows from a multiple of 8 at one logical chunk (A: rows wm+16i+l%16,
//     chunk l/16; B: rows wn+16j+8(l/16)+l%8, chunk (l/8)%2), so each pass is 128 bytes
//     in 32 distinct banks: 4 passes per ldmatrix.x4, the minimum for its 512 bytes.
//     (Half-warp view, the emulator's counter model: 16 lanes, 256 bytes, 2 words a
//     bank: 2 wavefronts, also the minimum.)
//   - X's 4-byte copies: lane l of a warp stores row r0 + l/4, float kk = 4c + l%4 (r0 a
//     multiple of 8, c fixed per instruction): the 8 rows take the 8 slots, the 4 lanes
//     of a row the 4 banks of its slot: 32 distinct banks, one wavefront.
//   - The filter's 16-byte copies: lane l stores row r0 + l/4, chunk l%4 (r0 a multiple
//     of 8): rows r0+2q, r0+2q+1 together fill all 8 slots, so each 8 lanes (and each
//     half-warp: 2 x 128 bytes) are conflict-free. Its 4-byte copies: row r0 + l/16,
//     kk = l%16: two rows of 16 floats = the 8 slots, 32 distinct banks.
//   - The in-place conversion reads and writes each thread's own elements at the
//     addresses of its copies, as wide as the copies: the same patterns.
//   - BF16 tiles: 8 rows r0..r0+7 (r0 a multiple of 8) at one chunk c take the slots
//     (r % 4) * 2 + (c ^ (r >> 2) & 1): all 8 once, so ldmatrix's passes are conflict-free
//     as above; the conversion reads float2s (a half-warp: 2 fp32 rows, all 32 banks) and
//     writes words (a warp: 4 bf16 rows = 128 bytes, all 32 banks).
//
// Changed from version 8: explicit mma.sync/ldmatrix instead of WMMA (layouts known,
// so the shared layout can be made conflict-free and the epilogue needs no staging);
// cp.async with 3 stages instead of loads through registers (the registers that held
// version 8's next tile are free, and the copy latency hides behind two steps of
// multiplies); the TF32 split once per element instead of once per fragment load; a
// plain-TF32 mode.
//
// What limits it: one 64x64 tile: the static shared memory of 48 KB holds 3 stages of
// 64x16 + 16x64 floats and 3xTF32's two lo tiles (40 KB); a 128x128 tile needs dynamic
// shared memory, which the emulator does not model yet. X is gathered 4 bytes a copy
// (NCHW: no 16-byte runs along kk); an NHWC layout would allow 16-byte copies. No split-K.
// BF16 converts after a barrier (a second one a step) and keeps its fp32 stages: bf16
// copies would need the conversion before shared memory (through registers). The loaders
// and conversions issue most of the main loop (HMMA 3-8% of its instructions, sm_90).
// Needs compute capability 8.0 (mma.sync TF32 and BF16, cp.async). Not the default.
//
// Measured: not yet measured on a GPU (unmeasured).
#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"
#include "conv2d/mma_ptx.cuh"
#include "conv2d/tf32x3_tile.cuh"  // require_tf32_tensor_cores

namespace pycnn {

// A BM x BN block tile of warps of WM x WN, BK = 16 values of kk a step, STAGES in flight.
template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct MmaTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int FM = WM / 16, FN = WN / 8;  // m16 and n8 mma tiles per warp
};

// Float index of (row, kk) in a swizzled tile of 16-float rows (the header's layout).
__device__ __forceinline__ int mma_swz(int row, int kk) {
  return row * 16 + ((((kk >> 2) ^ (row >> 1)) & 3) << 2) + (kk & 3);
}

// bf16 tile: 16 bf16 a row = 8 words in 2 chunks of 16 bytes; chunk c of row r is
// stored at chunk c ^ ((r >> 2) & 1): 8 consecutive rows from a multiple of 8 at one
// chunk then take the 8 slots of a 128-byte line once (row r starts at slot (r % 4) * 2).
__device__ __forceinline__ int bf16_swz(int row, int word) {
  return row * 8 + ((((word >> 2) ^ (row >> 2)) & 1) << 2) + (word & 3);
}

// PREC: the multiply's precision (Fwd13Precision).
enum Fwd13Precision { kFwd13Tf32 = 0, kFwd13Tf32x3 = 1, kFwd13Bf16 = 2 };

template <class T, int PREC, bool B_VEC, bool RELU>
__global__ void __launch_bounds__(T::THREADS)
conv2d_fwd_kernel13(const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  static_assert(T::BK == 16, "the swizzle is for 16-float rows");
  static_assert(T::THREADS == 128 && T::BM == 64 && T::BN == 64, "the loaders' thread maps are for 64x64, 4 warps");
  static_assert(T::FN % 2 == 0, "B fragments come in pairs (one ldmatrix.x4)");
  constexpr int A_TILE = T::BM * T::BK, B_TILE = T::BN * T::BK, STAGE = A_TILE + B_TILE;
  constexpr bool TF32X3 = PREC == kFwd13Tf32x3, BF16 = PREC == kFwd13Bf16;
  constexpr int LO = TF32X3 ? 2 : 0;  // 3xTF32: the lo parts, double-buffered
  alignas(128) __shared__ float smem[(T::STAGES + LO) * STAGE];
  // BF16: the step's tiles converted to bf16 (one buffer: see the main loop)
  alignas(128) __shared__ uint32_t bf_tiles[BF16 ? (T::BM + T::BN) * 8 : 4];

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int R = p.R, S = p.S, H = p.H, W = p.W, HW = p.H * p.W;
  const int PQ = p.P * p.Q, M = p.N * PQ, Kdim = Cg * R * S;
  const int g = blockIdx.z;
  const int m_block = blockIdx.x * T::BM, n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // ---- X loader: rows a_row + 8j (j = 0, 1), kk = 4c + a_kq (c = 0..3) of each step
  const int a_kq = tid % 4, a_row = (tid / 32) * 16 + (tid / 4) % 8;
  int h0[2], w0[2];
  bool m_ok[2];
  const float* x_m[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {  // the row's pixel, decoded once
    const int m = m_block + a_row + 8 * j;
    m_ok[j] = m < M;
    const int ms = m_ok[j] ? m : 0;
    const int n_img = ms / PQ, pq = ms - n_img * PQ, op = pq / p.Q, oq = pq - op * p.Q;
    h0[j] = op * p.stride_h - p.pad_top;
    w0[j] = oq * p.stride_w - p.pad_left;
    x_m[j] = x + ((size_t)n_img * p.C + (size_t)g * Cg) * HW;
  }
  // the tap of this thread's next kk (kk0 = a_kq + 4 * copies so far), stepped by 4
  const TapStep step4 = tap_step(4, R, S);
  const TapStep first = tap_step(a_kq, R, S);
  int tc = first.dc, tr = first.dr, ts = first.ds, tkk = a_kq;
  // ---- filter loader
  const float* w_g = w + (size_t)g * Kg * Kdim;

  auto load_tile = [&](int step, int stage) {
    float* As = smem + stage * STAGE;
    float* Bs = As + A_TILE;
    const int k0 = step * T::BK;
#pragma unroll
    for (int c = 0; c < 4; ++c) {  // kk = k0 + 4c + a_kq: this thread's tap (tc, tr, ts)
      const int dh = tr * p.dilation_h, dw = ts * p.dilation_w;
      const bool k_ok = tkk < Kdim;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int h = h0[j] + dh, ww = w0[j] + dw;
        // no branch: every lane issues its copy (a padding tap reads nothing, from the
        // row's own image, a valid address)
        const bool ok = k_ok & m_ok[j] & (h >= 0) & (h < H) & (ww >= 0) & (ww < W);
        const int off = ok ? tc * HW + h * W + ww : 0;
        ptx::cp_async_ca<4>(&As[mma_swz(a_row + 8 * j, 4 * c + a_kq)], x_m[j] + off, ok ? 4 : 0);
      }
      tap_advance(tc, tr, ts, step4, R, S);
      tkk += 4;
    }
    if constexpr (B_VEC) {  // rows tid/4 + 32i, chunk tid%4: 16 bytes each
#pragma unroll
      for (int i = 0; i < T::BN / 32; ++i) {
        const int n = tid / 4 + 32 * i, kk = k0 + 4 * (tid % 4);
        const int kg = n_block + n;
        const int bytes = (kg < Kg && kk < Kdim) ? 4 * min(4, Kdim - kk) : 0;
        const float* src = bytes ? w_g + (size_t)kg * Kdim + kk : w;
        ptx::cp_async_cg16(&Bs[mma_swz(n, 4 * (tid % 4))], src, bytes);
      }
    } else {  // rows tid/16 + 8i, kk = tid%16: 4 bytes each
#pragma unroll
      for (int i = 0; i < T::BN / 8; ++i) {
        const int n = tid / 16 + 8 * i, kk = k0 + tid % 16;
        const int kg = n_block + n;
        const bool ok = kg < Kg && kk < Kdim;
        ptx::cp_async_ca<4>(&Bs[mma_swz(n, tid % 16)], ok ? w_g + (size_t)kg * Kdim + kk : w, ok ? 4 : 0);
      }
    }
  };

  // TF32 rounding (and the lo parts) of the elements this thread's copies brought.
  auto convert = [&](int stage, int lo_buf) {
    float* As = smem + stage * STAGE;
    float* Bs = As + A_TILE;
    float* Alo = smem + (T::STAGES + (LO ? lo_buf : 0)) * STAGE;
    float* Blo = Alo + A_TILE;
    auto one = [&](float* hi, float* lo, int at) {
      const float v = hi[at];
      const float h = ptx::tf32_float(ptx::tf32_rna(v));
      hi[at] = h;
      if constexpr (TF32X3) lo[at] = ptx::tf32_float(ptx::tf32_rna(v - h));
    };
#pragma unroll
    for (int c = 0; c < 4; ++c)
#pragma unroll
      for (int j = 0; j < 2; ++j) one(As, Alo, mma_swz(a_row + 8 * j, 4 * c + a_kq));
    if constexpr (B_VEC) {  // a chunk as one 16-byte read and write (4-byte ones would conflict 4-way)
#pragma unroll
      for (int i = 0; i < T::BN / 32; ++i) {
        const int at = mma_swz(tid / 4 + 32 * i, 4 * (tid % 4));
        const float4 v = *reinterpret_cast<const float4*>(&Bs[at]);
        const float4 h = make_float4(ptx::tf32_float(ptx::tf32_rna(v.x)), ptx::tf32_float(ptx::tf32_rna(v.y)),
                                     ptx::tf32_float(ptx::tf32_rna(v.z)), ptx::tf32_float(ptx::tf32_rna(v.w)));
        *reinterpret_cast<float4*>(&Bs[at]) = h;
        if constexpr (TF32X3)
          *reinterpret_cast<float4*>(&Blo[at]) =
              make_float4(ptx::tf32_float(ptx::tf32_rna(v.x - h.x)), ptx::tf32_float(ptx::tf32_rna(v.y - h.y)),
                          ptx::tf32_float(ptx::tf32_rna(v.z - h.z)), ptx::tf32_float(ptx::tf32_rna(v.w - h.w)));
      }
    } else {
#pragma unroll
      for (int i = 0; i < T::BN / 8; ++i) one(Bs, Blo, mma_swz(tid / 16 + 8 * i, tid % 16));
    }
  };

  // ---- this warp's 32x32: FM x FN mma tiles of 16x8
  const int wm = (warp % T::WARPS_M) * T::WM, wn = (warp / T::WARPS_M) * T::WN;
  float acc[T::FM][T::FN][4];
#pragma unroll
  for (int i = 0; i < T::FM; ++i)
#pragma unroll
    for (int j = 0; j < T::FN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // the fragments of one k8 slice of a tile (hi or lo parts)
  auto fragments = [&](const float* As, const float* Bs, int k8, uint32_t (&a)[T::FM][4],
                       uint32_t (&bf)[T::FN][2]) {
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
      ptx::ldmatrix_x4(a[i], &As[mma_swz(wm + 16 * i + lane % 16, 8 * k8 + 4 * (lane / 16))]);
#pragma unroll
    for (int j = 0; j < T::FN; j += 2) {
      uint32_t q[4];
      ptx::ldmatrix_x4(q, &Bs[mma_swz(wn + 8 * j + 8 * (lane / 16) + lane % 8, 8 * k8 + 4 * ((lane / 8) % 2))]);
      bf[j][0] = q[0], bf[j][1] = q[1], bf[j + 1][0] = q[2], bf[j + 1][1] = q[3];
    }
  };

  // BF16: the fp32 tiles of a stage to bf16, two elements (one word) a thread at a time:
  // rows tid/8 + 16i, word tid%8 (kk 2w, 2w+1), for A and B. Read as float2: each
  // half-warp 2 rows x 64 bytes (all 32 banks); written as words: 4 rows x 32 bytes.
  auto to_bf16 = [&](int stage) {
    const float* As = smem + stage * STAGE;
    const float* Bs = As + A_TILE;
#pragma unroll
    for (int i = 0; i < (T::BM + T::BN) / 16; ++i) {
      const int row = tid / 8 + 16 * i, word = tid % 8;
      const bool is_a = row < T::BM;
      const int r = is_a ? row : row - T::BM;
      const float2 v = *reinterpret_cast<const float2*>(&(is_a ? As : Bs)[mma_swz(r, 2 * word)]);
      bf_tiles[(is_a ? 0 : T::BM * 8) + bf16_swz(r, word)] = ptx::bf16x2_rn(v.x, v.y);
    }
  };

  const int steps = (Kdim + T::BK - 1) / T::BK;
#pragma unroll
  for (int s = 0; s < T::STAGES - 1; ++s) {
    if (s < steps) load_tile(s, s);
    ptx::cp_async_commit();
  }
  for (int step = 0; step < steps; ++step) {
    const int stage = step % T::STAGES;
    ptx::cp_async_wait<T::STAGES - 2>();  // this thread's copies of `step` have landed
    if constexpr (!BF16) convert(stage, step & 1);
    // Every thread's copies and conversions of `step` are visible past it, and every
    // warp is done with the stage of step - 1, which the copies below refill.
    __syncthreads();
    if constexpr (BF16) {  // other threads' elements: a second barrier. The bf16 tiles
      to_bf16(stage);      // were last read by step - 1's multiply, before the one above.
      __syncthreads();
    }
    const int next = step + T::STAGES - 1;
    if (next < steps) load_tile(next, next % T::STAGES);
    ptx::cp_async_commit();  // an empty group past the end keeps the groups counted
    const float* As = smem + stage * STAGE;
    const float* Bs = As + A_TILE;
    const float* Alo = smem + (T::STAGES + (LO ? (step & 1) : 0)) * STAGE;
    const float* Blo = Alo + A_TILE;
    if constexpr (BF16) {  // one k16 step: A as m16 x k16 fragments, B as pairs of n8 x k16
      uint32_t a[T::FM][4], bq[T::FN][2];
#pragma unroll
      for (int i = 0; i < T::FM; ++i)
        ptx::ldmatrix_x4(a[i], &bf_tiles[bf16_swz(wm + 16 * i + lane % 16, 4 * (lane / 16))]);
#pragma unroll
      for (int j = 0; j < T::FN; j += 2) {
        uint32_t q[4];
        const int row = wn + 8 * j + 8 * (lane / 16) + lane % 8;
        ptx::ldmatrix_x4(q, &bf_tiles[T::BM * 8 + bf16_swz(row, 4 * ((lane / 8) % 2))]);
        bq[j][0] = q[0], bq[j][1] = q[1], bq[j + 1][0] = q[2], bq[j + 1][1] = q[3];
      }
#pragma unroll
      for (int i = 0; i < T::FM; ++i)
#pragma unroll
        for (int j = 0; j < T::FN; ++j) ptx::mma_m16n8k16_bf16(acc[i][j], a[i], bq[j], acc[i][j]);
    } else {
#pragma unroll
      for (int k8 = 0; k8 < T::BK / 8; ++k8) {
        uint32_t a[T::FM][4], bf[T::FN][2];
        fragments(As, Bs, k8, a, bf);
        if constexpr (TF32X3) {
          uint32_t a_lo[T::FM][4], b_lo[T::FN][2];
          fragments(Alo, Blo, k8, a_lo, b_lo);
#pragma unroll
          for (int i = 0; i < T::FM; ++i)
#pragma unroll
            for (int j = 0; j < T::FN; ++j) {  // small terms first, as tf32x3_tile.cuh
              ptx::mma_m16n8k8_tf32(acc[i][j], a_lo[i], bf[j], acc[i][j]);
              ptx::mma_m16n8k8_tf32(acc[i][j], a[i], b_lo[j], acc[i][j]);
              ptx::mma_m16n8k8_tf32(acc[i][j], a[i], bf[j], acc[i][j]);
            }
        } else {
#pragma unroll
          for (int i = 0; i < T::FM; ++i)
#pragma unroll
            for (int j = 0; j < T::FN; ++j) ptx::mma_m16n8k8_tf32(acc[i][j], a[i], bf[j], acc[i][j]);
        }
      }
    }
  }
  ptx::cp_async_wait<0>();  // nothing is left in flight (the groups past the end are empty)

  // ---- epilogue: y[n_o, g*Kg + kg, pq_o] = act(acc + b); lane (g, t) holds rows g, g+8
  // and channels 2t, 2t+1 of each 16x8 tile
  const int gq = lane / 4, tq = lane % 4;
  const float* b_g = b != nullptr ? b + (size_t)g * Kg : nullptr;
#pragma unroll
  for (int i = 0; i < T::FM; ++i)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m_block + wm + 16 * i + gq + 8 * half;
      if (m >= M) continue;
      const int n_o = m / PQ, pq_o = m - n_o * PQ;
      float* y_m = y + ((size_t)n_o * p.K + (size_t)g * Kg) * PQ + pq_o;
#pragma unroll
      for (int j = 0; j < T::FN; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int kg = n_block + wn + 8 * j + 2 * tq + e;
          if (kg >= Kg) continue;
          float v = acc[i][j][2 * half + e] + (b_g != nullptr ? b_g[kg] : 0.f);
          if (RELU) v = fmaxf(v, 0.f);
          y_m[(size_t)kg * PQ] = v;
        }
    }
}

using Fwd13Tile = MmaTile<64, 64, 16, 32, 32, 3>;

template <int PREC, bool B_VEC>
static void launch_fwd13(const float* x, const float* w, const float* b, float* y, const Conv2dParams& p,
                         bool relu, dim3 grid, cudaStream_t stream) {
  using T = Fwd13Tile;
  if (relu)
    launch("conv2d_fwd_kernel13", conv2d_fwd_kernel13<T, PREC, B_VEC, true>, grid, T::THREADS, 0, stream, x, w, b,
           y, p);
  else
    launch("conv2d_fwd_kernel13", conv2d_fwd_kernel13<T, PREC, B_VEC, false>, grid, T::THREADS, 0, stream, x, w,
           b, y, p);
}

static void fwd13(const float* x, const float* w, const float* b, float* y, const Conv2dParams& p, bool relu,
                  int prec, const char* launcher, cudaStream_t stream) {
  check_conv2d_params(p, launcher);
  if (p.groups > 65535)
    throw std::invalid_argument(std::string(launcher) + ": groups=" + std::to_string(p.groups) +
                                " exceeds the grid's z limit of 65535");
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  check_int32_size(M + Fwd13Tile::BM, "N*P*Q plus one tile");
  check_grid_yz(ceil_div(Kg, (int64_t)Fwd13Tile::BN), p.groups, launcher);
  require_tf32_tensor_cores(launcher);  // BF16 mma.sync needs compute capability 8.0 as well
  const dim3 grid((unsigned)ceil_div(M, (int64_t)Fwd13Tile::BM), (unsigned)ceil_div(Kg, (int64_t)Fwd13Tile::BN),
                  p.groups);
  const int Kdim = p.C / p.groups * p.R * p.S;
  // the filter's 16-byte copies need 16-byte aligned rows: w aligned and Kdim % 4 == 0
  const bool b_vec = Kdim % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (prec == kFwd13Tf32x3)
    b_vec ? launch_fwd13<kFwd13Tf32x3, true>(x, w, b, y, p, relu, grid, stream)
          : launch_fwd13<kFwd13Tf32x3, false>(x, w, b, y, p, relu, grid, stream);
  else if (prec == kFwd13Tf32)
    b_vec ? launch_fwd13<kFwd13Tf32, true>(x, w, b, y, p, relu, grid, stream)
          : launch_fwd13<kFwd13Tf32, false>(x, w, b, y, p, relu, grid, stream);
  else
    b_vec ? launch_fwd13<kFwd13Bf16, true>(x, w, b, y, p, relu, grid, stream)
          : launch_fwd13<kFwd13Bf16, false>(x, w, b, y, p, relu, grid, stream);
}

void conv2d_fwd13(const float* x, const float* w, const float* b, float* y, const Conv2dParams& p, bool relu,
                  bool tf32x3, cudaStream_t stream) {
  fwd13(x, w, b, y, p, relu, tf32x3 ? kFwd13Tf32x3 : kFwd13Tf32, "conv2d_fwd13", stream);
}

void conv2d_fwd13_bf16(const float* x, const float* w, const float* b, float* y, const Conv2dParams& p, bool relu,
                       cudaStream_t stream) {
  fwd13(x, w, b, y, p, relu, kFwd13Bf16, "conv2d_fwd13_bf16", stream);
}

}  // namespace pycnn
