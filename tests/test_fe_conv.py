"""afd::fe_conv (one deployed FE-Net block): every backend against the reference; opcheck; gradcheck;
errors; and the deployed module's fused FE-Net against its training form."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends, nonfinite_poisons, poison_args
from helpers import EXAMPLES, LAYOUTS, UNIT_ROUNDOFF, assert_close, dtypes_for, run, with_layout

OP = torch.ops.afd.fe_conv.default
PAIRS = backend_device_pairs()
INPUTS = ("x", "skip", "weight", "bias", "alpha")


def _args(b, cx, cs, cout, h, w, dtype, device, seed, bias=True, skip=False):
    """(x, skip, weight, bias, alpha) for an output of h x w before the pool: with ``skip``, x is at
    ceil(h/2) x ceil(w/2) and skip at h x w. Weights of unit output variance; slopes in (-0.5, 0.5)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    if skip:
        x, s = r(b, cx, (h + 1) // 2, (w + 1) // 2), r(b, cs, h, w)
        cin = cx + cs
    else:
        x, s, cin = r(b, cx, h, w), None, cx
    weight = r(cout, cin, 3, 3, scale=(1.0 / (9 * cin)) ** 0.5)
    alpha = (torch.rand(cout, generator=g, dtype=torch.float64) - 0.5).to(dtype=dtype, device=device)
    return x, s, weight, (r(cout) if bias else None), alpha


def _reference(args, pool, dtype):
    return R.fe_conv(*(t.cpu().double() if t is not None else None for t in args), pool).to(dtype)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    """Pool on/off, skip on/off, odd and 1-pixel sizes, every layout, the half types on every device
    (helpers.tol), half the examples with NaN/+-inf in an input: exactly the reference's NaN/Inf."""
    @settings(max_examples=EXAMPLES[backend], deadline=None)
    @given(b=st.integers(0, 3), cx=st.integers(1, 24), cs=st.integers(1, 24), cout=st.integers(0, 40),
           h=st.integers(1, 19), w=st.integers(1, 19), bias=st.booleans(), skip=st.booleans(), pool=st.booleans(),
           layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(list(dict.fromkeys([*dtypes_for(backend, device), *UNIT_ROUNDOFF]))),
           seed=st.integers(0, 2**31 - 1), poison=nonfinite_poisons(INPUTS))
    def check(b, cx, cs, cout, h, w, bias, skip, pool, layout, dtype, seed, poison):
        args = poison_args(_args(b, cx, cs, cout, h, w, dtype, device, seed, bias, skip), INPUTS, poison)
        args[0] = with_layout(args[0], layout)
        if skip:
            args[1] = with_layout(args[1], layout)
        out = run(backend, OP, *args, pool)
        assert_close(out.cpu(), _reference(args, pool, dtype), dtype, "fe_conv")
        like = args[1] if skip else args[0]  # the same-resolution input decides the output's format
        assert out.is_contiguous(memory_format=R.checks.output_memory_format(like))
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_fe_net_shapes(backend, device, pool, skip):
    """The shapes Lite0's FE-Net (width small) runs at, channels_last, float32."""
    if skip:
        args = _args(2, 16, 8, 8, 56, 56, torch.float32, device, 1, skip=True)
    else:
        args = _args(2, 32, 0, 8, 112, 112, torch.float32, device, 1)
    args = [with_layout(t, "channels_last") if t is not None and t.dim() == 4 else t for t in args]
    out = run(backend, OP, *args, pool)
    assert_close(out.cpu(), _reference(args, pool, torch.float32), torch.float32)
    assert out.is_contiguous(memory_format=torch.channels_last)


def _by_the_definition(x, skip, weight, bias, alpha, pool):
    """The block written out in float64 from its definition: nearest 2x upsampling as an index map,
    the conv as the sum of its 9 taps over the zero-padded input, PReLU and the ceil-mode 2x2 max."""
    x, weight, bias, alpha = (t.cpu().double() for t in (x, weight, bias, alpha))
    if skip is not None:
        h, w = skip.shape[-2:]
        rows, cols = torch.arange(h) // 2, torch.arange(w) // 2
        x = torch.cat([x[:, :, rows][:, :, :, cols], skip.cpu().double()], 1)
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    y = sum(torch.einsum("bihw,oi->bohw", xp[:, :, kh:kh + h, kw:kw + w], weight[:, :, kh, kw])
            for kh in range(3) for kw in range(3)) + bias[:, None, None]
    y = torch.where(y > 0, y, alpha[:, None, None] * y)
    if pool:
        y = F.pad(y, (0, w % 2, 0, h % 2), value=-math.inf)  # the odd edge's window covers what exists
        y = torch.stack([y[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]).amax(0)
    return y


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_matches_the_definition_at_odd_sizes(backend, device, pool, skip):
    """Against the definition written independently of the reference (index-map upsampling, the
    conv's taps, PReLU, a -inf-padded max): odd heights and widths, both paths."""
    args = _args(2, 3, 2, 5, 7, 9, torch.float64, device, 4, skip=skip)
    out = run(backend, OP, *args, pool).cpu()
    torch.testing.assert_close(out, _by_the_definition(*args, pool), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(R.fe_conv(*(t.cpu() if t is not None else None for t in args), pool),
                               _by_the_definition(*args, pool), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("pool", [False, True])
def test_nonfinite_inputs_and_weights(backend, device, value, pool):
    """One NaN/+-inf in each input in turn (a weight's tap on the zero padding: 0 * w = NaN, as the
    definition says), odd sizes, with the skip: NaN/+-inf exactly where the reference has them, and
    the pool lets a NaN through (max_pool2d's rule)."""
    clean = _args(1, 3, 2, 4, 7, 5, torch.float32, device, 2, skip=True)
    at = {"x": (0, 1, 2, 1), "skip": (0, 0, 6, 4), "weight": (2, 1, 0, 0), "bias": (1,), "alpha": (3,)}
    for where in INPUTS:
        args, i = list(clean), INPUTS.index(where)
        args[i] = args[i].clone()
        args[i][at[where]] = float(value)
        out = run(backend, OP, *args, pool).cpu()
        assert_close(out, _reference(args, pool, torch.float32), torch.float32)
        assert (~torch.isfinite(_reference(args, pool, torch.float32))).any() or where == "alpha", where


@pytest.mark.parametrize("backend,device", PAIRS)
def test_empty_shapes(backend, device):
    """B, H, W or Cout = 0: an empty result of the right shape, dtype and format (nothing read)."""
    cases = [(_args(0, 3, 2, 4, 5, 5, torch.float32, device, 0), (0, 4, 5, 5)),
             (_args(2, 3, 2, 0, 5, 5, torch.float32, device, 0), (2, 0, 5, 5)),
             (_args(2, 3, 2, 4, 0, 5, torch.float32, device, 0, skip=True), (2, 4, 0, 5))]
    for args, shape in cases:
        for pool in (False, True):
            out = run(backend, OP, *args, pool)
            want = shape if not pool else (*shape[:2], (shape[2] + 1) // 2, (shape[3] + 1) // 2)
            assert tuple(out.shape) == want and out.dtype == torch.float32


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck(backend):
    with afd_ext.use_backend(backend):
        for skip in (False, True):
            x, s, w, b, a = _args(2, 3, 2, 4, 5, 6, torch.float32, "cpu", 0, skip=skip)
            for pool in (False, True):
                torch.library.opcheck(OP, (x, s, w, b, a, pool))
            torch.library.opcheck(OP, (x, s, w, None, a, True))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
@pytest.mark.parametrize("skip", [False, True])
def test_gradcheck_float64(backend, skip):
    """Gradients (the reference's vjp) through pool and PReLU: inputs away from PReLU's kink, distinct
    values in each window (max's kinks)."""
    x, s, w, b, a = _args(1, 2, 2, 3, 5, 4, torch.float64, "cpu", 3, skip=skip)
    args = [t.requires_grad_() for t in (x, s, w, b, a) if t is not None]
    with afd_ext.use_backend(backend):
        def f(*t):
            t = list(t)
            return OP(t[0], t[1] if skip else None, *t[1 + skip:], True)
        assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_errors_name_the_problem(backend, device):
    x, s, w, b, a = _args(2, 4, 3, 6, 8, 8, torch.float32, device, 0, skip=True)
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match=r"x must have shape \(2, Cx, 4, 4\) for a skip of shape"):
            OP(x[:, :, :3], s, w, b, a, False)
        with pytest.raises(ValueError, match=r"weight must have shape \(Cout, 7, 3, 3\)"):
            OP(x, s, w[:, :6], b, a, False)
        with pytest.raises(ValueError, match=r"alpha must have shape \(6,?\)"):
            OP(x, s, w, b, a[:1], False)
        with pytest.raises(ValueError, match=r"x must have at least one channel"):
            OP(x[:, :0].contiguous(), None, w[:, :0].contiguous(), b, a, False)
        with pytest.raises(TypeError, match="skip has dtype"):
            OP(x, s.double(), w, b, a, False)
        with pytest.raises(TypeError, match="x must be a floating tensor"):
            OP(x.to(torch.uint8), None, w[:, :4].contiguous(), b, a, False)
        other = "meta" if device == "cpu" else "cpu"
        with pytest.raises(ValueError, match="skip is on .* but x is on .*; they must be on one device"):
            OP(x, s.to(other), w, b, a, False)
