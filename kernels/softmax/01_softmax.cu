// Softmax and log_softmax along one axis, forward and backward; cross-entropy
// (log_softmax + negative log-likelihood, mean over the batch) and its backward.
//
// What it does: the array is viewed as (outer, dim, inner) and each of the
// outer*inner rows x[o, :, i] is normalised on its own:
//   softmax     y = exp(x - max) / sum(exp(x - max))
//   log_softmax y = (x - max) - log(sum(exp(x - max)))
// Subtracting the row maximum first makes every exponent <= 0: no overflow for
// large logits, and the largest term is exactly 1, so the sum is >= 1 and its
// log is well conditioned. Backward: softmax dx = y * (dy - sum(dy*y)),
// log_softmax dx = dy - exp(y) * sum(dy).
// Cross-entropy: per row the log_softmax (written out: the backward needs it)
// and loss_n = -log_probs[n, target_n]; then one block adds the N row losses in
// a fixed order (per-thread strided sums, then a fixed shuffle tree, in double)
// so the mean is bitwise reproducible. A target outside [0, classes) sets an
// error flag in device memory (and makes that row's loss NaN) instead of reading
// out of bounds; the Python side checks the targets before the launch as well.
//
// Why it is shaped this way: two layouts, two mappings.
//   inner == 1 (softmax over the last axis, the common case: logits (N, classes)):
//     one warp per row; lanes stride over the contiguous row (coalesced), and the
//     max and the sum are combined across lanes with __shfl_xor_sync, no shared
//     memory and no __syncthreads. Three sweeps over the row (max, sum, write);
//     the row is re-read from L1/L2, not DRAM, for rows of a few thousand floats.
//   inner > 1 (softmax over channels of NCHW, dim=1): one thread per row; adjacent
//     threads own adjacent i, so each of the dim steps is a coalesced load across
//     the warp, and no cross-thread reduction is needed at all.
//
// What limits it: bandwidth for long rows; for short rows (10 classes) a warp
// per row leaves 22 lanes idle, and for very long rows (> ~8K) one warp per row
// is too little parallelism per row (a block per row would be version 2). The
// exp/log are the accurate expf/logf. 32-bit element indexing.
//
// Measured: not yet measured on a GPU.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "softmax/softmax.h"

namespace pycnn {

constexpr int kSoftmaxBlock = 256;  // 8 warps: 8 rows per block in the warp-per-row kernels
constexpr int kWarpsPerBlock = kSoftmaxBlock / 32;
static_assert(kSoftmaxBlock % 32 == 0, "the warp-per-row kernels need whole warps");

namespace {

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Row r of a warp-per-row kernel: warp w of block b takes rows w + 8b, w + 8b + 8*grid, ...
// The loop bound is the same for all 32 lanes, so the full-mask shuffles are legal.
#define PYCNN_FOR_EACH_WARP_ROW(row, rows)                                                    \
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;    \
       row < (rows); row += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock)

// Forward over contiguous rows of length dim (inner == 1), one warp per row.
template <bool LOG>
__device__ __forceinline__ void softmax_fwd_rows(const float* __restrict__ x, float* __restrict__ y,
                                                 int rows, int dim) {
  const int lane = threadIdx.x % 32;
  PYCNN_FOR_EACH_WARP_ROW(row, rows) {
    const float* xr = x + row * dim;
    float* yr = y + row * dim;
    float m = -INFINITY;
    for (int k = lane; k < dim; k += 32) m = fmaxf(m, xr[k]);
    m = warp_max(m);
    float s = 0.f;
    for (int k = lane; k < dim; k += 32) s += expf(xr[k] - m);
    s = warp_sum(s);
    if (LOG) {
      const float log_s = logf(s);
      for (int k = lane; k < dim; k += 32) yr[k] = (xr[k] - m) - log_s;
    } else {
      for (int k = lane; k < dim; k += 32) yr[k] = expf(xr[k] - m) / s;
    }
  }
}

// Forward over strided rows (inner > 1), one thread per row (o, i).
template <bool LOG>
__device__ __forceinline__ void softmax_fwd_strided(const float* __restrict__ x, float* __restrict__ y,
                                                    int rows, int dim, int inner) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int o = static_cast<int>(r) / inner, i = static_cast<int>(r) % inner;
    const int64_t base = static_cast<int64_t>(o) * dim * inner + i;  // x[o, 0, i]
    float m = -INFINITY;
    for (int k = 0; k < dim; ++k) m = fmaxf(m, x[base + k * inner]);
    float s = 0.f;
    for (int k = 0; k < dim; ++k) s += expf(x[base + k * inner] - m);
    if (LOG) {
      const float log_s = logf(s);
      for (int k = 0; k < dim; ++k) y[base + k * inner] = (x[base + k * inner] - m) - log_s;
    } else {
      for (int k = 0; k < dim; ++k) y[base + k * inner] = expf(x[base + k * inner] - m) / s;
    }
  }
}

