// conv2d forward, version 12: version 7's double-buffered implicit GEMM, warp-tiled,
// with BK = 16, a tap table instead of divisions, float4 filter loads, 128-bit y
// stores and split-K for grids too small to fill the GPU.
//
// What it does: the GEMM of version 2 (read its header first),
//   Y[m][kg] = sum_kk X[m][kk] * Wt[kk][kg],  m = n*P*Q + op*Q + oq,  kk = c*R*S + r*S + s,
// one block per BM x BN tile of Y (and per group and split of kk in gridDim.z).
//   1. Warp tiles. The block's 8 warps (large tile; 4 in the small one) each own a
//      WM x WN = 64 x 32 piece of it (32 x 32 small), cut into WMITER x WNITER
//      sub-tiles of 32 x 16; inside a sub-tile lane l owns the 4 x 4 outputs at
//      rows (l % 8) * 4 .. +3 and columns (l / 8) * 4 .. +3. A thread thus holds
//      8 x 8 outputs (4 x 8 small) in runs of 4, and per kk it reads its operands
//      as WMITER + WNITER float4s (4 for 64 FMAs): the 8 row runs of a warp are
//      128 contiguous bytes of As, its 4 column runs 64 of Bs, so no two lanes
//      ask one bank for different words (lanes that share a run get a broadcast;
//      the emulator counts no bank conflict, and 2 wavefronts a read, the fewest a
//      128-bit warp read takes in its model). Version 7 strides its
//      threads over the whole block tile, so a warp's reads spread further and its
//      epilogue stores touch more rows at once.
//   2. BK = 16 (version 7: 8): half the barriers and loop overhead per FMA.
//   3. No division in the loop (version 7: 3 to 5). The X gather needs the tap
//      (c, r, s) of every kk. A table of the next two steps' taps lives in shared
//      memory, one int4 per kk: {c*H*W + r*dil_h*W + s*dil_w, r*dil_h, s*dil_w};
//      its BK entries are written by threads 0..BK-1, each stepping its own kk by
//      BK per step with TapStep (igemm_tile.cuh: adds and two carries, no division).
//      A loader reads an entry (one broadcast LDS.128 per warp: a warp's 32
//      threads share a kk), adds its pixel's offset and checks the two bounds as
//      unsigned compares. A kk past C*R*S has an entry whose row offset no pixel
//      can reach, and a row m past N*P*Q a pixel no entry can bring in bounds, so
//      neither needs a test of its own. The alternative, every loader stepping its
//      own taps (fwd_gather.cuh's STEPPED, as version 8 does), was measured here
//      (ptxas and the SASS, sm_90): 1419-1435 main-loop instructions for the large
//      tile against 1259-1275 (FFMA share 72% against 81%), 886-895 against 727-744
//      for the small one (both at 4 resident blocks), and a 24-byte spill of the
//      large tile's scalar variant.
//   4. The filter comes in as float4s: 4 consecutive kk of one channel, when
//      C/groups*R*S is a multiple of 4 and w is 16-byte aligned (scalar otherwise).
//      A warp's load is 16 channels x 8 kk: one full 32-byte sector a channel.
//   5. The epilogue (bias, ReLU) stores y as 128-bit STG.128 when P*Q % 4 == 0 and
//      y is 16-byte aligned, scalar otherwise. Inline st.global.v4.f32: nvcc 13.0
//      turns a C++ float4 store into four STG.32 here as in version 7 (tried: the
//      large tile's epilogue then has 256 STG.32 and no STG.128). A warp's store is 4
//      channels x 128 contiguous bytes: 16 sectors, all used.
//   6. Split-K (z = groups x splits): a grid under one wave (SMs x resident blocks)
//      splits the kk range into whole-BK chunks; split s stores its partial sums to
//      workspace[s] (y's layout, no bias), and conv2d_fwd12_split_sum_kernel adds
//      the splits in split order, then the bias and ReLU: the same bits every run.
//      At batch 32 on 132 SMs (x 5 resident blocks of the small tile), ResNet-50's
//      layer3 3x3 makes 392 blocks (2 splits), its layer4 3x3 and 1x1 2048 -> 512
//      200 (4 splits), its 1x1 512 -> 2048 208 of the large tile (x 2; 2 splits).
// Shared memory, conflict-free by construction:
//   As[2][BK][BM], m fastest, no padding: thread t stores X row kk = t / BM + 2i at
//     m = t % BM, so a warp writes 32 consecutive words; the float4 reads above.
//   Bs[2][BK][BN + 4]: the filter loader's lane l holds kk 4*(l / 16) + 8i .. +3 of
//     channel 16*warp + l % 16 and stores them transposed, one word per kk. Word
//     (kk, n) is in bank (kk * (BN + 4) + n) % 32 = (4 kk + n) % 32; the two kk
//     quads of a warp are 4 rows apart (16 banks), its 16 channels consecutive, so
//     the 32 lanes of each store hit 32 banks. The pad keeps rows 16-byte aligned
//     for the float4 reads (a pad of 0 would make it 4-way, and a pad of 2 would
//     misalign them).
//   taps[2][BK] int4 (256 bytes a buffer); tap_state[BK] and loader[THREADS], int4s
//     that hold the tap writers' and the loaders' state (a thread reads its own),
//     registers' worth the 8x8 tile has not got (it fits 127 registers, no spills).
// One __syncthreads a step: the loads of step t+1 are issued before the multiply of
// step t and stored after it into the other buffers, as in version 7; the taps of
// step t+2 are written after the multiply into the table step t read.
//
// Changed from version 7: the six points above. The result is version 2's up to
// float rounding (and the order of the split sums).
//
// What limits it: the loads still go through registers (no cp.async), the X gather
// is scalar (an im2col row is contiguous only at stride 1, and only within an image
// row), and the FMAs are fp32 on the CUDA cores. Split-K writes and rereads splits
// x |y| floats, and the loop loads one step past its last (unused; a guard would
// cost the registers the 8x8 tile has not got).
//
// Static counters (sm_90, nvcc 13.0.88, pycnn.inspect.static; version 7's in
// brackets): main-loop FFMA share 81% for the 128x128 tile [58%] and 70% for the
// 64x64 one [38%] with the float4 filter loads (80% / 69% with the scalar ones):
// 1024 FFMAs in 1259 instructions an iteration of BK = 16 (512 in 729), no integer
// division in the loop [3 / 5], 127 / 96 registers, no spills, STG.128 stores of y.
// The small tile loads twice the operands per FMA (a thread's 4 x 8 outputs against
// 8 x 8), so its share is lower by construction.
//
// Measured: not yet measured on a GPU
#include <algorithm>

