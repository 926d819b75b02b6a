// CUDA as plain C++, so that the real kernel bodies of pycnn (included from
// their .cu files with PYCNN_KERNEL_EMULATION defined, which hides the
// launchers) run on the CPU and can be compared with plain loops. Used by every
// kernels/emulate/emulate_*.cc; a test (tests/test_kernel_emulation.py) builds
// and runs them with g++, so CI checks the index math, bounds guards, barrier
// placement and warp-shuffle logic of every kernel without a GPU (and, with
// emu_wmma.h, the warp-wide tensor-core calls of conv2d version 8).
//
// Model: blocks run one after another; the threads of a block are fibers
// (ucontext) on one OS thread. A fiber runs until it reaches a __syncthreads or
// a warp shuffle, then the next fiber runs; a barrier opens when every thread of
// the block (or lane of the warp) has arrived. Why fibers and not one
// std::thread per CUDA thread: creating 256 OS threads per block and waking them
// through a condition variable took ~50 s (nearly all system time) for the conv
// checks on two cores; with fibers they take ~2 s.
// The schedule is deliberately hostile to missing barriers: the lowest-numbered
// thread that can run always runs, so each thread (and warp 0 as a whole) gets
// as far ahead as it can before the next one moves, and a read of shared
// memory that another thread has not written yet (or has already overwritten
// for the next step) gives a wrong result, not a lucky right one. Blocks alternate
// between running their threads in order 0..n-1 and in reverse (and so does a
// one-block grid from one launch to the next), so both directions are tried.
// It is stricter than a GPU where CUDA leaves things undefined:
//   - __syncthreads must be reached by every thread of the block at the same
//     source line; a thread that returned early, or threads waiting at
//     different __syncthreads, are reported as a deadlock / divergence (exit 1);
//   - a full-mask shuffle needs all 32 lanes present, calling the same shuffle
//     with the same offset.
// Not modelled: speed, memory coalescing, the contents of shared memory at block
// start (it keeps the previous block's values), races between blocks (blocks
// never overlap), float rounding of fused operations (the host compiler decides).
// Outputs should live in emu::Guarded buffers: poisoned guard zones on both
// sides turn an out-of-bounds write into a reported failure and an
// out-of-bounds read into a value (777.777) that the comparison catches.
#pragma once

#include <cuda_runtime.h>  // dim3, uint3, float4, make_float4 for the host compiler
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

// Device code calls these unqualified, as CUDA declares them globally.
using std::isfinite;
using std::isinf;
using std::isnan;

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one block at a time, so one copy serves every block
#define __launch_bounds__(...)

namespace emu {

inline uint3 thread_idx, block_idx, block_dim, grid_dim;

[[noreturn]] inline void fail(const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "EMULATION ERROR (block %u,%u,%u thread %u,%u,%u): ", block_idx.x,
               block_idx.y, block_idx.z, thread_idx.x, thread_idx.y, thread_idx.z);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
  std::exit(1);
}

// ---- fibers and barriers
struct Fiber {
  ucontext_t ctx;
  enum State { kRunnable, kWaiting, kDone } state = kDone;
  int wait_on = 0;     // sync point index: 0 the block, 1 + w warp w
  long wait_gen = 0;   // generation of that sync point when this fiber arrived
  unsigned shuffles = 0;  // selects the exchange buffer (double buffering)
  unsigned mmas = 0;      // the same for the emulated tensor-core products (emu_wmma.h)
};
struct SyncPoint {
  int size = 0, arrived = 0;
  long gen = 0;
  long tag = 0;  // what the first arrival waits at: a source line, or a shuffle kind and offset
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;  // PROT_NONE below each stack: an overflow faults
inline std::vector<Fiber> fibers;
inline std::vector<char*> stacks;
inline std::vector<SyncPoint> syncs;
inline uint64_t exchange[2][1024];  // shuffle values by linear thread id, two generations
inline ucontext_t scheduler;
inline int current = 0;  // linear id of the running fiber
inline long opened = 0;  // barriers opened so far (the scheduler rescans when it grows)
inline const std::function<void()>* kernel_fn = nullptr;

inline void fiber_main() {
  (*kernel_fn)();
  fibers[current].state = Fiber::kDone;
}  // returns to uc_link: the scheduler

inline void set_thread_idx(int t) {
  current = t;
  thread_idx = uint3{t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y)};
}

