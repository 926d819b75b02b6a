// Batch normalisation, version 2: each channel's reduction split over several
// blocks, so that a layer with few channels still fills the GPU. Training forward
// and backward (inference forward is pointwise: version 1's serves).
//
// What it does: version 1's definitions (read its header): per channel c over its
// M = N*H*W values, the batch mean and biased variance normalise x; backward,
// dbias = sum(dy), dweight = sum(dy * xhat), and dx from them.
//
// Changed from version 1: there a channel is one block, so a layer has C blocks
// (64 channels leave half of a 132-SM H100 idle, however large N*H*W is), and the
// forward reads x three times. Here each pass is three steps:
//   1. partial sums: a grid of C x splits blocks; block (c, k) reduces the k-th
//      chunk of channel c into two doubles of a workspace (C * splits * 2 doubles):
//      forward, the shifted sums S1 = sum(x - x0) and S2 = sum((x - x0)^2), with x0
//      the channel's first value; backward, sum(dy) and sum(dy * xhat);
//   2. one thread per channel adds its splits in split order (deterministic for a
//      given shape and SM count) and finishes the statistics: forward,
//        mean = x0 + S1/M,  var = (S2 - S1^2/M) / M,
//      the running update and save_mean/save_invstd as version 1 writes them;
//      backward, dbias and dweight;
//   3. a grid-stride pass over every element writes y (or dx).
// The shifted sums replace version 1's second pass over x: S2 - S1^2/M cancels
// only as much as (mean - x0)^2 exceeds var, and x0 is one of the channel's own
// values, so in double the variance keeps float precision in any realistic channel
// (version 1 needed the two-pass form because of |mean| >> std, which a shift by a
// value of the channel removes). x is read twice in the forward (three times in
// version 1), x and dy twice in the backward (as version 1).
//
// What limits it: three launches where version 1 has one (a few microseconds each:
// for small tensors version 1 is faster); the split count comes from the SM count
// (a different GPU may round differently); per-element integer divisions in the
// channel offsets, and (N, C) inputs read C apart, as in version 1.
//
// Measured: not yet measured on a GPU.
#include <cmath>

#include "batch_norm/batch_norm.h"
#include "batch_norm/bn_reduce.cuh"
#include "common.cuh"

namespace pycnn {

// Values of one channel a split covers, at least (the launcher's split count).
constexpr int kBn2MinChunk = 4096;

// The workspace holds two partial sums per (channel, split): ws[2*(ch*splits + split) + {0, 1}].
__device__ __forceinline__ void store_partials(double* ws, int ch, int split, int splits, double a, double b) {
  double* out = ws + 2 * (static_cast<int64_t>(ch) * splits + split);
  out[0] = a;
  out[1] = b;
}

// A channel's two totals, its splits added in split order: the same bits on every run.
__device__ __forceinline__ void sum_partials(const double* ws, int ch, int splits, double& a, double& b) {
  a = 0.0;
  b = 0.0;
  for (int k = 0; k < splits; ++k) {
    const double* part = ws + 2 * (static_cast<int64_t>(ch) * splits + k);
    a += part[0];
    b += part[1];
  }
}

// ---------------------------------------------------------------- forward, training

// Step 1. blockIdx.x = channel, blockIdx.y = split: the split's values m in
// [split*chunk, min(M, (split+1)*chunk)).
__global__ void batch_norm_fwd_sums_kernel2(const float* __restrict__ x, double* __restrict__ ws, int N,
                                            int C, int inner, int chunk) {
  __shared__ double scratch[32];
  const int ch = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
  const int M = N * inner;
  const int m0 = split * chunk;
  const int m1 = min(M, m0 + chunk);
  const double x0 = x[channel_offset(0, ch, C, inner)];  // the shift: the channel's first value
  double s1 = 0.0, s2 = 0.0;
  for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const double d = x[channel_offset(m, ch, C, inner)] - x0;
    s1 += d;
    s2 += d * d;
  }
  s1 = block_sum(s1, scratch);
  s2 = block_sum(s2, scratch);
  if (threadIdx.x == 0) store_partials(ws, ch, split, splits, s1, s2);
}

