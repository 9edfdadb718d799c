"""afd::block_dct_gate for the Triton backend: the Triton block DCT kernel, then |D|, the mean over
blocks, the log and the 192-weight head in torch (as the CUDA launcher does; docs/design.md §2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from afd_ext.reference import checks
from afd_ext.reference.constants import GATE_EPS

from .triton_block_dct import block_dct


def block_dct_gate(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 (uint8 or floating) -> z (B,) = bias + weight . log(mean |block DCT| + eps)."""
    checks.check_image(img, uint8=True)
    checks.check_gate_head(img, weight, bias)
    cd = torch.float64 if weight.dtype == torch.float64 else torch.float32
    if img.shape[0] == 0:
        return torch.empty(0, dtype=weight.dtype, device=weight.device)
    stats = torch.log(block_dct(img.to(cd)).abs().mean(dim=(2, 3)) + GATE_EPS)
    return F.linear(stats, weight.to(cd), bias.to(cd)).squeeze(1).to(weight.dtype)
