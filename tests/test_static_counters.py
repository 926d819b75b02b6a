"""Static counters from the compiler (pycnn.inspect.static): the parsers on fixed samples
of real ptxas and cuobjdump output, occupancy against cases worked by hand, and the
built kernels against the committed bench/results/static-counters.json.

The kernel checks recompile kernels/ for sm_90 and sm_80 (about 1.5 minutes on 2 cores,
then cached in a temporary folder per source content) and fail on:
- a spill not listed in the JSON's "accepted_spills" (add it there with its reason),
- a kernel whose registers x threads per block exceed the SM's 65,536 registers, or that
  fits no block on an SM at all: it cannot launch,
- a drop in theoretical occupancy against the JSON,
- a kernel the JSON does not know, or one it lists that is gone.
Regenerating the JSON (`python -m pycnn.inspect.static --write`) records a change.
The independent checks: occupancy against hand-worked cases and against ncu's launch
counters from the H200 (bench/results/gpu-session-2026-12-04/ncu-probes.csv), registers
against cuobjdump's resource usage, constant memory against ptxas's own figures, and the
main loops' FFMA/HMMA per K step against the tile's loop definition.
The SASS checks need cuobjdump and nvdisasm (the test extra installs their wheels).
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from pycnn import paths
from pycnn.inspect import occupancy as occ
from pycnn.inspect import sass
from pycnn.inspect import static

ROOT = paths.checkout()
NVCC = static.find_tool("nvcc")
CUOBJDUMP = static.find_tool("cuobjdump")
NVDISASM = static.find_tool("nvdisasm")
needs_nvcc = pytest.mark.skipif(ROOT is None or NVCC is None,
                                reason="needs nvcc on PATH and a source checkout (kernels/)")
needs_sass = pytest.mark.skipif(CUOBJDUMP is None or NVDISASM is None,
                                reason="needs cuobjdump and nvdisasm: on PATH or from the "
                                       "nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels")


# --- the ptxas parser, on text cut from nvcc 13.0's real output --------------------------

PTXAS_SM90 = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN5pycnn18conv2d_fwd_kernel7INS_9IgemmTileILi64ELi64ELi8ELi4ELi4EEELb0EEEvPKfS4_S4_PfNS_12Conv2dParamsE' for 'sm_90'
ptxas info    : Function properties for _ZN5pycnn18conv2d_fwd_kernel7INS_9IgemmTileILi64ELi64ELi8ELi4ELi4EEELb0EEEvPKfS4_S4_PfNS_12Conv2dParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8704 bytes smem
ptxas info    : Compile time = 158.967 ms
ptxas info    : Compiling entry function '_ZN5pycnn23conv2d_bwd_data_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsE' for 'sm_90'
ptxas info    : Function properties for _ZN5pycnn23conv2d_bwd_data_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsE
    8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 8 bytes cumulative stack size
ptxas info    : Compile time = 43.749 ms
"""
PTXAS_SM80 = """\
ptxas info    : Compiling entry function '_ZN5pycnn25conv2d_bwd_filter_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsEi' for 'sm_80'
ptxas info    : Function properties for _ZN5pycnn25conv2d_bwd_filter_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsEi
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers, 8 bytes cumulative stack size, 1568 bytes smem, 444 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN5pycnn14relu_fwd_kernel1EPKfPfi' for 'sm_80'
ptxas info    : Function properties for _ZN5pycnn14relu_fwd_kernel1EPKfPfi
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 388 bytes cmem[0], 8 bytes cmem[2]
"""


def test_parse_ptxas_sm90():
    r = static.parse_ptxas(PTXAS_SM90)
    k7 = r["_ZN5pycnn18conv2d_fwd_kernel7INS_9IgemmTileILi64ELi64ELi8ELi4ELi4EEELb0EEEvPKfS4_S4_PfNS_12Conv2dParamsE"]
    assert (k7["arch"], k7["registers"], k7["barriers"], k7["shared_static"]) == ("sm_90", 64, 1, 8704)
    assert (k7["stack_frame"], k7["spill_stores"], k7["spill_loads"], k7["ptxas_cmem"]) == (0, 0, 0, {})
    k6 = r["_ZN5pycnn23conv2d_bwd_data_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsE"]
    assert (k6["registers"], k6["shared_static"], k6["stack_frame"], k6["spill_stores"], k6["spill_loads"]) == (32, 0, 8, 8, 8)


