"""The profiler ranges of a training step (``STEP_RANGES``, ``torch.profiler.record_function``; nearly
free when no profiler runs) and, when ``PHASE_CLOCK`` is a list, this thread's CPU seconds per phase
(tools/profile_train_step.py sets it here)."""
from __future__ import annotations

import contextlib
import time
from typing import Optional

import torch

#: The ``torch.profiler`` ranges of one training step (``record_function``; nearly free when no profiler
#: runs): tools/profile_train_step.py splits a step's time by them. The data range is the profiler's
#: own (around the loader), "other" is the step's time outside them.
STEP_RANGES = {"teacher": "afd_train.teacher",      # the stem (clean + degraded, one call), clean logits; no grad
               "student": "afd_train.student",      # AFD, rest of the classifier on its output, losses
               "backward": "afd_train.backward",
               "optimizer": "afd_train.optimizer"}  # zero_grad, clip, AdamW step, the weights' finiteness


#: None, or a list that each step phase appends (name, this thread's CPU seconds) to: the profiling
#: tool's clock, which a machine shared with other work slows less than the wall clock.
PHASE_CLOCK: Optional[list] = None


@contextlib.contextmanager
def _phase(name: str):
    """One STEP_RANGES phase of a training step: a profiler range, and PHASE_CLOCK's entry when set."""
    with torch.profiler.record_function(STEP_RANGES[name]):
        if PHASE_CLOCK is None:
            yield
            return
        t = time.thread_time()
        yield
        PHASE_CLOCK.append((name, time.thread_time() - t))
