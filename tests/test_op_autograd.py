"""Autograd through torch.ops.afd.* beyond first-order reverse mode (tested with each op): forward-mode
AD (torch.func.jvp, torch.autograd.forward_ad), every backend: the reference's tangent, never a silent
zero or missing one; double backward, every CPU backend: an op's gradient has a graph (the
reference's), so a gradient penalty and gradgradcheck see the reference's second derivatives."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import afd_ext
from afd_ext import reference as R
from helpers import assert_close, backend_device_pairs, cpu_backends, run
from helpers import fde_weights as _fde, op_image as _img, repconv_args as _rc

PAIRS = backend_device_pairs()
OPS = ("block_dct", "block_dct_fdm", "repconv_dedrift")


def _dtype(backend):
    return torch.float32 if backend == "triton" else torch.float64  # the interpreter: float32 only


def _case(op_name, dtype, device, seed=0):
    """(op, reference, differentiable primals, tangents): every floating input gets a tangent."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    if op_name == "block_dct":
        primals = [(torch.rand(2, 3, 16, 24, generator=g, dtype=torch.float64) * 255).to(dtype=dtype, device=device)]
        ref, op = R.block_dct, torch.ops.afd.block_dct
    elif op_name == "block_dct_fdm":
        img = (torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64) * 255).to(dtype=dtype, device=device)
        primals = [img, r(8, 192, scale=0.01), r(8, scale=0.1), r(6, 8, scale=0.3), r(6, scale=0.1),
                   r(4, 6, scale=0.3), r(4, scale=0.1)]
        ref, op = R.block_dct_fdm, torch.ops.afd.block_dct_fdm
    else:
        primals = [r(2, 3, 6, 4), r(5, 3, 3, 3, scale=0.3), r(5),
                   torch.rand(2, 5, 3, 2, generator=g, dtype=torch.float64).to(dtype=dtype, device=device),
                   r(2, 5, 6, 4)]
        ref = lambda *a: R.repconv_dedrift(*a, "identity")  # noqa: E731  (identity: smooth everywhere)
        op = lambda *a: torch.ops.afd.repconv_dedrift(*a, "identity")  # noqa: E731
    tangents = [r(*p.shape) for p in primals]
    return op, ref, primals, tangents


@pytest.mark.parametrize("op_name", OPS)
def test_reference_tangent_is_the_derivative(op_name):
    """The tangents below are the reference's: check it is the derivative (central differences)."""
    _, ref, primals, tangents = _case(op_name, torch.float64, "cpu")
    _, tangent = torch.func.jvp(ref, tuple(primals), tuple(tangents))
    eps = 1e-6
    plus = ref(*[p + eps * t for p, t in zip(primals, tangents)])
    minus = ref(*[p - eps * t for p, t in zip(primals, tangents)])
    torch.testing.assert_close(tangent, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-6)
    assert tangent.abs().sum() > 1


@pytest.mark.parametrize("op_name", OPS)
@pytest.mark.parametrize("backend,device", PAIRS)
def test_func_jvp_gives_the_reference_tangent(backend, device, op_name):
    dtype = _dtype(backend)
    op, ref, primals, tangents = _case(op_name, dtype, device)
    ref_out, ref_tangent = torch.func.jvp(ref, tuple(primals), tuple(tangents))
    out, tangent = run(backend, torch.func.jvp, op, tuple(primals), tuple(tangents))
    assert_close(out, ref_out, dtype)
    assert tangent.abs().sum() > 1  # was all zeros
    assert_close(tangent, ref_tangent, dtype)


