"""RepConv: training form (three branches) and its exact re-parameterization to one 3x3 conv.

Branches, summed:
  (a) 1x1 conv (no bias) -> 3x3 conv (bias)
  (b) 3x3 conv (bias)    -> 1x1 conv (bias)
  (c) 1x1 conv (bias)
Branch (a)'s 1x1 has no bias on purpose: a bias before a zero-padded 3x3 conv
changes the border pixels and cannot be folded exactly.
An optional BatchNorm at the end of a branch folds into that branch's last conv.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def repconv(x, a1_w, a3_w, a3_b, b3_w, b3_b, b1_w, b1_b, c1_w, c1_b):
    """Training form. Weights as nn.Conv2d stores them:
    a1_w (M,Cin,1,1), a3_w (Cout,M,3,3), b3_w (N,Cin,3,3), b1_w (Cout,N,1,1), c1_w (Cout,Cin,1,1)."""
    a = F.conv2d(F.conv2d(x, a1_w), a3_w, a3_b, padding=1)
    b = F.conv2d(F.conv2d(x, b3_w, b3_b, padding=1), b1_w, b1_b)
    c = F.conv2d(x, c1_w, c1_b)
    return a + b + c


def repconv_reparam(a1_w, a3_w, a3_b, b3_w, b3_b, b1_w, b1_b, c1_w, c1_b):
    """Branch weights -> (weight (Cout,Cin,3,3), bias (Cout,)) of the equivalent single 3x3 conv."""
    # (a) 3x3 after 1x1: K'[o,i] = sum_m K[o,m] A[m,i]
    wa = torch.einsum("omyx,mi->oiyx", a3_w, a1_w[:, :, 0, 0])
    # (b) 1x1 after 3x3: K'[o,i] = sum_n P[o,n] K[n,i]; bias P b + b'
    p = b1_w[:, :, 0, 0]
    wb = torch.einsum("on,niyx->oiyx", p, b3_w)
    bb = p @ b3_b + b1_b
    # (c) 1x1 -> centre tap of a 3x3
    wc = F.pad(c1_w, (1, 1, 1, 1))
    return wa + wb + wc, a3_b + bb + c1_b


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], running_mean, running_var,
            gamma, beta, eps: float):
    """Fold an inference-mode BatchNorm that follows a conv into that conv's weight and bias."""
    scale = gamma / torch.sqrt(running_var + eps)
    b = torch.zeros_like(running_mean) if bias is None else bias
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), (b - running_mean) * scale + beta
