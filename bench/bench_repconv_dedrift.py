"""afd::repconv_dedrift at the stem: x (B,16,112,112) (the shipped FE-Net width 8: concat of two
8-channel maps), C = 32 (EfficientNet-Lite0) or 64 (ResNet-50) stem channels, FDM 28x28, act relu6."""
import pytest
import torch

from conftest import BATCH, DEVICE, DTYPES, LAYOUTS, generator, implementations  # bench: conftest's fixture


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,backend", implementations("repconv_dedrift"), ids=lambda v: str(v))
def test_repconv_dedrift(bench, impl, backend, dtype, channels, layout):
    g = generator()
    cin = 16
    fmt = LAYOUTS[layout]

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, device=DEVICE) * scale).to(dtype)
    x = r(BATCH, cin, 112, 112).contiguous(memory_format=fmt)
    weight, bias = r(channels, cin, 3, 3, scale=0.1), r(channels)
    fdm = torch.rand(BATCH, channels, 28, 28, generator=g, device=DEVICE).to(dtype)
    fdm = fdm.contiguous(memory_format=fmt)
    feat = r(BATCH, channels, 112, 112).contiguous(memory_format=fmt)
    es = x.element_size()
    moved = (x.numel() + feat.numel() * 2 + fdm.numel() + weight.numel() + bias.numel()) * es
    bench("repconv_dedrift", impl, backend, (x, weight, bias, fdm, feat, "relu6"), moved,
          dtype=str(dtype).removeprefix("torch."), layout=layout, shape=f"x {tuple(x.shape)}, C={channels}, fdm 28x28")
