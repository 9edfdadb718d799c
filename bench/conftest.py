"""Kernel microbenchmarks (pytest-benchmark). Run through bench/report.py, which writes the
JSON + Markdown tables under bench/results/. Shapes follow the issue: batch 32 on CPU and
256 on GPU, 224x224 images, stem features of 32 and 64 channels at 112x112, FDM 28x28."""
import os

import pytest
import torch

DEVICE = os.environ.get("AFD_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32] if DEVICE == "cpu" else [torch.float16, torch.bfloat16]
BATCH = int(os.environ.get("AFD_BENCH_BATCH", "32" if DEVICE == "cpu" else "256"))
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


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def bench(benchmark):
    def run(fn, *args, bytes_moved=None, **info):
        fn(*args)  # warm-up (and compilation) excluded from the timings
        sync()

        def call():
            fn(*args)
            sync()
        benchmark.extra_info.update(info)
        if bytes_moved is not None:
            benchmark.extra_info["bytes"] = int(bytes_moved)
        benchmark.pedantic(call, rounds=int(os.environ.get("AFD_BENCH_ROUNDS", "7")), iterations=1,
                           warmup_rounds=1)
    return run


def make_callable(op_name, impl, backend):
    """The function timed for one implementation of one op."""
    import afd_ext
    ref = getattr(afd_ext.reference, op_name)
    if impl == "eager_reference":
        return ref
    if impl == "compile_reference":
        return torch.compile(ref, fullgraph=True, dynamic=False)
    op = getattr(torch.ops.afd, op_name)

    def fused(*args):
        with afd_ext.use_backend(backend):
            return op(*args)
    return fused
