"""Host-side helpers shared by the Triton kernels (kernels/triton_*.py).

Device checks, the interpreter switch (``TRITON_INTERPRET=1``), tile choice and the
cached constant tensors (YCbCr transform, zig-zag DCT basis) taken from
``afd_ext.reference.constants`` -- the math is defined there, not here.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Tuple

import torch
import triton
import triton.language as tl

from afd_ext.reference.constants import dct_basis_zigzag, ycbcr_matrix

#: dtypes the Triton kernels accept. float64 runs with float64 accumulation.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def interpreting(kernel) -> bool:
    """True when ``kernel`` (a @triton.jit function) runs under the Triton interpreter."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(kernel, InterpretedFunction)


def check_runnable(kernel, op: str, *tensors: torch.Tensor) -> None:
    """Dtype and device checks beyond afd_ext.reference.checks (which run first)."""
    for t in tensors:
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"afd triton {op}: unsupported dtype {t.dtype} "
                            f"(supported: float32, float16, bfloat16, float64)")
    t = tensors[0]
    if t.device.type != "cuda" and not interpreting(kernel):
        raise RuntimeError(
            f"afd triton {op}: Triton needs a CUDA tensor (got a {t.device.type} tensor); to run the "
            f"Triton kernels on the CPU, set TRITON_INTERPRET=1 before triton is imported")


def device_guard(t: torch.Tensor):
    """Launch on ``t``'s GPU (Triton launches on the current device)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def check_block_count(op: str, n_blocks: int, block_m: int) -> None:
    """The flat block index of the DCT kernels is int32 (an int64 one costs registers); 2^31 blocks
    would be a 1.6 TB image, so this only guards against a size nothing could allocate."""
    if n_blocks + block_m > 2 ** 31 - 1:
        raise ValueError(f"afd triton {op}: too many 8x8 blocks ({n_blocks}) for one call; split the batch")


def next_pow2(n: int, lo: int = 16, hi: int | None = None) -> int:
    """Smallest power of two >= n, clamped to [lo, hi] (tl.dot needs every dim >= 16)."""
    p = max(lo, triton.next_power_of_2(max(int(n), 1)))
    return min(p, hi) if hi is not None else p


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / compute dtype, as in the reference: float64 stays, the rest float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_CONSTS: Dict[Tuple[str, torch.dtype], Tuple[torch.Tensor, torch.Tensor]] = {}


def dct_constants(dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(basis_t, ycc) in ``dtype`` on ``device``, cached.

    basis_t: (64, 64) contiguous, basis_t[p, k] = dct_basis_zigzag()[k, p] (pixel p = 8*y + x
    of a row-major block, coefficient k in zig-zag order), so coeffs = pixels @ basis_t.
    ycc: (12,) = the 3x3 RGB->YCbCr matrix row-major, then the 3 offsets after the level shift.
    """
    key = (str(device), dtype)
    hit = _CONSTS.get(key)
    if hit is None:
        basis_t = dct_basis_zigzag(dtype, device).t().contiguous()
        mat, off = ycbcr_matrix(dtype, device)
        ycc = torch.cat([mat.reshape(-1), off]).contiguous()
        hit = _CONSTS[key] = (basis_t, ycc)
    return hit


