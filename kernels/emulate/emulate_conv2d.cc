// Runs every conv2d launcher (kernels/conv2d/conv2d.h) on the CPU through emu.h, under
// its checks (memcheck, alignment, initcheck, racecheck, launch limits, determinism),
// and compares the results with the convolution written as plain loops in double.
// It checks what CI cannot run: the launchers' tile, grid, split and workspace
// choices and the kernels' index math, tile guards and __syncthreads placement, on
// odd shapes (strides, dilation, uneven padding, groups, sizes that are not tile
// multiples). It says nothing about speed.
//
// Each call goes through the real launcher, which makes its own choices:
//   - versions 2, 7, 8 (forward) and 3, 9, 11 (backward-data) pick their 128x128 or
//     64x64 tile with igemm_use_large_tile. On the emulated H200 (132 SMs) no shape
//     here gives 132 blocks of the large tile, so the launchers pick the small one;
//     on a 1-SM GPU (emu::WithSms(1)) any grid fills the GPU, so they pick the large
//     tile wherever the GEMM is at least 96 columns wide (K/groups forward, C/groups
//     backward-data: the shapes with K = 130, 100 and C = 140). Each label names the
//     tile the rule picked, and a launch whose setting did not pick the tile meant
//     fails; the end of the run checks that both tiles of every launcher ran;
//   - version 12 (forward, warp-tiled) picks its tile by the same rule and its split
//     count with conv2d_fwd12_splits: see check_fwd12;
//   - versions 4, 10, 15 and 16 (backward-filter, split-K) pick their tile by the shape alone
//     (bwd_filter4_large: K/groups and C/groups*R*S both >= 96, the K = 100 shape);
//     they run with the split counts conv2d_bwd_filter4_splits gives for 132 and 2
//     SMs and with 1, 3 and 15 splits (15 leaves trailing splits with an empty
//     range), each deterministic (workspace, fixed-order sum) and atomic;
//   - version 6 (depthwise, C/groups = 1) picks the kernel specialised for a 3x3,
//     5x5 or 7x7 filter, else the general loops (the 3x2 filter); its backward-filter
//     runs with conv2d_bwd_filter6_splits for 132 and 2 SMs and with 1, 3 and 16
//     splits (more than N*P*Q in the first depthwise shape: empty splits write zeros);
//   - workspaces are sized by conv2d_bwd_filter{4,6}_workspace_bytes.
// The grid-stride kernels (direct version 1, the depthwise kernels' runs of pixels,
// the split reduction) also run on one and two blocks, fewer than their launcher's
// grid, so their loops wrap; these are the only launches made here, not by a launcher.
// The phase arithmetic of versions 11 and 14 also runs on 60 random small shapes.
//
// Build and run (tests/test_kernel_emulation.py does this):
//   python kernels/emulate/emulate.py conv2d [--only conv2d_fwd7] [--quiet]
// Labels start with the launcher's name; "conv2d_bwd_data1 " (with the space) picks
// version 1 alone, without 11. It prints one line per check, the sanitizer's findings,
// the determinism of each kernel, and "all ok" at the end; it exits 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++ (fibers, barriers, shuffles); defines PYCNN_KERNEL_EMULATION
#include "conv2d/01_direct.cu"
#include "conv2d/02_implicit_gemm.cu"
#include "conv2d/03_implicit_gemm_bwd_data.cu"
#include "conv2d/04_implicit_gemm_bwd_filter.cu"
#include "conv2d/05_bias_grad.cu"
#include "conv2d/06_depthwise.cu"
#include "conv2d/07_implicit_gemm_pipelined.cu"
#include "conv2d/12_implicit_gemm_warp_tiled.cu"
#include "emulate/emu_wmma.h"  // nvcuda::wmma with TF32 inputs, for versions 8, 9, 10
#include "conv2d/08_implicit_gemm_tf32x3.cu"
#include "conv2d/09_implicit_gemm_bwd_data_tf32x3.cu"
#include "conv2d/10_implicit_gemm_bwd_filter_tf32x3.cu"
#include "conv2d/11_implicit_gemm_bwd_data_phased.cu"
#include "conv2d/14_implicit_gemm_bwd_data_tables.cu"
#include "conv2d/17_implicit_gemm_bwd_data_warp_tiled.cu"
#include "conv2d/13_implicit_gemm_mma_tf32.cu"  // mma.sync and cp.async through emu_mma.h
#include "conv2d/15_implicit_gemm_bwd_filter_pipelined.cu"
#include "conv2d/16_implicit_gemm_bwd_filter_warp_tiled.cu"

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
// fails if the kernel wrote outside the output (guard zones), or if `as_meant` is
// false (the launcher's rule did not pick the tile this run was meant to cover).
static void compare(const char* what, const Conv2dParams& p, const emu::Guarded<float>& got,
                    const std::vector<double>& want, bool relu = false, double tol = 1e-4,
                    bool as_meant = true) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double ref = relu ? std::max(want[i], 0.0) : want[i];
    const double e = std::fabs(got[i] - ref);
    max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);  // an unwritten (NaN) output fails
    max_ref = std::max(max_ref, std::fabs(ref));
  }
  const bool in_bounds = got.intact();
  const bool ok = max_err <= tol * std::max(1.0, max_ref) && std::isfinite(max_err) && in_bounds && as_meant;
  emu::report(ok, "%-44s N%d C%d H%d W%d K%d R%d S%d P%d Q%d st%d,%d di%d,%d pad%d,%d g%d: err %.2e%s%s",
              what, p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w,
              p.dilation_h, p.dilation_w, p.pad_top, p.pad_left, p.groups, max_err,
              in_bounds ? "" : " (wrote out of bounds)", as_meant ? "" : " (not the tile this GPU size is meant to pick)");
}

