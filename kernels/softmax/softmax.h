// Launchers of softmax, log_softmax and cross-entropy (kernels/softmax/01_softmax.cu).
// A softmax along `dim` of a C-contiguous array sees it as (outer, dim, inner):
// row (o, i) is the dim elements x[o, :, i], spaced `inner` apart.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn {

void softmax_fwd1(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner,
                  cudaStream_t stream);
void log_softmax_fwd1(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner,
                      cudaStream_t stream);
// dx = y * (dy - sum(dy * y))
void softmax_bwd1(const float* dy, const float* y, float* dx, int64_t outer, int64_t dim,
                  int64_t inner, cudaStream_t stream);
// dx = dy - exp(y) * sum(dy), y the log_softmax output
void log_softmax_bwd1(const float* dy, const float* y, float* dx, int64_t outer, int64_t dim,
                      int64_t inner, cudaStream_t stream);

// logits (n, classes), target int64 (n,). Writes log_probs (n, classes), the
// per-row losses into row_loss (n floats of workspace), their mean into loss[0]
// (reduced in a fixed order: deterministic), and sets *error_flag = 1 if a
// target is outside [0, classes) (error_flag may be null).
void cross_entropy_fwd1(const float* logits, const int64_t* target, float* log_probs,
                        float* row_loss, float* loss, int* error_flag, int64_t n, int64_t classes,
                        cudaStream_t stream);
// dlogits = (exp(log_probs) - onehot(target)) * dloss[0] / n; dloss is a device scalar.
void cross_entropy_bwd1(const float* log_probs, const int64_t* target, const float* dloss,
                        float* dlogits, int* error_flag, int64_t n, int64_t classes,
                        cudaStream_t stream);

}  // namespace pycnn
