// CUDA as plain C++, so that pycnn's real kernels and their real launchers run on
// the CPU under a sanitizer. Every kernels/emulate/emulate_*.cc includes this first,
// then the family's .cu files (PYCNN_KERNEL_EMULATION, defined below, makes the
// launchers' pycnn::launch() run the grid here instead of <<<...>>>). The harness
// is compiled with g++ -fsanitize=thread, whose instrumentation calls
// __tsan_read4(addr) & co. before every load and store; emu_runtime.cc (compiled
// without it) defines those callbacks and checks each access. emulate.py builds
// and runs it all; tests/test_kernel_emulation.py runs every family and the mutants.
//
// The machine it models (emu_runtime.cc has the details):
//   - a block's threads are fibers on one OS thread; a fiber runs until it reaches
//     a __syncthreads, a __syncwarp, a shuffle, a wmma call or a warp-wide PTX
//     instruction of emu_mma.h (mma.sync, ldmatrix), then the next runs.
//     The default schedule is hostile to missing barriers: the lowest-numbered
//     runnable thread always runs (blocks alternate between thread orders 0..n-1
//     and n-1..0); PYCNN_EMU_SEED=<n> picks threads at random instead, also
//     switching at random memory accesses, and shuffles the block order;
//   - blocks of a launch run one after another but count as concurrent: every
//     check treats two blocks as unordered;
//   - global memory is what the harness allocates (emu::Guarded, on an arena
//     whose allocations sit megabytes apart, so any stray address misses them all);
//   - shared memory is every __shared__ array (they live in one linker section).
// What each access is checked for:
//   memcheck   a global access outside every allocation, with its distance from the
//              nearest one; a fault outside the arena is reported, not crashed on;
//   alignment  an access of n bytes (4, 8, 16: float, float2, float4) at an address
//              that is not a multiple of n, as the GPU requires;
//   initcheck  a read of shared memory this block has not written, or of a global
//              output no launch (or host write) has written yet;
//   racecheck  two accesses to one address, at least one a write, by different
//              threads of a block with no __syncthreads between them (within a warp,
//              a __syncwarp or a shuffle also orders them), on shared and global
//              memory; and on global memory any such pair from two blocks of one
//              launch (compute-sanitizer has no such check); atomics are exempt
//              among themselves;
//   launch     block of 1..1024 threads, grid.y and z <= 65535, dynamic shared
//              memory over 48 KB only with cudaFuncAttributeMaxDynamicSharedMemorySize
//              set, and at most 227 KB;
//   cp.async   (emu_mma.h) a copy's destination accessed while it is in flight (before
//              the wait_group that covers it), source and destination alignment;
//   determinism  a launch that performed atomics is run again from the same inputs
//              with the blocks in reverse order; different bits mark the kernel
//              nondeterministic (listed at the end of the run).
// Stricter than a GPU where CUDA leaves things undefined: every thread of a block must
// reach the same __syncthreads (a thread that returned early is a deadlock report);
// full-mask shuffles and __syncwarp need all 32 lanes at the same call.
// Not modelled: speed, caches, float rounding of fused operations (the host compiler
// decides), registers and static shared-memory limits (ptxas reports those at build
// time), dynamic shared memory (no kernel uses extern __shared__), a 32-bit index
// that overflows only at real sizes (the launchers' check_int32_size guards those),
// and memory-model subtleties beyond the orders above (fences, volatile).
#pragma once

#include <cuda_runtime.h>  // dim3, uint3, float4, make_float4 for the host compiler

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
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
// One copy of each array serves every block (blocks run in turn). The runtime tells
// a shared-memory address by where it lies: in the program's static data (.bss), but
// not among the emulator's own variables (which the runtime keeps in a section of
// their own). So a harness must pass device data in emu::Guarded buffers, never in
// static arrays, or they count as shared memory.
#define __shared__ static
#define __launch_bounds__(...)

