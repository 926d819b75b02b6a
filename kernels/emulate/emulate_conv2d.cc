// Runs the conv2d kernels on the CPU (emu.h: one fiber per CUDA thread) and
// compares them with the convolution written as plain loops. It checks what CI
// cannot run: the index math, the tile guards and the __syncthreads placement
// of every version, on odd shapes (strides, dilation, uneven padding, groups,
// sizes that are not tile multiples). It says nothing about speed, and it runs
// the kernel bodies only: each launch mirrors its launcher's block and grid
// (the grid-stride kernels also run on one and two blocks), but the launchers'
// choice between the small and the large tile is not run (both tiles are).
//
// Build and run (not part of the extension; CMake globs only *.cu and *.cpp;
// tests/test_kernel_emulation.py does this):
//   g++ -std=c++17 -O1 -pthread -I/usr/local/cuda/include -Ikernels
//       kernels/emulate/emulate_conv2d.cc -o /tmp/emulate_conv2d && /tmp/emulate_conv2d
// It prints one line per check, "all ok" at the end, and exits 1 if any failed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++ (fibers, barriers, shuffles); defines PYCNN_KERNEL_EMULATION
#include "conv2d/01_direct.cu"
#include "conv2d/02_implicit_gemm.cu"
#include "conv2d/03_implicit_gemm_bwd_data.cu"
#include "conv2d/04_implicit_gemm_bwd_filter.cu"
#include "conv2d/05_bias_grad.cu"
#include "conv2d/06_depthwise.cu"
#include "conv2d/07_implicit_gemm_pipelined.cu"
#include "emulate/emu_wmma.h"  // nvcuda::wmma with TF32 inputs, for version 8
#include "conv2d/08_implicit_gemm_tf32x3.cu"
#include "conv2d/09_implicit_gemm_bwd_data_tf32x3.cu"
#include "conv2d/10_implicit_gemm_bwd_filter_tf32x3.cu"
#include "conv2d/11_implicit_gemm_bwd_data_phased.cu"

using pycnn::Conv2dParams;

// ---- the oracle: the convolution as one loop nest, scattered form (every
// (output, tap) pair adds its product), shared by the three passes.
struct Ref {
  std::vector<double> y, dx, dw;
};
static Ref reference(const Conv2dParams& p, const std::vector<float>& x, const std::vector<float>& w,
                     const std::vector<float>& b, const std::vector<float>& dy) {
  const int Cg = p.C / p.groups, Kg = p.K / p.groups;
  Ref out{std::vector<double>((size_t)p.N * p.K * p.P * p.Q, 0.0),
          std::vector<double>((size_t)p.N * p.C * p.H * p.W, 0.0),
          std::vector<double>((size_t)p.K * Cg * p.R * p.S, 0.0)};
  for (int n = 0; n < p.N; ++n)
    for (int k = 0; k < p.K; ++k)
      for (int op = 0; op < p.P; ++op)
        for (int oq = 0; oq < p.Q; ++oq) {
          const size_t yi = (((size_t)n * p.K + k) * p.P + op) * p.Q + oq;
          out.y[yi] += b.empty() ? 0.0 : b[k];
          for (int cg = 0; cg < Cg; ++cg)
            for (int r = 0; r < p.R; ++r)
              for (int s = 0; s < p.S; ++s) {
                const int h = op * p.stride_h - p.pad_top + r * p.dilation_h;
                const int iw = oq * p.stride_w - p.pad_left + s * p.dilation_w;
                if (h < 0 || h >= p.H || iw < 0 || iw >= p.W) continue;
                const int c = (k / Kg) * Cg + cg;
                const size_t xi = (((size_t)n * p.C + c) * p.H + h) * p.W + iw;
                const size_t wi = (((size_t)k * Cg + cg) * p.R + r) * p.S + s;
                out.y[yi] += (double)x[xi] * w[wi];
                out.dx[xi] += (double)dy[yi] * w[wi];
                out.dw[wi] += (double)dy[yi] * x[xi];
              }
        }
  return out;
}

