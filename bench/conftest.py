"""Kernel microbenchmarks: one module per op (bench_<op>.py), run by bench/report.py, which writes
the JSON + Markdown tables under bench/results/ (``python bench/report.py --device cuda``).

What is timed is only the user's call ``torch.ops.afd.<op>(...)``: the backend is chosen, and
the inputs and weights are made, before the timed region (afd_ext.benchmark.timing: CUDA events on GPU).
Shapes are the production ones: batch 32 on CPU and 256 on GPU, 224x224 images, stem features of
32 (EfficientNet-Lite0) and 64 (ResNet-50) channels at 112x112, FDM 28x28. Dtypes and layouts
as the deployed module feeds them: bfloat16 and float16 channels_last on GPU, float32 on CPU,
and the uint8 image for ``block_dct_fdm``.

Set AFD_BENCH_ROWS=FILE to collect the rows: each one appended to FILE (JSON Lines, under the run
name AFD_BENCH_RUN) and flushed to the disk as soon as it is measured, so that a run cut short
keeps every row it measured (bench/report.py writes the run's meta record and the copy bandwidth
first, and builds the tables from the file).

The rows run in the order of their value, whatever the files and parameters: bfloat16 first,
the compiled CUDA kernels before the eager reference, Triton and torch.compile of the
reference, the ops with a bandwidth target (block_dct_fdm, repconv_dedrift) first, channels_last
before NCHW (``pytest_collection_modifyitems``).
"""
import contextlib
import os

import pytest
import torch

from afd_ext.benchmark.results import append_record
from afd_ext.benchmark.timing import time_calls

DEVICE = os.environ.get("AFD_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
#: feature / image dtypes of the production path
DTYPES = [torch.float32] if DEVICE == "cpu" else [torch.bfloat16, torch.float16]
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
BATCH = int(os.environ.get("AFD_BENCH_BATCH", "32" if DEVICE == "cpu" else "256"))
ROUNDS = int(os.environ.get("AFD_BENCH_ROUNDS", "7" if DEVICE == "cpu" else "50"))
WITH_COMPILE = os.environ.get("AFD_BENCH_COMPILE", "1") == "1"

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
        timing = time_calls(fn, args, device, rounds=rounds, warmup=3)
    times, median = timing.times, timing.median
    return {"op": op_name, "impl": impl, "device": device, "batch": int(args[0].shape[0]), "rounds": len(times),
            "median_ms": median * 1e3, "min_ms": min(times) * 1e3, "bytes": int(bytes_moved),
            "gb_per_s": bytes_moved / median / 1e9, **info}


def generator(seed: int = 0) -> torch.Generator:
    """The inputs' random generator, on the device: a batch of 256 images or feature maps is made
    there in milliseconds (on the host, then copied, it took seconds a row)."""
    return torch.Generator(device=DEVICE).manual_seed(seed)


def append_row(row: dict) -> None:
    """The row, appended to $AFD_BENCH_ROWS at once (nothing is held back until the end)."""
    path = os.environ.get("AFD_BENCH_ROWS")
    if path:
        append_record(path, {"run": os.environ.get("AFD_BENCH_RUN", f"kernels_{DEVICE}"), "source": "kernels",
                             "record": "row", **row})


@pytest.fixture
def bench():
    def run(*args, **kwargs):
        append_row(measure_row(*args, **kwargs))
    return run


#: the order of value (lower first); names not listed go after those that are
_ORDER = {"dtype": ["bfloat16", "float32", "float16"],
          "impl": ["cuda", "cpp", "eager_reference", "triton", "compile_reference"],
          "op": ["block_dct_fdm", "repconv_dedrift", "block_dct"],
          "layout": ["nhwc", "nchw"]}


def value_key(params: dict, op: str) -> tuple:
    """Sort key of one benchmark row: dtype, then implementation, then op, then layout."""
    def rank(kind, value):
        order = _ORDER[kind]
        return order.index(value) if value in order else len(order)
    dtype = str(params.get("dtype", "")).removeprefix("torch.")
    return (rank("dtype", dtype), rank("impl", params.get("impl")), rank("op", op),
            rank("layout", params.get("layout")))


def pytest_collection_modifyitems(session, config, items):
    def key(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return value_key(params, item.originalname.removeprefix("test_"))
    items.sort(key=key)  # stable: the rest of pytest's order stays
