"""afd::block_dct: every backend against the reference; opcheck; gradcheck; errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends
from helpers import EXAMPLES, LAYOUTS, UNIT_ROUNDOFF, assert_close, dtypes_for, run, with_layout

OP = torch.ops.afd.block_dct.default
PAIRS = backend_device_pairs()


def _img(b, h, w, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) * 255).to(dtype=dtype, device=device)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    """The half types too on every device here (tolerance: helpers.tol); half the examples with 1-3
    NaN/+-inf pixels: NaN and +-inf exactly where the reference has them."""
    entry = st.tuples(st.integers(0, 2**31 - 1), st.sampled_from([math.nan, math.inf, -math.inf]))

    @settings(max_examples=EXAMPLES[backend])
    @given(b=st.integers(0, 4), hb=st.integers(1, 8), wb=st.integers(1, 8), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(list(dict.fromkeys([*dtypes_for(backend, device), *UNIT_ROUNDOFF]))),
           seed=st.integers(0, 2**31 - 1),
           poison=st.one_of(st.just(()), st.lists(entry, min_size=1, max_size=3)))
    def check(b, hb, wb, layout, dtype, seed, poison):
        img = _img(b, 8 * hb, 8 * wb, dtype, device, seed)
        for index, value in poison:
            if img.numel():
                img.view(-1)[index % img.numel()] = value
        img = with_layout(img, layout)
        out = run(backend, OP, img)
        ref = R.block_dct(img.cpu().double()).to(dtype)
        assert_close(out.cpu(), ref, dtype, "block_dct")
        if layout == "channels_last" and b > 0:
            assert out.is_contiguous(memory_format=torch.channels_last)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
def test_nan_inf_propagate(backend, device):
    img = _img(1, 16, 16, torch.float32, device, 0)
    img[0, 0, 0, 0] = float("nan")
    img[0, 1, 8, 8] = float("inf")
    img[0, 2, 9, 15] = float("-inf")  # a second infinity in that block (colour and sign differ)
    out = run(backend, OP, img).cpu()
    assert torch.isnan(out[0, :, 0, 0]).all()
    assert not torch.isfinite(out[0, :, 1, 1]).all()
    assert torch.isfinite(out[0, :, 0, 1]).all() and torch.isfinite(out[0, :, 1, 0]).all()
    assert_close(out, R.block_dct(img.cpu().double()).float(), torch.float32)  # NaN/+-inf where the reference's


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
