// Runs the softmax, log_softmax and cross-entropy kernels
// (kernels/softmax/01_softmax.cu) on the CPU through emu.h and compares them
// with the definitions evaluated in double, row by row:
//   softmax = exp(x - max) / sum exp(x - max),  log_softmax = (x - max) - log(sum),
//   backward y * (dy - sum(dy * y))  and  dy - exp(y) * sum(dy),
//   cross-entropy loss = mean over rows of -log_softmax[row, target],
//   dlogits = (softmax - onehot(target)) * dloss / n,
// an out-of-range target sets the error flag and makes that row's loss NaN.
// Each case runs the real launchers (softmax_fwd1 & co.), which pick the layout:
// inner == 1, a warp per row with shuffle reductions (rows of 1, 10, 32, 33, 100
// classes), and inner > 1, a thread per strided row; logits of +-1000 (max
// subtraction) and -inf entries. Then every kernel runs on grids of one and two
// blocks, fewer than the launcher's, so its grid-stride loop wraps. The
// cross-entropy mean runs in its single 1024-thread block with more rows than threads.
//
// Build and run: python kernels/emulate/emulate.py softmax [--only NAME]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++; defines PYCNN_KERNEL_EMULATION
#include "softmax/01_softmax.cu"

using pycnn::kSoftmaxBlock;

static std::mt19937 rng(99);
static std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}
// Row (o, i) of x viewed as (outer, dim, inner), in double: softmax and log_softmax.
static void ref_softmax(const std::vector<float>& x, int outer, int dim, int inner, std::vector<double>& sm,
                        std::vector<double>& lsm) {
  sm.assign(x.size(), 0.0);
  lsm.assign(x.size(), 0.0);
  for (int o = 0; o < outer; ++o)
    for (int i = 0; i < inner; ++i) {
      auto at = [&](int k) { return (static_cast<size_t>(o) * dim + k) * inner + i; };
      double m = -INFINITY;
      for (int k = 0; k < dim; ++k) m = std::max(m, static_cast<double>(x[at(k)]));
      double s = 0;
      for (int k = 0; k < dim; ++k) s += std::exp(x[at(k)] - m);
      for (int k = 0; k < dim; ++k) {
        sm[at(k)] = std::exp(x[at(k)] - m) / s;
        lsm[at(k)] = (x[at(k)] - m) - std::log(s);
      }
    }
}

static const char* grid_name(int grid) { return grid == 0 ? "launcher" : grid == 1 ? "grid 1" : "grid 2"; }

