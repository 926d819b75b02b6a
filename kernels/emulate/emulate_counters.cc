// Runs one op once, through its real launcher, on a shape from the command line,
// with the emulator's memory counters on: the dynamic counters of `pycnn inspect`
// (pycnn/inspect/dynamic.py builds and runs this). Also the probe kernels of
// bench/counter_probes.cu, whose counters are known, launched as bench/ncu_probe.py
// launches them on the GPU.
//
//   emulate_counters probe NAME [N]                      (N floats; float4: N/4 of them)
//   emulate_counters conv2d fwd|bwd_data|bwd_filter VERSION N,C,H,W,K,R,S,stride,pad [GROUPS]
//   emulate_counters max_pool2d fwd|bwd1|bwd2 N,C,H,W,kernel,stride,pad
//   emulate_counters avg_pool2d fwd|bwd N,C,H,W,kernel,stride,pad
//   emulate_counters activation relu|leaky_relu|sigmoid|tanh fwd|bwd COUNT
//   emulate_counters batch_norm fwd|bwd 1|2 N,C,H,W      (training; version 2 splits
//                                                        as batch_norm_splits2 picks for 132 SMs)
//   emulate_counters softmax fwd|bwd OUTER,DIM,INNER
//
// with PYCNN_EMU_COUNTERS=<json> (and PYCNN_EMU_SAMPLE=k, PYCNN_EMU_CHECKS=0: see
// emu_runtime.cc). Inputs are random and count as written; the launchers make their
// own choices (tile, grid, splits) for the emulated H200 (132 SMs). The JSON lists
// every launch the op made (a split reduction, a memset's kernel, ...). Setup the
// launcher needs (max-pool indices, batch-norm statistics) is computed on the host,
// so no other launch shows up. Results are not checked here: the family harnesses
// (emulate_<family>.cc) do that.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "emulate/emu.h"
// One family a build (their helpers' names collide): -DCOUNTERS_CONV2D, _POOL,
// _ACTIVATION, _BATCH_NORM or _SOFTMAX (emulate.py's counters_binary(family)); the
// probes are in every build.
#if defined(COUNTERS_CONV2D)
#include "conv2d/01_direct.cu"
#include "conv2d/02_implicit_gemm.cu"
#include "conv2d/03_implicit_gemm_bwd_data.cu"
#include "conv2d/04_implicit_gemm_bwd_filter.cu"
#include "conv2d/05_bias_grad.cu"
#include "conv2d/06_depthwise.cu"
#include "conv2d/07_implicit_gemm_pipelined.cu"
#include "conv2d/12_implicit_gemm_warp_tiled.cu"
#include "emulate/emu_wmma.h"
#include "conv2d/08_implicit_gemm_tf32x3.cu"
#include "conv2d/09_implicit_gemm_bwd_data_tf32x3.cu"
#include "conv2d/10_implicit_gemm_bwd_filter_tf32x3.cu"
#include "conv2d/11_implicit_gemm_bwd_data_phased.cu"
#include "conv2d/14_implicit_gemm_bwd_data_tables.cu"
#include "conv2d/17_implicit_gemm_bwd_data_warp_tiled.cu"
#include "conv2d/15_implicit_gemm_bwd_filter_pipelined.cu"
#include "conv2d/16_implicit_gemm_bwd_filter_warp_tiled.cu"
#include "conv2d/13_implicit_gemm_mma_tf32.cu"
#elif defined(COUNTERS_POOL)
#include "pool/01_max_pool.cu"
#include "pool/04_max_pool_bwd_gather.cu"
#include "pool/02_avg_pool.cu"
#elif defined(COUNTERS_ACTIVATION)
#include "activation/01_pointwise.cu"
#elif defined(COUNTERS_BATCH_NORM)
#include "batch_norm/01_batch_norm.cu"
#include "batch_norm/02_batch_norm_split.cu"
#elif defined(COUNTERS_SOFTMAX)
#include "softmax/01_softmax.cu"
#endif
// found through -I<kernels>: <repo>/bench/counter_probes.cu, taken as it is
#include "../bench/counter_probes.cu"

namespace {

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "emulate_counters: %s\n(see the header of kernels/emulate/emulate_counters.cc for the usage)\n", why);
  std::exit(2);
}

