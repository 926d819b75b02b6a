// Runs the dropout kernels (kernels/dropout/01_dropout.cu) on the CPU through
// emu.h and compares them with the definition in pycnn/backends/__init__.py:
// element i is kept iff hash32(uint32(i) ^ hash32(uint32(seed) ^ 0x9E3779B9)) / 2^32 >= p,
// hash32 the lowbias32 hash, written out again here and compared in double (the
// kernel compares integers against a threshold its launcher derives from p).
// y = x * mask / float(1 - p) and dx = dy * mask / float(1 - p) bit for bit,
// all zeros for p == 1; a dropped inf gives NaN. p includes 0, 1, and values
// exactly at and just above one element's hash (the edge of the threshold).
// Each case runs the real launchers (dropout_fwd1 / dropout_bwd1, which derive the
// key and threshold from p and seed and pick the grid), then the kernels on grids
// of one and two blocks, so the grid-stride loops wrap.
//
// Build and run: python kernels/emulate/emulate.py dropout [--only NAME]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "emulate/emu.h"  // CUDA as C++; defines PYCNN_KERNEL_EMULATION
#include "dropout/01_dropout.cu"

using pycnn::kDropoutBlock;

// The documented hash, all arithmetic mod 2^32.
static uint32_t hash32(uint32_t h) {
  h ^= h >> 16;
  h = static_cast<uint32_t>(h * 0x7FEB352Dull);
  h ^= h >> 15;
  h = static_cast<uint32_t>(h * 0x846CA68Bull);
  h ^= h >> 16;
  return h;
}
static uint8_t keep(int64_t i, double p, uint32_t seed) {
  const uint32_t key = hash32(seed ^ 0x9E3779B9u);
  const double u = hash32(static_cast<uint32_t>(i) ^ key) / 4294967296.0;
  return u >= p ? 1 : 0;
}

static bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

static std::mt19937 rng(3);

static void check(int n, double p, uint32_t seed) {
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<float> x(n), dy(n);
  for (auto& e : x) e = u(rng);
  for (auto& e : dy) e = u(rng);
  if (n > 10) x[3] = INFINITY, x[5] = -INFINITY, x[8] = NAN;
  std::vector<uint8_t> mask(n);
  std::vector<float> y_ref(n), dx_ref(n);
  const float one_minus_p = static_cast<float>(1.0 - p);
  const bool drop_all = p == 1.0;
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    mask[i] = keep(i, p, seed);
    kept += mask[i];
    y_ref[i] = p == 1.0 ? 0.f : x[i] * static_cast<float>(mask[i]) / one_minus_p;
    dx_ref[i] = p == 1.0 ? 0.f : dy[i] * static_cast<float>(mask[i]) / one_minus_p;
  }
  const emu::Guarded<float> xg(x, 0, "x"), dyg(dy, 0, "dy");
  const emu::Guarded<uint8_t> mg(mask, 0, "mask");
  // grid 0: the launchers dropout_fwd1 / dropout_bwd1 (key, threshold, 1 - p and p == 1
  // are theirs); grids 1 and 2: the kernels on fewer blocks, so the grid-stride loops wrap
  // (with the launcher's arguments, derived here as the launcher documents them).
  const uint32_t key = pycnn::lowbias32(seed ^ 0x9E3779B9u);
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 4294967296.0));
  for (int grid : {0, 1, 2}) {
    emu::Guarded<float> y(n, NAN, 0, "y"), dx(n, NAN, 0, "dx");
    emu::Guarded<uint8_t> m(n, 0xAB, 0, "m");
    if (grid == 0) {
      pycnn::dropout_fwd1(xg.data(), y.data(), m.data(), n, p, seed, nullptr);
      pycnn::dropout_bwd1(dyg.data(), mg.data(), dx.data(), n, p, nullptr);
    } else {
      emu::launch("dropout_fwd_kernel1 on a short grid", dim3(grid), dim3(kDropoutBlock), [&] {
        pycnn::dropout_fwd_kernel1(xg.data(), y.data(), m.data(), n, key, threshold, one_minus_p, drop_all);
      });
      emu::launch("dropout_bwd_kernel1 on a short grid", dim3(grid), dim3(kDropoutBlock), [&] {
        pycnn::dropout_bwd_kernel1(dyg.data(), mg.data(), dx.data(), n, one_minus_p, drop_all);
      });
    }
    int bad_mask = 0, bad_y = 0, bad_dx = 0;
    for (int i = 0; i < n; ++i) {
      bad_mask += m[i] != mask[i];
      bad_y += !same_float(y[i], y_ref[i]);
      bad_dx += !same_float(dx[i], dx_ref[i]);
    }
    emu::report(bad_mask + bad_y + bad_dx == 0 && y.intact() && m.intact() && dx.intact(),
                "dropout n %5d p %.10f seed %10u %-8s: kept %5d, wrong mask %d y %d dx %d", n, p, seed,
                grid == 0 ? "launcher" : grid == 1 ? "grid 1" : "grid 2", kept,
                bad_mask, bad_y, bad_dx);
  }
}

int main(int argc, char** argv) {
  emu::parse_args(argc, argv);
  for (uint32_t seed : {0u, 12345u, 0xFFFFFFFFu})
    for (double p : {0.0, 0.1, 0.5, 0.999, 1.0}) check(1001, p, seed);
  check(1, 0.5, 7);
  check(5000, 0.3, 42);  // 20 blocks of the launcher's grid; 1 and 2 blocks stride over it
  // p exactly at element 7's hash value (kept: u >= p), and half a step above it (dropped)
  const uint32_t h7 = hash32(7u ^ hash32(99u ^ 0x9E3779B9u));
  check(1001, h7 / 4294967296.0, 99);
  check(1001, (h7 + 0.5) / 4294967296.0, 99);
  if (keep(7, h7 / 4294967296.0, 99) != 1 || keep(7, (h7 + 0.5) / 4294967296.0, 99) != 0)
    emu::report(false, "threshold edge cases do not sit on element 7");
  return emu::finish();
}
