// Runs the batch-norm kernels (kernels/batch_norm/01_batch_norm.cu and the split
// version 2, 02_batch_norm_split.cu) on the CPU
// through emu.h and compares them with the definitions evaluated in long double:
// per channel over its M = N*inner values, mean and biased variance normalise
// x; running_mean/var move by momentum towards the mean and the unbiased
// variance; inference uses the running statistics; the backward gives
// dbias = sum dy, dweight = sum dy*xhat and dx (training: minus the share of
// the batch statistics; inference: dy * weight * invstd).
// Shapes: (N, C) and (N, C, H*W) with M from 2 up to 600 (more values than the
// 256 threads of a channel's block), channels offset by 1000 with a spread of
// 0.01 (the two-pass variance), weight/bias/running statistics present or null,
// an empty batch for inference. Every case runs the real launchers
// (batch_norm_fwd_train1 & co.); the pointwise inference kernel also runs on
// grids of one and two blocks, fewer than its launcher's. Version 2 runs with 1,
// several and as many splits as values (chunks of one value, some splits empty),
// with the split count batch_norm_splits2 picks for GPUs of 132 and 2 SMs, and
// once with its per-channel and per-element steps on a single block.
//
// Build and run: python kernels/emulate/emulate.py batch_norm [--only NAME]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++; defines PYCNN_KERNEL_EMULATION
#include "batch_norm/01_batch_norm.cu"
#include "batch_norm/02_batch_norm_split.cu"

using pycnn::kBnBlock;
using Real = long double;

static std::mt19937 rng(5);
static std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

// x (N, C, inner); channel c is offset[c % 3] + spread[c % 3] * U(-1, 1).
static std::vector<float> make_x(int N, int C, int inner) {
  const float offset[] = {0.f, 1000.f, -50.f}, spread[] = {1.f, 0.01f, 3.f};
  std::vector<float> x(static_cast<size_t>(N) * C * inner);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int s = 0; s < inner; ++s) x[(static_cast<size_t>(n) * C + c) * inner + s] = offset[c % 3] + spread[c % 3] * u(rng);
  return x;
}
static size_t at(int n, int c, int s, int C, int inner) { return (static_cast<size_t>(n) * C + c) * inner + s; }

struct Stats {
  std::vector<Real> mean, var;  // biased variance
};
static Stats stats(const std::vector<float>& x, int N, int C, int inner) {
  Stats st{std::vector<Real>(C), std::vector<Real>(C)};
  const Real M = static_cast<Real>(N) * inner;
  for (int c = 0; c < C; ++c) {
    Real s = 0, q = 0;
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < inner; ++k) s += x[at(n, c, k, C, inner)];
    st.mean[c] = s / M;
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < inner; ++k) q += (x[at(n, c, k, C, inner)] - st.mean[c]) * (x[at(n, c, k, C, inner)] - st.mean[c]);
    st.var[c] = q / M;
  }
  return st;
}

template <class T>
static const T* ptr(const emu::Guarded<T>& g, bool present) {
  return present ? g.data() : nullptr;
}
template <class T>
static T* ptr(emu::Guarded<T>& g, bool present) {
  return present ? g.data() : nullptr;
}

// Version 2's three steps with the per-channel and per-element ones on a single
// block (so their grid-stride loops wrap), which no launcher does; the chunk is
// batch_norm_fwd_train2's / batch_norm_bwd2's, ceil(M / splits).
template <class Sums, class PerChannel, class PerElement>
static void launch_split_one_block(int C, int M, int splits, Sums sums, PerChannel per_channel,
                                   PerElement per_element) {
  const int chunk = pycnn::ceil_div(M, splits);
  emu::launch("batch_norm sums kernel2, then one block", dim3(C, splits), dim3(kBnBlock), [&] { sums(chunk); });
  emu::launch("batch_norm per-channel kernel2 on one block", dim3(1), dim3(kBnBlock), per_channel);
  emu::launch("batch_norm per-element kernel2 on one block", dim3(1), dim3(kBnBlock), per_element);
}