static int out_size(int in, int k, int st, int pad_total, int dil) {
  return (in + pad_total - dil * (k - 1) - 1) / st + 1;
}

// "<launcher> <tile>" for every tile a launcher ran ("<launcher> 3x3" & co. for the
// depthwise kernels); main checks that every launcher ran each kernel it can choose.
static std::set<std::string> kernels_run;
template <class T>
static std::string tile_name() {
  return std::to_string(T::BM) + "x" + std::to_string(T::BN);
}

// One shape's inputs in device memory and its reference results.
struct Case {
  Conv2dParams p;
  Ref ref;
  const emu::Guarded<float> &x, &w, &b, &dy;
  std::vector<double> y_no_bias;  // ref.y without b, for the runs with b = nullptr
};

// The two GPU sizes the implicit-GEMM launchers run on (see the header): on the
// H200 they pick the small tile for every shape here; on one SM the large tile
// wherever the GEMM is >= 96 columns wide.
constexpr int kH200Sms = 132, kOneSm = 1;

// The tile igemm_use_large_tile<L> picks on a GPU of `sms` SMs, and whether it is
// the one that GPU size is meant to select for a GEMM `columns` wide.
template <class L>
static bool picks_large(int sms, int64_t rows, int64_t columns, int64_t z, bool* as_meant) {
  emu::WithSms gpu(sms);
  const bool large = pycnn::igemm_use_large_tile<L>(rows, columns, z);
  *as_meant = large == (sms == kOneSm && columns >= 96);
  return large;
}

// Forward 2, 7, 8: on 132 SMs with ReLU (the small tile), on one SM without ReLU
// and without bias (b = nullptr; the large tile where the GEMM is wide enough,
// else the small tile again). `misaligned`: also y one float off 16-byte alignment
// (version 7's scalar stores; it stores float4s when P*Q % 4 == 0 and y is aligned).
template <class L, class S, class Launcher>
static void check_fwd_igemm(const char* name, Launcher launcher, const Case& c, double tol, bool misaligned) {
  const Conv2dParams& p = c.p;
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  char label[96];
  for (int sms : {kH200Sms, kOneSm}) {
    bool as_meant;
    const bool large = picks_large<L>(sms, M, Kg, p.groups, &as_meant);
    const bool relu = sms == kH200Sms;
    const std::string tile = large ? tile_name<L>() : tile_name<S>();
    for (size_t off : {0, 1}) {
      if (off == 1 && !(misaligned && relu)) continue;
      std::snprintf(label, sizeof label, "%s %s%s, %d SM%s%s", name, tile.c_str(), relu ? " relu" : " no bias", sms,
                    sms == 1 ? "" : "s", off ? ", y misaligned" : "");
      if (!emu::wanted(label)) continue;
      emu::Guarded<float> y(c.ref.y.size(), NAN, off, "y");
      {
        emu::WithSms gpu(sms);
        launcher(c.x.data(), c.w.data(), relu ? c.b.data() : nullptr, y.data(), p, relu, nullptr);
      }
      compare(label, p, y, relu ? c.ref.y : c.y_no_bias, relu, tol, as_meant);
      kernels_run.insert(std::string(name) + " " + tile);
    }
  }
}

