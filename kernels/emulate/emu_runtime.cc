// The emulator's runtime: fibers and barriers, the sanitizer behind emu.h's checks,
// and the part of the CUDA runtime API that launchers call. Compiled WITHOUT
// -fsanitize=thread (it receives the instrumentation's callbacks and must not
// call itself); the harness and the kernels are compiled with it. See emu.h for
// what is modelled and checked; this file says how.
//
// Fibers: a block's threads are fibers with their own stacks (256 KB, a PROT_NONE
// page below each), switched by a dozen instructions of assembly on x86-64 (ucontext
// elsewhere: its swapcontext makes a sigprocmask system call per switch, which cost
// most of the run time). A fiber runs until it waits at a sync point: the block's
// barrier (id 0) or its warp's (1 + w).
//
// Ordering, for the race check: each block counts the barriers that opened, each
// warp the warp syncs (__syncwarp, shuffles) that opened. An access remembers the
// thread, block, launch and both counts; a later access by another thread is
// ordered after it only if a barrier opened in between (or, in one warp, a warp
// sync), and an access by another block of the same launch never is. Per address
// the shadow keeps the last write and a summary of the reads since it (one reader,
// or "several", with the newest counts), which is enough to find a conflicting
// pair whatever the order the schedule ran them in.
#include <cuda_runtime.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <exception>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#define PYCNN_EMU_RUNTIME
#include "emulate/emu.h"

// The program's static data, where the __shared__ arrays live (emu.h), and the
// section of the emulator's own variables that kernels read (threadIdx & co.),
// which is not shared memory. The linker defines these symbols.
extern "C" char __bss_start[], _end[];
extern "C" char __start_emu_state[] __attribute__((weak));
extern "C" char __stop_emu_state[] __attribute__((weak));
#define EMU_STATE __attribute__((section("emu_state")))

namespace emu {

EMU_STATE uint3 thread_idx, block_idx, block_dim, grid_dim;
EMU_STATE int current = 0;
EMU_STATE Device device;
EMU_STATE float mma_exchange[2][1024][8];
int failures = 0, checks = 0;
bool quiet = false;
const char* only = nullptr;

namespace {

// ---------------------------------------------------------------- state of the launch
const char* kernel_name = "(no kernel)";
bool in_launch = false;
uint32_t launch_id = 0;  // one per run of a grid (a determinism rerun is a second one)
uint32_t block_run = 0;  // one per block run, for shared memory
int32_t block_linear = 0;
int threads_in_block = 0;
uint32_t barriers = 0;       // barriers opened in this block run
uint32_t warp_syncs[32];     // warp syncs opened, per warp of this block run
long atomics_in_launch = 0;
long float_adds_in_launch = 0;  // atomicAdd on float or double: the sum depends on the order

// The schedule: lowest-first (forward or reverse thread order), or seeded random.
bool seeded = false;
uint64_t seed = 0;
std::mt19937_64 rng;
bool reverse_blocks = false;

// ---------------------------------------------------------------- findings
std::string symbolize(uintptr_t pc);

struct Finding {
  std::string key;
  long count = 0;
};
std::map<std::string, long> finding_counts;
int finding_total = 0;
constexpr int kMaxPrinted = 40;

std::string coords() {
  char buf[96];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u) in block (%u,%u,%u)", thread_idx.x, thread_idx.y,
                thread_idx.z, block_idx.x, block_idx.y, block_idx.z);
  return buf;
}

std::string block_coords(int b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u)", b % grid_dim.x, b / grid_dim.x % grid_dim.y,
                b / (grid_dim.x * grid_dim.y));
  return buf;
}

std::string thread_coords(int t) {
  const unsigned bx = block_dim.x, by = block_dim.y;
  char buf[48];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t % bx, t / bx % by, t / (bx * by));
  return buf;
}

// One line a person can act on. Findings with the same check, kernel and code
// location(s) are reported once, with a count at the end.
void finding(const char* check, uintptr_t pc, uintptr_t other_pc, const std::string& what) {
  char key[160];
  std::snprintf(key, sizeof key, "%s %s %" PRIxPTR " %" PRIxPTR, check, kernel_name, pc, other_pc);
  long& count = finding_counts[key];
  ++finding_total;
  if (count++ > 0) return;
  if (finding_counts.size() > kMaxPrinted) {
    if (finding_counts.size() == kMaxPrinted + 1)
      std::fprintf(stderr, "SANITIZER: more findings; only the first %d are printed\n", kMaxPrinted);
    return;
  }
  std::fflush(stdout);
  std::fprintf(stderr, "SANITIZER %s: %s at %s by %s: %s\n", check, kernel_name,
               pc ? symbolize(pc).c_str() : "(launch)", in_launch ? coords().c_str() : "the host",
               what.c_str());
  if (seeded) std::fprintf(stderr, "  (schedule seed %" PRIu64 ": PYCNN_EMU_SEED=%" PRIu64 " replays it)\n", seed, seed);
}

