"""afd::repconv_dedrift at the stem: x (B,16,112,112) (FE-Net width 8: concat of two 8-channel
maps), C = 32 or 64 stem channels, FDM 28x28, act relu6."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, bench, implementations, make_callable  # noqa: F401


@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("repconv_dedrift"), ids=lambda v: str(v))
def test_repconv_dedrift(bench, impl, backend, dtype, channels):  # noqa: F811
    g = torch.Generator().manual_seed(0)
    cin = 16

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device=DEVICE, dtype=dtype)
    # channels_last is the production layout on GPU
    fmt = torch.channels_last if DEVICE == "cuda" else torch.contiguous_format
    x = r(BATCH, cin, 112, 112).contiguous(memory_format=fmt)
    weight, bias = r(channels, cin, 3, 3, scale=0.1), r(channels)
    fdm = torch.rand(BATCH, channels, 28, 28, generator=g).to(device=DEVICE, dtype=dtype)
    feat = r(BATCH, channels, 112, 112).contiguous(memory_format=fmt)
    es = x.element_size()
    moved = (x.numel() + feat.numel() * 2 + fdm.numel() + weight.numel() + bias.numel()) * es
    bench(make_callable("repconv_dedrift", impl, backend), x, weight, bias, fdm, feat, "relu6", bytes_moved=moved,
          op="repconv_dedrift", impl=impl, dtype=str(dtype), device=DEVICE,
          shape=f"x {tuple(x.shape)}, C={channels}, fdm 28x28")