// Forward 12 (warp-tiled, split-K over C*R*S), through its launcher, which picks the
// tile by version 2's rule (conv2d_fwd12_large_tile) on 132 SMs and on one:
//   - one split (y from the kernel itself): bias + ReLU on 132 SMs, no bias on one SM;
//   - the launcher's split count for 132 SMs (conv2d_fwd12_splits), and 3 and 15
//     splits forced (15 leaves trailing splits with an empty kk range, which store
//     zeros), the workspace sized by conv2d_fwd12_workspace_bytes and left unwritten;
//     3 splits also on one SM (the large tile where K/groups >= 96);
//   - one split and 3 splits with x, w and y one float off 16-byte alignment: the
//     scalar filter loads, the scalar y stores, the split sum's scalar path;
//   - the split sum of the 15 splits again on a single block (its loop wraps).
// Where C/groups*R*S % 4 == 0 the aligned runs take the float4 filter loads. The end
// of the run checks that both tiles, both filter loads and split-K ran.
static void check_fwd12(const Case& c) {
  using namespace pycnn;
  const Conv2dParams& p = c.p;
  const int64_t M = (int64_t)p.N * p.P * p.Q, Kg = p.K / p.groups;
  const int Kdim = p.C / p.groups * p.R * p.S;
  struct Run {
    int sms, splits;
    const char* why;
    bool relu;
    size_t off;  // x, w and y this many floats past 16-byte alignment
  };
  const int own = conv2d_fwd12_splits(p, kH200Sms);
  std::vector<Run> runs{{kH200Sms, 1, "split", true, 0}, {kOneSm, 1, "split", false, 0},
                        {kH200Sms, 1, "split", true, 1}};
  if (own != 1) runs.push_back({kH200Sms, own, "splits for 132 SMs", true, 0});
  for (int s : {3, 15})
    if (s != own) runs.push_back({kH200Sms, s, "splits", s == 3, 0});
  runs.push_back({kOneSm, 3, "splits", true, 0});
  runs.push_back({kH200Sms, 3, "splits", true, 1});
  char label[128];
  for (const Run& r : runs) {
    bool as_meant;
    const bool large = picks_large<Fwd12Large>(r.sms, M, Kg, p.groups, &as_meant);
    as_meant = as_meant && large == conv2d_fwd12_large_tile(p, r.sms);
    const std::string tile = large ? tile_name<Fwd12Large>() : tile_name<Fwd12Small>();
    std::snprintf(label, sizeof label, "conv2d_fwd12 %s%s, %d SM%s, %d %s%s", tile.c_str(),
                  r.relu ? " relu" : " no bias", r.sms, r.sms == 1 ? "" : "s", r.splits, r.why,
                  r.off ? ", x w y misaligned" : "");
    if (!emu::wanted(label)) continue;
    const emu::Guarded<float> xm(c.x.vec(), r.off, "x"), wm(c.w.vec(), r.off, "w");
    const size_t bytes = conv2d_fwd12_workspace_bytes(p, r.splits);
    emu::Guarded<float> ws(bytes / 4, NAN, 0, "workspace");
    emu::Guarded<float> y(c.ref.y.size(), NAN, r.off, "y");
    {
      emu::WithSms gpu(r.sms);
      conv2d_fwd12(xm.data(), wm.data(), r.relu ? c.b.data() : nullptr, y.data(), bytes ? ws.data() : nullptr, p,
                   r.relu, r.splits, nullptr);
    }
    compare(label, p, y, r.relu ? c.ref.y : c.y_no_bias, r.relu, 1e-4, as_meant);
    kernels_run.insert("conv2d_fwd12 " + tile);
    kernels_run.insert(Kdim % 4 == 0 && r.off == 0 ? "conv2d_fwd12 float4 w" : "conv2d_fwd12 scalar w");
    if (r.splits > 1) kernels_run.insert("conv2d_fwd12 split-K");
    const int total = (int)c.ref.y.size(), PQ = p.P * p.Q;
    if (r.splits == 15 && grid_for(total, 256) > 1) {  // the split sum again, on one block
      std::snprintf(label, sizeof label, "conv2d_fwd12 15 splits: conv2d_fwd12_split_sum_kernel on 1 block");
      emu::Guarded<float> y1(c.ref.y.size(), NAN, 0, "y");
      emu::launch("conv2d_fwd12_split_sum_kernel on a short grid", dim3(1), dim3(256), [&] {
        if (PQ % 4 == 0)
          conv2d_fwd12_split_sum_kernel<true>(ws.data(), nullptr, y1.data(), total, 15, PQ, p.K, false);
        else
          conv2d_fwd12_split_sum_kernel<false>(ws.data(), nullptr, y1.data(), total, 15, PQ, p.K, false);
      });
      compare(label, p, y1, c.y_no_bias);
    }
  }
}

// Backward-data 3, 9, 11, 14 on 132 SMs (the small tile), and on one SM where that picks
// the large tile. `rows`, `z`: the GEMM's rows and grid z as the launcher's rule sees
// them (versions 11 and 14: the largest stride phase's rows, groups * phases).
template <class L, class S, class Launcher>
static void check_bwd_data_igemm(const char* name, Launcher launcher, const Case& c, int64_t rows, int64_t z,
                                 double tol) {
  const Conv2dParams& p = c.p;
  const int64_t Cg = p.C / p.groups;
  char label[96];
  for (int sms : {kH200Sms, kOneSm}) {
    if (sms == kOneSm && Cg < 96) continue;  // the small tile again: nothing new
    bool as_meant;
    const bool large = picks_large<L>(sms, rows, Cg, z, &as_meant);
    const std::string tile = large ? tile_name<L>() : tile_name<S>();
    std::snprintf(label, sizeof label, "%s %s, %d SM%s", name, tile.c_str(), sms, sms == 1 ? "" : "s");
    if (!emu::wanted(label)) continue;
    emu::Guarded<float> dx(c.ref.dx.size(), NAN, 0, "dx");
    {
      emu::WithSms gpu(sms);
      launcher(c.dy.data(), c.w.data(), dx.data(), p, nullptr);
    }
    compare(label, p, dx, c.ref.dx, false, tol, as_meant);
    kernels_run.insert(std::string(name) + " " + tile);
  }
}

