"""Where pycnn's files are: a source checkout, or an installed package.

An editable install (``pip install -e .``) runs the package from the repository, so
``kernels/``, ``bench/shapes/`` and ``bench/results/`` lie beside it. A regular install
(``pip install .`` or a wheel) has the package alone, with a copy of the shape sets that
setup.py puts in ``pycnn/bench/shapes/``; what the commands write then goes to the
current folder, never into site-packages.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def checkout(package: Path = PACKAGE) -> Path | None:
    """The repository root when the package runs from a source checkout, else None."""
    root = package.parent
    if (root / "kernels").is_dir() and (root / "bench" / "shapes").is_dir():
        return root
    return None


def shapes_dir(package: Path = PACKAGE) -> Path:
    """The benchmark's shape sets: bench/shapes/ in a checkout, the packaged copy otherwise."""
    root = checkout(package)
    return root / "bench" / "shapes" if root else package / "bench" / "shapes"


def results_dir(package: Path = PACKAGE) -> Path:
    """Where records and benchmark results go by default: bench/results/ in a checkout
    (they are committed there), ./pycnn-results otherwise."""
    root = checkout(package)
    return root / "bench" / "results" if root else Path.cwd() / "pycnn-results"


def git_commit(root: Path | None, pathspec: str | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``; dirty counts changes under ``pathspec``
    (untracked files included), or tracked changes anywhere without one. A copy of the
    tree without .git (a GPU machine's) is told its commit through PYCNN_COMMIT, with
    dirty unknown; an installed package (root None) has no commit of its own. PYCNN_COMMIT
    wins over git where both are there: a copy whose .git is older than its files (a GPU
    machine's can be) would otherwise name the wrong commit."""
    if os.environ.get("PYCNN_COMMIT"):
        return os.environ["PYCNN_COMMIT"], None
    if root is not None:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        try:
            head = git("rev-parse", "HEAD")
            changes = git("status", "--porcelain",
                          *(["--", pathspec] if pathspec else ["--untracked-files=no"]))
            return head, bool(changes)
        except (OSError, subprocess.SubprocessError):
            pass
    return None, None
