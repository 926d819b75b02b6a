// Python bindings of the conv2d launchers: pointers and the stream are ints,
// the convolution's shape is 16 ints in Conv2dParams order:
//   N, C, H, W, K, R, S, P, Q, stride_h, stride_w, dilation_h, dilation_w,
//   pad_top, pad_left, groups
// (bottom/right padding shows only through P and Q, computed by the caller).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "conv2d/conv2d.h"

namespace py = pybind11;
using pycnn::Conv2dParams;

using pycnn::bind::cf;
using pycnn::bind::f;
using pycnn::bind::st;

namespace {
Conv2dParams params(int N, int C, int H, int W, int K, int R, int S, int P, int Q, int sh,
                    int sw, int dh, int dw, int pt, int pl, int groups) {
  return Conv2dParams{N, C, H, W, K, R, S, P, Q, sh, sw, dh, dw, pt, pl, groups};
}
}  // namespace

// The 16 shape arguments, named as in Conv2dParams.
#define PYCNN_CONV2D_ARGS                                                                  \
  py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"), py::arg("K"), py::arg("R"),     \
      py::arg("S"), py::arg("P"), py::arg("Q"), py::arg("stride_h"), py::arg("stride_w"), \
      py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"),                   \
      py::arg("pad_left"), py::arg("groups")
#define PYCNN_CONV2D_PARAMS                                                             \
  int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w, \
      int dilation_h, int dilation_w, int pad_top, int pad_left, int groups
#define PYCNN_CONV2D_MAKE                                                          \
  params(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, dilation_h, dilation_w, pad_top, \
         pad_left, groups)

