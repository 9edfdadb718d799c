"""Triton kernel of afd::block_dct_fdm: block DCT + FDE-Net MLP + sigmoid in one pass.

(B,3,H,W) RGB 0..255 -> (B,C,H/8,W/8) FDM = sigmoid(w3 relu(w2 relu(w1 D + b1) + b2) + b3)
per 8x8 block, D the block's 192 DCT coefficients. D never goes to memory:

* each program takes BLOCK_M blocks; their pixels are loaded as (BLOCK_M, 64) tiles per colour
  (any strides; a uint8 image's pixels are converted as they are loaded), converted to
  level-shifted YCbCr and multiplied by the (64, 64) transposed zig-zag basis (tl.dot) -> three
  (BLOCK_M, 64) coefficient chunks in registers;
* layer 1 runs over h1 in chunks of BLOCK_H1: h = relu(sum_c D_c @ W1[:, c*64:(c+1)*64]^T + b1)
  and each chunk is immediately folded into layer 2's accumulator (BLOCK_M, H2P) += h @ W2^T;
* relu(+b2), then layer 3 over C in chunks of BLOCK_C: sigmoid(h2 @ W3^T + b3), stored through
  the output's strides.

h1, h2, C are padded to powers of two (>= 16, tl.dot's minimum) with masked loads; padded
hidden units are forced to 0 after the ReLU so a NaN/Inf in D cannot leak through them.
Offsets are int64 (strides cast on entry). The compute dtype is the weights' (the output's; a
floating image has it too, a uint8 image is converted). Accumulation is float32 (float64 for
float64 weights) with IEEE precision (no TF32). As in the reference (which stores D in the
compute dtype before the MLP), D is rounded to the compute dtype; for float16/bfloat16, layer 1
then multiplies half D by half W1 on tensor cores with float32 accumulation (exact products),
layers 2-3 run in float32.

Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from afd_ext.reference import checks
from afd_ext.reference.constants import BLOCK

from . import _triton_utils as U
from ._triton_utils import block_dct_tile

#: GPU tiles: blocks per program, h1 chunk, max C chunk, warps. (32, 16, 8 warps) compiles for
#: sm_90 without register spills in every dtype (h2=64, C=32), 41-119 KB shared memory.
GPU_BLOCK_M = 32
GPU_BLOCK_H1 = 16
GPU_MAX_BLOCK_C = 64
GPU_NUM_WARPS = 8
#: Interpreter tiles: as few programs and loop steps as possible.
INTERP_MAX_BLOCK_M = 256
INTERP_MAX_BLOCK_H1 = 256
INTERP_MAX_BLOCK_C = 256


@triton.jit
def _block_dct_fdm_kernel(
    img_ptr, basis_t_ptr, ycc_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
    out_ptr,
    n_blocks, n_hb, n_wb, H1, H2, C,
    s_b, s_c, s_h, s_w,
    w1_s0, w1_s1, b1_s, w2_s0, w2_s1, b2_s, w3_s0, w3_s1, b3_s,
    o_b, o_c, o_h, o_w,
    BLOCK_M: tl.constexpr, BLOCK_H1: tl.constexpr, H2P: tl.constexpr, BLOCK_C: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    IN: tl.constexpr = out_ptr.dtype.element_ty  # the weights' dtype (img: the same, or uint8)
    ACC: tl.constexpr = tl.float64 if IN == tl.float64 else tl.float32
    # int64 strides: an int32 stride times an index can pass 2^31 (strided views, big outputs).
    w1_s0 = tl.cast(w1_s0, tl.int64)
    w1_s1 = tl.cast(w1_s1, tl.int64)
    b1_s = tl.cast(b1_s, tl.int64)
    w2_s0 = tl.cast(w2_s0, tl.int64)
    w2_s1 = tl.cast(w2_s1, tl.int64)
    b2_s = tl.cast(b2_s, tl.int64)
    w3_s0 = tl.cast(w3_s0, tl.int64)
    w3_s1 = tl.cast(w3_s1, tl.int64)
    b3_s = tl.cast(b3_s, tl.int64)
    o_c = tl.cast(o_c, tl.int64)
    d0, d1, d2, b, hb64, wb64, mask = block_dct_tile(img_ptr, basis_t_ptr, ycc_ptr, tl.program_id(0), n_blocks,
                                                     n_hb, n_wb, s_b, s_c, s_h, s_w, BLOCK_M, ACC)
    k = tl.arange(0, 64)  # zig-zag coefficient index within a colour
    # D in the compute dtype (the reference stores block_dct's output before the MLP).
    d0 = d0.to(IN)
    d1 = d1.to(IN)
    d2 = d2.to(IN)
    # Layer-1 operand dtype: the compute dtype (tensor cores for half types), except under the
    # interpreter, whose tl.dot mishandles bfloat16 operands.
    L1: tl.constexpr = ACC if UPCAST_DOT else IN
    d0 = d0.to(L1)
    d1 = d1.to(L1)
    d2 = d2.to(L1)

    # ---- layers 1+2: loop over h1 chunks, fold each into the layer-2 accumulator.
    n2 = tl.arange(0, H2P)
    n2_mask = n2 < H2
    acc2 = tl.zeros((BLOCK_M, H2P), dtype=ACC)
    kcol = k * w1_s1
    for j0 in range(0, H1, BLOCK_H1):
        j = j0 + tl.arange(0, BLOCK_H1)
        j_mask = j < H1
        w1_rows = w1_ptr + j[None, :] * w1_s0 + kcol[:, None]  # (64, BLOCK_H1): W1^T chunk
        w1_m = j_mask[None, :]
        h = tl.dot(d0, tl.load(w1_rows, mask=w1_m, other=0.0).to(L1), input_precision="ieee", out_dtype=ACC)
        h = tl.dot(d1, tl.load(w1_rows + 64 * w1_s1, mask=w1_m, other=0.0).to(L1), h, input_precision="ieee",
                   out_dtype=ACC)
        h = tl.dot(d2, tl.load(w1_rows + 128 * w1_s1, mask=w1_m, other=0.0).to(L1), h, input_precision="ieee",
                   out_dtype=ACC)
        h = h + tl.load(b1_ptr + j * b1_s, mask=j_mask, other=0.0).to(ACC)[None, :]
        h = tl.where(h < 0, 0.0, h)  # ReLU that keeps NaN
        h = tl.where(j_mask[None, :], h, 0.0)
        w2t = tl.load(w2_ptr + n2[None, :] * w2_s0 + j[:, None] * w2_s1,
                      mask=j_mask[:, None] & n2_mask[None, :], other=0.0).to(ACC)  # (BLOCK_H1, H2P)
        acc2 = tl.dot(h, w2t, acc2, input_precision="ieee", out_dtype=ACC)  # Triton 3.6 needs it with acc
    h2 = acc2 + tl.load(b2_ptr + n2 * b2_s, mask=n2_mask, other=0.0).to(ACC)[None, :]
    h2 = tl.where(h2 < 0, 0.0, h2)
    h2 = tl.where(n2_mask[None, :], h2, 0.0)

    # ---- layer 3 + sigmoid, over C chunks; store (B, C, Hb, Wb) through the output strides.
    out_base = out_ptr + b[:, None] * o_b + hb64[:, None] * o_h + wb64[:, None] * o_w
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        c_mask = cc < C
        w3t = tl.load(w3_ptr + cc[None, :] * w3_s0 + n2[:, None] * w3_s1,
                      mask=n2_mask[:, None] & c_mask[None, :], other=0.0).to(ACC)  # (H2P, BLOCK_C)
        o = tl.dot(h2, w3t, input_precision="ieee", out_dtype=ACC)
        o = o + tl.load(b3_ptr + cc * b3_s, mask=c_mask, other=0.0).to(ACC)[None, :]
        # sigmoid via e = exp(-|o|): no overflow, exact limits at +-inf, NaN stays NaN
        e = tl.exp(-tl.abs(o))
        o = tl.where(o >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        tl.store(out_base + cc[None, :] * o_c, o.to(out_ptr.dtype.element_ty),
                 mask=mask & c_mask[None, :])


def block_dct_fdm(img: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, gate=None) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 (floating of the weights' dtype, or uint8) -> (B,C,H/8,W/8) FDM in (0,1)
    in the weights' dtype: fused block DCT + FDE-Net (Triton); ``gate`` (B,) logits scale it per image
    (a pass over the small FDM: U.apply_gate_)."""
    checks.check_image(img, uint8=True)
    checks.check_fde_weights(img, w1, b1, w2, b2, w3, b3)
    checks.check_gate_logit(img, gate)
    # w1 carries the compute dtype and sits on img's device (checked above); uint8 pixels are loaded
    # as they are and converted in the kernel.
    U.check_runnable(_block_dct_fdm_kernel, "block_dct_fdm", w1)
    bsz, _, h, w = img.shape
    n_hb, n_wb = h // BLOCK, w // BLOCK
    h1, h2, c = w1.shape[0], w2.shape[0], w3.shape[0]
    out = torch.empty((bsz, c, n_hb, n_wb), dtype=w1.dtype, device=img.device,
                      memory_format=checks.output_memory_format(img))
    n_blocks = bsz * n_hb * n_wb
    if n_blocks == 0 or c == 0:
        return out
    basis_t, ycc = U.dct_constants(U.acc_dtype(w1.dtype), img.device)
    h2p = U.next_pow2(h2)
    interp = U.interpreting(_block_dct_fdm_kernel)
    if interp:
        block_m = U.next_pow2(n_blocks, 16, INTERP_MAX_BLOCK_M)
        block_h1 = U.next_pow2(h1, 16, INTERP_MAX_BLOCK_H1)
        block_c = U.next_pow2(c, 16, INTERP_MAX_BLOCK_C)
        warps = 4
    else:
        block_m, warps = GPU_BLOCK_M, GPU_NUM_WARPS
        block_h1 = U.next_pow2(h1, 16, GPU_BLOCK_H1)
        block_c = U.next_pow2(c, 16, GPU_MAX_BLOCK_C)
    U.check_block_count("block_dct_fdm", n_blocks, block_m)
    grid = (triton.cdiv(n_blocks, block_m),)
    with U.device_guard(img):
        _block_dct_fdm_kernel[grid](
            img, basis_t, ycc, w1, b1, w2, b2, w3, b3, out,
            n_blocks, n_hb, n_wb, h1, h2, c,
            *img.stride(),
            w1.stride(0), w1.stride(1), b1.stride(0), w2.stride(0), w2.stride(1), b2.stride(0),
            w3.stride(0), w3.stride(1), b3.stride(0),
            *out.stride(),
            BLOCK_M=block_m, BLOCK_H1=block_h1, H2P=h2p, BLOCK_C=block_c,
            UPCAST_DOT=interp, num_warps=warps,
        )
    return U.apply_gate_(out, gate)
