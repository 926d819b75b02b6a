"""Training runs that never lose or mix results: a folder per run, a lock on --out, signals
that stop between steps and save, I/O errors as one line with their own exit status,
checkpoints that refuse weights they cannot hold faithfully.

The signal and concurrency tests run `pycnn train` in subprocesses on 64-640 embedded
digits (a few seconds each); the rest call cli.main in this process.
"""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pycnn import cli

TRAIN = ["train", "--limit", "64", "--epochs", "1", "--no-progress", "--device", "cpu"]


def _state_hash(arrays):
    """One digest of the arrays of a state dict, in its order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _checkpoint(path):
    state, meta = cli.load_checkpoint(str(path))
    return state, meta


def _python(code, *args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(path, proc, limit=60.0):
    start = time.monotonic()
    while not os.path.exists(path):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before {path} appeared:\n"
                        f"{out}\n{err}")
        if time.monotonic() - start > limit:
            proc.kill()
            pytest.fail(f"{path} did not appear within {limit} s")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- run folders

def test_two_runs_started_together_get_their_own_folders(tmp_path):
    code = "import sys; from pycnn import cli; sys.exit(cli.main(sys.argv[1:]))"
    procs = [_python(code, *TRAIN, cwd=tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for out, err, status in results:
        assert status == 0, err
    folders = sorted(os.listdir(tmp_path / "runs"))
    assert len(folders) == 2 and folders[0] != folders[1]
    for name in folders:
        run = tmp_path / "runs" / name
        assert sorted(os.listdir(run)) == ["curves.png", "metrics.json", "model.npz"]
        metrics = json.loads((run / "metrics.json").read_text())
        _, meta = _checkpoint(run / "model.npz")
        assert metrics["run_id"] == meta["run_id"] == name       # nothing mixed
        assert name.startswith("lenet5-")
    # each run's "saved" line names its own folder
    said = sorted(out.strip().splitlines()[-1].split("(run ")[1].rstrip(")")
                  for out, _, _ in results)
    assert said == folders


def test_a_folder_in_use_is_refused_even_with_force(tmp_path, capsys):
    with cli.RunLock(str(tmp_path), "lenet5-holder"):
        for extra in ([], ["--force"]):
            assert cli.main([*TRAIN, "--out", str(tmp_path), *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1
            assert err.startswith(f"pycnn: error: --out {tmp_path}: run lenet5-holder (pid "
                                  f"{os.getpid()} on ")
            assert "is writing to this folder" in err
    assert os.listdir(tmp_path) == []              # the holder removed its lock on leaving


def test_earlier_results_are_kept_unless_force(tmp_path, capsys):
    assert cli.main([*TRAIN, "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "metrics.json").read_text())["run_id"]
    before = (tmp_path / "model.npz").read_bytes()
    capsys.readouterr()
    assert cli.main([*TRAIN, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"pycnn: error: --out {tmp_path}: holds run {first}'s model.npz, "
                   "metrics.json, curves.png; choose another --out, or --force to overwrite "
                   "them\n")
    assert (tmp_path / "model.npz").read_bytes() == before
    assert cli.main([*TRAIN, "--out", str(tmp_path), "--force"]) == 0
    second = json.loads((tmp_path / "metrics.json").read_text())["run_id"]
    assert second != first and _checkpoint(tmp_path / "model.npz")[1]["run_id"] == second
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.json", "model.npz"]


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    # a run killed with -9 leaves its lock file (the kernel drops the flock itself) and
    # the temporary file of the save it was in
    (tmp_path / cli.LOCK_NAME).write_text('{"run_id": "lenet5-dead", "pid": 999999}\n')
    (tmp_path / ".model.npz.k2j4x.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert cli.main([*TRAIN, "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.json", "model.npz"]


def test_run_id_is_unique_within_one_second():
    # 24 random bits: 50 ids in one second collide with probability 7e-5 (200 would be
    # 1e-3); a collision is still safe, since the folder is created exclusively
    ids = {cli.new_run_id("lenet5") for _ in range(50)}
    assert len(ids) == 50


# ----------------------------------------------------------------------------- signals

# The child trains 640 digits in batches of 64 (10 steps per epoch) for 3 epochs; each
# parameter update sleeps 20 ms, so that a step takes ~0.2 s and a signal sent when step
# 13 begins (epoch 2, step 3) lands in the middle of its update. After every step it
# logs the step count and a digest of the weights.
_SIGNAL_CHILD = """
import hashlib, sys, time
import numpy as np
from pycnn import cli, optim
marker, log, out = sys.argv[1:4]
real_step, real_update, count = optim.SGD.step, optim.SGD._update, [0]
def update(self, p, g, state, xp):
    time.sleep(0.02)
    real_update(self, p, g, state, xp)
