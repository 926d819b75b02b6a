// Pointwise activations, forward and backward: relu, leaky_relu, sigmoid, tanh,
// and relu(x + bias[c]) fused for NCHW.
//
// What it does: one output element per input element (two inputs for the
// backward passes). The backward of relu, sigmoid and tanh reads the forward
// output y (it holds everything the derivative needs), leaky_relu's reads x.
//
// Why it is shaped this way: these kernels do one or two flops per 8-12 bytes,
// so they are memory-bound by a factor of ~100 and the only goals are full
// bandwidth and few instructions per byte:
//   - a grid-stride loop over a grid sized by pycnn::grid_for, so that one launch
//     covers any n without one block per element;
//   - float4 loads and stores (one 16-byte transaction per thread per trip) when
//     every pointer is 16-byte aligned; the last n % 4 elements, or everything
//     when a pointer is misaligned (a view at an odd offset), take a scalar loop;
//   - sigmoid evaluates exp(-|x|) only, which never overflows: 1/(1+e) for x >= 0,
//     e/(1+e) for x < 0 (the naive 1/(1+exp(-x)) gives inf/NaN trouble for
//     x << 0 in the gradient and loses relative precision);
//   - expf/tanhf are the accurate library versions (no --use_fast_math): the
//     kernel must agree with the NumPy reference to ~1e-6 relative.
// Every kernel is a thin __global__ wrapper with its own name (profiler-readable)
// around two shared loops, map1 and map2, that take the operation as a functor.
//
// What limits it: DRAM bandwidth (reading 4-8 B and writing 4 B per element).
// Fusion with the neighbouring op (as bias_relu does for bias + relu) is the
// only way to go faster; within the kernel there is little left. Indices are
// 32-bit elements (launchers reject n > 2^31-1), loop counters 64-bit so the
// grid stride cannot overflow.
//
// Measured: not yet measured on a GPU.
#include "activation/activation.h"
#include "common.cuh"

namespace pycnn {
namespace {

constexpr int kBlock = 256;

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// out[i] = op(a[i]) for i < n. vec: a and out are 16-byte aligned.
template <class Op>
__device__ __forceinline__ void map1(const float* __restrict__ a, float* __restrict__ out,
                                     int n, bool vec, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;  // float4 number i holds elements 4i .. 4i+3
    const float4* a4 = reinterpret_cast<const float4*>(a);
    float4* out4 = reinterpret_cast<float4*>(out);
    for (int64_t i = first; i < n4; i += stride) {
      float4 v = a4[i];
      v.x = op(v.x);
      v.y = op(v.y);
      v.z = op(v.z);
      v.w = op(v.w);
      out4[i] = v;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + first; i < n; i += stride) out[i] = op(a[i]);  // tail / unaligned
}

// out[i] = op(a[i], b[i]) for i < n. vec: a, b and out are 16-byte aligned.
template <class Op>
__device__ __forceinline__ void map2(const float* __restrict__ a, const float* __restrict__ b,
                                     float* __restrict__ out, int n, bool vec, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* out4 = reinterpret_cast<float4*>(out);
    for (int64_t i = first; i < n4; i += stride) {
      const float4 u = a4[i];
      const float4 v = b4[i];
      out4[i] = make_float4(op(u.x, v.x), op(u.y, v.y), op(u.z, v.z), op(u.w, v.w));
    }
    done = n4 * 4;
  }
  for (int64_t i = done + first; i < n; i += stride) out[i] = op(a[i], b[i]);
}

// The operations. `x < 0 ? 0 : x` (not fmaxf) so that NaN propagates, as NumPy's maximum does.
struct ReluFwd {
  __device__ float operator()(float x) const { return x < 0.f ? 0.f : x; }
};
struct ReluBwd {  // (dy, y): the gradient passes where the output is positive
  __device__ float operator()(float dy, float y) const { return y > 0.f ? dy : 0.f; }
};
struct LeakyReluFwd {
  float slope;
  __device__ float operator()(float x) const { return x > 0.f ? x : x * slope; }
};
struct LeakyReluBwd {  // (dy, x)
  float slope;
  __device__ float operator()(float dy, float x) const { return x > 0.f ? dy : dy * slope; }
};
struct SigmoidFwd {
  __device__ float operator()(float x) const {
    const float e = expf(-fabsf(x));  // in (0, 1]: never overflows
    return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
  }
};
struct SigmoidBwd {  // (dy, y)
  __device__ float operator()(float dy, float y) const { return dy * y * (1.f - y); }
};
struct TanhFwd {
  __device__ float operator()(float x) const { return tanhf(x); }
};
struct TanhBwd {  // (dy, y)
  __device__ float operator()(float dy, float y) const { return dy * (1.f - y * y); }
};

}  // namespace

__global__ void relu_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int n, bool vec) {
  map1(x, y, n, vec, ReluFwd{});
}
__global__ void relu_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                 float* __restrict__ dx, int n, bool vec) {
  map2(dy, y, dx, n, vec, ReluBwd{});
}
__global__ void leaky_relu_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int n,
                                       bool vec, float slope) {
  map1(x, y, n, vec, LeakyReluFwd{slope});
}
__global__ void leaky_relu_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ x,
                                       float* __restrict__ dx, int n, bool vec, float slope) {
  map2(dy, x, dx, n, vec, LeakyReluBwd{slope});
}
__global__ void sigmoid_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int n, bool vec) {
  map1(x, y, n, vec, SigmoidFwd{});
}
__global__ void sigmoid_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                    float* __restrict__ dx, int n, bool vec) {
  map2(dy, y, dx, n, vec, SigmoidBwd{});
}
__global__ void tanh_fwd_kernel1(const float* __restrict__ x, float* __restrict__ y, int n, bool vec) {
  map1(x, y, n, vec, TanhFwd{});
}
__global__ void tanh_bwd_kernel1(const float* __restrict__ dy, const float* __restrict__ y,
                                 float* __restrict__ dx, int n, bool vec) {
  map2(dy, y, dx, n, vec, TanhBwd{});
}

