"""Theoretical occupancy per SM, by the rules of NVIDIA's CUDA Occupancy Calculator.

Occupancy is the fraction of an SM's 64 warp slots that resident warps fill. More
resident warps hide more latency (one warp waits on memory while another issues), up to
the point where the loop is issue-bound; less occupancy is not always slower (a kernel
with 128 registers a thread keeps more of its tile in registers), but a drop that nobody
meant is worth a look.

A block stays resident only when all its resources fit; blocks per SM is the smallest
of four limits:
- warps: 64 warp slots per SM (2,048 threads); a block takes ceil(threads / 32) warps.
- blocks: at most 32 resident blocks per SM.
- registers: 65,536 per SM, split into 4 equal parts of 16,384, one per warp scheduler,
  and a warp's registers sit in one part. A warp takes registers per thread x 32 rounded
  up to the allocation unit of 256, so warps that fit = 4 x floor(16384 / that).
- shared memory: 228 KB per SM on sm_90 (164 KB on sm_80) at the largest carveout, and
  each block takes its static + dynamic bytes plus 1 KB the system reserves, rounded up
  to 128 bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

WARP = 32
REG_SIDES = 4                 # register file parts, one per warp scheduler
REG_ALLOC_UNIT = 256          # registers per warp are allocated in units of 256
SMEM_ALLOC_UNIT = 128
SMEM_RESERVED_PER_BLOCK = 1024
MAX_THREADS_PER_BLOCK = 1024

ARCHS = {
    "sm_80": {"warps": 64, "blocks": 32, "registers": 65536, "max_registers_per_thread": 255,
              "shared": 164 * 1024, "max_shared_per_block": 163 * 1024},
    "sm_90": {"warps": 64, "blocks": 32, "registers": 65536, "max_registers_per_thread": 255,
              "shared": 228 * 1024, "max_shared_per_block": 227 * 1024},
}
LIMITS = ("warps", "blocks", "registers", "shared memory")


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    active_warps: int
    max_warps: int
    occupancy: float            # active_warps / max_warps
    limited_by: tuple[str, ...]  # the limits that reach blocks_per_sm ("" when none fits)
    blocks_by: dict             # blocks per SM each limit alone allows

    def as_dict(self) -> dict:
        d = asdict(self)
        d["limited_by"] = list(self.limited_by)
        return d


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def _check_int(name: str, value, low: int, high: int | None = None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected {span}, got {value}")


def occupancy(arch: str, registers: int, shared_bytes: int, threads: int,
              carveout: int | None = None) -> Occupancy:
    """Resident blocks and warps per SM for a kernel using `registers` per thread and
    `shared_bytes` of shared memory (static + dynamic) per block of `threads` threads.
    A launch that cannot run at all (registers x threads over the SM's register file,
    shared memory over the per-block maximum) gives 0 blocks. carveout: the shared memory
    per SM in bytes that the driver configured (ncu's launch__shared_mem_config_size);
    default the largest, which the driver picks when shared memory would limit."""
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    a = ARCHS[arch]
    _check_int("registers", registers, 1, a["max_registers_per_thread"])
    _check_int("shared_bytes", shared_bytes, 0)
    _check_int("threads", threads, 1, MAX_THREADS_PER_BLOCK)
    if carveout is None:
        carveout = a["shared"]
    _check_int("carveout", carveout, 0, a["shared"])

    warps_per_block = -(-threads // WARP)
    regs_per_warp = _round_up(registers * WARP, REG_ALLOC_UNIT)
    warps_by_regs = REG_SIDES * ((a["registers"] // REG_SIDES) // regs_per_warp)
    if shared_bytes > a["max_shared_per_block"]:
        by_smem = 0
    else:
        smem_per_block = _round_up(shared_bytes + SMEM_RESERVED_PER_BLOCK, SMEM_ALLOC_UNIT)
        by_smem = carveout // smem_per_block
    by = {
        "warps": a["warps"] // warps_per_block,
        "blocks": a["blocks"],
        "registers": warps_by_regs // warps_per_block,
        "shared memory": by_smem,
    }
    blocks = min(by.values())
    warps = blocks * warps_per_block
    return Occupancy(blocks, warps, a["warps"], round(warps / a["warps"], 4),
                     tuple(k for k in LIMITS if by[k] == blocks), by)
