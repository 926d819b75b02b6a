"""bench/gpu_session.sh, the one command a GPU window runs, tested here through its
--dry-run (every stage on the CPU): a script first run on a lent GPU must not fail on
a typo, and its exit status must say when a stage failed or was skipped."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_session.sh"
STAGES = ("gpu", "build", "verify", "memcheck", "bench", "racecheck", "ncu", "tests", "train", "nccl")


def _run(tmp_path, *args, timeout=900):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp_path)


def _emulator_missing():
    sys.path.insert(0, str(ROOT / "kernels" / "emulate"))
    try:
        import emulate
        return emulate.missing_tools()
    finally:
        sys.path.pop(0)


@pytest.mark.skipif(_emulator_missing() is not None, reason=f"no emulator: {_emulator_missing()}")
def test_the_dry_run_runs_every_stage_and_says_it_is_no_gpu_run(tmp_path):
    done = _run(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    log = (tmp_path / "out" / "session.log").read_text()
    assert "DRY RUN" in log and "nothing written here is a GPU figure" in log
    summary = log[log.index("=== summary"):]
    for stage in STAGES:
        assert f"  {stage}: ok (" in summary, (stage, summary)
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(out) <= 8, out                       # the device tool brings back 8 files at most
    assert "memcheck.log" in out and "racecheck.log" in out and "session.log" in out
    assert any(name.startswith("bench-tiny-cpu") for name in out), out   # the CPU smoke run, named so


def test_a_deadline_that_leaves_no_time_skips_stages_and_fails(tmp_path):
    done = _run(tmp_path, "--dry-run", "--budget", "0", timeout=120)
    assert done.returncode == 1
    log = (tmp_path / "out" / "session.log").read_text()
    assert "gpu: skipped (deadline)" in log and "build: skipped (deadline)" in log
    assert "no build: the stages that need the extension cannot run" in log


def test_bad_arguments_are_refused_by_name(tmp_path):
    done = _run(tmp_path, "--budget", "soon", timeout=60)
    assert done.returncode == 2 and "--budget: expected whole seconds, got 'soon'" in done.stderr
    done = _run(tmp_path, "--gpu", timeout=60)
    assert done.returncode == 2 and "unknown argument '--gpu'" in done.stderr


def test_the_caps_of_the_real_run_add_up_to_its_deadline_under_eight_minutes():
    import re
    text = SCRIPT.read_text()
    caps = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+stage (\w+)\s+(\d+) ", text, re.M)}
    assert set(caps) == set(STAGES)
    budget = int(re.search(r"^budget=(\d+)$", text, re.M).group(1))
    assert sum(caps.values()) <= budget <= 8 * 60, (caps, budget)