namespace emu {

// ---- the runtime (emu_runtime.cc)
extern uint3 thread_idx, block_idx, block_dim, grid_dim;
extern int current;  // linear id of the running thread in its block

[[noreturn]] void fail(const char* fmt, ...);
void sync_threads(int line);
void sync_warp(int line, unsigned mask);
// Every lane posts `bits`, waits for the warp, and gets its source lane's.
enum WarpSyncKind { kShflIdx = 1, kShflUp, kShflDown, kShflXor, kSyncWarp, kWmmaLoad, kWmmaStore,
                    kWmmaMma, kMmaSync, kLdmatrix };
uint64_t shuffle_bits(unsigned mask, uint64_t bits, int kind, int arg, int width);
// A warp-wide operation (wmma): all 32 lanes present, at the same operation.
void warp_arrive(long tag, const char* what);
// The running thread's count of `kind` operations so far (it selects an exchange buffer).
unsigned thread_counter(int kind);
// An access the compiler does not see (wmma fragments): checked like an instrumented one.
void check_access(const void* addr, size_t bytes, bool write);
// cp.async for emu_mma.h: issue a copy of cp_size bytes (src_size of them read, the rest
// zeros) into shared memory; it lands at the cp_async_wait(n) that covers its group.
bool is_shared_address(const void* p);
void cp_async(void* dst, const void* src, int cp_size, int src_size, const char* what);
void cp_async_commit();
void cp_async_wait(int n);

float atomic_add(float* addr, float v);
double atomic_add(double* addr, double v);
int atomic_add(int* addr, int v);
int atomic_exch(int* addr, int v);

using Thunk = void (*)(void*);
void launch_thunk(const char* name, dim3 grid, dim3 block, size_t smem, const void* fn, Thunk body,
                  void* ctx);

// Runs `body` (a callable running one thread of the kernel) over the grid. `fn`
// identifies the kernel for cudaFuncSetAttribute; `name` is for reports.
template <class F>
void launch(const char* name, dim3 grid, dim3 block, size_t smem, const void* fn, F&& body) {
  using B = std::remove_reference_t<F>;
  launch_thunk(name, grid, block, smem, fn, [](void* c) { (*static_cast<B*>(c))(); },
               const_cast<void*>(static_cast<const void*>(&body)));
}
// A harness launching a kernel body itself, on a grid of its choosing (a short grid
// for a grid-stride loop, a tiny kernel of a self-test).
template <class F>
void launch(const char* name, dim3 grid, dim3 block, F&& body) {
  launch(name, grid, block, 0, nullptr, std::forward<F>(body));
}

// The same, unnamed (the report says "a harness launch").
template <class F>
void launch(dim3 grid, dim3 block, F&& body) {
  launch("(a harness launch)", grid, block, 0, nullptr, std::forward<F>(body));
}
// Device memory: `bytes` at `offset` bytes past a 256-byte boundary, as cudaMalloc
// gives (offset > 0 to test a misaligned pointer); `initialized` false makes every
// read before a write an initcheck finding.
void* device_alloc(size_t bytes, const char* name, bool initialized, size_t offset = 0);
void device_free(void* p);
void set_initialized(const void* p, size_t bytes, bool initialized);

// The emulated GPU: launchers ask it (cudaDeviceGetAttribute) for the SM count,
// so a harness can shrink it to make a launcher choose its large tile or more splits.
struct Device {
  int sms = 132;  // H100 / H200 SXM
  int cc_major = 9, cc_minor = 0;
};
extern Device device;

// Findings so far (every check above); the harness's finish() fails on any.
int findings();

// Memory counters per launch (emu_runtime.cc's "counters" says what is counted),
// written to json_path by finish(); sample_blocks > 0 runs only that many blocks of
// a larger grid and scales the counts; checks false turns the sanitizer off (no
// shadow memory: real-sized layers). Before the first allocation. The environment
// does the same: PYCNN_EMU_COUNTERS=path, PYCNN_EMU_SAMPLE=k, PYCNN_EMU_CHECKS=0.
void enable_counters(const char* json_path, int sample_blocks, bool checks);

// ---- results
extern int failures, checks;
extern bool quiet;  // print failures only (for sweeps over many shapes)
// A filter from the command line: checks whose label lacks it are skipped (see wanted()).
extern const char* only;
inline bool wanted(const char* label) { return only == nullptr || std::strstr(label, only) != nullptr; }

// Prints one line for a check and counts failures.
void report(bool ok, const char* fmt, ...);
// Parses the harness's command line: --only SUBSTRING, --quiet.
void parse_args(int argc, char** argv);
// Prints the determinism table and the totals; returns main's exit status.
int finish();

// ---- buffers in device memory with poisoned guard zones
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

// n elements of device memory at a 256-byte boundary (plus `misalign` elements),
// as cudaMalloc gives. Made from values, it is an input (initialized); made from a
// size, an output whose elements hold `fill` (NaN by default, so an unwritten one
// fails a comparison) but count as unwritten for initcheck. fill() resets an output.
template <class T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;  // elements each side, poisoned
  explicit Guarded(size_t n, T fill = Poison<T>::value(), size_t misalign = 0, const char* name = "output")
      : n_(n), misalign_(misalign), name_(name) {
    allocate(false);
    this->fill(fill);
  }
  Guarded(const std::vector<T>& v, size_t misalign = 0, const char* name = "input")
      : n_(v.size()), misalign_(misalign), name_(name) {
    allocate(true);
    if (!v.empty()) std::memcpy(data(), v.data(), v.size() * sizeof(T));
  }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  ~Guarded() { device_free(data_); }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return n_; }
  std::vector<T> vec() const { return std::vector<T>(data_, data_ + n_); }
  // An output again: `v` everywhere, unwritten as far as initcheck knows.
  void fill(T v) {
    for (size_t i = 0; i < n_; ++i) data_[i] = v;
    set_initialized(data_, n_ * sizeof(T), false);
  }
  // An input again: `v` everywhere, written.
  void assign(T v) {
    for (size_t i = 0; i < n_; ++i) data_[i] = v;
    set_initialized(data_, n_ * sizeof(T), true);
  }
  // True if nothing in the kGuard elements either side was written (memcheck
  // reports any such write with its line; this is the value-level second look).
  bool intact() const {
    const T p = Poison<T>::value();
    for (size_t i = 1; i <= kGuard; ++i)
      if (std::memcmp(data_ - i, &p, sizeof(T)) != 0 || std::memcmp(data_ + n_ - 1 + i, &p, sizeof(T)) != 0)
        return false;
    return true;
  }

 private:
  void allocate(bool initialized) {
    // The allocation is [data, data + n); the guards lie outside it, in the arena's gap.
    data_ = static_cast<T*>(device_alloc(n_ * sizeof(T), name_, initialized, misalign_ * sizeof(T)));
    const T p = Poison<T>::value();
    for (size_t i = 1; i <= kGuard; ++i) data_[-(ptrdiff_t)i] = p, data_[n_ - 1 + i] = p;
  }
  size_t n_, misalign_;
  const char* name_;
  T* data_ = nullptr;
};

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