#include "conv2d/conv2d.h"
#include "conv2d/igemm_tile.cuh"

namespace pycnn {

// The block tile: BM x BN outputs, BK = 16 of kk a step, warps of WM x WN cut into
// WMITER x WNITER sub-tiles of 32 x 16 (8 x 4 lanes of 4 x 4 outputs each).
template <int BM_, int BN_, int WM_, int WN_, int WMITER_, int WNITER_>
struct WarpTile {
  static constexpr int BM = BM_, BN = BN_, BK = 16;
  static constexpr int WM = WM_, WN = WN_, WMITER = WMITER_, WNITER = WNITER_;
  static constexpr int SUB_M = WM / WMITER, SUB_N = WN / WNITER;  // a warp sub-tile
  static constexpr int TM = WMITER * 4, TN = WNITER * 4;          // outputs a thread
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int PAD_B = 4;                         // Bs row padding (header)
  static constexpr int A_STEP = THREADS / BM;             // X rows kk a loader pass covers
  static constexpr int A_LOADS = BK / A_STEP;             // X elements a thread loads a step
  static constexpr int B_LOADS = BK / 8;                  // filter float4s a thread loads a step
  // Resident blocks asked of ptxas: 2 of the large tile (at most 128 registers; it
  // takes 127), 5 of the small one (at most 102; it takes 96, where 4 let it take 113
  // for the same loop, and 6 make it spill 12-36 bytes).
  static constexpr int MIN_BLOCKS = 640 / THREADS;
  static_assert(SUB_M == 32 && SUB_N == 16, "a sub-tile is 8 x 4 lanes of 4 x 4 outputs");
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % WMITER == 0 && WN % WNITER == 0,
                "warps and sub-tiles divide the tile");
  static_assert(THREADS % BM == 0 && BK % A_STEP == 0, "X loader: whole kk rows of m");
  static_assert(BN == 16 * (THREADS / 32), "filter loader: 16 channels a warp");
  static_assert(BK == 16 && THREADS >= BK, "tap table: one thread per kk of a step");
};