// The split counts to run a split backward-filter with: the launcher's own for an
// H200 and for a 2-SM GPU, and the fixed ones, without repeats.
static std::vector<std::pair<int, std::string>> split_counts(int h200, int two_sms, std::vector<int> fixed) {
  std::vector<std::pair<int, std::string>> out{{h200, "splits for 132 SMs"}};
  if (two_sms != h200) out.push_back({two_sms, "splits for 2 SMs"});
  for (int s : fixed)
    if (s != h200 && s != two_sms) out.push_back({s, "splits"});
  return out;
}

// The split reduction on one block: the grid-stride loop wraps when dw has more than
// 256 elements (the launcher's grid is grid_for(total, 256)).
static void check_split_sum_short_grid(const char* name, const Case& c, const emu::Guarded<float>& ws, int splits) {
  const int total = (int)c.ref.dw.size();
  if (pycnn::grid_for(total, 256) == 1) return;
  char label[96];
  std::snprintf(label, sizeof label, "%s, %d splits: conv2d_split_sum_kernel on 1 block", name, splits);
  emu::Guarded<float> dw(c.ref.dw.size(), NAN, 0, "dw");
  emu::launch("conv2d_split_sum_kernel on a short grid", dim3(1), dim3(256),
              [&] { pycnn::conv2d_split_sum_kernel(ws.data(), dw.data(), total, splits); });
  compare(label, c.p, dw, c.ref.dw);
}

// Backward-filter 4 and 10 (the same split-K launch): the tile is the shape's
// (bwd_filter4_large); every split count deterministic and atomic (one split is a
// plain store either way); the deterministic reduction of 15 splits also on one
// block.
template <class L, class S, class Launcher>
static void check_bwd_filter_split_k(const char* name, Launcher launcher, const Case& c, double tol) {
  const Conv2dParams& p = c.p;
  const std::string tile = pycnn::bwd_filter4_large(p) ? tile_name<L>() : tile_name<S>();
  char label[128];
  for (const auto& [splits, why] : split_counts(pycnn::conv2d_bwd_filter4_splits(p, kH200Sms),
                                                pycnn::conv2d_bwd_filter4_splits(p, 2), {1, 3, 15})) {
    for (bool deterministic : {true, false}) {
      if (splits == 1 && !deterministic) continue;
      std::snprintf(label, sizeof label, "%s %s, %d %s, %s", name, tile.c_str(), splits, why.c_str(),
                    splits == 1 ? "store" : deterministic ? "deterministic" : "atomic");
      if (!emu::wanted(label)) continue;
      const size_t bytes = pycnn::conv2d_bwd_filter4_workspace_bytes(p, splits, deterministic);
      emu::Guarded<float> ws(bytes / 4, NAN, 0, "workspace");
      emu::Guarded<float> dw(c.ref.dw.size(), NAN, 0, "dw");
      launcher(c.x.data(), c.dy.data(), dw.data(), bytes ? ws.data() : nullptr, p, splits, deterministic, nullptr);
      compare(label, p, dw, c.ref.dw, false, tol);
      kernels_run.insert(std::string(name) + " " + tile);
      if (deterministic && splits == 15) check_split_sum_short_grid(name, c, ws, splits);
    }
  }
}

