// Launchers of the pointwise activations (kernels/activation/01_pointwise.cu).
// Plain C++: device pointers, sizes and a stream; no Python in here.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn {

// y = max(x, 0)                       dx = y > 0 ? dy : 0
void relu_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream);
void relu_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream);

// y = x > 0 ? x : slope * x           dx = x > 0 ? dy : slope * dy
void leaky_relu_fwd1(const float* x, float* y, int64_t n, float slope, cudaStream_t stream);
void leaky_relu_bwd1(const float* dy, const float* x, float* dx, int64_t n, float slope,
                     cudaStream_t stream);

// y = 1 / (1 + exp(-x)) (stable)      dx = dy * y * (1 - y)
void sigmoid_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream);
void sigmoid_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream);

// y = tanh(x)                          dx = dy * (1 - y * y)
void tanh_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream);
void tanh_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream);

// y = max(x + b[c], 0) for x of shape (N, C, inner), inner = H*W (1 for (N, C)).
void bias_relu_fwd1(const float* x, const float* b, float* y, int64_t n, int64_t channels,
                    int64_t inner, cudaStream_t stream);

}  // namespace pycnn
