"""afd::repconv_dedrift: every backend against the reference; opcheck; gradcheck; errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import afd_ext
from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends, nonfinite_poisons, poison_args
from helpers import EXAMPLES, LAYOUTS, UNIT_ROUNDOFF, assert_close, dtypes_for, run, with_layout

OP = torch.ops.afd.repconv_dedrift.default
PAIRS = backend_device_pairs()
ACTS = tuple(R.ACTIVATIONS)
INPUTS = ("x", "weight", "bias", "fdm", "feat")


def _args(b, cin, c, hb, wb, rh, rw, dtype, device, seed, bias=True):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    hf, wf = hb * rh, wb * rw
    x = r(b, cin, hf, wf)
    weight = r(c, cin, 3, 3, scale=(1.0 / (9 * cin)) ** 0.5)
    fdm = torch.rand(b, c, hb, wb, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    feat = r(b, c, hf, wf, scale=3.0)
    return x, weight, (r(c) if bias else None), fdm, feat


def _reference(args, act, dtype):
    return R.repconv_dedrift(*(t.cpu().double() if t is not None else None for t in args), act).to(dtype)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_parity_random(backend, device):
    """Every activation, the half types on every device here (tolerance: helpers.tol), and half the
    examples with NaN/+-inf in x, weight, bias, fdm or feat: NaN and +-inf exactly where the reference
    has them (relu/relu6 turn -inf to 0 and relu6 +inf to 6, NaN stays NaN)."""
    @settings(max_examples=EXAMPLES[backend])
    @given(b=st.integers(0, 4), cin=st.integers(1, 48), c=st.integers(1, 96), hb=st.integers(1, 7),
           wb=st.integers(1, 7), rh=st.integers(1, 5), rw=st.integers(1, 5), bias=st.booleans(),
           act=st.sampled_from(ACTS), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(list(dict.fromkeys([*dtypes_for(backend, device), *UNIT_ROUNDOFF]))),
           seed=st.integers(0, 2**31 - 1), poison=nonfinite_poisons(INPUTS))
    def check(b, cin, c, hb, wb, rh, rw, bias, act, layout, dtype, seed, poison):
        clean = _args(b, cin, c, hb, wb, rh, rw, dtype, device, seed, bias)
        x, weight, bias_t, fdm, feat = poison_args(clean, INPUTS, poison)
        x, feat = with_layout(x, layout), with_layout(feat, layout)
        out = run(backend, OP, x, weight, bias_t, fdm, feat, act)
        assert_close(out.cpu(), _reference((x, weight, bias_t, fdm, feat), act, dtype), dtype, "repconv_dedrift")
        if layout == "channels_last" and b > 0 and c > 1:
            assert out.is_contiguous(memory_format=torch.channels_last)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("act", ACTS)
def test_stem_like_shape(backend, device, act):
    x, weight, bias, fdm, feat = _args(2, 16, 32, 7, 7, 4, 4, torch.float32, device, 0)
    out = run(backend, OP, x, weight, bias, fdm, feat, act)
    assert_close(out.cpu(), R.repconv_dedrift(*(t.cpu() for t in (x, weight, bias, fdm, feat)), act), torch.float32)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_odd_feature_sizes_and_nonfinite(backend, device, act, value):
    """One NaN/+-inf in each input in turn, odd feature sizes, every activation: NaN and +-inf exactly
    where the reference has them, the rest as close as usual."""
    at = {"x": (0, 0, 5, 3), "weight": (2, 1, 1, 0), "bias": (1,), "fdm": (0, 3, 0, 4), "feat": (0, 2, 12, 6)}
    clean = _args(1, 3, 4, 1, 7, 13, 1, torch.float32, device, 2)  # 13x7 features, a 1x7 FDM
    for where in INPUTS:
        args, i = list(clean), INPUTS.index(where)
        args[i] = args[i].clone()
        args[i][at[where]] = float(value)
        out = run(backend, OP, *args, act).cpu()
        ref = _reference(args, act, torch.float32)
        pre = _reference(args, "identity", torch.float32)  # before the activation, which may clamp it away
        assert (torch.isnan(pre) | (pre != _reference(clean, "identity", torch.float32))).any(), where
        assert_close(out, ref, torch.float32)


def _by_the_definition(x, weight, bias, fdm, feat):
    """feat + (conv3x3(x, weight, zero padding 1) + bias) * nearest_up(fdm) in float64, the conv
    written as its definition: the sum over the 9 taps of x_pad * w, with padding zeros like any x."""
    x, weight, bias, fdm, feat = (t.cpu().double() for t in (x, weight, bias, fdm, feat))
    hf, wf = x.shape[-2:]
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    conv = sum(torch.einsum("bihw,oi->bohw", xp[:, :, kh:kh + hf, kw:kw + wf], weight[:, :, kh, kw])
               for kh in range(3) for kw in range(3))
    return feat + (conv + bias[:, None, None]) * R.upsample_fdm(fdm, (hf, wf))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_weights_meet_the_zero_padding(backend, device, value, act):
    """A NaN or infinite weight: every backend (the reference included) gives the definition's NaN/Inf
    pattern, where a tap on the zero padding contributes 0 * w (NaN for w = NaN or +-inf). These
    sizes take torch's oneDNN convolution on CPU, which leaves padded taps out (finite borders) where
    float64 and small sizes multiply them: the reference's pattern depended on the algorithm."""
    x, weight, bias, fdm, feat = _args(2, 16, 32, 7, 7, 4, 4, torch.float32, device, 0)
    weight[1, 0, 0, 0] = float(value)  # top-left tap: on the padding for the top row and left column
    weight[5, 3, 2, 1] = float(value)  # bottom-centre tap: on the padding for the bottom row
    out = run(backend, OP, x, weight, bias, fdm, feat, act).cpu()
    expected = R.apply_act(_by_the_definition(x, weight, bias, fdm, feat), act)
    reference = R.repconv_dedrift(x, weight, bias, fdm, feat, act).cpu()
    for name, got in ((backend, out), ("the reference", reference)):
        differ = sum(int((test(got) != test(expected)).sum()) for test in (torch.isnan, torch.isposinf,
                                                                             torch.isneginf))
        assert differ == 0, f"{name}: {differ} elements differ from the definition in NaN/Inf"
        assert_close(got, expected.float(), torch.float32)
    top_or_left = torch.zeros(28, 28, dtype=torch.bool)
    top_or_left[0, :] = top_or_left[:, 0] = True
    if value == "nan":  # NaN * anything is NaN: the whole output channel
        assert torch.isnan(out[:, [1, 5]]).all() and not torch.isnan(out[:, [0, 2, 3, 4]]).any()
    else:  # inf * x: +-inf on the image (relu: 0 or +inf, relu6: 0 or 6), 0 * inf = NaN on the padding
        assert torch.equal(torch.isnan(out[:, 1]), top_or_left.expand(2, 28, 28))
        inside = out[:, 1][:, ~top_or_left]
        if act == "identity":
            assert torch.isinf(inside).all()
        else:
            assert ((inside == 0) | (inside == (6 if act == "relu6" else math.inf))).all() and (inside == 0).any()