static void check_softmax(int outer, int dim, int inner, float scale) {
  const size_t total = static_cast<size_t>(outer) * dim * inner;
  const int rows = outer * inner;
  std::vector<float> x = uniform(total, -scale, scale);
  if (dim > 2)
    for (int r = 0; r < rows; r += 3) x[(static_cast<size_t>(r / inner) * dim + 1) * inner + r % inner] = -INFINITY;
  std::vector<double> sm, lsm;
  ref_softmax(x, outer, dim, inner, sm, lsm);
  const std::vector<float> dy = uniform(total, -1.f, 1.f);
  // the backward's y: the forward output, rounded to float as the kernel would get it
  std::vector<float> y_sm(total), y_lsm(total);
  for (size_t k = 0; k < total; ++k) y_sm[k] = static_cast<float>(sm[k]), y_lsm[k] = static_cast<float>(lsm[k]);
  std::vector<double> dx_sm(total), dx_lsm(total);
  for (int o = 0; o < outer; ++o)
    for (int i = 0; i < inner; ++i) {
      auto at = [&](int k) { return (static_cast<size_t>(o) * dim + k) * inner + i; };
      double dot = 0, sum = 0;
      for (int k = 0; k < dim; ++k) dot += static_cast<double>(dy[at(k)]) * y_sm[at(k)], sum += dy[at(k)];
      for (int k = 0; k < dim; ++k) {
        dx_sm[at(k)] = y_sm[at(k)] * (dy[at(k)] - dot);
        dx_lsm[at(k)] = dy[at(k)] - std::exp(static_cast<double>(y_lsm[at(k)])) * sum;
      }
    }
  const emu::Guarded<float> xg(x, 0, "x"), dyg(dy, 0, "dy"), ysg(y_sm, 0, "y"), ylg(y_lsm, 0, "y");
  const bool rows_layout = inner == 1;
  for (int grid : {0, 1, 2}) {  // 0: the launcher's grid
    for (int pass = 0; pass < 4; ++pass) {
      const bool log = pass % 2 == 1, bwd = pass >= 2;
      emu::Guarded<float> out(total, NAN, 0, bwd ? "dx" : "y");
      const float *in = xg.data(), *g = dyg.data(), *y = log ? ylg.data() : ysg.data();
      float* o = out.data();
      if (grid == 0) {
        using namespace pycnn;
        if (!bwd) log ? log_softmax_fwd1(in, o, outer, dim, inner, nullptr) : softmax_fwd1(in, o, outer, dim, inner, nullptr);
        else log ? log_softmax_bwd1(g, y, o, outer, dim, inner, nullptr) : softmax_bwd1(g, y, o, outer, dim, inner, nullptr);
      } else emu::launch("softmax kernel on a short grid", dim3(grid), dim3(kSoftmaxBlock), [&] {
        using namespace pycnn;
        if (rows_layout) {
          if (!bwd) log ? log_softmax_fwd_kernel1(in, o, rows, dim) : softmax_fwd_kernel1(in, o, rows, dim);
          else log ? log_softmax_bwd_kernel1(g, y, o, rows, dim) : softmax_bwd_kernel1(g, y, o, rows, dim);
        } else {
          if (!bwd)
            log ? log_softmax_fwd_strided_kernel1(in, o, rows, dim, inner) : softmax_fwd_strided_kernel1(in, o, rows, dim, inner);
          else
            log ? log_softmax_bwd_strided_kernel1(g, y, o, rows, dim, inner)
                : softmax_bwd_strided_kernel1(g, y, o, rows, dim, inner);
        }
      });
      const std::vector<double>& want = bwd ? (log ? dx_lsm : dx_sm) : (log ? lsm : sm);
      const double err = emu::max_rel_err(out, want, total);
      emu::report(err < 2e-6 && out.intact(), "%s %s outer %3d dim %3d inner %3d |x|<%-6g %s %-8s: err %.1e",
                  log ? "log_softmax" : "softmax    ", bwd ? "bwd" : "fwd", outer, dim, inner, scale,
                  rows_layout ? "warp/row  " : "thread/row", grid_name(grid), err);
    }
  }
}