// file:line (function) of a code address, from addr2line on this executable (built -no-pie).
std::string symbolize(uintptr_t pc) {
  static std::map<uintptr_t, std::string> cache;
  auto it = cache.find(pc);
  if (it != cache.end()) return it->second;
  char cmd[256];
  std::snprintf(cmd, sizeof cmd, "addr2line -f -C -i -e /proc/%d/exe 0x%" PRIxPTR " 2>/dev/null",
                (int)getpid(), pc - 1);
  std::string where;
  std::vector<std::string> lines;
  if (FILE* f = popen(cmd, "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
      std::string s(line);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      lines.push_back(s);
    }
    pclose(f);
  }
  // pairs of (function, file:line), innermost first. Name the innermost frame that is
  // not the emulator's own (a float4 copy in emu.h is the kernel's load), and, when
  // that is a helper inlined into the kernel, the kernel's line too.
  auto base = [](const std::string& fl) {
    std::string s = fl.substr(fl.find_last_of('/') + 1);
    const size_t d = s.find(" (discriminator");
    return d == std::string::npos ? s : s.substr(0, d);
  };
  auto emulator_frame = [&](const std::string& fl) {
    const std::string b = base(fl);
    return b.rfind("emu.h:", 0) == 0 || b.rfind("emu_wmma.h:", 0) == 0 || b.rfind("emu_runtime.cc:", 0) == 0 ||
           fl.find("/c++/") != std::string::npos;
  };
  size_t first = lines.size();
  for (size_t i = 1; i < lines.size(); i += 2)
    if (!emulator_frame(lines[i])) {
      first = i;
      break;
    }
  if (first < lines.size()) {
    where = base(lines[first]);
    const std::string& outer = lines[lines.size() - 1];
    if (lines.size() - 1 > first && !emulator_frame(outer) && base(outer) != where) where += " (inlined into " + base(outer) + ")";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "pc 0x%" PRIxPTR, pc);
    where = lines.size() >= 2 ? base(lines[1]) : buf;
  }
  cache[pc] = where;
  return where;
}

// ---------------------------------------------------------------- device memory
// One arena of reserved address space; allocation i sits in the middle of slot i,
// so an address megabytes off any allocation still falls in the arena and is
// reported with the nearest one, never lands silently in another.
constexpr size_t kSlot = size_t(1) << 24;  // 16 MB a slot, the data at +8 MB
constexpr size_t kSlots = 4096;
char* arena = nullptr;

struct Cell {  // the shadow of one byte (global) or one 4-byte word (shared)
  uint32_t w_epoch = 0, r_epoch = 0;  // launch (global) or block run (shared) of the last write / reads
  int32_t w_block = -1, r_block = -1;
  int16_t w_thread = -1, r_thread = -1, r_warp = -1;
  uint8_t init = 0, w_atomic = 0;
  uint32_t w_bar = 0, r_bar = 0, w_ws = 0, r_ws = 0;
  uintptr_t w_pc = 0, r_pc = 0;
};
constexpr int16_t kSeveral = -2;
constexpr int32_t kSeveralBlocks = -2;

struct Allocation {
  char* data = nullptr;
  size_t bytes = 0;
  std::string name;
  bool live = false;
  std::vector<Cell> shadow;
};
std::vector<Allocation> allocations(kSlots);
size_t next_slot = 0;

void init_arena() {
  if (arena) return;
  void* p = mmap(nullptr, kSlot * kSlots, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) fail("cannot reserve the %zu GB device arena", kSlot * kSlots >> 30);
  arena = static_cast<char*>(p);
}

std::vector<Cell> shared_shadow;
char* shared_lo = nullptr;
size_t shared_bytes = 0;

void init_shared() {
  if (shared_lo) return;
  shared_lo = __bss_start;
  shared_bytes = _end - __bss_start;
  shared_shadow.assign(shared_bytes / 4 + 1, Cell{});
}
inline bool is_emulator_state(uintptr_t a) {
  return a - (uintptr_t)__start_emu_state < (uintptr_t)(__stop_emu_state - __start_emu_state);
}