@pytest.mark.parametrize("backend", cpu_backends())
def test_opcheck(backend):
    args = _args(2, 4, 6, 2, 3, 2, 2, torch.float32, "cpu", 0)
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, (*args, "relu6"))
        x, w, _, fdm, feat = args
        torch.library.opcheck(OP, (x, w, None, fdm, feat, "identity"))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_gradcheck_float64(backend):
    x, w, b, fdm, feat = _args(1, 2, 3, 2, 2, 2, 3, torch.float64, "cpu", 3)
    feat = feat + 10  # keep pre-activations away from relu6's kinks (gradcheck needs smoothness)
    args = [t.requires_grad_() for t in (x, w, b, fdm, feat)]
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradcheck(lambda *a: OP(*a, "identity"), args, eps=1e-6, atol=1e-5)
        assert torch.autograd.gradcheck(lambda *a: OP(*a, "relu"), args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_errors_name_the_problem(backend, device):
    x, w, b, fdm, feat = _args(2, 4, 6, 2, 2, 4, 4, torch.float32, device, 0)
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match=r"x must have shape \(B, Cin, Hf, Wf\)"):
            OP(x[0], w, b, fdm, feat, "relu")
        with pytest.raises(ValueError, match=r"weight must have shape \(C, 4, 3, 3\)"):
            OP(x, w[:, :3], b, fdm, feat, "relu")
        with pytest.raises(ValueError, match="feat must have shape"):
            OP(x, w, b, fdm, feat[:, :5], "relu")
        with pytest.raises(ValueError, match="fdm grid 3x3 must divide the feature grid 8x8"):
            OP(x, w, b, torch.rand(2, 6, 3, 3, device=device), feat, "relu")
        with pytest.raises(TypeError, match="feat has dtype"):
            OP(x, w, b, fdm, feat.double(), "relu")
        with pytest.raises(ValueError, match="act must be one of"):
            OP(x, w, b, fdm, feat, "gelu")
        other = "meta" if device == "cpu" else "cpu"
        with pytest.raises(ValueError, match="feat is on .* but x is on .*; they must be on one device"):
            OP(x, w, b, fdm, feat.to(other), "relu")


