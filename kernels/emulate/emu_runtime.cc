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
#include <unordered_map>
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
// 16 MB a slot, the data at +8 MB; with the checks off (counters of real-sized layers,
// which need no shadow) 64 slots of 1 GB instead: the same 64 GB of address space.
size_t kSlot = size_t(1) << 24;
size_t kSlots = 4096;
char* arena = nullptr;

struct Cell {  // the shadow of one byte (global) or one 4-byte word (shared)
  uint32_t w_epoch = 0, r_epoch = 0;  // launch (global) or block run (shared) of the last write / reads
  int32_t w_block = -1, r_block = -1;
  int16_t w_thread = -1, r_thread = -1, r_warp = -1;
  uint8_t init = 0, w_atomic = 0;
  uint8_t pending = 0;  // (shared) a cp.async into this word is in flight (emu_mma.h)
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

bool checks_on = true;  // PYCNN_EMU_CHECKS=0: counters only, no shadow, no findings

void init_arena() {
  if (arena) return;
  if (!checks_on) kSlot = size_t(1) << 30, kSlots = 64;
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

// ---------------------------------------------------------------- counters
// The memory counters that ncu reads from the hardware, computed from the same
// instrumented accesses (off unless PYCNN_EMU_COUNTERS=<json path> or
// enable_counters() turns them on; nothing below runs otherwise).
//
// Requests: the hardware issues one memory instruction for the active lanes of a
// warp together. Here each thread keeps a trace of the basic blocks it enters
// (g++ -fsanitize-coverage=trace-pc, in the counters' builds) and of its accesses;
// at each barrier (the block's, or the warp's for its lanes) and at the end of the
// block the traces of each warp are replayed the way the warp runs them (flush_warp:
// the lanes' sequences of blocks aligned by their longest common subsequence, so a
// lane that skipped a block joins the others again in the next one it runs, as the
// lanes of a warp reconverge after a branch), and the j-th execution of one pc in
// one block of that sequence by each of its lanes is one request. A lane that skips
// the instruction (a branch, a padding tap, a tile guard) is absent from it, as a
// predicated-off lane is. Memory: the traces between two barriers. Without trace-pc
// (a harness built for the checks) each flush groups the k-th execution of a pc by
// each lane, which splits no request but, in a loop whose lanes skip different
// iterations, joins accesses of different iterations into one.
// Per request:
//   global loads, stores, atomics: the bytes the lanes ask for, and the 32-byte
//     sectors they touch (distinct 32-byte aligned segments), ncu's
//     l1tex__t_requests / l1tex__t_sectors_pipe_lsu_mem_global_op_ld/st;
//   shared loads, stores, atomics: wavefronts, the passes the 32 banks of 4 bytes
//     need: for each bank the distinct 4-byte words the lanes want from it; the
//     lanes take as many wavefronts as the busiest bank (lanes that read the same
//     word share it: a broadcast). Accesses of 4 bytes: the 32 lanes together.
//     Accesses of 8 and 16 bytes: each half-warp (lanes 0-15, 16-31) alone, the two
//     added; so 32 consecutive float4s take 4 wavefronts, float2s 2. This is the
//     model that ncu's counts on the H200 follow (version 7's float4 reads of its
//     tiles, where the two half-warps read the same addresses: 6 wavefronts per
//     pair of reads, as this model gives; a model of 4 phases of 8 lanes gives 8,
//     the whole warp at once 3). "wavefronts_whole_warp" is the last one, for
//     comparison. Ideal wavefronts: the distinct words / 32, at least 1; bank
//     conflicts = wavefronts - ideal (ncu's l1tex__data_bank_conflicts).
// What the source does not show, and so is not counted: whether a global load is
// cached in L1 or streams (ld.global.ca/.cg/.nc is nvcc's choice), L2 and DRAM
// traffic, and any merging or splitting of accesses that nvcc does differently from
// the source (g++ is told not to merge or vectorise: emulate.py's CXXFLAGS).
// Sampling (PYCNN_EMU_SAMPLE=K): a grid of more than K blocks runs only K of them,
// the first, the last and evenly spaced ones between, and every count is scaled by
// blocks / K; the output says so. The outputs of the skipped blocks are then marked
// written, so that a later launch reading them is no initcheck finding.
namespace ctr {
bool on = false;
std::string path;
uint64_t sample = 0;
bool counting = false;  // in the first run of a grid, not in the determinism rerun

enum Kind { kGlobalLd, kGlobalSt, kGlobalAtom, kSharedLd, kSharedSt, kSharedAtom, kKinds };
const char* const kKindNames[kKinds] = {"global_ld", "global_st", "global_atomic",
                                        "shared_ld", "shared_st", "shared_atomic"};

struct Lane {
  uintptr_t addr;
  uint32_t bytes;
  uint32_t lane;
};
struct Request {
  uint8_t kind = 0, lanes = 0;
  Lane lane[32];
};
// A thread's trace since the last flush: basic blocks entered (kind kBlockEntry, from
// -fsanitize-coverage=trace-pc) and accesses (kind, address, bytes, pc).
constexpr uint8_t kBlockEntry = 255;
struct Event {
  uintptr_t pc, addr;
  uint32_t bytes;
  uint8_t kind;
};
std::vector<std::vector<Event>> traces;  // per thread of the block
int threads_now = 0;

struct Sums {
  double requests = 0, lanes = 0, bytes = 0, sectors = 0, wavefronts = 0, wavefronts_whole_warp = 0, ideal = 0;
  void add(const Sums& o) {
    requests += o.requests, lanes += o.lanes, bytes += o.bytes, sectors += o.sectors;
    wavefronts += o.wavefronts, wavefronts_whole_warp += o.wavefronts_whole_warp, ideal += o.ideal;
  }
};
struct Launch {
  std::string name;
  dim3 grid, block;
  uint64_t blocks = 0, blocks_run = 0;
  Sums kind[kKinds];
  std::map<std::pair<uintptr_t, int>, Sums> by_pc;
};
std::vector<Launch> launches;

// Max over the 32 banks of the distinct words that lanes [first, end) of r want.
int busiest_bank(const Request& r, uint32_t lo_lane, uint32_t hi_lane, std::vector<uintptr_t>& words) {
  words.clear();
  for (int i = 0; i < r.lanes; ++i) {
    const Lane& l = r.lane[i];
    if (l.lane < lo_lane || l.lane >= hi_lane) continue;
    for (uintptr_t w = l.addr >> 2; w <= (l.addr + l.bytes - 1) >> 2; ++w) words.push_back(w);
  }
  if (words.empty()) return 0;
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  int per_bank[32] = {};
  int most = 0;
  for (uintptr_t w : words) most = std::max(most, ++per_bank[w % 32]);
  return most;
}

void complete(uintptr_t pc, const Request& r) {
  static std::vector<uintptr_t> scratch;
  Sums s;
  s.requests = 1;
  s.lanes = r.lanes;
  uint32_t widest = 0;
  for (int i = 0; i < r.lanes; ++i) s.bytes += r.lane[i].bytes, widest = std::max(widest, r.lane[i].bytes);
  if (r.kind <= kGlobalAtom) {
    scratch.clear();
    for (int i = 0; i < r.lanes; ++i)
      for (uintptr_t sec = r.lane[i].addr >> 5; sec <= (r.lane[i].addr + r.lane[i].bytes - 1) >> 5; ++sec)
        scratch.push_back(sec);
    std::sort(scratch.begin(), scratch.end());
    s.sectors = (double)(std::unique(scratch.begin(), scratch.end()) - scratch.begin());
  } else {
    s.wavefronts_whole_warp = busiest_bank(r, 0, 32, scratch);
    const uint32_t half = widest >= 8 ? 16 : 32;  // lanes served together
    for (uint32_t lo = 0; lo < 32; lo += half) {
      s.wavefronts += busiest_bank(r, lo, lo + half, scratch);
      s.ideal += std::ceil((double)scratch.size() / 32);  // no conflict: 32 distinct words a wavefront
    }
    s.ideal = std::max(s.ideal, 1.0);
  }
  Launch& L = launches.back();
  L.kind[r.kind].add(s);
  L.by_pc[{pc, r.kind}].add(s);
}

// emu.h's float4 & co. check their whole copy with check_access, then copy member by
// member; those member accesses are the same instruction on a GPU (one LDG.128), so
// they are not counted again: each check_access covers its bytes for the thread's
// next accesses of the same kind.
struct Cover {
  int thread = -1;
  uintptr_t lo = 0, hi = 0;
  size_t left = 0;
  bool write = false;
};
Cover covers[2];
int next_cover = 0;

void cover(uintptr_t a, size_t n, bool write) {
  covers[next_cover] = Cover{current, a, a + n, n, write};
  next_cover ^= 1;
}

bool covered(uintptr_t a, size_t n, bool write) {
  for (Cover& c : covers)
    if (c.left >= n && c.thread == current && c.write == write && a >= c.lo && a + n <= c.hi) {
      c.left -= n;
      return true;
    }
  return false;
}

void record(uintptr_t a, size_t n, bool shared, bool write, bool atomic, uintptr_t pc) {
  const uint8_t kind = (uint8_t)((shared ? kSharedLd : kGlobalLd) + (atomic ? 2 : write ? 1 : 0));
  traces[current].push_back(Event{pc, a, (uint32_t)std::max<size_t>(n, 1), kind});
}

void block_entry(uintptr_t pc) { traces[current].push_back(Event{pc, 0, 0, kBlockEntry}); }

// A lane's trace cut at its basic-block entries: segment k is block bb[k] (0 for
// accesses before the first entry) and its accesses events[first[k] .. first[k+1]).
struct Segments {
  std::vector<uintptr_t> bb;
  std::vector<size_t> first;
};
Segments segments_of(const std::vector<Event>& tr) {
  Segments g;
  for (size_t p = 0; p < tr.size(); ++p) {
    if (tr[p].kind == kBlockEntry) {
      g.bb.push_back(tr[p].pc);
      g.first.push_back(p + 1);
    } else if (g.bb.empty()) {
      g.bb.push_back(0);
      g.first.push_back(p);
    }
  }
  g.first.push_back(tr.size() + 1);  // sentinel: segment k ends at first[k+1] - 1 (the next entry) or the end
  return g;
}

// Aligns lane trace `t` (its blocks) with the warp's sequence of blocks so far `w`:
// the longest common subsequence, so that a lane that skipped some blocks (a branch
// not taken, a padding tap) joins the others in the blocks it did run, as the
// hardware runs a warp's lanes together after a divergent branch. Returns, for each
// block of t, its position in the merged sequence, which replaces w (blocks of t
// that w lacks are inserted); `moved` maps w's old positions to the new ones.
std::vector<size_t> align(std::vector<uintptr_t>& w, const std::vector<uintptr_t>& t, std::vector<size_t>& moved) {
  const size_t n = w.size(), m = t.size();
  size_t pre = 0;
  while (pre < n && pre < m && w[pre] == t[pre]) ++pre;
  size_t suf = 0;
  while (suf < n - pre && suf < m - pre && w[n - 1 - suf] == t[m - 1 - suf]) ++suf;
  const size_t a = n - pre - suf, b = m - pre - suf;  // the middles to align
  // match[i] for t's middle: the index in w's middle it matches, or SIZE_MAX
  std::vector<size_t> match(b, SIZE_MAX);
  if (a > 0 && b > 0) {
    if (a * b <= (size_t(1) << 24)) {
      std::vector<uint32_t> L((a + 1) * (b + 1), 0);  // L[i][j]: LCS of w[i..], t[j..]
      auto at = [&](size_t i, size_t j) -> uint32_t& { return L[i * (b + 1) + j]; };
      for (size_t i = a; i-- > 0;)
        for (size_t j = b; j-- > 0;)
          at(i, j) = w[pre + i] == t[pre + j] ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
      for (size_t i = 0, j = 0; i < a && j < b;) {
        if (w[pre + i] == t[pre + j] && at(i, j) == at(i + 1, j + 1) + 1) match[j++] = i++;
        else if (at(i + 1, j) >= at(i, j + 1)) ++i;
        else ++j;
      }
    } else {  // too long for the table: the nearest next equal block, within 64
      for (size_t i = 0, j = 0; j < b; ++j)
        for (size_t k = i; k < a && k < i + 64; ++k)
          if (w[pre + k] == t[pre + j]) {
            match[j] = k, i = k + 1;
            break;
          }
    }
  }
  // merge: w's blocks in order, t's unmatched blocks inserted before the next match
  std::vector<uintptr_t> merged;
  std::vector<size_t> where(m);
  moved.assign(n, 0);
  for (size_t k = 0; k < pre; ++k) moved[k] = where[k] = merged.size(), merged.push_back(w[k]);
  size_t i = 0;
  for (size_t j = 0; j < b; ++j) {
    if (match[j] == SIZE_MAX) {
      where[pre + j] = merged.size();
      merged.push_back(t[pre + j]);
      continue;
    }
    for (; i < match[j]; ++i) moved[pre + i] = merged.size(), merged.push_back(w[pre + i]);
    moved[pre + i] = where[pre + j] = merged.size();
    merged.push_back(w[pre + i]);
    ++i;
  }
  for (; i < a; ++i) moved[pre + i] = merged.size(), merged.push_back(w[pre + i]);
  for (size_t k = 0; k < suf; ++k)
    moved[n - suf + k] = where[m - suf + k] = merged.size(), merged.push_back(w[n - suf + k]);
  w.swap(merged);
  return where;
}

// Replays the traces of warp w's lanes as the warp runs them: the lanes' block
// sequences aligned (align), and in each block of the warp's sequence, the j-th
// execution of one pc by each lane that ran the block is one request.
void flush_warp(int w) {
  const int lo = 32 * w, hi = std::min(threads_now, lo + 32);
  std::vector<Segments> segs;
  std::vector<std::vector<size_t>> at;  // per lane: its segments' positions in `blocks`
  std::vector<uintptr_t> blocks;
  std::vector<size_t> moved;
  for (int t = lo; t < hi; ++t) {
    segs.push_back(segments_of(traces[t]));
    const Segments& g = segs.back();
    if (t == lo) {
      blocks = g.bb;
      at.emplace_back(g.bb.size());
      for (size_t k = 0; k < g.bb.size(); ++k) at.back()[k] = k;
      continue;
    }
    if (g.bb == blocks) {  // the common case: no divergence
      at.push_back(at.front().size() == blocks.size() ? at.front() : std::vector<size_t>());
      if (at.back().empty())
        for (size_t k = 0; k < blocks.size(); ++k) at.back().push_back(k);
      continue;
    }
    std::vector<size_t> where = align(blocks, g.bb, moved);
    for (auto& lane : at)
      for (size_t& p : lane) p = moved[p];
    at.push_back(std::move(where));
  }
  // per block position: the lanes that ran it, and which of their segments
  std::vector<std::vector<std::pair<int, size_t>>> ran(blocks.size());
  for (size_t l = 0; l < at.size(); ++l)
    for (size_t k = 0; k < at[l].size(); ++k) ran[at[l][k]].push_back({(int)l, k});
  std::vector<std::pair<uintptr_t, uint32_t>> keys;  // (pc, occurrence in the segment) of each request
  std::vector<Request> requests;
  for (const auto& lanes : ran) {
    keys.clear();
    requests.clear();
    for (const auto& [l, k] : lanes) {
      const std::vector<Event>& tr = traces[lo + l];
      const Segments& g = segs[l];
      const size_t begin = g.first[k], end = std::min(g.first[k + 1] - 1, tr.size());
      for (size_t p = begin, j = 0; p < end; ++p, ++j) {
        const Event& e = tr[p];
        size_t r = j;  // the fast path: the same accesses as the lanes before
        if (r >= keys.size() || keys[r].first != e.pc || (requests[r].lanes && requests[r].lane[requests[r].lanes - 1].lane == (uint32_t)l)) {
          uint32_t occ = 0;
          for (size_t q = begin; q < p; ++q) occ += tr[q].pc == e.pc;
          r = SIZE_MAX;
          for (size_t x = 0; x < keys.size(); ++x)
            if (keys[x].first == e.pc && keys[x].second == occ) {
              r = x;
              break;
            }
          if (r == SIZE_MAX) {
            keys.push_back({e.pc, occ});
            requests.emplace_back();
            r = keys.size() - 1;
          }
        }
        Request& q = requests[r];
        if (q.lanes == 0) q.kind = e.kind;
        if (q.lanes < 32) q.lane[q.lanes++] = Lane{e.addr, e.bytes, (uint32_t)l};
      }
    }
    for (size_t x = 0; x < requests.size(); ++x) complete(keys[x].first, requests[x]);
  }
  for (int t = lo; t < hi; ++t) traces[t].clear();
}

void flush_all() {
  for (int w = 0; w * 32 < threads_now; ++w) flush_warp(w);
}

void begin_launch(const char* name, dim3 grid, dim3 block, int threads) {
  Launch L;
  L.name = name;
  L.grid = grid, L.block = block;
  L.blocks = (uint64_t)grid.x * grid.y * grid.z;
  launches.push_back(L);
  traces.assign(threads, {});
  threads_now = threads;
}

void end_block() {
  flush_all();
  ++launches.back().blocks_run;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if ((unsigned char)c < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

void write_sums(FILE* f, const Sums& s, double scale, int kind) {
  std::fprintf(f, "{\"requests\": %.17g, \"bytes\": %.17g, \"lanes\": %.17g", s.requests * scale, s.bytes * scale,
               s.lanes * scale);
  if (kind <= kGlobalAtom)
    std::fprintf(f, ", \"sectors\": %.17g, \"sectors_per_request\": %.6g", s.sectors * scale,
                 s.requests ? s.sectors / s.requests : 0.0);
  else
    std::fprintf(f,
                 ", \"wavefronts\": %.17g, \"wavefronts_whole_warp\": %.17g, \"ideal_wavefronts\": %.17g, "
                 "\"bank_conflicts\": %.17g, \"wavefronts_per_request\": %.6g",
                 s.wavefronts * scale, s.wavefronts_whole_warp * scale, s.ideal * scale, (s.wavefronts - s.ideal) * scale,
                 s.requests ? s.wavefronts / s.requests : 0.0);
  std::fputc('}', f);
}

void write_json() {
  if (!on || path.empty()) return;
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) fail("counters: cannot write %s", path.c_str());
  std::fprintf(f, "{\"launches\": [");
  for (size_t i = 0; i < launches.size(); ++i) {
    const Launch& L = launches[i];
    const double scale = L.blocks_run ? (double)L.blocks / L.blocks_run : 0.0;
    std::fprintf(f, "%s\n {\"kernel\": %s, \"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"blocks\": %" PRIu64
                 ", \"blocks_run\": %" PRIu64 ", \"sampled\": %s, \"scale\": %.17g",
                 i ? "," : "", json_string(L.name).c_str(), L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y,
                 L.block.z, L.blocks, L.blocks_run, L.blocks_run < L.blocks ? "true" : "false", scale);
    for (int k = 0; k < kKinds; ++k) {
      std::fprintf(f, ", \"%s\": ", kKindNames[k]);
      write_sums(f, L.kind[k], scale, k);
    }
    // the source lines that move the most: sectors (global) or wavefronts (shared)
    std::vector<std::pair<double, std::pair<uintptr_t, int>>> heavy;
    for (const auto& [pk, s] : L.by_pc) heavy.push_back({-(s.sectors + s.wavefronts), pk});
    std::sort(heavy.begin(), heavy.end());
    if (heavy.size() > 24) heavy.resize(24);
    std::fprintf(f, ", \"by_line\": [");
    for (size_t j = 0; j < heavy.size(); ++j) {
      const auto& pk = heavy[j].second;
      std::fprintf(f, "%s{\"where\": %s, \"kind\": \"%s\", \"counts\": ", j ? ", " : "",
                   json_string(symbolize(pk.first)).c_str(), kKindNames[pk.second]);
      write_sums(f, L.by_pc.at(pk), scale, pk.second);
      std::fputc('}', f);
    }
    std::fprintf(f, "]}");
  }
  std::fprintf(f, "\n], \"checks\": %s, \"sample_blocks\": %" PRIu64 "}\n", checks_on ? "true" : "false", sample);
  std::fclose(f);
}
}  // namespace ctr

void seeded_yield();
void async_in_flight(bool write, uintptr_t pc, uintptr_t word);

void access(const void* addr, size_t n, bool write, bool atomic, uintptr_t pc) {
  if (!in_launch) return;
  const uintptr_t a = (uintptr_t)addr;
  const bool shared = a - (uintptr_t)shared_lo < shared_bytes && !is_emulator_state(a);
  const bool global = a - (uintptr_t)arena < kSlot * kSlots;
  if (!shared && !global) return;  // the stack, the emulator's own variables
  if (ctr::counting && !ctr::covered(a, n, write)) ctr::record(a, n, shared, write, atomic, pc);
  if (!checks_on) return;
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
      if (c.pending) async_in_flight(write, pc, w);
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

void async_drop(int t);

[[noreturn]] void fiber_main() {
  body_fn(body_ctx);
  async_drop(current);  // copies never waited for: they land unseen (nothing may read them)
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
                                      "wmma::store_matrix_sync", "wmma::mma_sync", "mma.sync",
                                      "ldmatrix"};
  const long kind = tag / 1000000;
  if (id == 0)
    std::snprintf(buf, sizeof buf, "__syncthreads at line %ld", tag);
  else if (kind >= kWmmaLoad && kind <= kLdmatrix)
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
    if (ctr::counting) id == 0 ? ctr::flush_all() : ctr::flush_warp(id - 1);  // the traces up to here are whole
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
  const bool sampled = ctr::on && ctr::sample > 0 && blocks > ctr::sample;
  if (sampled) {  // the first, the last and evenly spaced blocks between (counters)
    std::vector<uint32_t> some;
    for (uint64_t i = 0; i < ctr::sample; ++i) some.push_back((uint32_t)(ctr::sample == 1 ? 0 : i * (blocks - 1) / (ctr::sample - 1)));
    if (reverse_order) std::reverse(some.begin(), some.end());
    order = some;
  }
  if (seeded) std::shuffle(order.begin(), order.end(), rng);
  static long parity = 0;  // the first block's thread order alternates between launches
  for (uint64_t i = 0; i < order.size(); ++i, ++parity) {
    const uint32_t lin = order[i];
    block_linear = (int32_t)lin;
    block_idx = uint3{lin % grid.x, lin / grid.x % grid.y, lin / (grid.x * grid.y)};
    run_block(threads, (parity % 2 == 1) != reverse_order);
    if (ctr::counting) ctr::end_block();
  }
  if (sampled && checks_on)  // the skipped blocks may have written anything: nothing is unwritten now
    for (Allocation& a : allocations)
      if (a.live)
        for (Cell& c : a.shadow) c.init = 1;
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
  if (ctr::counting) ctr::cover((uintptr_t)addr, bytes, write);
}

// ---------------------------------------------------------------- cp.async (emu_mma.h)
// A copy is in flight from its cp.async to the cp.async.wait_group that covers its
// group, as on the GPU, where it may land at any moment in between. Here it lands at
// that wait, as a write by the issuing thread then (so another thread's read is
// ordered after it only by a barrier that follows the wait), and while it is in flight
// every access to its destination is a racecheck finding: a read would see the old
// bytes (or, on the GPU, some of each). The source is read when the copy is issued
// (checked and counted as a global load then); the destination is checked at issue
// against the accesses before it (a refill of a buffer other threads still read with
// no barrier between is a race) and counted as a shared store there.
bool is_shared_address(const void* p) {
  init_shared();
  const uintptr_t a = (uintptr_t)p;
  return a - (uintptr_t)shared_lo < shared_bytes && !is_emulator_state(a);
}

namespace {
struct AsyncCopy {
  char* dst;
  uint32_t bytes;
  uintptr_t pc;
  char data[16];
};
struct AsyncThread {
  std::vector<AsyncCopy> open;                 // issued since the last commit_group
  std::vector<std::vector<AsyncCopy>> groups;  // committed, oldest first
};
std::vector<AsyncThread> async_threads(1024);

void set_pending(const AsyncCopy& c, uint8_t v) {
  for (uintptr_t w = (uintptr_t)c.dst; w < (uintptr_t)c.dst + c.bytes; w += 4)
    shared_shadow[(w - (uintptr_t)shared_lo) / 4].pending = v;
}

void async_in_flight(bool write, uintptr_t pc, uintptr_t word) {
  uintptr_t issued = 0;
  int by = -1;
  for (int t = 0; t < threads_in_block && by < 0; ++t) {
    auto in = [&](const AsyncCopy& c) {
      if (word >= (uintptr_t)c.dst && word < (uintptr_t)c.dst + c.bytes) issued = c.pc, by = t;
    };
    for (const AsyncCopy& c : async_threads[t].open) in(c);
    for (const auto& g : async_threads[t].groups)
      for (const AsyncCopy& c : g) in(c);
  }
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "%s of %s while a cp.async into it by %s (at %s) is in flight: it lands only at the "
                "cp.async.wait_group that covers its group",
                write ? "write" : "read", shared_symbol(word).c_str(), by >= 0 ? thread_coords(by).c_str() : "a thread",
                issued ? symbolize(issued).c_str() : "?");
  finding("racecheck", pc, issued, msg);
}

void async_drop(int t) {
  AsyncThread& a = async_threads[t];
  if (checks_on) {
    for (const AsyncCopy& c : a.open) set_pending(c, 0);
    for (const auto& g : a.groups)
      for (const AsyncCopy& c : g) set_pending(c, 0);
  }
  a.open.clear();
  a.groups.clear();
}
}  // namespace

void cp_async(void* dst, const void* src, int cp_size, int src_size, const char* what) {
  const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
  if (!in_launch) fail("%s outside a kernel", what);
  if (cp_size != 4 && cp_size != 8 && cp_size != 16) fail("%s: cp-size %d (4, 8 or 16 bytes)", what, cp_size);
  if (src_size < 0 || src_size > cp_size) fail("%s: src-size %d outside 0..cp-size (%d)", what, src_size, cp_size);
  if (!is_shared_address(dst)) fail("%s: the destination %p is not shared memory", what, dst);
  const uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
  if (checks_on && (d % cp_size != 0 || s % cp_size != 0)) {
    char msg[200];
    std::snprintf(msg, sizeof msg, "%s of %d bytes: %s address 0x%" PRIxPTR " is not %d-byte aligned", what, cp_size,
                  d % cp_size ? "destination" : "source", d % cp_size ? d : s, cp_size);
    finding("alignment", pc, 0, msg);
  }
  AsyncCopy c{static_cast<char*>(dst), (uint32_t)cp_size, pc, {}};
  if (src_size > 0) {
    access(src, src_size, false, false, pc);  // memcheck, initcheck, the global load's counters
    std::memcpy(c.data, src, src_size);
  }
  // bytes past src-size: zeros (c.data is zero-initialized). The shared store is counted
  // under pc + 1 (the same source line): the counters group the k-th access of a pc by
  // each lane into one request, and a lane with src-size 0 makes no global load, so at
  // one pc its store would join the other lanes' loads.
  if (ctr::counting) ctr::record(d, cp_size, true, true, false, pc + 1);
  if (checks_on) {
    for (uintptr_t w = d & ~uintptr_t(3); w < d + cp_size; w += 4) {
      Cell& cell = shared_shadow[(w - (uintptr_t)shared_lo) / 4];
      if (cell.pending) async_in_flight(true, pc, w);
      Cell probe = cell;  // the write's checks against what came before, without recording it yet
      check_cell(probe, false, block_run, true, false, pc, Where{nullptr, w});
    }
    set_pending(c, 1);
  }
  async_threads[current].open.push_back(c);
}

void cp_async_commit() {
  AsyncThread& a = async_threads[current];
  a.groups.push_back(std::move(a.open));
  a.open.clear();
}

void cp_async_wait(int n) {
  AsyncThread& a = async_threads[current];
  while ((int)a.groups.size() > n) {
    for (const AsyncCopy& c : a.groups.front()) {
      std::memcpy(c.dst, c.data, c.bytes);
      if (!checks_on) continue;
      set_pending(c, 0);
      for (uintptr_t w = (uintptr_t)c.dst; w < (uintptr_t)c.dst + c.bytes; w += 4)
        check_cell(shared_shadow[(w - (uintptr_t)shared_lo) / 4], false, block_run, true, false, c.pc,
                   Where{nullptr, w});
    }
    a.groups.erase(a.groups.begin());
  }
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
    if (checks_on) {
      a.shadow.assign(bytes, Cell{});
      for (Cell& c : a.shadow) c.init = initialized;
    }
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
  if (!checks_on) return;
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

  const Snapshot before = checks_on ? snapshot() : Snapshot{};
  atomics_in_launch = float_adds_in_launch = 0;
  if (ctr::on) ctr::begin_launch(name, grid, block, (int)threads);
  in_launch = true;
  ctr::counting = ctr::on;
  run_grid(grid, (int)threads, reverse_blocks);
  ctr::counting = false;
  in_launch = false;
  if (atomics_in_launch > 0 && checks_on) {  // order-dependent? run again from the same inputs, blocks reversed
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
                  "  PYCNN_EMU_SEED=n  a seeded random schedule (threads, blocks, switches at accesses)\n"
                  "  PYCNN_EMU_COUNTERS=path  write each launch's memory counters there (JSON)\n"
                  "  PYCNN_EMU_SAMPLE=k  with counters: run k blocks of a larger grid, counts scaled\n"
                  "  PYCNN_EMU_CHECKS=0  with counters: no sanitizer checks (no shadow memory)\n",
                  argv[0]);
      std::exit(0);
    }
  }
  if (const char* s = std::getenv("PYCNN_EMU_COUNTERS")) {
    const char* k = std::getenv("PYCNN_EMU_SAMPLE");
    const char* c = std::getenv("PYCNN_EMU_CHECKS");
    enable_counters(s, k ? std::atoi(k) : 0, !(c && !std::strcmp(c, "0")));
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

void enable_counters(const char* json_path, int sample_blocks, bool checks) {
  if (arena) fail("enable_counters: call it before the first device allocation");
  if (sample_blocks < 0) fail("enable_counters: sample_blocks must be >= 0 (0: every block), got %d", sample_blocks);
  ctr::on = true;
  ctr::path = json_path ? json_path : "";
  ctr::sample = (uint64_t)sample_blocks;
  checks_on = checks;
}

int finish() {
  ctr::write_json();
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
// -fsanitize-coverage=trace-pc (the counters' builds): called on entering each basic
// block; the counters align the lanes of a warp by these (see flush_warp).
void __sanitizer_cov_trace_pc() {
  if (emu::ctr::counting) emu::ctr::block_entry(PC);
}
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