// The running fiber arrives at sync point `id`; the last to arrive opens it and
// carries on, the others switch back to the scheduler until it opens.
// What a sync point's tag means, for messages. A warp's tags are kind * 1000000
// plus a detail: the shuffle's offset, or the source line of a __syncwarp.
enum WarpSyncKind { kShflIdx = 1, kShflUp, kShflDown, kShflXor, kSyncWarp, kWmmaLoad, kWmmaStore,
                    kWmmaMma };
inline const char* describe(int id, long tag) {
  static char buf[64];
  static const char* const kinds[] = {"?", "an idx shuffle, offset", "an up shuffle, offset",
                                      "a down shuffle, offset", "an xor shuffle, offset",
                                      "__syncwarp at line", "wmma::load_matrix_sync",
                                      "wmma::store_matrix_sync", "wmma::mma_sync"};
  const long kind = tag / 1000000;
  if (id == 0)
    std::snprintf(buf, sizeof buf, "__syncthreads at line %ld", tag);
  else if (kind >= kWmmaLoad && kind <= kWmmaMma)
    std::snprintf(buf, sizeof buf, "%s", kinds[kind]);
  else
    std::snprintf(buf, sizeof buf, "%s %ld", kinds[kind >= 1 && kind <= kSyncWarp ? kind : 0],
                  tag % 1000000);
  return buf;
}

inline void arrive(int id, long tag, const char* what) {
  SyncPoint& s = syncs[id];
  if (s.arrived == 0) {
    s.tag = tag;
  } else if (s.tag != tag) {
    char mine[64];
    std::snprintf(mine, sizeof mine, "%s", describe(id, tag));
    fail("%s: divergent: this thread is at %s while %d other(s) of its %s wait at %s", what, mine, s.arrived,
         id == 0 ? "block" : "warp", describe(id, s.tag));
  }
  if (++s.arrived == s.size) {
    s.arrived = 0;
    ++s.gen;
    ++opened;
    return;
  }
  Fiber& f = fibers[current];
  f.state = Fiber::kWaiting;
  f.wait_on = id;
  f.wait_gen = s.gen;
  swapcontext(&f.ctx, &scheduler);
}

inline void run_block(int threads, bool reverse) {
  for (int t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks[t];
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &scheduler;
    makecontext(&f.ctx, fiber_main, 0);
    f.state = Fiber::kRunnable;
    f.shuffles = 0;
    f.mmas = 0;
  }
  for (auto& s : syncs) s.arrived = 0;
  // Lowest first: always resume the first runnable fiber in scan order. Fibers
  // before `pos` are all blocked until some barrier opens, so the scan only
  // restarts from 0 when one did.
  int alive = threads, pos = 0;
  while (alive > 0) {
    int t = -1;
    for (; pos < threads; ++pos) {
      const int u = reverse ? threads - 1 - pos : pos;
      Fiber& f = fibers[u];
      if (f.state == Fiber::kDone) continue;
      if (f.state == Fiber::kWaiting) {
        if (syncs[f.wait_on].gen == f.wait_gen) continue;
        f.state = Fiber::kRunnable;
      }
      t = u;
      break;
    }
    if (t < 0) {  // every fiber is blocked and no barrier can open
      for (int u = 0; u < threads; ++u) {
        if (fibers[u].state != Fiber::kWaiting) continue;
        set_thread_idx(u);
        const SyncPoint& s = syncs[fibers[u].wait_on];
        fail("deadlock: waits at %s with %d of %d arrived; %d of %d threads have returned",
             describe(fibers[u].wait_on, s.tag), s.arrived, s.size, threads - alive, threads);
      }
    }
    const long opened_before = opened;
    set_thread_idx(t);
    swapcontext(&scheduler, &fibers[t].ctx);
    if (fibers[t].state == Fiber::kDone) --alive;
    if (opened != opened_before) pos = 0;
  }
}

