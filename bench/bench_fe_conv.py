"""afd::fe_conv at the five blocks of the shipped Lite0 FE-Net (width 8, stem 32 channels at 112x112):
enc1 32->8; enc2 8->16 + pool; enc3 16->32 + pool; dec3 32->16 at 28x28; dec2 reading
cat(up2(16 @ 28x28), 16 @ 56x56) -> 8."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, LAYOUTS, generator, implementations  # bench: conftest's fixture

# name: (Cx, Cs (0: no skip), Cout, H, W of the conv's input resolution, pool)
BLOCKS = {"enc1": (32, 0, 8, 112, 112, False), "enc2": (8, 0, 16, 112, 112, True),
          "enc3": (16, 0, 32, 56, 56, True), "dec3": (32, 0, 16, 28, 28, False), "dec2": (16, 16, 8, 56, 56, False)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("fe_conv"), ids=lambda v: str(v))
def test_fe_conv(bench, impl, backend, dtype, block, layout):
    g = generator()
    cx, cs, cout, h, w, pool = BLOCKS[block]
    fmt = LAYOUTS[layout]

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, device=DEVICE) * scale).to(dtype)
    if cs:
        x = r(BATCH, cx, (h + 1) // 2, (w + 1) // 2).contiguous(memory_format=fmt)
        skip = r(BATCH, cs, h, w).contiguous(memory_format=fmt)
    else:
        x, skip = r(BATCH, cx, h, w).contiguous(memory_format=fmt), None
    weight, bias, alpha = r(cout, cx + cs, 3, 3, scale=0.1), r(cout), r(cout, scale=0.1)
    out_pixels = ((h + 1) // 2) * ((w + 1) // 2) if pool else h * w
    es = x.element_size()
    moved = (x.numel() + (skip.numel() if cs else 0) + BATCH * cout * out_pixels + weight.numel() + 2 * cout) * es
    bench("fe_conv", impl, backend, (x, skip, weight, bias, alpha, pool), moved,
          dtype=str(dtype).removeprefix("torch."), layout=layout,
          shape=f"{block}: x {tuple(x.shape)}" + (f", skip {tuple(skip.shape)}" if cs else "") + f" -> {cout}"
          + (", pool" if pool else ""))