// Depthwise (version 6, C/groups = 1): forward with ReLU and without bias, backward-
// data, backward-filter on each split count; the forward and backward-data kernels
// also on one and two runs of pixels where the launcher's grid has more (grid y; the
// kernels stride over the rest), with the block the launcher would use (as wide as the
// plane rounded to a warp, at most kDwThreads) and the specialised kernel it picks.
static void check_depthwise(const Case& c) {
  using namespace pycnn;
  const Conv2dParams& p = c.p;
  const int ks = dw_ksize(p);
  char label[128];
  const char* kind = ks ? (ks == 3 ? "3x3" : ks == 5 ? "5x5" : "7x7") : "general";
  for (bool relu : {true, false}) {
    std::snprintf(label, sizeof label, "conv2d_fwd6 %s%s", kind, relu ? " relu" : " no bias");
    if (!emu::wanted(label)) continue;
    emu::Guarded<float> y(c.ref.y.size(), NAN, 0, "y");
    conv2d_fwd6(c.x.data(), c.w.data(), relu ? c.b.data() : nullptr, y.data(), p, relu, nullptr);
    compare(label, p, y, relu ? c.ref.y : c.y_no_bias, relu);
    kernels_run.insert(std::string("conv2d_fwd6 ") + kind);
  }
  std::snprintf(label, sizeof label, "conv2d_bwd_data6 %s", kind);
  if (emu::wanted(label)) {
    emu::Guarded<float> dx(c.ref.dx.size(), NAN, 0, "dx");
    conv2d_bwd_data6(c.dy.data(), c.w.data(), dx.data(), p, nullptr);
    compare(label, p, dx, c.ref.dx);
    kernels_run.insert(std::string("conv2d_bwd_data6 ") + kind);
  }
  // the short grids: KS is a template argument, so one call per specialisation
  auto each_ksize = [&](auto run) {
    switch (ks) {
      case 3: run(std::integral_constant<int, 3>{}); break;
      case 5: run(std::integral_constant<int, 5>{}); break;
      case 7: run(std::integral_constant<int, 7>{}); break;
      default: run(std::integral_constant<int, 0>{}); break;
    }
  };
  const int PQ = p.P * p.Q, HW = p.H * p.W;
  const int tf = dw_plane_threads(PQ), td = dw_plane_threads(HW);
  each_ksize([&](auto ksize) {
    constexpr int KS = decltype(ksize)::value;
    for (int gy : emu::grids(ceil_div(PQ, tf))) {
      if (gy == ceil_div(PQ, tf)) continue;  // the launcher's grid: run above
      std::snprintf(label, sizeof label, "conv2d_fwd6 %s relu: kernel on grid y %d", kind, gy);
      if (!emu::wanted(label)) continue;
      emu::Guarded<float> y(c.ref.y.size(), NAN, 0, "y");
      emu::launch("conv2d_fwd_kernel6 on a short grid", dim3(p.N * p.K, gy), dim3(tf),
                  [&] { conv2d_fwd_kernel6<KS, true>(c.x.data(), c.w.data(), c.b.data(), y.data(), p); });
      compare(label, p, y, c.ref.y, true);
    }
    for (int gy : emu::grids(ceil_div(HW, td))) {
      if (gy == ceil_div(HW, td)) continue;
      std::snprintf(label, sizeof label, "conv2d_bwd_data6 %s: kernel on grid y %d", kind, gy);
      if (!emu::wanted(label)) continue;
      emu::Guarded<float> dx(c.ref.dx.size(), NAN, 0, "dx");
      emu::launch("conv2d_bwd_data_kernel6 on a short grid", dim3(p.N * p.C, gy), dim3(td),
                  [&] { conv2d_bwd_data_kernel6<KS>(c.dy.data(), c.w.data(), dx.data(), p); });
      compare(label, p, dx, c.ref.dx);
    }
  });
  for (const auto& [splits, why] : split_counts(conv2d_bwd_filter6_splits(p, kH200Sms),
                                                conv2d_bwd_filter6_splits(p, 2), {1, 3, 16})) {
    std::snprintf(label, sizeof label, "conv2d_bwd_filter6 %s, %d %s", kind, splits, why.c_str());
    if (!emu::wanted(label)) continue;
    const size_t bytes = conv2d_bwd_filter6_workspace_bytes(p, splits);
    emu::Guarded<float> ws(bytes / 4, NAN, 0, "workspace");
    emu::Guarded<float> dw(c.ref.dw.size(), NAN, 0, "dw");
    conv2d_bwd_filter6(c.x.data(), c.dy.data(), dw.data(), bytes ? ws.data() : nullptr, p, splits, nullptr);
    compare(label, p, dw, c.ref.dw);
    kernels_run.insert(std::string("conv2d_bwd_filter6 ") + kind);
  }
}

// Direct version 1: the launchers (forward with bias and ReLU), then the kernels on
// one and two blocks (forward without bias): grid-stride loops over every output
// element, whose launchers' grid is grid_for(outputs, 256).
static void check_direct(const Case& c) {
  using namespace pycnn;
  const Conv2dParams& p = c.p;
  char label[96];
  auto short_label = [&](const char* name, int grid) {
    std::snprintf(label, sizeof label, "%s kernel on %d block%s", name, grid, grid == 1 ? "" : "s");
    return label;
  };
  const int gy = grid_for((int64_t)p.N * p.K * p.P * p.Q, 256);
  for (int grid : emu::grids(gy)) {
    const char* what = grid == gy ? "conv2d_fwd1 relu" : short_label("conv2d_fwd1", grid);
    if (!emu::wanted(what)) continue;
    emu::Guarded<float> y(c.ref.y.size(), NAN, 0, "y");
    if (grid == gy)
      conv2d_fwd1(c.x.data(), c.w.data(), c.b.data(), y.data(), p, true, nullptr);
    else
      emu::launch("conv2d_fwd_kernel1 on a short grid", dim3(grid), dim3(256),
                  [&] { conv2d_fwd_kernel1<false>(c.x.data(), c.w.data(), nullptr, y.data(), p); });
    compare(what, p, y, grid == gy ? c.ref.y : c.y_no_bias, grid == gy);
  }
  const int gx = grid_for((int64_t)p.N * p.C * p.H * p.W, 256);
  for (int grid : emu::grids(gx)) {
    const char* what = grid == gx ? "conv2d_bwd_data1" : short_label("conv2d_bwd_data1", grid);
    if (!emu::wanted(what)) continue;
    emu::Guarded<float> dx(c.ref.dx.size(), NAN, 0, "dx");
    if (grid == gx)
      conv2d_bwd_data1(c.dy.data(), c.w.data(), dx.data(), p, nullptr);
    else
      emu::launch("conv2d_bwd_data_kernel1 on a short grid", dim3(grid), dim3(256),
                  [&] { conv2d_bwd_data_kernel1(c.dy.data(), c.w.data(), dx.data(), p); });
    compare(what, p, dx, c.ref.dx);
  }
  const int gw = grid_for((int64_t)c.ref.dw.size(), 256);
  for (int grid : emu::grids(gw)) {
    const char* what = grid == gw ? "conv2d_bwd_filter1" : short_label("conv2d_bwd_filter1", grid);
    if (!emu::wanted(what)) continue;
    emu::Guarded<float> dw(c.ref.dw.size(), NAN, 0, "dw");
    if (grid == gw)
      conv2d_bwd_filter1(c.x.data(), c.dy.data(), dw.data(), p, nullptr);
    else
      emu::launch("conv2d_bwd_filter_kernel1 on a short grid", dim3(grid), dim3(256),
                  [&] { conv2d_bwd_filter_kernel1(c.x.data(), c.dy.data(), dw.data(), p); });
    compare(what, p, dw, c.ref.dw);
  }
}

