"""afd::block_dct: (B,3,224,224) RGB 0..255 -> (B,192,28,28)."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, LAYOUTS, generator, implementations  # bench: conftest's fixture


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("block_dct"), ids=lambda v: str(v))
def test_block_dct(bench, impl, backend, dtype, layout):
    img = (torch.rand(BATCH, 3, 224, 224, generator=generator(), device=DEVICE) * 255).round().to(dtype)
    img = img.contiguous(memory_format=LAYOUTS[layout])
    es = img.element_size()
    moved = img.numel() * es + BATCH * 192 * 28 * 28 * es
    bench("block_dct", impl, backend, (img,), moved, dtype=str(dtype).removeprefix("torch."), layout=layout,
          shape=f"img {tuple(img.shape)}")