def test_parse_ptxas_sm80_cmem():
    r = static.parse_ptxas(PTXAS_SM80)
    f = r["_ZN5pycnn25conv2d_bwd_filter_kernel6ILi7EEEvPKfS2_PfNS_12Conv2dParamsEi"]
    assert (f["registers"], f["shared_static"], f["spill_stores"], f["spill_loads"]) == (80, 1568, 4, 4)
    assert f["ptxas_cmem"] == {"0": 444}
    assert r["_ZN5pycnn14relu_fwd_kernel1EPKfPfi"]["ptxas_cmem"] == {"0": 388, "2": 8}


def test_short_name():
    assert static.short_name(
        "void pycnn::conv2d_fwd_kernel7<pycnn::IgemmTile<64, 64, 8, 4, 4>, false>(float const*, "
        "float const*, float const*, float*, pycnn::Conv2dParams)") == \
        "conv2d_fwd_kernel7<IgemmTile<64, 64, 8, 4, 4>, false>"
    assert static.short_name("pycnn::relu_fwd_kernel1(float const*, float*, int)") == "relu_fwd_kernel1"


# --- the SASS parser, on a sample in cuobjdump's layout ---------------------------------

# Shaped after real sm_90 lines: a prologue with one signed division (I2F.RP, MUFU.RCP,
# IMAD.HI.U32), a loop 0x0090..0x0150 with 3 FFMA, an unsigned division and vector loads,
# a second loop with one FFMA, the EXIT, the self-branch and NOP padding.
SASS = """
	code for sm_90
		Function : _Z4testPf
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                     /* 0x00000a00ff017b82 */
                                                                              /* 0x000ff00000000800 */
        /*0010*/                   I2F.RP R0, R9 ;                            /* 0x0000000900007306 */
        /*0020*/                   SHF.R.S32.HI R3, RZ, 0x1f, R8 ;            /* 0x0 */
        /*0030*/                   MUFU.RCP R0, R0 ;                          /* 0x0 */
        /*0040*/                   IADD3 R2, R0, 0xffffffe, RZ ;              /* 0x0 */
        /*0050*/                   IMAD.HI.U32 R0, R3, R2, RZ ;               /* 0x0 */
        /*0060*/                   LDG.E.CONSTANT R14, desc[UR6][R20.64] ;    /* 0x0 */
        /*0070*/                   STS [R5], R14 ;                            /* 0x0 */
        /*0080*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;              /* 0x0 */
        /*0090*/                   LDS.128 R8, [R4] ;                         /* 0x0 */
        /*00a0*/                   FFMA R12, R8, R9, R12 ;                    /* 0x0 */
        /*00b0*/                   FFMA R13, R10, R9, R13 ;                   /* 0x0 */
        /*00c0*/                   I2F.U32.RP R6, R7 ;                        /* 0x0 */
        /*00d0*/                   MUFU.RCP R6, R6 ;                          /* 0x0 */
        /*00e0*/                   IMAD.HI.U32 R6, R6, R7, RZ ;               /* 0x0 */
        /*00f0*/                   LDG.E.64 R16, desc[UR6][R2.64] ;           /* 0x0 */
        /*0100*/                   LDSM.16.M88.4 R20, [R5] ;                  /* 0x0 */
        /*0110*/                   LDGSTS.E.BYPASS.LTC128B.128 [R5], desc[UR6][R2.64] ;  /* 0x0 */
        /*0120*/                   LD.E R18, desc[UR6][R22.64] ;              /* 0x0 */
        /*0130*/                   FFMA R14, R11, R9, R14 ;                   /* 0x0 */
        /*0140*/                   ISETP.GE.AND P0, PT, R7, R3, PT ;          /* 0x0 */
        /*0150*/              @!P0 BRA 0x90 ;                                 /* 0x0 */
        /*0160*/                   FFMA R12, R12, R12, R13 ;                  /* 0x0 */
        /*0170*/                   ISETP.GE.AND P1, PT, R7, R3, PT ;          /* 0x0 */
        /*0180*/               @P1 BRA 0x160 ;                                /* 0x0 */
        /*0190*/                   STG.E.128 desc[UR6][R2.64], R12 ;          /* 0x0 */
        /*01a0*/                   EXIT ;                                     /* 0x0 */
        /*01b0*/                   BRA 0x1b0;                                 /* 0x0 */
        /*01c0*/                   NOP;                                       /* 0x0 */
        /*01d0*/                   NOP;                                       /* 0x0 */
		..........
"""


