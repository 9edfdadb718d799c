"""Timing for the kernel microbenchmarks: device time per call, and the device's copy bandwidth.

GPU: CUDA events recorded on the current stream around each call (device time, launch gaps
included; no host synchronization inside the timed region), one synchronize at the end.
CPU: ``time.perf_counter`` around each call. Warm-up calls (compilation, autotuning, caches)
run first and are not timed. The caller fixes everything that is not the user's call (backend
choice, inputs, weights) outside the timed region.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch


def time_calls(fn: Callable, args: Sequence, device: str, rounds: int, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn(*args)``, ``rounds`` timed calls after ``warmup`` untimed ones."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(max(1, warmup)):
        fn(*args)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(rounds)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(rounds)]
        for start, end in zip(starts, ends):
            start.record()
            fn(*args)
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends)]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return times


def copy_bandwidth_gb_per_s(device: str, nbytes: int | None = None, rounds: int = 10) -> dict:
    """The device's measured copy bandwidth: a large ``dst.copy_(src)``, read + write bytes over the
    median time. GPU: 1 GiB (far beyond L2); CPU: 256 MiB (beyond the caches)."""
    dev = torch.device(device)
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 1 << 28)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    times = time_calls(dst.copy_, (src,), device, rounds=rounds, warmup=2)
    median = statistics.median(times)
    return {"peak_gb_per_s": 2 * nbytes / median / 1e9, "copy_bytes": nbytes, "copy_median_ms": median * 1e3,
            "copy_rounds": rounds}