// Backward over contiguous rows. softmax: dot = sum(dy*y), dx = y*(dy - dot);
// log_softmax: dot = sum(dy), dx = dy - exp(y)*dot.
template <bool LOG>
__device__ __forceinline__ void softmax_bwd_rows(const float* __restrict__ dy, const float* __restrict__ y,
                                                 float* __restrict__ dx, int rows, int dim) {
  const int lane = threadIdx.x % 32;
  PYCNN_FOR_EACH_WARP_ROW(row, rows) {
    const int64_t off = row * dim;
    float dot = 0.f;
    for (int k = lane; k < dim; k += 32) dot += LOG ? dy[off + k] : dy[off + k] * y[off + k];
    dot = warp_sum(dot);
    for (int k = lane; k < dim; k += 32) {
      dx[off + k] = LOG ? dy[off + k] - expf(y[off + k]) * dot : y[off + k] * (dy[off + k] - dot);
    }
  }
}

template <bool LOG>
__device__ __forceinline__ void softmax_bwd_strided(const float* __restrict__ dy,
                                                    const float* __restrict__ y,
                                                    float* __restrict__ dx, int rows, int dim,
                                                    int inner) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int o = static_cast<int>(r) / inner, i = static_cast<int>(r) % inner;
    const int64_t base = static_cast<int64_t>(o) * dim * inner + i;
    float dot = 0.f;
    for (int k = 0; k < dim; ++k) {
      const int64_t at = base + k * inner;
      dot += LOG ? dy[at] : dy[at] * y[at];
    }
    for (int k = 0; k < dim; ++k) {
      const int64_t at = base + k * inner;
      dx[at] = LOG ? dy[at] - expf(y[at]) * dot : y[at] * (dy[at] - dot);
    }
  }
}

}  // namespace

// Named kernels (one per pass and layout, so a profiler shows which ran).
__global__ void softmax_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int rows, int dim) {
  softmax_fwd_rows<false>(x, y, rows, dim);
}
__global__ void log_softmax_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int rows,
                                        int dim) {
  softmax_fwd_rows<true>(x, y, rows, dim);
}
__global__ void softmax_fwd_strided_kernel1(const float* __restrict__ x, float* __restrict__ y, int rows,
                                            int dim, int inner) {
  softmax_fwd_strided<false>(x, y, rows, dim, inner);
}
__global__ void log_softmax_fwd_strided_kernel1(const float* __restrict__ x, float* __restrict__ y,
                                                int rows, int dim, int inner) {
  softmax_fwd_strided<true>(x, y, rows, dim, inner);
}
__global__ void softmax_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                    float* __restrict__ dx, int rows, int dim) {
  softmax_bwd_rows<false>(dy, y, dx, rows, dim);
}
__global__ void log_softmax_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                        float* __restrict__ dx, int rows, int dim) {
  softmax_bwd_rows<true>(dy, y, dx, rows, dim);
}
__global__ void softmax_bwd_strided_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                            float* __restrict__ dx, int rows, int dim, int inner) {
  softmax_bwd_strided<false>(dy, y, dx, rows, dim, inner);
}
__global__ void log_softmax_bwd_strided_kernel1(const float* __restrict__ dy,
                                                const float* __restrict__ y, float* __restrict__ dx,
                                                int rows, int dim, int inner) {
  softmax_bwd_strided<true>(dy, y, dx, rows, dim, inner);
}

