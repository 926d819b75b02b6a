// Launchers of dropout (kernels/dropout/01_dropout.cu). The keep decision is the
// counter-based hash documented in pycnn/backends/__init__.py, so a seed gives
// the same mask here as in the NumPy reference.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn {

// mask[i] = keep(i), y[i] = x[i] * mask[i] / (1 - p) (all zeros for p == 1).
// seed is taken mod 2^32 (the caller reduces it).
void dropout_fwd1(const float* x, float* y, uint8_t* mask, int64_t n, double p, uint32_t seed,
                  cudaStream_t stream);
// dx[i] = dy[i] * mask[i] / (1 - p) (all zeros for p == 1).
void dropout_bwd1(const float* dy, const uint8_t* mask, float* dx, int64_t n, double p,
                  cudaStream_t stream);

}  // namespace pycnn
