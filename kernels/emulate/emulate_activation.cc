// Runs the pointwise activation launchers and kernels (kernels/activation/01_pointwise.cu)
// on the CPU through emu.h and compares them with the definitions evaluated in
// double: relu, leaky_relu, sigmoid, tanh (forward, and backward from y or x)
// and the fused relu(x + b[c]).
// Each call goes through the real launcher, which picks the float4 path when every
// pointer is 16-byte aligned (and, for bias_relu, inner % 4 == 0), with the
// scalar loop for the n % 4 tail, and the scalar path when a pointer is one float
// off alignment. Sizes are odd (n % 4 = 1, 2, 3, 0), inputs include 0, +-inf,
// NaN and +-100 (sigmoid's overflow-free form). The kernel bodies also run on a
// grid of one and two blocks, fewer than the launcher's, so the grid-stride loops wrap.
//
// Build and run: python kernels/emulate/emulate.py activation [--only NAME]
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++; defines PYCNN_KERNEL_EMULATION
#include "activation/01_pointwise.cu"

using pycnn::kBlock;

static std::mt19937 rng(7);

// n values: mostly U(-3, 3), with the special values spread over the array
// (so both the float4 body and the scalar tail meet some of them).
static std::vector<float> inputs(int n, bool specials) {
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  if (specials) {
    const float sp[] = {0.f, -0.f, INFINITY, -INFINITY, NAN, 100.f, -100.f, 1e-30f, -1e-30f, 20.f, -20.f};
    int k = 0;
    for (float s : sp) v[(k++ * 37 + 1) % n] = s;
    v[n - 1] = -100.f;  // the very last element sits in the tail when n % 4 != 0
  }
  return v;
}

using Fwd = std::function<void(const float*, float*, int, bool)>;
using Bwd = std::function<void(const float*, const float*, float*, int, bool)>;
using FwdLauncher = std::function<void(const float*, float*, int)>;
using BwdLauncher = std::function<void(const float*, const float*, float*, int)>;

// in_off / out_off: elements by which each buffer is shifted off 16-byte alignment.
static void check_fwd(const char* name, const FwdLauncher& launcher, const Fwd& kernel, double (*ref)(double),
                      int n, int in_off, int out_off) {
  char label[64];
  std::snprintf(label, sizeof label, "%s fwd", name);
  if (!emu::wanted(label)) return;
  const std::vector<float> x = inputs(n, true);
  const emu::Guarded<float> xg(x, in_off, "x");
  const bool vec = in_off == 0 && out_off == 0;  // the path the launcher should pick
  std::vector<double> want(n);
  for (int i = 0; i < n; ++i) want[i] = ref(x[i]);
  for (int grid : {0, 1, 2}) {  // 0: the launcher's grid
    emu::Guarded<float> y(n, NAN, out_off, "y");
    if (grid == 0)
      launcher(xg.data(), y.data(), n);
    else
      emu::launch("kernel on a short grid", dim3(grid), dim3(kBlock), [&] { kernel(xg.data(), y.data(), n, vec); });
    const double err = emu::max_rel_err(y, want, n);
    emu::report(err < 2e-6 && y.intact(), "%-11s fwd n=%5d %s (offsets %d,%d) %s: err %.1e", name, n,
                vec ? "float4" : "scalar", in_off, out_off, grid ? (grid == 1 ? "grid 1" : "grid 2") : "launcher",
                err);
  }
}

