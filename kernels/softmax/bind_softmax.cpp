// Python bindings of the softmax and cross-entropy launchers: pointers and the stream are ints.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "softmax/softmax.h"

namespace py = pybind11;

using pycnn::bind::cf;
using pycnn::bind::f;
using pycnn::bind::st;

void bind_softmax(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("softmax_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t outer, int64_t dim,
                           int64_t inner, std::uintptr_t stream) {
    pycnn::softmax_fwd1(cf(x), f(y), outer, dim, inner, st(stream));
  }, arg("x"), arg("y"), arg("outer"), arg("dim"), arg("inner"), arg("stream"), nogil,
     "softmax of x viewed as (outer, dim, inner) along dim");
  m.def("log_softmax_fwd1", [](std::uintptr_t x, std::uintptr_t y, int64_t outer, int64_t dim,
                               int64_t inner, std::uintptr_t stream) {
    pycnn::log_softmax_fwd1(cf(x), f(y), outer, dim, inner, st(stream));
  }, arg("x"), arg("y"), arg("outer"), arg("dim"), arg("inner"), arg("stream"), nogil,
     "log_softmax of x viewed as (outer, dim, inner) along dim");
  m.def("softmax_bwd1", [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t outer,
                           int64_t dim, int64_t inner, std::uintptr_t stream) {
    pycnn::softmax_bwd1(cf(dy), cf(y), f(dx), outer, dim, inner, st(stream));
  }, arg("dy"), arg("y"), arg("dx"), arg("outer"), arg("dim"), arg("inner"), arg("stream"), nogil,
     "dx = y * (dy - sum(dy * y)) along dim");
  m.def("log_softmax_bwd1", [](std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx,
                               int64_t outer, int64_t dim, int64_t inner, std::uintptr_t stream) {
    pycnn::log_softmax_bwd1(cf(dy), cf(y), f(dx), outer, dim, inner, st(stream));
  }, arg("dy"), arg("y"), arg("dx"), arg("outer"), arg("dim"), arg("inner"), arg("stream"), nogil,
     "dx = dy - exp(y) * sum(dy) along dim");

  m.def("cross_entropy_fwd1",
        [](std::uintptr_t logits, std::uintptr_t target, std::uintptr_t log_probs,
           std::uintptr_t row_loss, std::uintptr_t loss, std::uintptr_t error_flag, int64_t n,
           int64_t classes, std::uintptr_t stream) {
          pycnn::cross_entropy_fwd1(cf(logits), reinterpret_cast<const int64_t*>(target),
                                    f(log_probs), f(row_loss), f(loss),
                                    reinterpret_cast<int*>(error_flag), n, classes, st(stream));
        },
        arg("logits"), arg("target"), arg("log_probs"), arg("row_loss"), arg("loss"),
        arg("error_flag"), arg("n"), arg("classes"), arg("stream"), nogil,
        "mean cross-entropy of logits (n, classes) against int64 targets; sets *error_flag "
        "for a target out of range");
  m.def("cross_entropy_bwd1",
        [](std::uintptr_t log_probs, std::uintptr_t target, std::uintptr_t dloss,
           std::uintptr_t dlogits, std::uintptr_t error_flag, int64_t n, int64_t classes,
           std::uintptr_t stream) {
          pycnn::cross_entropy_bwd1(cf(log_probs), reinterpret_cast<const int64_t*>(target),
                                    cf(dloss), f(dlogits), reinterpret_cast<int*>(error_flag), n,
                                    classes, st(stream));
        },
        arg("log_probs"), arg("target"), arg("dloss"), arg("dlogits"), arg("error_flag"), arg("n"),
        arg("classes"), arg("stream"), nogil,
        "dlogits = (softmax - onehot) * dloss / n; dloss is a device float");
}