std::vector<long> ints(const char* arg, size_t n, const char* what) {
  std::vector<long> v;
  for (const char* p = arg; *p;) {
    char* end = nullptr;
    v.push_back(std::strtol(p, &end, 10));
    if (end == p) break;
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') break;
  }
  if (v.size() != n) {
    std::string msg = std::string(what) + ": expected " + std::to_string(n) + " comma-separated integers, got '" + arg + "'";
    usage(msg.c_str());
  }
  for (long x : v)
    if (x < 0) usage((std::string(what) + ": expected integers >= 0, got '" + arg + "'").c_str());
  return v;
}

std::mt19937 rng(0);
std::vector<float> randn(size_t n) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

using G = emu::Guarded<float>;

int out_size(long in, long k, long stride, long pad) { return (int)((in + 2 * pad - (k - 1) - 1) / stride + 1); }

void probe(const char* name, int n) {
  G in(randn(n), 0, "in");
  G out((size_t)n, 0.0f, 0, "out");
  const std::string s = name;
  const int threads = s == "probe_copy_float4" ? n / 4 : n;  // float4: n/4 of them, as ncu_probe.py
  const dim3 grid((unsigned)((threads + 255) / 256)), block(256);
  if (s == "probe_copy") emu::launch(name, grid, block, [&] { probe_copy(in.data(), out.data(), n); });
  else if (s == "probe_copy_stride32") emu::launch(name, grid, block, [&] { probe_copy_stride32(in.data(), out.data(), n); });
  else if (s == "probe_copy_float4")
    emu::launch(name, grid, block, [&] {
      probe_copy_float4(reinterpret_cast<const float4*>(in.data()), reinterpret_cast<float4*>(out.data()), threads);
    });
  else if (s == "probe_smem_conflict32") emu::launch(name, grid, block, [&] { probe_smem_conflict32(in.data(), out.data(), n); });
  else if (s == "probe_smem_padded") emu::launch(name, grid, block, [&] { probe_smem_padded(in.data(), out.data(), n); });
  else if (s == "probe_smem_broadcast") emu::launch(name, grid, block, [&] { probe_smem_broadcast(in.data(), out.data(), n); });
  else usage(("probe: no probe kernel named " + s).c_str());
}