// 8 warps of 64 x 32 (8 x 8 outputs a thread); 4 warps of 32 x 32 (4 x 8).
using Fwd12Large = WarpTile<128, 128, 64, 32, 2, 2>;
using Fwd12Small = WarpTile<64, 64, 32, 32, 1, 2>;

// Added to a pixel's row h0, it puts every tap out of bounds (see point 3).
constexpr int kFwd12Far = -(1 << 29);

// out: y (one split), or the workspace, split s at out + s * split_stride (then b is
// nullptr and relu false). chunk_steps: steps of BK a split takes. VEC_W: the filter
// as float4s (C/groups*R*S % 4 == 0 and w 16-byte aligned).
template <class T, bool VEC_W>
__global__ void __launch_bounds__(T::THREADS, T::MIN_BLOCKS)
conv2d_fwd_kernel12(const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ out, Conv2dParams p,
                    int chunk_steps, int split_stride, bool relu, TapStep bk_step) {
  struct alignas(16) Smem {
    float As[2][T::BK][T::BM];
    float Bs[2][T::BK][T::BN + T::PAD_B];
    int4 taps[2][T::BK];
    int4 tap_state[T::BK];    // the writers' (c, r, s, kk)
    int4 loader[T::THREADS];  // each thread's (x_m, h0, w0, w_row) below
  };  // tap_state and loader are registers' worth kept here: the 8x8 tile has none to spare
  __shared__ Smem sm;

  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int PQ = p.P * p.Q, M = p.N * PQ, HW = p.H * p.W;
  const int Kdim = Cg * p.R * p.S;
  const int g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
  const int m_block = blockIdx.x * T::BM, n_block = blockIdx.y * T::BN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int k_begin = split * chunk_steps * T::BK;  // this split's first kk
  const int steps = max(0, min(chunk_steps, ceil_div(Kdim - k_begin, T::BK)));

  // ---- the tap table's writers: thread j < BK owns kk = k_begin + j + BK * step, its
  // tap (c, r, s) in tap_state[j]; bk_step (a kernel argument) is BK as a change of tap.
  if (tid < T::BK) {  // the kernel's divisions: once, before the loop
    const TapStep first = tap_step(k_begin + tid, p.R, p.S);
    sm.tap_state[tid] = make_int4(first.dc, first.dr, first.ds, k_begin + tid);
  }
  auto write_tap = [&](int buf) {  // the entry of the slot's kk, then on to its next step
    int4 st = sm.tap_state[tid];
    int4 e = make_int4(0, kFwd12Far, 0, 0);
    if (st.w < Kdim) {
      const int dh = st.y * p.dilation_h, dw = st.z * p.dilation_w;
      e = make_int4(st.x * HW + dh * p.W + dw, dh, dw, 0);
    }
    sm.taps[buf][tid] = e;
    tap_advance(st.x, st.y, st.z, bk_step, p.R, p.S);
    st.w += T::BK;
    sm.tap_state[tid] = st;
  };

  // ---- X loader: row m = m_block + t % BM of the tile, kk rows t / BM + A_STEP * i.
  const int a_m = tid % T::BM, a_k = tid / T::BM;
  int a_h0 = kFwd12Far, a_w0 = 0;  // a row past N*P*Q: never in bounds
  int x_m = 0;  // the offset in x of (c = 0, h0, w0) of this pixel's image and group: it
                // may lie outside x (h0, w0 < 0); x is read only at in-bounds taps
  {
    const int m = m_block + a_m;
    if (m < M) {
      const int n_img = m / PQ, pq = m - n_img * PQ;
      const int op = pq / p.Q, oq = pq - op * p.Q;
      a_h0 = op * p.stride_h - p.pad_top;
      a_w0 = oq * p.stride_w - p.pad_left;
      // x[x_m + entry.x] is x at (c, h0 + r*dil_h, w0 + s*dil_w)
      x_m = (n_img * p.C + g * Cg) * HW + a_h0 * p.W + a_w0;
    }
  }
  float a_next[T::A_LOADS];

  // ---- filter loader: channel n_block + 16 * warp + lane % 16, kk quads lane / 16 + 2i.
  const int b_n = 16 * warp + lane % 16, b_q = lane / 16;
  const bool b_ok = n_block + b_n < Kg;
  const int w_row = (g * Kg + (b_ok ? n_block + b_n : 0)) * Kdim;  // the channel's offset in w
  const int b_end = b_ok ? Kdim : 0;  // kk past it reads as 0: a channel past K/groups has none
  sm.loader[tid] = make_int4(x_m, a_h0, a_w0, w_row);  // read back once a step
  int b_kk = k_begin + 4 * b_q;  // the next step's first kk of this thread
  float b_next[T::B_LOADS][4];

  // Issue the global loads of the step whose taps are in taps[tbuf].
  auto load = [&](int tbuf) {
    const int4 me = sm.loader[tid];  // x_m, h0, w0, w_row
#pragma unroll
    for (int i = 0; i < T::A_LOADS; ++i) {
      const int4 e = sm.taps[tbuf][a_k + i * T::A_STEP];
      const int h = me.y + e.y, ww = me.z + e.z;
      a_next[i] = ((unsigned)h < (unsigned)p.H && (unsigned)ww < (unsigned)p.W) ? x[me.x + e.x] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < T::B_LOADS; ++i) {
      const int kk = b_kk + 8 * i;
      if constexpr (VEC_W) {  // Kdim % 4 == 0: kk .. kk+3 are all in range or none is
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (kk < b_end) v = *reinterpret_cast<const float4*>(w + me.w + kk);
        b_next[i][0] = v.x, b_next[i][1] = v.y, b_next[i][2] = v.z, b_next[i][3] = v.w;
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) b_next[i][e] = (kk + e < b_end) ? w[me.w + kk + e] : 0.f;
      }
    }
    b_kk += T::BK;
  };
  // Write the loaded step into buffer `buf` of the tiles.
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < T::A_LOADS; ++i) sm.As[buf][a_k + i * T::A_STEP][a_m] = a_next[i];
#pragma unroll
    for (int i = 0; i < T::B_LOADS; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) sm.Bs[buf][4 * (b_q + 2 * i) + e][b_n] = b_next[i][e];
  };

  // ---- the warp tile: warp (wm, wn) owns rows wm*WM .. and columns wn*WN .. of the tile.
  const int wm0 = (warp % T::WARPS_M) * T::WM, wn0 = (warp / T::WARPS_M) * T::WN;
  const int lane_m = lane % 8, lane_n = lane / 8;
  const int a_col = wm0 + 4 * lane_m, b_col = wn0 + 4 * lane_n;  // the first run of each
  float acc[T::TM][T::TN] = {};

  if (steps > 0) {  // the same for every thread of the block
    if (tid < T::BK) {
      write_tap(0);
      write_tap(1);
    }
    __syncthreads();
    load(0);
    store(0);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
      const int cur = step & 1;
      // Global loads in flight behind the FMAs below. The last step loads one more
      // step that nobody multiplies (the next split's kk, or zeros past C*R*S): in
      // bounds by construction, and cheaper than the registers a guard costs
      // (ptxas spills 28 bytes of the 8x8 tile with `if (step + 1 < steps)`).
      load(cur ^ 1);
#pragma unroll
      for (int kk = 0; kk < T::BK; ++kk) {
        float a[T::TM], bv[T::TN];
#pragma unroll
        for (int i = 0; i < T::WMITER; ++i) {
          const float4 v = *reinterpret_cast<const float4*>(&sm.As[cur][kk][a_col + i * T::SUB_M]);
          a[4 * i] = v.x, a[4 * i + 1] = v.y, a[4 * i + 2] = v.z, a[4 * i + 3] = v.w;
        }
#pragma unroll
        for (int j = 0; j < T::WNITER; ++j) {
          const float4 v = *reinterpret_cast<const float4*>(&sm.Bs[cur][kk][b_col + j * T::SUB_N]);
          bv[4 * j] = v.x, bv[4 * j + 1] = v.y, bv[4 * j + 2] = v.z, bv[4 * j + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < T::TM; ++i)
#pragma unroll
          for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
      }
      // The other tile buffers were last read by the previous step's multiply, and
      // taps[cur] by the loads issued in the previous step: both before the last barrier.
      store(cur ^ 1);
      if (tid < T::BK) write_tap(cur);  // the taps of step + 2
      __syncthreads();
    }
  }

  // ---- epilogue: out[n, g*Kg + kg, pq] = act(acc + b) (a split: acc alone), 4
  // consecutive m of one channel at a time.
  float* dst0 = out + (size_t)split * split_stride;
  const bool vec = PQ % 4 == 0 && (reinterpret_cast<uintptr_t>(dst0) & 15) == 0;