def test_parse_sass_counts():
    fs = sass.parse_sass(SASS)
    assert list(fs) == ["_Z4testPf"]
    instrs = fs["_Z4testPf"]
    assert len(instrs) == 30 and instrs[21].predicate == "@!P0" and instrs[21].operands == "0x90"
    a = sass.analyze(instrs)
    assert a["total_instructions"] == 28  # 30 less the two NOPs
    assert (a["ffma"], a["hmma"], a["int_div"]) == (4, 0, 2)
    loop = a["main_loop"]
    # 0x0090..0x0150: 13 instructions, 3 of them FFMA, one division (at 0x00c0)
    assert (loop["start"], loop["end"], loop["instructions"], loop["ffma"], loop["int_div"]) == \
        ("0x0090", "0x0150", 13, 3, 1)
    assert loop["ffma_share"] == round(3 / 13, 4)
    assert loop["memory"] == {"LD": {"32": 1, "count": 1}, "LDG": {"64": 1, "count": 1},
                              "LDGSTS": {"128": 1, "count": 1}, "LDS": {"128": 1, "count": 1},
                              "LDSM": {"128": 1, "count": 1}}
    assert a["memory"]["STG"] == {"128": 1, "count": 1}
    assert a["memory"]["LDG"] == {"32": 1, "64": 1, "count": 2}
    assert a["memory"]["STS"] == {"32": 1, "count": 1}


def test_sass_without_math_has_no_main_loop():
    text = SASS.replace("FFMA", "FADD")
    assert sass.analyze(sass.parse_sass(text)["_Z4testPf"])["main_loop"] is None


# --- occupancy, against cases worked by hand ---------------------------------------------

def test_occupancy_hand_cases():
    # conv2d_fwd_kernel7<IgemmTile<128, 128, 8, 8, 8>> on sm_90: 128 registers, 256 threads,
    # 16,896 B static shared memory.
    # registers: 128 x 32 = 4,096 per warp (a multiple of 256); 16,384 / 4,096 = 4 warps per
    #   quarter, 16 warps per SM; 256 threads = 8 warps, so 16 / 8 = 2 blocks.
    # warps: 64 / 8 = 8 blocks. shared: 16,896 + 1,024 = 17,920 (a multiple of 128);
    #   233,472 / 17,920 = 13.03 -> 13 blocks. blocks: 32.
    # -> 2 blocks, 16 warps, 16 / 64 = 25%, limited by registers.
    o = occ.occupancy("sm_90", 128, 16896, 256)
    assert (o.blocks_per_sm, o.active_warps, o.occupancy, o.limited_by) == (2, 16, 0.25, ("registers",))
    assert o.blocks_by == {"warps": 8, "blocks": 32, "registers": 2, "shared memory": 13}

    # 40 registers, 256 threads, no shared memory: 40 x 32 = 1,280 per warp;
    # 16,384 / 1,280 = 12.8 -> 12 warps per quarter, 48 per SM -> 48 / 8 = 6 blocks,
    # 48 warps = 75%.
    o = occ.occupancy("sm_90", 40, 0, 256)
    assert (o.blocks_per_sm, o.active_warps, o.occupancy, o.limited_by) == (6, 48, 0.75, ("registers",))

    # 40 registers, 96 threads (3 warps): 48 warps fit by registers -> 48 / 3 = 16 blocks;
    # warps: 64 / 3 = 21; -> 16 blocks, 48 warps, 75%. Without the 4 quarters it would
    # be floor(51 / 3) = 17 blocks, 51 warps.
    o = occ.occupancy("sm_80", 40, 0, 96)
    assert (o.blocks_per_sm, o.active_warps) == (16, 48)

    # shared memory bound: 48 registers, 128 threads, 40,000 B. Per block 40,000 + 1,024
    # = 41,024 -> rounded to 128: 41,088. sm_80: 167,936 / 41,088 = 4.09 -> 4 blocks;
    # registers: 48 x 32 = 1,536, 16,384 / 1,536 = 10 per quarter, 40 warps / 4 = 10
    # blocks; warps 64 / 4 = 16. -> 4 blocks, 16 warps, 25%, shared memory.
    o = occ.occupancy("sm_80", 48, 40000, 128)
    assert (o.blocks_per_sm, o.active_warps, o.occupancy, o.limited_by) == (4, 16, 0.25, ("shared memory",))
    # sm_90: 233,472 / 41,088 = 5.68 -> 5 blocks, 20 warps, 31.25%.
    o = occ.occupancy("sm_90", 48, 40000, 128)
    assert (o.blocks_per_sm, o.active_warps, o.occupancy) == (5, 20, 0.3125)

    # the block limit: 32 threads (1 warp), 16 registers: warps allow 64 blocks,
    # registers 16 x 32 = 512 per warp -> 32 per quarter, 128 warps; 32 blocks at most
    # -> 32 warps, 50%, limited by blocks.
    o = occ.occupancy("sm_90", 16, 0, 32)
    assert (o.blocks_per_sm, o.active_warps, o.occupancy, o.limited_by) == (32, 32, 0.5, ("blocks",))

    # 32 registers, 256 threads: 1,024 per warp, 16 per quarter, 64 warps: 8 blocks by
    # registers and by warps: 100%, both limits reached.
    o = occ.occupancy("sm_90", 32, 0, 256)
    assert (o.blocks_per_sm, o.occupancy, o.limited_by) == (8, 1.0, ("warps", "registers"))

    # cannot launch: 255 registers x 1024 threads. 255 x 32 = 8,160 -> 8,192 per warp;
    # 16,384 / 8,192 = 2 per quarter, 8 warps < the block's 32: 0 blocks.
    o = occ.occupancy("sm_90", 255, 0, 1024)
    assert (o.blocks_per_sm, o.occupancy, o.limited_by) == (0, 0.0, ("registers",))