@triton.jit
def block_dct_tile(img_ptr, basis_t_ptr, ycc_ptr, pid, n_blocks, n_hb, n_wb, s_b, s_c, s_h, s_w,
                   BLOCK_M: tl.constexpr, ACC: tl.constexpr):
    """The DCT of the program's BLOCK_M 8x8 blocks (flat index over (B, Hb, Wb)), shared by the
    block_dct and block_dct_fdm kernels: returns the (BLOCK_M, 64) zig-zag coefficient tiles of Y,
    Cb and Cr, the blocks' (b, hb, wb) as int64 and the (BLOCK_M, 1) validity mask.
    Offsets are int64: an int32 stride (Triton passes an int that fits as int32) times an index
    can pass 2^31 on large images and views."""
    s_c = tl.cast(s_c, tl.int64)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # int32: check_block_count bounds it
    wb = (rm % n_wb).to(tl.int64)
    t = rm // n_wb
    hb = (t % n_hb).to(tl.int64)
    b = (t // n_hb).to(tl.int64)
    mask = (rm < n_blocks)[:, None]
    p = tl.arange(0, 64)  # pixel within the block, row-major: y = p // 8, x = p % 8
    k = tl.arange(0, 64)  # zig-zag coefficient index
    row = hb[:, None] * 8 + (p // 8)[None, :]
    col = wb[:, None] * 8 + (p % 8)[None, :]
    pix = img_ptr + b[:, None] * s_b + row * s_h + col * s_w
    r = tl.load(pix, mask=mask, other=0.0).to(ACC)
    g = tl.load(pix + s_c, mask=mask, other=0.0).to(ACC)
    bl = tl.load(pix + 2 * s_c, mask=mask, other=0.0).to(ACC)
    basis_t = tl.load(basis_t_ptr + p[:, None] * 64 + k[None, :])  # (64 pixels, 64 coefficients)
    y = r * tl.load(ycc_ptr + 0) + g * tl.load(ycc_ptr + 1) + bl * tl.load(ycc_ptr + 2) + tl.load(ycc_ptr + 9)
    cb = r * tl.load(ycc_ptr + 3) + g * tl.load(ycc_ptr + 4) + bl * tl.load(ycc_ptr + 5) + tl.load(ycc_ptr + 10)
    cr = r * tl.load(ycc_ptr + 6) + g * tl.load(ycc_ptr + 7) + bl * tl.load(ycc_ptr + 8) + tl.load(ycc_ptr + 11)
    d0 = tl.dot(y, basis_t, input_precision="ieee", out_dtype=ACC)
    d1 = tl.dot(cb, basis_t, input_precision="ieee", out_dtype=ACC)
    d2 = tl.dot(cr, basis_t, input_precision="ieee", out_dtype=ACC)
    return d0, d1, d2, b, hb, wb, mask


@triton.jit
def conv3x3_accumulate(acc, src_ptr, s_b, s_c, s_h, s_w, n_k, w_c, w_k0, ws_i, ws_h, ws_w,
                       c_mask, b, h, w, H, W, p_mask, UP2: tl.constexpr,
                       UPCAST_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr):
    """One source's share of a 3x3 conv (stride 1, zero padding 1) over an H x W input u at the
    pixels (b, h, w), added to ``acc`` (BLOCK_P, BLOCK_C) with tl.dot: the implicit-GEMM loader of
    the FE-Net convs (fe_conv) and repconv_dedrift.

    The source holds u's channels w_k0 .. w_k0 + n_k - 1, read through its own strides at (h, w), or
    at (h // 2, w // 2) when UP2 (u = cat(nearest_up2(x), skip): the upsampled tensor is never built).
    b, h, w: (BLOCK_P,) int64 coordinates in u; p_mask: the pixels to compute (each inside u).
    w_c: (BLOCK_C,) pointers to weight[c, 0, 0, 0]; c_mask: the real output channels.
    Per chunk of BLOCK_K channels and tap (unrolled): a masked (BLOCK_P, BLOCK_K) input tile, a
    (BLOCK_K, BLOCK_C) weight tile, a tl.dot. Every tap outside u is a zero that goes through the dot
    like a pixel: a NaN or infinite weight gives 0 * w = NaN there, as the reference's F.pad does.
    """
    s_c = tl.cast(s_c, tl.int64)
    s_h = tl.cast(s_h, tl.int64)
    s_w = tl.cast(s_w, tl.int64)
    ws_i = tl.cast(ws_i, tl.int64)
    ws_h = tl.cast(ws_h, tl.int64)
    ws_w = tl.cast(ws_w, tl.int64)
    rk = tl.arange(0, BLOCK_K)
    # Tap validity (zero padding): the row above / below, the column left / right exist.
    up_ok = h > 0
    down_ok = h < H - 1
    left_ok = w > 0
    right_ok = w < W - 1
    if UP2:  # row / column offsets of the three taps: x's (h - 1) // 2, h // 2, (h + 1) // 2
        r0 = ((h - 1) >> 1) * s_h
        r1 = (h >> 1) * s_h
        r2 = ((h + 1) >> 1) * s_h
        c0 = ((w - 1) >> 1) * s_w
        c1 = (w >> 1) * s_w
        c2 = ((w + 1) >> 1) * s_w
        base = src_ptr + b * s_b  # (BLOCK_P,)
    else:  # the taps are constant offsets from the centre
        base = src_ptr + b * s_b + h * s_h + w * s_w
    for k0 in range(0, n_k, BLOCK_K):
        kk = k0 + rk
        k_mask = kk < n_k
        kk64 = kk.to(tl.int64)
        src_k = base[:, None] + (kk64 * s_c)[None, :]  # (BLOCK_P, BLOCK_K) pointers
        w_k = w_c[None, :] + ((w_k0 + kk64) * ws_i)[:, None]  # (BLOCK_K, BLOCK_C) pointers
        w_mask = k_mask[:, None] & c_mask[None, :]
        for kh in tl.static_range(3):
            row_ok = p_mask
            if kh == 0:
                row_ok = row_ok & up_ok
            if kh == 2:
                row_ok = row_ok & down_ok
            if UP2:
                if kh == 0:
                    r = r0
                elif kh == 1:
                    r = r1
                else:
                    r = r2
            for kw in tl.static_range(3):
                ok = row_ok
                if kw == 0:
                    ok = ok & left_ok
                if kw == 2:
                    ok = ok & right_ok
                if UP2:
                    if kw == 0:
                        off = r + c0
                    elif kw == 1:
                        off = r + c1
                    else:
                        off = r + c2
                    xt = tl.load(src_k + off[:, None], mask=ok[:, None] & k_mask[None, :], other=0.0)
                else:
                    xt = tl.load(src_k + ((kh - 1) * s_h + (kw - 1) * s_w), mask=ok[:, None] & k_mask[None, :],
                                 other=0.0)
                wt = tl.load(w_k + (kh * ws_h + kw * ws_w), mask=w_mask, other=0.0)
                if UPCAST_DOT:  # the interpreter's tl.dot mishandles bfloat16 operands
                    xt = xt.to(ACC)
                    wt = wt.to(ACC)
                # input_precision: IEEE float32 (no TF32); Triton 3.6 needs it with acc
                acc = tl.dot(xt, wt, acc, input_precision="ieee", out_dtype=ACC)
    return acc


def apply_gate_(fdm: torch.Tensor, gate) -> torch.Tensor:
    """fdm *= gate_value(gate[b]) per image, in place, computed in float32 (float64 for a float64 fdm):
    block_dct_fdm's gate, as csrc/afd_checks.h apply_gate_ applies it after the compiled kernels."""
    if gate is None or fdm.numel() == 0:
        return fdm
    from afd_ext.reference import gate_value
    cd = torch.float64 if fdm.dtype == torch.float64 else torch.float32
    g = gate_value(gate.to(cd)).view(-1, 1, 1, 1)
    return fdm.mul_(g) if fdm.dtype == cd else fdm.copy_(fdm.to(cd).mul_(g))
