"""The shared math of every backend, in one place for Python.

JPEG's colour transform, the orthonormal 8x8 DCT-II basis, the zig-zag
order and the activation codes. The C++/CUDA twin is ``csrc/afd_constants.h``; a test checks that the
two agree.
"""
from __future__ import annotations

import math

import torch

BLOCK = 8
N_COEFF = BLOCK * BLOCK  # 64 coefficients per colour plane
N_DCT_CHANNELS = 3 * N_COEFF  # Y, Cb, Cr
LEVEL_SHIFT = 128.0

# JPEG (JFIF) RGB -> YCbCr, rows Y, Cb, Cr; offsets added before the level shift.
YCBCR_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
YCBCR_OFFSET = (0.0, 128.0, 128.0)


def _zigzag_order(n: int = BLOCK) -> list[tuple[int, int]]:
    """(row, col) pairs of an n x n block in JPEG zig-zag order."""
    order = []
    for s in range(2 * n - 1):
        diag = [(r, s - r) for r in range(n) if 0 <= s - r < n]
        # Even anti-diagonals run bottom-left -> top-right (row decreasing).
        order.extend(reversed(diag) if s % 2 == 0 else diag)
    return order


ZIGZAG = tuple(_zigzag_order())  # ZIGZAG[k] = (row, col) of zig-zag index k


def dct_matrix(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Orthonormal 1-D DCT-II matrix M (8x8): coefficient u = sum_x M[u, x] f[x]."""
    m = torch.empty(BLOCK, BLOCK, dtype=torch.float64)
    for u in range(BLOCK):
        c = math.sqrt(1.0 / BLOCK) if u == 0 else math.sqrt(2.0 / BLOCK)
        for x in range(BLOCK):
            m[u, x] = c * math.cos((2 * x + 1) * u * math.pi / (2 * BLOCK))
    return m.to(dtype=dtype, device=device)


def dct_basis_zigzag(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """(64, 64) matrix B with B[k, 8*y + x] = M[u_k, y] * M[v_k, x], k in zig-zag order.

    Row k maps a row-major flattened 8x8 block to its k-th zig-zag coefficient,
    so coefficients = B @ block.flatten().
    """
    m = dct_matrix(torch.float64)
    full = torch.einsum("uy,vx->uvyx", m, m).reshape(N_COEFF, N_COEFF)  # row u*8+v
    idx = torch.tensor([r * BLOCK + c for r, c in ZIGZAG])
    return full[idx].to(dtype=dtype, device=device)


def ycbcr_matrix(dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,3) matrix and (3,) offset *after* the level shift (offset - 128)."""
    mat = torch.tensor(YCBCR_MATRIX, dtype=dtype, device=device)
    off = torch.tensor([o - LEVEL_SHIFT for o in YCBCR_OFFSET], dtype=dtype, device=device)
    return mat, off


# Activation name -> the integer code every kernel uses (C++/CUDA: afd::Act in csrc/afd_constants.h;
# Triton: its ACT constexpr). One table, tested against the header.
# The gate's floor under each mean |coefficient| before the log (a flat image has zero AC energy).
GATE_EPS = 0.01

ACT_CODES = {"relu": 0, "relu6": 1, "identity": 2}
ACTIVATIONS = tuple(ACT_CODES)
