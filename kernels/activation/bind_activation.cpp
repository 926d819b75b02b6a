// Python bindings of the activation launchers: pointers and the stream are ints.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "activation/activation.h"

namespace py = pybind11;

using pycnn::bind::cf;
using pycnn::bind::f;
using pycnn::bind::st;

void bind_activation(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("relu_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t n, std::uintptr_t stream) {
    pycnn::relu_fwd1(cf(x), f(y), n, st(stream));
  }, arg("x"), arg("y"), arg("n"), arg("stream"), nogil, "y = max(x, 0)");
  m.def("relu_bwd1", [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n,
                        std::uintptr_t stream) {
    pycnn::relu_bwd1(cf(dy), cf(y), f(dx), n, st(stream));
  }, arg("dy"), arg("y"), arg("dx"), arg("n"), arg("stream"), nogil, "dx = dy where y > 0");

  m.def("leaky_relu_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t n, float slope,
                              std::uintptr_t stream) {
    pycnn::leaky_relu_fwd1(cf(x), f(y), n, slope, st(stream));
  }, arg("x"), arg("y"), arg("n"), arg("negative_slope"), arg("stream"), nogil,
     "y = x if x > 0 else negative_slope * x");
  m.def("leaky_relu_bwd1", [](std::uintptr_t dy, std::uintptr_t x, std::uintptr_t dx, int64_t n,
                              float slope, std::uintptr_t stream) {
    pycnn::leaky_relu_bwd1(cf(dy), cf(x), f(dx), n, slope, st(stream));
  }, arg("dy"), arg("x"), arg("dx"), arg("n"), arg("negative_slope"), arg("stream"), nogil,
     "dx = dy if x > 0 else negative_slope * dy");

  m.def("sigmoid_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t n, std::uintptr_t stream) {
    pycnn::sigmoid_fwd1(cf(x), f(y), n, st(stream));
  }, arg("x"), arg("y"), arg("n"), arg("stream"), nogil, "y = 1 / (1 + exp(-x)), overflow-free");
  m.def("sigmoid_bwd1", [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n,
                           std::uintptr_t stream) {
    pycnn::sigmoid_bwd1(cf(dy), cf(y), f(dx), n, st(stream));
  }, arg("dy"), arg("y"), arg("dx"), arg("n"), arg("stream"), nogil, "dx = dy * y * (1 - y)");

  m.def("tanh_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t n, std::uintptr_t stream) {
    pycnn::tanh_fwd1(cf(x), f(y), n, st(stream));
  }, arg("x"), arg("y"), arg("n"), arg("stream"), nogil, "y = tanh(x)");
  m.def("tanh_bwd1", [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n,
                        std::uintptr_t stream) {
    pycnn::tanh_bwd1(cf(dy), cf(y), f(dx), n, st(stream));
  }, arg("dy"), arg("y"), arg("dx"), arg("n"), arg("stream"), nogil, "dx = dy * (1 - y * y)");

  m.def("bias_relu_fwd1", [](std::uintptr_t x, std::uintptr_t b, std::uintptr_t y, int64_t n,
                             int64_t channels, int64_t inner, std::uintptr_t stream) {
    pycnn::bias_relu_fwd1(cf(x), cf(b), f(y), n, channels, inner, st(stream));
  }, arg("x"), arg("b"), arg("y"), arg("n"), arg("channels"), arg("inner"), arg("stream"), nogil,
     "y = max(x + b[c], 0) for x viewed as (N, channels, inner)");
}
