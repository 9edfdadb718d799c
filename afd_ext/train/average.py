"""``afd average``: the weighted mean, tensor by tensor, of AFD checkpoints of one module and backbone
(a weight average: averaging a fine-tuned model with the model it started from, WiSE-FT, Wortsman et
al. CVPR 2022; several fine-tunes of one start, "model soups", Wortsman et al. ICML 2022). The mean
only makes sense for checkpoints of one lineage (one started from the other, or both from one
start): their weights lie in one basin. The result records its sources and weights (``average``),
every source and their ancestors in ``lineage``, as ``data.lineage_holdout_files`` the labelled images
that every source's lineage held out, and as ``data.holdout_files`` those every source's own run held
out."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


def average_checkpoints(paths: Sequence, out, weights: Optional[Sequence[float]] = None,
                        backbone: str = "efficientnet_lite0") -> dict:
    """Save as ``out`` the weighted mean of the checkpoints ``paths`` (paths or release names of
    ``backbone``; default weights: equal). Floating-point tensors are averaged; the others (the
    batch-norm step counters) are the first checkpoint's. The checkpoints must share backbone,
    module config and tensor names and shapes (ValueError naming the first difference); training
    state (optimizer moments) is not carried, so the result is not a run to resume. Returns the
    record stored in the config under ``average``."""
    from ..models.checkpoint import load_checkpoint, save_checkpoint
    from .lineage import held_out_by_lineage, resolve_checkpoint, weights_sha256
    from .run_folder import portable_path
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weight(s) for {len(paths)} checkpoints; give one weight per checkpoint")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights}")
    total = sum(weights)
    weights = [w / total for w in weights]
    files = [resolve_checkpoint(p, backbone) for p in paths]
    afd, config = load_checkpoint(files[0])
    states, configs = [afd.state_dict()], [config]
    for f in files[1:]:
        other, cfg = load_checkpoint(f)
        if cfg.get("backbone") != config.get("backbone"):
            raise ValueError(f"{f}: trained for backbone {cfg.get('backbone')!r}, {files[0]} for "
                             f"{config.get('backbone')!r}; only checkpoints of one classifier can be averaged")
        if other.config != afd.config:
            raise ValueError(f"{f}: module config {other.config} differs from {files[0]}'s {afd.config}; "
                             "only checkpoints of one module can be averaged")
        states.append(other.state_dict())
        configs.append(cfg)
    mean = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            mean[name] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for w, state in zip(weights, states):
            acc += w * state[name].double()
        mean[name] = acc.to(first.dtype)
    afd.load_state_dict(mean)
    record = {"sources": [portable_path(p) for p in paths], "weights": weights}
    lineage, seen = [], set()
    for p, f, cfg in zip(paths, files, configs):
        for entry in [{"checkpoint": portable_path(p), "weights_sha256": weights_sha256(f)}, *cfg.get("lineage", [])]:
            if entry["weights_sha256"] not in seen:
                seen.add(entry["weights_sha256"])
                lineage.append(entry)
    held = [held_out_by_lineage(cfg) for cfg in configs]
    config = {k: v for k, v in config.items() if k not in ("gate_fit",)}
    config["average"] = record
    config["lineage"] = lineage
    data = {**config.get("data", {}), "lineage_holdout_files":
            None if any(h is None for h in held) else sorted(set.intersection(*held))}
    own = [cfg.get("data", {}).get("holdout_files") for cfg in configs]
    if all(o is not None for o in own):  # what no source's own run trained on
        data["holdout_files"] = sorted(set.intersection(*(set(o) for o in own)))
    else:
        data.pop("holdout_files", None)
    config["data"] = data
    save_checkpoint(out, afd, config)
    return record
