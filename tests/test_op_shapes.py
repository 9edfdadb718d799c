"""Degenerate shapes and large offsets of the afd ops, on every CPU backend (reference, cpp, Triton under
TRITON_INTERPRET=1; the shape tests on the CUDA backends too where a GPU is present): empty inputs
follow one contract (python/functional.py docstring) in every backend and in the fake kernels, and
offsets past 2^31 elements do not wrap. kernels/emu/check.py redteam runs the same checks through the
CUDA launchers and kernels on the CPU."""
import subprocess
import sys

import pytest
import torch

from afd_ext import reference as R
from helpers import backend_device_pairs, cpu_backends, run
from helpers import fde_weights as _fde, op_image as _img, repconv_args as _rc

BACKENDS = cpu_backends()
DCT = torch.ops.afd.block_dct.default
FDM = torch.ops.afd.block_dct_fdm.default
RC = torch.ops.afd.repconv_dedrift.default
REFERENCE = {DCT: R.block_dct, FDM: R.block_dct_fdm, RC: R.repconv_dedrift}


# Degenerate shapes: one contract in every backend and in the fake (meta) kernels.

EMPTY = {  # name: (op, args, expected output shape)
    "dct_B0": lambda: (DCT, [_img(0, 16, 8)], (0, 192, 2, 1)),
    "dct_H0": lambda: (DCT, [_img(2, 0, 16)], (2, 192, 0, 2)),
    "dct_W0": lambda: (DCT, [_img(1, 8, 0)], (1, 192, 1, 0)),
    "fdm_B0": lambda: (FDM, [_img(0, 8, 8), *_fde(4, 3, 2)], (0, 2, 1, 1)),
    "fdm_H0": lambda: (FDM, [_img(1, 0, 8), *_fde(4, 3, 2)], (1, 2, 0, 1)),
    "fdm_C0": lambda: (FDM, [_img(1, 16, 8), *_fde(4, 3, 0)], (1, 0, 2, 1)),
    "fdm_uint8_B0": lambda: (FDM, [_img(0, 8, 8, torch.uint8), *_fde(4, 3, 2)], (0, 2, 1, 1)),
    "fdm_uint8_C0": lambda: (FDM, [_img(1, 16, 8, torch.uint8), *_fde(4, 3, 0, torch.float64)], (1, 0, 2, 1)),
    "rc_B0": lambda: (RC, [*_rc(0, 2, 4, 6, 4, 3, 2), "relu"], (0, 4, 6, 4)),
    "rc_C0": lambda: (RC, [*_rc(2, 2, 0, 6, 4, 3, 2), "relu6"], (2, 0, 6, 4)),
    "rc_Hf0": lambda: (RC, [*_rc(2, 2, 4, 0, 4, 1, 2), "relu"], (2, 4, 0, 4)),
    "rc_Hf0_Hb0": lambda: (RC, [*_rc(2, 2, 4, 0, 4, 0, 2), "identity"], (2, 4, 0, 4)),
    "rc_Wf0_Wb0": lambda: (RC, [*_rc(1, 3, 4, 6, 0, 3, 0), "relu"], (1, 4, 6, 0)),
}

RAISES = {  # name: (op, args, message)
    "rc_Cin0": lambda: (RC, [*_rc(2, 0, 4, 6, 4, 3, 2), "relu"], r"x must have at least one channel \(Cin >= 1"),
    "fdm_h1_0": lambda: (FDM, [_img(1, 8, 8), *_fde(0, 3, 2)], r"w1 must have at least one row \(h1 >= 1"),
    "fdm_h2_0": lambda: (FDM, [_img(1, 8, 8), *_fde(4, 0, 2)], r"w2 must have at least one row \(h2 >= 1"),
    "rc_Hb0_of_6": lambda: (RC, [*_rc(2, 2, 4, 6, 4, 0, 2), "relu"], "fdm grid 0x2 must divide the feature grid 6x4"),
}


def _to(args, device):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("backend,device", backend_device_pairs())
@pytest.mark.parametrize("case", EMPTY)
def test_empty_outputs(backend, device, case):
    op, args, shape = EMPTY[case]()
    args = _to(args, device)
    out = run(backend, op, *args)
    dtype = args[1].dtype if op is FDM else args[0].dtype  # block_dct_fdm: the weights' (img: the same or uint8)
    assert out.shape == shape and out.dtype == dtype and out.device == args[0].device
    assert out.is_contiguous()
    fake = op(*_to(args, "meta"))
    assert fake.shape == shape and fake.dtype == dtype  # the fake kernel agrees


@pytest.mark.parametrize("backend,device", backend_device_pairs())
@pytest.mark.parametrize("case", RAISES)
def test_layers_over_nothing_raise_the_same_error(backend, device, case):
    op, args, message = RAISES[case]()
    with pytest.raises(ValueError, match=message):
        run(backend, op, *_to(args, device))
    with pytest.raises(ValueError, match=message):
        op(*_to(args, "meta"))


