"""Helpers shared by the test modules (imported as ``helpers``; fixtures and hooks are in conftest.py)."""
import os
from pathlib import Path

import pytest
import torch

import afd_ext

# The real images (imagenet-sample-dev/, bsds500/): $AFD_DATA, else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("AFD_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
DEV_IMAGES = SHARED_DATA / "imagenet-sample-dev"
HAS_CUDA = torch.cuda.is_available()

needs_data = pytest.mark.skipif(not DEV_IMAGES.is_dir(), reason=f"needs the shared data at {SHARED_DATA}")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


LAYOUTS = ("contiguous", "channels_last", "noncontiguous")
# Examples per backend in the hypothesis parity tests. The Triton interpreter is slow on CPU,
# so it gets fewer; together every op sees well over 200 random cases per CI run.
EXAMPLES = {"reference": 40, "cpp": 200, "cuda": 200, "triton": int(os.environ.get("AFD_TRITON_EXAMPLES", "100"))}


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        # every other column of a twice-as-wide tensor
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        out = wide[..., ::2]
        assert not out.is_contiguous() or t.numel() <= 1 or t.shape[-1] == 1
        return out
    raise ValueError(layout)


def dtypes_for(backend: str, device: str):
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    if backend == "triton":
        return [torch.float32]
    return [torch.float32, torch.float64]


def run(backend: str, op, *args):
    with afd_ext.use_backend(backend):
        return op(*args)


def assert_close(out, ref, dtype, op=None):
    """``out`` against ``ref`` (the float64 reference rounded to ``dtype``) within ``tol(dtype, ref, op)``;
    NaN where ``ref`` has NaN, and +-inf exactly where ``ref`` has it."""
    rtol, atol = tol(dtype, ref, op)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    assert_nonfinite_match(out, ref)
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=atol, equal_nan=True)


def assert_nonfinite_match(out, ref):
    """NaN, +inf and -inf at exactly the positions where the reference has them."""
    out, ref = out.cpu(), ref.cpu()
    for name, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        got, want = test(out), test(ref)
        assert torch.equal(got, want), (f"{name}: {int((got & ~want).sum())} where the reference has none, "
                                        f"missing at {int((want & ~got).sum())} of its {int(want.sum())}")


def cpu_backends():
    """Backends that can run on CPU tensors in this process."""
    out = [b for b in afd_ext.available_backends() if b in ("reference", "cpp")]
    if "triton" in afd_ext.available_backends() and os.environ.get("TRITON_INTERPRET") == "1":
        out.append("triton")
    return out


GPU_BACKENDS = ("reference", "cuda", "triton")


def cuda_backends():
    if not HAS_CUDA:
        return []
    return [b for b in afd_ext.available_backends() if b in GPU_BACKENDS]


def backend_device_pairs():
    """(backend, device) cases: the CPU backends, and every GPU backend, always collected: on a
    machine without a GPU, or without that backend built, each GPU case is there and skips saying
    why (so the count of skipped tests shows what did not run)."""
    pairs = [(b, "cpu") for b in cpu_backends()]
    for b in GPU_BACKENDS:
        if not HAS_CUDA:
            pairs.append(pytest.param(b, "cuda", marks=pytest.mark.skip(reason="needs a CUDA device")))
        elif b not in afd_ext.available_backends():
            pairs.append(pytest.param(b, "cuda", marks=pytest.mark.skip(
                reason=f"backend {b!r} is not built here (available: {afd_ext.available_backends()})")))
        else:
            pairs.append((b, "cuda"))
    return pairs


#: Unit roundoff u = 2^-p of the 16-bit types (p significand bits, the implicit one included).
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
#: Per op, the absolute error of a float16/bfloat16 result beyond its final rounding, in units of
#: u x spread(reference output): what the op's kernels round to 16 bits on the way (docs/design.md §2).
HALF_ATOL_UNITS = {
    # float32 arithmetic all through (the tensor-core repconv: exact 16-bit products, float32 sums);
    # only the result is rounded, so what is left is float32 summation error (measured on the CPU
    # backends: < 1e-4 of these units).
    "block_dct": 1 / 8,
    "repconv_dedrift": 1 / 8,
    # The 192 DCT coefficients rounded to the type before layer 1 (the reference in the type and the
    # Triton kernel; the CUDA tensor-core path rounds the folded first layer and the hidden layers to
    # float16), the error then carried through two more layers. Measured on ~1500 random cases with
    # weights scaled as tests/test_block_dct_fdm.py scales them: up to 1.3 units where conversions
    # round to nearest, 2.2 for Triton under TRITON_INTERPRET=1 (its float32 -> bfloat16 conversion
    # truncates), 0.5 for the tensor-core kernel under kernels/emu (40 cases); 6 leaves a margin of
    # 2.7 over the worst.
    "block_dct_fdm": 6,
}