def step(self):
    count[0] += 1
    if count[0] == 13:
        open(marker, "w").close()
    real_step(self)
    h = hashlib.sha256()
    for p in self.params:
        h.update(np.ascontiguousarray(p.data).tobytes())
    with open(log, "a") as f:
        f.write(f"{count[0]} {h.hexdigest()}\\n")
optim.SGD._update, optim.SGD.step = update, step
sys.exit(cli.main(["train", "--limit", "640", "--epochs", "3", "--no-progress",
                   "--device", "cpu", "--out", out]))
"""


@pytest.mark.parametrize("signame, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_mid_epoch_finishes_the_step_and_saves(tmp_path, signame, status):
    marker, log, out = tmp_path / "marker", tmp_path / "steps.log", tmp_path / "run"
    proc = _python(_SIGNAL_CHILD, marker, log, out, cwd=tmp_path)
    _wait_for(marker, proc)
    proc.send_signal(getattr(signal, signame))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    steps = dict(line.split() for line in log.read_text().splitlines())
    last = max(map(int, steps))
    # the step under way (13, or a later one if this process was slow to send) finished,
    # and no other began
    assert 13 <= last < 30 and len(steps) == last
    epoch, step = (last - 1) // 10 + 1, (last - 1) % 10 + 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert metrics["stopped"] == {"signal": signame, "epoch": epoch, "step": step,
                                  "steps_per_epoch": 10, "between_steps": True}
    assert [r["epoch"] for r in metrics["epochs"]] == list(range(1, epoch))
    state, meta = _checkpoint(out / "model.npz")
    # the saved weights are exactly those after the last finished step
    assert _state_hash(state.values()) == steps[str(last)]
    assert meta["run_id"] == metrics["run_id"]
    assert (meta["epochs"], meta["step"]) == (epoch - 1, step)
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.json", "model.npz"]
    assert f"{signame}: stopping after this step" in stderr
    assert f"model.npz holds the weights after step {step} of 10 of epoch {epoch}" in stderr


def test_a_signal_in_an_epochs_last_step_saves_it_unevaluated(tmp_path, monkeypatch, capsys):
    # in this process: the handler `pycnn train` installs turns the signal into a stop
    from pycnn import optim
    real, count = optim.SGD.step, {"n": 0}

    def step(self):
        real(self)
        count["n"] += 1
        if count["n"] == 2:                          # the last of epoch 1's two steps
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(optim.SGD, "step", step)
    assert cli.main(["train", "--limit", "128", "--epochs", "2", "--no-progress", "--device",
                     "cpu", "--out", str(tmp_path)]) == 143
    assert count["n"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # handlers put back
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == [] and metrics["stopped"]["epoch"] == 1
    assert metrics["stopped"]["step"] == 2
    _, meta = _checkpoint(tmp_path / "model.npz")
    assert (meta["epochs"], meta["step"]) == (0, 2)      # no epoch evaluated, two steps in
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model.npz"]   # no curve yet
    assert "model.npz holds the weights after step 2 of 2 of epoch 1" in capsys.readouterr().err


# The child's first checkpoint save sleeps 2 s inside np.savez, after writing part of the
# file, and touches the marker there: the test's SIGTERM arrives in the middle of it.
_SAVE_CHILD = """
import sys, time
import numpy as np
from pycnn import cli
marker, out = sys.argv[1:3]
real, calls = np.savez, [0]
def slow_savez(f, **arrays):
    calls[0] += 1
    if calls[0] == 1:
        f.write(b"PK\\x03\\x04 part of an archive")
        f.flush()
        open(marker, "w").close()
        time.sleep(2.0)
        f.seek(0)
        f.truncate()
    real(f, **arrays)
np.savez = slow_savez
sys.exit(cli.main(["train", "--limit", "64", "--epochs", "3", "--no-progress",
                   "--device", "cpu", "--out", out]))
