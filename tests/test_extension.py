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


# ----------------------------------------------------------------------------- the verification run,
# the parts that need no GPU (pycnn/verify.py)


def test_verify_forces_split_k_on_every_conv_backward_filter_case():
    # The grid's tiny reductions get one or two splits by default; the atomic and the
    # fixed-order split-K paths (and splits with an empty range) must still run on the GPU.
    from pycnn import verify

    def bwd_filter(x, dy, w_shape, stride, padding, dilation, groups, *, version=None,
                   deterministic=False, splits=None):
        pass

    class FakeConv:
        VERSIONS = {"fwd": {1: None, 2: None}, "bwd_filter": {1: None, 4: None}}

    case = next(c for c in verify.cases() if c.op == "conv2d_bwd_filter")
    runs = verify.case_runs(case, bwd_filter, FakeConv)
    kwargs = [kw for _, kw in runs]
    for version in (None, 1, 4):
        for det in (False, True):
            expected = {"deterministic": det} if version is None else {"version": version, "deterministic": det}
            assert expected in kwargs, (version, det)
    for splits in verify.SPLIT_K_RUNS:
        assert {"splits": splits, "deterministic": False} in kwargs
        assert {"splits": splits, "deterministic": True} in kwargs
    assert len({label for label, _ in runs}) == len(runs), "every run needs its own label"
    # N*P*Q of the first case is 2*5*7 = 70: 7 splits of ceil(ceil(70/7)/8)*8 = 16 leave
    # the last two splits empty, the case the kernel must get right (they write zeros).
    dy = case.args[1]
    assert dy.shape[0] * dy.shape[2] * dy.shape[3] == 70
    assert max(verify.SPLIT_K_RUNS) * 16 - 70 >= 16
    fwd = next(c for c in verify.cases() if c.op == "conv2d_fwd")
    assert [label for label, _ in verify.case_runs(fwd, lambda x, *, version=None: 0, FakeConv)] == [None, 1, 2]
    relu = next(c for c in verify.cases() if c.op == "relu_fwd")
    assert verify.case_runs(relu, None) == [(None, {})]


def test_memcheck_runs_without_the_memory_pool():
    # Inside CuPy's pool an array is a slice of a bigger cudaMalloc block: memcheck would
    # not see a kernel running past its end. The session script must turn the pool off.
    from pycnn import verify
    script = (ROOT / "bench" / "gpu_session.sh").read_text()
    memcheck = [line for line in script.splitlines() if "--tool memcheck" in line]
    assert memcheck and all("--no-memory-pool" in line for line in memcheck), memcheck
    assert "--no-memory-pool" in verify.__doc__


def test_verify_sees_kernel_sources_newer_than_the_extension(tmp_path):
    import os
    from pycnn import verify
    (tmp_path / "kernels" / "conv2d").mkdir(parents=True)
    old, new = tmp_path / "kernels" / "common.cuh", tmp_path / "kernels" / "conv2d" / "02_x.cu"
    ext = tmp_path / "_C.so"
    for path, when in ((old, 1_000), (ext, 2_000), (new, 3_000)):
        path.write_text("x")
        os.utime(path, (when, when))
    assert verify.kernels_newer_than_extension(tmp_path, str(ext)) == ["kernels/conv2d/02_x.cu"]
    os.utime(new, (1_500, 1_500))
    assert verify.kernels_newer_than_extension(tmp_path, str(ext)) == []


def test_verify_parses_sanitizer_summaries(tmp_path):
    from pycnn import verify
    log = tmp_path / "memcheck.log"
    log.write_text("========= COMPUTE-SANITIZER\n...\n========= ERROR SUMMARY: 3 errors\n")
    assert verify.parse_sanitizer_log(str(log))["errors"] == 3
    assert verify.parse_sanitizer_log(str(log))["passed"] is False
    race = tmp_path / "racecheck.log"
    race.write_text("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
                    "========= ERROR SUMMARY: 0 errors\n")
    got = verify.parse_sanitizer_log(str(race))
    assert (got["tool"], got["errors"], got["passed"]) == ("racecheck", 0, True)


# ----------------------------------------------------------------------------- grid limits


def _cuda_conv():
    try:
        return importlib.import_module("pycnn.backends.cuda.conv")
    except ImportError as exc:
        pytest.skip(f"the CUDA backend does not import here ({exc})")


def test_conv_default_falls_back_to_direct_where_the_gemm_grid_would_not_fit():
    conv = _cuda_conv()
    # y = ceil(channels per group / 64) and z = groups must stay <= 65535
    assert conv._gemm_grid_fits(65535 * 64, 65535)
    assert not conv._gemm_grid_fits(65535 * 64 + 1, 1)
    assert not conv._gemm_grid_fits(1, 65536)
    for pass_name in ("fwd", "bwd_data", "bwd_filter"):
        assert conv._version(pass_name, None, False) == conv.DEFAULT_VERSIONS[pass_name]
        assert conv._version(pass_name, None, False, gemm_fits=False) == 1
    assert conv._version("fwd", None, True) == 1                 # depthwise
    assert conv._version("bwd_filter", None, True) == 4
    assert conv._version("fwd", 2, False, gemm_fits=False) == 2   # asked for by name: as asked


def _conv_shape(**kw):
    shape = dict(N=1, C=1, H=1, W=1, K=1, R=1, S=1, P=1, Q=1, stride_h=1, stride_w=1,
                 dilation_h=1, dilation_w=1, pad_top=0, pad_left=0, groups=1)
    shape.update(kw)
    return shape


def test_conv_launchers_refuse_grids_past_the_y_and_z_limits_before_launching():
    ext = _extension()
    wide = 65535 * 128 + 1            # output channels: 65536 blocks in y even with 128-wide tiles
    with pytest.raises(ValueError, match=r"conv2d_fwd2: grid y=65536.*65535"):
        ext.conv2d_fwd2(0, 0, 0, 0, **_conv_shape(K=wide), relu=False, stream=0)
    with pytest.raises(ValueError, match=r"conv2d_bwd_data3: grid y=65536.*65535"):
        ext.conv2d_bwd_data3(0, 0, 0, **_conv_shape(C=wide), stream=0)
    with pytest.raises(ValueError, match=r"conv2d_bwd_filter4: grid y=\d+.*65535"):
        ext.conv2d_bwd_filter4(0, 0, 0, 0, **_conv_shape(K=wide), splits=1, deterministic=False,
                               stream=0)
    many = 65536                      # groups: z
    with pytest.raises(ValueError, match="groups=65536"):
        ext.conv2d_fwd2(0, 0, 0, 0, **_conv_shape(C=many, K=many, groups=many), relu=False, stream=0)
    with pytest.raises(ValueError, match="splits"):
        ext.conv2d_bwd_filter4(0, 0, 0, 0, **_conv_shape(C=many, K=many, groups=many), splits=1,
                               deterministic=False, stream=0)
    # the split count keeps splits * groups within z
    assert ext.conv2d_bwd_filter4_splits(**_conv_shape(N=64, H=64, W=64, P=64, Q=64, C=4096,
                                                       K=4096, groups=4096), num_sms=132) <= 65535 // 4096