// Runs `kernel` (a lambda calling the __global__ function) over the grid.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads < 1 || threads > 1024) fail("launch: block of %d threads (1..1024 allowed)", threads);
  if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535)
    fail("launch: invalid grid %u x %u x %u", grid.x, grid.y, grid.z);
  while (static_cast<int>(stacks.size()) < threads) {
    char* p = static_cast<char*>(mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) fail("launch: cannot map a fiber stack");
    mprotect(p, kGuardBytes, PROT_NONE);
    stacks.push_back(p + kGuardBytes);
  }
  fibers.resize(threads);
  const int warps = (threads + 31) / 32;
  syncs.assign(1 + warps, SyncPoint{});
  syncs[0].size = threads;
  for (int w = 0; w < warps; ++w) syncs[1 + w].size = std::min(32, threads - 32 * w);
  grid_dim = uint3{grid.x, grid.y, grid.z};
  block_dim = uint3{block.x, block.y, block.z};
  kernel_fn = &kernel;
  static long launches = 0;
  long linear = launches++;  // parity of the first block alternates between launches
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx, ++linear) {
        block_idx = uint3{bx, by, bz};
        run_block(threads, linear % 2 == 1);
      }
  kernel_fn = nullptr;
}

// ---- warp shuffles: every lane writes its value, waits for the whole warp,
// reads its source lane's. Two buffers by generation, so a lane that runs on to
// its next shuffle cannot overwrite a value that a slower lane has yet to read.
using ShuffleKind = WarpSyncKind;

// A warp-wide operation: it needs all 32 lanes present (a full warp) and arriving at
// the same operation (`tag`); the lane waits here until they have.
inline void warp_arrive(long tag, const char* what) {
  const int t = current;
  if (syncs[1 + t / 32].size != 32)
    fail("%s in a warp of %d threads (block of %d)", what, syncs[1 + t / 32].size,
         static_cast<int>(block_dim.x * block_dim.y * block_dim.z));
  arrive(1 + t / 32, tag, what);
}

// __syncwarp(mask) at a source line (the macro below supplies the line; the mask is optional).
struct SyncWarp {
  int line;
  void operator()(unsigned mask = 0xffffffffu) const {
    if (mask != 0xffffffffu) fail("__syncwarp with mask %#x: only the full warp is emulated", mask);
    warp_arrive(1000000L * kSyncWarp + line, "__syncwarp");
  }
};

template <class T>
T shuffle(unsigned mask, T v, ShuffleKind kind, int arg, int width) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a 4- or 8-byte value");
  const int t = current, lane = t % 32, base = t - lane;
  if (mask != 0xffffffffu) fail("shuffle with mask %#x: only full-warp shuffles are emulated", mask);
  if (width != 32) fail("shuffle width %d: only 32 is emulated", width);
  int src = lane;
  switch (kind) {
    case kShflIdx: src = ((arg % 32) + 32) % 32; break;
    case kShflUp: src = lane - arg >= 0 ? lane - arg : lane; break;
    case kShflDown: src = lane + arg < 32 ? lane + arg : lane; break;
    case kShflXor: src = lane ^ (arg & 31); break;
    default: fail("shuffle: %ld is not a shuffle kind", static_cast<long>(kind));
  }
  const unsigned gen = fibers[t].shuffles++ & 1u;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  exchange[gen][t] = bits;
  // the tag: kind and offset must agree across the warp (idx: any source lane)
  warp_arrive(1000000L * kind + (kind == kShflIdx ? 0 : arg), "full-mask shuffle");
  T out;
  bits = exchange[gen][base + src];
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline void sync_threads(int line) { arrive(0, line, "__syncthreads"); }

// ---- buffers with poisoned guard zones
template <class T>
struct Poison {
  static T value() {
    T v;
    std::memset(&v, 0xA5, sizeof v);
    return v;
  }
};
// Not NaN: a NaN absorbs an atomicAdd without changing its bits, so an
// out-of-bounds += would go unseen. 777.777 changes under any addition of a
// value above ~3e-5, and read by mistake it is far off every expected result.
template <>
struct Poison<float> {
  static float value() { return 777.777f; }
};

