"""Triton kernel of afd::fe_conv: maxpool2x2?(prelu(conv3x3(u, weight, pad 1) + bias, alpha)), u = x or
cat(nearest_up2(x), skip): one deployed FE-Net block in one launch.

Implicit-GEMM direct convolution (the loader is ``_triton_utils.conv3x3_accumulate``, shared with
repconv_dedrift): each program owns a tile of BLOCK_P output pixels (flattened over B, OH, OW) x
BLOCK_C output channels and loops over the input channels in chunks of BLOCK_K x the 9 taps
(unrolled; per tap a masked (BLOCK_P, BLOCK_K) input tile, a (BLOCK_K, BLOCK_C) weight tile and a
tl.dot into one (BLOCK_P, BLOCK_C) accumulator).

Two sources, nothing materialized: with ``skip``, input channels ci < Cx are read from x at
(h // 2, w // 2) and ci >= Cx from skip at (h, w) (two channel loops, each through its tensor's own
strides), so neither the upsampled x nor the concatenation goes to memory.

Pool in the epilogue: with ``pool`` an output pixel (oh, ow) is the 2x2 window of conv positions
(2oh + dy, 2ow + dx). The program computes them one after the other (a loop of 4, not unrolled:
one accumulator live; four unrolled accumulators fed from a shared 4x4 patch spilled registers in
ptxas for sm_90), each through bias + PReLU into a running NaN-propagating max (ceil mode: the
positions past an odd edge are left out, (2oh, 2ow) always counts), then stores once: no pre-pool or
pre-PReLU tensor goes to memory.

Padding zeros go through the dot like pixels (a NaN or infinite weight gives 0 * w = NaN on a padded
tap, as the reference's F.pad defines it). Accumulation float32 (float64 for float64), IEEE
precision for float32 (no TF32); float16/bfloat16 tiles go to tensor cores as they are (exact
products, float32 sums), rounded once at the store. Every tensor is read and written through its own
strides (contiguous, channels_last or any view), with int64 offsets. Under TRITON_INTERPRET=1 the
tiles are large (the interpreter's cost is per op) and half dot operands are upcast (its tl.dot
mishandles bfloat16). Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from afd_ext.reference import checks

from . import _triton_utils as U
from ._triton_utils import conv3x3_accumulate

#: GPU tiles per input dtype class and pool: (BLOCK_P, max BLOCK_C, max BLOCK_K, num_warps, num_stages).
#: BLOCK_P counts output pixels (with the pool, each is four conv positions computed in turn).
#: Not timed on a GPU. Compiled offline for sm_90 (Triton 3.8, ptxas 12.9, arguments specialized as a
#: launch would) for the five Lite0 FE-Net blocks (width 8, batch 256, 112x112), NHWC and NCHW:
#: bfloat16 64-249 registers, no spills; float32 64-182, spills of 4-16 bytes in two of ten.
GPU_TILES = {
    ("half", False): (64, 64, 32, 4, 2),
    ("half", True): (32, 64, 32, 4, 2),
    ("float32", False): (64, 64, 16, 8, 1),
    ("float32", True): (32, 64, 16, 8, 1),
    ("float64", False): (32, 32, 16, 4, 1),
    ("float64", True): (16, 32, 16, 4, 1),
}
#: Flat output-pixel indices (B*OH*OW plus one tile) above this run in int64 (tests lower it).
INT32_INDEX_LIMIT = 2 ** 31 - 1
#: Interpreter tiles: big tiles, few programs (numpy vectorizes inside a program).
INTERP_MAX_BLOCK_P = 1024
INTERP_MAX_BLOCK_C = 128
INTERP_MAX_BLOCK_K = 128


@triton.jit
def _prelu(v, alpha):
    return tl.where(v > 0, v, alpha * v)  # NaN: not > 0, alpha * NaN = NaN (torch's prelu)


@triton.jit
def _pool_max(m, v, ok):
    """max(m, v) where ok, as torch's max_pool2d: a NaN anywhere in the window wins."""
    return tl.where(ok & ((v > m) | (v != v)), v, m)


