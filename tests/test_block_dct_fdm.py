"""afd::block_dct_fdm: every backend against the reference; opcheck; gradcheck; errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends
from helpers import EXAMPLES, LAYOUTS, assert_close, dtypes_for, run, with_layout

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


def _check_against_reference(backend, img, w, shape):
    """The op on ``backend`` against the float64 reference, in the weights' dtype, shape, device
    and memory format."""
    dtype = w[0].dtype
    out = run(backend, OP, img, *w)
    ref = R.block_dct_fdm(img.cpu().double(), *[t.cpu().double() for t in w]).to(dtype)
    assert_close(out.cpu(), ref, dtype)  # out.dtype == the weights' dtype
    assert out.shape == shape and out.device == img.device
    assert out.is_contiguous(memory_format=R.checks.output_memory_format(img))


@pytest.mark.parametrize("image", ["float", "uint8"])
@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device, image):
    """Floating images of the weights' dtype, and uint8 images with any floating weights (the half
    types included on every backend's device here)."""
    uint8 = image == "uint8"
    dtypes = _u8_weight_dtypes(backend, device) if uint8 else dtypes_for(backend, device)

    @settings(max_examples=max(EXAMPLES[backend] // 4, 10) if uint8 else EXAMPLES[backend])
    @given(b=st.integers(0, 4), hb=st.integers(1, 8), wb=st.integers(1, 8), h1=st.integers(1, 160),
           h2=st.integers(1, 96), c=st.integers(1, 96), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(dtypes), seed=st.integers(0, 2**31 - 1))
    def check(b, hb, wb, h1, h2, c, layout, dtype, seed):
        img, w = (_u8_args if uint8 else _args)(b, hb, wb, h1, h2, c, dtype, device, seed)
        _check_against_reference(backend, with_layout(img, layout), w, (b, c, hb, wb))
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


# ---------------------------------------------------------------------------------------------
# uint8 images (docs/design.md §2): read as they are, computed and returned in the weights' dtype;
# the result is the one for img.to(w1.dtype) (0..255 is exact in every floating dtype).

HALF = (torch.float16, torch.bfloat16)


def _u8_args(b, hb, wb, h1, h2, c, dtype, device, seed):
    img, w = _args(b, hb, wb, h1, h2, c, dtype, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 256, (b, 3, 8 * hb, 8 * wb), generator=g, dtype=torch.uint8).to(device), w


def _u8_weight_dtypes(backend, device):
    """The parity dtypes plus the half types, which every backend takes on its device here."""
    return list(dict.fromkeys([*dtypes_for(backend, device), *HALF]))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_uint8_equals_the_float_image(backend, device, layout):
    for dtype in _u8_weight_dtypes(backend, device):
        img, w = _u8_args(2, 3, 5, 24, 12, 7, dtype, device, 3)
        img = with_layout(img, layout)
        with afd_ext.use_backend(backend):
            out, want = OP(img, *w), OP(img.to(dtype), *w)
        assert out.dtype == want.dtype == dtype and out.stride() == want.stride()
        if device == "cuda" and backend == "cuda" and dtype in HALF:
            assert_close(out.cpu(), want.cpu(), dtype)  # the float image may take the tensor-core kernel
        else:
            assert torch.equal(out, want), (dtype, (out.double() - want.double()).abs().max())


@pytest.mark.parametrize("backend,device", PAIRS)
def test_uint8_empty_output(backend, device):
    for b, hb, c in ((0, 2, 3), (2, 1, 0)):
        img, w = _u8_args(b, hb, 1, 4, 3, c, torch.float32, device, 0)
        out = run(backend, OP, img, *w)
        assert out.shape == (b, c, hb, 1) and out.dtype == torch.float32 and out.device == img.device


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck_uint8(backend):
    img, w = _u8_args(2, 2, 3, 16, 8, 5, torch.float32, "cpu", 0)
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, (with_layout(img, "channels_last"), *w))
        torch.library.opcheck(OP, (img, *[t.clone().requires_grad_() for t in w]))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_gradcheck_float64_weights_uint8_image(backend):
    img, w = _u8_args(1, 1, 2, 6, 5, 3, torch.float64, "cpu", 1)
    w = [t.requires_grad_() for t in w]
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradcheck(OP, [img, *w], eps=1e-6, atol=1e-5)
        assert torch.autograd.gradgradcheck(lambda *ws: OP(img, *ws), w, atol=1e-5)
        out = OP(img, *w)
        assert out.requires_grad and not img.requires_grad
        grads = torch.autograd.grad(out.sum(), w)
        want = torch.autograd.grad(R.block_dct_fdm(img.double(), *w).sum(), w)
    for g, ref in zip(grads, want):
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_uint8_errors_name_the_problem(backend, device):
    img, w = _u8_args(1, 2, 2, 8, 4, 3, torch.float32, device, 0)
    with afd_ext.use_backend(backend):
        for bad in (torch.bool, torch.int8, torch.int32, torch.int64):
            for dev in (device, "meta"):
                with pytest.raises(TypeError, match=r"img must be uint8 or a floating tensor \(float32, float64, "
                                                    r"float16 or bfloat16\) of w1's dtype, got"):
                    OP(img.to(bad).to(dev), *[t.to(dev) for t in w])
        with pytest.raises(TypeError, match="w1 must be a floating tensor"):
            OP(img, w[0].to(torch.int32), *w[1:])
        with pytest.raises(TypeError, match="b2 has dtype .* but w1 has dtype .*; they must match"):
            OP(img, *w[:3], w[3].double(), *w[4:])
        with pytest.raises(TypeError, match="w1 has dtype .* but img has dtype .*; they must match"):
            OP(img.to(torch.float64), *w)  # a floating image keeps the one-dtype rule
        with pytest.raises(ValueError, match="multiples of 8, got 16x12"):
            OP(img[..., :12], *w)
        other = "meta" if device == "cpu" else "cpu"
        with pytest.raises(ValueError, match="w1 is on .* but img is on .*; they must be on one device"):
            OP(img, w[0].to(other), *w[1:])