template <class T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;  // elements each side
  explicit Guarded(size_t n, T fill = Poison<T>::value(), size_t misalign = 0)
      : n_(n), off_(kGuard + misalign), buf_(n + 2 * kGuard + misalign + 4) {
    for (auto& e : buf_) e = Poison<T>::value();
    for (size_t i = 0; i < n; ++i) buf_[off_ + i] = fill;
  }
  Guarded(const std::vector<T>& v, size_t misalign = 0) : Guarded(v.size(), T{}, misalign) {
    for (size_t i = 0; i < v.size(); ++i) buf_[off_ + i] = v[i];
  }
  T* data() { return buf_.data() + off_; }
  const T* data() const { return buf_.data() + off_; }
  T& operator[](size_t i) { return buf_[off_ + i]; }
  const T& operator[](size_t i) const { return buf_[off_ + i]; }
  size_t size() const { return n_; }
  std::vector<T> vec() const { return std::vector<T>(data(), data() + n_); }
  void fill(T v) {
    for (size_t i = 0; i < n_; ++i) buf_[off_ + i] = v;
  }
  // True if nothing outside [0, n) was written.
  bool intact() const {
    const T p = Poison<T>::value();
    for (size_t i = 0; i < buf_.size(); ++i) {
      if (i >= off_ && i < off_ + n_) continue;
      if (std::memcmp(&buf_[i], &p, sizeof(T)) != 0) return false;
    }
    return true;
  }

 private:
  size_t n_, off_;
  std::vector<T> buf_;
};

// ---- results
inline int failures = 0;
inline int checks = 0;
inline bool quiet = false;  // print failures only (for sweeps over many shapes)

// Prints one line for a check and counts failures.
inline void report(bool ok, const char* fmt, ...) {
  ++checks;
  if (!ok) ++failures;
  if (ok && quiet) return;
  va_list args;
  va_start(args, fmt);
  std::vprintf(fmt, args);
  va_end(args);
  std::printf(" %s\n", ok ? "ok" : "MISMATCH");
}

// max |got - want| / max(1, |want|) over all elements; NaN in either side where
// the other has none counts as infinite error. NaN == NaN is equal.
template <class G, class W>
double max_rel_err(const G& got, const W& want, size_t n) {
  double err = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(g) || std::isnan(w)) {
      if (std::isnan(g) != std::isnan(w)) return INFINITY;
      continue;
    }
    if (std::isinf(g) || std::isinf(w)) {
      if (g != w) return INFINITY;
      continue;
    }
    err = std::max(err, std::fabs(g - w) / std::max(1.0, std::fabs(w)));
  }
  return err;
}

// The grids to run a grid-stride kernel on: its launcher's, and one and two
// blocks (fewer blocks than the data needs, so the loop strides).
inline std::vector<int> grids(int launcher_grid) {
  std::vector<int> g{launcher_grid};
  if (launcher_grid > 1) g.push_back(1);
  if (launcher_grid > 2) g.push_back(2);
  return g;
}

inline int finish() {
  if (failures)
    std::printf("%d of %d checks FAILED\n", failures, checks);
  else
    std::printf("all ok (%d checks)\n", checks);
  return failures ? 1 : 0;
}

}  // namespace emu

#define threadIdx ::emu::thread_idx
#define blockIdx ::emu::block_idx
#define blockDim ::emu::block_dim
#define gridDim ::emu::grid_dim
#define __syncthreads() ::emu::sync_threads(__LINE__)
#define __syncwarp(...) ::emu::SyncWarp{__LINE__}(__VA_ARGS__)

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return emu::shuffle(mask, v, emu::kShflIdx, src, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, emu::kShflUp, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, emu::kShflDown, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu::shuffle(mask, v, emu::kShflXor, lane_mask, width);
}

// Atomics: fibers of a block share one OS thread and blocks run in turn, so a
// plain read-modify-write is atomic here.
inline float atomicAdd(float* addr, float v) {
  const float old = *addr;
  *addr = old + v;
  return old;
}
inline double atomicAdd(double* addr, double v) {
  const double old = *addr;
  *addr = old + v;
  return old;
}
inline int atomicAdd(int* addr, int v) {
  const int old = *addr;
  *addr = old + v;
  return old;
}
inline int atomicExch(int* addr, int v) {
  const int old = *addr;
  *addr = v;
  return old;
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// The integer/float min and max that CUDA device code has in the global namespace.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

#define PYCNN_KERNEL_EMULATION
