// The conv2d family: every launcher, as a plain C++ function (no Python here;
// bind_conv2d.cpp exposes them as pycnn._C.<name>).
//
// Layouts (PyTorch's): x is N x C x H x W, w is K x (C/groups) x R x S, y is
// N x K x P x Q, all fp32, C-contiguous. Channel c of x belongs to group
// c / (C/groups); output channel k to group k / (K/groups).
//
// Versions (the number is the file number, kernels/conv2d/NN_*.cu):
//   fwd         1 direct           2 implicit GEMM (+ fused bias / ReLU)
//               7 version 2 double-buffered, float4 shared-memory reads and y stores
//               13 mma.sync TF32 / 3xTF32 (explicit PTX: ldmatrix, cp.async, 3 stages)
//               12 warp-tiled, BK 16, tap table (no division in the loop), split-K
//   bwd_data    1 direct           3 implicit GEMM
//               11 version 3 split into stride phases (no zero products at stride > 1)
//               14 version 11 with tap tables and a cg-contiguous filter copy (no division
//                  in the loop, coalesced filter loads), double-buffered
//   bwd_filter  1 direct           4 implicit GEMM, split-K (atomic or deterministic)
//               15 version 4 double-buffered, the reduction row stepped (no division)
//               16 version 15 warp-tiled, BK 16, a tap table (no division in the loop)
//   bwd_bias    5 one block per channel, warp-shuffle reduction (deterministic)
//   depthwise   6 fwd, bwd_data, bwd_filter for C/groups = 1 (bwd_filter deterministic)
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.cuh"

namespace pycnn {

struct Conv2dParams {
  int N, C, H, W;               // input x: N x C x H x W
  int K, R, S;                  // weight w: K x (C/groups) x R x S
  int P, Q;                     // output y: N x K x P x Q (the caller computed them)
  int stride_h, stride_w;
  int dilation_h, dilation_w;
  int pad_top, pad_left;        // bottom/right padding shows only through P and Q
  int groups;
};

// Every launcher calls this first: bad sizes become std::invalid_argument
// (ValueError in Python) naming the launcher, before anything is launched.
inline void check_conv2d_params(const Conv2dParams& p, const char* launcher) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string(launcher) + ": " + what);
  };
  if (p.N < 1 || p.C < 1 || p.H < 1 || p.W < 1 || p.K < 1 || p.R < 1 || p.S < 1 ||
      p.P < 1 || p.Q < 1)
    fail("expected N, C, H, W, K, R, S, P, Q >= 1, got N=" + std::to_string(p.N) +
         " C=" + std::to_string(p.C) + " H=" + std::to_string(p.H) +
         " W=" + std::to_string(p.W) + " K=" + std::to_string(p.K) +
         " R=" + std::to_string(p.R) + " S=" + std::to_string(p.S) +
         " P=" + std::to_string(p.P) + " Q=" + std::to_string(p.Q));
  if (p.stride_h < 1 || p.stride_w < 1 || p.dilation_h < 1 || p.dilation_w < 1)
    fail("expected stride and dilation >= 1, got stride=(" + std::to_string(p.stride_h) + ", " +
         std::to_string(p.stride_w) + ") dilation=(" + std::to_string(p.dilation_h) + ", " +
         std::to_string(p.dilation_w) + ")");
  if (p.pad_top < 0 || p.pad_left < 0)
    fail("expected padding >= 0, got pad_top=" + std::to_string(p.pad_top) +
         " pad_left=" + std::to_string(p.pad_left));
  if (p.groups < 1 || p.C % p.groups != 0 || p.K % p.groups != 0)
    fail("expected groups >= 1 dividing C=" + std::to_string(p.C) + " and K=" +
         std::to_string(p.K) + ", got groups=" + std::to_string(p.groups));
  check_int32_size((int64_t)p.N * p.C * p.H * p.W, "x");
  check_int32_size((int64_t)p.K * (p.C / p.groups) * p.R * p.S, "w");
  check_int32_size((int64_t)p.N * p.K * p.P * p.Q, "y");
}

// ---- forward: y = conv(x, w) (+ b) (then ReLU if relu); b may be nullptr ----
void conv2d_fwd1(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream);
void conv2d_fwd2(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream);
void conv2d_fwd7(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream);
void conv2d_fwd8(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream);
// Version 13: mma.sync TF32 with ldmatrix and a cp.async pipeline; tf32x3 true keeps
// fp32 accuracy (3xTF32), false rounds the inputs to TF32 (cuDNN's TF32 mode).
void conv2d_fwd13(const float* x, const float* w, const float* b, float* y,
                  const Conv2dParams& p, bool relu, bool tf32x3, cudaStream_t stream);
// Version 13 on BF16 tensor cores (mma.sync.m16n8k16, fp32 accumulation): the inputs
// rounded to bf16 when a tile lands (8 significant bits: about 4e-3 relative error).
void conv2d_fwd13_bf16(const float* x, const float* w, const float* b, float* y,
                       const Conv2dParams& p, bool relu, cudaStream_t stream);
