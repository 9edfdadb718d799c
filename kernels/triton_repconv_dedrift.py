"""Triton kernel of afd::repconv_dedrift: act(feat + (conv3x3(u, weight, pad 1) + bias) * nearest_up(fdm)),
u = x, or with ``skip`` the decoder's cat(nearest_up2(x), skip).

Implicit-GEMM direct convolution, the conv output never written to memory: each program owns a
tile of BLOCK_P output pixels (flattened over B, Hf, Wf) x BLOCK_C output channels and loops over
the input channels in chunks of BLOCK_K x the 9 taps (``_triton_utils.conv3x3_accumulate``, shared
with fe_conv; unrolled, per tap an input tile (BLOCK_P, BLOCK_K) loaded with masks for the zero
padding, a weight tile (BLOCK_K, BLOCK_C) and a tl.dot). With ``skip`` there are two channel loops:
channels ci < Cx read from x at (h // 2, w // 2), ci >= Cx from skip at (h, w), so neither the
upsampled x nor the concatenation goes to memory. The padding zeros go through the dot like pixels,
as the reference defines it: a NaN or infinite weight gives 0 * w = NaN on a padded tap (never skip
those taps). The epilogue adds the bias, multiplies by the FDM cell fdm[b, c, h // (Hf/Hb), w // (Wf/Wb)],
adds feat, applies the activation (constexpr; ReLU and ReLU6 keep NaN like torch) and stores
through the output's strides. Every input is read through
its own strides (contiguous, channels_last or any view), with int64 offsets.

Under TRITON_INTERPRET=1 the tiles are large (few programs: the interpreter's cost is per op)
and half-precision dot operands are upcast (the interpreter's tl.dot mishandles bfloat16).

Accumulation: float32 (float64 for float64 input), IEEE precision for float32 (no TF32);
float16/bfloat16 tiles go to tensor cores as they are (exact products, float32 accumulation),
which is what the reference computes after casting to float32.

Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from afd_ext.reference import checks
from afd_ext.reference.constants import ACT_CODES

from . import _triton_utils as U
from ._triton_utils import conv3x3_accumulate

# The ACT constexpr takes the codes of every kernel (python/constants.py, csrc/afd_constants.h).
_RELU = tl.constexpr(ACT_CODES["relu"])
_RELU6 = tl.constexpr(ACT_CODES["relu6"])

#: GPU tiles per input dtype class: (BLOCK_P, max BLOCK_C, max BLOCK_K, num_warps, num_stages).
#: Chosen so that the kernel compiles for sm_90 (ptxas 12.9) without register spills for NCHW
#: and NHWC strides; not yet timed on a GPU.
GPU_TILES = {
    "half": (64, 64, 32, 4, 2),     # float16 / bfloat16: tensor cores; ~165-185 regs, 32-78 KB smem
    "float32": (64, 64, 16, 8, 1),  # IEEE fp32 (FMA); ~120-150 regs, 16 KB smem
    "float64": (32, 32, 16, 4, 1),  # fp64 mma; ~90 regs, 8 KB smem
}
#: Flat pixel indices (B*Hf*Wf plus one tile) above this run in int64 (tests lower it).
INT32_INDEX_LIMIT = 2 ** 31 - 1
#: Interpreter tiles: big tiles, few programs (numpy vectorizes inside a program).
INTERP_MAX_BLOCK_P = 1024
INTERP_MAX_BLOCK_C = 128
INTERP_MAX_BLOCK_K = 128


@triton.jit
def _repconv_dedrift_kernel(
    x_ptr, skip_ptr, w_ptr, bias_ptr, fdm_ptr, feat_ptr, out_ptr,
    n_pix, C, CX, CS, HF, WF, RH, RW,
    xs_b, xs_c, xs_h, xs_w,
    ss_b, ss_c, ss_h, ss_w,
    ws_o, ws_i, ws_h, ws_w,
    bias_s,
    fs_b, fs_c, fs_h, fs_w,
    es_b, es_c, es_h, es_w,
    os_b, os_c, os_h, os_w,
    HAS_SKIP: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, UPCAST_DOT: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    # int64 offsets: an int32 stride times an index can pass 2^31. The flat pixel index is int32
    # unless it can pass 2^31 itself (INDEX64): int64 division there costs ~100 registers.
    pid_p = tl.program_id(0)
    if INDEX64:
        pid_p = tl.cast(pid_p, tl.int64)
    pid_c = tl.program_id(1)
    rp = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = rp < n_pix
    w = tl.cast(rp % WF, tl.int64)
    t = rp // WF
    h = tl.cast(t % HF, tl.int64)
    b = tl.cast(t // HF, tl.int64)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = rc < C
    rc64 = rc.to(tl.int64)

    w_c = w_ptr + rc64 * ws_o  # (BLOCK_C,) pointers to weight[c, 0, 0, 0]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    if HAS_SKIP:  # u = cat(up2(x), skip): x's channels first, read at (h // 2, w // 2)
        acc = conv3x3_accumulate(
            acc, x_ptr, xs_b, xs_c, xs_h, xs_w, CX, w_c, 0, ws_i, ws_h, ws_w,
            c_mask, b, h, w, HF, WF, p_mask, True, UPCAST_DOT, ACC, BLOCK_K)
        acc = conv3x3_accumulate(
            acc, skip_ptr, ss_b, ss_c, ss_h, ss_w, CS, w_c, CX, ws_i, ws_h, ws_w,
            c_mask, b, h, w, HF, WF, p_mask, False, UPCAST_DOT, ACC, BLOCK_K)
    else:
        acc = conv3x3_accumulate(
            acc, x_ptr, xs_b, xs_c, xs_h, xs_w, CX, w_c, 0, ws_i, ws_h, ws_w,
            c_mask, b, h, w, HF, WF, p_mask, False, UPCAST_DOT, ACC, BLOCK_K)

    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rc64 * bias_s, mask=c_mask, other=0.0).to(ACC)[None, :]
    mask = p_mask[:, None] & c_mask[None, :]
    fdm = tl.load(fdm_ptr + (b * fs_b + (h // RH) * fs_h + (w // RW) * fs_w)[:, None] + rc64[None, :] * fs_c,
                  mask=mask, other=0.0).to(ACC)
    feat = tl.load(feat_ptr + (b * es_b + h * es_h + w * es_w)[:, None] + rc64[None, :] * es_c,
                   mask=mask, other=0.0).to(ACC)
    y = feat + acc * fdm
    if ACT == _RELU:  # NaN-propagating, like torch
        y = tl.where(y < 0, 0.0, y)
    elif ACT == _RELU6:
        y = tl.where(y < 0, 0.0, tl.where(y > 6, 6.0, y))
    tl.store(out_ptr + (b * os_b + h * os_h + w * os_w)[:, None] + rc64[None, :] * os_c,
             y.to(out_ptr.dtype.element_ty), mask=mask)


def _gpu_tiles(dtype: torch.dtype):
    if dtype in (torch.float16, torch.bfloat16):
        return GPU_TILES["half"]
    return GPU_TILES["float64" if dtype == torch.float64 else "float32"]


def repconv_dedrift(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    fdm: torch.Tensor, feat: torch.Tensor, act: str,
                    skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """act(feat + (conv3x3(u, weight, pad 1) + bias) * nearest_up(fdm)), u = x or cat(up2(x), skip), fused (Triton)."""
    checks.check_repconv_dedrift(x, weight, bias, fdm, feat, act, skip)
    U.check_runnable(_repconv_dedrift_kernel, "repconv_dedrift", x)
    bsz, c, hf, wf = feat.shape
    cx = x.shape[1]
    cs = 0 if skip is None else skip.shape[1]
    hb, wb = fdm.shape[2:]
    out = torch.empty(feat.shape, dtype=feat.dtype, device=feat.device,
                      memory_format=checks.output_memory_format(feat))
    n_pix = bsz * hf * wf
    if n_pix == 0 or c == 0:
        return out
    interp = U.interpreting(_repconv_dedrift_kernel)
    if interp:
        block_p = U.next_pow2(n_pix, 16, INTERP_MAX_BLOCK_P)
        block_c = U.next_pow2(c, 16, INTERP_MAX_BLOCK_C)
        block_k = U.next_pow2(max(cx, cs), 16, INTERP_MAX_BLOCK_K)
        warps, stages = 4, 1
    else:
        block_p, max_c, max_k, warps, stages = _gpu_tiles(x.dtype)
        block_c = U.next_pow2(c, 16, max_c)
        block_k = U.next_pow2(max(cx, cs), 16, max_k)
    grid = (triton.cdiv(n_pix, block_p), triton.cdiv(c, block_c))
    has_bias = bias is not None
    has_skip = skip is not None
    with U.device_guard(x):
        _repconv_dedrift_kernel[grid](
            x, skip if has_skip else x, weight, bias if has_bias else feat, fdm, feat, out,
            n_pix, c, cx, cs, hf, wf, hf // hb, wf // wb,
            *x.stride(), *(skip.stride() if has_skip else (0, 0, 0, 0)),
            *weight.stride(), bias.stride(0) if has_bias else 0,
            *fdm.stride(), *feat.stride(), *out.stride(),
            HAS_SKIP=has_skip, HAS_BIAS=has_bias, ACT=ACT_CODES[act], UPCAST_DOT=interp,
            INDEX64=n_pix + block_p > INT32_INDEX_LIMIT,
            BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_K=block_k,
            num_warps=warps, num_stages=stages,
        )
    return out
