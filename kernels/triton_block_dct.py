"""Triton kernel of afd::block_dct: (B,3,H,W) RGB 0..255 -> (B,192,H/8,W/8) JPEG block-DCT.

Each program takes BLOCK_M 8x8 blocks (flattened over B, H/8, W/8), loads their pixels as
(BLOCK_M, 64) tiles per colour (any input strides), converts to level-shifted YCbCr and
multiplies by the transposed zig-zag DCT basis (64x64) with tl.dot, then stores the three
(BLOCK_M, 64) coefficient tiles through the output's strides. Accumulation is float32
(float64 for float64 input), IEEE precision (no TF32). The math (basis, colour transform)
comes from afd_ext.reference.constants; the definition is afd_ext.reference.block_dct.

Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from afd_ext.reference import checks
from afd_ext.reference.constants import BLOCK, N_DCT_CHANNELS

from . import _triton_utils as U
from ._triton_utils import block_dct_tile

#: Tile sizes. GPU: blocks per program and warps (32 x 8 warps compiles for sm_90 without
#: register spills in every dtype; 32 x 4 spills); interpreter: one big tile (fewer programs
#: means fewer Python-level steps; numpy vectorizes inside a program).
GPU_BLOCK_M = 32
GPU_NUM_WARPS = 8
INTERP_MAX_BLOCK_M = 256


@triton.jit
def _block_dct_kernel(
    img_ptr, basis_t_ptr, ycc_ptr, out_ptr,
    n_blocks, n_hb, n_wb,
    s_b, s_c, s_h, s_w,
    o_b, o_c, o_h, o_w,
    BLOCK_M: tl.constexpr,
):
    # float64 input computes in float64, the rest in float32 (like the reference).
    ACC: tl.constexpr = tl.float64 if img_ptr.dtype.element_ty == tl.float64 else tl.float32
    d0, d1, d2, b, hb, wb, mask = block_dct_tile(img_ptr, basis_t_ptr, ycc_ptr, tl.program_id(0), n_blocks,
                                                 n_hb, n_wb, s_b, s_c, s_h, s_w, BLOCK_M, ACC)
    k = tl.arange(0, 64)
    out_base = out_ptr + b[:, None] * o_b + hb[:, None] * o_h + wb[:, None] * o_w
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_base + k[None, :].to(tl.int64) * o_c, d0.to(out_ty), mask=mask)
    tl.store(out_base + (64 + k)[None, :].to(tl.int64) * o_c, d1.to(out_ty), mask=mask)
    tl.store(out_base + (128 + k)[None, :].to(tl.int64) * o_c, d2.to(out_ty), mask=mask)


def block_dct(img: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 -> (B,192,H/8,W/8) JPEG block-DCT coefficients (Triton)."""
    checks.check_image(img)
    U.check_runnable(_block_dct_kernel, "block_dct", img)
    b, _, h, w = img.shape
    n_hb, n_wb = h // BLOCK, w // BLOCK
    out = torch.empty((b, N_DCT_CHANNELS, n_hb, n_wb), dtype=img.dtype, device=img.device,
                      memory_format=checks.output_memory_format(img))
    n_blocks = b * n_hb * n_wb
    if n_blocks == 0:
        return out
    basis_t, ycc = U.dct_constants(U.acc_dtype(img.dtype), img.device)
    if U.interpreting(_block_dct_kernel):
        block_m, warps = U.next_pow2(n_blocks, 16, INTERP_MAX_BLOCK_M), 4
    else:
        block_m, warps = GPU_BLOCK_M, GPU_NUM_WARPS
    U.check_block_count("block_dct", n_blocks, block_m)
    grid = (triton.cdiv(n_blocks, block_m),)
    with U.device_guard(img):
        _block_dct_kernel[grid](
            img, basis_t, ycc, out,
            n_blocks, n_hb, n_wb,
            *img.stride(), *out.stride(),
            BLOCK_M=block_m, num_warps=warps,
        )
    return out