def test_occupancy_bad_input():
    with pytest.raises(ValueError, match="arch: expected one of"):
        occ.occupancy("sm_70", 32, 0, 256)
    with pytest.raises(ValueError, match=r"registers: expected in \[1, 255\], got 300"):
        occ.occupancy("sm_90", 300, 0, 256)
    with pytest.raises(ValueError, match=r"threads: expected in \[1, 1024\], got 2048"):
        occ.occupancy("sm_90", 32, 0, 2048)
    with pytest.raises(TypeError, match="shared_bytes: expected an int"):
        occ.occupancy("sm_90", 32, 1.5, 256)


# --- threads per block from the launchers' source -----------------------------------------

@pytest.mark.skipif(ROOT is None, reason="needs a source checkout (kernels/)")
def test_block_sizes_from_source():
    cfg = static.LaunchConfigs(ROOT)
    # IgemmTile<BM, BN, BK, TM, TN>: (BM / TM) x (BN / TN) threads
    assert cfg.config("conv2d_fwd_kernel7<IgemmTile<64, 64, 8, 4, 4>, false>")["threads"] == 16 * 16
    assert cfg.config("conv2d_fwd_kernel2<IgemmTile<128, 128, 8, 8, 8>, true>")["threads"] == 16 * 16
    # Tf32x3Tile<BM, BN, BK, WM, WN>: 32 x (BM / WM) x (BN / WN) threads
    assert cfg.config("conv2d_fwd_kernel8<Tf32x3Tile<64, 64, 16, 32, 32>, false>")["threads"] == 32 * 2 * 2
    assert cfg.config("conv2d_bwd_data_kernel9<Tf32x3Tile<128, 128, 16, 64, 32> >")["threads"] == 32 * 2 * 4
    # split-K launches go through a helper: __launch_bounds__(T::THREADS)
    k4 = cfg.config("conv2d_bwd_filter_kernel4<IgemmTile<64, 64, 8, 4, 4>, true>")
    assert k4["threads"] == 256 and "__launch_bounds__" in k4["block_source"]
    assert cfg.config("cross_entropy_mean_kernel1")["threads"] == 1024  # a literal
    assert cfg.config("relu_fwd_kernel1")["threads"] == 256  # kBlock
    assert cfg.config("conv2d_fwd_kernel1<true>")["threads"] == 256  # const int block = 256
    assert cfg.config("conv2d_bwd_data_kernel6<7>")["threads"] == 256  # at most kDwThreads
    assert cfg.config("conv2d_fwd_kernel7<IgemmTile<64, 64, 8, 4, 4>, false>")["shared_dynamic"] == 0
    with pytest.raises(LookupError, match="no_such_kernel9: no launch"):
        cfg.config("no_such_kernel9")


