// Launchers of batch normalisation: version 1 (kernels/batch_norm/01_batch_norm.cu,
// a block per channel) and version 2 (02_batch_norm_split.cu, each channel split
// over several blocks through a workspace; training forward and backward).
// x is (N, C, inner): inner = H*W for NCHW, 1 for (N, C). Statistics per channel
// over the M = N*inner values of that channel. weight, bias, running_mean and
// running_var may be null (weight 1, bias 0, no running update).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn {

// Training: batch mean and biased variance normalise x; save_mean / save_invstd
// receive them; running_mean/var are updated in place with momentum
// (running_var with the unbiased variance, M / (M - 1); needs M >= 2).
void batch_norm_fwd_train1(const float* x, const float* weight, const float* bias,
                           float* running_mean, float* running_var, float* y, float* save_mean,
                           float* save_invstd, int64_t n, int64_t c, int64_t inner,
                           double momentum, double eps, cudaStream_t stream);

// Inference: the running statistics normalise x (both required); save_mean /
// save_invstd receive the statistics used.
void batch_norm_fwd_infer1(const float* x, const float* weight, const float* bias,
                           const float* running_mean, const float* running_var, float* y,
                           float* save_mean, float* save_invstd, int64_t n, int64_t c,
                           int64_t inner, double eps, cudaStream_t stream);

// dx, dweight (sum dy * xhat), dbias (sum dy). training: the statistics depend
// on x (full formula); otherwise they are constants (dx = dy * weight * invstd).
void batch_norm_bwd1(const float* dy, const float* x, const float* weight, const float* save_mean,
                     const float* save_invstd, float* dx, float* dweight, float* dbias, int64_t n,
                     int64_t c, int64_t inner, bool training, cudaStream_t stream);

// Version 2: the split count for a GPU of num_sms SMs (about 4 blocks per SM, at
// least 4096 values per split), and the workspace it needs (2 doubles per channel
// and split). The launchers take both; the results are those of version 1 up to
// rounding, and the same bits for the same split count.
int batch_norm_splits2(int64_t n, int64_t c, int64_t inner, int num_sms);
int64_t batch_norm_workspace_bytes2(int64_t c, int splits);
void batch_norm_fwd_train2(const float* x, const float* weight, const float* bias,
                           float* running_mean, float* running_var, float* y, float* save_mean,
                           float* save_invstd, double* workspace, int64_t n, int64_t c, int64_t inner,
                           int splits, double momentum, double eps, cudaStream_t stream);
void batch_norm_bwd2(const float* dy, const float* x, const float* weight, const float* save_mean,
                     const float* save_invstd, float* dx, float* dweight, float* dbias,
                     double* workspace, int64_t n, int64_t c, int64_t inner, int splits, bool training,
                     cudaStream_t stream);

}  // namespace pycnn
