"""The shared math is defined once per language; the C++ header and Python module must agree."""
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from afd_ext import reference as R

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "afd_constants.h"


def _array(name):
    text = HEADER.read_text()
    body = re.search(name + r"\[[^=]*=\s*\{(.*?)\};", text, re.S).group(1)
    return np.array([float(v) for v in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", body)])


def test_zigzag_starts_like_jpeg():
    assert R.ZIGZAG[:10] == ((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0))
    assert sorted(R.ZIGZAG) == [(r, c) for r in range(8) for c in range(8)]
    assert R.ZIGZAG[-1] == (7, 7)


def test_dct_matrix_is_scipy_orthonormal_dct2():
    m = R.dct_matrix().numpy()
    assert np.allclose(m, scipy.fft.dct(np.eye(8), type=2, norm="ortho", axis=0), atol=1e-15)
    assert np.allclose(m @ m.T, np.eye(8), atol=1e-14)


def test_cpp_header_matches_python():
    assert np.allclose(_array("kDct").reshape(8, 8), R.dct_matrix().numpy(), atol=1e-15)
    assert _array("kZigzag").astype(int).tolist() == [r * 8 + c for r, c in R.ZIGZAG]
    assert np.allclose(_array("kYCbCr").reshape(3, 3), np.array(R.YCBCR_MATRIX))


@pytest.mark.parametrize("k", range(64))
def test_basis_rows_follow_zigzag(k):
    r, c = R.ZIGZAG[k]
    block = np.zeros((8, 8))
    block[r, c] = 1.0
    # the basis row k is the DCT coefficient (r, c) as a function of the block's pixels
    spatial = scipy.fft.idctn(block, type=2, norm="ortho")
    assert np.allclose(R.dct_basis_zigzag()[k].numpy(), spatial.reshape(-1), atol=1e-14)