def spread(ref) -> float:
    """The range the reference's finite values span, zero included (max(ref, 0) - min(ref, 0)): the
    size of what an op sums, which its rounding errors scale with."""
    finite = ref[torch.isfinite(ref)].double()
    if finite.numel() == 0:
        return 0.0
    return float(finite.max().clamp(min=0) - finite.min().clamp(max=0))


def tol(dtype, ref=None, op=None):
    """(rtol, atol) for an op's result in ``dtype`` against the float64 reference rounded to ``dtype``,
    as docs/design.md §2 sets them. float32 and float64: fixed. float16 and bfloat16 (u = 2^-11, 2^-8):
    rtol = 2u, one ulp of the result, since a kernel's float32 value and the float64 one may round to
    neighbours; atol = HALF_ATOL_UNITS[op] * u * spread(ref) for what ``op`` rounds on the way, which
    scales with the size of the values it sums, not with each result (a fixed atol is too loose on a
    0..1 map and meaningless on features of size 30)."""
    if dtype in UNIT_ROUNDOFF:
        if ref is None or op not in HALF_ATOL_UNITS:
            raise ValueError(f"{dtype} tolerances need the reference output and the op "
                             f"(one of {sorted(HALF_ATOL_UNITS)}), got op={op!r}")
        u = UNIT_ROUNDOFF[dtype]
        return 2 * u, HALF_ATOL_UNITS[op] * u * spread(ref)
    return {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4)}[dtype]


# -- synthetic photos and checkpoints (one generator for every test module) --------------------------

def make_photo(h: int = 240, w: int = 320, seed: int = 0, noise: float = 6.0, freq=(0.01, 0.08)):
    """A photo-like RGB ``PIL.Image`` of ``h`` x ``w``, the same for the same arguments: per channel a
    product of sinusoids (random frequencies in ``freq`` cycles per pixel x 2 pi, random phases), a
    diagonal brightness ramp and Gaussian noise of std ``noise``. Orientation and content matter to a
    classifier, and its JPEG scans are not trivially short."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = []
    for _ in range(3):
        fy, fx = rng.uniform(freq[0], freq[1], size=2)
        chans.append(127 + 90 * np.sin(fy * yy + rng.uniform(0, 6)) * np.cos(fx * xx + rng.uniform(0, 6)))
    img = np.stack(chans, -1) + np.linspace(0, 60, w)[None, :, None] * (yy[..., None] / h)
    img += rng.normal(0, noise, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg_bytes(img, quality: int = 80, **save_kw) -> bytes:
    """``img`` saved as JPEG in memory (``save_kw``: Pillow's, e.g. ``exif=``, ``progressive=True``). The
    default quality, 80, is at most ``afd_ext.data.SKIP_AFD_ABOVE_QUALITY``: the AFD runs on it."""
    import io
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **save_kw)
    return buf.getvalue()


def perturb(module, scale: float = 0.05, seed: int = 0):
    """``module`` with Gaussian noise of std ``scale`` added to every parameter, in place (a new AFD is
    the identity; perturbed, it changes the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) * scale)
    return module


def write_checkpoint(path, width=4, scale: float = 0.05, seed: int = 0, channels: int = 32, act: str = "relu6") -> str:
    """A perturbed ``AFDModule`` for EfficientNet-Lite0's stem (32 channels, relu6) saved at ``path``
    (with its ``.json``); returns the path as a string."""
    from afd_ext.checkpoint import save_checkpoint
    afd = perturb(afd_ext.AFDModule(channels, width=width, act=act), scale, seed)
    return str(save_checkpoint(path, afd, {"backbone": "efficientnet_lite0"}))
