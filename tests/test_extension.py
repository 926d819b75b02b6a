"""The compiled extension and the kernel sources, checked without a GPU.

- pycnn._C (if built) exposes every launcher the CUDA backend calls;
- every kernel file named in a launcher/version table exists and opens with its
  header block (what it does, why, what limits it, the measured figure),
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
BATCH_NORM_PY = CUDA_PKG / "batch_norm.py"


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


def module_launchers(path: Path = CONV_PY):
    """LAUNCHERS of a backend module (conv.py by default): parsed from the source when
    it is a literal (no CuPy needed), else imported (needs CuPy); None if neither works."""
    if not path.exists():
        return None
    names = _literal_assignment(path, "LAUNCHERS")
    if names is not None:
        return tuple(names)
    try:
        return tuple(importlib.import_module(f"pycnn.backends.cuda.{path.stem}").LAUNCHERS)
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


@pytest.mark.parametrize("path", [CONV_PY, BATCH_NORM_PY], ids=lambda p: p.stem)
def test_extension_has_every_multi_kernel_launcher(path):
    ext = _extension()
    names = module_launchers(path)
    if names is None:
        pytest.skip(f"{path.stem}.LAUNCHERS is not a literal and CuPy is not installed to import it")
    missing = [name for name in names if not hasattr(ext, name)]
    assert not missing, f"pycnn._C lacks {path.stem} launchers: {missing}"


def test_launcher_names_follow_the_naming_scheme():
    # launcher <op>_<pass><version>: ends in its version number
    for name in LAUNCHERS:
        assert re.fullmatch(r"[a-z0-9_]+_(fwd|bwd)(_[a-z]+)?\d+", name), name


def test_each_launcher_is_defined_in_its_kernel_file():
    for name, rel in KERNEL_FILES.items():
        text = (ROOT / rel).read_text()
        assert re.search(rf"\bvoid {name}\(", text), f"{name} is not defined in {rel}"
        kernel = re.sub(r"(\d+)$", r"_kernel\1", name)  # relu_fwd1 -> relu_fwd_kernel1
        assert re.search(rf"__global__ void {kernel}\(", text), f"{rel} defines no kernel {kernel}"
        # pycnn::launch (common.cuh) checks every launch and names the kernel in its error
        assert f'"{kernel}"' in text and "launch" in text, f"{rel}: no checked launch naming {kernel}"
        assert "<<<" not in text, f"{rel}: a raw <<<...>>> launch bypasses pycnn::launch (and the emulator)"


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
    assert len(header.splitlines()) >= 8, f"{rel}: expected a header block"
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
        for det in (False, True):                  # every split-K version, not just the default
            assert {"version": 4, "splits": splits, "deterministic": det} in kwargs
            assert {"version": 1, "splits": splits, "deterministic": det} not in kwargs
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
    memcheck = [line for line in script.splitlines() if line.startswith("memcheck()")]
    assert len(memcheck) == 1 and "--no-memory-pool" in memcheck[0], memcheck
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
    done = f"{verify.DONE} 134 runs, 0 failed, aborted: no\n"

    def parse(name, text):
        (tmp_path / name).write_text(text)
        return verify.parse_sanitizer_log(str(tmp_path / name))

    got = parse("memcheck.log", f"========= COMPUTE-SANITIZER\n...\n{done}========= ERROR SUMMARY: 3 errors\n")
    assert (got["tool"], got["errors"], got["passed"]) == ("memcheck", 3, False)
    got = parse("memcheck.log", f"{done}========= ERROR SUMMARY: 0 errors\n")
    assert (got["errors"], got["verify_runs"], got["passed"], got["note"]) == (0, 134, True, "")
    # racecheck: its own summary's counts, a hazard not counted twice, warnings apart
    got = parse("racecheck.log", f"{done}========= RACECHECK SUMMARY: 3 hazards displayed "
                "(2 errors, 1 warning)\n========= ERROR SUMMARY: 2 errors\n")
    assert (got["tool"], got["errors"], got["warnings"], got["passed"]) == ("racecheck", 2, 1, False)
    got = parse("racecheck.log", f"{done}========= RACECHECK SUMMARY: 0 hazards displayed "
                "(0 errors, 0 warnings)\n")
    assert (got["errors"], got["warnings"], got["passed"]) == (0, 0, True)
    # zero errors about a run that died, failed comparisons or stopped at a fault: not a pass
    died = parse("memcheck.log", "Traceback ...\nSegmentation fault\n========= ERROR SUMMARY: 0 errors\n")
    assert died["passed"] is False and "did not finish" in died["note"]
    failing = parse("memcheck.log", f"{verify.DONE} 134 runs, 2 failed, aborted: no\n"
                    "========= ERROR SUMMARY: 0 errors\n")
    assert failing["passed"] is False and "2 of 134 comparisons failed" in failing["note"]
    aborted = parse("memcheck.log", f"{verify.DONE} 40 runs, 1 failed, aborted: yes\n"
                    "========= ERROR SUMMARY: 1 error\n")
    assert aborted["passed"] is False and "aborted" in aborted["note"]
    assert parse("memcheck.log", done)["note"] == "no summary line found"


def test_verify_quick_covers_depthwise_large_tiles_and_batch_norm_splits():
    from pycnn import verify
    quick = verify.quick_cases()
    fwd = [c.args for c in quick if c.op == "conv2d_fwd"]     # (x, w, b, stride, pad, dil, groups)
    assert any(w.shape[1] == 1 and groups > 1 for _, w, *_, groups in fwd), "a depthwise case"
    large = [stride for x, w, _, stride, *_ in fwd
             if x.shape[0] * x.shape[2] * x.shape[3] >= 132 * 128 and w.shape[0] >= 96 and w.shape[1] >= 96]
    assert (1, 1) in large and (2, 2) in large, "large tiles, and version 11's phases on them"
    bn = {c.args[1].shape for c in quick if c.op == "batch_norm_bwd"}
    assert (16, 4, 32, 32) in bn
    assert len(quick) < len(verify.cases()) / 4


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
    for pass_name in ("fwd", "bwd_data", "bwd_filter"):          # depthwise: version 6, grid or not
        assert conv._version(pass_name, None, True) == 6
        assert conv._version(pass_name, None, True, gemm_fits=False) == 6
    assert conv._version("fwd", 2, False, gemm_fits=False) == 2   # asked for by name: as asked
    # backward-data: version 11 where its grid (groups * stride phases in z) fits, else 3
    assert conv._version("bwd_data", None, False) == 11
    assert conv._version("bwd_data", None, False, phased_fits=False) == 3
    assert conv._version("bwd_data", None, False, gemm_fits=False, phased_fits=False) == 1
    assert conv._version("bwd_data", None, True, phased_fits=False) == 6
    assert conv._version("bwd_data", 11, False, phased_fits=False) == 11   # asked for: as asked
    for pass_name in ("fwd", "bwd_filter"):
        assert conv._version(pass_name, None, False, phased_fits=False) == conv.DEFAULT_VERSIONS[pass_name]
    with pytest.raises(ValueError, match="version: 6 runs depthwise convolutions only"):
        conv._version("bwd_data", 6, False)


def test_conv_versions_for_leaves_the_depthwise_kernels_to_depthwise_shapes():
    conv = _cuda_conv()
    assert conv.versions_for("fwd", (8, 4, 3, 3)) == [1, 2, 7, 8, 12, 13]
    assert conv.versions_for("fwd", (8, 1, 3, 3)) == [1, 2, 6, 7, 8, 12, 13]    # C/groups = 1, multiplier 8
    assert conv.versions_for("bwd_data", (8, 1, 5, 5)) == [1, 3, 6, 9, 11, 14, 17]
    assert conv.versions_for("bwd_filter", (8, 2, 3, 3)) == [1, 4, 10, 15, 16]
    assert conv.versions_for("bwd_bias", (8, 2, 3, 3)) == [5]


def test_bench_labels_the_tensor_core_versions():
    _cuda_conv()
    from pycnn.bench.harness import conv_versions
    be = importlib.import_module("pycnn.backends.cuda")
    _, runs = conv_versions(be, "conv_fwd", (8, 4, 3, 3))
    assert runs == [("pycnn v01", 1), ("pycnn v02", 2), ("pycnn v07", 7), ("pycnn v08 3xTF32", 8),
                    ("pycnn v12", 12), ("pycnn v13 3xTF32", 13)]
    _, runs = conv_versions(be, "conv_bwd_filter", (8, 4, 3, 3))
    assert runs == [("pycnn v01", 1), ("pycnn v04", 4), ("pycnn v10 3xTF32", 10), ("pycnn v15", 15),
                    ("pycnn v16", 16)]


def test_bench_times_every_version_of_batch_norm_and_max_pool_backward():
    _cuda_conv()
    from pycnn.bench.harness import module_versions
    be = importlib.import_module("pycnn.backends.cuda")
    for op, module in (("batch_norm_fwd", "batch_norm"), ("batch_norm_bwd", "batch_norm"),
                       ("max_pool_bwd", "pool")):
        target, runs = module_versions(be, op)
        assert target.__name__ == f"pycnn.backends.cuda.{module}"
        assert runs == [("pycnn v01", 1), ("pycnn v02", 2)], op


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
    # version 11 puts groups * stride phases in z
    with pytest.raises(ValueError, match=r"conv2d_bwd_data11: groups \* stride_h \* stride_w = "
                                         r"16384 \* 2 \* 2 exceeds the grid's z limit"):
        ext.conv2d_bwd_data11(0, 0, 0, **_conv_shape(C=16384, K=16384, groups=16384, H=2, W=2,
                                                     stride_h=2, stride_w=2), stream=0)
    with pytest.raises(ValueError, match=r"conv2d_bwd_data11: groups \* stride_h \* stride_w = "
                                         r"1 \* 2147483647 \* 2147483647 exceeds"):
        ext.conv2d_bwd_data11(0, 0, 0, **_conv_shape(stride_h=2**31 - 1, stride_w=2**31 - 1), stream=0)
    with pytest.raises(ValueError, match=r"conv2d_bwd_data11: grid y=65536.*65535"):
        ext.conv2d_bwd_data11(0, 0, 0, **_conv_shape(C=wide), stream=0)
    # versions 14 and 17 (14's tables) the same, before the prep kernel runs; and the
    # workspace is checked
    for name in ("conv2d_bwd_data14", "conv2d_bwd_data17"):
        launcher = getattr(ext, name)
        with pytest.raises(ValueError, match=name + r": groups \* stride_h \* stride_w = "
                                              r"16384 \* 2 \* 2 exceeds the grid's z limit"):
            launcher(0, 0, 0, 16, **_conv_shape(C=16384, K=16384, groups=16384, H=2, W=2,
                                                stride_h=2, stride_w=2), stream=0)
        with pytest.raises(ValueError, match=name + r": grid y=65536.*65535"):
            launcher(0, 0, 0, 16, **_conv_shape(C=wide), stream=0)
        with pytest.raises(ValueError, match=name + r": workspace: expected 32 bytes "
                                              r"\(conv2d_bwd_data14_workspace_bytes\), got a null pointer"):
            launcher(0, 0, 0, 0, **_conv_shape(), stream=0)
        with pytest.raises(ValueError, match=name + ": workspace: expected a 16-byte aligned"):
            launcher(0, 0, 0, 4, **_conv_shape(), stream=0)
    shape = _conv_shape(K=64, C=32, groups=2, R=3, S=3)
    assert ext.conv2d_bwd_data17_workspace_bytes(**shape) == ext.conv2d_bwd_data14_workspace_bytes(**shape)
    # the filter again (|w| floats, to 16 bytes), then one 16-byte entry per (kg, r, s)
    assert ext.conv2d_bwd_data14_workspace_bytes(**_conv_shape(K=64, C=32, groups=2, R=3, S=3)) \
        == 64 * 16 * 9 * 4 + 32 * 9 * 16
    assert ext.conv2d_bwd_data14_workspace_bytes(**_conv_shape(K=3, C=1, R=1, S=1)) == 16 + 3 * 16
    with pytest.raises(ValueError, match="splits"):
        ext.conv2d_bwd_filter4(0, 0, 0, 0, **_conv_shape(C=many, K=many, groups=many), splits=1,
                               deterministic=False, stream=0)
    # the depthwise kernels refuse other shapes, and their split and workspace sizes
    with pytest.raises(ValueError, match=r"conv2d_fwd6: depthwise only \(C/groups = 1\), got C=4 groups=2"):
        ext.conv2d_fwd6(0, 0, 0, 0, **_conv_shape(C=4, K=4, groups=2), relu=False, stream=0)
    with pytest.raises(ValueError, match="conv2d_bwd_data6: depthwise only"):
        ext.conv2d_bwd_data6(0, 0, 0, **_conv_shape(C=2), stream=0)
    dw = _conv_shape(N=32, C=32, K=32, groups=32, H=112, W=112, P=112, Q=112, R=3, S=3)
    assert ext.conv2d_bwd_filter6_splits(**dw, num_sms=132) == 9          # ceil(2 * 132 / 32)
    assert ext.conv2d_bwd_filter6_splits(**{**dw, "C": 1024, "K": 1024, "groups": 1024},
                                         num_sms=132) == 1
    assert ext.conv2d_bwd_filter6_splits(**{**dw, "N": 1, "P": 7, "Q": 7}, num_sms=132) == 1
    assert ext.conv2d_bwd_filter6_workspace_bytes(**dw, splits=3) == 3 * 32 * 9 * 4
    assert ext.conv2d_bwd_filter6_workspace_bytes(**dw, splits=1) == 0
    with pytest.raises(ValueError, match=r"splits must be in \[1, 65535\], got 65536"):
        ext.conv2d_bwd_filter6(0, 0, 0, 0, **dw, splits=65536, stream=0)
    with pytest.raises(ValueError, match="splits=3 needs a workspace of 3456 bytes"):
        ext.conv2d_bwd_filter6(0, 0, 0, 0, **dw, splits=3, stream=0)
    # the split count keeps splits * groups within z
    assert ext.conv2d_bwd_filter4_splits(**_conv_shape(N=64, H=64, W=64, P=64, Q=64, C=4096,
                                                       K=4096, groups=4096), num_sms=132) <= 65535 // 4096


# ----------------------------------------------------------------------------- the CUDA backend's
# Python side, on a machine without a GPU: fake CuPy arrays (pointers that are never
# dereferenced) go through every check to the real pycnn._C launchers, which validate
# their arguments and then fail to launch for want of a driver: a RuntimeError naming
# the kernel proves that everything before the launch accepted the call.

FAKE_STREAM = 0x5EED


@pytest.fixture
def fake_gpu(monkeypatch):
    try:
        import cupy as cp
        cuda = importlib.import_module("pycnn.backends.cuda")
    except ImportError as exc:
        pytest.skip(f"the CUDA backend does not import here ({exc})")
    if cp.cuda.is_available():
        pytest.skip("a GPU is present: fake pointers must not reach a real kernel (test_gpu.py runs there)")
    from pycnn.backends.cuda import _common, batch_norm, conv, pointwise, pool, softmax
    monkeypatch.setenv("PYCNN_TUNE", "0")      # the heuristic defaults: no timing on fake arrays

    next_ptr = [0x7F0000000000]

    def fake(shape, dtype=cp.float32, device=0):
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        mem = cp.cuda.UnownedMemory(next_ptr[0], max(size, 1), None, device_id=device)
        next_ptr[0] += (size + 4095) // 4096 * 4096 + 4096
        return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(mem, 0))

    calls = []

    def recording(name, real):
        def launcher(*args, **kwargs):
            calls.append((name, args))
            return real(*args, **kwargs)
        return launcher

    monkeypatch.setattr(_common, "current_device", lambda: 0)
    for module in (batch_norm, conv, pointwise, pool, softmax):
        monkeypatch.setattr(module, "stream", lambda: FAKE_STREAM)
        monkeypatch.setattr(module, "empty", lambda shape, dtype=cp.float32: fake(tuple(shape), dtype))
    monkeypatch.setattr(conv, "_num_sms", lambda: 132)
    monkeypatch.setattr(batch_norm, "_num_sms", lambda: 132)
    for name in [n for n in cuda.LAUNCHERS if hasattr(_common._C, n)]:
        monkeypatch.setattr(_common._C, name, recording(name, getattr(_common._C, name)))
    for table in conv.VERSIONS.values():
        for version, real in list(table.items()):
            monkeypatch.setitem(table, version, recording(real.__name__, real))
    return type("FakeGpu", (), {"cp": cp, "cuda": cuda, "conv": conv, "fake": staticmethod(fake),
                                "calls": calls})


import numpy as np  # noqa: E402


def _launches(g, fn, *args, kernel, **kwargs):
    """Call fn; it must get as far as launching `kernel` (on FAKE_STREAM) and no further."""
    g.calls.clear()
    with pytest.raises(RuntimeError, match=kernel):
        fn(*args, **kwargs)
    name, call_args = g.calls[-1]
    assert call_args[-1] == FAKE_STREAM, f"{name} was not given CuPy's current stream"
    return name, call_args


def test_cuda_backend_reaches_every_launch_with_checked_arguments(fake_gpu):
    g, cp = fake_gpu, fake_gpu.cp
    be, f = g.cuda, g.fake
    x, dy, y = f((2, 3, 4, 5)), f((2, 3, 4, 5)), f((2, 3, 4, 5))
    name, args = _launches(g, be.relu_fwd, x, kernel="relu_fwd_kernel1")
    assert name == "relu_fwd1" and args[0] == x.data.ptr and args[2] == 120
    _launches(g, be.relu_bwd, dy, y, kernel="relu_bwd_kernel1")
    _launches(g, be.leaky_relu_fwd, x, 0.1, kernel="leaky_relu_fwd_kernel1")
    _launches(g, be.leaky_relu_bwd, dy, x, 0.1, kernel="leaky_relu_bwd_kernel1")
    _launches(g, be.sigmoid_fwd, x, kernel="sigmoid_fwd_kernel1")
    _launches(g, be.sigmoid_bwd, dy, y, kernel="sigmoid_bwd_kernel1")
    _launches(g, be.tanh_fwd, x, kernel="tanh_fwd_kernel1")
    _launches(g, be.tanh_bwd, dy, y, kernel="tanh_bwd_kernel1")
    _, args = _launches(g, be.bias_relu_fwd, x, f((3,)), kernel="bias_relu_fwd_kernel1")
    assert args[3:6] == (120, 3, 20)                                 # n, channels, inner
    _, args = _launches(g, be.dropout_fwd, x, 0.5, -1, kernel="dropout_fwd_kernel1")
    assert args[5] == 0xFFFFFFFF                                     # the seed mod 2**32
    _launches(g, be.dropout_bwd, dy, f((2, 3, 4, 5), cp.uint8), 0.5, kernel="dropout_bwd_kernel1")
    for dim, rows in ((1, (2, 3, 20)), (3, (24, 5, 1))):
        _, args = _launches(g, be.softmax_fwd, x, dim, kernel="softmax_fwd")
        assert args[2:5] == rows                                     # outer, dim, inner
        _launches(g, be.log_softmax_fwd, x, dim, kernel="log_softmax_fwd")
        _launches(g, be.softmax_bwd, dy, y, dim, kernel="softmax_bwd")
        _launches(g, be.log_softmax_bwd, dy, y, dim, kernel="log_softmax_bwd")
    c3 = [f((3,)) for _ in range(4)]
    _launches(g, be.batch_norm_fwd, x, *c3, True, 0.1, 1e-5, kernel="batch_norm_fwd_train_kernel1")
    _launches(g, be.batch_norm_fwd, x, None, None, None, None, True, 0.1, 1e-5,
              kernel="batch_norm_fwd_train_kernel1")
    _launches(g, be.batch_norm_fwd, x, *c3, False, 0.1, 1e-5, kernel="batch_norm_fwd_infer_kernel1")
    _launches(g, be.batch_norm_bwd, dy, x, c3[0], c3[1], c3[2], True, kernel="batch_norm_bwd_kernel1")
    # 65536 values in each of 3 channels: version 2 splits them, 16 splits of 4096
    xb, dyb = f((64, 3, 32, 32)), f((64, 3, 32, 32))
    name, args = _launches(g, be.batch_norm_fwd, xb, *c3, True, 0.1, 1e-5, kernel="batch_norm_fwd_sums_kernel2")
    assert name == "batch_norm_fwd_train2" and args[8] != 0 and args[9:13] == (64, 3, 1024, 16)
    name, args = _launches(g, be.batch_norm_bwd, dyb, xb, c3[0], c3[1], c3[2], False,
                           kernel="batch_norm_bwd_sums_kernel2")
    assert name == "batch_norm_bwd2" and args[8] != 0 and args[9:13] == (64, 3, 1024, 16)
    _launches(g, be.batch_norm_fwd, xb, *c3, True, 0.1, 1e-5, version=1, kernel="batch_norm_fwd_train_kernel1")
    _launches(g, be.batch_norm_bwd, dyb, xb, c3[0], c3[1], c3[2], True, version=1,
              kernel="batch_norm_bwd_kernel1")
    _launches(g, be.batch_norm_fwd, x, *c3, True, 0.1, 1e-5, version=2,       # asked for: one split
              kernel="batch_norm_fwd_sums_kernel2")
    with pytest.raises(ValueError, match=r"version: expected None or one of \[1, 2\] for batch norm bwd"):
        be.batch_norm_bwd(dyb, xb, c3[0], c3[1], c3[2], True, version=3)

    conv = g.conv
    xc, w, b = f((2, 4, 9, 9)), f((6, 2, 3, 3)), f((6,))
    geometry = ((2, 1), (1, 1, 0, 2), (1, 1), 2)                      # stride, padding, dilation, groups
    dyc = f((2, 6, 5, 9))                                             # P = (9+2-3)//2+1, Q = 9+(0+2)-3+1
    for version, kernel in ((None, "conv2d_fwd_kernel7"), (1, "conv2d_fwd_kernel1"), (2, "conv2d_fwd_kernel2"),
                            (7, "conv2d_fwd_kernel7"), (8, "conv2d_fwd_kernel8"),
                            (13, "conv2d_fwd_kernel13")):
        _, args = _launches(g, conv.conv2d_fwd, xc, w, b, *geometry, version=version, kernel=kernel)
        assert args[4:20] == (2, 4, 9, 9, 6, 3, 3, 5, 9, 2, 1, 1, 1, 1, 0, 2)
    # version 12 takes a workspace and its split count: none on this small layer's 1 split...
    name, args = _launches(g, conv.conv2d_fwd, xc, w, b, *geometry, version=12, kernel="conv2d_fwd_kernel12")
    assert name == "conv2d_fwd12" and args[4] == 0 and args[5:21] == (2, 4, 9, 9, 6, 3, 3, 5, 9, 2, 1, 1, 1, 1, 0, 2)
    assert args[21:23] == (False, 1)                                  # relu, splits
    # ... and 16 (the most) on a layer of one 64x64 block and C*R*S = 2304: a workspace
    xs, ws = f((1, 256, 8, 8)), f((64, 256, 3, 3))
    name, args = _launches(g, conv.conv2d_bias_relu_fwd, xs, ws, None, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                           version=12, kernel="conv2d_fwd_kernel12")
    assert args[21:23] == (True, 16) and args[4] != 0, "split-K needs its workspace"
    for version, kernel in ((None, "conv2d_bwd_data_kernel11"), (1, "conv2d_bwd_data_kernel1"),
                            (3, "conv2d_bwd_data_kernel3"), (9, "conv2d_bwd_data_kernel9"),
                            (11, "conv2d_bwd_data_kernel11"),       # stride (2, 1): 11 by default
                            (14, "conv2d_bwd_data_prep_kernel14")):  # 14: its tables first
        _launches(g, conv.conv2d_bwd_data, dyc, w, (2, 4, 9, 9), *geometry, version=version, kernel=kernel)
    _launches(g, conv.conv2d_bwd_data, f((2, 6, 9, 9)), w, (2, 4, 9, 9), (1, 1), (1, 1, 0, 2), (1, 1), 2,
              kernel="conv2d_bwd_data_kernel11")                     # stride 1: one phase, 11 too
    for kwargs, kernel in (({}, "conv2d_bwd_filter"), ({"version": 1}, "conv2d_bwd_filter_kernel1"),
                           ({"version": 4, "splits": 3, "deterministic": True}, "conv2d_bwd_filter_kernel4"),
                           ({"version": 4, "splits": 1}, "conv2d_bwd_filter_kernel4"),
                           ({"version": 10, "splits": 3, "deterministic": True}, "conv2d_bwd_filter_kernel10"),
                           ({"version": 10}, "conv2d_bwd_filter_kernel10"),
                           ({"version": 15, "splits": 3, "deterministic": True}, "conv2d_bwd_filter_kernel15"),
                           ({"version": 15}, "conv2d_bwd_filter_kernel15"),
                           ({"version": 16, "splits": 3, "deterministic": True}, "conv2d_bwd_filter_kernel16"),
                           ({"version": 16}, "conv2d_bwd_filter_kernel16")):
        _, args = _launches(g, conv.conv2d_bwd_filter, xc, dyc, (6, 2, 3, 3), *geometry, **kwargs,
                            kernel=kernel)
        if kwargs.get("deterministic"):
            assert args[3] != 0, "deterministic split-K needs its workspace"
    _launches(g, conv.conv2d_bwd_bias, dyc, kernel="conv2d_bwd_bias_kernel5")
    # depthwise (C/groups = 1) goes to version 6 by default; asking for it on a dense layer fails first
    dw_geometry = ((1, 1), (1, 1, 1, 1), (1, 1), 4)
    xd, wd, dyd = f((2, 4, 5, 5)), f((8, 1, 3, 3)), f((2, 8, 5, 5))
    name, _ = _launches(g, conv.conv2d_fwd, xd, wd, None, *dw_geometry, kernel="conv2d_fwd_kernel6")
    assert name == "conv2d_fwd6"
    name, _ = _launches(g, conv.conv2d_bwd_data, dyd, wd, (2, 4, 5, 5), *dw_geometry,
                        kernel="conv2d_bwd_data_kernel6")
    assert name == "conv2d_bwd_data6"
    for splits in (1, 3):
        name, args = _launches(g, conv.conv2d_bwd_filter, xd, dyd, (8, 1, 3, 3), *dw_geometry,
                               splits=splits, kernel="conv2d_bwd_filter_kernel6")
        assert name == "conv2d_bwd_filter6" and (args[3] != 0) == (splits > 1), "workspace iff splits > 1"
    g.calls.clear()
    with pytest.raises(ValueError, match="version: 6 runs depthwise"):
        conv.conv2d_fwd(xc, w, b, *geometry, version=6)
    assert not g.calls


def test_default_version_names_the_kernel_a_default_call_launches(fake_gpu):
    # The benchmark labels its default rows with default_version (no GPU needed);
    # it must name what the call really runs, shape by shape.
    from pycnn.backends.cuda import batch_norm
    from pycnn.bench.harness import default_runs
    g, f, conv = fake_gpu, fake_gpu.fake, fake_gpu.conv
    shapes = [  # x, w, stride, padding, groups
        ((2, 4, 9, 9), (6, 4, 3, 3), (1, 1), (1, 1, 1, 1), 1),     # dense: 7 / 11 / 4
        ((2, 4, 9, 9), (6, 2, 3, 3), (2, 1), (1, 1, 0, 2), 2),     # strided, grouped: bwd_data 11
        ((1, 2, 4, 4), (4, 1, 1, 1), (2, 2), (0, 0, 0, 0), 2),     # 2 groups x 4 phases: fits, 11
        ((2, 4, 9, 9), (8, 1, 3, 3), (2, 2), (1, 1, 1, 1), 4),     # depthwise wins over strided
        ((1, 2, 4, 4), (65535 * 64 + 1, 2, 1, 1), (1, 1), (0, 0, 0, 0), 1),  # grid too tall: 1
    ]
    for xs, ws, stride, pad, groups in shapes:
        ys = (xs[0], ws[0], (xs[2] + pad[0] + pad[1] - ws[2]) // stride[0] + 1,
              (xs[3] + pad[2] + pad[3] - ws[3]) // stride[1] + 1)
        geometry = (stride, pad, (1, 1), groups)
        calls = {"fwd": lambda: conv.conv2d_fwd(f(xs), f(ws), None, *geometry),
                 "bwd_data": lambda: conv.conv2d_bwd_data(f(ys), f(ws), xs, *geometry),
                 "bwd_filter": lambda: conv.conv2d_bwd_filter(f(xs), f(ys), ws, *geometry)}
        for pass_name, call in calls.items():
            want = conv.default_version(pass_name, xs, ws, stride, groups)
            g.calls.clear()
            with pytest.raises(RuntimeError):
                call()
            assert g.calls[-1][0] == f"conv2d_{pass_name}{want}", (xs, ws, stride, pass_name)
            case = {"C": xs[1], "H": xs[2], "W": xs[3], "K": ws[0], "R": ws[2], "S": ws[3],
                    "stride": stride, "padding4": pad, "dilation": (1, 1), "groups": groups}
            assert default_runs(g.cuda, "conv_" + pass_name, case, xs[0]) == want
    assert conv.default_version("bwd_data", (2, 4, 9, 9), (6, 4, 3, 3), (2, 2)) == 11
    assert [conv.default_version(p, (2, 4, 9, 9), (6, 4, 3, 3)) for p in ("fwd", "bwd_data", "bwd_filter")] \
        == [7, 11, 4]
    # groups x phases past gridDim.z's 65535 (version 11's grid), one group fitting: version 3
    assert conv.default_version("bwd_data", (1, 20000, 9, 9), (20000, 1, 1, 1), (2, 2), 20000) == 6
    assert conv.default_version("bwd_data", (1, 40000, 9, 9), (20000, 2, 1, 1), (2, 2), 20000) == 3
    assert conv.default_version("bwd_bias", None, None) == 5
    c3 = [f((3,)) for _ in range(4)]
    for xs, want in (((2, 3, 4, 5), 1), ((64, 3, 32, 32), 2)):      # 2 where it splits
        assert batch_norm.default_version(xs[0], xs[1], xs[2] * xs[3]) == want
        g.calls.clear()
        with pytest.raises(RuntimeError):
            g.cuda.batch_norm_fwd(f(xs), *c3, True, 0.1, 1e-5)
        assert g.calls[-1][0] == f"batch_norm_fwd_train{want}"
        case = {"C": xs[1], "H": xs[2], "W": xs[3]}
        assert default_runs(g.cuda, "batch_norm_bwd", case, xs[0]) == want
    from pycnn.backends.cuda import pool
    dy, idx = f((2, 3, 4, 4)), f((2, 3, 4, 4), g.cp.int64)
    g.calls.clear()
    with pytest.raises(RuntimeError):
        pool.max_pool2d_bwd(dy, idx, (2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1))
    assert g.calls[-1][0] == f"max_pool2d_bwd{pool.default_version()}"
    assert default_runs(g.cuda, "max_pool_bwd", {}, 1) == pool.default_version() == 2
    assert default_runs(g.cuda, "relu_fwd", {}, 1) is None


def test_poisoned_buffers_are_filled_through_a_byte_view_of_any_shape(fake_gpu):
    # verify fills every buffer the backend allocates with 0xFF bytes; the 0-d loss of
    # cross-entropy cannot be viewed as bytes directly (only the fill needs a GPU)
    from pycnn.backends.cuda._common import byte_view
    f, cp = fake_gpu.fake, fake_gpu.cp
    for shape, dtype, nbytes in (((), cp.float32, 4), ((2, 3), cp.float32, 24),
                                 ((5,), cp.int64, 40), ((4, 1), cp.uint8, 4), ((3,), cp.float64, 24)):
        a = f(shape, dtype)
        view = byte_view(a)
        assert view.shape == (nbytes,) and view.data.ptr == a.data.ptr, (shape, dtype)


def test_cuda_backend_empty_tensors_launch_nothing(fake_gpu):
    g = fake_gpu
    be, f = g.cuda, g.fake
    # with no driver, any launch would raise: returning proves none was attempted
    assert be.relu_fwd(f((0, 3))).shape == (0, 3)
    assert be.relu_bwd(f((4, 0)), f((4, 0))).shape == (4, 0)
    assert be.softmax_fwd(f((0, 5)), 1).shape == (0, 5)
    assert be.bias_relu_fwd(f((0, 3, 2, 2)), f((3,))).shape == (0, 3, 2, 2)
    assert be.dropout_fwd(f((0,)), 0.5, 1)[0].shape == (0,)
    assert g.conv.conv2d_fwd(f((0, 2, 5, 5)), f((3, 2, 3, 3)), None, (1, 1), (0, 0, 0, 0), (1, 1),
                             1).shape == (0, 3, 3, 3)


def test_cuda_backend_refuses_bad_arrays_before_any_launch(fake_gpu):
    g, cp = fake_gpu, fake_gpu.cp
    be, f, conv = g.cuda, g.fake, g.conv
    x = f((2, 3, 4, 4))
    cases = [
        (TypeError, "x: expected dtype float32", be.relu_fwd, (f((4,), cp.float64),)),
        (TypeError, "x: expected a cupy.ndarray", be.relu_fwd, (np.zeros(4, np.float32),)),
        (ValueError, "x: expected a C-contiguous", be.relu_fwd, (x[:, :, :, ::2],)),
        (ValueError, "x: array is on GPU 1", be.relu_fwd, (f((4,), device=1),)),
        (ValueError, "x: 2147483648 elements exceed the 32-bit", be.relu_fwd, (f((2**31,)),)),
        (ValueError, "y: expected shape", be.relu_bwd, (x, f((2, 3, 4, 5)))),
        (ValueError, "b: expected shape", be.bias_relu_fwd, (x, f((4,)))),
        (TypeError, "mask: expected dtype uint8", be.dropout_bwd, (x, f((2, 3, 4, 4)), 0.5)),
        (ValueError, "p: expected a probability", be.dropout_fwd, (x, 1.5, 0)),
        (ValueError, "dim: expected an axis", be.softmax_fwd, (x, 4)),
        (TypeError, "target: expected dtype int64", be.cross_entropy_fwd, (f((3, 4)), f((3,), cp.int32))),
        (ValueError, "weight: expected shape", be.batch_norm_fwd, (x, f((4,)), None, None, None, True, 0.1, 1e-5)),
        (ValueError, "more than 1 value per channel", be.batch_norm_fwd,
         (f((1, 3)), None, None, None, None, True, 0.1, 1e-5)),
        (ValueError, "running_mean, running_var", be.batch_norm_fwd, (x, None, None, None, None, False, 0.1, 1e-5)),
        (ValueError, "b: expected shape", conv.conv2d_fwd, (x, f((5, 3, 3, 3)), f((4,)), (1, 1), (0,) * 4, (1, 1), 1)),
        (ValueError, "w: expected C/groups", conv.conv2d_fwd, (x, f((5, 2, 3, 3)), None, (1, 1), (0,) * 4, (1, 1), 1)),
        (ValueError, "dy: expected shape", conv.conv2d_bwd_data,
         (f((2, 5, 3, 3)), f((5, 3, 3, 3)), (2, 3, 4, 4), (1, 1), (0,) * 4, (1, 1), 1)),
        (ValueError, "dy: expected shape", conv.conv2d_bwd_filter,
         (x, f((2, 5, 3, 3)), (5, 3, 3, 3), (1, 1), (0,) * 4, (1, 1), 1)),
    ]
    for error, message, fn, args in cases:
        g.calls.clear()
        with pytest.raises(error, match=message):
            fn(*args)
        assert not g.calls, f"{message}: launched {g.calls[-1][0]} before refusing"
    with pytest.raises(ValueError, match="version: expected None or one of"):
        conv.conv2d_fwd(x, f((5, 3, 3, 3)), None, (1, 1), (0,) * 4, (1, 1), 1, version=3)
    with pytest.raises(ValueError, match=r"splits: expected None or an int in \[1, 65535\], got 0"):
        conv.conv2d_bwd_filter(x, f((2, 5, 2, 2)), (5, 3, 3, 3), (1, 1), (0,) * 4, (1, 1), 1, splits=0)


def test_interop_dropout_draws_a_fresh_mask_per_call_unless_seeded(fake_gpu, monkeypatch):
    # A fixed default seed would drop the same units in every training step.
    import pycnn
    from pycnn import interop
    seeds = []
    monkeypatch.setattr(fake_gpu.cuda, "dropout_fwd", lambda x, p, seed: (seeds.append(seed) or x, None))
    x = fake_gpu.fake((4, 5))
    pycnn.manual_seed(3)
    interop.dropout(x)
    interop.dropout(x)
    pycnn.manual_seed(3)
    interop.dropout(x)
    interop.dropout(x, seed=17)
    assert seeds[0] != seeds[1] and seeds[2] == seeds[0] and seeds[3] == 17
    assert interop.dropout(x, training=False) is x


# ----------------------------------------------------------------------------- preflight of the GPU
# verification on the CPU: what test_gpu.py and pycnn.verify will call, checked before a GPU does


def test_cuda_backend_signatures_match_the_reference():
    try:
        cuda = importlib.import_module("pycnn.backends.cuda")
    except ImportError as exc:
        pytest.skip(f"the CUDA backend does not import here ({exc})")
    import inspect
    from pycnn.backends import INTERFACE
    from pycnn.backends import numpy_ref as ref
    for name in INTERFACE:
        ours = [p.name for p in inspect.signature(getattr(cuda, name)).parameters.values()
                if p.kind != p.KEYWORD_ONLY]                 # version=, deterministic=, ... extra
        assert ours == list(inspect.signature(getattr(ref, name)).parameters), name


def test_every_verify_run_binds_to_the_cuda_function_and_the_reference_runs_it():
    try:
        cuda = importlib.import_module("pycnn.backends.cuda")
    except ImportError as exc:
        pytest.skip(f"the CUDA backend does not import here ({exc})")
    import inspect
    from pycnn import verify
    from pycnn.backends import numpy_ref as ref
    conv = importlib.import_module("pycnn.backends.cuda.conv")
    for case in verify.cases():
        getattr(ref, case.op)(*(verify._to_ref(a) for a in case.args))
        fn = getattr(conv if case.versions else cuda, case.op)
        runs = verify.case_runs(case, fn, conv if case.versions else None)
        for label, kwargs in runs:
            try:
                inspect.signature(fn).bind(*case.args, **kwargs)
            except TypeError as exc:
                raise AssertionError(f"{case.name} run {label}: {exc}") from None
        w_shape = verify._conv_w_shape(case)
        if case.versions and w_shape is not None:   # the depthwise kernel runs the depthwise cases only
            runs_v6 = any(str(label).split("-")[0] == "6" for label, _ in runs)
            assert runs_v6 == (w_shape[1] == 1), case.name