// Version 12: warp-tiled, split-K over C*R*S where the grid is under one wave.
// The tile conv2d_fwd12 picks on a GPU of num_sms SMs (pure, no GPU needed).
bool conv2d_fwd12_large_tile(const Conv2dParams& p, int num_sms);
// Splits of C*R*S that bring the grid to about one wave of num_sms SMs (pure).
int conv2d_fwd12_splits(const Conv2dParams& p, int num_sms);
// Bytes of workspace conv2d_fwd12 needs: splits * N * K * P * Q floats when
// splits > 1, otherwise 0 (pure, no GPU needed).
size_t conv2d_fwd12_workspace_bytes(const Conv2dParams& p, int splits);
// splits > 1: per-split partial sums go to workspace (16-byte aligned for the
// vector path), then one fixed-order sum adds them, the bias and ReLU: deterministic.
void conv2d_fwd12(const float* x, const float* w, const float* b, float* y, float* workspace,
                  const Conv2dParams& p, bool relu, int splits, cudaStream_t stream);

// ---- backward-data: dx = conv_transpose(dy, w); dx is overwritten ----
void conv2d_bwd_data1(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream);
void conv2d_bwd_data3(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream);
void conv2d_bwd_data9(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream);
void conv2d_bwd_data11(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                       cudaStream_t stream);
// Bytes of workspace conv2d_bwd_data14 needs: the filter again (|w| floats) and
// the tap table (K/groups * R * S entries of 16 bytes) (pure, no GPU needed).
size_t conv2d_bwd_data14_workspace_bytes(const Conv2dParams& p);
// Version 14: a prep kernel writes the tables into `workspace` (16-byte aligned,
// conv2d_bwd_data14_workspace_bytes long), then the phase GEMMs read them.
void conv2d_bwd_data14(const float* dy, const float* w, float* dx, float* workspace,
                       const Conv2dParams& p, cudaStream_t stream);
// Version 17: version 14's tables and workspace (the same bytes), warp-tiled GEMMs.
size_t conv2d_bwd_data17_workspace_bytes(const Conv2dParams& p);
void conv2d_bwd_data17(const float* dy, const float* w, float* dx, float* workspace,
                       const Conv2dParams& p, cudaStream_t stream);

// ---- backward-filter: dw[k,c,r,s] = sum over n,p,q of dy * x; dw is overwritten ----
void conv2d_bwd_filter1(const float* x, const float* dy, float* dw, const Conv2dParams& p,
                        cudaStream_t stream);
// Split-K count that fills about two waves of num_sms SMs (pure, no GPU needed).
int conv2d_bwd_filter4_splits(const Conv2dParams& p, int num_sms);
// Bytes of workspace conv2d_bwd_filter4 needs: splits * K * (C/groups) * R * S
// floats when deterministic and splits > 1, otherwise 0 (pure, no GPU needed).
size_t conv2d_bwd_filter4_workspace_bytes(const Conv2dParams& p, int splits, bool deterministic);
// deterministic: per-split partial sums go to workspace, then one fixed-order
// reduction; otherwise dw is zeroed on the stream and the splits atomicAdd into it.
void conv2d_bwd_filter4(const float* x, const float* dy, float* dw, float* workspace,
                        const Conv2dParams& p, int splits, bool deterministic,
                        cudaStream_t stream);
// Version 10: version 4 on TF32 tensor cores (3xTF32); the same arguments, split
// count and workspace size (conv2d_bwd_filter4_splits, _workspace_bytes).
void conv2d_bwd_filter10(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream);
// Version 15: version 4 with the reduction row stepped (no division in the loop),
// double-buffered; the same arguments, split count and workspace size as version 4.
void conv2d_bwd_filter15(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream);
// Version 16: version 15 warp-tiled (as forward version 12), BK 16, the filter taps
// in a table; the same arguments, split count and workspace size as version 4.
void conv2d_bwd_filter16(const float* x, const float* dy, float* dw, float* workspace,
                         const Conv2dParams& p, int splits, bool deterministic,
                         cudaStream_t stream);

// ---- depthwise (C/groups = 1; K/groups, the channel multiplier, may be > 1).
// Any other shape is std::invalid_argument naming the launcher.
void conv2d_fwd6(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream);
void conv2d_bwd_data6(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream);
// Splits of N*P*Q that fill about two waves of num_sms SMs (pure, no GPU needed).
int conv2d_bwd_filter6_splits(const Conv2dParams& p, int num_sms);
// Bytes of workspace conv2d_bwd_filter6 needs: splits * K * R * S floats when
// splits > 1, otherwise 0 (pure, no GPU needed).
size_t conv2d_bwd_filter6_workspace_bytes(const Conv2dParams& p, int splits);
// Always deterministic: per-split sums go to workspace (splits > 1) and are added
// in a fixed order; with one split they are stored straight into dw.
void conv2d_bwd_filter6(const float* x, const float* dy, float* dw, float* workspace,
                        const Conv2dParams& p, int splits, cudaStream_t stream);

// ---- backward-bias: db[k] = sum over n, pq of dy[n, k, pq]; dy is N x K x PQ ----
void conv2d_bwd_bias5(const float* dy, float* db, int N, int K, int PQ, cudaStream_t stream);

}  // namespace pycnn