// Cross-entropy forward, part 1: one warp per row of logits (n, classes).
__global__ void cross_entropy_fwd_kernel1(const float* __restrict__ logits,
                                          const int64_t* __restrict__ target,
                                          float* __restrict__ log_probs, float* __restrict__ row_loss,
                                          int* __restrict__ error_flag, int n, int classes) {
  const int lane = threadIdx.x % 32;
  PYCNN_FOR_EACH_WARP_ROW(row, n) {
    const float* xr = logits + row * classes;
    float* lr = log_probs + row * classes;
    float m = -INFINITY;
    for (int k = lane; k < classes; k += 32) m = fmaxf(m, xr[k]);
    m = warp_max(m);
    float s = 0.f;
    for (int k = lane; k < classes; k += 32) s += expf(xr[k] - m);
    const float log_s = logf(warp_sum(s));
    for (int k = lane; k < classes; k += 32) lr[k] = (xr[k] - m) - log_s;
    if (lane == 0) {
      const int64_t t = target[row];
      if (t < 0 || t >= classes) {  // never index with it: flag, and poison this row's loss
        if (error_flag != nullptr) atomicExch(error_flag, 1);
        row_loss[row] = NAN;
      } else {
        row_loss[row] = -((xr[t] - m) - log_s);  // the same expression as log_probs[row, t]
      }
    }
  }
}

// Cross-entropy forward, part 2: loss[0] = mean(row_loss), one block, fixed order.
__global__ void cross_entropy_mean_kernel1(const float* __restrict__ row_loss, float* __restrict__ loss,
                                           int n) {
  __shared__ double warp_sums[32];
  double s = 0.0;
  for (int k = threadIdx.x; k < n; k += blockDim.x) s += row_loss[k];  // fixed per-thread order
  s = warp_sum(s);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    s = lane < warps ? warp_sums[lane] : 0.0;
    s = warp_sum(s);
    if (lane == 0) loss[0] = static_cast<float>(s / n);
  }
}

// Cross-entropy backward: one thread per logit.
__global__ void cross_entropy_bwd_kernel1(const float* __restrict__ log_probs,
                                          const int64_t* __restrict__ target,
                                          const float* __restrict__ dloss, float* __restrict__ dlogits,
                                          int* __restrict__ error_flag, int n, int classes) {
  const float scale = dloss[0] / static_cast<float>(n);
  const int total = n * classes;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int li = static_cast<int>(i);
    const int row = li / classes, k = li % classes;
    const int64_t t = target[row];
    if (k == 0 && (t < 0 || t >= classes) && error_flag != nullptr) atomicExch(error_flag, 1);
    const float onehot = (t == k) ? 1.f : 0.f;
    dlogits[i] = (expf(log_probs[i]) - onehot) * scale;
  }
}

namespace {

void check_rows(int64_t outer, int64_t dim, int64_t inner, const char* what) {
  if (outer < 0 || dim < 1 || inner < 1) {
    throw std::invalid_argument(std::string(what) + ": expected outer >= 0, dim >= 1, inner >= 1, got " +
                                std::to_string(outer) + ", " + std::to_string(dim) + ", " +
                                std::to_string(inner));
  }
  check_int32_size(outer * dim * inner, what);
}

int warp_row_grid(int64_t rows) {
  return static_cast<int>(std::min<int64_t>(ceil_div(rows, int64_t{kWarpsPerBlock}), 65535 * 8));
}

}  // namespace

void softmax_fwd1(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner,
                  cudaStream_t stream) {
  check_rows(outer, dim, inner, "softmax_fwd1: x");
  const int64_t rows = outer * inner;
  if (rows == 0) return;
  if (inner == 1) {
    launch("softmax_fwd_kernel1", softmax_fwd_kernel1, warp_row_grid(rows), kSoftmaxBlock, 0,
           stream, x, y, static_cast<int>(rows), static_cast<int>(dim));
  } else {
    launch("softmax_fwd_strided_kernel1", softmax_fwd_strided_kernel1,
           grid_for(rows, kSoftmaxBlock), kSoftmaxBlock, 0, stream, x, y, static_cast<int>(rows),
           static_cast<int>(dim), static_cast<int>(inner));
  }
}

