"""Benchmark utilities, one home each, used by bench/ (kernel microbenchmarks), ``afd bench`` and
tools/:

    timing    the one timer (CUDA events or the wall clock) and the device's copy bandwidth
    flops     the one FLOP and parameter counter
    results   result files: records as JSON Lines, run summaries, ratios, Markdown tables
    e2e       the end-to-end benchmark behind ``afd bench`` (a job: it builds models and pipelines)

This ``__init__`` imports nothing, so the foundations (timing, flops, results) load without the
models and jobs above them.
"""