# -- skip: the decoder's input u = cat(nearest_up2(x), skip), read from its two sources -------------

SKIP_INPUTS = ("x", "skip", "weight", "bias", "fdm", "feat")


def _skip_args(b, cx, cs, c, hb, wb, rh, rw, dtype, device, seed, bias=True):
    """(x, weight, bias, fdm, feat, skip): skip (B, Cs, Hf, Wf), x (B, Cx, ceil(Hf/2), ceil(Wf/2))."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    hf, wf = hb * rh, wb * rw
    x = r(b, cx, (hf + 1) // 2, (wf + 1) // 2)
    skip = r(b, cs, hf, wf)
    weight = r(c, cx + cs, 3, 3, scale=(1.0 / (9 * (cx + cs))) ** 0.5)
    fdm = torch.rand(b, c, hb, wb, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    feat = r(b, c, hf, wf, scale=3.0)
    return x, weight, (r(c) if bias else None), fdm, feat, skip


def _skip_reference(args, act, dtype):
    x, weight, bias, fdm, feat, skip = (t.cpu().double() if t is not None else None for t in args)
    return R.repconv_dedrift(x, weight, bias, fdm, feat, act, skip).to(dtype)


def _up2_cat(x, skip):
    """cat(nearest_up2(x), skip) written out, as the training-form FE-Net builds it (F.interpolate)."""
    up = torch.nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
    return torch.cat([up, skip], 1)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_skip_parity_random(backend, device):
    """With skip, odd and even feature sizes (x at ceil(Hf/2) x ceil(Wf/2)), every activation, layout
    (x, skip and feat each in it) and dtype, half the examples with NaN/+-inf in any input, skip
    included: equal to the reference within helpers.tol, NaN/+-inf exactly where it has them."""
    @settings(max_examples=max(EXAMPLES[backend] // 2, 10))
    @given(b=st.integers(0, 3), cx=st.integers(1, 24), cs=st.integers(1, 24), c=st.integers(1, 40),
           hb=st.integers(1, 5), wb=st.integers(1, 5), rh=st.integers(1, 5), rw=st.integers(1, 5),
           bias=st.booleans(), act=st.sampled_from(ACTS), layout=st.sampled_from(LAYOUTS),
           dtype=st.sampled_from(list(dict.fromkeys([*dtypes_for(backend, device), *UNIT_ROUNDOFF]))),
           seed=st.integers(0, 2**31 - 1),
           poison=st.one_of(st.just(()), st.lists(st.tuples(st.sampled_from(SKIP_INPUTS), st.integers(0, 2**31 - 1),
                                                            st.sampled_from([math.nan, math.inf, -math.inf])),
                                                  min_size=1, max_size=3)))
    def check(b, cx, cs, c, hb, wb, rh, rw, bias, act, layout, dtype, seed, poison):
        args = list(_skip_args(b, cx, cs, c, hb, wb, rh, rw, dtype, device, seed, bias))
        order = ("x", "weight", "bias", "fdm", "feat", "skip")
        for name, index, value in poison:
            i = order.index(name)
            if args[i] is not None and args[i].numel():
                args[i] = args[i].clone()
                args[i].view(-1)[index % args[i].numel()] = value
        x, weight, bias_t, fdm, feat, skip = args
        x, feat, skip = with_layout(x, layout), with_layout(feat, layout), with_layout(skip, layout)
        out = run(backend, OP, x, weight, bias_t, fdm, feat, act, skip)
        assert_close(out.cpu(), _skip_reference((x, weight, bias_t, fdm, feat, skip), act, dtype), dtype,
                     "repconv_dedrift")
        if layout == "channels_last" and b > 0 and c > 1:
            assert out.is_contiguous(memory_format=torch.channels_last)
    check()


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("hf,wf", [(13, 7), (8, 6), (1, 1), (1, 5), (2, 3)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_skip_equals_the_written_out_input(backend, device, hf, wf, layout):
    """repconv_dedrift(x, ..., skip) == repconv_dedrift(cat(up2(x), skip), ...) on the same backend, and
    the reference, for odd and even sizes down to 1x1 (x then 1x1 too): the two-source loader reads
    x at (h // 2, w // 2) and skip at (h, w), with the zero padding around u, not around x."""
    x, weight, bias, fdm, feat, skip = _skip_args(2, 3, 5, 6, 1, 1, hf, wf, torch.float32, device, hf * 10 + wf)
    x, skip, feat = with_layout(x, layout), with_layout(skip, layout), with_layout(feat, layout)
    for act in ACTS:
        fused = run(backend, OP, x, weight, bias, fdm, feat, act, skip).cpu()
        written = run(backend, OP, _up2_cat(x, skip), weight, bias, fdm, feat, act).cpu()
        assert_close(fused, written, torch.float32)
        assert_close(fused, _skip_reference((x, weight, bias, fdm, feat, skip), act, torch.float32), torch.float32)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_skip_nonfinite(backend, device, value):
    """One NaN/+-inf in x (read by up to four positions of u, so up to 16 taps of a 3x3 conv), in skip,
    and a weight of each source on the padding: NaN/+-inf exactly where the reference has them."""
    clean = _skip_args(1, 3, 2, 4, 1, 1, 7, 5, torch.float32, device, 5)  # 7x5 features, x 4x3
    at = {"x": (0, 1, 3, 2), "skip": (0, 1, 6, 0), "weight": (2, 1, 0, 0)}  # x's bottom-right corner
    for where, index in at.items():
        args = list(clean)
        i = ("x", "weight", "bias", "fdm", "feat", "skip").index(where)
        args[i] = args[i].clone()
        args[i][index] = float(value)
        if where == "weight":
            args[i][3, 4, 2, 2] = float(value)  # a skip channel's bottom-right tap
        for act in ACTS:
            out = run(backend, OP, *args[:5], act, args[5]).cpu()
            assert_close(out, _skip_reference(args, act, torch.float32), torch.float32)
        pre = _skip_reference(args, "identity", torch.float32)
        assert (~torch.isfinite(pre)).any(), where


@pytest.mark.parametrize("backend,device", PAIRS)
def test_skip_empty(backend, device):
    """B, C, Hf or Wf = 0 with skip: an empty result of feat's shape and memory format."""
    for b, c, hf, wf in ((0, 4, 6, 5), (2, 0, 6, 5), (2, 4, 0, 5), (2, 4, 6, 0)):
        x = torch.randn(b, 3, (hf + 1) // 2, (wf + 1) // 2, device=device)
        skip = torch.randn(b, 2, hf, wf, device=device)
        w = torch.randn(c, 5, 3, 3, device=device)
        fdm = torch.rand(b, c, 1 if hf else 0, 1 if wf else 0, device=device)
        feat = torch.randn(b, c, hf, wf, device=device).contiguous(memory_format=torch.channels_last)
        out = run(backend, OP, x, w, None, fdm, feat, "relu", skip)
        assert out.shape == feat.shape and out.dtype == feat.dtype


@pytest.mark.parametrize("backend", cpu_backends())
def test_skip_opcheck(backend):
    x, w, b, fdm, feat, skip = _skip_args(2, 3, 2, 4, 2, 3, 2, 1, torch.float32, "cpu", 0)  # 4x3, x 2x2
    with afd_ext.use_backend(backend):
        torch.library.opcheck(OP, (x, w, b, fdm, feat, "relu6", skip))
        torch.library.opcheck(OP, (x, w, None, fdm, feat, "identity", skip))


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "triton"])
def test_skip_gradcheck_float64(backend):
    x, w, b, fdm, feat, skip = _skip_args(1, 2, 1, 2, 1, 1, 3, 3, torch.float64, "cpu", 4)  # 3x3, x 2x2
    feat = feat + 10  # away from the activations' kinks
    args = [t.requires_grad_() for t in (x, w, b, fdm, feat, skip)]
    with afd_ext.use_backend(backend):
        for act in ("identity", "relu"):
            assert torch.autograd.gradcheck(lambda x_, w_, b_, m_, f_, s_: OP(x_, w_, b_, m_, f_, act, s_), args,
                                            eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_skip_errors_name_the_problem(backend, device):
    x, w, b, fdm, feat, skip = _skip_args(2, 3, 2, 4, 1, 1, 5, 4, torch.float32, device, 0)  # 5x4, x 3x2
    with afd_ext.use_backend(backend):
        with pytest.raises(ValueError, match=r"x must have shape \(2, Cx, 3, 2\) for a skip of shape"):
            OP(x[:, :, :2], w, b, fdm, feat, "relu", skip)
        with pytest.raises(ValueError, match=r"weight must have shape \(C, 5, 3, 3\)"):
            OP(x, w[:, :4], b, fdm, feat, "relu", skip)
        with pytest.raises(TypeError, match="skip has dtype"):
            OP(x, w, b, fdm, feat, "relu", skip.double())