// y = max(x + b[c], 0), x viewed as (N, C, inner): element i is in channel (i / inner) % C.
// vec: pointers aligned and inner % 4 == 0, so the 4 elements of a float4 share a channel.
__global__ void bias_relu_fwd_kernel1(const float* __restrict__ x, const float* __restrict__ b,
                                      float* __restrict__ y, int n, int channels, int inner, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const ReluFwd relu;
  if (vec) {
    const int64_t n4 = n / 4;  // n % 4 == 0 here (inner % 4 == 0)
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (int64_t i = first; i < n4; i += stride) {
      const float bc = __ldg(b + (i * 4 / inner) % channels);  // element 4i's channel
      float4 v = x4[i];
      y4[i] = make_float4(relu(v.x + bc), relu(v.y + bc), relu(v.z + bc), relu(v.w + bc));
    }
    return;
  }
  for (int64_t i = first; i < n; i += stride) y[i] = relu(x[i] + __ldg(b + (i / inner) % channels));
}

// ---------------------------------------------------------------------------- launchers
namespace {
// Blocks for n elements: a float4 path needs n/4 threads plus the scalar tail.
int grid_of(int64_t n, bool vec) { return grid_for(vec ? n / 4 + n % 4 : n, kBlock); }
}  // namespace

void relu_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "relu_fwd1: x");
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(y);
  launch("relu_fwd_kernel1", relu_fwd_kernel1, grid_of(n, vec), kBlock, 0, stream, x, y,
         static_cast<int>(n), vec);
}

void relu_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "relu_bwd1: dy");
  if (n == 0) return;
  const bool vec = aligned16(dy) && aligned16(y) && aligned16(dx);
  launch("relu_bwd_kernel1", relu_bwd_kernel1, grid_of(n, vec), kBlock, 0, stream, dy, y, dx,
         static_cast<int>(n), vec);
}

void leaky_relu_fwd1(const float* x, float* y, int64_t n, float slope, cudaStream_t stream) {
  check_int32_size(n, "leaky_relu_fwd1: x");
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(y);
  launch("leaky_relu_fwd_kernel1", leaky_relu_fwd_kernel1, grid_of(n, vec), kBlock, 0, stream, x, y,
         static_cast<int>(n), vec, slope);
}

void leaky_relu_bwd1(const float* dy, const float* x, float* dx, int64_t n, float slope,
                     cudaStream_t stream) {
  check_int32_size(n, "leaky_relu_bwd1: dy");
  if (n == 0) return;
  const bool vec = aligned16(dy) && aligned16(x) && aligned16(dx);
  launch("leaky_relu_bwd_kernel1", leaky_relu_bwd_kernel1, grid_of(n, vec), kBlock, 0, stream, dy,
         x, dx, static_cast<int>(n), vec, slope);
}

void sigmoid_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "sigmoid_fwd1: x");
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(y);
  launch("sigmoid_fwd_kernel1", sigmoid_fwd_kernel1, grid_of(n, vec), kBlock, 0, stream, x, y,
         static_cast<int>(n), vec);
}

void sigmoid_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "sigmoid_bwd1: dy");
  if (n == 0) return;
  const bool vec = aligned16(dy) && aligned16(y) && aligned16(dx);
  launch("sigmoid_bwd_kernel1", sigmoid_bwd_kernel1, grid_of(n, vec), kBlock, 0, stream, dy, y, dx,
         static_cast<int>(n), vec);
}

void tanh_fwd1(const float* x, float* y, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "tanh_fwd1: x");
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(y);
  launch("tanh_fwd_kernel1", tanh_fwd_kernel1, grid_of(n, vec), kBlock, 0, stream, x, y,
         static_cast<int>(n), vec);
}

void tanh_bwd1(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream) {
  check_int32_size(n, "tanh_bwd1: dy");
  if (n == 0) return;
  const bool vec = aligned16(dy) && aligned16(y) && aligned16(dx);
  launch("tanh_bwd_kernel1", tanh_bwd_kernel1, grid_of(n, vec), kBlock, 0, stream, dy, y, dx,
         static_cast<int>(n), vec);
}

void bias_relu_fwd1(const float* x, const float* b, float* y, int64_t n, int64_t channels,
                    int64_t inner, cudaStream_t stream) {
  check_int32_size(n, "bias_relu_fwd1: x");
  if (n == 0) return;
  if (channels < 1 || inner < 1 || n % (channels * inner) != 0) {
    throw std::invalid_argument("bias_relu_fwd1: n=" + std::to_string(n) +
                                " is not a multiple of channels*inner=" +
                                std::to_string(channels * inner));
  }
  const bool vec = aligned16(x) && aligned16(y) && inner % 4 == 0;
  launch("bias_relu_fwd_kernel1", bias_relu_fwd_kernel1, grid_of(n, vec), kBlock, 0, stream, x, b,
         y, static_cast<int>(n), static_cast<int>(channels), static_cast<int>(inner), vec);
}

}  // namespace pycnn
