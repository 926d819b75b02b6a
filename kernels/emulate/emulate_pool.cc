// Runs the pooling kernels (kernels/pool/*.cu) on the CPU through emu.h and
// compares them with pooling written as plain loops from PyTorch's definitions:
//   max pool   first maximum in row-major window order, NaN beats any number
//              (first NaN kept), padding never chosen; backward scatters dy to
//              the saved index and ignores indices outside the plane (version 1,
//              atomics); version 2 gathers per input element and must equal,
//              bit for bit, a float loop adding dy in output order, with each
//              block's threads run in both orders and on different grids;
//   avg pool   window [o*s - pad, min(o*s - pad + k, size + pad)) per axis, the
//              divisor its full size (count_include_pad) or its part inside the
//              input, ceil_mode windows that start in the right/bottom padding dropped;
//   adaptive   window [floor(i*H/P), ceil((i+1)*H/P)), P = Q = 1 on the
//              warp-per-plane global kernel as the launcher chooses.
// Every pass runs through its launcher (which picks grid, block and kernel), and its
// kernel also on a grid of one or two blocks (the grid-stride loops), on odd shapes.
//
// Build and run: python kernels/emulate/emulate.py pool [--only max_pool2d_bwd2]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++; defines PYCNN_KERNEL_EMULATION
#include "pool/01_max_pool.cu"
#include "pool/04_max_pool_bwd_gather.cu"
#include "pool/02_avg_pool.cu"
#include "pool/03_adaptive_avg_pool.cu"

// Output size of a pooling window, PyTorch's rule (ceil_mode drops a last window
// that would start inside the right/bottom padding).
static int pool_out(int in, int k, int s, int pad, int dil, bool ceil_mode) {
  const int span = in + 2 * pad - dil * (k - 1) - 1;
  int out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + pad) --out;
  return out;
}

static std::mt19937 rng(20240611);
static std::vector<float> uniform(size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}