// Max error against the oracle, relative to the largest reference value; also
// fails if the kernel wrote outside the output (guard zones).
static void compare(const char* what, const Conv2dParams& p, const emu::Guarded<float>& got,
                    const std::vector<double>& want, bool relu = false, double tol = 1e-4) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double ref = relu ? std::max(want[i], 0.0) : want[i];
    const double e = std::fabs(got[i] - ref);
    max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);  // an unwritten (NaN) output fails
    max_ref = std::max(max_ref, std::fabs(ref));
  }
  const bool in_bounds = got.intact();
  const bool ok = max_err <= tol * std::max(1.0, max_ref) && std::isfinite(max_err) && in_bounds;
  emu::report(ok, "%-26s N%d C%d H%d W%d K%d R%d S%d P%d Q%d st%d,%d di%d,%d pad%d,%d g%d: err %.2e%s",
              what, p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w,
              p.dilation_h, p.dilation_w, p.pad_top, p.pad_left, p.groups, max_err,
              in_bounds ? "" : " (wrote out of bounds)");
}

static int out_size(int in, int k, int st, int pad_total, int dil) {
  return (in + pad_total - dil * (k - 1) - 1) / st + 1;
}

// Version 6 (depthwise, C/groups = 1): the launchers' blocks (as wide as the plane
// rounded to a warp, at most 256) and grids (a block per plane in x, runs of pixels
// in y), and also one run of pixels (the kernels stride over the rest); the
// specialised filter size when there is one and the general loops in any case;
// backward-filter on one split (stored into dw) and on several through the
// workspace, including empty splits (they must write zeros).
static void run_depthwise(const Conv2dParams& p, const float* xp, const float* wp, const float* bp,
                          const float* dyp, const Ref& ref, emu::Guarded<float>& y,
                          emu::Guarded<float>& dx, emu::Guarded<float>& dwv) {
  using pycnn::ceil_div;
  const int PQ = p.P * p.Q, HW = p.H * p.W, npq = p.N * PQ;
  const int ks = pycnn::dw_ksize(p);
  auto threads_for = [](int pixels) { return std::min(pycnn::kDwThreads, ceil_div(pixels, 32) * 32); };
  auto each_ksize = [&](auto run) {
    if (ks == 3) run(std::integral_constant<int, 3>{});
    if (ks == 5) run(std::integral_constant<int, 5>{});
    if (ks == 7) run(std::integral_constant<int, 7>{});
    run(std::integral_constant<int, 0>{});
  };
  char label[64];
  each_ksize([&](auto ksize) {
    constexpr int KS = decltype(ksize)::value;
    const int tf = threads_for(PQ), td = threads_for(HW);
    for (int gy : emu::grids(ceil_div(PQ, tf))) {
      y.fill(NAN);
      emu::launch(dim3(p.N * p.K, gy), dim3(tf),
                  [&] { pycnn::conv2d_fwd_kernel6<KS, true>(xp, wp, bp, y.data(), p); });
      std::snprintf(label, sizeof label, "fwd6 k%d relu grid y %d", KS, gy);
      compare(label, p, y, ref.y, true);
    }
    y.fill(NAN);
    emu::launch(dim3(p.N * p.K, ceil_div(PQ, tf)), dim3(tf),
                [&] { pycnn::conv2d_fwd_kernel6<KS, false>(xp, wp, nullptr, y.data(), p); });
    std::vector<double> no_bias = ref.y;  // the reference includes b: take it back out
    for (size_t i = 0; i < no_bias.size(); ++i) no_bias[i] -= bp[(i / PQ) % p.K];
    std::snprintf(label, sizeof label, "fwd6 k%d no bias", KS);
    compare(label, p, y, no_bias);
    for (int gy : emu::grids(ceil_div(HW, td))) {
      dx.fill(NAN);
      emu::launch(dim3(p.N * p.C, gy), dim3(td),
                  [&] { pycnn::conv2d_bwd_data_kernel6<KS>(dyp, wp, dx.data(), p); });
      std::snprintf(label, sizeof label, "bwd_data6 k%d grid y %d", KS, gy);
      compare(label, p, dx, ref.dx);
    }
    for (int splits : {1, 3, 16}) {  // 16 > N*P*Q in the first depthwise case: empty splits
      const int chunk = ceil_div(npq, splits);
      const size_t ws_floats = pycnn::conv2d_bwd_filter6_workspace_bytes(p, splits) / 4;
      emu::Guarded<float> ws(ws_floats, NAN);
      dwv.fill(NAN);
      emu::launch(dim3(p.K, splits), dim3(pycnn::kDwThreads), [&] {
        pycnn::conv2d_bwd_filter_kernel6<KS>(xp, dyp, splits > 1 ? ws.data() : dwv.data(), p, chunk);
      });
      if (splits > 1) {
        const int total = p.K * p.R * p.S;
        emu::launch(dim3(pycnn::grid_for(total, 256)), dim3(256),
                    [&] { pycnn::conv2d_split_sum_kernel(ws.data(), dwv.data(), total, splits); });
      }
      std::snprintf(label, sizeof label, "bwd_filter6 k%d s%d", KS, splits);
      compare(label, p, dwv, ref.dw);
    }
  });
}

