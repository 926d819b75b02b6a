// conv2d, version 1: direct convolution, one thread per output element.
//
// What it does: forward, backward-data and backward-filter straight from the
// definitions, one thread per element of the result (y, dx or dw), each thread
// looping over everything that contributes to its element:
//   forward        y[n,k,p,q]  = sum_{c,r,s} x[n, g*Cg+c, p*sh-pt+r*dh, q*sw-pl+s*dw] * w[k,c,r,s]
//   backward-data  dx[n,c,h,w] = sum_{k,r,s} dy[n, g*Kg+k, p, q] * w[g*Kg+k, c, r, s]
//                  over the taps with h+pt-r*dh = p*sh (divisible, 0 <= p < P), same for w
//   backward-filter dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, g*Cg+c, p*sh-pt+r*dh, q*sw-pl+s*dw]
// (g the group, Cg = C/groups, Kg = K/groups). Out-of-range input taps read as
// zero (the padding).
//
// Changed from the previous version: this is the first one, the teaching
// baseline and a second reference next to the NumPy backend: no shared memory,
// no reuse, nothing clever, so that it is easy to believe.
//
// What limits it: every multiply-add reads two floats through L1/L2 (about
// 0.25 FLOP per byte of load traffic, far below the ~20 FLOP/B FFMA ridge), so
// it is bound by load bandwidth and latency. backward-filter is worse: one
// thread runs a reduction of length N*P*Q, so there are only K*Cg*R*S threads,
// often too few to fill the GPU.
//
// Measured: not yet measured on a GPU
#include "conv2d/conv2d.h"

namespace pycnn {

template <bool RELU>
__global__ void conv2d_fwd_kernel1(const float* __restrict__ x, const float* __restrict__ w,
                                   const float* __restrict__ b, float* __restrict__ y,
                                   Conv2dParams p) {
  const int total = p.N * p.K * p.P * p.Q;
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  // 64-bit loop counter: idx + grid size may pass 2^31 even when total does not.
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int idx = (int)i;
    // idx = ((n*K + k)*P + op)*Q + oq, the NCHW offset of y[n, k, op, oq]
    const int oq = idx % p.Q;
    const int op = (idx / p.Q) % p.P;
    const int k = (idx / (p.Q * p.P)) % p.K;
    const int n = idx / (p.Q * p.P * p.K);
    const int g = k / Kg;
    const int h0 = op * p.stride_h - p.pad_top;   // input row of tap r=0
    const int w0 = oq * p.stride_w - p.pad_left;  // input column of tap s=0
    // x + offset of x[n, g*Cg, 0, 0]; w + offset of w[k, 0, 0, 0]
    const float* xg = x + ((size_t)n * p.C + (size_t)g * Cg) * p.H * p.W;
    const float* wk = w + (size_t)k * Cg * p.R * p.S;
    float acc = 0.f;
    for (int c = 0; c < Cg; ++c) {
      for (int r = 0; r < p.R; ++r) {
        const int h = h0 + r * p.dilation_h;
        if (h < 0 || h >= p.H) continue;
        for (int s = 0; s < p.S; ++s) {
          const int ww = w0 + s * p.dilation_w;
          if (ww < 0 || ww >= p.W) continue;
          acc += xg[(c * p.H + h) * p.W + ww] * wk[(c * p.R + r) * p.S + s];
        }
      }
    }
    if (b != nullptr) acc += b[k];
    if (RELU) acc = fmaxf(acc, 0.f);
    y[idx] = acc;
  }
}

