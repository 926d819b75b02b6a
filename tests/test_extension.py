"""The compiled extension and the kernel sources, checked without a GPU.

- pycnn._C (if built) exposes every launcher the CUDA backend calls;
- every kernel file named in a launcher/version table exists and opens with its
  header block (what it does, why, what limits it, the measured figure: STYLE.md #2),
  and so does every other .cu file under kernels/.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CUDA_PKG = ROOT / "pycnn" / "backends" / "cuda"
CONV_PY = CUDA_PKG / "conv.py"


def _load_by_path(path: Path):
    """Execute one module file on its own: the cuda package's __init__ needs CuPy,
    launchers.py does not."""
    spec = importlib.util.spec_from_file_location("_pycnn_cuda_launchers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_launchers = _load_by_path(CUDA_PKG / "launchers.py")
KERNEL_FILES, LAUNCHERS = _launchers.KERNEL_FILES, _launchers.LAUNCHERS


def _literal_assignment(path: Path, name: str):
    """The value of a top-level ``name = <literal>`` in a Python file, read without importing it."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def conv_launchers():
    """conv.LAUNCHERS: parsed from the source when it is a literal (no CuPy needed),
    else imported (needs CuPy); None if neither works."""
    if not CONV_PY.exists():
        return None
    names = _literal_assignment(CONV_PY, "LAUNCHERS")
    if names is not None:
        return tuple(names)
    try:
        return tuple(importlib.import_module("pycnn.backends.cuda.conv").LAUNCHERS)
    except ImportError:
        return None


def _extension():
    try:
        return importlib.import_module("pycnn._C")
    except ImportError as exc:
        pytest.skip(f"pycnn._C is not built here ({exc}); PYCNN_CUDA=1 pip install -e . builds it")


def test_extension_has_every_launcher_of_the_backend():
    ext = _extension()
    missing = [name for name in LAUNCHERS if not hasattr(ext, name)]
    assert not missing, f"pycnn._C lacks launchers the CUDA backend calls: {missing}"


def test_extension_has_every_conv_launcher():
    ext = _extension()
    names = conv_launchers()
    if names is None:
        pytest.skip("conv.LAUNCHERS is not a literal and CuPy is not installed to import it")
    missing = [name for name in names if not hasattr(ext, name)]
    assert not missing, f"pycnn._C lacks conv launchers: {missing}"


def test_launcher_names_follow_the_naming_scheme():
    # launcher <op>_<pass><version> (STYLE.md #4): ends in its version number
    for name in LAUNCHERS:
        assert re.fullmatch(r"[a-z0-9_]+_(fwd|bwd)(_[a-z]+)?\d+", name), name


def test_each_launcher_is_defined_in_its_kernel_file():
    for name, rel in KERNEL_FILES.items():
        text = (ROOT / rel).read_text()
        assert re.search(rf"\bvoid {name}\(", text), f"{name} is not defined in {rel}"
        kernel = re.sub(r"(\d+)$", r"_kernel\1", name)  # relu_fwd1 -> relu_fwd_kernel1
        assert re.search(rf"__global__ void {kernel}\(", text), f"{rel} defines no kernel {kernel}"
        assert f'PYCNN_CHECK_LAUNCH("{kernel}")' in text, f"{rel}: no launch check naming {kernel}"


HEADER_PARTS = {
    "what it does": re.compile(r"what it does|^// \S.*\n//", re.I | re.M),
    "a measured figure": re.compile(r"measured", re.I),
}


def _header(path: Path) -> str:
    """The comment block at the top of a source file (// lines or one /* */ block)."""
    text = path.read_text()
    if text.lstrip().startswith("/*"):
        end = text.find("*/")
        return text[:end + 2] if end >= 0 else ""
    lines = []
    for line in text.splitlines():
        if line.startswith("//"):
            lines.append(line)
        elif line.strip() == "" and lines:
            lines.append(line)
        else:
            break
    return "\n".join(lines)


def kernel_files_in_tables():
    files = set(KERNEL_FILES.values())
    if CONV_PY.exists():
        versions = _literal_assignment(CONV_PY, "VERSIONS")
        for value in _walk(versions):
            if isinstance(value, str) and value.endswith((".cu", ".cuh")):
                files.add(value if value.startswith("kernels/") else f"kernels/conv2d/{value}")
    return sorted(files)


def _walk(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _walk(v)
    else:
        yield value


@pytest.mark.parametrize("rel", kernel_files_in_tables())
def test_kernel_file_in_a_table_exists_with_header(rel):
    path = ROOT / rel
    assert path.exists(), f"{rel} is named in a kernel table but does not exist"
    header = _header(path)
    assert len(header.splitlines()) >= 8, f"{rel}: expected a header block of at least 8 comment lines"
    for part, pattern in HEADER_PARTS.items():
        assert pattern.search(header), f"{rel}: header block lacks {part}"


@pytest.mark.parametrize("rel", sorted(p.relative_to(ROOT).as_posix()
                                       for p in (ROOT / "kernels").rglob("*.cu")))
def test_every_cu_file_has_a_header(rel):
    header = _header(ROOT / rel)
    assert len(header.splitlines()) >= 8, f"{rel}: expected a header block (STYLE.md #2)"
    assert re.search(r"measured", header, re.I), f"{rel}: header names no measured figure"
