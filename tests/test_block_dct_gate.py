"""afd::block_dct_gate (the whole-image gate's logit) and block_dct_fdm's gate argument: every backend
against the reference; the definition; uint8 images; empty and block-less images; opcheck; gradcheck;
errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends
from helpers import EXAMPLES, LAYOUTS, assert_close, run, with_layout

OP = torch.ops.afd.block_dct_gate.default
FDM = torch.ops.afd.block_dct_fdm.default
PAIRS = backend_device_pairs()


def _args(b, hb, wb, dtype, device, seed, uint8=False):
    """An image and a head whose logit is of order one: weights of std 1/sqrt(192), so z sums 192 log
    statistics (each of order 1..5) to a value of a few units either side of zero."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, 8 * hb, 8 * wb, generator=g, dtype=torch.float64) * 255
    img = img.round().to(torch.uint8) if uint8 else img.to(dtype)
    weight = (torch.randn(1, 192, generator=g, dtype=torch.float64) / 192 ** 0.5).to(dtype)
    bias = torch.randn(1, generator=g, dtype=torch.float64).to(dtype)
    return img.to(device), weight.to(device), bias.to(device)


def _reference(img, weight, bias):
    return R.block_dct_gate(img.cpu() if img.dtype == torch.uint8 else img.cpu().double(), weight.cpu().double(),
                            bias.cpu().double())


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    @settings(max_examples=EXAMPLES[backend] // 4, deadline=None)
    @given(b=st.integers(0, 3), hb=st.integers(1, 9), wb=st.integers(1, 9), uint8=st.booleans(),
           layout=st.sampled_from(LAYOUTS), dtype=st.sampled_from([torch.float32, torch.float64]),
           seed=st.integers(0, 2**31 - 1))
    def check(b, hb, wb, uint8, layout, dtype, seed):
        img, weight, bias = _args(b, hb, wb, dtype, device, seed, uint8)
        out = run(backend, OP, with_layout(img, layout), weight, bias)
        assert out.shape == (b,) and out.dtype == dtype
        torch.testing.assert_close(out.cpu().double(), _reference(img, weight, bias),
                                   rtol=1e-5 if dtype == torch.float32 else 1e-10,
                                   atol=1e-4 if dtype == torch.float32 else 1e-9)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
def test_matches_the_definition(backend, device):
    """z = bias + sum_k w_k log(mean over blocks |D_k| + 0.01), the DCT from the reference block_dct."""
    img, weight, bias = _args(2, 3, 4, torch.float64, device, 5)
    d = R.block_dct(img.cpu())
    want = bias.cpu() + (torch.log(d.abs().mean(dim=(2, 3)) + 0.01) * weight.cpu()).sum(1)
    torch.testing.assert_close(run(backend, OP, img, weight, bias).cpu(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_uint8_equals_the_float_image(backend, device):
    img, weight, bias = _args(2, 4, 3, torch.float32, device, 1, uint8=True)
    torch.testing.assert_close(run(backend, OP, img, weight, bias), run(backend, OP, img.float(), weight, bias),
                               rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_empty_batch_and_an_image_without_blocks(backend, device):
    img, weight, bias = _args(0, 2, 2, torch.float32, device, 0)
    assert run(backend, OP, img, weight, bias).shape == (0,)
    no_blocks = torch.zeros(2, 3, 0, 16, device=device)  # torch's mean of nothing: NaN, as the reference
    out = run(backend, OP, no_blocks, weight, bias)
    assert out.shape == (2,) and torch.isnan(out).all()
    assert torch.isnan(R.block_dct_gate(no_blocks.cpu(), weight.cpu(), bias.cpu())).all()


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fdm_gate_scales_each_image(backend, device, layout):
    """block_dct_fdm(..., gate=z): each image's FDM times relu(tanh(z/2)); z <= 0 gives exactly zero;
    without a gate, the ungated FDM."""
    g = torch.Generator().manual_seed(3)
    img = (torch.rand(4, 3, 16, 24, generator=g) * 255).to(device)
    w = [torch.randn(s, generator=g).to(device) * 0.1 for s in ((8, 192), (8,), (6, 8), (6,), (5, 6), (5,))]
    z = torch.tensor([-1.0, 0.0, 0.7, 3.0], device=device)
    img = with_layout(img, layout)
    plain = run(backend, FDM, img, *w)
    gated = run(backend, FDM, img, *w, z)
    assert_close(gated.cpu(), R.block_dct_fdm(img.cpu().double(), *(t.cpu().double() for t in w),
                                              z.cpu().double()).float(), torch.float32)
    assert torch.equal(gated[:2].cpu(), torch.zeros_like(gated[:2]).cpu())
    torch.testing.assert_close(gated[2:].cpu(), (plain[2:] * torch.tanh(z[2:] / 2).view(-1, 1, 1, 1)).cpu(),
                               rtol=1e-6, atol=1e-6)
    assert gated.is_contiguous(memory_format=R.checks.output_memory_format(img))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_fdm_gate_in_half_types(backend, device, dtype):
    """A float32 gate logit on a half-type FDM: the gate is computed in float32 (helpers.tol)."""
    g = torch.Generator().manual_seed(4)
    img = (torch.rand(3, 3, 16, 16, generator=g) * 255).to(device)
    w = [(torch.randn(s, generator=g) * 0.1) for s in ((8, 192), (8,), (6, 8), (6,), (5, 6), (5,))]
    z = torch.tensor([-0.5, 0.4, 2.0], device=device)
    out = run(backend, FDM, img.to(dtype), *(t.to(device=device, dtype=dtype) for t in w), z)
    ref = R.block_dct_fdm(img.cpu().to(dtype).double(), *(t.to(dtype).double() for t in w), z.cpu().double())
    assert_close(out.cpu(), ref.to(dtype), dtype, "block_dct_fdm")


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck(backend):
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, _args(2, 2, 3, torch.float32, "cpu", 0))
        img, w, b = _args(2, 2, 3, torch.float32, "cpu", 0, uint8=True)
        torch.library.opcheck(OP, (img, w, b))
        fw = [torch.randn(s) * 0.1 for s in ((8, 192), (8,), (6, 8), (6,), (5, 6), (5,))]
        torch.library.opcheck(FDM, (img.float(), *fw, torch.tensor([0.3, -0.2])))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_gradcheck_float64(backend):
    img, w, b = _args(2, 1, 2, torch.float64, "cpu", 1)
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradcheck(OP, [img.requires_grad_(), w.requires_grad_(), b.requires_grad_()],
                                        eps=1e-6, atol=1e-5)
        fw = [(torch.randn(s, dtype=torch.float64) * 0.1).requires_grad_() for s in
              ((4, 192), (4,), (3, 4), (3,), (2, 3), (2,))]
        z = torch.tensor([0.3, 1.2], dtype=torch.float64, requires_grad=True)  # away from the kink at 0
        assert torch.autograd.gradcheck(FDM, [img.detach(), *fw, z], eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_errors_name_the_problem(backend, device):
    img, w, b = _args(2, 2, 2, torch.float32, device, 0)
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match=r"weight must have shape \(1, 192\)"):
            OP(img, w[:, :100], b)
        with pytest.raises(ValueError, match=r"bias must have shape \(1,\)"):
            OP(img, w, torch.zeros(2, device=device))
        with pytest.raises(TypeError, match="bias has dtype"):
            OP(img, w, b.double())
        with pytest.raises(ValueError, match="img height and width must be multiples of 8"):
            OP(img[:, :, :12], w, b)
        fw = [torch.randn(s, device=device) for s in ((4, 192), (4,), (3, 4), (3,), (2, 3), (2,))]
        with pytest.raises(ValueError, match=r"gate must have shape \(2,\)"):
            FDM(img, *fw, torch.zeros(3, device=device))
        with pytest.raises(TypeError, match="gate must be a floating tensor"):
            FDM(img, *fw, torch.zeros(2, dtype=torch.int64, device=device))
        assert not math.isnan(float(OP(img, w, b)[0]))
