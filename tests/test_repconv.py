"""RepConv re-parameterization is exact (a property to test, not to assume)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from afd_ext import RepConv
from afd_ext import reference as R


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return module


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("hw", [(7, 9), (8, 8), (1, 1), (2, 5), (15, 16)])
def test_reparameterize_exact(bn, dtype, tol, hw):
    rc = _randomize(RepConv(5, 7, bn=bn).to(dtype)).eval()
    rc.compose_branches = False  # the three branches as five convs: the definition
    x = torch.randn(3, 5, *hw, dtype=dtype) * 2
    before = rc(x)
    assert _rel_err(before, R.repconv(x, *_branch_weights(rc)) if not bn else before) < tol
    rc.reparameterize()
    assert rc.deployed and isinstance(rc.conv, torch.nn.Conv2d) and rc.conv.kernel_size == (3, 3)
    after = rc(x)
    assert _rel_err(after, before) < tol
    # border pixels included: compare the outermost ring separately
    ring = torch.ones(hw, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert _rel_err(after[..., ring], before[..., ring]) < tol


@given(cin=st.integers(1, 6), cout=st.integers(1, 6), mid=st.integers(1, 6), h=st.integers(1, 11),
       w=st.integers(1, 11), seed=st.integers(0, 2**16))
def test_reparam_functional_matches_training_form(cin, cout, mid, h, w, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)
    ws = (r(mid, cin, 1, 1), r(cout, mid, 3, 3), r(cout), r(mid, cin, 3, 3), r(mid), r(cout, mid, 1, 1), r(cout),
          r(cout, cin, 1, 1), r(cout))
    x = r(2, cin, h, w)
    weight, bias = R.repconv_reparam(*ws)
    expect = R.repconv(x, *ws)
    got = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    assert _rel_err(got, expect) < 1e-10


def test_bias_before_padding_would_not_be_exact():
    """Why branch (a)'s 1x1 has no bias: with one, the border pixels differ after folding."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    a1 = torch.nn.Conv2d(2, 2, 1, bias=True).double()
    a3 = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    y = a3(a1(x))
    w = torch.einsum("omyx,mi->oiyx", a3.weight, a1.weight[:, :, 0, 0])
    b = a3.bias + a3.weight.sum((2, 3)) @ a1.bias  # the naive fold
    z = torch.nn.functional.conv2d(x, w, b, padding=1)
    assert torch.allclose(y[..., 1:-1, 1:-1], z[..., 1:-1, 1:-1])
    assert not torch.allclose(y[..., 0, :], z[..., 0, :])


def test_get_equivalent_kernel_bias_and_idempotent():
    rc = _randomize(RepConv(3, 4, bn=True)).eval()
    w, b = rc.get_equivalent_kernel_bias()
    assert w.shape == (4, 3, 3, 3) and b.shape == (4,)
    rc.reparameterize()
    rc.reparameterize()  # second call is a no-op
    assert torch.equal(rc.conv.weight, w.detach())


def test_zero_init_gives_zero_output():
    rc = RepConv(4, 6, bn=True).eval()
    rc.zero_init()
    assert torch.equal(rc(torch.randn(2, 4, 5, 5)), torch.zeros(2, 6, 5, 5))


def _branch_weights(rc):
    return (rc.a_1x1.weight, rc.a_3x3.weight, rc.a_3x3.bias, rc.b_3x3.weight, rc.b_3x3.bias, rc.b_1x1.weight,
            rc.b_1x1.bias, rc.c_1x1.weight, rc.c_1x1.bias)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (16, 16)])
def test_training_form_composed_into_one_conv_has_the_branches_function_and_gradients(hw, channels_last):
    """The training forward (no BatchNorm) runs the branches composed into one 3x3 conv per call:
    its output and the gradients of the input and of every branch weight are the five-conv
    definition's (reference.repconv), borders included."""
    rc = _randomize(RepConv(5, 7, mid_ch=4).double()).train()
    x = torch.randn(3, 5, *hw, dtype=torch.float64) * 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for compose in (True, False):
        rc.compose_branches = compose
        rc.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = rc(xi)
        out.mul(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), xi.grad, [p.grad.clone() for p in _branch_weights(rc)]))
    (o1, gx1, gw1), (o0, gx0, gw0) = grads
    rc.compose_branches, calls = True, []
    rc.a_3x3.register_forward_hook(lambda *a: calls.append(1))
    rc(x)
    assert calls == []  # composed: no branch conv ran
    assert _rel_err(o0, R.repconv(x, *_branch_weights(rc))) < 1e-12
    assert _rel_err(o1, o0) < 1e-12 and _rel_err(gx1, gx0) < 1e-12
    for a, b in zip(gw1, gw0):
        assert _rel_err(a, b) < 1e-12
    # with BatchNorm the branches stay separate (batch statistics do not compose)
    bn = _randomize(RepConv(5, 7, bn=True).double()).train()
    calls = []
    bn.a_3x3.register_forward_hook(lambda *a: calls.append(1))
    bn(x)
    assert calls == [1]
