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
    x = torch.randn(3, 5, *hw, dtype=dtype) * 2
    before = rc(x)
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