std::string describe_bytes(size_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

// The shared array an address belongs to, from the symbol table (nm), for messages.
std::string shared_symbol(uintptr_t addr) {
  static std::vector<std::pair<uintptr_t, std::string>> syms;
  static bool loaded = false;
  if (!loaded) {
    loaded = true;
    char cmd[128];
    std::snprintf(cmd, sizeof cmd, "nm -C -S --defined-only /proc/%d/exe 2>/dev/null", (int)getpid());
    if (FILE* f = popen(cmd, "r")) {
      char line[4096];
      while (std::fgets(line, sizeof line, f)) {
        uintptr_t a = 0, size = 0;
        char type = 0;
        int used = 0;
        if (std::sscanf(line, "%" SCNxPTR " %" SCNxPTR " %c %n", &a, &size, &type, &used) < 3) continue;
        if (a < (uintptr_t)shared_lo || a >= (uintptr_t)shared_lo + shared_bytes) continue;
        std::string name(line + used);
        while (!name.empty() && name.back() == '\n') name.pop_back();
        syms.push_back({a, name});
      }
      pclose(f);
    }
    std::sort(syms.begin(), syms.end());
  }
  auto it = std::upper_bound(syms.begin(), syms.end(), std::make_pair(addr, std::string("\xff")));
  if (it == syms.begin()) return "shared memory";
  --it;
  std::string name = it->second;
  const size_t cut = name.rfind(")::");  // "f<...>(args)::As" -> "As"
  if (cut != std::string::npos) name = name.substr(cut + 3);
  char buf[64];
  std::snprintf(buf, sizeof buf, "+%" PRIuPTR " bytes", addr - it->first);
  return "__shared__ " + name + buf;
}

// ---------------------------------------------------------------- the checks
inline bool ordered_in_block(int prev_thread, uint32_t prev_bar, uint32_t prev_ws, int t) {
  return prev_thread == t || prev_bar < barriers ||
         (prev_thread >= 0 && prev_thread / 32 == t / 32 && prev_ws < warp_syncs[t / 32]);
}

const char* kind_name(bool write, bool atomic) { return atomic ? "atomic" : write ? "write" : "read"; }

struct Allocation;
// What an access touched, described only when a finding needs the words.
struct Where {
  const Allocation* al;  // global memory, or nullptr for shared
  uintptr_t addr;
  std::string str() const;
};

// `epoch`: this launch (global) or block run (shared); `global`: blocks count as concurrent.
void check_cell(Cell& c, bool global, uint32_t epoch, bool write, bool atomic, uintptr_t pc,
                const Where& at) {
  const int t = current, w = t / 32;
  const bool initialized = global ? c.init : c.w_epoch == epoch;
  if (!write || atomic) {
    if (!initialized)
      finding("initcheck", pc, 0,
              std::string(atomic ? "atomic on " : "read of ") + at.str() +
                  (global ? ", which no launch or host copy has written" : ", which no thread of this block has written"));
  }
  // against the last write
  if (c.w_epoch == epoch && !(atomic && c.w_atomic)) {
    const bool other_block = global && c.w_block != block_linear;
    if (other_block || !ordered_in_block(c.w_thread, c.w_bar, c.w_ws, t)) {
      char msg[512];
      std::snprintf(msg, sizeof msg, "%s of %s after a %s by %s (at %s) with %s between them",
                    kind_name(write, atomic), at.str().c_str(), c.w_atomic ? "atomic" : "write",
                    other_block ? block_coords(c.w_block).c_str()
                                : thread_coords(c.w_thread).c_str(),
                    symbolize(c.w_pc).c_str(),
                    other_block ? "no ordering (blocks of one launch run concurrently)"
                                : (c.w_thread / 32 == w ? "no barrier or warp sync" : "no __syncthreads"));
      finding("racecheck", pc, c.w_pc, msg);
    }
  }
  if (write || atomic) {
    // against the reads since that write
    if (c.r_epoch == epoch) {
      const bool other_block = global && c.r_block != block_linear;
      bool race = other_block;
      if (!race && c.r_bar == barriers && c.r_thread != t)
        race = !(c.r_warp == w && c.r_ws < warp_syncs[w]);
      if (race) {
        char msg[512];
        std::snprintf(msg, sizeof msg, "%s of %s after a read by %s (at %s) with %s between them",
                      kind_name(write, atomic), at.str().c_str(),
                      other_block ? (c.r_block == kSeveralBlocks ? std::string("other blocks") : block_coords(c.r_block)).c_str()
                                  : (c.r_thread == kSeveral ? "other threads" : thread_coords(c.r_thread).c_str()),
                      symbolize(c.r_pc).c_str(),
                      other_block ? "no ordering (blocks of one launch run concurrently)"
                                  : (c.r_warp == w ? "no barrier or warp sync" : "no __syncthreads"));
        finding("racecheck", pc, c.r_pc, msg);
      }
    }
    c.w_epoch = epoch;
    c.w_block = block_linear;
    c.w_thread = (int16_t)t;
    c.w_bar = barriers;
    c.w_ws = warp_syncs[w];
    c.w_pc = pc;
    c.w_atomic = atomic;
    c.init = 1;
    c.r_epoch = 0;
    return;
  }
  // record the read
  if (c.r_epoch != epoch || (c.r_block == block_linear && barriers > c.r_bar)) {
    if (c.r_epoch != epoch) c.r_block = block_linear;
    c.r_epoch = epoch;
    c.r_thread = (int16_t)t;
    c.r_warp = (int16_t)w;
    c.r_bar = barriers;
    c.r_ws = warp_syncs[w];
  } else {
    if (c.r_block != block_linear) c.r_block = kSeveralBlocks;
    if (c.r_thread != t) c.r_thread = kSeveral;
    if (c.r_warp != w) c.r_warp = kSeveral;
    c.r_ws = std::max(c.r_ws, warp_syncs[w]);
    c.r_bar = barriers;
  }
  c.r_pc = pc;
}

std::string Where::str() const {
  if (al == nullptr) return shared_symbol(addr);
  char buf[200];
  const size_t off = addr - (uintptr_t)al->data;
  std::snprintf(buf, sizeof buf, "'%s' byte %zu (element %zu of 4 bytes)", al->name.c_str(), off, off / 4);
  return buf;
}

Allocation* allocation_of(uintptr_t a) {
  const size_t slot = (a - (uintptr_t)arena) / kSlot;
  return slot < kSlots ? &allocations[slot] : nullptr;
}

void seeded_yield();

void access(const void* addr, size_t n, bool write, bool atomic, uintptr_t pc) {
  if (!in_launch) return;
  const uintptr_t a = (uintptr_t)addr;
  const bool shared = a - (uintptr_t)shared_lo < shared_bytes && !is_emulator_state(a);
  const bool global = a - (uintptr_t)arena < kSlot * kSlots;
  if (!shared && !global) return;  // the stack, the emulator's own variables
  if (seeded && (rng() & 7) == 0) seeded_yield();
  if ((n == 2 || n == 4 || n == 8 || n == 16) && a % n != 0) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "%s of %zu bytes at address 0x%" PRIxPTR ", which is not %zu-byte aligned",
                  kind_name(write, atomic), n, a, n);
    finding("alignment", pc, 0, msg);
  }
  if (shared) {
    for (uintptr_t w = a & ~uintptr_t(3); w < a + n; w += 4) {
      Cell& c = shared_shadow[(w - (uintptr_t)shared_lo) / 4];
      check_cell(c, false, block_run, write, atomic, pc, Where{nullptr, w});
    }
    return;
  }
  Allocation* al = allocation_of(a);
  if (!al->live || a < (uintptr_t)al->data || a + n > (uintptr_t)al->data + al->bytes) {
    // find the nearest live allocation for the message
    Allocation* best = nullptr;
    uintptr_t best_d = UINTPTR_MAX;
    const size_t slot = al - allocations.data();
    for (size_t s = slot > 0 ? slot - 1 : 0; s <= slot + 1 && s < kSlots; ++s) {
      Allocation& b = allocations[s];
      if (!b.data) continue;
      const uintptr_t lo = (uintptr_t)b.data, hi = lo + b.bytes;
      const uintptr_t d = a < lo ? lo - a : a >= hi ? a - hi + 1 : 0;
      if (d < best_d) best_d = d, best = &b;
    }
    char msg[400];
    if (best == nullptr) {
      std::snprintf(msg, sizeof msg, "%s of %zu bytes at 0x%" PRIxPTR ", in no allocation", kind_name(write, atomic), n, a);
    } else {
      const uintptr_t lo = (uintptr_t)best->data, hi = lo + best->bytes;
      const char* where = a < lo ? "before" : a + n > hi ? "after" : "inside";
      const uintptr_t dist = a < lo ? lo - a : a >= hi ? a - hi : 0;
      std::snprintf(msg, sizeof msg, "invalid %s of %zu bytes: address 0x%" PRIxPTR " is %s bytes %s the %s-byte allocation '%s'%s",
                    kind_name(write, atomic), n, a, describe_bytes(dist).c_str(), where,
                    describe_bytes(best->bytes).c_str(), best->name.c_str(), best->live ? "" : " (freed)");
    }
    finding("memcheck", pc, 0, msg);
    return;
  }
  for (uintptr_t b = a; b < a + n; ++b) {
    check_cell(al->shadow[b - (uintptr_t)al->data], true, launch_id, write, atomic, pc, Where{al, b});
  }
}