#pragma unroll
  for (int i = 0; i < T::WMITER; ++i) {
    const int m = m_block + a_col + i * T::SUB_M;  // a multiple of 4
    if (m >= M) continue;
    const int n_img = m / PQ, pq = m - n_img * PQ;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int kg = n_block + b_col + (j / 4) * T::SUB_N + j % 4;
      if (kg >= Kg) continue;
      const int k = g * Kg + kg;
      const float bias = b != nullptr ? b[k] : 0.f;
      float v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[e] = acc[4 * i + e][j] + bias;
        if (relu) v[e] = fmaxf(v[e], 0.f);
      }
      if (vec) {  // PQ % 4 == 0: m .. m+3 lie in image n_img (and M % 4 == 0, so below M)
        store_global_v4(dst0 + ((size_t)n_img * p.K + k) * PQ + pq, v[0], v[1], v[2], v[3]);
      } else {    // one at a time: m + e may start the next image, or pass M
        int ne = n_img, pe = pq;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (m + e >= M) break;
          dst0[((size_t)ne * p.K + k) * PQ + pe] = v[e];
          if (++pe == PQ) pe = 0, ++ne;
        }
      }
    }
  }
}

// y[i] = act(b[k] + sum over s = 0 .. splits-1 of ws[s * total + i], in that order),
// k = i / PQ % K; VEC: four consecutive i at a time (PQ % 4 == 0, y and ws aligned).
template <bool VEC>
__global__ void conv2d_fwd12_split_sum_kernel(const float* __restrict__ ws, const float* __restrict__ b,
                                              float* __restrict__ y, int total, int splits, int PQ, int K,
                                              bool relu) {
  constexpr int V = VEC ? 4 : 1;
  for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < total;
       i += (int64_t)gridDim.x * blockDim.x * V) {
    float sum[V];
    if constexpr (VEC) {
      const float4 v = *reinterpret_cast<const float4*>(ws + i);
      sum[0] = v.x, sum[1] = v.y, sum[2] = v.z, sum[3] = v.w;
      for (int s = 1; s < splits; ++s) {
        const float4 u = *reinterpret_cast<const float4*>(ws + (size_t)s * total + i);
        sum[0] += u.x, sum[1] += u.y, sum[2] += u.z, sum[3] += u.w;
      }
    } else {
      sum[0] = ws[i];
      for (int s = 1; s < splits; ++s) sum[0] += ws[(size_t)s * total + i];
    }
    const float bias = b != nullptr ? b[i / PQ % K] : 0.f;  // the V values share a channel
#pragma unroll
    for (int e = 0; e < V; ++e) {
      sum[e] += bias;
      if (relu) sum[e] = fmaxf(sum[e], 0.f);
    }
    if constexpr (VEC)
      *reinterpret_cast<float4*>(y + i) = make_float4(sum[0], sum[1], sum[2], sum[3]);
    else
      y[i] = sum[0];
  }
}

