#!/usr/bin/env bash
# Everything that needs a GPU, in as few device calls as possible.
#
#   bash bench/gpu_session.sh verify     # build, GPU tests, verification record
#   bash bench/gpu_session.sh sanitize   # build, compute-sanitizer memcheck + racecheck, record again with them
#   bash bench/gpu_session.sh bench      # build, cuDNN comparison: resnet50 (batch 32) and pool/activation
#   bash bench/gpu_session.sh bench2     # build, cuDNN comparison: depthwise (batch 32) and small-batch sets
#
# Each stage fits one 10-minute call and writes at most 8 files to $OUT (the device
# tool's limit): the verification record or the benchmark JSON/Markdown/PNG files,
# plus one log. Commit what comes back under bench/results/.
#
# Four full stages can outlast a 30-minute device budget (machine start included):
# run them in the order of what they settle, verify (the kernels' record), bench
# (the cuDNN comparison), sanitize (memcheck and racecheck, recorded beside the
# verify results), bench2, and look at the budget left between calls.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: gpu_session.sh verify|sanitize|bench|bench2}"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
log="$OUT/session-$stage.log"
exec > >(tee "$log") 2>&1

step() { echo; echo "=== $* ($(date +%T))"; }

step "GPU and build"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv || true
python -c "import cupy, sys; print('python', sys.version.split()[0], '| cupy', cupy.__version__)"
# Build for this GPU's architecture only (sm_90 on an H100/H200): half the compile
# time of the default "80;90", which CI keeps building.
arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
echo "building for sm_${arch:-80;90}"
PYCNN_CUDA=1 PYCNN_CUDA_ARCHS="${arch:-80;90}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  pip install --no-build-isolation --no-deps -e . > "$OUT/.build.log" 2>&1 \
  || { tail -50 "$OUT/.build.log"; echo "build failed"; exit 1; }
rm -f "$OUT/.build.log"
python -c "import pycnn; assert pycnn.cuda_available(), 'CUDA backend unavailable'; print('pycnn CUDA backend ready')" || exit 1

# Each step has its own time limit, so that a slow step still leaves the stage's
# files in $OUT before the device call's 10 minutes run out (pycnn bench, stopped by
# timeout's SIGTERM, writes the cases it finished, marked incomplete).
case "$stage" in
verify)
  step "GPU tests"
  timeout 300 python -m pytest tests/test_gpu.py tests/test_gpu_model.py tests/test_extension.py \
    -q -p no:cacheprovider 2>&1 | tail -40
  step "verification record"
  timeout 180 python -m pycnn.verify --out "$OUT"
  ;;
sanitize)
  step "compute-sanitizer memcheck"
  # no memory pool: memcheck sees only whole cudaMalloc blocks, not CuPy's slices of them
  timeout 240 compute-sanitizer --tool memcheck --print-limit 20 python -m pycnn.verify --quick --no-write --no-memory-pool \
    > "$OUT/memcheck.log" 2>&1
  tail -5 "$OUT/memcheck.log"
  step "compute-sanitizer racecheck"
  timeout 240 compute-sanitizer --tool racecheck --print-limit 20 python -m pycnn.verify --quick --no-write \
    > "$OUT/racecheck.log" 2>&1
  tail -5 "$OUT/racecheck.log"
  step "verification record with the sanitizer outcomes"
  timeout 100 python -m pycnn.verify --out "$OUT" --sanitizer-log "$OUT/memcheck.log" "$OUT/racecheck.log"
  ;;
bench)
  step "resnet50, batch 32"
  # ~700 timings (every version, three cuDNN modes): 0.1 s each at the least keeps the
  # set inside its limit; the median of >= 20 repetitions still carries each figure
  timeout 380 python -m pycnn.bench --set resnet50 --batch 32 --min-time 0.1 --out "$OUT"
  step "pool and activation"
  timeout 120 python -m pycnn.bench --set poolact --out "$OUT"
  ;;
bench2)
  step "depthwise, batch 32"
  timeout 150 python -m pycnn.bench --set depthwise --batch 32 --out "$OUT"
  step "small (batch 1 latency)"
  timeout 120 python -m pycnn.bench --set small --out "$OUT"
  ;;
*)
  echo "unknown stage $stage (verify|sanitize|bench|bench2)"; exit 2 ;;
esac
step "done"