// Step 2. One thread per channel (grid-stride).
__global__ void batch_norm_fwd_stats_kernel2(const float* __restrict__ x, const double* __restrict__ ws,
                                             float* __restrict__ running_mean, float* __restrict__ running_var,
                                             float* __restrict__ save_mean, float* __restrict__ save_invstd,
                                             int N, int C, int inner, int splits, float momentum, float eps) {
  const int M = N * inner;
  for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < C; ch += gridDim.x * blockDim.x) {
    double s1, s2;
    sum_partials(ws, ch, splits, s1, s2);
    const double x0 = x[channel_offset(0, ch, C, inner)];
    const double mean = x0 + s1 / M;
    const double var = fmax((s2 - s1 * s1 / M) / M, 0.0);  // >= 0 up to rounding
    const float mean_f = static_cast<float>(mean);
    save_mean[ch] = mean_f;
    save_invstd[ch] = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
    if (running_mean != nullptr) running_mean[ch] = (1.f - momentum) * running_mean[ch] + momentum * mean_f;
    if (running_var != nullptr) {
      const double unbiased = var * M / (M - 1);  // M >= 2 is checked by the launcher
      running_var[ch] = (1.f - momentum) * running_var[ch] + momentum * static_cast<float>(unbiased);
    }
  }
}

// Step 3. One thread per element (grid-stride): y = ((x - mean) * invstd) * w + b,
// version 1's operation order.
__global__ void batch_norm_fwd_apply_kernel2(const float* __restrict__ x, const float* __restrict__ weight,
                                             const float* __restrict__ bias, const float* __restrict__ save_mean,
                                             const float* __restrict__ save_invstd, float* __restrict__ y,
                                             int total, int C, int inner) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = (static_cast<int>(i) / inner) % C;
    const float w = weight != nullptr ? weight[ch] : 1.f;
    const float b = bias != nullptr ? bias[ch] : 0.f;
    y[i] = (x[i] - save_mean[ch]) * save_invstd[ch] * w + b;
  }
}

// ---------------------------------------------------------------- backward

// Step 1: sum(dy) and sum(dy * xhat) over the split's values, as step 1 forward.
__global__ void batch_norm_bwd_sums_kernel2(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* __restrict__ save_mean,
                                            const float* __restrict__ save_invstd, double* __restrict__ ws,
                                            int N, int C, int inner, int chunk) {
  __shared__ double scratch[32];
  const int ch = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
  const int M = N * inner;
  const int m0 = split * chunk;
  const int m1 = min(M, m0 + chunk);
  const float mean = save_mean[ch], invstd = save_invstd[ch];
  double sdy = 0.0, sdyx = 0.0;
  for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const int64_t at = channel_offset(m, ch, C, inner);
    const float xhat = (x[at] - mean) * invstd;  // as version 1 computes it
    sdy += dy[at];
    sdyx += static_cast<double>(dy[at]) * xhat;
  }
  sdy = block_sum(sdy, scratch);
  sdyx = block_sum(sdyx, scratch);
  if (threadIdx.x == 0) store_partials(ws, ch, split, splits, sdy, sdyx);
}

// Step 2: dbias and dweight per channel, the splits added in order.
__global__ void batch_norm_bwd_totals_kernel2(const double* __restrict__ ws, float* __restrict__ dweight,
                                              float* __restrict__ dbias, int C, int splits) {
  for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < C; ch += gridDim.x * blockDim.x) {
    double sdy, sdyx;
    sum_partials(ws, ch, splits, sdy, sdyx);
    dbias[ch] = static_cast<float>(sdy);
    dweight[ch] = static_cast<float>(sdyx);
  }
}

// Step 3: dx per element (grid-stride), version 1's formula:
//   training:  dx = weight * invstd * (dy - (dbias + xhat * dweight) / M)
//   inference: dx = weight * invstd * dy
__global__ void batch_norm_bwd_dx_kernel2(const float* __restrict__ dy, const float* __restrict__ x,
                                          const float* __restrict__ weight, const float* __restrict__ save_mean,
                                          const float* __restrict__ save_invstd,
                                          const float* __restrict__ dweight, const float* __restrict__ dbias,
                                          float* __restrict__ dx, int N, int C, int inner, bool training) {
  const int64_t total = static_cast<int64_t>(N) * C * inner;
  const float m_f = static_cast<float>(N * inner);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = (static_cast<int>(i) / inner) % C;
    const float invstd = save_invstd[ch];
    const float scale = invstd * (weight != nullptr ? weight[ch] : 1.f);
    if (training) {
      const float xhat = (x[i] - save_mean[ch]) * invstd;
      dx[i] = scale * (dy[i] - (dbias[ch] + xhat * dweight[ch]) / m_f);
    } else {
      dx[i] = scale * dy[i];
    }
  }
}

int batch_norm_splits2(int64_t n, int64_t c, int64_t inner, int num_sms) {
  if (n < 1 || c < 1 || inner < 1 || num_sms < 1) return 1;
  const int64_t m = n * inner;
  int64_t splits = ceil_div(4 * static_cast<int64_t>(num_sms), c);  // about 4 blocks per SM
  const int64_t most = ceil_div(m, static_cast<int64_t>(kBn2MinChunk));
  if (splits > most) splits = most;
  if (splits > 65535) splits = 65535;
  return static_cast<int>(splits < 1 ? 1 : splits);
}

