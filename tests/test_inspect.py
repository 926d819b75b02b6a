"""`pycnn inspect` on the CPU, for every kernel family: the emulated launch, the compiler's
resources joined to it, the memory counters and the roofline, as a person reads them."""
import json

import pytest

from pycnn import cli
from pycnn.inspect import dynamic

pytestmark = pytest.mark.skipif(dynamic.unavailable() is not None,
                                reason=f"no emulator here: {dynamic.unavailable()}")


def _run(capsys, *argv):
    code = cli.main(["inspect", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_conv2d_shows_launch_resources_counters_and_the_bound(capsys):
    code, out, err = _run(capsys, "conv2d", "--pass", "fwd", "--version", "7",
                          "--shape", "2,32,16,16,64,3,3,1,1")
    assert code == 0, err
    # the launcher's small tile, joined to its static counters
    assert "conv2d_fwd_kernel7<IgemmTile<64, 64, 8, 4, 4>, false>: grid 8x1x1 (8 blocks) of 256 threads" in out
    assert "64 registers a thread, 8704 bytes of shared memory a block, no spills" in out
    assert "4 blocks an SM (32 of 64 warps, 50.0%), limited by registers" in out
    assert "334 instructions an iteration, FFMA 38% of issue slots" in out
    assert "global loads  9216 requests, 3.92 sectors each" in out      # ncu read 36096 / 9216 on the H200
    assert "shared reads  36864 requests, 3.00 wavefronts each, 0 bank-conflict" in out   # ncu: 3.00
    assert "compute-bound on an H200" in out and "unmeasured" in out


def test_compare_puts_versions_side_by_side_and_a_measured_shape_shows_the_gpu_time(capsys):
    # ResNet-50's layer4.1-2.conv2 at batch 32: in bench/results/bench-resnet50-h200-b32.json
    code, out, err = _run(capsys, "conv2d", "--pass", "fwd", "--compare", "2,7",
                          "--shape", "32,512,7,7,512,3,3,1,1", "--sample", "2")
    assert code == 0, err
    assert "sampled" in out
    assert "measured      NVIDIA H200, set resnet50: pycnn v07" in out
    table = out[out.index("version  kernel"):]
    rows = table.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["2", "7"] and "unmeasured" not in table


@pytest.mark.parametrize("argv, says", [
    (["pool", "--kind", "max", "--pass", "fwd", "--shape", "2,8,9,9,3,2,1"], "max_pool2d_fwd_kernel1"),
    (["pool", "--kind", "max", "--pass", "bwd", "--shape", "2,8,9,9,3,2,1"], "max_pool2d_bwd_kernel2"),
    (["pool", "--kind", "avg", "--pass", "bwd", "--shape", "2,8,9,9,3,2,1"], "avg_pool2d_bwd_kernel1"),
    (["activation", "--fn", "sigmoid", "--pass", "bwd", "--shape", "3,5,7,11"], "sigmoid_bwd"),
    (["batch_norm", "--pass", "fwd", "--version", "2", "--shape", "8,4,9,9"], "batch_norm_fwd"),
    (["softmax", "--pass", "fwd", "--shape", "4,10,3"], "softmax"),
])
def test_every_family_inspects(capsys, argv, says):
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert says in out and "launch" in out and "work" in out


def test_json_and_bad_input(capsys):
    code, out, _ = _run(capsys, "activation", "--fn", "relu", "--shape", "1000", "--json")
    assert code == 0
    data = json.loads(out)[0]
    assert data["launches"][0]["global_ld"]["requests"] > 0 and data["arithmetic_intensity"] > 0
    code, _, err = _run(capsys, "conv2d", "--shape", "1,2,3")
    assert code == 2 and "--shape (N,C,H,W,K,R,S,stride,pad): expected 9 integers" in err
    with pytest.raises(SystemExit):
        cli.main(["inspect", "activation", "--compare", "1,2", "--shape", "10"])
    assert "--compare: only conv2d and batch_norm come in versions" in capsys.readouterr().err


def test_compare_shows_the_gemm_of_a_split_k_version_not_its_sum(capsys):
    # version 12 splits this small layer's C*R*S over gridDim.z: its fixed-order sum runs
    # more threads than the GEMM, and the table names the GEMM with its main loop
    code, out, err = _run(capsys, "conv2d", "--pass", "fwd", "--compare", "7,12",
                          "--shape", "2,64,8,8,64,3,3,1,1", "--sample", "2")
    assert code == 0, err
    assert "conv2d_fwd12_split_sum_kernel" in out                 # its launch, in the per-launch lines
    row = next(line for line in out.splitlines() if line.startswith("12 "))
    assert row.split()[1] == "conv2d_fwd_kernel12" and " 0 " in row   # no division in its loop