// ---- the launcher's choices: pure functions of the shape and the SM count.

// Each split takes at least this many steps of BK (128 of C*R*S), and at most this
// many splits: beyond them the workspace traffic outweighs the fuller grid.
constexpr int kFwd12MinSplitSteps = 8, kFwd12MaxSplits = 16;

// Igemm_use_large_tile's rule (version 2's): the large tile where the GEMM is at
// least 96 channels wide and its grid still gives every SM a block.
bool conv2d_fwd12_large_tile(const Conv2dParams& p, int num_sms) {
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  const int64_t blocks = ceil_div(M, (int64_t)Fwd12Large::BM) * ceil_div(Kg, (int64_t)Fwd12Large::BN) * p.groups;
  return Kg >= 96 && blocks >= num_sms;
}

int conv2d_fwd12_splits(const Conv2dParams& p, int num_sms) {
  check_conv2d_params(p, "conv2d_fwd12_splits");
  if (num_sms < 1)
    throw std::invalid_argument("conv2d_fwd12_splits: num_sms must be >= 1, got " + std::to_string(num_sms));
  const bool large = conv2d_fwd12_large_tile(p, num_sms);
  const int64_t BM = large ? Fwd12Large::BM : Fwd12Small::BM, BN = large ? Fwd12Large::BN : Fwd12Small::BN;
  const int64_t wave = (int64_t)num_sms * (large ? Fwd12Large::MIN_BLOCKS : Fwd12Small::MIN_BLOCKS);
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  const int64_t blocks = ceil_div(M, BM) * ceil_div(Kg, BN) * p.groups;
  if (blocks >= wave) return 1;
  const int64_t steps = ceil_div((int64_t)(p.C / p.groups) * p.R * p.S, (int64_t)Fwd12Large::BK);
  int64_t splits = ceil_div(wave, blocks);                          // about one wave
  splits = std::min<int64_t>(splits, steps / kFwd12MinSplitSteps);  // enough steps each
  splits = std::min<int64_t>(splits, kFwd12MaxSplits);
  splits = std::min<int64_t>(splits, 65535 / p.groups);             // grid z = splits * groups
  return (int)std::max<int64_t>(splits, 1);
}