// ---------------------------------------------------------------- fibers
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;

struct Fiber {
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  enum State { kRunnable, kWaiting, kDone } state = kDone;
  int wait_on = 0;
  long wait_gen = 0;
  unsigned counters[16] = {};  // by WarpSyncKind
};
struct SyncPoint {
  int size = 0, arrived = 0;
  long gen = 0;
  long tag = 0;
};

std::vector<Fiber> fibers;
std::vector<char*> stacks;
std::vector<SyncPoint> syncs;
uint64_t exchange[2][1024];
long opened = 0;
Thunk body_fn = nullptr;
void* body_ctx = nullptr;

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
// emu_switch(save, load): pushes the callee-saved registers, stores the stack
// pointer in *save, loads `load` and pops the registers saved there.
extern "C" void emu_switch(void** save, void* load);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_switch,.-emu_switch
)");
void* scheduler_sp = nullptr;
#else
ucontext_t scheduler;
#endif

void to_scheduler() {
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
  emu_switch(&fibers[current].sp, scheduler_sp);
#else
  swapcontext(&fibers[current].ctx, &scheduler);
#endif
}

[[noreturn]] void fiber_main() {
  body_fn(body_ctx);
  fibers[current].state = Fiber::kDone;
  to_scheduler();
  __builtin_unreachable();
}