// Forward 13 (mma.sync, ldmatrix, cp.async; one 64x64 tile) in its three precisions:
// bias + ReLU, no bias, and x, w and y one float off 16-byte alignment (the filter's
// 4-byte copies; aligned, the launcher takes its 16-byte copies where C/groups*R*S % 4
// == 0). 3xTF32 at version 8's tolerance (1e-5 of the output's scale). Plain TF32 at
// 1e-2: each product of two TF32-rounded operands is within 2^-10 of its value, so an
// output is within 2^-10 * sum |x w| of the fp32 one, about 1e-3 of the largest output
// on these random inputs (worst case 8e-3 where C*R*S = 1260); a layout or pipeline
// bug is off by whole products. The end of the run checks that both filter copies of
// both precisions ran.
static void check_fwd13(const Case& c) {
  using namespace pycnn;
  const Conv2dParams& p = c.p;
  const int Kdim = p.C / p.groups * p.R * p.S;
  char label[128];
  for (bool x3 : {true, false})
    for (int run = 0; run < 3; ++run) {
      const bool relu = run != 1;
      const size_t off = run == 2 ? 1 : 0;
      std::snprintf(label, sizeof label, "conv2d_fwd13 %s%s%s", x3 ? "3xtf32" : "tf32", relu ? " relu" : " no bias",
                    off ? ", x w y misaligned" : "");
      if (!emu::wanted(label)) continue;
      const emu::Guarded<float> xm(c.x.vec(), off, "x"), wm(c.w.vec(), off, "w");
      emu::Guarded<float> y(c.ref.y.size(), NAN, off, "y");
      conv2d_fwd13(xm.data(), wm.data(), relu ? c.b.data() : nullptr, y.data(), p, relu, x3, nullptr);
      compare(label, p, y, relu ? c.ref.y : c.y_no_bias, relu, x3 ? 1e-5 : 1e-2);
      kernels_run.insert(std::string("conv2d_fwd13 ") + (x3 ? "3xtf32 " : "tf32 ") +
                         (Kdim % 4 == 0 && off == 0 ? "16-byte w" : "4-byte w"));
    }
  // BF16 (conv2d_fwd13_bf16, mma.m16n8k16): a product of two bf16-rounded operands is
  // within 2^-8 of its value, so an output is within 2^-8 * sum |x w| (about 3e-3 of the
  // largest output here); checked at 3e-2.
  for (int run = 0; run < 3; ++run) {
    const bool relu = run != 1;
    const size_t off = run == 2 ? 1 : 0;
    std::snprintf(label, sizeof label, "conv2d_fwd13_bf16%s%s", relu ? " relu" : " no bias",
                  off ? ", x w y misaligned" : "");
    if (!emu::wanted(label)) continue;
    const emu::Guarded<float> xm(c.x.vec(), off, "x"), wm(c.w.vec(), off, "w");
    emu::Guarded<float> y(c.ref.y.size(), NAN, off, "y");
    conv2d_fwd13_bf16(xm.data(), wm.data(), relu ? c.b.data() : nullptr, y.data(), p, relu, nullptr);
    compare(label, p, y, relu ? c.ref.y : c.y_no_bias, relu, 3e-2);
    kernels_run.insert(std::string("conv2d_fwd13 bf16 ") + (Kdim % 4 == 0 && off == 0 ? "16-byte w" : "4-byte w"));
  }
}