size_t conv2d_fwd12_workspace_bytes(const Conv2dParams& p, int splits) {
  check_conv2d_params(p, "conv2d_fwd12_workspace_bytes");
  if (splits < 1)
    throw std::invalid_argument("conv2d_fwd12_workspace_bytes: splits must be >= 1, got " +
                                std::to_string(splits));
  if (splits == 1) return 0;
  return (size_t)splits * p.N * p.K * p.P * p.Q * sizeof(float);
}

template <class T>
static void launch_fwd12(const float* x, const float* w, const float* b, float* y, float* workspace,
                         const Conv2dParams& p, bool relu, int splits, cudaStream_t stream) {
  const int M = p.N * p.P * p.Q, Kg = p.K / p.groups, Kdim = p.C / p.groups * p.R * p.S;
  const int chunk_steps = ceil_div(ceil_div(Kdim, T::BK), splits);
  check_grid_yz(ceil_div(Kg, T::BN), (int64_t)splits * p.groups, "conv2d_fwd12");
  const dim3 grid(ceil_div(M, T::BM), ceil_div(Kg, T::BN), splits * p.groups);
  const bool vec_w = Kdim % 4 == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0;
  const int total = p.N * p.K * p.P * p.Q;
  // One split: straight into y with bias and ReLU. Several: partial sums into the
  // workspace, then the fixed-order sum with bias and ReLU.
  float* out = splits == 1 ? y : workspace;
  const float* kb = splits == 1 ? b : nullptr;
  const bool krelu = splits == 1 && relu;
  const int stride = splits == 1 ? 0 : total;
  const TapStep bk_step = tap_step(T::BK, p.R, p.S);
  if (vec_w)
    launch("conv2d_fwd_kernel12", conv2d_fwd_kernel12<T, true>, grid, T::THREADS, 0, stream, x, w, kb, out, p,
           chunk_steps, stride, krelu, bk_step);
  else
    launch("conv2d_fwd_kernel12", conv2d_fwd_kernel12<T, false>, grid, T::THREADS, 0, stream, x, w, kb, out, p,
           chunk_steps, stride, krelu, bk_step);
  if (splits == 1) return;
  const int block = 256;
  const int PQ = p.P * p.Q;
  if (PQ % 4 == 0 && (reinterpret_cast<uintptr_t>(y) & 15) == 0 && (reinterpret_cast<uintptr_t>(workspace) & 15) == 0)
    launch("conv2d_fwd12_split_sum_kernel", conv2d_fwd12_split_sum_kernel<true>, grid_for(total / 4, block), block,
           0, stream, workspace, b, y, total, splits, PQ, p.K, relu);
  else
    launch("conv2d_fwd12_split_sum_kernel", conv2d_fwd12_split_sum_kernel<false>, grid_for(total, block), block, 0,
           stream, workspace, b, y, total, splits, PQ, p.K, relu);
}

