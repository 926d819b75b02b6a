// Batch normalisation over (N, C) and (N, C, H, W): training forward (batch
// statistics, running-statistics update), inference forward, backward.
//
// What it does: per channel c, over its M = N*H*W values,
//   mean = sum(x) / M,  var = sum((x - mean)^2) / M  (biased, normalises),
//   y = (x - mean) * invstd * weight + bias,  invstd = 1 / sqrt(var + eps),
//   running_mean = (1 - momentum) * running_mean + momentum * mean,
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1).
// Backward, with xhat = (x - mean) * invstd:
//   dbias = sum(dy), dweight = sum(dy * xhat),
//   dx = weight * invstd * (dy - (dbias + xhat * dweight) / M)    (training)
//   dx = weight * invstd * dy                                     (inference).
// Inference forward is pointwise: one thread per element, and the first C
// threads also write save_mean / save_invstd (the running statistics used).
//
// Why it is shaped this way: one block per channel does the whole channel, so
// the statistics never leave the block: pass 1 sums x, pass 2 sums the squared
// deviations from that mean (two-pass: no cancellation of E[x^2] - E[x]^2 when
// |mean| >> std), pass 3 writes y. Each thread accumulates its strided share in
// double and the block combines the partials with warp shuffles and one shared
// array; with M up to ~10^6 values per channel a float accumulator would lose
// ~1e-4 relative, double keeps the statistics exact to float rounding, and the
// kernel is memory-bound so the double adds are free. The order of additions is
// fixed by the launch shape: results are deterministic. The backward has the
// same shape: one pass for the two sums, one pass for dx.
//
// What limits it: one block per channel gives only C blocks (64 channels on a
// 132-SM H100 leave half the GPU idle) and x is read three times (fwd) or twice
// (bwd); version 2 (02_batch_norm_split.cu) splits each channel over several
// blocks with a second reduction step. For (N, C) inputs (inner = 1) consecutive
// threads read elements C apart: uncoalesced, acceptable for the small
// fully-connected activations it serves.
// 32-bit element indexing (launchers reject larger tensors).
//
// Measured: not yet measured on a GPU.
#include <cmath>

#include "batch_norm/batch_norm.h"
#include "batch_norm/bn_reduce.cuh"
#include "common.cuh"

namespace pycnn {

// One block per channel (blockIdx.x = channel).
__global__ void batch_norm_fwd_train_kernel1(const float* __restrict__ x, const float* __restrict__ weight,
                                             const float* __restrict__ bias, float* __restrict__ running_mean,
                                             float* __restrict__ running_var, float* __restrict__ y,
                                             float* __restrict__ save_mean, float* __restrict__ save_invstd,
                                             int N, int C, int inner, float momentum, float eps) {
  __shared__ double scratch[32];
  const int ch = blockIdx.x;
  const int M = N * inner;
  // pass 1: mean
  double s = 0.0;
  for (int m = threadIdx.x; m < M; m += blockDim.x) s += x[channel_offset(m, ch, C, inner)];
  const double mean = block_sum(s, scratch) / M;
  // pass 2: biased variance around that mean
  double q = 0.0;
  for (int m = threadIdx.x; m < M; m += blockDim.x) {
    const double d = x[channel_offset(m, ch, C, inner)] - mean;
    q += d * d;
  }
  const double var = block_sum(q, scratch) / M;
  const float mean_f = static_cast<float>(mean);
  const float invstd = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
  if (threadIdx.x == 0) {
    save_mean[ch] = mean_f;
    save_invstd[ch] = invstd;
    if (running_mean != nullptr) running_mean[ch] = (1.f - momentum) * running_mean[ch] + momentum * mean_f;
    if (running_var != nullptr) {
      const double unbiased = var * M / (M - 1);  // M >= 2 is checked by the launcher
      running_var[ch] = (1.f - momentum) * running_var[ch] + momentum * static_cast<float>(unbiased);
    }
  }
  // pass 3: normalise, same operation order as the reference: ((x - mean) * invstd) * w + b
  const float w = weight != nullptr ? weight[ch] : 1.f;
  const float b = bias != nullptr ? bias[ch] : 0.f;
  for (int m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t at = channel_offset(m, ch, C, inner);
    y[at] = (x[at] - mean_f) * invstd * w + b;
  }
}

__global__ void batch_norm_fwd_infer_kernel1(const float* __restrict__ x, const float* __restrict__ weight,
                                             const float* __restrict__ bias,
                                             const float* __restrict__ running_mean,
                                             const float* __restrict__ running_var, float* __restrict__ y,
                                             float* __restrict__ save_mean, float* __restrict__ save_invstd,
                                             int total, int C, int inner, float eps) {
  const int64_t threads = total > C ? total : C;  // the first C also write the statistics
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < threads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < total) {
      const int ch = (static_cast<int>(i) / inner) % C;
      const float invstd = 1.f / sqrtf(running_var[ch] + eps);
      const float w = weight != nullptr ? weight[ch] : 1.f;
      const float b = bias != nullptr ? bias[ch] : 0.f;
      y[i] = (x[i] - running_mean[ch]) * invstd * w + b;
    }
    if (i < C) {  // the statistics used, per channel
      save_mean[i] = running_mean[i];
      save_invstd[i] = 1.f / sqrtf(running_var[i] + eps);
    }
  }
}