// `second` is y = fwd(x) for relu/sigmoid/tanh and x itself for leaky_relu.
static void check_bwd(const char* name, const BwdLauncher& launcher, const Bwd& kernel,
                      double (*ref)(double, double), double (*fwd)(double), int n, int off) {
  char label[64];
  std::snprintf(label, sizeof label, "%s bwd", name);
  if (!emu::wanted(label)) return;
  const std::vector<float> x = inputs(n, false), dy = inputs(n, false);
  std::vector<float> second(n);
  for (int i = 0; i < n; ++i) second[i] = fwd ? static_cast<float>(fwd(x[i])) : x[i];
  second[n / 2] = 0.f;  // the kink: relu passes nothing at y == 0, leaky passes slope * dy at x == 0
  std::vector<double> want(n);
  for (int i = 0; i < n; ++i) want[i] = ref(dy[i], second[i]);
  // misalign one of the three pointers in turn (off = 1, 2, 3 picks which)
  const emu::Guarded<float> dyg(dy, off == 1, "dy"), sg(second, off == 2, fwd ? "y" : "x");
  const size_t out_off = off == 3;
  const bool vec = off == 0;  // the path the launcher should pick
  for (int grid : {0, 1, 2}) {  // 0: the launcher's grid
    emu::Guarded<float> dx(n, NAN, out_off, "dx");
    if (grid == 0)
      launcher(dyg.data(), sg.data(), dx.data(), n);
    else
      emu::launch("kernel on a short grid", dim3(grid), dim3(kBlock), [&] { kernel(dyg.data(), sg.data(), dx.data(), n, vec); });
    const double err = emu::max_rel_err(dx, want, n);
    emu::report(err < 2e-6 && dx.intact(), "%-11s bwd n=%5d %s (misaligned #%d) %s: err %.1e", name, n,
                vec ? "float4" : "scalar", off, grid ? (grid == 1 ? "grid 1" : "grid 2") : "launcher", err);
  }
}

static void check_bias_relu(int N, int C, int inner, int off) {
  if (!emu::wanted("bias_relu fwd")) return;
  const int n = N * C * inner;
  const std::vector<float> x = inputs(n, true), b = inputs(C, false);
  std::vector<double> want(n);
  for (int i = 0; i < n; ++i) {  // x[nn, c, s] at i = (nn * C + c) * inner + s
    const int c = (i / inner) % C;
    const double v = static_cast<double>(x[i]) + b[c];
    want[i] = std::isnan(v) ? v : (v > 0 ? v : 0.0);
  }
  const emu::Guarded<float> xg(x, off, "x"), bg(b, 0, "b");
  const bool vec = off == 0 && inner % 4 == 0;  // bias_relu_fwd1: aligned x, y and inner % 4 == 0
  for (int grid : {0, 1, 2}) {  // 0: the launcher's grid
    emu::Guarded<float> y(n, NAN, off, "y");
    if (grid == 0)
      pycnn::bias_relu_fwd1(xg.data(), bg.data(), y.data(), n, C, inner, nullptr);
    else
      emu::launch("bias_relu_fwd_kernel1 on a short grid", dim3(grid), dim3(kBlock),
                  [&] { pycnn::bias_relu_fwd_kernel1(xg.data(), bg.data(), y.data(), n, C, inner, vec); });
    const double err = emu::max_rel_err(y, want, n);
    emu::report(err < 1e-6 && y.intact(), "bias_relu   fwd N%d C%d inner %d %s (offset %d) %s: err %.1e", N, C,
                inner, vec ? "float4" : "scalar", off, grid ? (grid == 1 ? "grid 1" : "grid 2") : "launcher", err);
  }
}

