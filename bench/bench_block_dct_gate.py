"""afd::block_dct_gate: (B,3,224,224) RGB 0..255, uint8 (what the Pipeline feeds) or the float dtype ->
the gate logit (B,). Moves the image once (the coefficients are reduced, not stored, on CPU)."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, LAYOUTS, generator, implementations  # bench: conftest's fixture


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("image", ["uint8", "float"])
@pytest.mark.parametrize("impl,backend", implementations("block_dct_gate"), ids=lambda v: str(v))
def test_block_dct_gate(bench, impl, backend, image, layout):
    g = generator()
    img = (torch.rand(BATCH, 3, 224, 224, generator=g, device=DEVICE) * 255).round()
    img = img.to(torch.uint8 if image == "uint8" else DTYPES[0]).contiguous(memory_format=LAYOUTS[layout])
    weight = torch.randn(1, 192, generator=g, device=DEVICE) / 192 ** 0.5
    bias = torch.zeros(1, device=DEVICE)
    moved = img.numel() * img.element_size() + BATCH * 4
    bench("block_dct_gate", impl, backend, (img, weight, bias), moved, dtype=str(img.dtype).removeprefix("torch."),
          layout=layout, shape=f"img {tuple(img.shape)}")