#if defined(COUNTERS_CONV2D)
void conv2d(const std::string& pass, int version, const char* shape, int groups) {
  const std::vector<long> v = ints(shape, 9, "conv2d shape N,C,H,W,K,R,S,stride,pad");
  pycnn::Conv2dParams p{};
  p.N = (int)v[0], p.C = (int)v[1], p.H = (int)v[2], p.W = (int)v[3], p.K = (int)v[4], p.R = (int)v[5], p.S = (int)v[6];
  p.stride_h = p.stride_w = (int)v[7];
  p.pad_top = p.pad_left = (int)v[8];
  p.dilation_h = p.dilation_w = 1;
  p.groups = groups;
  p.P = out_size(p.H, p.R, v[7], v[8]);
  p.Q = out_size(p.W, p.S, v[7], v[8]);
  const size_t xs = (size_t)p.N * p.C * p.H * p.W, ws = (size_t)p.K * (p.C / std::max(groups, 1)) * p.R * p.S,
               ys = (size_t)p.N * p.K * std::max(p.P, 0) * std::max(p.Q, 0);
  if (pass == "fwd" && version == 12) {  // with the splits and workspace pycnn gives it (132 SMs)
    G x(randn(xs), 0, "x"), w(randn(ws), 0, "w");
    G y(ys, 0.0f, 0, "y");
    const int splits = pycnn::conv2d_fwd12_splits(p, emu::device.sms);
    const size_t bytes = pycnn::conv2d_fwd12_workspace_bytes(p, splits);
    G work(bytes / 4, 0.0f, 0, "workspace");
    pycnn::conv2d_fwd12(x.data(), w.data(), nullptr, y.data(), bytes ? work.data() : nullptr, p, false, splits,
                        nullptr);
    return;
  }
  if (pass == "fwd") {
    G x(randn(xs), 0, "x"), w(randn(ws), 0, "w");
    G y(ys, 0.0f, 0, "y");
    if (version == 13) {  // 3xTF32, as pycnn calls it (its plain-TF32 mode only drops the lo tiles' reads)
      pycnn::conv2d_fwd13(x.data(), w.data(), nullptr, y.data(), p, false, true, nullptr);
      return;
    }
    auto* f = version == 1 ? pycnn::conv2d_fwd1 : version == 2 ? pycnn::conv2d_fwd2 : version == 6 ? pycnn::conv2d_fwd6
            : version == 7 ? pycnn::conv2d_fwd7 : version == 8 ? pycnn::conv2d_fwd8 : nullptr;
    if (!f) usage(("conv2d fwd: version expected 1, 2, 6, 7 or 8, got " + std::to_string(version)).c_str());
    f(x.data(), w.data(), nullptr, y.data(), p, false, nullptr);
  } else if (pass == "bwd_data") {
    G dy(randn(ys), 0, "dy"), w(randn(ws), 0, "w");
    G dx(xs, 0.0f, 0, "dx");
    if (version == 14 || version == 17) {  // with the workspace pycnn gives them (their prep
      const size_t bytes = pycnn::conv2d_bwd_data14_workspace_bytes(p);  // kernel is a launch of its own)
      G work(bytes / 4, 0.0f, 0, "workspace");
      (version == 14 ? pycnn::conv2d_bwd_data14 : pycnn::conv2d_bwd_data17)(dy.data(), w.data(), dx.data(),
                                                                          work.data(), p, nullptr);
      return;
    }
    auto* f = version == 1 ? pycnn::conv2d_bwd_data1 : version == 3 ? pycnn::conv2d_bwd_data3
            : version == 6 ? pycnn::conv2d_bwd_data6 : version == 9 ? pycnn::conv2d_bwd_data9
            : version == 11 ? pycnn::conv2d_bwd_data11 : nullptr;
    if (!f) usage(("conv2d bwd_data: version expected 1, 3, 6, 9, 11, 14 or 17, got " + std::to_string(version)).c_str());
    f(dy.data(), w.data(), dx.data(), p, nullptr);
  } else if (pass == "bwd_filter") {
    G x(randn(xs), 0, "x"), dy(randn(ys), 0, "dy");
    G dw(ws, 0.0f, 0, "dw");
    const int sms = emu::device.sms;
    if (version == 1) {
      pycnn::conv2d_bwd_filter1(x.data(), dy.data(), dw.data(), p, nullptr);
    } else if (version == 6) {
      const int splits = pycnn::conv2d_bwd_filter6_splits(p, sms);
      const size_t bytes = pycnn::conv2d_bwd_filter6_workspace_bytes(p, splits);
      G work(std::max<size_t>(bytes / 4, 1), 0.0f, 0, "workspace");
      pycnn::conv2d_bwd_filter6(x.data(), dy.data(), dw.data(), bytes ? work.data() : nullptr, p, splits, nullptr);
    } else if (version == 4 || version == 10 || version == 15 || version == 16) {  // as pycnn calls them: the fixed-order sum
      const int splits = pycnn::conv2d_bwd_filter4_splits(p, sms);
      const size_t bytes = pycnn::conv2d_bwd_filter4_workspace_bytes(p, splits, true);
      G work(std::max<size_t>(bytes / 4, 1), 0.0f, 0, "workspace");
      (version == 4    ? pycnn::conv2d_bwd_filter4
       : version == 10 ? pycnn::conv2d_bwd_filter10
       : version == 15 ? pycnn::conv2d_bwd_filter15
                       : pycnn::conv2d_bwd_filter16)(
          x.data(), dy.data(), dw.data(), bytes ? work.data() : nullptr, p, splits, true, nullptr);
    } else {
      usage(("conv2d bwd_filter: version expected 1, 4, 6, 10, 15 or 16, got " + std::to_string(version)).c_str());
    }
  } else {
    usage(("conv2d: pass expected fwd, bwd_data or bwd_filter, got " + pass).c_str());
  }
}

#endif

