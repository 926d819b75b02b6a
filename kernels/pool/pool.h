// Launchers of the pooling kernels (kernels/pool/*.cu). Tensors are NCHW float32,
// x is (N, C, H, W), y / dy is (N, C, P, Q); indices are int64 offsets h*W + w
// into each (n, c) plane. Output sizes (P, Q), with ceil_mode already applied,
// come from pycnn.shapes: the kernels take them as given.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn {

// 01_max_pool.cu
void max_pool2d_fwd1(const float* x, float* y, int64_t* indices, int64_t n, int64_t c, int64_t h,
                     int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph,
                     int pw, int dh, int dw, cudaStream_t stream);
// The earlier atomic scatter, kept runnable: dx is zeroed here (on the stream), then
// every dy is added at its argmax (overlapping windows: order, and last bits, vary).
void max_pool2d_bwd1(const float* dy, const int64_t* indices, float* dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t p, int64_t q, cudaStream_t stream);

// 04_max_pool_bwd_gather.cu, the promoted backward: one thread per dx element sums,
// in a fixed order, dy of the windows (given by the geometry) whose index names it.
// Deterministic, no atomics; dx is written whole (no zeroing needed).
void max_pool2d_bwd2(const float* dy, const int64_t* indices, float* dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw,
                     int ph, int pw, int dh, int dw, cudaStream_t stream);

// 02_avg_pool.cu
void avg_pool2d_fwd1(const float* x, float* y, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
                     bool count_include_pad, cudaStream_t stream);
void avg_pool2d_bwd1(const float* dy, float* dx, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
                     bool count_include_pad, cudaStream_t stream);

// 03_adaptive_avg_pool.cu; p == q == 1 (global average pool) takes a warp-per-plane kernel.
void adaptive_avg_pool2d_fwd1(const float* x, float* y, int64_t n, int64_t c, int64_t h,
                              int64_t w, int64_t p, int64_t q, cudaStream_t stream);
void adaptive_avg_pool2d_bwd1(const float* dy, float* dx, int64_t n, int64_t c, int64_t h,
                              int64_t w, int64_t p, int64_t q, cudaStream_t stream);

}  // namespace pycnn
