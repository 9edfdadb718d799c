#!/usr/bin/env bash
# The whole GPU check in one call (device budget: 15 min a session, start included).
# Run on the lent machine from the repo root:   bash bench/gpu_session.sh
# Writes everything into $OUT (default: bench/results/gpu_<date>): build log, CUDA/Triton
# parity tests, compute-sanitizer summaries, kernel and end-to-end benchmarks.
set -uo pipefail
OUT=${OUT:-bench/results/gpu_$(date -u +%Y%m%d)}
mkdir -p "$OUT"
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 AFD_BUILD_CUDA=1
t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 ))s)" | tee -a "$OUT/session.log"; }

step "env"
{ nvidia-smi; python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUT/env.txt" 2>&1
step "build"
pip install --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -50 "$OUT/build.log"; exit 1; }
python -c "import afd_ext; print(afd_ext.available_backends())" | tee -a "$OUT/session.log"

step "parity tests on CUDA (cuda + triton backends)"
timeout 150 python -m pytest -q -x tests/test_block_dct.py tests/test_block_dct_fdm.py tests/test_repconv_dedrift.py \
  tests/test_modules.py tests/test_compile_export.py -k "cuda or triton or deploy or compile or export" \
  > "$OUT/tests_cuda.txt" 2>&1; echo "pytest rc=$?" | tee -a "$OUT/session.log"
timeout 60 python bench/cuda_check.py parity > "$OUT/cuda_check_parity.txt" 2>&1; echo "cuda_check rc=$?" | tee -a "$OUT/session.log"

step "compute-sanitizer"
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --print-limit 20 python bench/cuda_check.py tiny \
    > "$OUT/sanitizer_$tool.txt" 2>&1; echo "$tool rc=$? $(tail -1 "$OUT/sanitizer_$tool.txt")" | tee -a "$OUT/session.log"
done

step "kernel benchmarks"
timeout 200 python bench/report.py --device cuda --rounds 10 --out "$OUT" > "$OUT/kernels_stdout.txt" 2>&1
echo "kernels rc=$?" | tee -a "$OUT/session.log"

step "end-to-end benchmark"
timeout 120 afd bench --e2e --device cuda --json "$OUT/e2e_cuda.json" > "$OUT/e2e_stdout.txt" 2>&1
echo "e2e rc=$?" | tee -a "$OUT/session.log"
step "done"