static void run_case(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int dh,
                     int dw_, int pt, int pb, int pl, int pr, int groups, bool slow_too) {
  Conv2dParams p{N, C, H, W, K, R, S, out_size(H, R, sh, pt + pb, dh), out_size(W, S, sw, pl + pr, dw_),
                 sh, sw, dh, dw_, pt, pl, groups};
  std::mt19937 rng(1234 + N * 7 + C * 13 + K * 31 + H);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto rand_vec = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& e : v) e = u(rng);
    return v;
  };
  const int Cg = C / groups;
  auto x = rand_vec((size_t)N * C * H * W), w = rand_vec((size_t)K * Cg * R * S);
  auto b = rand_vec(K), dy = rand_vec((size_t)N * K * p.P * p.Q);
  const Ref ref = reference(p, x, w, b, dy);
  emu::Guarded<float> y(ref.y.size(), NAN), dx(ref.dx.size(), NAN), dwv(ref.dw.size(), NAN);
  // the kernels read guarded copies: a read past an input's end gives NaN
  const emu::Guarded<float> xg(x), wg(w), bg(b), dyg(dy);
  const float* xp = xg.data(); const float* wp = wg.data(); const float* bp = bg.data();
  const float* dyp = dyg.data();

  if (slow_too) {  // direct kernels: conv2d_fwd1 & co. use 256 threads and grid_for(outputs, 256)
    const int out_y = N * K * p.P * p.Q, out_x = N * C * H * W, out_w = K * Cg * R * S;
    for (int grid : emu::grids(pycnn::grid_for(out_y, 256))) {
      y.fill(NAN);
      emu::launch(dim3(grid), dim3(256), [&] { pycnn::conv2d_fwd_kernel1<false>(xp, wp, bp, y.data(), p); });
      compare(grid == 1 ? "fwd1 grid 1" : "fwd1", p, y, ref.y);
    }
    for (int grid : emu::grids(pycnn::grid_for(out_x, 256))) {
      dx.fill(NAN);
      emu::launch(dim3(grid), dim3(256), [&] { pycnn::conv2d_bwd_data_kernel1(dyp, wp, dx.data(), p); });
      compare(grid == 1 ? "bwd_data1 grid 1" : "bwd_data1", p, dx, ref.dx);
    }
    for (int grid : emu::grids(pycnn::grid_for(out_w, 256))) {
      dwv.fill(NAN);
      emu::launch(dim3(grid), dim3(256), [&] { pycnn::conv2d_bwd_filter_kernel1(xp, dyp, dwv.data(), p); });
      compare(grid == 1 ? "bwd_filter1 grid 1" : "bwd_filter1", p, dwv, ref.dw);
    }
  }

  if (Cg == 1) run_depthwise(p, xp, wp, bp, dyp, ref, y, dx, dwv);

  const int M = N * p.P * p.Q, Kg = K / groups;
  {  // backward-bias 5 (warp shuffles emulated lane by lane)
    std::vector<double> db_ref(K, 0.0);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        for (int i = 0; i < p.P * p.Q; ++i) db_ref[k] += dy[((size_t)n * K + k) * p.P * p.Q + i];
    emu::Guarded<float> db(K, NAN);
    emu::launch(dim3(K), dim3(pycnn::kBiasThreads),
                [&] { pycnn::conv2d_bwd_bias_kernel5(dyp, db.data(), N, K, p.P * p.Q); });
    compare("bwd_bias5", p, db, db_ref);
  }
  {  // forward 2, both tunings, with ReLU
    using T = pycnn::Fwd2Small;
    y.fill(NAN);
    emu::launch(dim3(pycnn::ceil_div(M, T::BM), pycnn::ceil_div(Kg, T::BN), groups), dim3(T::THREADS),
                [&] { pycnn::conv2d_fwd_kernel2<T, true>(xp, wp, bp, y.data(), p); });
    compare("fwd2 64x64 relu", p, y, ref.y, true);
  }
  {
    using T = pycnn::Fwd2Large;
    y.fill(NAN);
    emu::launch(dim3(pycnn::ceil_div(M, T::BM), pycnn::ceil_div(Kg, T::BN), groups), dim3(T::THREADS),
                [&] { pycnn::conv2d_fwd_kernel2<T, false>(xp, wp, bp, y.data(), p); });
    compare("fwd2 128x128", p, y, ref.y);
  }
  {  // forward 7 (double-buffered, float4), both tunings; y 16-byte aligned (float4 stores
     // when P*Q % 4 == 0) and 4 bytes off (scalar stores in any case)
    auto run7 = [&](auto tile, bool relu, size_t misalign, const char* name) {
      using T = decltype(tile);
      emu::Guarded<float> y7(ref.y.size(), NAN, misalign);
      const dim3 grid(pycnn::ceil_div(M, T::BM), pycnn::ceil_div(Kg, T::BN), groups);
      emu::launch(grid, dim3(T::THREADS), [&] {
        if (relu) pycnn::conv2d_fwd_kernel7<T, true>(xp, wp, bp, y7.data(), p);
        else pycnn::conv2d_fwd_kernel7<T, false>(xp, wp, bp, y7.data(), p);
      });
      compare(name, p, y7, ref.y, relu);
    };
    run7(pycnn::Fwd7Small{}, true, 0, "fwd7 64x64 relu");
    run7(pycnn::Fwd7Large{}, false, 0, "fwd7 128x128");
    run7(pycnn::Fwd7Small{}, false, 1, "fwd7 64x64 y misaligned");
  }
  {  // forward 8 (tensor cores, 3xTF32), both tunings. The emulated tensor cores drop
     // the inputs' low 13 mantissa bits as the GPU's do, so the tolerance here is
     // 10x tighter than the other versions': one TF32 product per term (no split)
     // is off by ~1e-4 of the output's scale and fails it.
    auto run8 = [&](auto tile, bool relu, const char* name) {
      using T = decltype(tile);
      y.fill(NAN);
      const dim3 grid(pycnn::ceil_div(M, T::BM), pycnn::ceil_div(Kg, T::BN), groups);
      emu::launch(grid, dim3(T::THREADS), [&] {
        if (relu) pycnn::conv2d_fwd_kernel8<T, true>(xp, wp, bp, y.data(), p);
        else pycnn::conv2d_fwd_kernel8<T, false>(xp, wp, bp, y.data(), p);
      });
      compare(name, p, y, ref.y, relu, 1e-5);
    };
    run8(pycnn::Fwd8Small{}, true, "fwd8 64x64 relu");
    run8(pycnn::Fwd8Large{}, false, "fwd8 128x128");
  }
  const int MX = N * H * W;
  {  // backward-data 3, both tunings
    using T = pycnn::BwdData3Small;
    dx.fill(NAN);
    emu::launch(dim3(pycnn::ceil_div(MX, T::BM), pycnn::ceil_div(Cg, T::BN), groups), dim3(T::THREADS),
                [&] { pycnn::conv2d_bwd_data_kernel3<T>(dyp, wp, dx.data(), p); });
    compare("bwd_data3 64x64", p, dx, ref.dx);
  }
  {
    using T = pycnn::BwdData3Large;
    dx.fill(NAN);
    emu::launch(dim3(pycnn::ceil_div(MX, T::BM), pycnn::ceil_div(Cg, T::BN), groups), dim3(T::THREADS),
                [&] { pycnn::conv2d_bwd_data_kernel3<T>(dyp, wp, dx.data(), p); });
    compare("bwd_data3 128x128", p, dx, ref.dx);
  }
  {  // backward-data 9 (tensor cores, 3xTF32), both tunings, at forward 8's tolerance
    auto run9 = [&](auto tile, const char* name) {
      using T = decltype(tile);
      dx.fill(NAN);
      emu::launch(dim3(pycnn::ceil_div(MX, T::BM), pycnn::ceil_div(Cg, T::BN), groups), dim3(T::THREADS),
                  [&] { pycnn::conv2d_bwd_data_kernel9<T>(dyp, wp, dx.data(), p); });
      compare(name, p, dx, ref.dx, false, 1e-5);
    };
    run9(pycnn::BwdData9Small{}, "bwd_data9 64x64");
    run9(pycnn::BwdData9Large{}, "bwd_data9 128x128");
  }
  {  // backward-data 11 (stride phases), both tunings: the launcher's grid, sized for the
     // largest phase, with groups * phases in z; also the 128-row tile on the 64-row
     // tile's grid x, to show that blocks past a phase's end leave dx alone
    auto run11 = [&](auto tile, int rows_per_block, const char* name) {
      using T = decltype(tile);
      const int z = groups * sh * sw;
      const int mx = (int)pycnn::bwd_data11_max_rows(p);
      dx.fill(NAN);
      emu::launch(dim3(pycnn::ceil_div(mx, rows_per_block), pycnn::ceil_div(Cg, T::BN), z),
                  dim3(T::THREADS), [&] { pycnn::conv2d_bwd_data_kernel11<T>(dyp, wp, dx.data(), p); });
      compare(name, p, dx, ref.dx);
    };
    run11(pycnn::BwdData11Small{}, pycnn::BwdData11Small::BM, "bwd_data11 64x64");
    run11(pycnn::BwdData11Large{}, pycnn::BwdData11Large::BM, "bwd_data11 128x128");
    run11(pycnn::BwdData11Large{}, pycnn::BwdData11Small::BM, "bwd_data11 128x128 idle blocks");
  }
  // backward-filter 4 and 10 (the same split-K scheme): both tunings, one split (plain
  // store), several splits with atomics, several through the workspace and the
  // fixed-order reduction; the split count leaves trailing splits with an empty range
  // (chunks are whole BK steps). `kernel(tile, atomic, out, chunk, split_stride)`
  // runs one block of the version's kernel; version 10 at forward 8's tolerance.
  const int NPQ = N * p.P * p.Q;
  auto run_bwd_filter = [&](auto tile, auto kernel, const char* name, double tol) {
    using T = decltype(tile);
    for (int splits : {1, 3, 15}) {
      for (bool deterministic : {false, true}) {
        if (splits == 1 && deterministic) continue;
        const int chunk = pycnn::ceil_div(pycnn::ceil_div(NPQ, splits), T::BK) * T::BK;
        const dim3 grid(pycnn::ceil_div(Cg * R * S, T::BM), pycnn::ceil_div(Kg, T::BN), splits * groups);
        const int total = (int)ref.dw.size();
        char label[64];
        if (splits > 1 && !deterministic) {
          dwv.fill(0.f);
          emu::launch(grid, dim3(T::THREADS), [&] { kernel(T{}, true, dwv.data(), chunk, 0); });
          std::snprintf(label, sizeof label, "%s s%d atomic", name, splits);
          compare(label, p, dwv, ref.dw, false, tol);
          continue;
        }
        dwv.fill(NAN);
        emu::Guarded<float> ws(splits > 1 ? pycnn::conv2d_bwd_filter4_workspace_bytes(p, splits, true) / 4 : 0, NAN);
        float* out = splits > 1 ? ws.data() : dwv.data();
        emu::launch(grid, dim3(T::THREADS), [&] { kernel(T{}, false, out, chunk, splits > 1 ? total : 0); });
        if (splits == 1) {
          std::snprintf(label, sizeof label, "%s s1 store", name);
          compare(label, p, dwv, ref.dw, false, tol);
          continue;
        }
        for (int rgrid : emu::grids(pycnn::grid_for(total, 256))) {  // the launchers' reduction
          dwv.fill(NAN);
          emu::launch(dim3(rgrid), dim3(256), [&] {
            pycnn::conv2d_split_sum_kernel(ws.data(), dwv.data(), total, splits);
          });
          std::snprintf(label, sizeof label, "%s s%d det%s", name, splits, rgrid == 1 ? " (reduce grid 1)" : "");
          compare(label, p, dwv, ref.dw, false, tol);
        }
      }
    }
  };
  auto kernel4 = [&](auto tile, bool atomic, float* out, int chunk, int stride) {
    using T = decltype(tile);
    if (atomic) pycnn::conv2d_bwd_filter_kernel4<T, true>(xp, dyp, out, p, chunk, stride);
    else pycnn::conv2d_bwd_filter_kernel4<T, false>(xp, dyp, out, p, chunk, stride);
  };
  auto kernel10 = [&](auto tile, bool atomic, float* out, int chunk, int stride) {
    using T = decltype(tile);
    if (atomic) pycnn::conv2d_bwd_filter_kernel10<T, true>(xp, dyp, out, p, chunk, stride);
    else pycnn::conv2d_bwd_filter_kernel10<T, false>(xp, dyp, out, p, chunk, stride);
  };
  run_bwd_filter(pycnn::BwdFilter4Small{}, kernel4, "bwd_filter4 64", 1e-4);
  run_bwd_filter(pycnn::BwdFilter4Large{}, kernel4, "bwd_filter4 128", 1e-4);
  run_bwd_filter(pycnn::BwdFilter10Small{}, kernel10, "bwd_filter10 64", 1e-5);
  run_bwd_filter(pycnn::BwdFilter10Large{}, kernel10, "bwd_filter10 128", 1e-5);
}

