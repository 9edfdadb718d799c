"""The one FLOP and parameter counter: ``torch.utils.flop_counter.FlopCounterMode`` (2 x the
multiply-accumulates of conv / matmul / linear ops; elementwise ops are not counted).

A deployed AFD is counted on its reference path (``deploy("reference")``), which computes the same
convolutions and linear layers as the fused kernels (a custom op is invisible to the counter).
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.nn as nn

NOTE = ("FLOPs: torch.utils.flop_counter.FlopCounterMode (2 x MACs of conv/matmul/linear; elementwise ops not "
        "counted).")


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn()``, under ``torch.no_grad``."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def n_params(module: Optional[nn.Module]) -> int:
    """Parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def gflops(model, image_size: int = 224) -> dict:
    """GFLOPs of one uint8 image through an ``AFDClassifier``: the classifier alone
    (``classifier``), classifier + deployed AFD (``with_afd``) and their difference (``afd``),
    counted on a deployed copy (reference ops)."""
    model = copy.deepcopy(model).deploy("reference")
    p = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=torch.uint8)
    out = {key: count_flops(lambda u=use_afd: model(x, use_afd=u)) / 1e9
           for key, use_afd in (("classifier", False), ("with_afd", True))}
    out["afd"] = out["with_afd"] - out["classifier"]
    return out