# --- the built kernels against the committed JSON ------------------------------------------

@pytest.fixture(scope="module")
def record():
    return static.collect(ROOT, jobs=2, with_sass=None)


@pytest.fixture(scope="module")
def committed():
    path = static.results_path(ROOT)
    assert path.exists(), f"{path} is missing: python -m pycnn.inspect.static --write makes it"
    return json.loads(path.read_text())


@needs_nvcc
def test_every_kernel_is_recorded(record, committed):
    for arch in static.ARCHS:
        now, then = set(record["kernels"][arch]), set(committed["kernels"][arch])
        assert not now - then, (f"{arch}: kernels not in {static.RESULTS_NAME}: {sorted(now - then)}; "
                                "record them with python -m pycnn.inspect.static --write")
        assert not then - now, (f"{arch}: {static.RESULTS_NAME} lists kernels that are gone: "
                                f"{sorted(then - now)}; regenerate it with --write")


@needs_nvcc
def test_no_unaccepted_spills(record, committed):
    bad = []
    for arch in static.ARCHS:
        accepted = committed["accepted_spills"][arch]
        for short, k in record["kernels"][arch].items():
            if (k["spill_stores"] or k["spill_loads"]) and short not in accepted:
                bad.append(f"{arch} {short}: {k['spill_stores']} bytes spill stores, "
                           f"{k['spill_loads']} bytes spill loads")
    assert not bad, ("new spills (fix them, or list them with a reason in accepted_spills of "
                     f"{static.RESULTS_NAME}):\n" + "\n".join(bad))


@needs_nvcc
def test_every_launch_fits(record):
    bad = []
    for arch in static.ARCHS:
        for short, k in record["kernels"][arch].items():
            if k["registers"] * k["threads_per_block"] > occ.ARCHS[arch]["registers"] or \
                    k["occupancy"]["blocks_per_sm"] < 1:
                bad.append(f"{arch} {short}: {k['registers']} registers x {k['threads_per_block']} "
                           f"threads = {k['registers'] * k['threads_per_block']} > 65536, or no block fits "
                           f"({k['occupancy']['limited_by']})")
    assert not bad, "launch configurations that cannot launch:\n" + "\n".join(bad)


@needs_nvcc
def test_no_occupancy_drop(record, committed):
    bad = []
    for arch in static.ARCHS:
        for short, k in record["kernels"][arch].items():
            old = committed["kernels"][arch].get(short)
            if old and k["occupancy"]["occupancy"] < old["occupancy"]["occupancy"]:
                bad.append(f"{arch} {short}: {old['occupancy']['occupancy']:.0%} -> "
                           f"{k['occupancy']['occupancy']:.0%} ({old['registers']} -> {k['registers']} "
                           f"registers, limited by {', '.join(k['occupancy']['limited_by'])})")
    assert not bad, ("theoretical occupancy dropped; if meant, record it with "
                     "python -m pycnn.inspect.static --write:\n" + "\n".join(bad))


@needs_nvcc
def test_constant_banks_match_ptxas(record):
    """The cubin's .nv.constant sections against ptxas's own cmem figures (sm_80 prints them)."""
    built = static.compile_all(ROOT, jobs=2)
    for (arch, src), (cubin, log) in built.items():
        banks = static.cubin_constant_banks(cubin.read_bytes())
        for mangled, r in static.parse_ptxas(log.read_text()).items():
            for bank, size in r["ptxas_cmem"].items():
                assert banks[mangled][bank] == size, (arch, src, mangled, bank)


# --- the SASS of the built kernels -----------------------------------------------------------

@needs_nvcc
@needs_sass
def test_registers_match_cuobjdump(record):
    """ptxas's registers and shared memory against cuobjdump's resource usage of one cubin
    (cuobjdump's SHARED includes the 1 KB a block reserves on sm_90)."""
    built = static.compile_all(ROOT, jobs=2)
    cubin, _ = built[("sm_90", "kernels/conv2d/07_implicit_gemm_pipelined.cu")]
    out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", str(cubin)], capture_output=True,
                         text=True, check=True).stdout
    by_mangled = {k["mangled"]: k for k in record["kernels"]["sm_90"].values()}
    seen = 0
    for fn, regs, shared in re.findall(r"Function (\S+):\s+REG:(\d+) STACK:\d+ SHARED:(\d+)", out):
        k = by_mangled[fn]
        assert (k["registers"], k["shared_static"] + 1024) == (int(regs), int(shared)), fn
        seen += 1
    assert seen == 4