static bool same_bits_or_both_nan(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

// ---------------------------------------------------------------- max pool
// Each pass runs through its launcher (grid 0 in the loops below: the grid, block and
// kernel it picks) and, since every pool kernel is a grid-stride loop, its kernel also
// on grids of one and two blocks, fewer than the launcher's, so the loop wraps.
static const int kGrids[] = {0, 1, 2};
static const char* grid_name(int grid) { return grid == 0 ? "launcher" : grid == 1 ? "grid 1" : "grid 2"; }

static void check_max_pool(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                           int dh, int dw, bool ceil_mode) {
  const int P = pool_out(H, kh, sh, ph, dh, ceil_mode), Q = pool_out(W, kw, sw, pw, dw, ceil_mode);
  const int planes = N * C, total = planes * P * Q, HW = H * W;
  // small integers make ties common (first-max rule); some NaN and a -inf corner
  std::vector<float> x(static_cast<size_t>(planes) * HW);
  std::uniform_int_distribution<int> small(-3, 3);
  for (auto& e : x) e = static_cast<float>(small(rng));
  for (int r = 0; r < std::min(H, 3); ++r)
    for (int c = 0; c < std::min(W, 3); ++c) x[r * W + c] = -INFINITY;  // plane 0: a -inf corner
  if (planes > 1) x[HW + (H / 2) * W + W / 2] = NAN;
  if (planes > 2) {
    x[2 * HW + 1] = NAN;
    x[2 * HW + W + 1] = NAN;  // two NaN, maybe in one window: the first wins
  }
  // oracle forward
  std::vector<float> y_ref(total);
  std::vector<int64_t> idx_ref(total);
  for (int nc = 0; nc < planes; ++nc)
    for (int oh = 0; oh < P; ++oh)
      for (int ow = 0; ow < Q; ++ow) {
        std::vector<std::pair<float, int>> window;  // row-major, inside the input only
        for (int r = 0; r < kh; ++r)
          for (int s = 0; s < kw; ++s) {
            const int ih = oh * sh - ph + r * dh, iw = ow * sw - pw + s * dw;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) window.push_back({x[nc * HW + ih * W + iw], ih * W + iw});
          }
        const int o = (nc * P + oh) * Q + ow;
        auto first_nan = std::find_if(window.begin(), window.end(), [](auto& e) { return std::isnan(e.first); });
        if (first_nan != window.end()) {
          y_ref[o] = NAN;
          idx_ref[o] = first_nan->second;
        } else {
          float m = -INFINITY;
          for (auto& e : window) m = std::max(m, e.first);
          auto first_max = std::find_if(window.begin(), window.end(), [&](auto& e) { return e.first == m; });
          y_ref[o] = m;
          idx_ref[o] = first_max->second;
        }
      }
  // oracle backward, with two indices made invalid (the kernel must skip them)
  std::vector<float> dy = uniform(total);
  std::vector<int64_t> idx_bwd = idx_ref;
  idx_bwd[0] = -1;
  if (total > 1) idx_bwd[total - 1] = HW;
  std::vector<double> dx_ref(x.size(), 0.0);
  std::vector<float> dx_ref32(x.size(), 0.f);  // float, in output order: what the gather must give bitwise
  for (int o = 0; o < total; ++o)
    if (idx_bwd[o] >= 0 && idx_bwd[o] < HW) {
      dx_ref[(o / (P * Q)) * HW + idx_bwd[o]] += dy[o];
      dx_ref32[(o / (P * Q)) * HW + idx_bwd[o]] += dy[o];
    }

  const emu::Guarded<float> xg(x), dyg(dy);
  const emu::Guarded<int64_t> idxg(idx_bwd);
  for (int grid : kGrids) {
    if (!emu::wanted("max_pool2d_fwd1")) break;
    emu::Guarded<float> y(total, NAN, 0, "y");
    emu::Guarded<int64_t> idx(total, -7, 0, "indices");
    if (grid == 0)
      pycnn::max_pool2d_fwd1(xg.data(), y.data(), idx.data(), N, C, H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw, nullptr);
    else emu::launch("max_pool2d_fwd_kernel1 on a short grid", dim3(grid), dim3(pycnn::kPoolBlock), [&] {
      pycnn::max_pool2d_fwd_kernel1(xg.data(), y.data(), idx.data(), total, H, W, P, Q, kh, kw, sh, sw,
                                    ph, pw, dh, dw);
    });
    int bad = 0;
    for (int o = 0; o < total; ++o) bad += !same_bits_or_both_nan(y[o], y_ref[o]) || idx[o] != idx_ref[o];
    emu::report(bad == 0 && y.intact() && idx.intact(),
                "max_pool2d_fwd1  N%d C%d %dx%d k%dx%d s%d,%d p%d,%d d%d,%d ceil%d -> %dx%d %s: %d wrong",
                N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, P, Q, grid_name(grid), bad);
  }
  for (int grid : kGrids) {
    if (!emu::wanted("max_pool2d_bwd1")) break;
    emu::Guarded<float> dx(x.size(), NAN, 0, "dx");
    if (grid == 0)  // the launcher zeroes dx itself (cudaMemsetAsync)
      pycnn::max_pool2d_bwd1(dyg.data(), idxg.data(), dx.data(), N, C, H, W, P, Q, nullptr);
    else if (dx.assign(0.f); true)  // zeroed as the launcher does
      emu::launch("max_pool2d_bwd_kernel1 on a short grid", dim3(grid), dim3(pycnn::kPoolBlock), [&] {
      pycnn::max_pool2d_bwd_kernel1(dyg.data(), idxg.data(), dx.data(), total, HW, P * Q);
    });
    const double err = emu::max_rel_err(dx, dx_ref, dx_ref.size());
    emu::report(err < 1e-6 && dx.intact(), "max_pool2d_bwd1  N%d C%d %dx%d -> %dx%d (2 bad indices) %s: err %.1e",
                N, C, H, W, P, Q, grid_name(grid), err);
  }
  // version 2, the gather: each grid launched twice in a row, which runs every
  // block's threads first in one order, then in the other (emu.h alternates);
  // dx starts poisoned, so an element the kernel does not write is caught
  const int in_total = planes * HW;
  std::vector<float> first_run;
  for (int grid : kGrids) {
    if (!emu::wanted("max_pool2d_bwd2")) break;
    for (int order = 0; order < 2; ++order) {
      emu::Guarded<float> dx(in_total, NAN, 0, "dx");
      if (grid == 0)
        pycnn::max_pool2d_bwd2(dyg.data(), idxg.data(), dx.data(), N, C, H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw, nullptr);
      else emu::launch("max_pool2d_bwd_kernel2 on a short grid", dim3(grid), dim3(pycnn::kMaxPoolBwdBlock), [&] {
        pycnn::max_pool2d_bwd_kernel2(dyg.data(), idxg.data(), dx.data(), in_total, H, W, P, Q, kh, kw, sh, sw,
                                      ph, pw, dh, dw);
      });
      if (first_run.empty()) first_run = dx.vec();
      int not_oracle = 0, not_first = 0;
      for (int i = 0; i < in_total; ++i) {
        not_oracle += std::memcmp(&dx[i], &dx_ref32[i], sizeof(float)) != 0;
        not_first += std::memcmp(&dx[i], &first_run[i], sizeof(float)) != 0;
      }
      const double err = emu::max_rel_err(dx, dx_ref, dx_ref.size());
      emu::report(not_oracle == 0 && not_first == 0 && err < 1e-6 && dx.intact(),
                  "max_pool2d_bwd2  N%d C%d %dx%d k%dx%d s%d,%d p%d,%d d%d,%d ceil%d -> %dx%d %s run %d: "
                  "%d bits differ from the float loop, %d from the first run, err %.1e",
                  N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, P, Q, grid_name(grid), order, not_oracle, not_first,
                  err);
    }
  }
}

