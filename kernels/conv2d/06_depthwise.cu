// conv2d, version 6: depthwise convolution (one input channel per group),
// forward, backward-data and backward-filter.
//
// What it does: with C/groups = 1, output channel k reads input channel
// c = k / m alone, where m = K/groups is the channel multiplier (1 in MobileNet's
// depthwise layers; a first layer on one input channel is the case groups = 1, m = K):
//   forward         y[n,k,p,q]  = sum_{r,s} x[n, k/m, p*sh-pt+r*dh, q*sw-pl+s*dw] * w[k,0,r,s]
//   backward-data   dx[n,c,h,w] = sum_{j<m} sum_{r,s} dy[n, c*m+j, p, q] * w[c*m+j, 0, r, s]
//                   over the taps that land on (h, w), as in version 1
//   backward-filter dw[k,0,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, k/m, p*sh-pt+r*dh, q*sw-pl+s*dw]
// There is no sum over channels, so there is no GEMM to build: each output costs
// R*S multiply-adds against two floats of compulsory traffic, and the layer is
// bound by memory, not by FLOPs.
//
// Forward and backward-data: blockIdx.x is one output plane (n*K + k of y, or
// n*C + c of dx), blockIdx.y a run of its pixels, one thread per pixel, so
// everything that depends on the plane (the channel, its filter, the image
// pointers) is worked out once per block, and consecutive threads take
// consecutive pixels (coalesced). The block is as wide as the plane rounded up to
// a warp, at most 256 threads, so that a 7x7 plane does not idle most of a block.
// With KSIZE = 3, 5 or 7 (square filters of those sizes) the tap loops are
// unrolled and the forward keeps the filter in registers; other sizes loop.
//
// Backward-filter: blockIdx.x is the output channel k, blockIdx.y a split of the
// N*P*Q pixels. Each thread walks its share of the split, reads dy once per pixel,
// and adds dy times the input under every tap into R*S register accumulators
// (KSIZE 3, 5, 7; other sizes make one pass per tap). A block reduction in a fixed
// order gives the split's sums; with several splits they go to a workspace and
// conv2d_split_sum_kernel adds them in split order. No atomics: deterministic.
//
// Changed from versions 1-4: the implicit-GEMM versions would compute a tile 64
// columns wide of which one column is wanted (the GEMM's N side is K/groups for
// the forward and C/groups = 1 for the backward passes). Version 1 handles the
// forward and backward-data shapes well enough but decodes four indices per
// output and loops over taps at run time; its backward-filter is the real cost:
// K*R*S threads in all (9 * 32 = 288 for a 32-channel 3x3 layer), each reducing
// over all N*P*Q pixels. Here the reduction is spread over K * splits blocks.
//
// What limits it: neighbouring outputs share most of their taps, but each thread
// loads its R*S inputs itself (through L1) instead of from a shared-memory tile,
// so L1 traffic is R*S times the compulsory; stride 2 reads every other float of x.
// Backward-data finds its taps with a division test per tap (as version 1).
//
// Measured: not yet measured on a GPU
#include <algorithm>
#include <type_traits>

#include "conv2d/conv2d.h"
#include "conv2d/split_sum.cuh"

namespace pycnn {

constexpr int kDwThreads = 256;   // most threads per block (the forward and backward-data
                                  // launchers narrow it for small planes)
static_assert(kDwThreads % 32 == 0, "whole warps: the backward-filter reduction shuffles");

// ----------------------------------------------------------------- forward

template <int KSIZE, bool RELU>
__global__ void __launch_bounds__(kDwThreads)
conv2d_fwd_kernel6(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ b, float* __restrict__ y, Conv2dParams p) {
  const int R = KSIZE ? KSIZE : p.R, S = KSIZE ? KSIZE : p.S;  // constants when KSIZE > 0
  const int PQ = p.P * p.Q;
  const int plane = blockIdx.x;                 // plane = n*K + k: y's plane offset / PQ
  const int k = plane % p.K, n = plane / p.K;
  const int c = k / (p.K / p.groups);           // the input channel: k / m
  const float* xc = x + ((size_t)n * p.C + c) * p.H * p.W;  // x[n, c, 0, 0]
  const float* wk = w + (size_t)k * R * S;                   // w[k, 0, 0, 0]
  float* yk = y + (size_t)plane * PQ;                        // y[n, k, 0, 0]
  const float bias = b != nullptr ? b[k] : 0.f;

  // The filter in registers (unrolled taps); with KSIZE = 0 it is read in the loop.
  [[maybe_unused]] float wr[KSIZE ? KSIZE * KSIZE : 1];
  if constexpr (KSIZE > 0) {
#pragma unroll
    for (int t = 0; t < KSIZE * KSIZE; ++t) wr[t] = wk[t];
  }

  // 64-bit counter: pq + the grid's stride may pass 2^31 even when PQ does not.
  for (int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; i < PQ;
       i += (int64_t)gridDim.y * blockDim.x) {
    const int pq = (int)i;
    const int op = pq / p.Q, oq = pq - op * p.Q;
    const int h0 = op * p.stride_h - p.pad_top;   // input row of tap r = 0
    const int w0 = oq * p.stride_w - p.pad_left;  // input column of tap s = 0
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int h = h0 + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const int iw = w0 + s * p.dilation_w;
        if (iw < 0 || iw >= p.W) continue;
        float wv;
        if constexpr (KSIZE > 0) wv = wr[r * KSIZE + s];
        else wv = wk[r * S + s];
        acc += xc[h * p.W + iw] * wv;
      }
    }
    acc += bias;
    if (RELU) acc = fmaxf(acc, 0.f);
    yk[pq] = acc;
  }
}