void log_softmax_fwd1(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner,
                      cudaStream_t stream) {
  check_rows(outer, dim, inner, "log_softmax_fwd1: x");
  const int64_t rows = outer * inner;
  if (rows == 0) return;
  if (inner == 1) {
    launch("log_softmax_fwd_kernel1", log_softmax_fwd_kernel1, warp_row_grid(rows), kSoftmaxBlock,
           0, stream, x, y, static_cast<int>(rows), static_cast<int>(dim));
  } else {
    launch("log_softmax_fwd_strided_kernel1", log_softmax_fwd_strided_kernel1,
           grid_for(rows, kSoftmaxBlock), kSoftmaxBlock, 0, stream, x, y, static_cast<int>(rows),
           static_cast<int>(dim), static_cast<int>(inner));
  }
}

void softmax_bwd1(const float* dy, const float* y, float* dx, int64_t outer, int64_t dim,
                  int64_t inner, cudaStream_t stream) {
  check_rows(outer, dim, inner, "softmax_bwd1: dy");
  const int64_t rows = outer * inner;
  if (rows == 0) return;
  if (inner == 1) {
    launch("softmax_bwd_kernel1", softmax_bwd_kernel1, warp_row_grid(rows), kSoftmaxBlock, 0,
           stream, dy, y, dx, static_cast<int>(rows), static_cast<int>(dim));
  } else {
    launch("softmax_bwd_strided_kernel1", softmax_bwd_strided_kernel1,
           grid_for(rows, kSoftmaxBlock), kSoftmaxBlock, 0, stream, dy, y, dx,
           static_cast<int>(rows), static_cast<int>(dim), static_cast<int>(inner));
  }
}

void log_softmax_bwd1(const float* dy, const float* y, float* dx, int64_t outer, int64_t dim,
                      int64_t inner, cudaStream_t stream) {
  check_rows(outer, dim, inner, "log_softmax_bwd1: dy");
  const int64_t rows = outer * inner;
  if (rows == 0) return;
  if (inner == 1) {
    launch("log_softmax_bwd_kernel1", log_softmax_bwd_kernel1, warp_row_grid(rows), kSoftmaxBlock,
           0, stream, dy, y, dx, static_cast<int>(rows), static_cast<int>(dim));
  } else {
    launch("log_softmax_bwd_strided_kernel1", log_softmax_bwd_strided_kernel1,
           grid_for(rows, kSoftmaxBlock), kSoftmaxBlock, 0, stream, dy, y, dx,
           static_cast<int>(rows), static_cast<int>(dim), static_cast<int>(inner));
  }
}

void cross_entropy_fwd1(const float* logits, const int64_t* target, float* log_probs,
                        float* row_loss, float* loss, int* error_flag, int64_t n, int64_t classes,
                        cudaStream_t stream) {
  check_rows(n, classes, 1, "cross_entropy_fwd1: logits");
  if (n == 0) return;
  launch("cross_entropy_fwd_kernel1", cross_entropy_fwd_kernel1, warp_row_grid(n), kSoftmaxBlock, 0,
         stream, logits, target, log_probs, row_loss, error_flag, static_cast<int>(n),
         static_cast<int>(classes));
  launch("cross_entropy_mean_kernel1", cross_entropy_mean_kernel1, 1, 1024, 0, stream, row_loss,
         loss, static_cast<int>(n));
}

void cross_entropy_bwd1(const float* log_probs, const int64_t* target, const float* dloss,
                        float* dlogits, int* error_flag, int64_t n, int64_t classes,
                        cudaStream_t stream) {
  check_rows(n, classes, 1, "cross_entropy_bwd1: log_probs");
  if (n == 0) return;
  launch("cross_entropy_bwd_kernel1", cross_entropy_bwd_kernel1,
         grid_for(n * classes, kSoftmaxBlock), kSoftmaxBlock, 0, stream, log_probs, target, dloss,
         dlogits, error_flag, static_cast<int>(n), static_cast<int>(classes));
}

}  // namespace pycnn
