"""afd::block_dct: (B,3,224,224) -> (B,192,28,28)."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, bench, implementations, make_callable  # noqa: F401


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("block_dct"), ids=lambda v: str(v))
def test_block_dct(bench, impl, backend, dtype):  # noqa: F811
    img = (torch.rand(BATCH, 3, 224, 224, device=DEVICE) * 255).to(dtype)
    es = img.element_size()
    moved = img.numel() * es + BATCH * 192 * 28 * 28 * es
    bench(make_callable("block_dct", impl, backend), img, bytes_moved=moved, op="block_dct", impl=impl,
          dtype=str(dtype), device=DEVICE, shape=f"img {tuple(img.shape)}")
