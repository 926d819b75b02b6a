"""The SASS instruction mix of a kernel, read from `cuobjdump --dump-sass` of a cubin.

SASS is the machine code an SM runs (PTX is only the portable intermediate). Every line
of `cuobjdump --dump-sass` is one instruction at an address, an optional predicate
(`@P0`, `@!P1`), an opcode with dot modifiers (`LDS.128`, `IMAD.HI.U32`) and operands.
What is counted, and what each figure tells a learner (one line each):

- total_instructions: static instructions in the kernel (NOPs excluded): its code size,
  not its run time; a loop's body runs many times, the prologue once.
- main_loop: the loop that does the arithmetic. Found as the backward branch (a BRA whose
  target address is at or before its own) whose body, target to branch, holds the most
  FFMA + HMMA; among equal bodies the shortest one (the innermost). None when no loop
  holds any FFMA or HMMA (the element-wise kernels).
- main_loop.instructions: instructions per iteration, i.e. per K step of an implicit
  GEMM: every one takes an issue slot of the warp scheduler, so fewer is faster. It is
  the body's static length: code that a forward branch inside it skips counts too.
- main_loop.ffma / .hmma and .ffma_share / .hmma_share: the useful math per iteration
  and its fraction of the issue slots: an upper bound on the fraction of FP32 (or
  tensor-core) peak the loop can reach, since a scheduler issues one instruction a cycle.
- int_div: sequences nvcc emits for `/` or `%` by a value unknown at compile time (an
  I2F.U32.RP (or I2F.RP), a MUFU.RCP within a few instructions, then IMAD.HI.U32: about 15-25
  instructions each, where a shift would be 1); counted over the kernel and in the main
  loop, where they cost every iteration. `/` and `%` by the same divisor share one.
- memory: loads and stores by kind, each with its vector widths in bits per thread
  (32, 64, 128: one LDS.128 moves what four LDS do, in one issue slot):
  LDS/STS shared memory; LDG/STG global memory; LD/ST generic (the address may be shared
  or global, resolved at run time: slower than LDS, the known case is the WMMA operand
  loads); LDGSTS cp.async (global to shared without registers, Ampere on); LDSM ldmatrix
  (a warp loads whole 8x8 matrices from shared memory for the tensor cores); ATOM/RED
  atomics (global and shared).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# `/*0aa0*/   @!P0 BRA 0x1230 ;` (the encoding comment that follows is ignored)
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")
_TARGET = re.compile(r"0x([0-9a-f]+)")

# kind of memory instruction -> the opcode (before its first dot) that names it
MEMORY_KINDS = {
    "LDS": "shared load", "STS": "shared store",
    "LDG": "global load", "STG": "global store",
    "LD": "generic load", "ST": "generic store",
    "LDGSTS": "cp.async global->shared", "LDSM": "ldmatrix",
    "ATOM": "atomic (generic)", "ATOMG": "atomic (global)", "ATOMS": "atomic (shared)",
    "RED": "reduction (global)",
}
_WIDTH_BITS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128}
_LDSM_BITS = {"1": 32, "2": 64, "4": 128}  # LDSM.16.M88.4: four 8x8 matrices, 128 bits a lane


@dataclass(frozen=True)
class Instr:
    addr: int
    predicate: str  # "" when unpredicated
    opcode: str     # with modifiers: "IMAD.HI.U32"
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]


def parse_sass(text: str) -> dict[str, list[Instr]]:
    """{mangled function name: its instructions in address order} from cuobjdump's text."""
    functions: dict[str, list[Instr]] = {}
    current = None
    for line in text.splitlines():
        m = _FUNCTION.match(line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            current.append(Instr(int(m.group(1), 16), (m.group(2) or "").strip(), m.group(3),
                                 m.group(4).strip()))
    return functions


def width_bits(instr: Instr) -> int:
    """Bits per thread that one memory instruction moves (32 unless a modifier says)."""
    parts = instr.opcode.split(".")[1:]
    if instr.base == "LDSM":
        return _LDSM_BITS.get(parts[-1], 32) if parts else 32
    for part in parts:
        if part in _WIDTH_BITS:
            return _WIDTH_BITS[part]
    return 32


def backward_branches(instrs: list[Instr]) -> list[tuple[int, int]]:
    """(start index, end index) of every loop: a BRA at index end to an address at or
    before its own, the body being target..branch inclusive."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    loops = []
    for i, ins in enumerate(instrs):
        if ins.base != "BRA":
            continue
        m = _TARGET.search(ins.operands)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target <= ins.addr and target in index:
            loops.append((index[target], i))
    return loops


def int_div_starts(instrs: list[Instr]) -> list[int]:
    """Indices where an integer-division sequence starts: I2F.U32.RP (I2F.RP for a signed
    divisor, after an IABS), then MUFU.RCP within 8 instructions, then IMAD.HI.U32 within
    16 more: nvcc's reciprocal-based division, which `/` and `%` by a non-constant
    compile to."""
    starts = []
    for i, ins in enumerate(instrs):
        parts = ins.opcode.split(".")
        if parts[0] != "I2F" or "RP" not in parts:
            continue
        rcp = next((j for j in range(i + 1, min(i + 9, len(instrs)))
                    if instrs[j].opcode.startswith("MUFU.RCP")), None)
        if rcp is None:
            continue
        if any(instrs[j].opcode.startswith("IMAD.HI.U32") for j in range(rcp + 1, min(rcp + 17, len(instrs)))):
            starts.append(i)
    return starts


def memory_mix(instrs: list[Instr]) -> dict[str, dict[str, int]]:
    """{kind: {"count": n, "32": n32, "64": n64, "128": n128, ...}} for the kinds present."""
    mix: dict[str, dict[str, int]] = {}
    for ins in instrs:
        if ins.base not in MEMORY_KINDS:
            continue
        entry = mix.setdefault(ins.base, {"count": 0})
        entry["count"] += 1
        w = str(width_bits(ins))
        entry[w] = entry.get(w, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(mix.items())}


def _math(instrs: list[Instr]) -> tuple[int, int]:
    ffma = sum(1 for ins in instrs if ins.base == "FFMA")
    hmma = sum(1 for ins in instrs if ins.base == "HMMA")
    return ffma, hmma


def analyze(instrs: list[Instr]) -> dict:
    """The figures the module header describes, for one function's instructions."""
    real = [ins for ins in instrs if ins.base != "NOP"]
    divs = int_div_starts(real)
    ffma, hmma = _math(real)
    out = {
        "total_instructions": len(real),
        "ffma": ffma,
        "hmma": hmma,
        "int_div": len(divs),
        "memory": memory_mix(real),
        "main_loop": None,
    }
    best = None
    for start, end in backward_branches(real):
        f, h = _math(real[start:end + 1])
        if f + h == 0:
            continue
        key = (f + h, -(end - start))
        if best is None or key > best[0]:
            best = (key, start, end)
    if best is not None:
        _, start, end = best
        body = real[start:end + 1]
        f, h = _math(body)
        n = len(body)
        out["main_loop"] = {
            "start": f"0x{body[0].addr:04x}",
            "end": f"0x{body[-1].addr:04x}",
            "instructions": n,
            "ffma": f,
            "hmma": h,
            "ffma_share": round(f / n, 4),
            "hmma_share": round(h / n, 4),
            "int_div": sum(1 for i in divs if start <= i <= end),
            "memory": memory_mix(body),
        }
    return out