// Version 14 through its launcher with the workspace its size function asks for
// (unwritten, so that a read of a table entry the prep kernel missed is an initcheck
// finding), as pycnn/backends/cuda/conv.py allocates it.
static void bwd_data14_with_workspace(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                                      cudaStream_t stream) {
  emu::Guarded<float> ws(pycnn::conv2d_bwd_data14_workspace_bytes(p) / sizeof(float), NAN, 0, "workspace");
  pycnn::conv2d_bwd_data14(dy, w, dx, ws.data(), p, stream);
}

// Version 17 likewise (version 14's workspace).
static void bwd_data17_with_workspace(const float* dy, const float* w, float* dx, const Conv2dParams& p,
                                      cudaStream_t stream) {
  emu::Guarded<float> ws(pycnn::conv2d_bwd_data17_workspace_bytes(p) / sizeof(float), NAN, 0, "workspace");
  pycnn::conv2d_bwd_data17(dy, w, dx, ws.data(), p, stream);
}

static void run_case(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int dh,
                     int dw_, int pt, int pb, int pl, int pr, int groups, bool slow_too) {
  using namespace pycnn;
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
  const emu::Guarded<float> xg(x, 0, "x"), wg(w, 0, "w"), bg(b, 0, "b"), dyg(dy, 0, "dy");
  Case c{p, reference(p, x, w, b, dy), xg, wg, bg, dyg, {}};
  const int PQ = p.P * p.Q;
  c.y_no_bias = c.ref.y;
  for (size_t i = 0; i < c.y_no_bias.size(); ++i) c.y_no_bias[i] -= b[(i / PQ) % K];

  if (slow_too) check_direct(c);
  if (Cg == 1) check_depthwise(c);
  check_fwd12(c);

  if (emu::wanted("conv2d_bwd_bias5")) {  // one block per channel, warp shuffles emulated lane by lane
    std::vector<double> db_ref(K, 0.0);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        for (int i = 0; i < PQ; ++i) db_ref[k] += dy[((size_t)n * K + k) * PQ + i];
    emu::Guarded<float> db(K, NAN, 0, "db");
    conv2d_bwd_bias5(dyg.data(), db.data(), N, K, PQ, nullptr);
    compare("conv2d_bwd_bias5", p, db, db_ref);
  }

  // The tensor-core versions (8, 9, 10) at a 10x tighter tolerance: the emulated
  // tensor cores drop the inputs' low 13 mantissa bits as the GPU's do, so one TF32
  // product per term (no 3xTF32 split) is off by ~1e-4 of the output's scale and fails.
  check_fwd_igemm<Fwd2Large, Fwd2Small>("conv2d_fwd2", conv2d_fwd2, c, 1e-4, false);
  check_fwd_igemm<Fwd7Large, Fwd7Small>("conv2d_fwd7", conv2d_fwd7, c, 1e-4, true);
  check_fwd_igemm<Fwd8Large, Fwd8Small>("conv2d_fwd8", conv2d_fwd8, c, 1e-5, false);
  check_fwd13(c);
  const int64_t MX = (int64_t)N * H * W;
  check_bwd_data_igemm<BwdData3Large, BwdData3Small>("conv2d_bwd_data3", conv2d_bwd_data3, c, MX, groups, 1e-4);
  check_bwd_data_igemm<BwdData9Large, BwdData9Small>("conv2d_bwd_data9", conv2d_bwd_data9, c, MX, groups, 1e-5);
  const int64_t phase_rows = bwd_phase_max_rows(N, H, W, sh, sw);
  check_bwd_data_igemm<BwdData11Large, BwdData11Small>("conv2d_bwd_data11", conv2d_bwd_data11, c, phase_rows,
                                                       (int64_t)groups * sh * sw, 1e-4);
  check_bwd_data_igemm<BwdData14Large, BwdData14Small>("conv2d_bwd_data14", bwd_data14_with_workspace, c,
                                                       phase_rows, (int64_t)groups * sh * sw, 1e-4);
  check_bwd_data_igemm<BwdData17Large, BwdData17Small>("conv2d_bwd_data17", bwd_data17_with_workspace, c,
                                                       phase_rows, (int64_t)groups * sh * sw, 1e-4);
  check_bwd_filter_split_k<BwdFilter4Large, BwdFilter4Small>("conv2d_bwd_filter4", conv2d_bwd_filter4, c, 1e-4);
  check_bwd_filter_split_k<BwdFilter10Large, BwdFilter10Small>("conv2d_bwd_filter10", conv2d_bwd_filter10, c, 1e-5);
  check_bwd_filter_split_k<BwdFilter15Large, BwdFilter15Small>("conv2d_bwd_filter15", conv2d_bwd_filter15, c, 1e-4);
  check_bwd_filter_split_k<BwdFilter16Large, BwdFilter16Small>("conv2d_bwd_filter16", conv2d_bwd_filter16, c, 1e-4);
}

