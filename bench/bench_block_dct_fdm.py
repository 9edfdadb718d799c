"""afd::block_dct_fdm: (B,3,224,224) RGB 0..255 -> (B,C,28,28), FDE-Net 192->128->64->C.

The image comes as the deployed module hands it over: uint8 (the decoded image, 1 byte a pixel)
or in the weights' floating dtype; channels_last (the pipeline's layout) and NCHW."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, LAYOUTS, generator, implementations  # bench: conftest's fixture


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("image", ["uint8", "float"])
@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("block_dct_fdm"), ids=lambda v: str(v))
def test_block_dct_fdm(bench, impl, backend, dtype, channels, image, layout):
    g = generator()
    img = (torch.rand(BATCH, 3, 224, 224, generator=g, device=DEVICE) * 255).round()
    img = img.to(torch.uint8 if image == "uint8" else dtype).contiguous(memory_format=LAYOUTS[layout])

    def r(*s, scale):
        return (torch.randn(*s, generator=g, device=DEVICE) * scale).to(dtype)
    w = [r(128, 192, scale=0.01), r(128, scale=0.1), r(64, 128, scale=0.1), r(64, scale=0.1),
         r(channels, 64, scale=0.1), r(channels, scale=0.1)]
    es = torch.finfo(dtype).bits // 8
    moved = img.numel() * img.element_size() + BATCH * channels * 28 * 28 * es + sum(t.numel() for t in w) * es
    bench("block_dct_fdm", impl, backend, (img, *w), moved, dtype=str(dtype).removeprefix("torch."),
          layout=layout, shape=f"img {tuple(img.shape)} {image}, C={channels}")