// ----------------------------------------------------------- backward-data

template <int KSIZE>
__global__ void __launch_bounds__(kDwThreads)
conv2d_bwd_data_kernel6(const float* __restrict__ dy, const float* __restrict__ w,
                        float* __restrict__ dx, Conv2dParams p) {
  const int R = KSIZE ? KSIZE : p.R, S = KSIZE ? KSIZE : p.S;
  const int PQ = p.P * p.Q, HW = p.H * p.W;
  const int m = p.K / p.groups;                 // output channels per input channel
  const int plane = blockIdx.x;                 // plane = n*C + c: dx's plane offset / HW
  const int c = plane % p.C, n = plane / p.C;
  const float* dyc = dy + ((size_t)n * p.K + (size_t)c * m) * PQ;  // dy[n, c*m, 0, 0]
  const float* wc = w + (size_t)c * m * R * S;                      // w[c*m, 0, 0, 0]
  float* dxc = dx + (size_t)plane * HW;

  for (int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; i < HW;
       i += (int64_t)gridDim.y * blockDim.x) {
    const int hw = (int)i;
    const int h = hw / p.W, iw = hw - h * p.W;
    float acc = 0.f;
    for (int j = 0; j < m; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        // Tap r of output row op reads input row op*sh - pt + r*dh; we need it == h.
        const int hp = h + p.pad_top - r * p.dilation_h;   // = op * sh
        if (hp < 0 || hp % p.stride_h != 0) continue;
        const int op = hp / p.stride_h;
        if (op >= p.P) continue;
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const int wq = iw + p.pad_left - s * p.dilation_w;  // = oq * sw
          if (wq < 0 || wq % p.stride_w != 0) continue;
          const int oq = wq / p.stride_w;
          if (oq >= p.Q) continue;
          acc += dyc[(size_t)j * PQ + op * p.Q + oq] * wc[(j * R + r) * S + s];
        }
      }
    }
    dxc[hw] = acc;
  }
}

// --------------------------------------------------------- backward-filter