// Version 11's phase arithmetic (first pixel, taps, output offsets; strides that share
// a factor with the dilation; padding past the filter) on 60 random small shapes,
// against the oracle's dx, with the small tile on the launcher's grid.
static void sweep_bwd_data11() {
  std::mt19937 rng(11);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  int done = 0, worst_case = -1;
  double worst = 0;
  bool ok = true;
  while (done < 60) {
    const int groups = pick(1, 3), N = pick(1, 2), C = groups * pick(1, 3), K = groups * pick(1, 3);
    const int H = pick(1, 12), W = pick(1, 12), R = pick(1, 5), S = pick(1, 5);
    const int sh = pick(1, 4), sw = pick(1, 4), dh = pick(1, 3), dw_ = pick(1, 3);
    const int pt = pick(0, 3), pb = pick(0, 3), pl = pick(0, 3), pr = pick(0, 3);
    if (H + pt + pb - dh * (R - 1) - 1 < 0 || W + pl + pr - dw_ * (S - 1) - 1 < 0) continue;  // no output
    Conv2dParams p{N, C, H, W, K, R, S, out_size(H, R, sh, pt + pb, dh), out_size(W, S, sw, pl + pr, dw_),
                   sh, sw, dh, dw_, pt, pl, groups};
    std::vector<float> x((size_t)N * C * H * W, 0.f), w((size_t)K * (C / groups) * R * S), dy((size_t)N * K * p.P * p.Q);
    for (auto& e : w) e = u(rng);
    for (auto& e : dy) e = u(rng);
    const Ref ref = reference(p, x, w, {}, dy);
    const emu::Guarded<float> wg(w), dyg(dy);
    emu::Guarded<float> dx(ref.dx.size(), NAN);
    using T = pycnn::BwdData11Small;
    emu::launch(dim3(pycnn::ceil_div((int)pycnn::bwd_data11_max_rows(p), T::BM), pycnn::ceil_div(C / groups, T::BN),
                     groups * sh * sw),
                dim3(T::THREADS), [&] { pycnn::conv2d_bwd_data_kernel11<T>(dyg.data(), wg.data(), dx.data(), p); });
    double err = dx.intact() ? 0 : INFINITY;
    for (size_t i = 0; i < ref.dx.size(); ++i) {
      const double e = std::fabs(dx[i] - ref.dx[i]);
      err = std::isnan(e) ? INFINITY : std::max(err, e);
    }
    if (!(err <= 1e-4)) ok = false;
    if (!(err <= worst)) { worst = err; worst_case = done; }
    ++done;
  }
  emu::report(ok, "bwd_data11 random sweep: 60 shapes, worst err %.2e (shape %d)", worst, worst_case);
}

