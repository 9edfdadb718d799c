"""The reference ops against independent definitions (scipy, PIL, plain formulas)."""
import numpy as np
import pytest
import scipy.fft
import torch

from afd_ext import reference as R


def _scipy_block_dct(img):
    """Independent block DCT: JPEG colour transform, level shift, scipy dctn per block, zig-zag."""
    x = img.double().numpy()
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    planes = np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                       -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                       0.5 * r - 0.418688 * g - 0.081312 * b + 128], 1) - 128
    bsz, _, h, w = planes.shape
    out = np.zeros((bsz, 192, h // 8, w // 8))
    for n in range(bsz):
        for c in range(3):
            for i in range(h // 8):
                for j in range(w // 8):
                    coef = scipy.fft.dctn(planes[n, c, 8 * i:8 * i + 8, 8 * j:8 * j + 8], type=2, norm="ortho")
                    for k, (u, v) in enumerate(R.ZIGZAG):
                        out[n, c * 64 + k, i, j] = coef[u, v]
    return torch.from_numpy(out)


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 16, 24), (1, 3, 40, 8)])
def test_block_dct_equals_scipy(shape):
    torch.manual_seed(0)
    img = torch.rand(shape, dtype=torch.float64) * 255
    assert torch.allclose(R.block_dct(img), _scipy_block_dct(img), rtol=0, atol=1e-9)


def test_block_dct_float32_close_to_float64():
    img = torch.rand(2, 3, 32, 16, dtype=torch.float64) * 255
    assert torch.allclose(R.block_dct(img.float()).double(), R.block_dct(img), rtol=1e-5, atol=1e-3)


def test_block_dct_inverts_exactly():
    img = torch.rand(3, 3, 24, 32, dtype=torch.float64) * 255
    assert torch.allclose(R.block_idct(R.block_dct(img)), img, atol=1e-10)


def test_flat_grey_block_has_only_dc():
    img = torch.full((1, 3, 8, 8), 200.0, dtype=torch.float64)
    d = R.block_dct(img)
    assert torch.allclose(d[0, 0, 0, 0], torch.tensor(8 * (200.0 - 128), dtype=torch.float64))
    mask = torch.ones(192, dtype=torch.bool)
    mask[0] = False
    assert d[0, mask].abs().max() < 1e-9  # Cb, Cr of grey are 128 -> 0 after the shift


def test_rgb_to_ycbcr_matches_pillow():
    from PIL import Image
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ours = R.rgb_to_ycbcr(torch.from_numpy(arr).permute(2, 0, 1)[None].double())[0] + 128
    pil = np.asarray(Image.fromarray(arr).convert("YCbCr"), dtype=np.float64)
    assert np.abs(ours.permute(1, 2, 0).numpy() - pil).max() <= 1.0  # Pillow rounds to integers


def test_fde_net_is_the_per_block_mlp():
    torch.manual_seed(0)
    d = torch.randn(2, 192, 3, 4, dtype=torch.float64) * 0.1
    w1, b1 = torch.randn(16, 192, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    w2, b2 = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    w3, b3 = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    out = R.fde_net(d, w1, b1, w2, b2, w3, b3)
    v = d[1, :, 2, 3]
    expect = torch.sigmoid(w3 @ torch.relu(w2 @ torch.relu(w1 @ v + b1) + b2) + b3)
    assert torch.allclose(out[1, :, 2, 3], expect, atol=1e-12)
    assert out.shape == (2, 5, 3, 4) and (out > 0).all() and (out < 1).all()


@pytest.mark.parametrize("act", ["relu", "relu6", "identity"])
def test_repconv_dedrift_formula(act):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 12, dtype=torch.float64)
    w, b = torch.randn(4, 6, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    fdm = torch.rand(2, 4, 2, 3, dtype=torch.float64)
    feat = torch.randn(2, 4, 8, 12, dtype=torch.float64) * 4
    out = R.repconv_dedrift(x, w, b, fdm, feat, act)
    conv = torch.nn.functional.conv2d(x, w, b, padding=1)
    up = fdm[:, :, torch.arange(8) // 4][:, :, :, torch.arange(12) // 4]
    pre = feat + conv * up
    expect = {"relu": pre.clamp(min=0), "relu6": pre.clamp(0, 6), "identity": pre}[act]
    assert torch.allclose(out, expect, atol=1e-12)


def test_reference_errors_name_the_argument():
    with pytest.raises(ValueError, match="multiples of 8"):
        R.block_dct(torch.rand(1, 3, 12, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        R.block_dct(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="img must be a floating"):
        R.block_dct(torch.zeros(1, 3, 8, 8, dtype=torch.int64))
    x = torch.rand(1, 4, 8, 8)
    with pytest.raises(ValueError, match="fdm grid 3x3 must divide"):
        R.repconv_dedrift(x, torch.rand(4, 4, 3, 3), None, torch.rand(1, 4, 3, 3), torch.rand(1, 4, 8, 8), "relu")
    with pytest.raises(TypeError, match="weight has dtype"):
        R.repconv_dedrift(x, torch.rand(4, 4, 3, 3, dtype=torch.float64), None, torch.rand(1, 4, 2, 2),
                          torch.rand(1, 4, 8, 8), "relu")
    with pytest.raises(ValueError, match="act must be one of"):
        R.repconv_dedrift(x, torch.rand(4, 4, 3, 3), None, torch.rand(1, 4, 2, 2), torch.rand(1, 4, 8, 8), "gelu")