void start_fiber(int t) {
  Fiber& f = fibers[t];
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
  // the stack as emu_switch leaves it: six saved registers, then the return address
  uintptr_t top = ((uintptr_t)stacks[t] + kStackBytes) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                    // fiber_main's (unused) return address
  *--sp = reinterpret_cast<void*>(&fiber_main);       // where emu_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stacks[t];
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = &scheduler;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_main), 0);
#endif
  f.state = Fiber::kRunnable;
  std::memset(f.counters, 0, sizeof f.counters);
}

void resume(int t) {
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
  emu_switch(&scheduler_sp, fibers[t].sp);
#else
  swapcontext(&scheduler, &fibers[t].ctx);
#endif
}

void set_thread_idx(int t) {
  current = t;
  thread_idx = uint3{t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y)};
}

const char* describe(int id, long tag) {
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
    std::snprintf(buf, sizeof buf, "%s %ld", kinds[kind >= 1 && kind <= kSyncWarp ? kind : 0], tag % 1000000);
  return buf;
}

// The running fiber arrives at sync point `id`; the last to arrive opens it and
// carries on, the others go back to the scheduler until it opens.
void arrive(int id, long tag, const char* what) {
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
    const long kind = tag / 1000000;
    if (id == 0)
      ++barriers;
    else if (kind >= kShflIdx && kind <= kSyncWarp)  // wmma calls do not order memory
      ++warp_syncs[id - 1];
    return;
  }
  Fiber& f = fibers[current];
  f.state = Fiber::kWaiting;
  f.wait_on = id;
  f.wait_gen = s.gen;
  to_scheduler();
}

void seeded_yield() {
  fibers[current].state = Fiber::kRunnable;
  to_scheduler();
}

void run_block(int threads, bool reverse) {
  for (int t = 0; t < threads; ++t) start_fiber(t);
  for (auto& s : syncs) s.arrived = 0;
  barriers = 0;
  std::memset(warp_syncs, 0, sizeof warp_syncs);
  ++block_run;
  int alive = threads, pos = 0;
  std::vector<int> runnable;
  while (alive > 0) {
    int t = -1;
    if (seeded) {  // any runnable fiber, at random
      runnable.clear();
      for (int u = 0; u < threads; ++u) {
        Fiber& f = fibers[u];
        if (f.state == Fiber::kWaiting && syncs[f.wait_on].gen != f.wait_gen) f.state = Fiber::kRunnable;
        if (f.state == Fiber::kRunnable) runnable.push_back(u);
      }
      if (!runnable.empty()) t = runnable[rng() % runnable.size()];
    } else {
      // Lowest first: always resume the first runnable fiber in scan order. Fibers
      // before `pos` are all blocked until some barrier opens, so the scan only
      // restarts from 0 when one did.
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
    resume(t);
    if (fibers[t].state == Fiber::kDone) --alive;
    if (opened != opened_before || seeded) pos = 0;
  }
}

// ---------------------------------------------------------------- determinism
struct KernelStats {
  long launches = 0, atomic_launches = 0, float_add_launches = 0, differing = 0;
};
std::map<std::string, KernelStats> kernel_stats;

struct Snapshot {
  std::vector<std::pair<size_t, std::vector<char>>> bufs;  // slot, bytes
};
Snapshot snapshot() {
  Snapshot s;
  for (size_t i = 0; i < kSlots; ++i)
    if (allocations[i].live)
      s.bufs.push_back({i, std::vector<char>(allocations[i].data, allocations[i].data + allocations[i].bytes)});
  return s;
}
void restore(const Snapshot& s) {
  for (const auto& b : s.bufs) std::memcpy(allocations[b.first].data, b.second.data(), b.second.size());
}

std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute
cudaError_t last_error = cudaSuccess;

void run_grid(dim3 grid, int threads, bool reverse_order) {
  ++launch_id;
  std::vector<uint32_t> order;
  const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
  order.resize(blocks);
  for (uint64_t i = 0; i < blocks; ++i) order[i] = (uint32_t)(reverse_order ? blocks - 1 - i : i);
  if (seeded) std::shuffle(order.begin(), order.end(), rng);
  static long parity = 0;  // the first block's thread order alternates between launches
  for (uint64_t i = 0; i < blocks; ++i, ++parity) {
    const uint32_t lin = order[i];
    block_linear = (int32_t)lin;
    block_idx = uint3{lin % grid.x, lin / grid.x % grid.y, lin / (grid.x * grid.y)};
    run_block(threads, (parity % 2 == 1) != reverse_order);
  }
}

}  // namespace

