"""afd::block_dct_fdm: (B,3,224,224) -> (B,C,28,28), FDE-Net 192->128->64->C."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, bench, implementations, make_callable  # noqa: F401


@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("block_dct_fdm"), ids=lambda v: str(v))
def test_block_dct_fdm(bench, impl, backend, dtype, channels):  # noqa: F811
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(BATCH, 3, 224, 224, generator=g) * 255).to(device=DEVICE, dtype=dtype)

    def r(*s, scale):
        return (torch.randn(*s, generator=g) * scale).to(device=DEVICE, dtype=dtype)
    w = [r(128, 192, scale=0.01), r(128, scale=0.1), r(64, 128, scale=0.1), r(64, scale=0.1),
         r(channels, 64, scale=0.1), r(channels, scale=0.1)]
    es = img.element_size()
    moved = img.numel() * es + BATCH * channels * 28 * 28 * es + sum(t.numel() for t in w) * es
    bench(make_callable("block_dct_fdm", impl, backend), img, *w, bytes_moved=moved, op="block_dct_fdm",
          impl=impl, dtype=str(dtype), device=DEVICE, shape=f"img {tuple(img.shape)}, C={channels}")