def test_issue_command_raises_instead_of_crashing():
    code = ("import torch, afd_ext\ntry:\n"
            "    torch.ops.afd.repconv_dedrift(torch.randn(2,0,6,4), torch.randn(4,0,3,3), "
            "torch.randn(4), torch.rand(2,4,3,2), torch.randn(2,4,6,4), 'relu')\n"
            "except ValueError as e:\n    print('ValueError', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ValueError x must have at least one channel" in r.stdout, (r.returncode, r.stderr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_output_gradients_are_zero_not_missing(backend):
    args = [t.double().requires_grad_() for t in _rc(2, 3, 0, 4, 4, 2, 2)]  # C = 0: x is not empty
    out = run(backend, RC, *args, "relu")
    out.sum().backward()
    for t in args:
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any()


# ---------------------------------------------------------------------------------------------
# 64-bit offsets: views whose offsets pass 2^31 elements. They live in a sparse file mapped
# shared, so only the few pages the ops touch become real memory. Each view starts 2^31 elements
# in, so an offset that wraps in int32 lands inside the mapping: the result is wrong, not a crash.

BIG = 2 ** 31
HUGE_STRIDE = 2 ** 30  # x2 (a third colour, a third tap row) passes 2^31


def _huge_view(tmp_path, values, strides, offset=BIG):
    extent = offset + sum((n - 1) * s for n, s in zip(values.shape, strides)) + 1
    path = tmp_path / "huge.bin"
    try:
        storage = torch.from_file(str(path), shared=True, size=extent, dtype=values.dtype)
    except RuntimeError as exc:  # pragma: no cover - a file system without large sparse files
        pytest.skip(f"cannot map a sparse {extent * values.element_size() / 2**30:.0f} GiB file: {exc}")
    finally:
        path.unlink(missing_ok=True)  # the mapping stays valid; nothing is left on disk
    view = storage.as_strided(values.shape, strides, offset)
    view.copy_(values)
    return view


def _img_channel_stride(tmp_path, dtype=torch.float32):
    img = _img(1, 8, 16, dtype)
    return _huge_view(tmp_path, img, (3 * HUGE_STRIDE, HUGE_STRIDE, 16, 1))


HUGE_CASES = {
    # block DCT tile (both DCT kernels): the third colour plane at 2 * s_c
    "dct_img_channel_stride": lambda p: (DCT, [_img_channel_stride(p)]),
    "fdm_img_channel_stride": lambda p: (FDM, [_img_channel_stride(p), *_fde(4, 3, 2)]),
    "fdm_uint8_img_channel_stride": lambda p: (FDM, [_img_channel_stride(p, torch.uint8), *_fde(4, 3, 2)]),
    # the hidden units of b1 at j * b1_s
    "fdm_b1_stride": lambda p: (FDM, (lambda w: [_img(1, 8, 8), w[0], _huge_view(p, w[1], (HUGE_STRIDE,)), *w[2:]])(
        _fde(4, 3, 2))),
    # w1's Cb and Cr columns at 64 * w1_s1 and 128 * w1_s1
    "fdm_w1_column_stride": lambda p: (FDM, (lambda w: [_img(1, 8, 8), _huge_view(p, w[0], (1, 2 ** 25)), *w[1:]])(
        _fde(4, 3, 2))),
    # weight's third tap row at 2 * ws_h
    "rc_weight_row_stride": lambda p: (RC, (lambda a: [a[0], _huge_view(p, a[1], (6, 3, HUGE_STRIDE, 1)), *a[2:],
                                                        "relu6"])(_rc(1, 2, 2, 4, 4, 2, 2))),
    # the second image of x, feat and fdm a batch stride of 2^31 away
    "rc_batch_stride": lambda p: (RC, (lambda a: [_huge_view(p, a[0], (BIG, 16, 4, 1)), a[1], a[2],
                                                   _huge_view(p, a[3], (BIG, 4, 2, 1)),
                                                   _huge_view(p, a[4], (BIG, 16, 4, 1)), "identity"])(
        _rc(2, 1, 1, 4, 4, 2, 2))),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", HUGE_CASES)
def test_offsets_past_2_31_elements(tmp_path, backend, case):
    op, args = HUGE_CASES[case](tmp_path)
    spans = [sum((n - 1) * s for n, s in zip(t.shape, t.stride())) for t in args if isinstance(t, torch.Tensor)]
    assert max(spans) >= BIG  # some input's offsets, from its first element, pass 2^31
    out = run(backend, op, *args)
    torch.testing.assert_close(out, REFERENCE[op](*args), rtol=1e-5, atol=1e-3)
