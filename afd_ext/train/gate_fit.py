"""Fitting the whole-image gate's head on its own (``afd fit-gate``): a logistic regression of
"this image should be corrected" on the gate's 192 statistics (``reference.gate_statistics``), on
the classifier inputs that ``afd eval``'s protocols make from training photos.

Why a second stage: trained jointly with the correction (``--gate-weight``), the head learns from
random training crops and from the L1/KL gradients as well as its own loss; v3's opened on 29% of
clean decision-set photos and gave inputs resized after compression a mean gate value of 0.32 (on
training photos). Fitted on the protocols' own inputs, the same 193 numbers separate the two sides
far better (docs/accuracy.md). The correction (FDE-Net, FE-Net) is left as
it is; only ``gate_head`` changes.

Targets follow the joint training's (``dataset.gate_target``): closed (0) for clean inputs and
compression at quality >= GATE_CLOSED_FROM, open (1) up to GATE_OPEN_UP_TO. The regression weighs
both sides equally, and its bias is then lowered until at most CLOSED_OPEN_PERCENT of the closed
samples open: a wrong "open" costs the classifier's own answer, a wrong "closed" only a correction.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from .. import block_grid, data, reference
from ..modules import GRIDS
from .dataset import GATE_CLOSED_FROM, GATE_OPEN_UP_TO

# The inputs a photo gives (each of afd eval's protocol x codec), and the qualities drawn for them.
SETTINGS = tuple((p, c) for c in data.CODECS for p in data.PROTOCOLS)
MILD_QUALITIES = (GATE_CLOSED_FROM, 95)  # closed
OPEN_QUALITIES = (5, GATE_OPEN_UP_TO)    # open
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)       # penalties tried, chosen on photos left out of the fit
VALIDATION_FRACTION = 0.25
# At most this % of the closed samples (clean, q >= GATE_CLOSED_FROM) may open: the bias is lowered
# to it after the fit. Chosen on training photos (validation split): 2% kept the gate open on 92-100%
# of inputs compressed at q <= 25 under every protocol (mean gate value 0.74-0.99).
CLOSED_OPEN_PERCENT = 2.0


@dataclass
class GateSamples:
    """Gate statistics (N,192) float64, targets (N,) 0/1, each sample's photo index, kind and lowest
    quality (0: clean)."""
    stats: torch.Tensor
    targets: torch.Tensor
    photo: torch.Tensor
    kinds: list = field(default_factory=list)
    qualities: Optional[torch.Tensor] = None


def _stats(img, grid: str = "input") -> torch.Tensor:
    """The gate's statistics of one classifier input where a module of this ``grid`` reads them:
    'detect' reads an input whose JPEG grid a resize moved on that grid (``block_grid.rectify``,
    whose virtual sizes are whole blocks), as ``AFDModule`` does."""
    x = data.to_tensor(img)[None]
    if grid == "detect":
        found = block_grid.detect_block_grid(x)
        if bool(found.shifted[0]):
            x = block_grid.rectify(x, found.period, found.offset_x, found.offset_y).image
    return reference.gate_statistics(x, torch.float64)[0]


def gate_samples(files: Sequence[Path], seed: int = 0, progress: bool = True, grid: str = "input") -> GateSamples:
    """Per photo: the clean input (target closed); one mildly compressed JPEG per protocol at a
    quality drawn from MILD_QUALITIES (closed); one compressed input per (protocol, codec) at a
    quality drawn from OPEN_QUALITIES (open), and one compressed twice (open); each input's
    statistics read where a module of ``grid`` reads them. Unreadable files are skipped.
    Deterministic in (files, seed, grid)."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    rng = random.Random(seed)
    stats, targets, photo, kinds, qualities = [], [], [], [], []

    def add(qs, protocol, codec, target, kind, i):
        stats.append(_stats(data.degrade(img, qs, protocol, codec) if qs else data.resize_center_crop(img), grid))
        targets.append(float(target))
        photo.append(i)
        kinds.append(kind)
        qualities.append(min(qs) if qs else 0)
    for i, path in enumerate(tqdm(files, desc="gate samples", unit="photo", disable=not progress, file=sys.stderr)):
        try:
            img = data.load_image(path)
        except data.ImageError:
            continue
        add([], None, None, 0, "clean", i)
        for protocol in data.PROTOCOLS:
            add([rng.randint(*MILD_QUALITIES)], protocol, "jpeg", 0, f"mild-{protocol}", i)
        for protocol, codec in SETTINGS:
            add([rng.randint(*OPEN_QUALITIES)], protocol, codec, 1, f"{protocol}-{codec}", i)
        protocol = rng.choice(data.PROTOCOLS)
        add([rng.randint(*OPEN_QUALITIES) for _ in range(2)], protocol, "jpeg", 1, f"twice-{protocol}", i)
    if not stats:
        raise ValueError("no readable photo to fit the gate on")
    return GateSamples(torch.stack(stats), torch.tensor(targets, dtype=torch.float64),
                       torch.tensor(photo), kinds, torch.tensor(qualities))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float,
                 weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (1,F), bias (1,)) minimizing the ``weights``-weighted mean BCE(x w + b, y) +
    l2 |w s|^2, where s are the features' standard deviations (the penalty of a fit on
    standardized features), float64."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    weights = torch.ones_like(y) if weights is None else weights
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y, reduction="none")
        loss = (bce * weights).sum() / weights.sum() + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        weight = (w / std)[None]
        bias = (b - (w * mean / std).sum())[None]
    return weight, bias


