"""Blind estimation of an image's JPEG block grid from its pixels (docs/design.md §1, "block grid").

A JPEG decoded and then resized no longer has its 8x8 blocks on the input's 8x8 grid: a crop
compressed at 224 and resized to 256 has blocks of 9.14 pixels, a photo compressed at its own size
and resized down blocks of 4-7. The FDE-Net reads 8x8 blocks of the input, so it sees those blocks
blurred and cut; the FDM from the file's own grid (``--fdm-source file``) showed what is lost. Here
the grid is estimated from the pixels alone: block edges make the mean |first difference| across
columns (and rows) periodic, so the period and phase are the peak of that profile's periodogram.
``rectify`` resamples the image so that its blocks sit on an 8x8 grid again; the FDE-Net and the
gate read that image, and each block's FDM vector goes where the block lies in the input
(``block_indices``). ``AFDModule(grid='detect')`` does this in ``forward`` (eval mode).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Periods searched, in input pixels: from a photo shrunk to 0.62 of its size to a crop enlarged 1.75x.
GRID_PERIOD_RANGE = (5.0, 14.0)
GRID_PERIOD_STEP = 0.02
# Periods this close to 8 are the input's own grid (the FDE-Net already reads it; the 8/7 resize of
# the evaluation transform also makes a period-8 pattern itself), so they are not a shifted grid.
GRID_NEAR_8 = 0.4
# A shifted grid is taken when its peak is at least GRID_MIN_STRENGTH times the periodogram's median
# (a clean photo's strongest peak is about 5 times it) and at least GRID_MIN_RATIO_TO_8 of the
# strongest peak near 8 (on an input compressed at its own grid the period-8 peak dwarfs the rest).
# Fixed on the labelled training-side photos, before the decision set (docs/accuracy.md, v16).
GRID_MIN_STRENGTH = 8.0
GRID_MIN_RATIO_TO_8 = 0.5
GRID_MIN_SIZE = 32  # smaller images: no estimate (too few blocks)
_DETREND = 9  # the profile minus its moving average over this many boundaries: edges, not content ramps


@dataclass
class BlockGrid:
    """Per image (B,): the block period in input pixels, the position of a block edge along x and y
    in [0, period), the peak's strength (peak / periodogram median), its ratio to the period-8 peak,
    and ``shifted``: whether a block grid other than the input's own 8x8 grid was found."""
    period: torch.Tensor
    offset_x: torch.Tensor
    offset_y: torch.Tensor
    strength: torch.Tensor
    ratio_to_8: torch.Tensor
    shifted: torch.Tensor


def _edge_profiles(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W-1) and (B, H-1): mean |luma difference| at each column / row boundary, detrended."""
    x = img.float()
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    ax = (y[..., 1:] - y[..., :-1]).abs().mean(1)
    ay = (y[..., 1:, :] - y[..., :-1, :]).abs().mean(2)
    out = []
    for a in (ax, ay):
        trend = F.avg_pool1d(a[:, None], _DETREND, 1, _DETREND // 2, count_include_pad=False)[:, 0]
        out.append(a - trend)
    return out[0], out[1]


def _periods(device) -> torch.Tensor:
    lo, hi = GRID_PERIOD_RANGE
    n = int(round((hi - lo) / GRID_PERIOD_STEP))
    return lo + GRID_PERIOD_STEP * torch.arange(n, dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=8)  # a few input sizes; each entry is N x 450 float64 x 2
def _basis(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) (N, P) of the phase of boundary n (at x = n + 1) at each period: a constant of the
    profile's length, built once per length and device (it is most of the detector's work)."""
    periods = _periods(device)
    pos = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    phase = (-2 * math.pi * pos[:, None] / periods[None, :]) % (2 * math.pi)
    return torch.cos(phase), torch.sin(phase)


def _fourier(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) sums (B, P) of profile a (B, N) at each period."""
    cos, sin = _basis(a.shape[-1], a.device)
    a = a.double()
    return a @ cos, a @ sin


@torch.no_grad()
def detect_block_grid(img: torch.Tensor) -> BlockGrid:
    """The JPEG block grid of each image of img (B,3,H,W), RGB 0..255 (uint8 or floating)."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"detect_block_grid: img must have shape (B, 3, H, W), got {tuple(img.shape)}")
    b, dev = img.shape[0], img.device
    if min(img.shape[-2:]) < GRID_MIN_SIZE:
        zeros = torch.zeros(b, dtype=torch.float64, device=dev)
        return BlockGrid(zeros + 8, zeros, zeros, zeros, zeros, torch.zeros(b, dtype=torch.bool, device=dev))
    periods = _periods(dev)
    ax, ay = _edge_profiles(img)
    cx, sx = _fourier(ax)
    cy, sy = _fourier(ay)
    power = (cx ** 2 + sx ** 2) / ax.shape[-1] + (cy ** 2 + sy ** 2) / ay.shape[-1]
    near8 = (periods - 8).abs() < GRID_NEAR_8
    power8 = power[:, near8].amax(1)
    power = power.masked_fill(near8, 0)
    median = power.median(1).values.clamp_min(1e-12)  # of the masked periodogram, as calibrated
    k = power.argmax(1)
    peak = power.gather(1, k[:, None])[:, 0]
    p = periods[k]
    rows = torch.arange(b, device=dev)
    # an edge at x = o + j p gives the sums the phase -2 pi o / p
    ox = (-torch.atan2(sx[rows, k], cx[rows, k]) * p / (2 * math.pi)) % p
    oy = (-torch.atan2(sy[rows, k], cy[rows, k]) * p / (2 * math.pi)) % p
    strength = peak / median
    ratio = peak / power8.clamp_min(1e-12)
    shifted = (strength >= GRID_MIN_STRENGTH) & (ratio >= GRID_MIN_RATIO_TO_8)
    return BlockGrid(p, ox, oy, strength, ratio, shifted)