// Sum of v over the warp; every lane gets it (xor tree: a fixed order).
__device__ __forceinline__ float dw_warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// out + (blockIdx.y * K + k) * R*S receives this block's sums for channel k:
// dw itself when there is one split, else row blockIdx.y of the workspace.
// The split covers pixels j = n*P*Q + pq in [blockIdx.y * chunk, + chunk) of N*P*Q.
template <int KSIZE>
__global__ void __launch_bounds__(kDwThreads)
conv2d_bwd_filter_kernel6(const float* __restrict__ x, const float* __restrict__ dy,
                          float* __restrict__ out, Conv2dParams p, int chunk) {
  constexpr int ACC = KSIZE ? KSIZE * KSIZE : 1;  // accumulators per thread
  constexpr int WARPS = kDwThreads / 32;
  __shared__ float warp_sums[ACC][WARPS];

  const int R = KSIZE ? KSIZE : p.R, S = KSIZE ? KSIZE : p.S, RS = R * S;
  const int PQ = p.P * p.Q, HW = p.H * p.W;
  const int k = blockIdx.x;
  const int c = k / (p.K / p.groups);
  const int npq = p.N * PQ;
  const int begin = blockIdx.y * chunk;
  const int end = min(begin + chunk, npq);        // begin >= end: an empty split, sums 0
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float* out_k = out + ((size_t)blockIdx.y * p.K + k) * RS;

  // Taps handled per pass over the split: all of them when KSIZE > 0, else one.
  const int passes = KSIZE ? 1 : RS;
  for (int t0 = 0; t0 < passes; ++t0) {
    float acc[ACC] = {};
    for (int j = begin + tid; j < end; j += kDwThreads) {
      const int n = j / PQ, pq = j - n * PQ;
      const int op = pq / p.Q, oq = pq - op * p.Q;
      const float g = dy[((size_t)n * p.K + k) * PQ + pq];
      const float* xc = x + ((size_t)n * p.C + c) * HW;
      const int h0 = op * p.stride_h - p.pad_top, w0 = oq * p.stride_w - p.pad_left;
#pragma unroll
      for (int t = 0; t < ACC; ++t) {
        const int tap = KSIZE ? t : t0;           // r*S + s
        const int r = tap / S, s = tap - r * S;   // constants when KSIZE > 0
        const int h = h0 + r * p.dilation_h, iw = w0 + s * p.dilation_w;
        if (h >= 0 && h < p.H && iw >= 0 && iw < p.W) acc[t] += g * xc[h * p.W + iw];
      }
    }
    // Block reduction, fixed order: each warp by an xor tree, then the warps in order.
#pragma unroll
    for (int t = 0; t < ACC; ++t) {
      const float v = dw_warp_sum(acc[t]);
      if (lane == 0) warp_sums[t][warp] = v;
    }
    __syncthreads();
    for (int t = tid; t < ACC; t += kDwThreads) {
      float sum = 0.f;
      for (int i = 0; i < WARPS; ++i) sum += warp_sums[t][i];
      out_k[KSIZE ? t : t0] = sum;
    }
    __syncthreads();  // the next pass overwrites warp_sums
  }
}

// Pure functions of the shape (no GPU needed; the emulator and Python size the
// workspace with them).

// The filter size the kernels are specialised for: 3, 5 or 7 when the filter is
// that square, otherwise 0 (the general loops).
static int dw_ksize(const Conv2dParams& p) {
  return p.R == p.S && (p.R == 3 || p.R == 5 || p.R == 7) ? p.R : 0;
}

static void check_depthwise(const Conv2dParams& p, const char* launcher) {
  check_conv2d_params(p, launcher);
  if (p.C != p.groups)
    throw std::invalid_argument(std::string(launcher) +
                                ": depthwise only (C/groups = 1), got C=" + std::to_string(p.C) +
                                " groups=" + std::to_string(p.groups));
}

// Fewest pixels worth a split of their own (16 per thread): below that the
// partial sums' traffic and the second kernel outweigh the parallelism.
constexpr int kDwMinSplitChunk = 16 * kDwThreads;

int conv2d_bwd_filter6_splits(const Conv2dParams& p, int num_sms) {
  check_depthwise(p, "conv2d_bwd_filter6_splits");
  if (num_sms < 1)
    throw std::invalid_argument("conv2d_bwd_filter6_splits: num_sms must be >= 1, got " +
                                std::to_string(num_sms));
  const int64_t npq = (int64_t)p.N * p.P * p.Q;
  int64_t splits = ceil_div((int64_t)2 * num_sms, (int64_t)p.K);   // about two waves of K * splits blocks
  splits = std::min<int64_t>(splits, ceil_div(npq, (int64_t)kDwMinSplitChunk));
  splits = std::min<int64_t>(splits, 1024);
  return (int)std::max<int64_t>(splits, 1);
}

size_t conv2d_bwd_filter6_workspace_bytes(const Conv2dParams& p, int splits) {
  check_depthwise(p, "conv2d_bwd_filter6_workspace_bytes");
  if (splits < 1)
    throw std::invalid_argument("conv2d_bwd_filter6_workspace_bytes: splits must be >= 1, got " +
                                std::to_string(splits));
  if (splits == 1) return 0;
  return (size_t)splits * p.K * p.R * p.S * sizeof(float);
}

// Launchers.
// A block per plane (grid x, up to 2^31-1) and ceil(pixels / threads) runs of
// pixels (grid y, capped: the kernels stride over the rest).
static dim3 dw_plane_grid(int64_t planes, int64_t pixels, int threads) {
  return dim3((unsigned)planes, (unsigned)std::min<int64_t>(ceil_div(pixels, (int64_t)threads), 65535));
}

// As wide as the plane, rounded up to a warp, at most kDwThreads.
static int dw_plane_threads(int64_t pixels) {
  return (int)std::min<int64_t>(kDwThreads, ceil_div(pixels, (int64_t)32) * 32);
}

