"""afd::block_dct_fdm: every backend against the reference; opcheck; gradcheck; errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from conftest import backend_device_pairs, cpu_backends
from op_utils import EXAMPLES, LAYOUTS, assert_close, dtypes_for, run, with_layout

OP = torch.ops.afd.block_dct_fdm.default
PAIRS = backend_device_pairs()


def _args(b, hb, wb, h1, h2, c, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    img = (torch.rand(b, 3, 8 * hb, 8 * wb, generator=g, dtype=torch.float64) * 255).to(dtype=dtype, device=device)
    # small first layer: the DC coefficient reaches +-1024
    return img, [r(h1, 192, scale=0.01), r(h1, scale=0.1), r(h2, h1, scale=0.3), r(h2, scale=0.1),
                 r(c, h2, scale=0.3), r(c, scale=0.1)]


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    @settings(max_examples=EXAMPLES[backend])
    @given(b=st.integers(0, 4), hb=st.integers(1, 8), wb=st.integers(1, 8), h1=st.integers(1, 160),
           h2=st.integers(1, 96), c=st.integers(1, 96), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(dtypes_for(backend, device)), seed=st.integers(0, 2**31 - 1))
    def check(b, hb, wb, h1, h2, c, layout, dtype, seed):
        img, w = _args(b, hb, wb, h1, h2, c, dtype, device, seed)
        img = with_layout(img, layout)
        out = run(backend, OP, img, *w)
        ref = R.block_dct_fdm(img.cpu().double(), *[t.cpu().double() for t in w]).to(dtype)
        assert_close(out.cpu(), ref, dtype)
        assert out.shape == (b, c, hb, wb)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
def test_default_sizes(backend, device):
    img, w = _args(2, 4, 6, 128, 64, 32, torch.float32, device, 0)
    out = run(backend, OP, img, *w)
    assert_close(out.cpu(), R.block_dct_fdm(img.cpu(), *[t.cpu() for t in w]), torch.float32)
    assert (out >= 0).all() and (out <= 1).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck(backend):
    img, w = _args(2, 2, 3, 16, 8, 5, torch.float32, "cpu", 0)
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, (img, *w))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_gradcheck_float64(backend):
    img, w = _args(1, 1, 2, 6, 5, 3, torch.float64, "cpu", 1)
    args = [img.requires_grad_()] + [t.requires_grad_() for t in w]
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradcheck(OP, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_errors_name_the_problem(backend, device):
    img, w = _args(1, 2, 2, 8, 4, 3, torch.float32, device, 0)
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match="multiples of 8, got 16x12"):
            OP(img[..., :12], *w)
        with pytest.raises(ValueError, match=r"w1 must have shape \(h1, 192\)"):
            OP(img, w[0][:, :100], *w[1:])
        with pytest.raises(ValueError, match=r"w2 must have shape \(h2, 8\)"):
            OP(img, w[0], w[1], w[2][:, :5], *w[3:])
        with pytest.raises(ValueError, match="b3 must have shape"):
            OP(img, *w[:5], w[5][:2])
        with pytest.raises(TypeError, match="w3 has dtype"):
            OP(img, *w[:4], w[4].double(), w[5])
        other = "meta" if device == "cpu" else "cpu"
        with pytest.raises(ValueError, match="w1 is on .* but img is on .*; they must be on one device"):
            OP(img, w[0].to(other), *w[1:])