// Cross-entropy forward (rows + mean) and backward; `bad` targets are made out of range.
static void check_cross_entropy(int n, int classes, bool bad, bool with_flag) {
  const std::vector<float> logits = uniform(static_cast<size_t>(n) * classes, -8.f, 8.f);
  std::vector<int64_t> target(n);
  std::uniform_int_distribution<int> pick(0, classes - 1);
  for (auto& t : target) t = pick(rng);
  if (bad) {
    target[n / 3] = classes;
    target[n - 1] = -1;
  }
  auto valid = [&](int r) { return target[r] >= 0 && target[r] < classes; };
  std::vector<double> sm, lsm;
  ref_softmax(logits, n, classes, 1, sm, lsm);
  std::vector<double> row_loss(n);
  double mean = 0;
  for (int r = 0; r < n; ++r) {
    row_loss[r] = valid(r) ? -lsm[static_cast<size_t>(r) * classes + target[r]] : NAN;
    mean += row_loss[r];
  }
  mean /= n;
  const float dloss = 0.7f;
  std::vector<float> lp_f(lsm.size());
  for (size_t k = 0; k < lsm.size(); ++k) lp_f[k] = static_cast<float>(lsm[k]);
  std::vector<double> dlogits(lsm.size());
  for (int r = 0; r < n; ++r)
    for (int k = 0; k < classes; ++k) {
      const size_t at = static_cast<size_t>(r) * classes + k;
      dlogits[at] = valid(r) ? (std::exp(static_cast<double>(lp_f[at])) - (k == target[r])) * dloss / n : NAN;
    }

  const emu::Guarded<float> xg(logits, 0, "logits"), lpg(lp_f, 0, "log_probs"), dlg(std::vector<float>{dloss}, 0, "dloss");
  const emu::Guarded<int64_t> tg(target, 0, "target");
  for (int grid : {0, 1, 2}) {  // 0: cross_entropy_fwd1, a warp per row, then the mean in one block
    emu::Guarded<float> log_probs(lsm.size(), NAN, 0, "log_probs"), rows(n, NAN, 0, "row_loss"), loss(1, NAN, 0, "loss");
    emu::Guarded<int> flag(1, 0, 0, "error_flag");
    flag.assign(0);  // the caller zeroes the flag
    int* flag_ptr = with_flag ? flag.data() : nullptr;
    if (grid == 0) {
      pycnn::cross_entropy_fwd1(xg.data(), tg.data(), log_probs.data(), rows.data(), loss.data(), flag_ptr, n, classes,
                                nullptr);
    } else {
      emu::launch("cross_entropy_fwd_kernel1 on a short grid", dim3(grid), dim3(kSoftmaxBlock), [&] {
        pycnn::cross_entropy_fwd_kernel1(xg.data(), tg.data(), log_probs.data(), rows.data(), flag_ptr, n, classes);
      });
      emu::launch("cross_entropy_mean_kernel1 after a short grid", dim3(1), dim3(1024),
                  [&] { pycnn::cross_entropy_mean_kernel1(rows.data(), loss.data(), n); });
    }
    const double err = std::max({emu::max_rel_err(log_probs, lsm, lsm.size()), emu::max_rel_err(rows, row_loss, n),
                                 emu::max_rel_err(loss, &mean, 1)});
    const bool flag_ok = flag[0] == (bad && with_flag ? 1 : 0);
    emu::report(err < 2e-6 && flag_ok && log_probs.intact() && rows.intact() && loss.intact() && flag.intact(),
                "cross_entropy fwd n %4d classes %3d %s%s %-8s: err %.1e flag %d", n, classes,
                bad ? "bad targets" : "targets ok ", with_flag ? "" : " (no flag)", grid_name(grid), err, flag[0]);
  }
  for (int grid : {0, 1, 2}) {  // 0: cross_entropy_bwd1
    emu::Guarded<float> dx(lsm.size(), NAN, 0, "dlogits");
    emu::Guarded<int> flag(1, 0, 0, "error_flag");
    flag.assign(0);  // the caller zeroes the flag
    int* flag_ptr = with_flag ? flag.data() : nullptr;
    if (grid == 0)
      pycnn::cross_entropy_bwd1(lpg.data(), tg.data(), dlg.data(), dx.data(), flag_ptr, n, classes, nullptr);
    else
      emu::launch("cross_entropy_bwd_kernel1 on a short grid", dim3(grid), dim3(kSoftmaxBlock), [&] {
        pycnn::cross_entropy_bwd_kernel1(lpg.data(), tg.data(), dlg.data(), dx.data(), flag_ptr, n, classes);
      });
    // rows with a bad target have no defined gradient: only the flag is checked there
    std::vector<double> got(dx.data(), dx.data() + lsm.size());
    for (int r = 0; r < n; ++r)
      if (!valid(r))
        for (int k = 0; k < classes; ++k) got[static_cast<size_t>(r) * classes + k] = NAN;
    const double err = emu::max_rel_err(got, dlogits, lsm.size());
    const bool flag_ok = flag[0] == (bad && with_flag ? 1 : 0);
    emu::report(err < 2e-6 && flag_ok && dx.intact() && flag.intact(),
                "cross_entropy bwd n %4d classes %3d %s%s %-8s: err %.1e flag %d", n, classes,
                bad ? "bad targets" : "targets ok ", with_flag ? "" : " (no flag)", grid_name(grid), err, flag[0]);
  }
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  //            outer dim inner |x|
  check_softmax(13, 10, 1, 4.f);      // warp per row, 10 of 32 lanes busy, 13 rows: 2 blocks
  check_softmax(9, 33, 1, 4.f);       // one lane takes two elements
  check_softmax(5, 100, 1, 1000.f);   // large logits: max subtraction
  check_softmax(17, 1, 1, 4.f);       // a single class
  check_softmax(40, 32, 1, 4.f);      // 5 blocks of 8 warps
  check_softmax(2, 5, 7, 4.f);        // channels of NCHW (thread per row)
  check_softmax(3, 4, 100, 1000.f);
  check_softmax(4, 7, 130, 4.f);      // 520 rows: 3 blocks
  check_softmax(1, 1, 5, 4.f);
  //                  n  classes bad   flag
  check_cross_entropy(13, 10, false, true);
  check_cross_entropy(40, 100, false, true);
  check_cross_entropy(1500, 3, false, true);  // more rows than the mean kernel's 1024 threads
  check_cross_entropy(7, 1, false, true);
  check_cross_entropy(9, 5, true, true);      // out-of-range targets: flag, NaN loss
  check_cross_entropy(9, 5, true, false);     // ... and no flag pointer
  return emu::finish();
}