@triton.jit
def _fe_conv_kernel(
    x_ptr, skip_ptr, w_ptr, bias_ptr, alpha_ptr, out_ptr,
    n_out, C, CX, CS, H, W, OH, OW,
    xs_b, xs_c, xs_h, xs_w,
    ss_b, ss_c, ss_h, ss_w,
    ws_o, ws_i, ws_h, ws_w,
    bias_s, alpha_s,
    os_b, os_c, os_h, os_w,
    HAS_SKIP: tl.constexpr, HAS_BIAS: tl.constexpr, POOL: tl.constexpr, UPCAST_DOT: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if w_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_p = tl.program_id(0)
    if INDEX64:  # int64 division costs registers: only where the flat index can pass 2^31
        pid_p = tl.cast(pid_p, tl.int64)
    pid_c = tl.program_id(1)
    rp = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = rp < n_out
    ow = tl.cast(rp % OW, tl.int64)
    t = rp // OW
    oh = tl.cast(t % OH, tl.int64)
    b = tl.cast(t // OH, tl.int64)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = rc < C
    rc64 = rc.to(tl.int64)
    w_c = w_ptr + rc64 * ws_o  # (BLOCK_C,) pointers to weight[c, 0, 0, 0]
    alpha = tl.load(alpha_ptr + rc64 * alpha_s, mask=c_mask, other=0.0).to(ACC)[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rc64 * bias_s, mask=c_mask, other=0.0).to(ACC)[None, :]

    # The conv positions of an output pixel: itself, or with the pool its 2x2 window, one after the
    # other (a loop, not unrolled: one accumulator live, the pool's max kept beside it). Ceil mode:
    # (2oh, 2ow) is inside the image, the other three where the size allows.
    NQ: tl.constexpr = 4 if POOL else 1
    y = tl.full((BLOCK_P, BLOCK_C), float("-inf"), ACC)
    for q in range(NQ):
        if POOL:
            h = oh * 2 + q // 2
            w = ow * 2 + q % 2
            ok = p_mask & (h < H) & (w < W)
        else:
            h = oh
            w = ow
            ok = p_mask
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
        if HAS_SKIP:  # u = cat(up2(x), skip): x's channels first, read at (h // 2, w // 2)
            acc = conv3x3_accumulate(acc, x_ptr, xs_b, xs_c, xs_h, xs_w, CX, w_c, 0, ws_i, ws_h, ws_w,
                                     c_mask, b, h, w, H, W, ok, True, UPCAST_DOT, ACC, BLOCK_K)
            acc = conv3x3_accumulate(acc, skip_ptr, ss_b, ss_c, ss_h, ss_w, CS, w_c, CX, ws_i, ws_h, ws_w,
                                     c_mask, b, h, w, H, W, ok, False, UPCAST_DOT, ACC, BLOCK_K)
        else:
            acc = conv3x3_accumulate(acc, x_ptr, xs_b, xs_c, xs_h, xs_w, CX, w_c, 0, ws_i, ws_h, ws_w,
                                     c_mask, b, h, w, H, W, ok, False, UPCAST_DOT, ACC, BLOCK_K)
        if HAS_BIAS:
            acc = acc + bias
        v = _prelu(acc, alpha)
        if POOL:
            y = _pool_max(y, v, ok[:, None])  # from -inf: the first position always counts
        else:
            y = v
    mask = p_mask[:, None] & c_mask[None, :]
    tl.store(out_ptr + (b * os_b + oh * os_h + ow * os_w)[:, None] + rc64[None, :] * os_c,
             y.to(out_ptr.dtype.element_ty), mask=mask)


def _gpu_tiles(dtype: torch.dtype, pool: bool):
    cls = "half" if dtype in (torch.float16, torch.bfloat16) else ("float64" if dtype == torch.float64 else "float32")
    return GPU_TILES[(cls, pool)]


def fe_conv(x: torch.Tensor, skip: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
            alpha: torch.Tensor, pool: bool) -> torch.Tensor:
    """maxpool2x2?(prelu(conv3x3(u, weight, pad 1) + bias, alpha)), u = x or cat(up2(x), skip), fused (Triton)."""
    checks.check_fe_conv(x, skip, weight, bias, alpha, pool)
    U.check_runnable(_fe_conv_kernel, "fe_conv", x)
    like = x if skip is None else skip
    bsz, _, h, w = like.shape
    cx = x.shape[1]
    cs = 0 if skip is None else skip.shape[1]
    c = weight.shape[0]
    oh, ow = (checks.half_size(h), checks.half_size(w)) if pool else (h, w)
    out = torch.empty((bsz, c, oh, ow), dtype=x.dtype, device=x.device,
                      memory_format=checks.output_memory_format(like))
    n_out = bsz * oh * ow
    if n_out == 0 or c == 0:
        return out
    interp = U.interpreting(_fe_conv_kernel)
    if interp:
        block_p = U.next_pow2(n_out, 16, INTERP_MAX_BLOCK_P)
        block_c = U.next_pow2(c, 16, INTERP_MAX_BLOCK_C)
        block_k = U.next_pow2(max(cx, cs), 16, INTERP_MAX_BLOCK_K)
        warps, stages = 4, 1
    else:
        block_p, max_c, max_k, warps, stages = _gpu_tiles(x.dtype, pool)
        block_c = U.next_pow2(c, 16, max_c)
        block_k = U.next_pow2(max(cx, cs), 16, max_k)
    grid = (triton.cdiv(n_out, block_p), triton.cdiv(c, block_c))
    has_bias = bias is not None
    has_skip = skip is not None
    with U.device_guard(x):
        _fe_conv_kernel[grid](
            x, skip if has_skip else x, weight, bias if has_bias else alpha, alpha, out,
            n_out, c, cx, cs, h, w, oh, ow,
            *x.stride(), *(skip.stride() if has_skip else (0, 0, 0, 0)),
            *weight.stride(), bias.stride(0) if has_bias else 0, alpha.stride(0),
            *out.stride(),
            HAS_SKIP=has_skip, HAS_BIAS=has_bias, POOL=pool, UPCAST_DOT=interp,
            INDEX64=n_out + block_p > INT32_INDEX_LIMIT,
            BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_K=block_k,
            num_warps=warps, num_stages=stages,
        )
    return out