// ---------------------------------------------------------------- avg pool
static void check_avg_pool(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                           bool ceil_mode, bool count_include_pad) {
  const int P = pool_out(H, kh, sh, ph, 1, ceil_mode), Q = pool_out(W, kw, sw, pw, 1, ceil_mode);
  const int planes = N * C, total = planes * P * Q, HW = H * W;
  const std::vector<float> x = uniform(static_cast<size_t>(planes) * HW), dy = uniform(total);
  std::vector<double> y_ref(total), dx_ref(x.size(), 0.0);
  for (int nc = 0; nc < planes; ++nc)
    for (int oh = 0; oh < P; ++oh)
      for (int ow = 0; ow < Q; ++ow) {
        int h0 = oh * sh - ph, w0 = ow * sw - pw;
        int h1 = std::min(h0 + kh, H + ph), w1 = std::min(w0 + kw, W + pw);
        const int padded_size = (h1 - h0) * (w1 - w0);
        h0 = std::max(h0, 0), w0 = std::max(w0, 0), h1 = std::min(h1, H), w1 = std::min(w1, W);
        const int divisor = count_include_pad ? padded_size : (h1 - h0) * (w1 - w0);
        const int o = (nc * P + oh) * Q + ow;
        double sum = 0;
        for (int ih = h0; ih < h1; ++ih)
          for (int iw = w0; iw < w1; ++iw) {
            sum += x[nc * HW + ih * W + iw];
            dx_ref[nc * HW + ih * W + iw] += static_cast<double>(dy[o]) / divisor;
          }
        y_ref[o] = sum / divisor;
      }
  const emu::Guarded<float> xg(x), dyg(dy);
  for (int grid : kGrids) {
    if (!emu::wanted("avg_pool2d_fwd1")) break;
    emu::Guarded<float> y(total, NAN, 0, "y");
    if (grid == 0)
      pycnn::avg_pool2d_fwd1(xg.data(), y.data(), N, C, H, W, P, Q, kh, kw, sh, sw, ph, pw, count_include_pad, nullptr);
    else emu::launch("avg_pool2d_fwd_kernel1 on a short grid", dim3(grid), dim3(pycnn::kAvgBlock), [&] {
      pycnn::avg_pool2d_fwd_kernel1(xg.data(), y.data(), total, H, W, P, Q, kh, kw, sh, sw, ph, pw,
                                    count_include_pad);
    });
    const double err = emu::max_rel_err(y, y_ref, total);
    emu::report(err < 1e-6 && y.intact(),
                "avg_pool2d_fwd1  N%d C%d %dx%d k%dx%d s%d,%d p%d,%d ceil%d incl_pad%d -> %dx%d %s: err %.1e",
                N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, P, Q, grid_name(grid), err);
  }
  const int in_total = planes * HW;
  for (int grid : kGrids) {
    if (!emu::wanted("avg_pool2d_bwd1")) break;
    emu::Guarded<float> dx(in_total, NAN, 0, "dx");
    if (grid == 0)
      pycnn::avg_pool2d_bwd1(dyg.data(), dx.data(), N, C, H, W, P, Q, kh, kw, sh, sw, ph, pw, count_include_pad, nullptr);
    else emu::launch("avg_pool2d_bwd_kernel1 on a short grid", dim3(grid), dim3(pycnn::kAvgBlock), [&] {
      pycnn::avg_pool2d_bwd_kernel1(dyg.data(), dx.data(), in_total, H, W, P, Q, kh, kw, sh, sw, ph, pw,
                                    count_include_pad);
    });
    const double err = emu::max_rel_err(dx, dx_ref, in_total);
    emu::report(err < 1e-6 && dx.intact(),
                "avg_pool2d_bwd1  N%d C%d %dx%d k%dx%d s%d,%d p%d,%d ceil%d incl_pad%d -> %dx%d %s: err %.1e",
                N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, P, Q, grid_name(grid), err);
  }
}