// One block per channel.
__global__ void batch_norm_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ x,
                                       const float* __restrict__ weight, const float* __restrict__ save_mean,
                                       const float* __restrict__ save_invstd, float* __restrict__ dx,
                                       float* __restrict__ dweight, float* __restrict__ dbias, int N,
                                       int C, int inner, bool training) {
  __shared__ double scratch[32];
  const int ch = blockIdx.x;
  const int M = N * inner;
  const float mean = save_mean[ch], invstd = save_invstd[ch];
  // pass 1: dbias = sum(dy), dweight = sum(dy * xhat)
  double sdy = 0.0, sdyx = 0.0;
  for (int m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t at = channel_offset(m, ch, C, inner);
    const float xhat = (x[at] - mean) * invstd;
    sdy += dy[at];
    sdyx += static_cast<double>(dy[at]) * xhat;
  }
  const float db = static_cast<float>(block_sum(sdy, scratch));
  const float dw = static_cast<float>(block_sum(sdyx, scratch));
  if (threadIdx.x == 0) {
    dbias[ch] = db;
    dweight[ch] = dw;
  }
  // pass 2: dx
  const float scale = invstd * (weight != nullptr ? weight[ch] : 1.f);
  const float m_f = static_cast<float>(M);
  for (int m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t at = channel_offset(m, ch, C, inner);
    if (training) {
      const float xhat = (x[at] - mean) * invstd;
      dx[at] = scale * (dy[at] - (db + xhat * dw) / m_f);
    } else {
      dx[at] = scale * dy[at];
    }
  }
}

namespace {
void check_bn_sizes(int64_t n, int64_t c, int64_t inner, const char* what) {
  if (n < 0 || c < 1 || inner < 0) {
    throw std::invalid_argument(std::string(what) + ": expected n >= 0, c >= 1, inner >= 0, got " +
                                std::to_string(n) + ", " + std::to_string(c) + ", " +
                                std::to_string(inner));
  }
  if (c > 2147483647LL) throw std::invalid_argument(std::string(what) + ": too many channels");
  check_int32_size(n * c * inner, what);
}
}  // namespace

void batch_norm_fwd_train1(const float* x, const float* weight, const float* bias,
                           float* running_mean, float* running_var, float* y, float* save_mean,
                           float* save_invstd, int64_t n, int64_t c, int64_t inner,
                           double momentum, double eps, cudaStream_t stream) {
  check_bn_sizes(n, c, inner, "batch_norm_fwd_train1: x");
  if (n * inner < 2) {
    throw std::invalid_argument("batch_norm_fwd_train1: x: training needs more than 1 value per "
                                "channel, got N*H*W=" + std::to_string(n * inner));
  }
  launch("batch_norm_fwd_train_kernel1", batch_norm_fwd_train_kernel1, static_cast<int>(c),
         kBnBlock, 0, stream, x, weight, bias, running_mean, running_var, y, save_mean, save_invstd,
         static_cast<int>(n), static_cast<int>(c), static_cast<int>(inner),
         static_cast<float>(momentum), static_cast<float>(eps));
}

void batch_norm_fwd_infer1(const float* x, const float* weight, const float* bias,
                           const float* running_mean, const float* running_var, float* y,
                           float* save_mean, float* save_invstd, int64_t n, int64_t c,
                           int64_t inner, double eps, cudaStream_t stream) {
  check_bn_sizes(n, c, inner, "batch_norm_fwd_infer1: x");
  // at least C threads, so that the per-channel outputs are written even for an empty batch
  const int64_t total = n * c * inner;
  const int64_t threads = total > c ? total : c;
  launch("batch_norm_fwd_infer_kernel1", batch_norm_fwd_infer_kernel1, grid_for(threads, kBnBlock),
         kBnBlock, 0, stream, x, weight, bias, running_mean, running_var, y, save_mean, save_invstd,
         static_cast<int>(total), static_cast<int>(c), static_cast<int>(inner > 0 ? inner : 1),
         static_cast<float>(eps));
}

void batch_norm_bwd1(const float* dy, const float* x, const float* weight, const float* save_mean,
                     const float* save_invstd, float* dx, float* dweight, float* dbias, int64_t n,
                     int64_t c, int64_t inner, bool training, cudaStream_t stream) {
  check_bn_sizes(n, c, inner, "batch_norm_bwd1: dy");
  launch("batch_norm_bwd_kernel1", batch_norm_bwd_kernel1, static_cast<int>(c), kBnBlock, 0, stream,
         dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, static_cast<int>(n),
         static_cast<int>(c), static_cast<int>(inner), training);
}

}  // namespace pycnn
