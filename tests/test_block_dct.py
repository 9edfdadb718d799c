"""afd::block_dct: every backend against the reference; opcheck; gradcheck; errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends
from helpers import EXAMPLES, LAYOUTS, assert_close, dtypes_for, run, with_layout

OP = torch.ops.afd.block_dct.default
PAIRS = backend_device_pairs()


def _img(b, h, w, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) * 255).to(dtype=dtype, device=device)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    @settings(max_examples=EXAMPLES[backend])
    @given(b=st.integers(0, 4), hb=st.integers(1, 8), wb=st.integers(1, 8), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(dtypes_for(backend, device)), seed=st.integers(0, 2**31 - 1))
    def check(b, hb, wb, layout, dtype, seed):
        img = with_layout(_img(b, 8 * hb, 8 * wb, dtype, device, seed), layout)
        out = run(backend, OP, img)
        ref = R.block_dct(img.cpu().double()).to(dtype)
        assert_close(out.cpu(), ref, dtype)
        if layout == "channels_last" and b > 0:
            assert out.is_contiguous(memory_format=torch.channels_last)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
def test_nan_inf_propagate(backend, device):
    img = _img(1, 16, 16, torch.float32, device, 0)
    img[0, 0, 0, 0] = float("nan")
    img[0, 1, 8, 8] = float("inf")
    out = run(backend, OP, img).cpu()
    assert torch.isnan(out[0, :, 0, 0]).any()
    assert not torch.isfinite(out[0, :, 1, 1]).all()
    assert torch.isfinite(out[0, :, 0, 1]).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck(backend):
    img = _img(2, 16, 24, torch.float32, "cpu", 0)
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, (img,))
        torch.library.opcheck(OP, (img.contiguous(memory_format=torch.channels_last),))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_gradcheck_float64(backend):
    img = _img(1, 8, 16, torch.float64, "cpu", 1).requires_grad_()
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradcheck(OP, (img,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_errors_name_the_problem(backend, device):
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match="multiples of 8, got 12x16"):
            OP(torch.rand(1, 3, 12, 16, device=device))
        with pytest.raises(ValueError, match=r"img must have shape \(B, 3, H, W\)"):
            OP(torch.rand(3, 16, 16, device=device))
        with pytest.raises(ValueError, match=r"img must have shape \(B, 3, H, W\)"):
            OP(torch.rand(1, 4, 16, 16, device=device))
        with pytest.raises(TypeError, match="img must be a floating"):
            OP(torch.zeros(1, 3, 8, 8, dtype=torch.int64, device=device))