// The definitions, in double.
constexpr double kSlope = 0.1;
static double relu(double x) { return std::isnan(x) ? x : (x > 0 ? x : 0.0); }
static double relu_bwd(double dy, double y) { return y > 0 ? dy : 0.0; }
static double leaky(double x) { return x > 0 ? x : x * static_cast<double>(static_cast<float>(kSlope)); }
static double leaky_bwd(double dy, double x) { return x > 0 ? dy : dy * static_cast<double>(static_cast<float>(kSlope)); }
static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static double sigmoid_bwd(double dy, double y) { return dy * y * (1.0 - y); }
static double tanh_(double x) { return std::tanh(x); }
static double tanh_bwd(double dy, double y) { return dy * (1.0 - y * y); }

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  using namespace pycnn;
  const float slope = static_cast<float>(kSlope);
  const Fwd relu_k = [](const float* x, float* y, int n, bool v) { relu_fwd_kernel1(x, y, n, v); };
  const Fwd leaky_k = [slope](const float* x, float* y, int n, bool v) { leaky_relu_fwd_kernel1(x, y, n, v, slope); };
  const Fwd sigmoid_k = [](const float* x, float* y, int n, bool v) { sigmoid_fwd_kernel1(x, y, n, v); };
  const Fwd tanh_k = [](const float* x, float* y, int n, bool v) { tanh_fwd_kernel1(x, y, n, v); };
  const Bwd relu_b = [](const float* d, const float* s, float* o, int n, bool v) { relu_bwd_kernel1(d, s, o, n, v); };
  const Bwd leaky_b = [slope](const float* d, const float* s, float* o, int n, bool v) {
    leaky_relu_bwd_kernel1(d, s, o, n, v, slope);
  };
  const Bwd sigmoid_b = [](const float* d, const float* s, float* o, int n, bool v) { sigmoid_bwd_kernel1(d, s, o, n, v); };
  const Bwd tanh_b = [](const float* d, const float* s, float* o, int n, bool v) { tanh_bwd_kernel1(d, s, o, n, v); };

  const FwdLauncher relu_l = [](const float* x, float* y, int n) { relu_fwd1(x, y, n, nullptr); };
  const FwdLauncher leaky_l = [slope](const float* x, float* y, int n) { leaky_relu_fwd1(x, y, n, slope, nullptr); };
  const FwdLauncher sigmoid_l = [](const float* x, float* y, int n) { sigmoid_fwd1(x, y, n, nullptr); };
  const FwdLauncher tanh_l = [](const float* x, float* y, int n) { tanh_fwd1(x, y, n, nullptr); };
  const BwdLauncher relu_bl = [](const float* d, const float* s, float* o, int n) { relu_bwd1(d, s, o, n, nullptr); };
  const BwdLauncher leaky_bl = [slope](const float* d, const float* s, float* o, int n) {
    leaky_relu_bwd1(d, s, o, n, slope, nullptr);
  };
  const BwdLauncher sigmoid_bl = [](const float* d, const float* s, float* o, int n) { sigmoid_bwd1(d, s, o, n, nullptr); };
  const BwdLauncher tanh_bl = [](const float* d, const float* s, float* o, int n) { tanh_bwd1(d, s, o, n, nullptr); };

  struct Op {
    const char* name;
    FwdLauncher fwd_launcher;
    Fwd fwd;
    double (*ref)(double);
    BwdLauncher bwd_launcher;
    Bwd bwd;
    double (*ref_bwd)(double, double);
    double (*y_of_x)(double);  // what the backward's second input is made from (null: x)
  };
  const Op ops[] = {{"relu", relu_l, relu_k, relu, relu_bl, relu_b, relu_bwd, relu},
                    {"leaky_relu", leaky_l, leaky_k, leaky, leaky_bl, leaky_b, leaky_bwd, nullptr},
                    {"sigmoid", sigmoid_l, sigmoid_k, sigmoid, sigmoid_bl, sigmoid_b, sigmoid_bwd, sigmoid},
                    {"tanh", tanh_l, tanh_k, tanh_, tanh_bl, tanh_b, tanh_bwd, tanh_}};
  for (const Op& op : ops) {
    for (int n : {1, 3, 4, 37, 1030, 2051, 4096}) check_fwd(op.name, op.fwd_launcher, op.fwd, op.ref, n, 0, 0);
    check_fwd(op.name, op.fwd_launcher, op.fwd, op.ref, 1031, 1, 0);  // misaligned input: scalar path
    check_fwd(op.name, op.fwd_launcher, op.fwd, op.ref, 1029, 0, 3);  // misaligned output
    for (int n : {2, 5, 1030, 2051}) check_bwd(op.name, op.bwd_launcher, op.bwd, op.ref_bwd, op.y_of_x, n, 0);
    for (int off : {1, 2, 3}) check_bwd(op.name, op.bwd_launcher, op.bwd, op.ref_bwd, op.y_of_x, 1027, off);
  }
  //             N  C  inner offset
  check_bias_relu(2, 3, 20, 0);   // float4, channel changes every 5 float4s
  check_bias_relu(3, 5, 4, 0);    // float4, one float4 per channel
  check_bias_relu(2, 7, 9, 0);    // inner % 4 != 0: scalar
  check_bias_relu(4, 6, 1, 0);    // (N, C) input
  check_bias_relu(5, 9, 36, 0);   // several blocks
  check_bias_relu(2, 3, 20, 1);   // misaligned: scalar
  return emu::finish();
}
