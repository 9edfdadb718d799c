"""The training objective and schedule: the L1 feature loss, the KL to the clean logits, the optional
cross-entropy and the gate's loss (``afd_loss``), and the learning rate at each step (warm-up, cosine)."""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .dataset import NO_GATE_TARGET
from .phases import _phase


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def afd_loss(model, clean: torch.Tensor, comp: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
             afd=None, autocast: Optional[torch.dtype] = None,
             gate_targets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """The training objective; ``afd`` may be a DDP wrapper of ``model.afd``. ``autocast``: the dtype
    the frozen classifier's stem and rest run in (None: their own); the AFD and losses stay float32."""
    from .. import reference
    afd = afd if afd is not None else model.afd
    device_type = clean.device.type

    def classifier_ctx():
        return torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    # The classifier is frozen: its stem and the clean logits need no graph. The clean and degraded
    # crops go through the stem in one call (the same per-sample op, one batch).
    with _phase("teacher"), torch.no_grad(), classifier_ctx():
        b = clean.shape[0]
        both = torch.cat([clean, comp]) if clean.dtype == comp.dtype else None
        if both is not None:
            feats, pixels = model.stem_features(both)
            feat_clean, feat, pixels = feats[:b], feats[b:], pixels[b:]
        else:
            (feat_clean, _), (feat, pixels) = model.stem_features(clean), model.stem_features(comp)
        target = reference.apply_act(feat_clean.float(), model.adapter.act)
        logits_clean = model.adapter.rest(target).float() if (cfg.kl_weight > 0) else None
    with _phase("student"):
        gated = model.afd.gate_mode != "none"
        out = afd(feat.float(), pixels, return_gate=True) if gated else afd(feat.float(), pixels)
        z = None
        if gated:
            out, z = out
        losses = {"l1": F.l1_loss(out, target)}
        if z is not None and cfg.gate_weight > 0 and gate_targets is not None:
            known = gate_targets != NO_GATE_TARGET
            if bool(known.any()):
                losses["gate"] = F.binary_cross_entropy_with_logits(z[known].float(), gate_targets[known].float())
        if cfg.kl_weight > 0 or cfg.ce_weight > 0:
            with classifier_ctx():
                logits = model.adapter.rest(out).float()
            if cfg.kl_weight > 0:
                t = cfg.kl_temperature
                losses["kl"] = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(logits_clean / t, 1),
                                        log_target=True, reduction="batchmean") * t * t
            if cfg.ce_weight > 0 and bool((labels >= 0).any()):
                losses["ce"] = F.cross_entropy(logits, labels, ignore_index=-1)
        total = cfg.l1_weight * losses["l1"] + cfg.kl_weight * losses.get("kl", 0.0) + cfg.ce_weight * losses.get(
            "ce", 0.0) + cfg.gate_weight * losses.get("gate", 0.0)
    return total, {k: float(v.detach()) for k, v in losses.items()}
