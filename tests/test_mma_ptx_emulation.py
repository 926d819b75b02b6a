"""The emulator's PTX wrappers (kernels/emulate/emu_mma.h, behind kernels/conv2d/mma_ptx.cuh)
against the PTX ISA's tables: kernels/emulate/emu_mma_selftest.cc places every element of
known matrices by the ISA's fragment tables (mma.m16n8k8 .tf32, mma.m16n8k16 .bf16,
ldmatrix .x4/.x2/.trans) and checks each lane's result against a host matmul; cp.async's
zero fill and its landing at the covering wait_group. Each planted misuse must be caught
with its finding. Needs g++, binutils and the CUDA headers, not a GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernels" / "emulate"))
import emulate  # noqa: E402

needs_tools = pytest.mark.skipif(emulate.missing_tools() is not None, reason=emulate.missing_tools() or "")


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    out = tmp_path_factory.mktemp("mma_selftest")
    return emulate.build(ROOT / "kernels" / "emulate" / "emu_mma_selftest.cc", out)


@needs_tools
def test_layouts_match_the_isa_tables(selftest):
    result = emulate.run(selftest)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines and lines[-1].startswith("all ok"), result.stdout + result.stderr
    assert "0 sanitizer findings" in lines[-1]
    for what in ("mma.m16n8k8.tf32", "mma.m16n8k16.bf16", "ldmatrix.m8n8.x4.b16", "ldmatrix.m8n8.x2.b16",
                 "ldmatrix.m8n8.x4.trans.b16", "ldmatrix.m8n8.x2.trans.b16", "cvt.rna.tf32.f32",
                 "cvt.rn.bf16x2.f32", "cp.async 16/8/4 bytes"):
        assert any(line.startswith(what) and line.endswith(" ok") for line in lines), (what, result.stdout)


PLANTED = {
    # a read of a cp.async's destination before the wait_group that covers it
    "cp_async_read_before_wait": "SANITIZER racecheck: cp_async_kernel at emu_mma_selftest.cc",
    # the copy landed at the wait, but another thread reads it with no barrier after
    "cp_async_no_barrier": "with no barrier or warp sync between them",
    "cp_async_misaligned": "cp.async.ca of 16 bytes: destination address",
    # a refill of a buffer another thread has read, with no barrier between
    "cp_async_refill_race": "after a read by thread (63,0,0)",
    "ldmatrix_misaligned": "ldmatrix: lane 9's row address",
    "mma_divergent": "deadlock: waits at mma.sync",
}


@needs_tools
@pytest.mark.parametrize("mode", sorted(PLANTED))
def test_planted_misuse_is_caught(mode, selftest):
    result = emulate.run(selftest, [mode])
    assert result.returncode == 1, f"{mode}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert PLANTED[mode] in result.stderr, result.stderr[-3000:]


@needs_tools
def test_the_read_before_the_wait_names_the_copy(selftest):
    result = emulate.run(selftest, ["cp_async_read_before_wait"])
    line = next(l for l in result.stderr.splitlines() if "is in flight" in l)
    assert "lands only at the cp.async.wait_group that covers its group" in line
    assert "emu_mma_selftest.cc:" in line.split("(at ", 1)[1], line  # the cp.async's own line