// The phase arithmetic of versions 11 and 14 (first pixel, taps, output offsets; 14's
// tap tables and phase runs; strides that share a factor with the dilation; padding
// past the filter) on 60 random small shapes, through the launcher on the H200 (the
// small tile: C/groups < 96), against the oracle's dx.
template <class Launcher>
static void sweep_bwd_data_phases(const char* name, Launcher launcher) {
  char label[96];
  std::snprintf(label, sizeof label, "%s random sweep", name);
  if (!emu::wanted(label)) return;
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
    const emu::Guarded<float> wg(w, 0, "w"), dyg(dy, 0, "dy");
    emu::Guarded<float> dx(ref.dx.size(), NAN, 0, "dx");
    launcher(dyg.data(), wg.data(), dx.data(), p, nullptr);
    double err = dx.intact() ? 0 : INFINITY;
    for (size_t i = 0; i < ref.dx.size(); ++i) {
      const double e = std::fabs(dx[i] - ref.dx[i]);
      err = std::isnan(e) ? INFINITY : std::max(err, e);
    }
    if (!(err <= 1e-4)) ok = false;
    if (!(err <= worst)) { worst = err; worst_case = done; }
    ++done;
  }
  emu::report(ok, "%s: 60 shapes, worst err %.2e (shape %d)", label, worst, worst_case);
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  sweep_bwd_data_phases("conv2d_bwd_data11", pycnn::conv2d_bwd_data11);
  sweep_bwd_data_phases("conv2d_bwd_data14", bwd_data14_with_workspace);
  sweep_bwd_data_phases("conv2d_bwd_data17", bwd_data17_with_workspace);
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
  run_case(2, 1, 17, 19, 3, 3, 2, 2, 3, 1, 1, 1, 0, 0, 1, 1, true);    // one input channel (depthwise, general
                                                                       // loops), 3x2, stride 2,3
  run_case(1, 2, 20, 18, 2, 7, 7, 1, 1, 1, 1, 3, 3, 3, 3, 2, false);   // depthwise 7x7, planes past 256
  run_case(2, 5, 11, 12, 7, 3, 3, 2, 4, 2, 2, 2, 1, 2, 0, 1, false);   // dilation sharing a factor with
                                                                       // the stride: phases with no tap
  run_case(2, 6, 9, 10, 130, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, false);  // 1x1 stride 2 (ResNet downsample)
  run_case(1, 12, 6, 5, 100, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, false);  // K, C*R*S >= 96: the large bwd_filter
                                                                       // tile (bwd_filter4_large); K past 64
  run_case(1, 192, 5, 7, 192, 3, 2, 2, 1, 1, 2, 1, 0, 1, 1, 2, false); // every pass 96 wide per group: the
                                                                       // large tiles on groups, stride, dilation
  if (emu::only == nullptr) {  // version 13: both precisions, both filter copies
    int ran13 = 0;
    for (const char* kind : {"3xtf32 16-byte w", "3xtf32 4-byte w", "tf32 16-byte w", "tf32 4-byte w",
                             "bf16 16-byte w", "bf16 4-byte w"})
      ran13 += kernels_run.count(std::string("conv2d_fwd13 ") + kind) > 0;
    emu::report(ran13 == 6, "conv2d_fwd13: the three precisions with the 16-byte and the 4-byte filter copies ran");
  }
  // Every kernel a launcher can choose ran: both tiles of the implicit-GEMM versions
  // (by their own rules, as the labels say), and version 6's three specialised
  // filter sizes and its general loops. A filtered run skips some on purpose.
  const char* two_tiles[] = {"conv2d_fwd2",      "conv2d_fwd7",      "conv2d_fwd8",        "conv2d_bwd_data3",
                             "conv2d_bwd_data9", "conv2d_bwd_data11", "conv2d_bwd_data14", "conv2d_bwd_data17", "conv2d_bwd_filter4",
                             "conv2d_bwd_filter10", "conv2d_bwd_filter15", "conv2d_bwd_filter16"};
  const char* depthwise[] = {"conv2d_fwd6", "conv2d_bwd_data6", "conv2d_bwd_filter6"};
  auto ran = [](const char* name, const char* kind) { return kernels_run.count(std::string(name) + " " + kind) > 0; };
  if (emu::only == nullptr) {
    for (const char* name : two_tiles)
      emu::report(ran(name, "64x64") && ran(name, "128x128"), "%s: both tiles ran (64x64 and 128x128)", name);
    for (const char* name : depthwise)
      emu::report(ran(name, "3x3") && ran(name, "5x5") && ran(name, "7x7") && ran(name, "general"),
                  "%s: the 3x3, 5x5, 7x7 and general kernels ran", name);
  }
  if (emu::only == nullptr)
    emu::report(ran("conv2d_fwd12", "64x64") && ran("conv2d_fwd12", "128x128") && ran("conv2d_fwd12", "float4 w") &&
                    ran("conv2d_fwd12", "scalar w") && ran("conv2d_fwd12", "split-K"),
                "conv2d_fwd12: both tiles, the float4 and the scalar filter loads and split-K ran");
  return emu::finish();
}