"""


def test_sigterm_during_a_save_completes_it_and_leaves_no_temporary_file(tmp_path):
    marker, out = tmp_path / "marker", tmp_path / "run"
    proc = _python(_SAVE_CHILD, marker, out, cwd=tmp_path)
    _wait_for(marker, proc)
    assert any(n.endswith(".tmp") for n in os.listdir(out))    # the save is under way
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.json", "model.npz"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and [r["epoch"] for r in metrics["epochs"]] == [1]
    assert metrics["stopped"]["epoch"] == 1 and metrics["stopped"]["step"] == 1
    state, meta = _checkpoint(out / "model.npz")
    assert (meta["epochs"], meta["step"]) == (1, 0) and state


def test_a_second_signal_stops_at_once_and_cleans_up(tmp_path):
    marker, out = tmp_path / "marker", tmp_path / "run"
    proc = _python(_SAVE_CHILD, marker, out, cwd=tmp_path)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert os.listdir(out) == []       # the cut save's temporary file and the lock are gone
    assert "SIGTERM: interrupted" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------- I/O errors

def test_full_disk_is_one_line_exit_3_and_keeps_the_previous_checkpoint(tmp_path, capsys,
                                                                         monkeypatch):
    real, calls = np.savez, {"n": 0}

    def savez_until_full(f, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:                         # epoch 2's checkpoint: the disk fills up
            f.write(b"PK\x03\x04 the first bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, **arrays)
    monkeypatch.setattr(np, "savez", savez_until_full)
    assert cli.main(["train", "--limit", "64", "--epochs", "3", "--no-progress", "--device",
                     "cpu", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    path = tmp_path / "model.npz"
    assert err == (f"pycnn: error: cannot write {path}: No space left on device (ENOSPC); "
                   "its previous version is intact\n")
    state, meta = _checkpoint(path)
    assert meta["epochs"] == 1 and all(np.isfinite(v).all() for v in state.values())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1]        # as far as model.npz goes
    assert metrics["io_error"].startswith(f"cannot write {path}: No space left")
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model.npz"]   # no .tmp, no lock


def test_io_error_on_the_first_save_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    def no_permission(f, **arrays):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(np, "savez", no_permission)
    assert cli.main([*TRAIN, "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.endswith("model.npz: Permission denied (EACCES); nothing was written there\n")
    assert err.count("\n") == 1


def test_atomic_write_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def recording_fsync(fd):
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    cli.write_json(str(tmp_path / "m.json"), {"a": 1})
    assert synced == ["file", "dir"]                # the rename is durable too
    assert os.listdir(tmp_path) == ["m.json"]


# ----------------------------------------------------------------------------- checkpoints

def _poisoned_checkpoint(tmp_path, change):
    from pycnn import models
    path = tmp_path / "m.npz"
    cli.save_checkpoint(str(path), models.get_model("lenet5"),
                        {"model": "lenet5", "kwargs": {}, "data": "embedded-mnist",
                         "limit": 20, "seed": 0})
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    change(entries)
    np.savez(path, **entries)
    return path


def _set_nan(entries):
    entries["features.3.weight"] = entries["features.3.weight"].copy()
    entries["features.3.weight"][0, 0, 0, :2] = [np.nan, np.inf]


@pytest.mark.parametrize("change, expected", [
    (_set_nan, "tensor 'features.3.weight' (shape (16, 6, 5, 5)) holds 1 nan and 1 inf "
               "values of 2400; expected finite weights"),
    (lambda e: e.update({"classifier.1.weight": e["classifier.1.weight"].astype(np.int8)}),
     "tensor 'classifier.1.weight' has dtype int8; expected float32 or float64"),
    (lambda e: e.update({"features.0.bias": e["features.0.bias"].astype(np.float16)}),
     "tensor 'features.0.bias' has dtype float16; expected float32 or float64"),
], ids=["nan-inf", "int8", "float16"])
def test_eval_refuses_weights_it_cannot_hold(tmp_path, capsys, change, expected):
    path = _poisoned_checkpoint(tmp_path, change)
    assert cli.main(["eval", "--checkpoint", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pycnn: error: --checkpoint {path}: {expected}")
    assert "--allow-bad-weights" in err and err.count("\n") == 1
    # the override loads it as it is, to look at it
    assert cli.main(["eval", "--checkpoint", str(path), "--device", "cpu",
                     "--allow-bad-weights"]) == 0


# ----------------------------------------------------------------------------- documentation

def test_exit_statuses_are_documented_in_help_and_readme(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    train_text = capsys.readouterr().out
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    table = readme.split("## Exit statuses and signals")[1].split("\n## ")[0]
    for status in (cli.EXIT_DIVERGED, cli.EXIT_USAGE, cli.EXIT_IO, cli.EXIT_INTERRUPTED,
                   cli.EXIT_TERMINATED):
        assert f"  {status}  " in text and f"  {status}  " in train_text
        assert f"| {status} |" in table
    assert (cli.EXIT_INTERRUPTED, cli.EXIT_TERMINATED) == (130, 143)