#if defined(COUNTERS_POOL)
void pool(bool max, const std::string& pass, const char* shape) {
  const std::vector<long> v = ints(shape, 7, "pool shape N,C,H,W,kernel,stride,pad");
  const long N = v[0], C = v[1], H = v[2], W = v[3], k = v[4], st = v[5], pad = v[6];
  const long P = out_size(H, k, st, pad), Q = out_size(W, k, st, pad);
  const size_t xs = (size_t)(N * C * H * W), ys = (size_t)(N * C * P * Q);
  if (pass == "fwd") {
    G x(randn(xs), 0, "x");
    G y(ys, 0.0f, 0, "y");
    if (max) {
      emu::Guarded<int64_t> idx(ys, 0, 0, "indices");
      pycnn::max_pool2d_fwd1(x.data(), y.data(), idx.data(), N, C, H, W, P, Q, k, k, st, st, pad, pad, 1, 1, nullptr);
    } else {
      pycnn::avg_pool2d_fwd1(x.data(), y.data(), N, C, H, W, P, Q, k, k, st, st, pad, pad, true, nullptr);
    }
    return;
  }
  G dy(randn(ys), 0, "dy");
  G dx(xs, 0.0f, 0, "dx");
  if (!max) {
    if (pass != "bwd") usage(("avg_pool2d: pass expected fwd or bwd, got " + pass).c_str());
    pycnn::avg_pool2d_bwd1(dy.data(), dx.data(), N, C, H, W, P, Q, k, k, st, st, pad, pad, true, nullptr);
    return;
  }
  if (pass != "bwd1" && pass != "bwd2") usage(("max_pool2d: pass expected fwd, bwd1 or bwd2, got " + pass).c_str());
  // the indices a forward pass would give: the largest tap of each window, on the host
  const std::vector<float> x = randn(xs);
  std::vector<int64_t> at(ys);
  for (long plane = 0; plane < N * C; ++plane)
    for (long op = 0; op < P; ++op)
      for (long oq = 0; oq < Q; ++oq) {
        long best = -1;
        for (long r = 0; r < k; ++r)
          for (long s = 0; s < k; ++s) {
            const long h = op * st - pad + r, w = oq * st - pad + s;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            if (best < 0 || x[plane * H * W + h * W + w] > x[plane * H * W + best]) best = h * W + w;
          }
        at[(plane * P + op) * Q + oq] = best;
      }
  emu::Guarded<int64_t> idx(at, 0, "indices");
  if (pass == "bwd1") pycnn::max_pool2d_bwd1(dy.data(), idx.data(), dx.data(), N, C, H, W, P, Q, nullptr);
  else pycnn::max_pool2d_bwd2(dy.data(), idx.data(), dx.data(), N, C, H, W, P, Q, k, k, st, st, pad, pad, 1, 1, nullptr);
}

#endif

#if defined(COUNTERS_ACTIVATION)
void activation(const std::string& fn, const std::string& pass, const char* count) {
  const long n = ints(count, 1, "activation COUNT")[0];
  G x(randn(n), 0, "x"), dy(randn(n), 0, "dy");
  G y((size_t)n, 0.0f, 0, pass == "fwd" ? "y" : "dx");
  const bool fwd = pass == "fwd";
  if (!fwd && pass != "bwd") usage(("activation: pass expected fwd or bwd, got " + pass).c_str());
  if (fn == "relu") fwd ? pycnn::relu_fwd1(x.data(), y.data(), n, nullptr) : pycnn::relu_bwd1(dy.data(), x.data(), y.data(), n, nullptr);
  else if (fn == "leaky_relu")
    fwd ? pycnn::leaky_relu_fwd1(x.data(), y.data(), n, 0.01f, nullptr)
        : pycnn::leaky_relu_bwd1(dy.data(), x.data(), y.data(), n, 0.01f, nullptr);
  else if (fn == "sigmoid") fwd ? pycnn::sigmoid_fwd1(x.data(), y.data(), n, nullptr) : pycnn::sigmoid_bwd1(dy.data(), x.data(), y.data(), n, nullptr);
  else if (fn == "tanh") fwd ? pycnn::tanh_fwd1(x.data(), y.data(), n, nullptr) : pycnn::tanh_bwd1(dy.data(), x.data(), y.data(), n, nullptr);
  else usage(("activation: expected relu, leaky_relu, sigmoid or tanh, got " + fn).c_str());
}

#endif