__global__ void conv2d_bwd_data_kernel1(const float* __restrict__ dy,
                                        const float* __restrict__ w, float* __restrict__ dx,
                                        Conv2dParams p) {
  const int total = p.N * p.C * p.H * p.W;
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  // 64-bit loop counter: idx + grid size may pass 2^31 even when total does not.
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int idx = (int)i;
    // idx = ((n*C + c)*H + h)*W + iw, the NCHW offset of dx[n, c, h, iw]
    const int iw = idx % p.W;
    const int h = (idx / p.W) % p.H;
    const int c = (idx / (p.W * p.H)) % p.C;
    const int n = idx / (p.W * p.H * p.C);
    const int g = c / Cg;
    const int cg = c - g * Cg;  // channel index inside the group (w's dim 1)
    float acc = 0.f;
    for (int kg = 0; kg < Kg; ++kg) {
      const int k = g * Kg + kg;
      // dy + offset of dy[n, k, 0, 0]; w + offset of w[k, cg, 0, 0]
      const float* dyk = dy + ((size_t)n * p.K + k) * p.P * p.Q;
      const float* wkc = w + ((size_t)k * Cg + cg) * p.R * p.S;
      for (int r = 0; r < p.R; ++r) {
        // Tap r of output row op reads input row op*sh - pt + r*dh; we need it == h.
        const int hp = h + p.pad_top - r * p.dilation_h;  // = op * sh
        if (hp < 0 || hp % p.stride_h != 0) continue;
        const int op = hp / p.stride_h;
        if (op >= p.P) continue;
        for (int s = 0; s < p.S; ++s) {
          const int wq = iw + p.pad_left - s * p.dilation_w;  // = oq * sw
          if (wq < 0 || wq % p.stride_w != 0) continue;
          const int oq = wq / p.stride_w;
          if (oq >= p.Q) continue;
          acc += dyk[op * p.Q + oq] * wkc[r * p.S + s];
        }
      }
    }
    dx[idx] = acc;
  }
}

__global__ void conv2d_bwd_filter_kernel1(const float* __restrict__ x,
                                          const float* __restrict__ dy,
                                          float* __restrict__ dw, Conv2dParams p) {
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int total = p.K * Cg * p.R * p.S;
  // 64-bit loop counter: idx + grid size may pass 2^31 even when total does not.
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int idx = (int)i;
    // idx = ((k*Cg + cg)*R + r)*S + s, the offset of dw[k, cg, r, s]
    const int s = idx % p.S;
    const int r = (idx / p.S) % p.R;
    const int cg = (idx / (p.S * p.R)) % Cg;
    const int k = idx / (p.S * p.R * Cg);
    const int c = (k / Kg) * Cg + cg;  // absolute input channel
    float acc = 0.f;
    for (int n = 0; n < p.N; ++n) {
      // x + offset of x[n, c, 0, 0]; dy + offset of dy[n, k, 0, 0]
      const float* xc = x + ((size_t)n * p.C + c) * p.H * p.W;
      const float* dyk = dy + ((size_t)n * p.K + k) * p.P * p.Q;
      for (int op = 0; op < p.P; ++op) {
        const int h = op * p.stride_h - p.pad_top + r * p.dilation_h;
        if (h < 0 || h >= p.H) continue;
        for (int oq = 0; oq < p.Q; ++oq) {
          const int iw = oq * p.stride_w - p.pad_left + s * p.dilation_w;
          if (iw < 0 || iw >= p.W) continue;
          acc += dyk[op * p.Q + oq] * xc[h * p.W + iw];
        }
      }
    }
    dw[idx] = acc;
  }
}

// Launchers.
void conv2d_fwd1(const float* x, const float* w, const float* b, float* y,
                 const Conv2dParams& p, bool relu, cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_fwd1");
  const int block = 256;
  const int grid = grid_for((int64_t)p.N * p.K * p.P * p.Q, block);
  if (relu)
    launch("conv2d_fwd_kernel1", conv2d_fwd_kernel1<true>, grid, block, 0, stream, x, w, b, y, p);
  else
    launch("conv2d_fwd_kernel1", conv2d_fwd_kernel1<false>, grid, block, 0, stream, x, w, b, y, p);
}

void conv2d_bwd_data1(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                      cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_data1");
  const int block = 256;
  const int grid = grid_for((int64_t)p.N * p.C * p.H * p.W, block);
  launch("conv2d_bwd_data_kernel1", conv2d_bwd_data_kernel1, grid, block, 0, stream, dy, w, dx, p);
}

void conv2d_bwd_filter1(const float* x, const float* dy, float* dw, const Conv2dParams& p,
                        cudaStream_t stream) {
  check_conv2d_params(p, "conv2d_bwd_filter1");
  const int block = 256;
  const int grid = grid_for((int64_t)p.K * (p.C / p.groups) * p.R * p.S, block);
  launch("conv2d_bwd_filter_kernel1", conv2d_bwd_filter_kernel1, grid, block, 0, stream, x, dy, dw, p);
}

}  // namespace pycnn
