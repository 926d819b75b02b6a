// Python bindings of the dropout launchers: pointers and the stream are ints.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "dropout/dropout.h"

namespace py = pybind11;

void bind_dropout(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("dropout_fwd1",
        [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t mask, int64_t n, double p,
           uint32_t seed, std::uintptr_t stream) {
          pycnn::dropout_fwd1(reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y),
                              reinterpret_cast<uint8_t*>(mask), n, p, seed,
                              reinterpret_cast<cudaStream_t>(stream));
        },
        arg("x"), arg("y"), arg("mask"), arg("n"), arg("p"), arg("seed"), arg("stream"), nogil,
        "dropout forward: uint8 keep mask from the counter hash of (seed mod 2^32, i)");
  m.def("dropout_bwd1",
        [](std::uintptr_t dy, std::uintptr_t mask, std::uintptr_t dx, int64_t n, double p,
           std::uintptr_t stream) {
          pycnn::dropout_bwd1(reinterpret_cast<const float*>(dy),
                              reinterpret_cast<const uint8_t*>(mask), reinterpret_cast<float*>(dx),
                              n, p, reinterpret_cast<cudaStream_t>(stream));
        },
        arg("dy"), arg("mask"), arg("dx"), arg("n"), arg("p"), arg("stream"), nogil,
        "dropout backward: dx = dy * mask / (1 - p)");
}