def _balanced(y: torch.Tensor) -> torch.Tensor:
    """Sample weights giving the open and the closed side the same total weight."""
    n_open = float(y.sum())
    return torch.where(y == 1, (y.numel() - n_open) / max(n_open, 1.0), 1.0).double()


def _closed_margin(weight, bias, x, y, closed_open: float) -> torch.Tensor:
    """The bias lowered (never raised) until at most ``closed_open`` % of the closed samples open."""
    z = (x[y == 0] @ weight[0] + bias).sort(descending=True).values
    k = int(z.numel() * closed_open / 100.0)  # may stay open; z > z[k] holds for at most k of them
    if k >= z.numel():
        return bias
    return bias - max(float(z[k]), 0.0)


def _bce(weight, bias, x, y) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(x @ weight[0] + bias, y))


def open_rates(weight, bias, samples: GateSamples, mask: Optional[torch.Tensor] = None,
               max_quality: Optional[int] = None) -> dict:
    """Per sample kind: % of samples whose gate opens (z > 0) and the mean gate value (compressed
    kinds: those at a quality <= ``max_quality`` only, when given)."""
    z = samples.stats @ weight[0].double() + bias.double()
    mask = torch.ones_like(z, dtype=torch.bool) if mask is None else mask
    out = {}
    for kind in sorted(set(samples.kinds)):
        m = mask & torch.tensor([k == kind for k in samples.kinds])
        if max_quality is not None and samples.qualities is not None:
            m &= (samples.targets == 0) | (samples.qualities <= max_quality)
        if bool(m.any()):
            out[kind] = {"open": 100.0 * float((z[m] > 0).double().mean()),
                         "mean": float(reference.gate_value(z[m]).mean()), "n": int(m.sum())}
    return out