void conv2d_fwd12(const float* x, const float* w, const float* b, float* y, float* workspace,
                  const Conv2dParams& p, bool relu, int splits, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_fwd12");
  if (splits < 1 || (int64_t)splits * p.groups > 65535)
    throw std::invalid_argument("conv2d_fwd12: splits must be >= 1 with splits*groups <= 65535, got splits=" +
                                std::to_string(splits) + " groups=" + std::to_string(p.groups));
  const int64_t M = (int64_t)p.N * p.P * p.Q;
  check_int32_size(M + Fwd12Large::BM, "N*P*Q plus one tile");
  // split * chunk_steps * BK + 2 * BK (the tap writers' last kk) must stay an int.
  check_int32_size((int64_t)(p.C / p.groups) * p.R * p.S + (int64_t)(splits + 2) * Fwd12Large::BK,
                   "C/groups*R*S plus a step a split");
  if (splits > 1 && workspace == nullptr)
    throw std::invalid_argument("conv2d_fwd12: splits=" + std::to_string(splits) + " needs a workspace of " +
                                std::to_string(conv2d_fwd12_workspace_bytes(p, splits)) +
                                " bytes (conv2d_fwd12_workspace_bytes), got a null pointer");
  if (conv2d_fwd12_large_tile(p, num_sms_of_current_device()))
    launch_fwd12<Fwd12Large>(x, w, b, y, workspace, p, relu, splits, stream);
  else
    launch_fwd12<Fwd12Small>(x, w, b, y, workspace, p, relu, splits, stream);
}

}  // namespace pycnn
