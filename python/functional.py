"""Pure-PyTorch reference of every afd op: the definition the kernels are tested against.

Readable rather than fast; works in any floating dtype (half types are
computed in float32 and cast back, like the kernels that accumulate in float32).

Shape contract of the ops (``block_dct``, ``block_dct_fdm``, ``fe_conv``, ``repconv_dedrift``), the same in
every backend because the checks are shared (``checks`` here, ``csrc/afd_checks.h`` in C++/CUDA):

* A size that only counts outputs may be 0: batch B, image height/width H, W (so Hb, Wb),
  feature height/width Hf, Wf, output channels C. The result is then an empty tensor of the
  right shape, dtype and memory format; nothing is read.
* A size that a layer sums over may not: ``fe_conv``/``repconv_dedrift`` with Cin = 0, ``block_dct_fdm``
  with h1 = 0 or h2 = 0 raise ValueError (a layer over no inputs is not defined; torch's own
  conv2d mishandles it).
* The FDM grid of ``repconv_dedrift`` must divide the feature grid (Hf % Hb == Wf % Wb == 0);
  an empty FDM axis (Hb or Wb = 0) goes only with an empty feature axis.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import checks
from .constants import BLOCK, GATE_EPS, N_COEFF, dct_basis_zigzag, ycbcr_matrix


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def rgb_to_ycbcr(img: torch.Tensor) -> torch.Tensor:
    """RGB (B,3,H,W) in 0..255 -> level-shifted YCbCr (JPEG's transform, minus 128)."""
    mat, off = ycbcr_matrix(img.dtype, img.device)
    return torch.einsum("ck,bkhw->bchw", mat, img) + off.view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    mat, off = ycbcr_matrix(ycc.dtype, ycc.device)
    return torch.einsum("kc,bchw->bkhw", torch.linalg.inv(mat), ycc - off.view(1, 3, 1, 1))


def block_dct(img: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 -> (B,192,H/8,W/8) JPEG block-DCT coefficients.

    Channel c*64 + k holds zig-zag coefficient k of colour plane c (Y, Cb, Cr).
    B, H or W = 0 gives an empty result (module docstring).
    """
    checks.check_image(img)
    out_dtype = img.dtype
    x = rgb_to_ycbcr(img.to(_compute_dtype(img.dtype)))
    b, _, h, w = x.shape
    hb, wb = h // BLOCK, w // BLOCK
    # (B,3,Hb,8,Wb,8) -> (B,3,Hb,Wb,64): each block flattened row-major.
    blocks = x.reshape(b, 3, hb, BLOCK, wb, BLOCK).permute(0, 1, 2, 4, 3, 5).reshape(b, 3, hb, wb, N_COEFF)
    basis = dct_basis_zigzag(x.dtype, x.device)
    coeffs = torch.einsum("kp,bcijp->bckij", basis, blocks)
    return coeffs.reshape(b, 3 * N_COEFF, hb, wb).to(out_dtype)


def block_idct(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct`: (B,192,Hb,Wb) -> (B,3,8Hb,8Wb) RGB."""
    if coeffs.dim() != 4 or coeffs.shape[1] != 3 * N_COEFF:
        raise ValueError(f"coeffs must have shape (B, {3 * N_COEFF}, Hb, Wb), got {tuple(coeffs.shape)}")
    b, _, hb, wb = coeffs.shape
    basis = dct_basis_zigzag(coeffs.dtype, coeffs.device)
    blocks = torch.einsum("kp,bckij->bcijp", basis, coeffs.reshape(b, 3, N_COEFF, hb, wb))
    x = blocks.reshape(b, 3, hb, wb, BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5).reshape(b, 3, hb * BLOCK, wb * BLOCK)
    return ycbcr_to_rgb(x)


def gate_value(z: torch.Tensor) -> torch.Tensor:
    """The whole-image gate g = relu(tanh(z / 2)) = max(0, 2 sigmoid(z) - 1) of a logit z: exactly 0
    for z <= 0 (the correction is off), 1 in the limit."""
    return torch.relu(torch.tanh(z * 0.5))


def block_dct_gate(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 (uint8 or floating) -> the gate logit z (B,) of each image: a blind
    quality estimate, ``bias + weight . log(mean over blocks |block_dct(img)| + GATE_EPS)`` (192
    statistics, one per coefficient and colour; nn.Linear(192, 1) layouts). Computed in weight's
    dtype (float32 for the half types) and returned in it. H or W = 0: no blocks, a NaN mean (torch's
    mean of nothing), so z is NaN; B = 0: an empty result."""
    checks.check_image(img, uint8=True)
    checks.check_gate_head(img, weight, bias)
    cd = _compute_dtype(weight.dtype)
    return F.linear(gate_statistics(img, cd), weight.to(cd), bias.to(cd)).squeeze(1).to(weight.dtype)


def gate_statistics(img: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 -> (B,192): the statistics the whole-image gate weighs,
    log(mean over blocks |block_dct(img)| + GATE_EPS) per coefficient and colour, in ``dtype``
    (what ``block_dct_gate`` computes before its linear head; a head is fitted on them)."""
    return torch.log(block_dct(img.to(dtype)).abs().mean(dim=(2, 3)) + GATE_EPS)


def fde_net(coeffs: torch.Tensor, w1, b1, w2, b2, w3, b3, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-block MLP: sigmoid(w3 relu(w2 relu(w1 D + b1) + b2) + b3) on each block's 192 coefficients,
    times ``gate_value(gate[b])`` per image when a gate logit is given (before the one rounding)."""
    out_dtype = coeffs.dtype
    cd = _compute_dtype(coeffs.dtype)
    d = coeffs.to(cd).permute(0, 2, 3, 1)  # (B,Hb,Wb,192)
    h = F.relu(F.linear(d, w1.to(cd), b1.to(cd)))
    h = F.relu(F.linear(h, w2.to(cd), b2.to(cd)))
    out = torch.sigmoid(F.linear(h, w3.to(cd), b3.to(cd)))
    if gate is not None:
        out = out * gate_value(gate.to(cd)).view(-1, 1, 1, 1)
    return out.permute(0, 3, 1, 2).to(out_dtype)


def block_dct_fdm(img: torch.Tensor, w1, b1, w2, b2, w3, b3, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,3,H,W) RGB -> (B,C,H/8,W/8) feature-drift map in (0,1): FDE-Net on the block DCT.

    ``img`` is floating, of the weights' dtype, or uint8 (0..255): the result is then the one for
    ``img.to(w1.dtype)`` (exact in every floating dtype), in the weights' dtype.
    ``gate``: None, or one logit per image (B,), any floating dtype: the FDM of image b is scaled by
    ``gate_value(gate[b])`` (the whole-image gate, docs/design.md §1), computed in the compute dtype.
    B, H, W or C = 0 gives an empty result; h1 = 0 or h2 = 0 raises (module docstring).
    """
    checks.check_image(img, uint8=True)
    checks.check_fde_weights(img, w1, b1, w2, b2, w3, b3)
    checks.check_gate_logit(img, gate)
    if img.dtype == torch.uint8:
        img = img.to(w1.dtype)
    return fde_net(block_dct(img), w1, b1, w2, b2, w3, b3, gate)


def apply_act(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    if act == "identity":
        return x
    raise ValueError(f"act must be one of ('relu', 'relu6', 'identity'), got {act!r}")


def upsample_fdm(fdm: torch.Tensor, size) -> torch.Tensor:
    """Nearest upsampling by an integer factor: each FDM cell covers a (Hf/Hb)x(Wf/Wb) patch."""
    hb, wb = fdm.shape[-2:]
    hf, wf = size
    return fdm.repeat_interleave(hf // hb, dim=-2).repeat_interleave(wf // wb, dim=-1)


def dedrift(feat: torch.Tensor, d: torch.Tensor, fdm: torch.Tensor, act: str) -> torch.Tensor:
    """act(feat + d * nearest_up(fdm))."""
    return apply_act(feat + d * upsample_fdm(fdm, feat.shape[-2:]), act)


def upsample2(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest 2x upsampling cropped to ``size`` (H, W), x being (..., ceil(H/2), ceil(W/2)):
    out[..., i, j] = x[..., i // 2, j // 2]. Equal to F.interpolate(x, size, mode="nearest"), which
    the training-form FE-Net calls."""
    h, w = size
    return x.repeat_interleave(2, dim=-2)[..., :h, :].repeat_interleave(2, dim=-1)[..., :w]


def conv_input(x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
    """What an FE-Net conv reads: ``x``, or ``cat(upsample2(x), skip)`` (a decoder block)."""
    return x if skip is None else torch.cat([upsample2(x, skip.shape[-2:]), skip], 1)


def conv3x3(u: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """3x3 conv, stride 1, zero padding 1. The padding is explicit: a tap on it multiplies a zero like
    any other, so a NaN or infinite weight gives 0 * w = NaN there. F.conv2d(padding=1) leaves padded
    taps out on some paths (oneDNN on CPU) and not on others, so its NaN/Inf pattern would depend on
    dtype and size."""
    return F.conv2d(F.pad(u, (1, 1, 1, 1)), weight, bias)


def _empty_result(shape, like: torch.Tensor, cd: torch.dtype, inputs) -> torch.Tensor:
    """An empty result on every input's graph: F.conv2d rejects some empty shapes (C = 0, H = 0); the
    zero term makes autograd give zero (not missing) gradients."""
    zero = sum(t.sum() for t in inputs if t is not None) * 0
    return (like.new_zeros(shape, dtype=cd) + zero.to(cd)).to(like.dtype)


def fe_conv(x: torch.Tensor, skip: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
            alpha: torch.Tensor, pool: bool) -> torch.Tensor:
    """One deployed FE-Net block: ``maxpool2x2(prelu(conv3x3(u, weight) + bias, alpha))``, the pool only
    when ``pool`` (stride 2, ceil mode: an odd edge keeps its last row/column; NaN propagates).

    u = x (B, Cin, H, W), or with ``skip`` (B, Cs, H, W) the decoder's cat(upsample2(x), skip), x then
    being (B, Cx, ceil(H/2), ceil(W/2)). weight (Cout, Cin, 3, 3) (Cin = Cx + Cs), bias None or (Cout,),
    alpha (Cout,): PReLU's slopes, y > 0 ? y : alpha * y as torch computes it. Output (B, Cout, H, W),
    or (B, Cout, ceil(H/2), ceil(W/2)) with the pool. B, H, W or Cout = 0: an empty result; Cin = 0
    raises (module docstring). Half types are computed in float32 and rounded once at the end.
    """
    checks.check_fe_conv(x, skip, weight, bias, alpha, pool)
    out_dtype = x.dtype
    cd = _compute_dtype(out_dtype)
    b, _, h, w = (x if skip is None else skip).shape
    c = weight.shape[0]
    if pool:
        h, w = checks.half_size(h), checks.half_size(w)
    if b * c * h * w == 0:
        return _empty_result((b, c, h, w), x, cd, (x, skip, weight, bias, alpha))
    u = conv_input(x.to(cd), None if skip is None else skip.to(cd))
    y = F.prelu(conv3x3(u, weight.to(cd), None if bias is None else bias.to(cd)), alpha.to(cd))
    if pool:
        y = F.max_pool2d(y, 2, ceil_mode=True)
    return y.to(out_dtype)


def repconv_dedrift(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    fdm: torch.Tensor, feat: torch.Tensor, act: str,
                    skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """act(feat + (conv3x3(u, weight, pad 1) + bias) * nearest_up(fdm)), u = x, or with ``skip`` the
    decoder's cat(upsample2(x), skip) as in :func:`fe_conv` (x then ceil(Hf/2) x ceil(Wf/2)).

    The conv's zero padding takes part like image pixels: a NaN or +-inf weight gives NaN wherever
    its tap lies on the padding (0 * w), as it does in every backend.
    Empty ``feat`` (B, C, Hf or Wf = 0): an empty result; Cin = 0 raises (module docstring).
    """
    checks.check_repconv_dedrift(x, weight, bias, fdm, feat, act, skip)
    out_dtype = x.dtype
    cd = _compute_dtype(x.dtype)
    if feat.numel() == 0:
        return _empty_result(feat.shape, feat, cd, (x, skip, weight, bias, fdm, feat))
    u = conv_input(x.to(cd), None if skip is None else skip.to(cd))
    d = conv3x3(u, weight.to(cd), None if bias is None else bias.to(cd))
    return dedrift(feat.to(cd), d, fdm.to(cd), act).to(out_dtype)