def fit_gate_head(samples: GateSamples, l2_grid: Sequence[float] = L2_GRID,
                  validation_fraction: float = VALIDATION_FRACTION, closed_open: float = CLOSED_OPEN_PERCENT,
                  seed: int = 0) -> dict:
    """A class-balanced logistic regression whose penalty is chosen by the BCE on a fraction of the
    photos left out of the fit, then refitted on all of them; its bias is then lowered until at most
    ``closed_open`` % of the closed samples open (the margin that keeps the correction off clean and
    mildly compressed images). Returns weight (1,192), bias (1,), the chosen ``l2`` and a report:
    per penalty the validation BCE, and the open rates on the validation photos of the fit on the
    others with its own margin (an estimate of how the final head behaves on photos it never saw)."""
    photos = sorted(set(samples.photo.tolist()))
    random.Random(seed).shuffle(photos)
    n_val = max(1, round(len(photos) * validation_fraction)) if len(photos) > 1 else 0
    val = torch.isin(samples.photo, torch.tensor(photos[:n_val], dtype=samples.photo.dtype))
    fit = ~val
    if not bool(val.any()) or len(set(samples.targets[fit].tolist())) < 2:
        raise ValueError("fitting the gate needs at least two readable photos, with closed and open samples")
    x, y = samples.stats, samples.targets
    scores = {}
    for l2 in l2_grid:
        w, b = fit_logistic(x[fit], y[fit], l2, _balanced(y[fit]))
        scores[l2] = _bce(w, b, x[val], y[val])
    best = min(scores, key=scores.get)
    w, b = fit_logistic(x[fit], y[fit], best, _balanced(y[fit]))
    b = _closed_margin(w, b, x[fit], y[fit], closed_open)
    report = {"validation_bce": {str(k): v for k, v in scores.items()}, "l2": best, "closed_open_percent": closed_open,
              "validation_photos": n_val, "fit_photos": len(photos) - n_val,
              "validation_open": open_rates(w, b, samples, val),
              "validation_open_q25_and_below": open_rates(w, b, samples, val, max_quality=25)}
    weight, bias = fit_logistic(x, y, best, _balanced(y))
    bias = _closed_margin(weight, bias, x, y, closed_open)
    return {"weight": weight.float(), "bias": bias.float(), "l2": best, "report": report}


def refit_gate(checkpoint, paths: Sequence, out, *, holdout: Optional[float] = None, seed: int = 0,
               progress: bool = True, grid: Optional[str] = None) -> dict:
    """``afd fit-gate``: the AFD of ``checkpoint`` with its gate head fitted on the training photos
    in ``paths`` (the labelled images whose name hash is below ``holdout`` are left out; default:
    the checkpoint's own training hold-out, so a decision set it never saw stays unseen), saved as
    ``out`` (.safetensors + .json; the config records the fit). ``grid``: where the statistics are
    read (``modules.GRIDS``; 'detect': on each input's detected JPEG grid, where a module set to it
    reads its gate); None: 'input', the fit of every release before v16-grid-detectfit. Returns the fit's record."""
    from ..models.checkpoint import load_checkpoint, save_checkpoint
    from .dataset import split_files
    from .lineage import lineage_record
    from .run_folder import portable_path
    afd, config = load_checkpoint(checkpoint)
    if afd.gate_head is None:
        raise ValueError(f"{checkpoint}: this AFD has no whole-image gate (module gate 'none'): nothing to fit")
    recipe_holdout = config.get("recipe", {}).get("holdout")
    holdout = recipe_holdout if holdout is None else holdout
    if holdout is None:
        raise ValueError(f"{checkpoint}: the checkpoint records no training hold-out; pass holdout")
    if not 0.0 <= float(holdout) < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    train_files, held = split_files(paths, float(holdout))
    grid = "input" if grid is None else grid
    samples = gate_samples(train_files, seed=seed, progress=progress, grid=grid)
    fit = fit_gate_head(samples, seed=seed)
    with torch.no_grad():
        afd.gate_head.weight.copy_(fit["weight"])
        afd.gate_head.bias.copy_(fit["bias"])
    record = {"source": portable_path(checkpoint), "data": [portable_path(p) for p in paths],
              "holdout": float(holdout), "held_out_files": len(held), "photos": int(len(set(samples.photo.tolist()))),
              "samples": int(samples.targets.numel()), "seed": seed, "grid": grid, **fit["report"],
              "open_qualities": list(OPEN_QUALITIES), "mild_qualities": list(MILD_QUALITIES)}
    lineage = lineage_record(checkpoint, config.get("backbone", ""), {f.name for f in held})
    config["gate_fit"] = record
    config["lineage"] = lineage["lineage"]
    config["data"] = {**config.get("data", {}), "lineage_holdout_files": lineage["lineage_holdout_files"]}
    save_checkpoint(out, afd, config)
    return record
