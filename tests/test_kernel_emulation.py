"""Every CUDA kernel of pycnn, run on the CPU under the emulator's sanitizer.

Each ``kernels/emulate/emulate_<family>.cc`` calls the family's real launchers
(their ``pycnn::launch`` runs the grid on CPU fibers, kernels/common.cuh) on odd
shapes and compares with loops written from the definitions, while every load and
store is checked (memcheck, alignment, initcheck, racecheck within and between
blocks; kernels/emulate/emu.h says what each models). So CI, without a GPU,
checks each kernel's and launcher's index math, bounds, barriers and shuffles.

The checker is checked too: emu_selftest plants one bug per check in tiny kernels,
and tests/mutants/*.patch plant classic bugs in the real kernels; each must be
caught, by the check named in its header, with its message. A mutant that goes
unseen fails here. Needs g++, binutils and the CUDA headers, not a GPU.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
MUTANTS = sorted((ROOT / "tests" / "mutants").glob("*.patch"))
sys.path.insert(0, str(KERNELS / "emulate"))
import emulate  # noqa: E402  (kernels/emulate/emulate.py: build and run)

FAMILIES = emulate.FAMILIES
WORKERS = 2  # this is sized for CI's two cores
# No timeouts on the emulator runs: a loaded 2-core machine has run one 6x slower
# than an idle one. Builds keep a generous cap so a wedged compiler still ends.
BUILD_TIMEOUT = 1200

needs_tools = pytest.mark.skipif(emulate.missing_tools() is not None,
                                 reason=emulate.missing_tools() or "")


def test_every_kernel_family_has_an_emulator():
    kernel_dirs = sorted(p.name for p in KERNELS.iterdir() if p.is_dir() and any(p.glob("*.cu")))
    # emulate_counters.cc is the counters' one-op driver (pycnn.inspect.dynamic), not a family's checks
    harnesses = sorted(p.stem.removeprefix("emulate_") for p in (KERNELS / "emulate").glob("emulate_*.cc")
                       if p.stem != "emulate_counters")
    assert sorted(FAMILIES) == kernel_dirs, "a kernel family without an emulator (or a stale list)"
    assert sorted(FAMILIES) == harnesses


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulate")


@pytest.fixture(scope="session")
def family_runs(build_dir):
    """Builds every family's harness and runs it, two at a time: family -> result."""
    def one(family):
        binary = emulate.build(KERNELS / "emulate" / f"emulate_{family}.cc", build_dir / family,
                               timeout=BUILD_TIMEOUT, runtime_dir=build_dir)
        return family, emulate.run(binary, ["--quiet"])
    emulate.build(KERNELS / "emulate" / "emu_selftest.cc", build_dir / "selftest", runtime_dir=build_dir)
    with ThreadPoolExecutor(WORKERS) as pool:
        return dict(pool.map(one, ("conv2d",) + tuple(f for f in FAMILIES if f != "conv2d")))


def _failure_text(result: subprocess.CompletedProcess) -> str:
    failed = "\n".join(line for line in result.stdout.splitlines() if "MISMATCH" in line or "FAILED" in line)
    return f"exit {result.returncode}\n{failed[-6000:]}\n{result.stdout[-1500:]}\n{result.stderr[-4000:]}"


@needs_tools
@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_pass_every_check(family, family_runs):
    result = family_runs[family]
    assert result.returncode == 0, _failure_text(result)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert last.startswith("all ok") and "0 sanitizer findings" in last, _failure_text(result)


@needs_tools
def test_readme_determinism_table_is_the_emulators(family_runs):
    """kernels/README.md's table of which kernels are deterministic comes from this run
    (regenerate: python kernels/emulate/emulate.py all --write-readme)."""
    verdicts = {}
    for result in family_runs.values():
        verdicts.update(emulate.determinism(result.stdout))
    assert verdicts, "the harnesses printed no determinism table"
    text = emulate.README.read_text()
    start = text.index(emulate.TABLE_START) + len(emulate.TABLE_START)
    committed = text[start:text.index(emulate.TABLE_END)].strip()
    assert committed == emulate.determinism_table(verdicts), (
        "kernels/README.md's determinism table is stale: python kernels/emulate/emulate.py all --write-readme")


@needs_tools
@pytest.mark.parametrize("family,only", [("activation", None), ("pool", None), ("softmax", None),
                                         ("batch_norm", None), ("dropout", None), ("conv2d", "conv2d_fwd7"),
                                         ("conv2d", "conv2d_fwd12"), ("conv2d", "conv2d_bwd_data14"),
                                         ("conv2d", "conv2d_bwd_data17"),
                                         ("conv2d", "conv2d_bwd_filter15"), ("conv2d", "conv2d_bwd_filter16")])
def test_a_seeded_random_schedule_passes_too(family, only, family_runs, build_dir):
    """Threads picked at random, switched at random accesses, blocks shuffled."""
    binary = build_dir / family / f"emulate_{family}"
    result = emulate.run(binary, ["--quiet"] + (["--only", only] if only else []), seed=20261203)
    assert result.returncode == 0, _failure_text(result)
    assert "PYCNN_EMU_SEED=20261203" in result.stdout