void bind_conv2d(py::module_& m) {
  using py::arg;
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  // Every forward version has one signature, and every backward-data version
  // another: one binding each, differing only in name, launcher and docstring.
  using FwdLauncher = void (*)(const float*, const float*, const float*, float*,
                               const Conv2dParams&, bool, cudaStream_t);
  auto def_fwd = [&](const char* name, FwdLauncher launcher, const char* doc) {
    m.def(name,
          [launcher](std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
                     PYCNN_CONV2D_PARAMS, bool relu, std::uintptr_t stream) {
            launcher(cf(x), cf(w), cf(b), f(y), PYCNN_CONV2D_MAKE, relu, st(stream));
          },
          arg("x"), arg("w"), arg("b"), arg("y"), PYCNN_CONV2D_ARGS, arg("relu"), arg("stream"),
          nogil, doc);
  };
  using BwdDataLauncher = void (*)(const float*, const float*, float*, const Conv2dParams&,
                                   cudaStream_t);
  auto def_bwd_data = [&](const char* name, BwdDataLauncher launcher, const char* doc) {
    m.def(name,
          [launcher](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, PYCNN_CONV2D_PARAMS,
                     std::uintptr_t stream) {
            launcher(cf(dy), cf(w), f(dx), PYCNN_CONV2D_MAKE, st(stream));
          },
          arg("dy"), arg("w"), arg("dx"), PYCNN_CONV2D_ARGS, arg("stream"), nogil, doc);
  };

  // ---- forward
  def_fwd("conv2d_fwd1", &pycnn::conv2d_fwd1,
          "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; direct, one thread "
          "per output (kernels/conv2d/01_direct.cu).");
  def_fwd("conv2d_fwd2", &pycnn::conv2d_fwd2,
          "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; implicit GEMM with "
          "bias/ReLU fused in the epilogue (kernels/conv2d/02_implicit_gemm.cu).");
  // version 13: the forward signature plus the precision, last and optional (fp32 accuracy)
  m.def("conv2d_fwd13",
        [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y, PYCNN_CONV2D_PARAMS,
           bool relu, std::uintptr_t stream, bool tf32x3) {
          pycnn::conv2d_fwd13(cf(x), cf(w), cf(b), f(y), PYCNN_CONV2D_MAKE, relu, tf32x3, st(stream));
        },
        arg("x"), arg("w"), arg("b"), arg("y"), PYCNN_CONV2D_ARGS, arg("relu"), arg("stream"),
        arg("tf32x3") = true, nogil,
        "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; implicit GEMM on "
        "mma.sync TF32 tensor cores through explicit PTX (ldmatrix from a swizzled layout, a "
        "3-stage cp.async pipeline); tf32x3=True (the default) keeps fp32 accuracy with the "
        "3xTF32 split, False rounds the inputs to TF32 (about 1e-3 relative error, as cuDNN's "
        "TF32 mode); compute capability 8.0+ (kernels/conv2d/13_implicit_gemm_mma_tf32.cu).");
  def_fwd("conv2d_fwd13_bf16", &pycnn::conv2d_fwd13_bf16,
          "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; version 13 on BF16 "
          "tensor cores (mma.sync.m16n8k16, fp32 accumulation), the inputs rounded to bf16 "
          "when a tile lands (about 4e-3 relative error); compute capability 8.0+ "
          "(kernels/conv2d/13_implicit_gemm_mma_tf32.cu).");
  def_fwd("conv2d_fwd7", &pycnn::conv2d_fwd7,
          "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; version 2's implicit "
          "GEMM double-buffered, with float4 shared-memory reads "
          "(kernels/conv2d/07_implicit_gemm_pipelined.cu).");
  def_fwd("conv2d_fwd8", &pycnn::conv2d_fwd8,
          "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; implicit GEMM on TF32 "
          "tensor cores with the 3xTF32 split for fp32 accuracy; compute capability 8.0+ "
          "(kernels/conv2d/08_implicit_gemm_tf32x3.cu).");
  m.def("conv2d_fwd12_splits",
        [](PYCNN_CONV2D_PARAMS, int num_sms) {
          return pycnn::conv2d_fwd12_splits(PYCNN_CONV2D_MAKE, num_sms);
        },
        PYCNN_CONV2D_ARGS, arg("num_sms"),
        "Splits of C*R*S conv2d_fwd12 uses to bring its grid to about one wave of num_sms SMs "
        "(no GPU needed).");
  m.def("conv2d_fwd12_workspace_bytes",
        [](PYCNN_CONV2D_PARAMS, int splits) {
          return pycnn::conv2d_fwd12_workspace_bytes(PYCNN_CONV2D_MAKE, splits);
        },
        PYCNN_CONV2D_ARGS, arg("splits"),
        "Bytes of workspace conv2d_fwd12 needs (0 when splits == 1; no GPU needed).");
  m.def("conv2d_fwd12",
        [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
           std::uintptr_t workspace, PYCNN_CONV2D_PARAMS, bool relu, int splits,
           std::uintptr_t stream) {
          pycnn::conv2d_fwd12(cf(x), cf(w), cf(b), f(y), f(workspace), PYCNN_CONV2D_MAKE, relu,
                              splits, st(stream));
        },
        arg("x"), arg("w"), arg("b"), arg("y"), arg("workspace"), PYCNN_CONV2D_ARGS, arg("relu"),
        arg("splits"), arg("stream"), nogil,
        "y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; warp-tiled implicit GEMM "
        "with a tap table (no division in the loop); splits > 1 splits C*R*S, partial sums in "
        "workspace (conv2d_fwd12_workspace_bytes) added in a fixed order "
        "(kernels/conv2d/12_implicit_gemm_warp_tiled.cu).");

  // ---- backward-data
  def_bwd_data("conv2d_bwd_data1", &pycnn::conv2d_bwd_data1,
               "dx = gradient of conv2d with respect to x (overwritten); direct "
               "(kernels/conv2d/01_direct.cu).");
  def_bwd_data("conv2d_bwd_data3", &pycnn::conv2d_bwd_data3,
               "dx = gradient of conv2d with respect to x (overwritten); implicit GEMM "
               "(kernels/conv2d/03_implicit_gemm_bwd_data.cu).");
  def_bwd_data("conv2d_bwd_data9", &pycnn::conv2d_bwd_data9,
               "dx = gradient of conv2d with respect to x (overwritten); version 3's implicit "
               "GEMM on TF32 tensor cores with the 3xTF32 split for fp32 accuracy; compute "
               "capability 8.0+ (kernels/conv2d/09_implicit_gemm_bwd_data_tf32x3.cu).");
  def_bwd_data("conv2d_bwd_data11", &pycnn::conv2d_bwd_data11,
               "dx = gradient of conv2d with respect to x (overwritten); version 3's implicit "
               "GEMM split into stride phases, one dense GEMM per phase "
               "(kernels/conv2d/11_implicit_gemm_bwd_data_phased.cu).");
  m.def("conv2d_bwd_data14_workspace_bytes",
        [](PYCNN_CONV2D_PARAMS) { return pycnn::conv2d_bwd_data14_workspace_bytes(PYCNN_CONV2D_MAKE); },
        PYCNN_CONV2D_ARGS,
        "Bytes of workspace conv2d_bwd_data14 needs: the filter again and its tap tables "
        "(no GPU needed).");
  m.def("conv2d_bwd_data14",
        [](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, std::uintptr_t workspace,
           PYCNN_CONV2D_PARAMS, std::uintptr_t stream) {
          pycnn::conv2d_bwd_data14(cf(dy), cf(w), f(dx), f(workspace), PYCNN_CONV2D_MAKE, st(stream));
        },
        arg("dy"), arg("w"), arg("dx"), arg("workspace"), PYCNN_CONV2D_ARGS, arg("stream"), nogil,
        "dx = gradient of conv2d with respect to x (overwritten); version 11's stride phases "
        "reading tap tables and a channel-contiguous filter copy that a prep kernel writes "
        "into workspace (conv2d_bwd_data14_workspace_bytes), double-buffered "
        "(kernels/conv2d/14_implicit_gemm_bwd_data_tables.cu).");
  m.def("conv2d_bwd_data17_workspace_bytes",
        [](PYCNN_CONV2D_PARAMS) { return pycnn::conv2d_bwd_data17_workspace_bytes(PYCNN_CONV2D_MAKE); },
        PYCNN_CONV2D_ARGS,
        "Bytes of workspace conv2d_bwd_data17 needs: version 14's tables (no GPU needed).");
  m.def("conv2d_bwd_data17",
        [](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, std::uintptr_t workspace,
           PYCNN_CONV2D_PARAMS, std::uintptr_t stream) {
          pycnn::conv2d_bwd_data17(cf(dy), cf(w), f(dx), f(workspace), PYCNN_CONV2D_MAKE, st(stream));
        },
        arg("dy"), arg("w"), arg("dx"), arg("workspace"), PYCNN_CONV2D_ARGS, arg("stream"), nogil,
        "dx = gradient of conv2d with respect to x (overwritten); version 14's stride phases "
        "and tap tables (workspace: conv2d_bwd_data17_workspace_bytes) with warp tiles of 8x8 "
        "outputs a thread and BK = 16 (kernels/conv2d/17_implicit_gemm_bwd_data_warp_tiled.cu).");

  // ---- backward-filter
  m.def("conv2d_bwd_filter1",
        [](std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw, PYCNN_CONV2D_PARAMS,
           std::uintptr_t stream) {
          pycnn::conv2d_bwd_filter1(cf(x), cf(dy), f(dw), PYCNN_CONV2D_MAKE, st(stream));
        },
        arg("x"), arg("dy"), arg("dw"), PYCNN_CONV2D_ARGS, arg("stream"), nogil,
        "dw = gradient of conv2d with respect to w (overwritten); direct "
        "(kernels/conv2d/01_direct.cu).");
  m.def("conv2d_bwd_filter4_splits",
        [](PYCNN_CONV2D_PARAMS, int num_sms) {
          return pycnn::conv2d_bwd_filter4_splits(PYCNN_CONV2D_MAKE, num_sms);
        },
        PYCNN_CONV2D_ARGS, arg("num_sms"),
        "Split-K count conv2d_bwd_filter4 uses to fill num_sms SMs (no GPU needed).");
  m.def("conv2d_bwd_filter4_workspace_bytes",
        [](PYCNN_CONV2D_PARAMS, int splits, bool deterministic) {
          return pycnn::conv2d_bwd_filter4_workspace_bytes(PYCNN_CONV2D_MAKE, splits,
                                                           deterministic);
        },
        PYCNN_CONV2D_ARGS, arg("splits"), arg("deterministic"),
        "Bytes of workspace conv2d_bwd_filter4 needs (0 unless deterministic and "
        "splits > 1; no GPU needed).");
  // Versions 4 and 10 take the same arguments.
  auto def_bwd_filter_split_k = [&](const char* name, auto launcher, const char* doc) {
    m.def(name,
          [launcher](std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw, std::uintptr_t workspace,
                     PYCNN_CONV2D_PARAMS, int splits, bool deterministic, std::uintptr_t stream) {
            launcher(cf(x), cf(dy), f(dw), f(workspace), PYCNN_CONV2D_MAKE, splits, deterministic,
                     st(stream));
          },
          arg("x"), arg("dy"), arg("dw"), arg("workspace"), PYCNN_CONV2D_ARGS, arg("splits"),
          arg("deterministic"), arg("stream"), nogil, doc);
  };
  def_bwd_filter_split_k(
      "conv2d_bwd_filter4", &pycnn::conv2d_bwd_filter4,
      "dw = gradient of conv2d with respect to w (overwritten); implicit GEMM split-K over "
      "N*P*Q: atomics into dw, or (deterministic) per-split sums in workspace reduced in a "
      "fixed order (kernels/conv2d/04_implicit_gemm_bwd_filter.cu).");
  def_bwd_filter_split_k(
      "conv2d_bwd_filter10", &pycnn::conv2d_bwd_filter10,
      "dw = gradient of conv2d with respect to w (overwritten); version 4's split-K implicit "
      "GEMM on TF32 tensor cores with the 3xTF32 split for fp32 accuracy; sized by "
      "conv2d_bwd_filter4_splits and _workspace_bytes; compute capability 8.0+ "
      "(kernels/conv2d/10_implicit_gemm_bwd_filter_tf32x3.cu).");
  def_bwd_filter_split_k(
      "conv2d_bwd_filter15", &pycnn::conv2d_bwd_filter15,
      "dw = gradient of conv2d with respect to w (overwritten); version 4's split-K implicit "
      "GEMM double-buffered, its reduction row stepped instead of divided; sized by "
      "conv2d_bwd_filter4_splits and _workspace_bytes "
      "(kernels/conv2d/15_implicit_gemm_bwd_filter_pipelined.cu).");
  def_bwd_filter_split_k(
      "conv2d_bwd_filter16", &pycnn::conv2d_bwd_filter16,
      "dw = gradient of conv2d with respect to w (overwritten); version 15's split-K implicit "
      "GEMM warp-tiled (BK 16, 8x8 outputs a thread, the filter taps in a shared table); sized "
      "by conv2d_bwd_filter4_splits and _workspace_bytes "
      "(kernels/conv2d/16_implicit_gemm_bwd_filter_warp_tiled.cu).");

  // ---- depthwise
  def_fwd("conv2d_fwd6", &pycnn::conv2d_fwd6,
          "Depthwise (C/groups = 1) y = conv2d(x, w) + b (b = 0 for no bias), then ReLU if relu; "
          "a block per output plane (kernels/conv2d/06_depthwise.cu).");
  def_bwd_data("conv2d_bwd_data6", &pycnn::conv2d_bwd_data6,
               "Depthwise dx = gradient of conv2d with respect to x (overwritten) "
               "(kernels/conv2d/06_depthwise.cu).");
  m.def("conv2d_bwd_filter6_splits",
        [](PYCNN_CONV2D_PARAMS, int num_sms) {
          return pycnn::conv2d_bwd_filter6_splits(PYCNN_CONV2D_MAKE, num_sms);
        },
        PYCNN_CONV2D_ARGS, arg("num_sms"),
        "Splits of N*P*Q conv2d_bwd_filter6 uses to fill num_sms SMs (no GPU needed).");
  m.def("conv2d_bwd_filter6_workspace_bytes",
        [](PYCNN_CONV2D_PARAMS, int splits) {
          return pycnn::conv2d_bwd_filter6_workspace_bytes(PYCNN_CONV2D_MAKE, splits);
        },
        PYCNN_CONV2D_ARGS, arg("splits"),
        "Bytes of workspace conv2d_bwd_filter6 needs (0 when splits == 1; no GPU needed).");
  m.def("conv2d_bwd_filter6",
        [](std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw, std::uintptr_t workspace,
           PYCNN_CONV2D_PARAMS, int splits, std::uintptr_t stream) {
          pycnn::conv2d_bwd_filter6(cf(x), cf(dy), f(dw), f(workspace), PYCNN_CONV2D_MAKE,
                                    splits, st(stream));
        },
        arg("x"), arg("dy"), arg("dw"), arg("workspace"), PYCNN_CONV2D_ARGS, arg("splits"),
        arg("stream"), nogil,
        "Depthwise dw = gradient of conv2d with respect to w (overwritten): a block per "
        "(channel, split of N*P*Q), fixed-order reductions, deterministic "
        "(kernels/conv2d/06_depthwise.cu).");

  // ---- backward-bias
  m.def("conv2d_bwd_bias5",
        [](std::uintptr_t dy, std::uintptr_t db, int N, int K, int PQ, std::uintptr_t stream) {
          pycnn::conv2d_bwd_bias5(cf(dy), f(db), N, K, PQ, st(stream));
        },
        arg("dy"), arg("db"), arg("N"), arg("K"), arg("PQ"), arg("stream"), nogil,
        "db[k] = sum of dy[n, k, :, :] over n; deterministic "
        "(kernels/conv2d/05_bias_grad.cu).");
}

#undef PYCNN_CONV2D_ARGS
#undef PYCNN_CONV2D_PARAMS
#undef PYCNN_CONV2D_MAKE
