#!/usr/bin/env bash
# Everything that needs a GPU, in as few device calls as possible.
#
#   bash bench/gpu_session.sh verify     # build, GPU tests, verification record
#   bash bench/gpu_session.sh sanitize   # build, compute-sanitizer memcheck + racecheck, record again with them
#   bash bench/gpu_session.sh bench      # build, cuDNN comparison: resnet50 (batch 32) and pool/activation
#   bash bench/gpu_session.sh bench2     # build, cuDNN comparison: depthwise (batch 32) and small-batch sets
#
# A copy of the tree without .git (a lent GPU machine's) cannot name its commit: pass
# it from the checkout, PYCNN_COMMIT=<git rev-parse HEAD> bash bench/gpu_session.sh verify,
# and the records carry it.
#
# Each stage fits one 10-minute call and writes at most 8 files to $OUT (the device
# tool's limit): the verification record or the benchmark JSON/Markdown/PNG files,
# plus its logs. Commit what comes back under bench/results/ (not the logs). The
# exit status is 1 if any step failed or ran out of time.
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
export PYTHONUNBUFFERED=1     # every line reaches the log at once, even from a step that is killed
status=0

step() { echo; echo "=== $* ($(date +%T))"; }

# Each step has its own time limit, so that a slow step still leaves the stage's files
# in $OUT before the device call's 10 minutes run out: SIGTERM first (pycnn bench then
# writes the cases it finished, marked incomplete), SIGKILL 20 s later.
limit() {
  local seconds="$1"; shift
  timeout -k 20 "$seconds" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    status=1
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "!!! stopped at its limit of $seconds s: $*"
  fi
  return "$rc"
}

build() {
  step "GPU and build"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv || true
  python -c "import cupy, sys; print('python', sys.version.split()[0], '| cupy', cupy.__version__)"
  if ! git rev-parse HEAD >/dev/null 2>&1; then
    echo "commit: ${PYCNN_COMMIT:-unknown (no .git here and PYCNN_COMMIT unset: the records will name none)}"
  fi
  # Build for this GPU's architecture only (sm_90 on an H100/H200): half the compile
  # time of the default "80;90", which CI keeps building.
  local arch
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  echo "building for sm_${arch:-80;90}"
  PYCNN_CUDA=1 PYCNN_CUDA_ARCHS="${arch:-80;90}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install --no-build-isolation --no-deps -e . > "$OUT/.build.log" 2>&1 \
    || { tail -50 "$OUT/.build.log"; rm -f "$OUT/.build.log"; echo "build failed"; return 1; }
  rm -f "$OUT/.build.log"
  python -c "import pycnn; assert pycnn.cuda_available(), 'CUDA backend unavailable'; print('pycnn CUDA backend ready')"
}

run_stage() {
  build || { status=1; return; }
  case "$stage" in
  verify)
    step "GPU tests (full log: $OUT/pytest.log)"
    limit 300 python -m pytest tests/test_gpu.py tests/test_gpu_model.py tests/test_extension.py \
      -q -p no:cacheprovider > "$OUT/pytest.log" 2>&1
    tail -40 "$OUT/pytest.log"
    step "verification record"
    limit 180 python -m pycnn.verify --out "$OUT"
    ;;
  sanitize)
    # The sanitized runs print pycnn.verify's closing line, which the record requires:
    # a sanitizer reports 0 errors about a run that crashed, too.
    step "compute-sanitizer memcheck"
    # no memory pool: memcheck sees only whole cudaMalloc blocks, not CuPy's slices of them
    limit 200 compute-sanitizer --tool memcheck --print-limit 20 python -m pycnn.verify --quick --no-write --no-memory-pool \
      > "$OUT/memcheck.log" 2>&1
    echo "exit status $?" >> "$OUT/memcheck.log"
    tail -5 "$OUT/memcheck.log"
    step "compute-sanitizer racecheck"
    limit 200 compute-sanitizer --tool racecheck --print-limit 20 python -m pycnn.verify --quick --no-write \
      > "$OUT/racecheck.log" 2>&1
    echo "exit status $?" >> "$OUT/racecheck.log"
    tail -5 "$OUT/racecheck.log"
    step "verification record with the sanitizer outcomes"
    limit 90 python -m pycnn.verify --out "$OUT" --sanitizer-log "$OUT/memcheck.log" "$OUT/racecheck.log"
    ;;
  bench)
    step "resnet50, batch 32"
    # ~700 timings (every version, three cuDNN modes): 0.1 s each at the least keeps the
    # set inside its limit; the median of >= 20 repetitions still carries each figure
    limit 380 python -m pycnn.bench --set resnet50 --batch 32 --min-time 0.1 --out "$OUT"
    step "pool and activation"
    limit 120 python -m pycnn.bench --set poolact --out "$OUT"
    ;;
  bench2)
    step "depthwise, batch 32"
    limit 150 python -m pycnn.bench --set depthwise --batch 32 --min-time 0.1 --out "$OUT"
    step "small (batch 1 latency)"
    # ~700 timings of calls well under 0.1 ms, each repetition behind a ~0.1 ms L2 flush:
    # 100 repetitions each, not the 2,000 that 0.2 s of measured time would take
    limit 120 python -m pycnn.bench --set small --reps 100 --out "$OUT"
    ;;
  *)
    echo "unknown stage $stage (verify|sanitize|bench|bench2)"; status=2 ;;
  esac
  step "done (status $status)"
}

# The whole stage through one tee, then its status: nothing printed is lost when the
# call returns, and a failed step shows in the exit status.
run_stage_and_report() { run_stage; return "$status"; }
run_stage_and_report 2>&1 | tee "$OUT/session-$stage.log"
exit "${PIPESTATUS[0]}"