// version 1, or version 2 with `splits` splits
static void check_train(int N, int C, int inner, bool affine, bool running, int version = 1, int splits = 1,
                        bool one_block = false) {
  const float momentum = 0.1f, eps = 1e-5f;
  const int M = N * inner;
  const std::vector<float> x = make_x(N, C, inner), w = uniform(C, 0.5f, 2.f), b = uniform(C, -1.f, 1.f);
  const std::vector<float> rm0 = uniform(C, -1.f, 1.f), rv0 = uniform(C, 0.5f, 2.f);
  const Stats st = stats(x, N, C, inner);
  std::vector<double> y_ref(x.size()), mean(C), invstd(C), rm(C), rv(C);
  for (int c = 0; c < C; ++c) {
    mean[c] = static_cast<double>(st.mean[c]);
    invstd[c] = static_cast<double>(1 / std::sqrt(st.var[c] + eps));
    rm[c] = (1 - momentum) * rm0[c] + momentum * mean[c];
    rv[c] = (1 - momentum) * rv0[c] + momentum * static_cast<double>(st.var[c] * M / (M - 1));
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < inner; ++k) {
        const size_t i = at(n, c, k, C, inner);
        y_ref[i] = static_cast<double>((x[i] - st.mean[c]) / std::sqrt(st.var[c] + eps) * (affine ? w[c] : 1.f) +
                                       (affine ? b[c] : 0.f));
      }
  }
  const emu::Guarded<float> xg(x, 0, "x"), wg(w, 0, "weight"), bg(b, 0, "bias");
  emu::Guarded<float> rmg(rm0, 0, "running_mean"), rvg(rv0, 0, "running_var"), y(x.size(), NAN, 0, "y"),
      save_mean(C, NAN, 0, "save_mean"), save_invstd(C, NAN, 0, "save_invstd");
  emu::Guarded<double> ws(pycnn::batch_norm_workspace_bytes2(C, splits) / sizeof(double), NAN, 0, "workspace");
  if (version == 1) {
    pycnn::batch_norm_fwd_train1(xg.data(), ptr(wg, affine), ptr(bg, affine), ptr(rmg, running), ptr(rvg, running),
                                 y.data(), save_mean.data(), save_invstd.data(), N, C, inner, momentum, eps, nullptr);
  } else if (!one_block) {
    pycnn::batch_norm_fwd_train2(xg.data(), ptr(wg, affine), ptr(bg, affine), ptr(rmg, running), ptr(rvg, running),
                                 y.data(), save_mean.data(), save_invstd.data(), ws.data(), N, C, inner, splits,
                                 momentum, eps, nullptr);
  } else {
    launch_split_one_block(
        C, M, splits,
        [&](int chunk) { pycnn::batch_norm_fwd_sums_kernel2(xg.data(), ws.data(), N, C, inner, chunk); },
        [&] {
          pycnn::batch_norm_fwd_stats_kernel2(xg.data(), ws.data(), ptr(rmg, running), ptr(rvg, running),
                                              save_mean.data(), save_invstd.data(), N, C, inner, splits, momentum,
                                              eps);
        },
        [&] {
          pycnn::batch_norm_fwd_apply_kernel2(xg.data(), ptr(wg, affine), ptr(bg, affine), save_mean.data(),
                                              save_invstd.data(), y.data(), N * C * inner, C, inner);
        });
  }
  // y is computed from the mean rounded to float, as the reference does: allow
  // that rounding (|mean| * 2^-24, times invstd * |w|) on top of 1e-5.
  double y_err = emu::max_rel_err(y, y_ref, x.size()) < INFINITY ? 0 : INFINITY;
  for (size_t i = 0; i < x.size(); ++i) {
    const int c = static_cast<int>(i / inner) % C;
    const double tol = 1e-5 * std::max(1.0, std::fabs(y_ref[i])) +
                       std::fabs(mean[c]) * 0x1p-24 * invstd[c] * (affine ? std::fabs(w[c]) : 1.0);
    y_err = std::max(y_err, std::fabs(y[i] - y_ref[i]) / tol * 1e-5);  // 1e-5 when at the tolerance
  }
  double err = std::max({y_err, emu::max_rel_err(save_mean, mean, C), emu::max_rel_err(save_invstd, invstd, C)});
  if (running) err = std::max({err, emu::max_rel_err(rmg, rm, C), emu::max_rel_err(rvg, rv, C)});
  else err = std::max({err, emu::max_rel_err(rmg, rm0, C), emu::max_rel_err(rvg, rv0, C)});  // untouched
  const bool intact = y.intact() && save_mean.intact() && save_invstd.intact() && rmg.intact() && rvg.intact() &&
                      ws.intact();
  emu::report(err < 1e-5 && intact, "batch_norm fwd train%d N%d C%d inner %3d (M %3d)%s%s %s %d: err %.1e",
              version, N, C, inner, M, affine ? "" : " no affine", running ? "" : " no running",
              version == 1 ? "grid" : one_block ? "splits (one block)" : "splits", version == 1 ? C : splits, err);
}