// __syncwarp(mask) at a source line (the macro below supplies the line; the mask is optional).
struct SyncWarp {
  int line;
  void operator()(unsigned mask = 0xffffffffu) const { sync_warp(line, mask); }
};

// The grids to run a grid-stride kernel on: its launcher's, and one and two
// blocks (fewer blocks than the data needs, so the loop strides).
inline std::vector<int> grids(int launcher_grid) {
  std::vector<int> g{launcher_grid};
  if (launcher_grid > 1) g.push_back(1);
  if (launcher_grid > 2) g.push_back(2);
  return g;
}

// Shrinks the emulated GPU for the scope of one object, so that a launcher sizes
// its grid (tile, splits) as for a GPU with `sms` SMs.
struct WithSms {
  int saved;
  explicit WithSms(int sms) : saved(device.sms) { device.sms = sms; }
  ~WithSms() { device.sms = saved; }
};

}  // namespace emu

// Vector types whose copies from and to memory are checked as one access of their
// full size (alignment!): g++ splits a float4 load into four float loads, which
// the instrumentation would see as four aligned 4-byte accesses.
namespace emu {
template <class T>
struct alignas(4 * sizeof(T)) Vec4 {
  T x, y, z, w;
  Vec4() = default;
  Vec4(T a, T b, T c, T d) : x(a), y(b), z(c), w(d) {}
  __attribute__((always_inline)) Vec4(const Vec4& o) {
    check_access(&o, sizeof o, false);
    x = o.x, y = o.y, z = o.z, w = o.w;
  }
  __attribute__((always_inline)) Vec4& operator=(const Vec4& o) {
    check_access(&o, sizeof o, false);  // the source may be device memory too: one wide load
    check_access(this, sizeof o, true);
    x = o.x, y = o.y, z = o.z, w = o.w;
    return *this;
  }
};
template <class T>
struct alignas(2 * sizeof(T)) Vec2 {
  T x, y;
  Vec2() = default;
  Vec2(T a, T b) : x(a), y(b) {}
  __attribute__((always_inline)) Vec2(const Vec2& o) {
    check_access(&o, sizeof o, false);
    x = o.x, y = o.y;
  }
  __attribute__((always_inline)) Vec2& operator=(const Vec2& o) {
    check_access(&o, sizeof o, false);  // the source may be device memory too: one wide load
    check_access(this, sizeof o, true);
    x = o.x, y = o.y;
    return *this;
  }
};
}  // namespace emu
#define float4 ::emu::Vec4<float>
#define int4 ::emu::Vec4<int>
#define float2 ::emu::Vec2<float>
#define int2 ::emu::Vec2<int>
#define make_float4(a, b, c, d) ::emu::Vec4<float>(a, b, c, d)
#define make_int4(a, b, c, d) ::emu::Vec4<int>(a, b, c, d)
#define make_float2(a, b) ::emu::Vec2<float>(a, b)
#define make_int2(a, b) ::emu::Vec2<int>(a, b)

#define threadIdx ::emu::thread_idx
#define blockIdx ::emu::block_idx
#define blockDim ::emu::block_dim
#define gridDim ::emu::grid_dim
#define __syncthreads() ::emu::sync_threads(__LINE__)
#define __syncwarp(...) ::emu::SyncWarp{__LINE__}(__VA_ARGS__)

template <class T>
inline T emu_shuffle(unsigned mask, T v, int kind, int arg, int width) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a 4- or 8-byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  bits = emu::shuffle_bits(mask, bits, kind, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return emu_shuffle(mask, v, emu::kShflIdx, src, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu_shuffle(mask, v, emu::kShflUp, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu_shuffle(mask, v, emu::kShflDown, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu_shuffle(mask, v, emu::kShflXor, lane_mask, width);
}

// Atomics: performed by the runtime, which checks them as atomics (exempt from the
// race check among themselves) and counts them for the determinism check.
inline float atomicAdd(float* addr, float v) { return emu::atomic_add(addr, v); }
inline double atomicAdd(double* addr, double v) { return emu::atomic_add(addr, v); }
inline int atomicAdd(int* addr, int v) { return emu::atomic_add(addr, v); }
inline int atomicExch(int* addr, int v) { return emu::atomic_exch(addr, v); }
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