// ---------------------------------------------------------------- emu.h's interface
void fail(const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "EMULATION ERROR in %s (block %u,%u,%u thread %u,%u,%u): ", kernel_name, block_idx.x,
               block_idx.y, block_idx.z, thread_idx.x, thread_idx.y, thread_idx.z);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
  if (seeded) std::fprintf(stderr, "  (schedule seed %" PRIu64 ")\n", seed);
  std::exit(1);
}

void sync_threads(int line) { arrive(0, line, "__syncthreads"); }

void warp_arrive(long tag, const char* what) {
  const int t = current;
  if (syncs[1 + t / 32].size != 32)
    fail("%s in a warp of %d threads (block of %d)", what, syncs[1 + t / 32].size, threads_in_block);
  arrive(1 + t / 32, tag, what);
}

void sync_warp(int line, unsigned mask) {
  if (mask != 0xffffffffu) fail("__syncwarp with mask %#x: only the full warp is emulated", mask);
  warp_arrive(1000000L * kSyncWarp + line, "__syncwarp");
}

uint64_t shuffle_bits(unsigned mask, uint64_t bits, int kind, int arg, int width) {
  const int t = current, lane = t % 32, base = t - lane;
  if (mask != 0xffffffffu) fail("shuffle with mask %#x: only full-warp shuffles are emulated", mask);
  if (width != 32) fail("shuffle width %d: only 32 is emulated", width);
  int src = lane;
  switch (kind) {
    case kShflIdx: src = ((arg % 32) + 32) % 32; break;
    case kShflUp: src = lane - arg >= 0 ? lane - arg : lane; break;
    case kShflDown: src = lane + arg < 32 ? lane + arg : lane; break;
    case kShflXor: src = lane ^ (arg & 31); break;
    default: fail("shuffle: %d is not a shuffle kind", kind);
  }
  const unsigned gen = fibers[t].counters[kShflIdx]++ & 1u;
  exchange[gen][t] = bits;
  // the tag: kind and offset must agree across the warp (idx: any source lane)
  warp_arrive(1000000L * kind + (kind == kShflIdx ? 0 : arg), "full-mask shuffle");
  return exchange[gen][base + src];
}

unsigned thread_counter(int kind) {
  if (kind < 0 || kind >= 16) fail("thread_counter: kind %d", kind);
  return fibers[current].counters[kind]++;
}

void check_access(const void* addr, size_t bytes, bool write) {
  access(addr, bytes, write, false, (uintptr_t)__builtin_return_address(0));
}

template <class T>
static T atomic_rmw(T* addr, T v, bool add, uintptr_t pc) {
  if (in_launch) ++atomics_in_launch, float_adds_in_launch += add && !std::is_integral<T>::value;
  access(addr, sizeof(T), true, true, pc);
  const T old = *addr;
  *addr = add ? old + v : v;
  return old;
}
float atomic_add(float* a, float v) { return atomic_rmw(a, v, true, (uintptr_t)__builtin_return_address(0)); }
double atomic_add(double* a, double v) { return atomic_rmw(a, v, true, (uintptr_t)__builtin_return_address(0)); }
int atomic_add(int* a, int v) { return atomic_rmw(a, v, true, (uintptr_t)__builtin_return_address(0)); }
int atomic_exch(int* a, int v) { return atomic_rmw(a, v, false, (uintptr_t)__builtin_return_address(0)); }

void* device_alloc(size_t bytes, const char* name, bool initialized, size_t offset) {
  init_arena();
  if (bytes + offset > kSlot / 2 - 4096) fail("device_alloc: %zu bytes for '%s' (at most %zu emulated)", bytes, name, kSlot / 2);
  for (size_t tries = 0; tries < kSlots; ++tries, ++next_slot) {
    Allocation& a = allocations[next_slot % kSlots];
    if (a.live) continue;
    a.data = arena + (next_slot % kSlots) * kSlot + kSlot / 2 + offset;
    a.bytes = bytes;
    a.name = name;
    a.live = true;
    a.shadow.assign(bytes, Cell{});
    for (Cell& c : a.shadow) c.init = initialized;
    std::memset(a.data, 0, bytes);
    ++next_slot;
    return a.data;
  }
  fail("device_alloc: all %zu slots of the arena are in use", kSlots);
}

void device_free(void* p) {
  if (p == nullptr) return;
  Allocation* a = allocation_of((uintptr_t)p);
  if (a == nullptr || a->data != p || !a->live) fail("device_free: %p is not a live allocation", p);
  a->live = false;
  a->shadow.clear();
  a->shadow.shrink_to_fit();
}

// Marks host-side bytes: inside the registered part of an allocation only.
void set_initialized(const void* p, size_t bytes, bool initialized) {
  for (uintptr_t b = (uintptr_t)p; b < (uintptr_t)p + bytes; ++b) {
    Allocation* a = allocation_of(b);
    if (a == nullptr || !a->live || b < (uintptr_t)a->data || b >= (uintptr_t)a->data + a->bytes) continue;
    a->shadow[b - (uintptr_t)a->data].init = initialized;
  }
}

int findings() { return finding_total; }