static void check_infer(int N, int C, int inner, bool affine) {
  const float eps = 1e-5f;
  const int total = N * C * inner;
  const std::vector<float> x = make_x(N, C, inner), w = uniform(C, 0.5f, 2.f), b = uniform(C, -1.f, 1.f);
  const std::vector<float> rm = uniform(C, -1.f, 1.f), rv = uniform(C, 0.5f, 2.f);
  std::vector<double> y_ref(x.size()), invstd(C), mean(rm.begin(), rm.end());
  for (int c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
  for (size_t i = 0; i < x.size(); ++i) {
    const int c = static_cast<int>(i / inner) % C;
    y_ref[i] = (x[i] - mean[c]) * invstd[c] * (affine ? w[c] : 1.f) + (affine ? b[c] : 0.f);
  }
  const emu::Guarded<float> xg(x, 0, "x"), wg(w, 0, "weight"), bg(b, 0, "bias"), rmg(rm, 0, "running_mean"),
      rvg(rv, 0, "running_var");
  for (int grid : {0, 1, 2}) {  // 0: batch_norm_fwd_infer1's grid (at least C threads)
    emu::Guarded<float> y(x.size(), NAN, 0, "y"), save_mean(C, NAN, 0, "save_mean"), save_invstd(C, NAN, 0, "save_invstd");
    if (grid == 0)
      pycnn::batch_norm_fwd_infer1(xg.data(), ptr(wg, affine), ptr(bg, affine), rmg.data(), rvg.data(), y.data(),
                                   save_mean.data(), save_invstd.data(), N, C, inner, eps, nullptr);
    else
      emu::launch("batch_norm_fwd_infer_kernel1 on a short grid", dim3(grid), dim3(kBnBlock), [&] {
        pycnn::batch_norm_fwd_infer_kernel1(xg.data(), ptr(wg, affine), ptr(bg, affine), rmg.data(), rvg.data(),
                                            y.data(), save_mean.data(), save_invstd.data(), total, C,
                                            inner > 0 ? inner : 1, eps);
      });
    const double err = std::max({emu::max_rel_err(y, y_ref, x.size()), emu::max_rel_err(save_mean, mean, C),
                                 emu::max_rel_err(save_invstd, invstd, C)});
    emu::report(err < 1e-5 && y.intact() && save_mean.intact() && save_invstd.intact(),
                "batch_norm fwd infer N%d C%d inner %3d%s %s: err %.1e", N, C, inner,
                affine ? "" : " no affine", grid == 0 ? "launcher" : grid == 1 ? "grid 1" : "grid 2", err);
  }
}

static void check_bwd(int N, int C, int inner, bool affine, bool training, int version = 1, int splits = 1,
                      bool one_block = false) {
  const int M = N * inner;
  const std::vector<float> x = make_x(N, C, inner), dy = uniform(x.size(), -1.f, 1.f), w = uniform(C, 0.5f, 2.f);
  const Stats st = stats(x, N, C, inner);
  std::vector<float> mean(C), invstd(C);  // as the forward saved them
  for (int c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(st.mean[c]);
    invstd[c] = static_cast<float>(1 / std::sqrt(st.var[c] + 1e-5L));
  }
  std::vector<double> dx_ref(x.size()), dw_ref(C), db_ref(C);
  for (int c = 0; c < C; ++c) {
    Real db = 0, dw = 0;
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < inner; ++k) {
        const size_t i = at(n, c, k, C, inner);
        db += dy[i];
        dw += dy[i] * ((static_cast<Real>(x[i]) - mean[c]) * invstd[c]);
      }
    db_ref[c] = static_cast<double>(db);
    dw_ref[c] = static_cast<double>(dw);
    const Real scale = static_cast<Real>(invstd[c]) * (affine ? w[c] : 1.f);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < inner; ++k) {
        const size_t i = at(n, c, k, C, inner);
        const Real xhat = (static_cast<Real>(x[i]) - mean[c]) * invstd[c];
        dx_ref[i] = static_cast<double>(training ? scale * (dy[i] - (db + xhat * dw) / M) : scale * dy[i]);
      }
  }
  const emu::Guarded<float> xg(x, 0, "x"), dyg(dy, 0, "dy"), wg(w, 0, "weight"), mg(mean, 0, "save_mean"),
      ig(invstd, 0, "save_invstd");
  emu::Guarded<float> dx(x.size(), NAN, 0, "dx"), dwv(C, NAN, 0, "dweight"), dbv(C, NAN, 0, "dbias");
  emu::Guarded<double> ws(pycnn::batch_norm_workspace_bytes2(C, splits) / sizeof(double), NAN, 0, "workspace");
  if (version == 1) {
    pycnn::batch_norm_bwd1(dyg.data(), xg.data(), ptr(wg, affine), mg.data(), ig.data(), dx.data(), dwv.data(),
                           dbv.data(), N, C, inner, training, nullptr);
  } else if (!one_block) {
    pycnn::batch_norm_bwd2(dyg.data(), xg.data(), ptr(wg, affine), mg.data(), ig.data(), dx.data(), dwv.data(),
                           dbv.data(), ws.data(), N, C, inner, splits, training, nullptr);
  } else {
    launch_split_one_block(
        C, M, splits,
        [&](int chunk) {
          pycnn::batch_norm_bwd_sums_kernel2(dyg.data(), xg.data(), mg.data(), ig.data(), ws.data(), N, C, inner,
                                             chunk);
        },
        [&] { pycnn::batch_norm_bwd_totals_kernel2(ws.data(), dwv.data(), dbv.data(), C, splits); },
        [&] {
          pycnn::batch_norm_bwd_dx_kernel2(dyg.data(), xg.data(), ptr(wg, affine), mg.data(), ig.data(), dwv.data(),
                                           dbv.data(), dx.data(), N, C, inner, training);
        });
  }
  // dx is a difference of O(1) terms scaled by invstd (up to ~170 here): relative to that scale
  double dx_err = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const int c = static_cast<int>(i / inner) % C;
    dx_err = std::max(dx_err, std::fabs(dx[i] - dx_ref[i]) / (invstd[c] * (affine ? w[c] : 1.f)));
  }
  if (!std::isfinite(emu::max_rel_err(dx, dx_ref, x.size()))) dx_err = INFINITY;
  const double err = std::max({dx_err, emu::max_rel_err(dwv, dw_ref, C), emu::max_rel_err(dbv, db_ref, C)});
  emu::report(err < 1e-5 && dx.intact() && dwv.intact() && dbv.intact() && ws.intact(),
              "batch_norm bwd%d %s N%d C%d inner %3d (M %3d)%s %s %d: err %.1e", version, training ? "train" : "infer",
              N, C, inner, M, affine ? "" : " no affine",
              version == 1 ? "grid" : one_block ? "splits (one block)" : "splits", version == 1 ? C : splits, err);
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  //         N  C  inner
  const int shapes[][3] = {{5, 3, 7}, {4, 2, 1}, {3, 4, 100}, {2, 1, 1}, {7, 5, 49}, {1, 3, 600}, {600, 3, 1}};
  for (auto& s : shapes) {
    check_train(s[0], s[1], s[2], true, true);
    check_infer(s[0], s[1], s[2], true);
    check_bwd(s[0], s[1], s[2], true, true);
    check_bwd(s[0], s[1], s[2], true, false);
  }
  check_train(5, 3, 7, false, true);   // weight and bias null
  check_train(3, 4, 100, true, false);  // running statistics null: not touched
  check_infer(3, 4, 100, false);
  check_infer(9, 37, 11, true);         // 3663 elements: several blocks, grid-stride on 1 and 2
  check_infer(0, 5, 7, true);           // empty batch: only the statistics are written
  check_bwd(5, 3, 7, false, true);
  // version 2: split counts of 1, a few (the last chunk short), more than the values of a
  // block's chunk would fill (chunks shorter than a block), and one split per value
  const int split_shapes[][4] = {{5, 3, 7, 1}, {5, 3, 7, 4}, {5, 3, 7, 35}, {4, 2, 1, 3}, {3, 4, 100, 7},
                                 {2, 1, 1, 2}, {1, 3, 600, 2}, {600, 3, 1, 5}, {7, 5, 49, 16}, {7, 5, 49, 300}};
  for (auto& s : split_shapes) {
    check_train(s[0], s[1], s[2], true, true, 2, s[3]);
    check_bwd(s[0], s[1], s[2], true, true, 2, s[3]);
    check_bwd(s[0], s[1], s[2], true, false, 2, s[3]);
  }
  check_train(5, 3, 7, false, false, 2, 4);          // no affine, no running statistics
  check_train(7, 5, 49, true, true, 2, 16, true);    // per-channel and per-element steps on one block
  check_bwd(7, 5, 49, false, true, 2, 16, true);
  // the split count version 2's chooser gives on a large and a small GPU
  for (int sms : {132, 2})
    for (auto& s : shapes) {
      const int splits = pycnn::batch_norm_splits2(s[0], s[1], s[2], sms);
      check_train(s[0], s[1], s[2], true, true, 2, splits);
      check_bwd(s[0], s[1], s[2], true, true, 2, splits);
    }
  return emu::finish();
}
