"""The one timer of the project's benchmarks, and the device's copy bandwidth.

``time_calls`` times calls of a function after untimed warm-up calls (compilation, autotuning,
caches), with one of two clocks:

* ``clock="device"`` (the kernel microbenchmarks, tools/cuda_check.py): on CUDA, events recorded on
  the current stream around each call (device time, launch gaps included, no host synchronization
  inside the timed region), one synchronize at the end; on CPU ``time.perf_counter`` around each call.
* ``clock="wall"`` (end to end, ``afd bench``): ``time.perf_counter`` around each call, followed by
  ``torch.cuda.synchronize`` on CUDA: the latency a caller waits for, host work included.

The caller fixes everything that is not the call itself (backend choice, inputs, weights) outside
the timed region.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Optional, Sequence

import torch

CLOCKS = ("device", "wall")


@dataclasses.dataclass
class Timing:
    """Seconds per timed call, and the seconds of the first (warm-up) call, synchronized."""
    times: list
    first_s: float

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def percentile(self, q: float) -> float:
        return percentile(self.times, q)


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, linear between the closest ranks."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def synchronize(device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable, args: Sequence = (), device="cpu", rounds: Optional[int] = 10, warmup: int = 2,
               clock: str = "device", budget_s: float = 0.0, max_rounds: int = 100) -> Timing:
    """Time ``fn(*args)``: ``warmup`` untimed calls (at least one: the first is timed alone, with a
    synchronize, as ``first_s``), then ``rounds`` timed calls; ``rounds=None``: at least 3, then more
    until ``budget_s`` seconds of timed calls are spent (at most ``max_rounds``)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dev = torch.device(device)
    first = None
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn(*args)
        if first is None:
            synchronize(dev)
            first = time.perf_counter() - t0
    synchronize(dev)
    n_min, n_max = (rounds, rounds) if rounds is not None else (3, max_rounds)
    start = time.perf_counter()

    def more(n: int) -> bool:
        return n < n_max and (n < n_min or time.perf_counter() - start < budget_s)

    if clock == "device" and dev.type == "cuda":
        events = []
        while more(len(events)):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(*args)
            end.record()
            events.append((begin, end))
        torch.cuda.synchronize(dev)
        return Timing([begin.elapsed_time(end) / 1e3 for begin, end in events], first)
    times: list = []
    while more(len(times)):
        t0 = time.perf_counter()
        fn(*args)
        if clock == "wall":
            synchronize(dev)
        times.append(time.perf_counter() - t0)
    return Timing(times, first)


def copy_bandwidth_gb_per_s(device, nbytes: Optional[int] = None, rounds: int = 10) -> dict:
    """The device's measured copy bandwidth: a large ``dst.copy_(src)``, read + write bytes over the
    median time. GPU: 1 GiB (far beyond L2); CPU: 256 MiB (beyond the caches)."""
    dev = torch.device(device)
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 1 << 28)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    median = time_calls(dst.copy_, (src,), dev, rounds=rounds, warmup=2).median
    return {"peak_gb_per_s": 2 * nbytes / median / 1e9, "copy_bytes": nbytes, "copy_median_ms": median * 1e3,
            "copy_rounds": rounds}
