"""The CUDA kernels' index math, tiling and fragment layouts on the CPU: kernels/emu/check.py compiles
kernels/*.cu and the launchers as plain C++ (one OS thread per CUDA thread) and compares every kernel
path with the reference. Its ``quick`` selection runs each path once; the full run is
``python kernels/emu/check.py``."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
@pytest.mark.skipif(not (CUDA_INCLUDE / "cuda_fp16.h").is_file(),
                    reason=f"needs the CUDA headers (cuda_fp16.h) at {CUDA_INCLUDE} to compile the kernels")
def test_cuda_kernels_match_the_reference_under_cpu_emulation():
    proc = subprocess.run([sys.executable, str(ROOT / "kernels" / "emu" / "check.py"), "quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == 0 and not fails, out[-4000:]
    assert "0 failures" in out and out.count("\nOK ") >= 20, out[-4000:]
