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


def test_activation_codes_are_one_table():
    # C++/CUDA afd::Act, Triton's ACT constexpr and Python's ACT_CODES: the same numbers.
    enum = re.search(r"enum class Act : int \{(.*?)\};", HEADER.read_text(), re.S).group(1)
    cpp = {name: int(code) for name, code in re.findall(r"k(\w+) = (\d+)", enum)}
    assert cpp == {"Relu": R.ACT_CODES["relu"], "Relu6": R.ACT_CODES["relu6"], "Identity": R.ACT_CODES["identity"]}
    assert R.ACTIVATIONS == tuple(R.ACT_CODES) == ("relu", "relu6", "identity")
    assert len(set(R.ACT_CODES.values())) == len(R.ACT_CODES)
    pytest.importorskip("triton")
    from afd_ext.kernels import triton_repconv_dedrift as T
    assert T.ACT_CODES is R.ACT_CODES
    assert (T._RELU.value, T._RELU6.value) == (R.ACT_CODES["relu"], R.ACT_CODES["relu6"])
    # The CUDA epilogue compares against afd::Act, not against literal codes.
    device = (HEADER.parents[1] / "kernels" / "afd_device.cuh").read_text()
    assert "act == static_cast<int>(Act::kRelu)" in device and not re.search(r"act == \d", device)


def test_cuda_block_dcts_share_one_8_point_dct():
    # Both CUDA block-DCT kernels run their row and column passes through afd_device.cuh's dct8.
    kernels = HEADER.parents[1] / "kernels"
    assert "void dct8(" in (kernels / "afd_device.cuh").read_text()
    for name in ("block_dct.cu", "block_dct_fdm.cu"):
        src = (kernels / name).read_text()
        assert src.count("dct8<A>(") == 2 and "dct_coef" not in src, name


def test_gate_eps_agrees():
    value = float(re.search(r"kGateEps = ([0-9.e-]+);", HEADER.read_text()).group(1))
    assert value == R.GATE_EPS == afd_ext_gate_eps()


def afd_ext_gate_eps():
    from afd_ext import AFDModule
    return AFDModule.GATE_EPS