def _tile(short):
    return [int(x) for x in re.search(r"<([\d, ]+)>", short).group(1).split(",")]


@needs_nvcc
@needs_sass
def test_main_loop_math_per_k_step(record):
    """FFMA (HMMA) per main-loop iteration equals the loop's definition: a CUDA-core tile
    IgemmTile<BM, BN, BK, TM, TN> does TM x TN x BK multiply-adds per thread per K step;
    a Tf32x3Tile<BM, BN, BK, WM, WN> warp does (WM/16) x (WN/16) fragments x BK/8 k-steps
    x 3 products (tf32x3), each wmma m16n16k8 being 4 HMMA.1684 (m16n8k4)."""
    checked = 0
    for arch in static.ARCHS:
        for short, k in record["kernels"][arch].items():
            loop = k["sass"]["main_loop"]
            if "IgemmTile" in short:
                _, _, bk, tm, tn = _tile(short)
                assert (loop["ffma"], loop["hmma"]) == (tm * tn * bk, 0), (arch, short)
                checked += 1
            elif "Tf32x3Tile" in short:
                _, _, bk, wm, wn = _tile(short)
                assert (loop["ffma"], loop["hmma"]) == (0, (wm // 16) * (wn // 16) * (bk // 8) * 3 * 4), (arch, short)
                checked += 1
    assert checked >= 2 * 26  # versions 2, 3, 4, 7, 11 (16 instances) and 8, 9, 10 (10) per arch


# --- against the hardware: ncu's launch counters of the first GPU session ----------------------

NCU_PROBES = (ROOT / "bench" / "results" / "gpu-session-2026-12-04" / "ncu-probes.csv") if ROOT else None


@needs_nvcc
@pytest.mark.skipif(NCU_PROBES is None or not NCU_PROBES.exists(), reason="needs the committed ncu-probes.csv")
def test_against_ncu_launch_counters(record):
    """Registers, static shared memory, the register, warp and block limits and the
    theoretical occupancy that ncu read on an H200 (sm_90) for the pycnn kernels it
    profiled; its shared-memory limit is taken at the carveout the driver chose for that
    launch (32-100 KB, where ours is at the largest, 228 KB), so it is compared at that."""
    import csv
    import io
    lines = [line for line in NCU_PROBES.read_text().splitlines(keepends=True) if line.startswith('"')]
    rows = [r for r in csv.DictReader(io.StringIO("".join(lines))) if "pycnn::" in r["Kernel Name"]]
    ours = {re.sub(r"\bfalse\b", "0", re.sub(r"\btrue\b", "1", short)): k
            for short, k in record["kernels"]["sm_90"].items()}
    assert rows, "no pycnn kernel in ncu-probes.csv"
    for r in rows:
        k = ours[static.short_name(r["Kernel Name"])]
        num = {c: int(r[c].replace(",", "")) for c in r if c.startswith(("launch__", "sm__maximum")) and
               r[c].replace(",", "").isdigit()}
        by = k["occupancy"]["blocks_by"]
        assert (k["registers"], k["shared_static"], k["threads_per_block"]) == (
            num["launch__registers_per_thread"], num["launch__shared_mem_per_block_static"],
            num["launch__block_size"]), r["Kernel Name"]
        assert (by["registers"], by["warps"], by["blocks"]) == (
            num["launch__occupancy_limit_registers"], num["launch__occupancy_limit_warps"],
            num["launch__occupancy_limit_blocks"]), r["Kernel Name"]
        assert round(100 * k["occupancy"]["occupancy"]) == num["sm__maximum_warps_per_active_cycle_pct"]
        at_carveout = occ.occupancy("sm_90", k["registers"], k["shared_static"], k["threads_per_block"],
                                    carveout=num["launch__shared_mem_config_size"])
        assert at_carveout.blocks_by["shared memory"] == num["launch__occupancy_limit_shared_mem"], r["Kernel Name"]