void launch_thunk(const char* name, dim3 grid, dim3 block, size_t smem, const void* fn, Thunk body, void* ctx) {
  init_arena();
  init_shared();
  kernel_name = name;
  const long threads = (long)block.x * block.y * block.z;
  char why[200] = "";
  if (threads < 1 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    std::snprintf(why, sizeof why, "block %u x %u x %u (%ld threads; at most 1024, z at most 64)", block.x,
                  block.y, block.z, threads);
  else if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
    std::snprintf(why, sizeof why, "grid %u x %u x %u (each at least 1; y and z at most 65535)", grid.x, grid.y, grid.z);
  else if (smem > 227 * 1024)
    std::snprintf(why, sizeof why, "%zu bytes of dynamic shared memory (at most 227 KB on sm_90)", smem);
  else if (smem > 48 * 1024 && (fn == nullptr || max_dynamic_smem[fn] < (long)smem))
    std::snprintf(why, sizeof why,
                  "%zu bytes of dynamic shared memory: over 48 KB needs "
                  "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) first",
                  smem);
  if (why[0]) {
    finding("launch", 0, 0, std::string("invalid launch configuration: ") + why);
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (smem > 0) fail("dynamic shared memory (%zu bytes) is not emulated", smem);
  while ((long)stacks.size() < threads) {
    char* p = static_cast<char*>(mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) fail("launch: cannot map a fiber stack");
    mprotect(p, kGuardBytes, PROT_NONE);
    stacks.push_back(p + kGuardBytes);
  }
  fibers.assign(threads, Fiber{});
  threads_in_block = (int)threads;
  const int warps = (int)(threads + 31) / 32;
  syncs.assign(1 + warps, SyncPoint{});
  syncs[0].size = (int)threads;
  for (int w = 0; w < warps; ++w) syncs[1 + w].size = std::min(32, (int)threads - 32 * w);
  grid_dim = uint3{grid.x, grid.y, grid.z};
  block_dim = uint3{block.x, block.y, block.z};
  body_fn = body;
  body_ctx = ctx;
  KernelStats& st = kernel_stats[name];
  ++st.launches;

  const Snapshot before = snapshot();
  atomics_in_launch = float_adds_in_launch = 0;
  in_launch = true;
  run_grid(grid, (int)threads, reverse_blocks);
  in_launch = false;
  if (atomics_in_launch > 0) {  // order-dependent? run again from the same inputs, blocks reversed
    ++st.atomic_launches;
    st.float_add_launches += float_adds_in_launch > 0;
    const Snapshot first = snapshot();
    restore(before);
    in_launch = true;
    run_grid(grid, (int)threads, !reverse_blocks);
    in_launch = false;
    const Snapshot second = snapshot();
    bool same = first.bufs.size() == second.bufs.size();
    for (size_t i = 0; same && i < first.bufs.size(); ++i) same = first.bufs[i].second == second.bufs[i].second;
    if (!same) ++st.differing;
  }
  kernel_name = "(host)";
}

void report(bool ok, const char* fmt, ...) {
  ++checks;
  if (!ok) ++failures;
  if (ok && quiet) return;
  va_list args;
  va_start(args, fmt);
  std::vprintf(fmt, args);
  va_end(args);
  std::printf(" %s\n", ok ? "ok" : "MISMATCH");
}

namespace {
void on_fault(int sig, siginfo_t* info, void* uctx) {
  uintptr_t pc = 0;
#if defined(__x86_64__)
  pc = (uintptr_t)static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RIP] + 1;
#else
  (void)uctx;
#endif
  const uintptr_t a = (uintptr_t)info->si_addr;
  char msg[200];
  std::snprintf(msg, sizeof msg, "%s at address 0x%" PRIxPTR " (outside the device arena; a stack overflow or a wild pointer)",
                sig == SIGBUS ? "bus error" : "invalid access", a);
  finding("memcheck", pc, 0, msg);
  std::fprintf(stderr, "EMULATION ERROR: the process faulted; stopping\n");
  std::_Exit(1);
}
}  // namespace

namespace {
// An exception out of main (a launcher that threw, or check_launch after an invalid
// launch): one line and exit status 1, like any other failure.
[[noreturn]] void on_terminate() {
  std::fflush(stdout);
  const char* what = "an unknown exception";
  std::string text;
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      text = ex.what();
      what = text.c_str();
    } catch (...) {
    }
  }
  std::fprintf(stderr, "EMULATION ERROR: uncaught exception: %s\n", what);
  if (finding_total) std::fprintf(stderr, "SANITIZER: %d findings\n", finding_total);
  std::_Exit(1);
}
}  // namespace

