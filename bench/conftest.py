"""Kernel microbenchmarks: one module per op (bench_<op>.py), run by bench/report.py, which writes
the JSON + Markdown tables under bench/results/ (``python bench/report.py --device cuda``).

What is timed is only the user's call ``torch.ops.afd.<op>(...)``: the backend is chosen, and
the inputs and weights are made, before the timed region (bench/timing.py: CUDA events on GPU).
Shapes are the production ones: batch 32 on CPU and 256 on GPU, 224x224 images, stem features of
32 (EfficientNet-Lite0) and 64 (ResNet-50) channels at 112x112, FDM 28x28. Dtypes and layouts
as the deployed module feeds them: bfloat16 and float16 channels_last on GPU, float32 on CPU,
and the uint8 image for ``block_dct_fdm``.

Set AFD_BENCH_RAW=FILE to collect the rows (and the copy bandwidth measured in the same run).
"""
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import copy_bandwidth_gb_per_s, time_calls  # noqa: E402

DEVICE = os.environ.get("AFD_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
#: feature / image dtypes of the production path
DTYPES = [torch.float32] if DEVICE == "cpu" else [torch.bfloat16, torch.float16]
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
BATCH = int(os.environ.get("AFD_BENCH_BATCH", "32" if DEVICE == "cpu" else "256"))
ROUNDS = int(os.environ.get("AFD_BENCH_ROUNDS", "7" if DEVICE == "cpu" else "50"))
WITH_COMPILE = os.environ.get("AFD_BENCH_COMPILE", "1") == "1"

_ROWS: list = []


def implementations(op_name):
    """(name, backend or None for the eager / compiled reference)."""
    import afd_ext
    impls = [("eager_reference", None)]
    if WITH_COMPILE:
        impls.append(("compile_reference", None))
    for b in afd_ext.available_backends():
        if b == "reference":
            continue
        if DEVICE == "cpu" and b in ("cuda", "triton"):
            continue
        if DEVICE == "cuda" and b == "cpp":
            continue
        impls.append((b, b))
    return impls


def make_callable(op_name, impl):
    """The function a user calls for one implementation of one op (the backend is set outside)."""
    import afd_ext
    ref = getattr(afd_ext.reference, op_name)
    if impl == "eager_reference":
        return ref
    if impl == "compile_reference":
        return torch.compile(ref, fullgraph=True, dynamic=False)
    return getattr(torch.ops.afd, op_name)


def measure_row(op_name, impl, backend, args, bytes_moved, device=DEVICE, rounds=ROUNDS, **info) -> dict:
    """Time one implementation of one op on ``args``; the backend is set once, around all the calls."""
    import afd_ext
    fn = make_callable(op_name, impl)
    with afd_ext.use_backend(backend) if backend else contextlib.nullcontext():
        times = time_calls(fn, args, device, rounds=rounds, warmup=3)
    median = statistics.median(times)
    return {"op": op_name, "impl": impl, "device": device, "batch": int(args[0].shape[0]), "rounds": len(times),
            "median_ms": median * 1e3, "min_ms": min(times) * 1e3, "bytes": int(bytes_moved),
            "gb_per_s": bytes_moved / median / 1e9, **info}


@pytest.fixture
def bench():
    def run(*args, **kwargs):
        _ROWS.append(measure_row(*args, **kwargs))
    return run


def pytest_sessionfinish(session, exitstatus):
    raw = os.environ.get("AFD_BENCH_RAW")
    if raw and _ROWS:
        peak = copy_bandwidth_gb_per_s(DEVICE)
        Path(raw).write_text(json.dumps({**peak, "rows": _ROWS}, indent=1))