// ---------------------------------------------------------------- adaptive avg pool
static void check_adaptive(int N, int C, int H, int W, int P, int Q) {
  const int planes = N * C, total = planes * P * Q, HW = H * W;
  const std::vector<float> x = uniform(static_cast<size_t>(planes) * HW), dy = uniform(total);
  std::vector<double> y_ref(total), dx_ref(x.size(), 0.0);
  for (int nc = 0; nc < planes; ++nc)
    for (int oh = 0; oh < P; ++oh)
      for (int ow = 0; ow < Q; ++ow) {
        // real-valued bounds, floor / ceil (exact here: small integers)
        const int h0 = static_cast<int>(std::floor(static_cast<double>(oh) * H / P));
        const int h1 = static_cast<int>(std::ceil(static_cast<double>(oh + 1) * H / P));
        const int w0 = static_cast<int>(std::floor(static_cast<double>(ow) * W / Q));
        const int w1 = static_cast<int>(std::ceil(static_cast<double>(ow + 1) * W / Q));
        const int o = (nc * P + oh) * Q + ow, area = (h1 - h0) * (w1 - w0);
        double sum = 0;
        for (int ih = h0; ih < h1; ++ih)
          for (int iw = w0; iw < w1; ++iw) {
            sum += x[nc * HW + ih * W + iw];
            dx_ref[nc * HW + ih * W + iw] += static_cast<double>(dy[o]) / area;
          }
        y_ref[o] = sum / area;
      }
  const emu::Guarded<float> xg(x), dyg(dy);
  const bool global = P == 1 && Q == 1;  // adaptive_avg_pool2d_fwd1 takes the warp-per-plane kernel
  const int block = pycnn::kAdaptiveBlock;
  for (int grid : kGrids) {
    if (!emu::wanted("adaptive_avg_pool2d_fwd1")) break;
    emu::Guarded<float> y(total, NAN, 0, "y");
    if (grid == 0)
      pycnn::adaptive_avg_pool2d_fwd1(xg.data(), y.data(), N, C, H, W, P, Q, nullptr);
    else emu::launch("adaptive_avg_pool2d kernel on a short grid", dim3(grid), dim3(block), [&] {
      if (global)
        pycnn::global_avg_pool2d_fwd_kernel1(xg.data(), y.data(), total, HW);
      else
        pycnn::adaptive_avg_pool2d_fwd_kernel1(xg.data(), y.data(), total, H, W, P, Q);
    });
    const double err = emu::max_rel_err(y, y_ref, total);
    emu::report(err < 1e-6 && y.intact(), "%s N%d C%d %dx%d -> %dx%d %s: err %.1e",
                global ? "adaptive_avg_pool2d_fwd1 (global)" : "adaptive_avg_pool2d_fwd1", N, C, H, W, P, Q, grid_name(grid), err);
  }
  const int in_total = planes * HW;
  for (int grid : kGrids) {
    if (!emu::wanted("adaptive_avg_pool2d_bwd1")) break;
    emu::Guarded<float> dx(in_total, NAN, 0, "dx");
    if (grid == 0)
      pycnn::adaptive_avg_pool2d_bwd1(dyg.data(), dx.data(), N, C, H, W, P, Q, nullptr);
    else emu::launch("adaptive_avg_pool2d_bwd_kernel1 on a short grid", dim3(grid), dim3(block), [&] {
      pycnn::adaptive_avg_pool2d_bwd_kernel1(dyg.data(), dx.data(), in_total, H, W, P, Q);
    });
    const double err = emu::max_rel_err(dx, dx_ref, in_total);
    emu::report(err < 1e-6 && dx.intact(), "adaptive_avg_pool2d_bwd1 N%d C%d %dx%d -> %dx%d %s: err %.1e", N, C,
                H, W, P, Q, grid_name(grid), err);
  }
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  //             N  C   H   W  kh kw sh sw ph pw dh dw ceil
  check_max_pool(2, 3, 7, 9, 2, 2, 2, 2, 0, 0, 1, 1, false);  // 2x2/2 on odd sizes
  check_max_pool(1, 3, 7, 9, 3, 3, 2, 2, 1, 1, 1, 1, true);   // 3x3/2 pad 1, ceil_mode
  check_max_pool(2, 2, 8, 11, 3, 2, 1, 3, 1, 1, 2, 1, true);  // dilation, non-square, overlap
  check_max_pool(1, 3, 5, 6, 2, 3, 3, 2, 0, 1, 1, 2, true);   // ceil_mode overhang, dilation 2
  check_max_pool(3, 5, 13, 12, 3, 3, 1, 1, 1, 1, 1, 1, false);  // many blocks, overlap everywhere
  check_max_pool(2, 3, 10, 11, 2, 2, 3, 4, 1, 0, 1, 1, true);   // stride > kernel: inputs no window reads
  check_max_pool(2, 3, 12, 13, 3, 3, 2, 2, 1, 1, 2, 2, true);   // 3x3/2 pad 1, dilation 2, ceil_mode, overlap
  for (bool incl : {true, false}) {
    //             N  C   H   W  kh kw sh sw ph pw ceil
    check_avg_pool(2, 3, 7, 9, 2, 2, 2, 2, 0, 0, false, incl);
    check_avg_pool(1, 2, 7, 9, 3, 3, 2, 2, 1, 1, true, incl);   // last window clipped at size + pad
    check_avg_pool(2, 2, 8, 11, 3, 2, 3, 1, 1, 1, true, incl);
    check_avg_pool(1, 3, 6, 5, 3, 3, 1, 1, 1, 1, false, incl);  // overlapping windows
    check_avg_pool(2, 2, 5, 7, 4, 2, 3, 2, 2, 1, true, incl);   // pad = k/2, ceil overhang
    check_avg_pool(3, 4, 12, 10, 3, 3, 2, 2, 0, 1, true, incl);  // more than one launcher block
    check_avg_pool(2, 3, 10, 11, 2, 2, 3, 4, 1, 0, true, incl);  // stride > kernel: gaps get dx = 0
  }
  // sweeps, printed as one line each: every window geometry of one axis on small sizes
  // (the other axis fixed), so that a wrong bound shows on some combination
  emu::quiet = true;
  int before = emu::checks, failed = emu::failures;
  for (int H = 2; H <= 8; ++H)
    for (int k = 1; k <= 4; ++k)
      for (int s = 1; s <= 4; ++s)
        for (int d = 1; d <= 2; ++d)
          for (int pad = 0; pad <= ((k - 1) * d + 1) / 2; ++pad)
            for (bool ceil_mode : {false, true})
              if (H + 2 * pad >= (k - 1) * d + 1) check_max_pool(1, 2, H, 5, k, 2, s, 1, pad, 1, d, 2, ceil_mode);
  emu::quiet = false;
  emu::report(emu::failures == failed, "max_pool2d sweep H 2..8, k 1..4, s 1..4, d 1..2, pad, ceil: %d checks",
              emu::checks - before);
  emu::quiet = true;
  before = emu::checks, failed = emu::failures;
  for (int H = 2; H <= 8; ++H)
    for (int k = 1; k <= 4; ++k)
      for (int s = 1; s <= 4; ++s)
        for (int pad = 0; pad <= k / 2; ++pad)
          for (bool ceil_mode : {false, true})
            for (bool incl : {true, false})
              if (H + 2 * pad >= k) check_avg_pool(1, 2, H, 6, k, 3, s, 2, pad, 1, ceil_mode, incl);
  emu::quiet = false;
  emu::report(emu::failures == failed, "avg_pool2d sweep H 2..8, k 1..4, s 1..4, pad, ceil, incl_pad: %d checks",
              emu::checks - before);
  emu::quiet = true;
  before = emu::checks, failed = emu::failures;
  for (int H = 1; H <= 20; ++H)
    for (int P = 1; P <= 20; ++P) check_adaptive(1, 2, H, 3, P, 2);
  emu::quiet = false;
  emu::report(emu::failures == failed, "adaptive_avg sweep H 1..20 x P 1..20: %d checks", emu::checks - before);

  //             N  C   H   W  P  Q
  check_adaptive(2, 3, 7, 9, 3, 4);    // overlapping windows (P does not divide H)
  check_adaptive(1, 2, 5, 5, 5, 5);    // identity
  check_adaptive(2, 2, 4, 6, 7, 9);    // more outputs than inputs
  check_adaptive(1, 3, 10, 7, 3, 2);
  check_adaptive(1, 2, 6, 9, 1, 3);    // P = 1 but not global
  check_adaptive(3, 5, 7, 7, 1, 1);    // global: 15 planes, 8 warps per block -> 2 blocks
  check_adaptive(2, 9, 13, 11, 1, 1);  // global: planes of 143 > 32 elements
  check_adaptive(4, 5, 2, 2, 1, 1);    // global: planes of 4 < 32 elements
  check_adaptive(1, 1, 1, 1, 1, 1);
  return emu::finish();
}