void parse_args(int argc, char** argv) {
  std::set_terminate(on_terminate);
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--quiet")) quiet = true;
    else if (!std::strcmp(argv[i], "--reverse-blocks")) reverse_blocks = true;
    else if (!std::strcmp(argv[i], "--help")) {
      std::printf("usage: %s [--only SUBSTRING] [--quiet] [--reverse-blocks]\n"
                  "  PYCNN_EMU_SEED=n  a seeded random schedule (threads, blocks, switches at accesses)\n",
                  argv[0]);
      std::exit(0);
    }
  }
  if (const char* s = std::getenv("PYCNN_EMU_SEED")) {
    seeded = true;
    seed = std::strtoull(s, nullptr, 10);
    rng.seed(seed);
    std::printf("schedule: seeded random, PYCNN_EMU_SEED=%" PRIu64 "\n", seed);
  }
  static char altstack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = altstack;
  ss.ss_size = sizeof altstack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

int finish() {
  for (const auto& [name, st] : kernel_stats) {
    // float atomicAdd makes the sum's order the schedule's, even where the orders tried agree
    const char* verdict = st.differing || st.float_add_launches ? "no" : "yes";
    std::printf("deterministic %s: %s (%ld launches, %ld with atomics, %ld with float atomicAdd, "
                "%ld gave other bits in reverse block order)\n",
                name.c_str(), verdict, st.launches, st.atomic_launches, st.float_add_launches, st.differing);
  }
  if (finding_total) {
    std::printf("SANITIZER: %d findings (%zu distinct)\n", finding_total, finding_counts.size());
    for (const auto& [key, count] : finding_counts) std::printf("  %ldx %s\n", count, key.c_str());
  }
  if (failures || finding_total)
    std::printf("%d of %d checks FAILED, %d sanitizer findings\n", failures, checks, finding_total);
  else
    std::printf("all ok (%d checks, 0 sanitizer findings)\n", checks);
  return failures || finding_total ? 1 : 0;
}

}  // namespace emu

// ---------------------------------------------------------------- ThreadSanitizer's callbacks
// g++ -fsanitize=thread calls these before each load and store of the harness and
// kernels. (No libtsan is linked: this is the whole runtime.)
#define PC ((uintptr_t)__builtin_return_address(0))
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
#define EMU_TSAN_SIZE(n)                                                                     \
  void __tsan_read##n(void* a) { emu::access(a, n, false, false, PC); }                      \
  void __tsan_write##n(void* a) { emu::access(a, n, true, false, PC); }                      \
  void __tsan_unaligned_read##n(void* a) { emu::access(a, n, false, false, PC); }            \
  void __tsan_unaligned_write##n(void* a) { emu::access(a, n, true, false, PC); }            \
  void __tsan_volatile_read##n(void* a) { emu::access(a, n, false, false, PC); }             \
  void __tsan_volatile_write##n(void* a) { emu::access(a, n, true, false, PC); }
EMU_TSAN_SIZE(1)
EMU_TSAN_SIZE(2)
EMU_TSAN_SIZE(4)
EMU_TSAN_SIZE(8)
EMU_TSAN_SIZE(16)
// Atomic loads and stores of the host code (the guard of a function-local static):
// one OS thread runs everything, so plain accesses do.
#define EMU_TSAN_ATOMIC(bits)                                                                              \
  uint##bits##_t __tsan_atomic##bits##_load(const volatile uint##bits##_t* a, int) { return *a; }          \
  void __tsan_atomic##bits##_store(volatile uint##bits##_t* a, uint##bits##_t v, int) { *a = v; }
EMU_TSAN_ATOMIC(8)
EMU_TSAN_ATOMIC(16)
EMU_TSAN_ATOMIC(32)
EMU_TSAN_ATOMIC(64)
void __tsan_read_range(void* a, unsigned long n) { emu::access(a, n, false, false, PC); }
void __tsan_write_range(void* a, unsigned long n) { emu::access(a, n, true, false, PC); }
}

// ---------------------------------------------------------------- the CUDA runtime, emulated
extern "C" {
cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return emu::last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorInvalidConfiguration ? "cudaErrorInvalidConfiguration"
                                                                                 : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidConfiguration ? "invalid configuration argument"
                                                                              : "unknown error";
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = emu::device.sms; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = emu::device.cc_major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = emu::device.cc_minor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; return cudaSuccess;
    default: emu::fail("cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
  }
}
cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) emu::max_dynamic_smem[fn] = value;
  return cudaSuccess;
}
// Host-side, in stream order: writes the bytes and marks them written (initcheck).
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  const uintptr_t a = (uintptr_t)p;
  emu::Allocation* al = emu::allocation_of(a);
  if (al == nullptr || !al->live || a < (uintptr_t)al->data || a + bytes > (uintptr_t)al->data + al->bytes) {
    emu::finding("memcheck", (uintptr_t)__builtin_return_address(0), 0,
                 "cudaMemsetAsync of " + std::to_string(bytes) + " bytes outside any allocation");
    return cudaErrorInvalidValue;
  }
  std::memset(p, value, bytes);
  emu::set_initialized(p, bytes, true);
  ++emu::launch_id;  // later launches see it as an earlier operation on the stream
  return cudaSuccess;
}
}
