// Python bindings of the pooling launchers: pointers and the stream are ints.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "pool/pool.h"

namespace py = pybind11;

using pycnn::bind::cf;
using pycnn::bind::f;
using pycnn::bind::st;

void bind_pool(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("max_pool2d_fwd1",
        [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t indices, int64_t n, int64_t c,
           int64_t h, int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph,
           int pw, int dh, int dw, std::uintptr_t stream) {
          pycnn::max_pool2d_fwd1(cf(x), f(y), reinterpret_cast<int64_t*>(indices), n, c, h, w, p,
                                 q, kh, kw, sh, sw, ph, pw, dh, dw, st(stream));
        },
        arg("x"), arg("y"), arg("indices"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"),
        arg("q"), arg("kh"), arg("kw"), arg("sh"), arg("sw"), arg("ph"), arg("pw"), arg("dh"),
        arg("dw"), arg("stream"), nogil,
        "max pool: y (N,C,P,Q) and int64 argmax indices h*W+w per plane");
  m.def("max_pool2d_bwd1",
        [](std::uintptr_t dy, std::uintptr_t indices, std::uintptr_t dx, int64_t n, int64_t c,
           int64_t h, int64_t w, int64_t p, int64_t q, std::uintptr_t stream) {
          pycnn::max_pool2d_bwd1(cf(dy), reinterpret_cast<const int64_t*>(indices), f(dx), n, c,
                                 h, w, p, q, st(stream));
        },
        arg("dy"), arg("indices"), arg("dx"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"),
        arg("q"), arg("stream"), nogil, "max pool backward, atomic scatter: zero dx, add dy at the argmax");
  m.def("max_pool2d_bwd2",
        [](std::uintptr_t dy, std::uintptr_t indices, std::uintptr_t dx, int64_t n, int64_t c,
           int64_t h, int64_t w, int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph,
           int pw, int dh, int dw, std::uintptr_t stream) {
          pycnn::max_pool2d_bwd2(cf(dy), reinterpret_cast<const int64_t*>(indices), f(dx), n, c,
                                 h, w, p, q, kh, kw, sh, sw, ph, pw, dh, dw, st(stream));
        },
        arg("dy"), arg("indices"), arg("dx"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"),
        arg("q"), arg("kh"), arg("kw"), arg("sh"), arg("sw"), arg("ph"), arg("pw"), arg("dh"),
        arg("dw"), arg("stream"), nogil,
        "max pool backward (gather over the covering windows; deterministic, no atomics)");

  m.def("avg_pool2d_fwd1",
        [](std::uintptr_t x, std::uintptr_t y, int64_t n, int64_t c, int64_t h, int64_t w,
           int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
           bool count_include_pad, std::uintptr_t stream) {
          pycnn::avg_pool2d_fwd1(cf(x), f(y), n, c, h, w, p, q, kh, kw, sh, sw, ph, pw,
                                 count_include_pad, st(stream));
        },
        arg("x"), arg("y"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"), arg("q"),
        arg("kh"), arg("kw"), arg("sh"), arg("sw"), arg("ph"), arg("pw"),
        arg("count_include_pad"), arg("stream"), nogil, "average pool forward");
  m.def("avg_pool2d_bwd1",
        [](std::uintptr_t dy, std::uintptr_t dx, int64_t n, int64_t c, int64_t h, int64_t w,
           int64_t p, int64_t q, int kh, int kw, int sh, int sw, int ph, int pw,
           bool count_include_pad, std::uintptr_t stream) {
          pycnn::avg_pool2d_bwd1(cf(dy), f(dx), n, c, h, w, p, q, kh, kw, sh, sw, ph, pw,
                                 count_include_pad, st(stream));
        },
        arg("dy"), arg("dx"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"), arg("q"),
        arg("kh"), arg("kw"), arg("sh"), arg("sw"), arg("ph"), arg("pw"),
        arg("count_include_pad"), arg("stream"), nogil, "average pool backward (gather)");

  m.def("adaptive_avg_pool2d_fwd1",
        [](std::uintptr_t x, std::uintptr_t y, int64_t n, int64_t c, int64_t h, int64_t w,
           int64_t p, int64_t q, std::uintptr_t stream) {
          pycnn::adaptive_avg_pool2d_fwd1(cf(x), f(y), n, c, h, w, p, q, st(stream));
        },
        arg("x"), arg("y"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"), arg("q"),
        arg("stream"), nogil, "adaptive average pool forward (1x1: warp-per-plane global pool)");
  m.def("adaptive_avg_pool2d_bwd1",
        [](std::uintptr_t dy, std::uintptr_t dx, int64_t n, int64_t c, int64_t h, int64_t w,
           int64_t p, int64_t q, std::uintptr_t stream) {
          pycnn::adaptive_avg_pool2d_bwd1(cf(dy), f(dx), n, c, h, w, p, q, st(stream));
        },
        arg("dy"), arg("dx"), arg("n"), arg("c"), arg("h"), arg("w"), arg("p"), arg("q"),
        arg("stream"), nogil, "adaptive average pool backward (gather)");
}
