// Python bindings of the batch-norm launchers: pointers (0 for None) and the stream are ints.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "batch_norm/batch_norm.h"

namespace py = pybind11;

using pycnn::bind::cf;
using pycnn::bind::dbl;
using pycnn::bind::f;
using pycnn::bind::st;

void bind_batch_norm(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("batch_norm_fwd_train1",
        [](std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t running_mean,
           std::uintptr_t running_var, std::uintptr_t y, std::uintptr_t save_mean,
           std::uintptr_t save_invstd, int64_t n, int64_t c, int64_t inner, double momentum,
           double eps, std::uintptr_t stream) {
          pycnn::batch_norm_fwd_train1(cf(x), cf(weight), cf(bias), f(running_mean), f(running_var),
                                       f(y), f(save_mean), f(save_invstd), n, c, inner, momentum,
                                       eps, st(stream));
        },
        arg("x"), arg("weight"), arg("bias"), arg("running_mean"), arg("running_var"), arg("y"),
        arg("save_mean"), arg("save_invstd"), arg("n"), arg("c"), arg("inner"), arg("momentum"),
        arg("eps"), arg("stream"), nogil,
        "batch norm, training: batch statistics, running statistics updated in place");
  m.def("batch_norm_fwd_infer1",
        [](std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t running_mean,
           std::uintptr_t running_var, std::uintptr_t y, std::uintptr_t save_mean,
           std::uintptr_t save_invstd, int64_t n, int64_t c, int64_t inner, double eps,
           std::uintptr_t stream) {
          pycnn::batch_norm_fwd_infer1(cf(x), cf(weight), cf(bias), cf(running_mean),
                                       cf(running_var), f(y), f(save_mean), f(save_invstd), n, c,
                                       inner, eps, st(stream));
        },
        arg("x"), arg("weight"), arg("bias"), arg("running_mean"), arg("running_var"), arg("y"),
        arg("save_mean"), arg("save_invstd"), arg("n"), arg("c"), arg("inner"), arg("eps"),
        arg("stream"), nogil, "batch norm, inference: running statistics");
  m.def("batch_norm_bwd1",
        [](std::uintptr_t dy, std::uintptr_t x, std::uintptr_t weight, std::uintptr_t save_mean,
           std::uintptr_t save_invstd, std::uintptr_t dx, std::uintptr_t dweight,
           std::uintptr_t dbias, int64_t n, int64_t c, int64_t inner, bool training,
           std::uintptr_t stream) {
          pycnn::batch_norm_bwd1(cf(dy), cf(x), cf(weight), cf(save_mean), cf(save_invstd), f(dx),
                                 f(dweight), f(dbias), n, c, inner, training, st(stream));
        },
        arg("dy"), arg("x"), arg("weight"), arg("save_mean"), arg("save_invstd"), arg("dx"),
        arg("dweight"), arg("dbias"), arg("n"), arg("c"), arg("inner"), arg("training"),
        arg("stream"), nogil, "batch norm backward: dx, dweight, dbias");

  // ---- version 2: channels split over blocks, through a workspace of doubles
  m.def("batch_norm_splits2", &pycnn::batch_norm_splits2, arg("n"), arg("c"), arg("inner"),
        arg("num_sms"), "version 2's split count per channel for this shape and GPU");
  m.def("batch_norm_workspace_bytes2", &pycnn::batch_norm_workspace_bytes2, arg("c"), arg("splits"),
        "bytes of workspace version 2 needs for c channels and this split count");
  m.def("batch_norm_fwd_train2",
        [](std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t running_mean,
            std::uintptr_t running_var, std::uintptr_t y, std::uintptr_t save_mean,
            std::uintptr_t save_invstd, std::uintptr_t workspace, int64_t n, int64_t c, int64_t inner,
            int splits, double momentum, double eps, std::uintptr_t stream) {
          pycnn::batch_norm_fwd_train2(cf(x), cf(weight), cf(bias), f(running_mean), f(running_var),
                                       f(y), f(save_mean), f(save_invstd), dbl(workspace), n, c, inner,
                                       splits, momentum, eps, st(stream));
        },
        arg("x"), arg("weight"), arg("bias"), arg("running_mean"), arg("running_var"), arg("y"),
        arg("save_mean"), arg("save_invstd"), arg("workspace"), arg("n"), arg("c"), arg("inner"),
        arg("splits"), arg("momentum"), arg("eps"), arg("stream"), nogil,
        "batch norm, training, each channel split over `splits` blocks "
        "(kernels/batch_norm/02_batch_norm_split.cu)");
  m.def("batch_norm_bwd2",
        [](std::uintptr_t dy, std::uintptr_t x, std::uintptr_t weight, std::uintptr_t save_mean,
            std::uintptr_t save_invstd, std::uintptr_t dx, std::uintptr_t dweight,
            std::uintptr_t dbias, std::uintptr_t workspace, int64_t n, int64_t c, int64_t inner,
            int splits, bool training, std::uintptr_t stream) {
          pycnn::batch_norm_bwd2(cf(dy), cf(x), cf(weight), cf(save_mean), cf(save_invstd), f(dx),
                                 f(dweight), f(dbias), dbl(workspace), n, c, inner, splits, training,
                                 st(stream));
        },
        arg("dy"), arg("x"), arg("weight"), arg("save_mean"), arg("save_invstd"), arg("dx"),
        arg("dweight"), arg("dbias"), arg("workspace"), arg("n"), arg("c"), arg("inner"),
        arg("splits"), arg("training"), arg("stream"), nogil,
        "batch norm backward, each channel split over `splits` blocks "
        "(kernels/batch_norm/02_batch_norm_split.cu)");
}
