// Shared by the bind_<family>.cpp files: the launchers take device pointers and
// the CUDA stream as Python ints (std::uintptr_t); these turn them back.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pycnn::bind {

inline const float* cf(std::uintptr_t p) { return reinterpret_cast<const float*>(p); }
inline float* f(std::uintptr_t p) { return reinterpret_cast<float*>(p); }
inline double* dbl(std::uintptr_t p) { return reinterpret_cast<double*>(p); }
inline cudaStream_t st(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace pycnn::bind