@pytest.mark.parametrize("op_name", OPS)
@pytest.mark.parametrize("backend,device", PAIRS)
def test_forward_ad_gives_the_reference_tangent(backend, device, op_name):
    dtype = _dtype(backend)
    op, ref, primals, tangents = _case(op_name, dtype, device)
    with fwAD.dual_level():
        expected = fwAD.unpack_dual(ref(*[fwAD.make_dual(p, t) for p, t in zip(primals, tangents)])).tangent
        # A tangent on one input only (the others plain tensors): the derivative along that input.
        only_first = fwAD.unpack_dual(ref(fwAD.make_dual(primals[0], tangents[0]), *primals[1:])).tangent

        def tangent_of(*args):
            return fwAD.unpack_dual(run(backend, op, *args)).tangent
        tangent = tangent_of(*[fwAD.make_dual(p, t) for p, t in zip(primals, tangents)])
        first = tangent_of(fwAD.make_dual(primals[0], tangents[0]), *primals[1:])
    assert tangent is not None and first is not None  # was None
    assert_close(tangent, expected, dtype)
    assert_close(first, only_first, dtype)


@pytest.mark.parametrize("op_name", OPS)
def test_forward_over_reverse_is_the_references(op_name):
    """Tangents on inputs that also require grad (a Hessian-vector product by forward-over-reverse with
    torch.autograd): the second-order terms (across inputs too) are the reference's, not dropped."""
    op, ref, primals, tangents = _case(op_name, torch.float64, "cpu")

    def hvp(fn):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p.clone().requires_grad_(), t) for p, t in zip(primals, tangents)]
            grads = torch.autograd.grad(fn(*duals).sigmoid().sum(), duals, create_graph=True)
            return [fwAD.unpack_dual(g).tangent for g in grads]
    for got, expected in zip(hvp(op), hvp(ref)):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_jacfwd_is_the_references_jacobian():
    img = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 255
    torch.testing.assert_close(torch.func.jacfwd(torch.ops.afd.block_dct)(img), torch.func.jacfwd(R.block_dct)(img))


# ---------------------------------------------------------------------------------------------
# Double backward: an op's gradient has a graph (the reference's), so a gradient penalty counts.

BACKENDS = cpu_backends()
DCT = torch.ops.afd.block_dct.default
FDM = torch.ops.afd.block_dct_fdm.default
RC = torch.ops.afd.repconv_dedrift.default
REFERENCE = {DCT: R.block_dct, FDM: R.block_dct_fdm, RC: R.repconv_dedrift}


def _penalty_grads(fn, inputs):
    out = fn(*inputs)
    grads = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    assert all(g.requires_grad for g in grads)
    penalty = sum(g.square().sum() for g in grads)
    return torch.autograd.grad(penalty, inputs)


DOUBLE = {  # name: (op, float64 inputs, extra non-tensor args)
    "dct": lambda: (DCT, [_img(1, 8, 16, torch.float64)], ()),
    "fdm": lambda: (FDM, [_img(1, 8, 8, torch.float64), *_fde(3, 2, 2, torch.float64)], ()),
    "rc": lambda: (RC, _rc(1, 2, 3, 4, 4, 2, 2, torch.float64), ("relu6",)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DOUBLE)
def test_gradient_penalty_matches_the_reference(backend, case):
    op, tensors, extra = DOUBLE[case]()
    inputs = [t.requires_grad_() for t in tensors]
    with afd_ext.use_backend(backend):
        got = _penalty_grads(lambda *a: op(*a, *extra), inputs)
    want = _penalty_grads(lambda *a: REFERENCE[op](*a, *extra), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
    assert any(g.abs().sum() > 0 for g in got)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])  # the interpreter: minutes
def test_gradgradcheck(backend):
    img = _img(1, 8, 8, torch.float64).requires_grad_()
    w = [t.requires_grad_() for t in _fde(2, 2, 2, torch.float64)]
    rc = _rc(1, 2, 2, 4, 4, 2, 2, torch.float64)
    rc[4] = rc[4] + 10  # away from relu's kink
    rc = [t.requires_grad_() for t in rc]
    with afd_ext.use_backend(backend):
        assert torch.autograd.gradgradcheck(DCT, (img,))
        assert torch.autograd.gradgradcheck(lambda *a: RC(*a, "relu"), rc)
        assert torch.autograd.gradgradcheck(lambda *ws: FDM(img.detach(), *ws), w, atol=1e-5)