@dataclass
class Rectified:
    """Images resampled onto their own block grids: ``image`` (N,3,Hv,Wv) float32 RGB 0..255, the
    blocks on the 8x8 grid; per image, input x = ``x0`` + ``scale`` * (virtual x) (y likewise):
    ``x0``, ``y0``, ``scale`` (N,) float64."""
    image: torch.Tensor
    x0: torch.Tensor
    y0: torch.Tensor
    scale: torch.Tensor


def placement(period: float, offset_x: float, offset_y: float, size) -> tuple[float, float, float, int, int]:
    """(x0, y0, scale, Hv, Wv) of an input of ``size`` (H, W) read on the grid ``period`` /
    ``offset``: the first virtual block starts at the last block edge at or before the input's first
    pixel; the virtual image covers the whole input, in whole blocks. Images of one (Hv, Wv) are
    rectified together."""
    h, w = size
    s = float(period) / 8.0
    x0 = float(offset_x) - math.ceil(float(offset_x) / period) * period
    y0 = float(offset_y) - math.ceil(float(offset_y) / period) * period
    return x0, y0, s, int(math.ceil((h - y0) / s / 8)) * 8, int(math.ceil((w - x0) / s / 8)) * 8


def rectify(img: torch.Tensor, period, offset_x, offset_y) -> Rectified:
    """img (3,H,W) or (N,3,H,W), RGB 0..255, resampled (bilinear) by 8 / period so that the block
    edges at offset + j * period land on multiples of 8 (the part beyond the input is its edge,
    replicated). ``period``/``offset_*``: a number, or a sequence / (N,) tensor, one per image; the
    images of one call must have one virtual size (``placement``)."""
    img = img[None] if img.dim() == 3 else img
    n, (h, w) = img.shape[0], img.shape[-2:]

    def per_image(v) -> list:
        return [float(x) for x in (v.tolist() if isinstance(v, torch.Tensor) else
                                   (v if isinstance(v, (list, tuple)) else [v] * n))]
    places = [placement(p, ox, oy, (h, w))
              for p, ox, oy in zip(per_image(period), per_image(offset_x), per_image(offset_y))]
    if len(places) != n or len({pl[3:] for pl in places}) != 1:
        raise ValueError(f"rectify: {n} images need one period and offset each, and one virtual size; got "
                         f"{len(places)} placements, sizes {sorted({pl[3:] for pl in places})}")
    hv, wv = places[0][3:]
    x0, y0, sc = (torch.tensor([pl[k] for pl in places], dtype=torch.float64, device=img.device) for k in range(3))
    # float32 coordinates: the same numbers, to the bit, as the float scalars times a float32 ramp
    ramp = (torch.arange(max(hv, wv), dtype=torch.float32, device=img.device) + 0.5)[None]
    u = ramp[:, :wv] * sc.float()[:, None] + x0.float()[:, None]
    v = ramp[:, :hv] * sc.float()[:, None] + y0.float()[:, None]
    gx = (u / w * 2 - 1)[:, None, :].expand(n, hv, wv)
    gy = (v / h * 2 - 1)[:, :, None].expand(n, hv, wv)
    out = F.grid_sample(img.float(), torch.stack((gx, gy), -1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return Rectified(out.clamp_(0, 255).round_(), x0, y0, sc)


def block_indices(rect: Rectified, input_size, out_size) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (N,Ho), columns (N,Wo)) of each rectified image's 8x8 block under the centre of each cell
    of an out_size grid over the input (H, W)."""
    (h, w), (ho, wo) = input_size, out_size
    hv, wv = rect.image.shape[-2:]
    dev = rect.image.device
    ys = ((torch.arange(ho, dtype=torch.float64, device=dev) + 0.5) * h / ho)[None] - rect.y0[:, None]
    xs = ((torch.arange(wo, dtype=torch.float64, device=dev) + 0.5) * w / wo)[None] - rect.x0[:, None]
    ys, xs = ys / rect.scale[:, None], xs / rect.scale[:, None]
    return (ys // 8).long().clamp_(0, hv // 8 - 1), (xs // 8).long().clamp_(0, wv // 8 - 1)