int main() {
  sweep_bwd_data11();
  //        N  C   H   W   K  R  S  sh sw dh dw pt pb pl pr groups slow
  run_case(2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, true);      // plain 3x3, odd sizes
  run_case(2, 4, 9, 8, 6, 3, 2, 2, 1, 1, 2, 1, 0, 2, 1, 2, true);      // stride, dilation, uneven pad, groups
  run_case(1, 6, 6, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 6, true);      // depthwise, stride 2
  run_case(3, 20, 11, 10, 130, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, false); // 1x1, K past a 128 tile
  run_case(2, 9, 12, 13, 70, 5, 3, 3, 2, 2, 1, 3, 4, 0, 2, 1, false);  // 5x3, big strides, Kdim 135
  run_case(1, 8, 5, 5, 8, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2, 4, true);      // pad past the window
  run_case(2, 140, 6, 5, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, false);  // C past a 128 tile, stride 2
  run_case(1, 12, 13, 11, 9, 2, 4, 3, 2, 2, 3, 0, 2, 3, 1, 3, false);  // even filters, stride 3, dilation 3
  run_case(3, 5, 8, 8, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, false);    // P*Q = 64: float4 stores
  run_case(2, 4, 13, 12, 8, 5, 5, 1, 1, 2, 2, 4, 3, 4, 2, 4, true);    // depthwise x2, 5x5, dilation 2
  run_case(2, 1, 17, 19, 3, 3, 2, 2, 3, 1, 1, 1, 0, 0, 1, 1, true);    // one input channel, 3x2, stride 2,3
  run_case(1, 2, 20, 18, 2, 7, 7, 1, 1, 1, 1, 3, 3, 3, 3, 2, false);   // depthwise 7x7, planes past 256
  run_case(2, 5, 11, 12, 7, 3, 3, 2, 4, 2, 2, 2, 1, 2, 0, 1, false);   // dilation sharing a factor with
                                                                       // the stride: phases with no tap
  run_case(2, 6, 9, 10, 130, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, false);  // 1x1 stride 2 (ResNet downsample)
  return emu::finish();
}