#if defined(COUNTERS_BATCH_NORM)
void batch_norm(const std::string& pass, int version, const char* shape) {
  const std::vector<long> v = ints(shape, 4, "batch_norm shape N,C,H,W");
  const long n = v[0], c = v[1], inner = v[2] * v[3];
  const size_t xs = (size_t)(n * c * inner);
  G x(randn(xs), 0, "x"), dy(randn(xs), 0, "dy"), weight(randn(c), 0, "weight"), bias(randn(c), 0, "bias");
  std::vector<float> ones((size_t)c, 1.0f), zeros((size_t)c, 0.0f);
  G rmean(zeros, 0, "running_mean"), rvar(ones, 0, "running_var");
  G mean(zeros, 0, "save_mean"), invstd(ones, 0, "save_invstd");
  G out(xs, 0.0f, 0, pass == "fwd" ? "y" : "dx");
  G dweight((size_t)c, 0.0f, 0, "dweight"), dbias((size_t)c, 0.0f, 0, "dbias");
  if (version != 1 && version != 2) usage(("batch_norm: version expected 1 or 2, got " + std::to_string(version)).c_str());
  const int splits = version == 2 ? pycnn::batch_norm_splits2(n, c, inner, emu::device.sms) : 0;
  const size_t wbytes = version == 2 ? (size_t)pycnn::batch_norm_workspace_bytes2(c, splits) : 0;
  emu::Guarded<double> work(std::max<size_t>(wbytes / 8, 1), 0.0, 0, "workspace");
  if (pass == "fwd") {
    if (version == 1)
      pycnn::batch_norm_fwd_train1(x.data(), weight.data(), bias.data(), rmean.data(), rvar.data(), out.data(),
                                   mean.data(), invstd.data(), n, c, inner, 0.1, 1e-5, nullptr);
    else
      pycnn::batch_norm_fwd_train2(x.data(), weight.data(), bias.data(), rmean.data(), rvar.data(), out.data(),
                                   mean.data(), invstd.data(), work.data(), n, c, inner, splits, 0.1, 1e-5, nullptr);
  } else if (pass == "bwd") {
    if (version == 1)
      pycnn::batch_norm_bwd1(dy.data(), x.data(), weight.data(), mean.data(), invstd.data(), out.data(),
                             dweight.data(), dbias.data(), n, c, inner, true, nullptr);
    else
      pycnn::batch_norm_bwd2(dy.data(), x.data(), weight.data(), mean.data(), invstd.data(), out.data(),
                             dweight.data(), dbias.data(), work.data(), n, c, inner, splits, true, nullptr);
  } else {
    usage(("batch_norm: pass expected fwd or bwd, got " + pass).c_str());
  }
}

#endif

#if defined(COUNTERS_SOFTMAX)
void softmax(const std::string& pass, const char* shape) {
  const std::vector<long> v = ints(shape, 3, "softmax shape OUTER,DIM,INNER");
  const size_t n = (size_t)(v[0] * v[1] * v[2]);
  G x(randn(n), 0, "x"), dy(randn(n), 0, "dy");
  G out(n, 0.0f, 0, pass == "fwd" ? "y" : "dx");
  if (pass == "fwd") pycnn::softmax_fwd1(x.data(), out.data(), v[0], v[1], v[2], nullptr);
  else if (pass == "bwd") pycnn::softmax_bwd1(dy.data(), x.data(), out.data(), v[0], v[1], v[2], nullptr);
  else usage(("softmax: pass expected fwd or bwd, got " + pass).c_str());
}

#endif

}  // namespace

int main(int argc, char** argv) {
  emu::parse_args(1, argv);  // the environment only: the arguments are the op's
  emu::quiet = true;
  if (argc < 2) usage("expected an op: probe, conv2d, max_pool2d, avg_pool2d, activation, batch_norm, softmax");
  const std::string op = argv[1];
  auto arg = [&](int i, const char* what) -> const char* {
    if (i >= argc) usage((op + ": missing " + what).c_str());
    return argv[i];
  };
  if (op == "probe") probe(arg(2, "the probe's name"), argc > 3 ? (int)ints(argv[3], 1, "probe N")[0] : 1 << 20);
#if defined(COUNTERS_CONV2D)
  else if (op == "conv2d")
    conv2d(arg(2, "the pass"), (int)ints(arg(3, "the version"), 1, "conv2d VERSION")[0], arg(4, "the shape"),
           argc > 5 ? (int)ints(argv[5], 1, "conv2d GROUPS")[0] : 1);
#elif defined(COUNTERS_POOL)
  else if (op == "max_pool2d" || op == "avg_pool2d") pool(op == "max_pool2d", arg(2, "the pass"), arg(3, "the shape"));
#elif defined(COUNTERS_ACTIVATION)
  else if (op == "activation") activation(arg(2, "the function"), arg(3, "the pass"), arg(4, "COUNT"));
#elif defined(COUNTERS_BATCH_NORM)
  else if (op == "batch_norm") batch_norm(arg(2, "the pass"), (int)ints(arg(3, "the version"), 1, "batch_norm VERSION")[0], arg(4, "the shape"));
#elif defined(COUNTERS_SOFTMAX)
  else if (op == "softmax") softmax(arg(2, "the pass"), arg(3, "the shape"));
#endif
  else usage(("this build runs the probes and one family's ops; no op named " + op + " here").c_str());
  return emu::finish();
}