void conv2d_fwd6(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream) {
  check_depthwise(p, "conv2d_fwd6");
  const int64_t PQ = (int64_t)p.P * p.Q;
  const int threads = dw_plane_threads(PQ);
  const dim3 grid = dw_plane_grid((int64_t)p.N * p.K, PQ, threads);
  auto launch_ks = [&](auto ksize) {
    constexpr int KS = decltype(ksize)::value;
    if (relu)
      launch("conv2d_fwd_kernel6", conv2d_fwd_kernel6<KS, true>, grid, threads, 0, stream, x, w, b, y, p);
    else
      launch("conv2d_fwd_kernel6", conv2d_fwd_kernel6<KS, false>, grid, threads, 0, stream, x, w, b, y, p);
  };
  switch (dw_ksize(p)) {
    case 3: launch_ks(std::integral_constant<int, 3>{}); break;
    case 5: launch_ks(std::integral_constant<int, 5>{}); break;
    case 7: launch_ks(std::integral_constant<int, 7>{}); break;
    default: launch_ks(std::integral_constant<int, 0>{}); break;
  }
}

void conv2d_bwd_data6(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream) {
  check_depthwise(p, "conv2d_bwd_data6");
  const int64_t HW = (int64_t)p.H * p.W;
  const int threads = dw_plane_threads(HW);
  const dim3 grid = dw_plane_grid((int64_t)p.N * p.C, HW, threads);
  switch (dw_ksize(p)) {
    case 3: launch("conv2d_bwd_data_kernel6", conv2d_bwd_data_kernel6<3>, grid, threads, 0, stream, dy, w, dx, p); break;
    case 5: launch("conv2d_bwd_data_kernel6", conv2d_bwd_data_kernel6<5>, grid, threads, 0, stream, dy, w, dx, p); break;
    case 7: launch("conv2d_bwd_data_kernel6", conv2d_bwd_data_kernel6<7>, grid, threads, 0, stream, dy, w, dx, p); break;
    default: launch("conv2d_bwd_data_kernel6", conv2d_bwd_data_kernel6<0>, grid, threads, 0, stream, dy, w, dx, p); break;
  }
}

void conv2d_bwd_filter6(const float* x, const float* dy, float* dw, float* workspace,
                        const Conv2dParams& p, int splits, cudaStream_t stream) {
  check_depthwise(p, "conv2d_bwd_filter6");
  if (splits < 1 || splits > 65535)  // grid y = splits
    throw std::invalid_argument("conv2d_bwd_filter6: splits must be in [1, 65535], got " +
                                std::to_string(splits));
  const int64_t npq = (int64_t)p.N * p.P * p.Q;
  // j + blockDim and split * chunk (< N*P*Q + splits) stay ints.
  check_int32_size(npq + splits + kDwThreads, "N*P*Q plus the splits and one block");
  if (splits > 1 && workspace == nullptr)
    throw std::invalid_argument("conv2d_bwd_filter6: splits=" + std::to_string(splits) +
                                " needs a workspace of " +
                                std::to_string(conv2d_bwd_filter6_workspace_bytes(p, splits)) +
                                " bytes, got a null pointer");
  const int chunk = (int)ceil_div(npq, (int64_t)splits);
  float* out = splits > 1 ? workspace : dw;
  const dim3 grid(p.K, splits);
  switch (dw_ksize(p)) {
    case 3: launch("conv2d_bwd_filter_kernel6", conv2d_bwd_filter_kernel6<3>, grid, kDwThreads, 0, stream, x, dy, out, p, chunk); break;
    case 5: launch("conv2d_bwd_filter_kernel6", conv2d_bwd_filter_kernel6<5>, grid, kDwThreads, 0, stream, x, dy, out, p, chunk); break;
    case 7: launch("conv2d_bwd_filter_kernel6", conv2d_bwd_filter_kernel6<7>, grid, kDwThreads, 0, stream, x, dy, out, p, chunk); break;
    default: launch("conv2d_bwd_filter_kernel6", conv2d_bwd_filter_kernel6<0>, grid, kDwThreads, 0, stream, x, dy, out, p, chunk); break;
  }
  if (splits > 1) {
    const int total = p.K * p.R * p.S, block = 256;
    launch("conv2d_split_sum_kernel", conv2d_split_sum_kernel, grid_for(total, block), block, 0,
           stream, workspace, dw, total, splits);
  }
}

}  // namespace pycnn