int64_t batch_norm_workspace_bytes2(int64_t c, int splits) {
  return c * static_cast<int64_t>(splits) * 2 * static_cast<int64_t>(sizeof(double));
}

namespace {
// The checks both passes share: sizes, the split count, the workspace; returns the chunk.
int check_split_launch(int64_t n, int64_t c, int64_t inner, int splits, const void* workspace,
                       const char* what) {
  if (n < 1 || c < 1 || inner < 1)
    throw std::invalid_argument(std::string(what) + ": expected n, c, inner >= 1, got " +
                                std::to_string(n) + ", " + std::to_string(c) + ", " +
                                std::to_string(inner));
  if (c > 2147483647LL) throw std::invalid_argument(std::string(what) + ": too many channels");
  check_int32_size(n * c * inner, what);
  const int64_t m = n * inner;
  if (splits < 1 || splits > 65535 || splits > m)
    throw std::invalid_argument(std::string(what) + ": splits must be in [1, min(65535, N*H*W=" +
                                std::to_string(m) + ")], got " + std::to_string(splits));
  if (workspace == nullptr)
    throw std::invalid_argument(std::string(what) + ": needs a workspace of " +
                                std::to_string(batch_norm_workspace_bytes2(c, splits)) +
                                " bytes, got a null pointer");
  check_int32_size(m + kBnBlock + splits, "N*H*W plus one block and the splits");
  return static_cast<int>(ceil_div(m, static_cast<int64_t>(splits)));
}
}  // namespace

void batch_norm_fwd_train2(const float* x, const float* weight, const float* bias,
                           float* running_mean, float* running_var, float* y, float* save_mean,
                           float* save_invstd, double* workspace, int64_t n, int64_t c, int64_t inner,
                           int splits, double momentum, double eps, cudaStream_t stream) {
  const int chunk = check_split_launch(n, c, inner, splits, workspace, "batch_norm_fwd_train2: x");
  if (n * inner < 2) {
    throw std::invalid_argument("batch_norm_fwd_train2: x: training needs more than 1 value per "
                                "channel, got N*H*W=" + std::to_string(n * inner));
  }
  const int N = static_cast<int>(n), C = static_cast<int>(c), inner_i = static_cast<int>(inner);
  launch("batch_norm_fwd_sums_kernel2", batch_norm_fwd_sums_kernel2, dim3(C, splits), kBnBlock, 0,
         stream, x, workspace, N, C, inner_i, chunk);
  launch("batch_norm_fwd_stats_kernel2", batch_norm_fwd_stats_kernel2, grid_for(c, kBnBlock),
         kBnBlock, 0, stream, x, workspace, running_mean, running_var, save_mean, save_invstd, N, C,
         inner_i, splits, static_cast<float>(momentum), static_cast<float>(eps));
  launch("batch_norm_fwd_apply_kernel2", batch_norm_fwd_apply_kernel2,
         grid_for(n * c * inner, kBnBlock), kBnBlock, 0, stream, x, weight, bias, save_mean,
         save_invstd, y, static_cast<int>(n * c * inner), C, inner_i);
}

void batch_norm_bwd2(const float* dy, const float* x, const float* weight, const float* save_mean,
                     const float* save_invstd, float* dx, float* dweight, float* dbias,
                     double* workspace, int64_t n, int64_t c, int64_t inner, int splits, bool training,
                     cudaStream_t stream) {
  const int chunk = check_split_launch(n, c, inner, splits, workspace, "batch_norm_bwd2: dy");
  const int N = static_cast<int>(n), C = static_cast<int>(c), inner_i = static_cast<int>(inner);
  launch("batch_norm_bwd_sums_kernel2", batch_norm_bwd_sums_kernel2, dim3(C, splits), kBnBlock, 0,
         stream, dy, x, save_mean, save_invstd, workspace, N, C, inner_i, chunk);
  launch("batch_norm_bwd_totals_kernel2", batch_norm_bwd_totals_kernel2, grid_for(c, kBnBlock),
         kBnBlock, 0, stream, workspace, dweight, dbias, C, splits);
  launch("batch_norm_bwd_dx_kernel2", batch_norm_bwd_dx_kernel2, grid_for(n * c * inner, kBnBlock),
         kBnBlock, 0, stream, dy, x, weight, save_mean, save_invstd, dweight, dbias, dx, N, C,
         inner_i, training);
}

}  // namespace pycnn