# ---- the checker's own checks: one planted bug per check in a tiny kernel
PLANTED = {
    "deadlock": "deadlock: waits at __syncthreads",
    "divergent": "divergent",
    "partial_warp": "full-mask shuffle in a warp of 16 threads",
    "wmma_misaligned": "is not 32-byte aligned",
    "wmma_divergent": "deadlock: waits at wmma::load_matrix_sync",
    "race_shared": "SANITIZER racecheck: reverse_kernel at emu_selftest.cc",
    "race_warp": "SANITIZER racecheck: wmma_stage_kernel",
    "race_trailing_syncwarp": "with no barrier or warp sync between them",
    "race_blocks": "with no ordering (blocks of one launch run concurrently)",
    "race_threads": "SANITIZER racecheck: same_word_kernel",
    "oob_far": "is 3,996 bytes after the 4,096-byte allocation 'x'",
    "oob_before": "is 4 bytes before the 4,096-byte allocation 'y'",
    "misaligned": "SANITIZER alignment: float4_kernel at emu_selftest.cc",
    "uninit_shared": "SANITIZER initcheck: unwritten_shared_kernel",
    "uninit_global": "which no launch or host copy has written",
    "launch_threads": "SANITIZER launch: nothing_kernel",
    "launch_smem": "needs cudaFuncSetAttribute",
    "wild": "outside the device arena",
}


@needs_tools
def test_emulator_selftest_positive_checks(family_runs, build_dir):
    result = emulate.run(build_dir / "selftest" / "emu_selftest")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1].startswith("all ok"), _failure_text(result)


@needs_tools
@pytest.mark.parametrize("mode", sorted(PLANTED))
def test_emulator_catches_planted_bug(mode, family_runs, build_dir):
    result = emulate.run(build_dir / "selftest" / "emu_selftest", [mode])
    assert result.returncode == 1, f"{mode}: " + _failure_text(result)
    assert PLANTED[mode] in result.stderr, f"{mode}: {result.stderr[-3000:]}"
    if mode.startswith(("race", "oob", "misaligned", "uninit")):  # one line with kernel, source line, thread, block
        assert re.search(r"SANITIZER \w+: \w+ at emu_selftest\.cc:\d+ by thread \(\d+,\d+,\d+\) in block \(\d+,\d+,\d+\): ",
                         result.stderr), result.stderr[-2000:]


@needs_tools
def test_order_dependent_atomics_are_reported_nondeterministic(family_runs, build_dir):
    result = emulate.run(build_dir / "selftest" / "emu_selftest", ["nondeterministic"])
    assert result.returncode == 0, _failure_text(result)
    assert "deterministic sum_kernel: no" in result.stdout, result.stdout


@needs_tools
def test_a_failure_under_a_seed_prints_the_seed(family_runs, build_dir):
    result = emulate.run(build_dir / "selftest" / "emu_selftest", ["race_shared"], seed=77)
    assert result.returncode == 1 and "PYCNN_EMU_SEED=77 replays it" in result.stderr, result.stderr[-2000:]


# ---- the mutants: classic bugs planted in the real kernels
def _header(patch: Path) -> dict[str, str]:
    """A mutant's header: its first line is the title, then `# key: value` lines."""
    lines = patch.read_text().splitlines()
    fields = {"title": lines[0][2:]}
    for line in lines[1:]:
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        fields[key] = value
    return fields


def test_mutation_suite_covers_every_kind_of_bug():
    assert len(MUTANTS) >= 12
    expected = {_header(p)["expect"] for p in MUTANTS}
    assert {"memcheck", "alignment", "initcheck", "racecheck", "launch", "MISMATCH"} <= expected


@pytest.fixture(scope="session")
def mutant_runs(tmp_path_factory, family_runs, build_dir):
    """Each mutant on a scratch copy of kernels/: patched, built, run on its kernel."""
    root = tmp_path_factory.mktemp("mutants")

    def one(patch: Path):
        head = _header(patch)
        work = root / patch.stem
        shutil.copytree(KERNELS, work / "kernels")
        applied = subprocess.run(["patch", "-p1", "-s", "-d", str(work), "-i", str(patch)],
                                 capture_output=True, text=True)
        if applied.returncode != 0:
            return patch.stem, head, f"the patch no longer applies:\n{applied.stdout}{applied.stderr}", None
        try:
            binary = emulate.build(work / "kernels" / "emulate" / f"emulate_{head['family']}.cc", work / "build",
                                   kernels=work / "kernels", timeout=BUILD_TIMEOUT, runtime_dir=build_dir)
        except emulate.BuildError as err:
            return patch.stem, head, str(err), None
        return patch.stem, head, None, emulate.run(binary, ["--quiet", "--only", head["only"]])

    with ThreadPoolExecutor(WORKERS) as pool:
        return {name: (head, error, result) for name, head, error, result in pool.map(one, MUTANTS)}


@needs_tools
@pytest.mark.parametrize("mutant", [p.stem for p in MUTANTS])
def test_mutant_is_caught(mutant, mutant_runs):
    head, error, result = mutant_runs[mutant]
    assert error is None, error
    assert result.returncode == 1, f"mutant '{head['title']}' was not caught:\n" + _failure_text(result)
    expect = head["expect"]
    if expect == "MISMATCH":
        assert "MISMATCH" in result.stdout, _failure_text(result)
    else:
        assert f"SANITIZER {expect}:" in result.stderr, (
            f"mutant '{head['title']}' should be caught by {expect}:\n" + result.stderr[-3000:])
        message = head.get("message", "")
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"SANITIZER {expect}:")]
        assert any(message in line for line in lines), "\n".join(lines[:10])
