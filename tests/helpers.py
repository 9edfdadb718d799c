"""Helpers shared by the test modules (imported as ``helpers``; fixtures and hooks are in conftest.py)."""
import math
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch

import afd_ext
# What parity means (tolerances per dtype and op, input layouts): one home, the reference package's
# testing module, which tools/cuda_check.py reads too (docs/design.md §2).
from afd_ext.reference.testing import (HALF_ATOL_UNITS, LAYOUTS, UNIT_ROUNDOFF, spread, tol,  # noqa: F401
                                       with_layout)

# The real images (imagenet-sample-dev/, bsds500/): $AFD_DATA, else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("AFD_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
DEV_IMAGES = SHARED_DATA / "imagenet-sample-dev"
HAS_CUDA = torch.cuda.is_available()

needs_data = pytest.mark.skipif(not DEV_IMAGES.is_dir(), reason=f"needs the shared data at {SHARED_DATA}")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


# Examples per backend in the hypothesis parity tests. The Triton interpreter is slow on CPU,
# so it gets fewer; together every op sees well over 200 random cases per CI run.
EXAMPLES = {"reference": 40, "cpp": 200, "cuda": 200, "triton": int(os.environ.get("AFD_TRITON_EXAMPLES", "100"))}


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


# -- op inputs (small, seeded; the degenerate-shape, offset and double-backward tests) ----------------

def op_generator(seed=0):
    return torch.Generator().manual_seed(seed)


def op_image(b, h, w, dtype=torch.float32, seed=0):
    """A (b,3,h,w) RGB image 0..255 in ``dtype``, the same for the same arguments."""
    return (torch.rand(b, 3, h, w, generator=op_generator(seed), dtype=torch.float64) * 255).to(dtype)


def fde_weights(h1, h2, c, dtype=torch.float32, seed=1):
    """FDE-Net weights w1, b1, w2, b2, w3, b3 (192 -> h1 -> h2 -> c) as ``nn.Linear`` stores them."""
    g = op_generator(seed)
    shapes = [((h1, 192), 0.01), ((h1,), 0.1), ((h2, h1), 0.3), ((h2,), 0.1), ((c, h2), 0.3), ((c,), 0.1)]
    return [(torch.randn(*s, generator=g, dtype=torch.float64) * k).to(dtype) for s, k in shapes]


def repconv_args(b, cin, c, hf, wf, hb, wb, dtype=torch.float32, seed=2):
    """x, weight, bias, fdm, feat of ``repconv_dedrift`` (x: b,cin,hf,wf; fdm: b,c,hb,wb)."""
    g = op_generator(seed)

    def r(*s, k=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * k).to(dtype)
    fdm = torch.rand(b, c, hb, wb, generator=g, dtype=torch.float64).to(dtype)
    return [r(b, cin, hf, wf), r(c, cin, 3, 3, k=0.3), r(c), fdm, r(b, c, hf, wf, k=3.0)]


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
    from afd_ext.models.checkpoint import save_checkpoint
    afd = perturb(afd_ext.AFDModule(channels, width=width, act=act), scale, seed)
    return str(save_checkpoint(path, afd, {"backbone": "efficientnet_lite0"}))


# -- hostile files and quick runs (tests/test_special_files.py, test_cli_errors.py, test_train_runs.py) ---------

#: A training run of a few seconds on a CPU: 4 steps of 2 crops of 32 pixels, the tiny width, one thread.
TRAIN_QUICK = ["--steps", "4", "--batch-size", "2", "--crop", "32", "--width", "tiny", "--workers", "0", "--threads",
               "1", "--warmup", "1", "--holdout", "0", "--ckpt-every", "2", "--no-progress", "--quality-range", "5",
               "30"]


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking greyscale PNG whose header declares ``width`` x ``height`` pixels (a few
    hundred bytes: one compressed row of zeros; a decoder that trusts the header allocates it all)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    rows = zlib.compress(b"\x00" * ((width + 1) * min(height, 1)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose SOF0 header is patched to declare ``width`` x ``height``."""
    blob = bytearray(jpeg_bytes(make_photo(16, 16)))
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


# -- NaN/+-inf poisoning for the ops' property tests (the same for every op with named inputs) ---------

def nonfinite_poisons(names):
    """A hypothesis strategy: half the examples clean (()), half 1-3 (name, flat index, value) entries with
    value NaN or +-inf, name one of ``names``."""
    from hypothesis import strategies as st
    entry = st.tuples(st.sampled_from(list(names)), st.integers(0, 2**31 - 1),
                      st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(st.just(()), st.lists(entry, min_size=1, max_size=3))


def poison_args(args, names, poison):
    """``args`` (positional, in the order of ``names``) with the ``poison`` entries written into copies; a None
    or empty argument is left as it is. The tensors are contiguous here (before any layout is applied)."""
    args = list(args)
    for name, index, value in poison:
        i = names.index(name)
        if args[i] is not None and args[i].numel():
            args[i] = args[i].clone()
            args[i].view(-1)[index % args[i].numel()] = value
    return args
