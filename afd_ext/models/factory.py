"""The model factory: ``create_model(name) -> AFDClassifier``, over the registry (``registry.py``).

The one place a classifier + AFD is built (the CLI, the pipeline, export, benchmarks,
training, the demo and evaluation all come here), in the vocabulary of timm and torchvision:
the returned model carries ``pretrained_cfg`` (how its input is made), ``meta`` (what the
weights are and what they were measured to do) and ``transforms()`` (a PIL image or a uint8
tensor -> the model's input, exactly as ``afd eval`` makes it).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from ..benchmark.flops import n_params
from ..modules import AFDModule
from .adapters import find_adapter
from .checkpoint import load_checkpoint
from .classifier import AFDClassifier, attach
from .registry import ModelSpec, model_spec
from .weights import list_releases, shipped_checkpoint


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_card(checkpoint: Optional[Path]) -> dict:
    """What was measured for a checkpoint (``NAME.card.json`` beside it: GFLOPs, held-out
    accuracy per protocol with n); empty when nothing was recorded."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint).with_suffix(".card.json")
    return json.loads(path.read_text()) if path.exists() else {}


def _meta(model: AFDClassifier, spec: ModelSpec, checkpoint: Optional[Path], pretrained: bool) -> dict:
    from ..data.labels import imagenet_classes
    return {
        "name": spec.name, "description": spec.description, "pretrained": pretrained,
        "categories": [name for _, name in imagenet_classes()] if spec.num_classes == 1000 else None,
        "classifier_params": n_params(model.classifier), "afd_params": n_params(model.afd),
        "checkpoint": None if checkpoint is None else checkpoint.name,
        "checkpoint_sha256": None if checkpoint is None else _sha256(checkpoint),
        **{k: v for k, v in model_card(checkpoint).items() if k in ("gflops", "accuracy")},
    }


def create_model(name: str = "efficientnet_lite0", *, pretrained: bool = True,
                 afd: Union[bool, AFDModule, dict] = True, checkpoint: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[Union[str, torch.device]] = None) -> AFDClassifier:
    """A classifier with the AFD after its stem, in eval mode.

    Args:
        name: one of ``list_models()``.
        pretrained: the classifier's ImageNet weights (else a random init).
        afd: ``True``: the AFD of ``checkpoint``, or the checkpoint shipped for ``name``;
            ``False``: no AFD (the classifier alone, in the same wrapper and input contract);
            an ``AFDModule``: that module; a dict: a new, untrained ``AFDModule`` with these
            options (``width``, ``fdm``, ``block``, ...), which leaves the logits unchanged.
        checkpoint: an AFD checkpoint (.safetensors) to load instead of the shipped one, or the name
            of an earlier shipped release (``afd_ext.weights.list_releases(name)``, e.g. "v1").
        device: where the model goes (default: stays on the CPU).

    The model has ``pretrained_cfg`` (timm's keys; ``mean``/``std`` are those of the input the
    wrapper takes: 0..1 floats or uint8, it normalizes itself), ``meta`` (categories,
    parameter counts, checkpoint file and sha256, the GFLOPs and held-out accuracy recorded for
    it in its card) and ``transforms()``; ``checkpoint_path`` is the loaded checkpoint (or None).
    """
    spec = model_spec(name)
    if checkpoint is not None and afd is not True:
        raise ValueError("checkpoint= loads an AFD: it needs afd=True")
    path: Optional[Path] = None
    if afd is True:
        # Before the classifier is built: a model no AFD ships for (ResNet-50, Lite1, Lite2 today) is
        # the FileNotFoundError saying how to train one, not a weights download or a missing wheel.
        if checkpoint is None or str(checkpoint) in list_releases(spec.name):  # a release name: "v1", "v2"
            path = shipped_checkpoint(spec.name, None if checkpoint is None else str(checkpoint))
        else:
            path = Path(checkpoint)
    classifier = spec.build(pretrained)
    adapter = find_adapter(classifier)
    module: Optional[AFDModule] = None
    if afd is True:
        module, _ = load_checkpoint(path, backbone=spec.name, channels=adapter.channels)
    elif isinstance(afd, AFDModule):
        module = afd
    elif isinstance(afd, dict):
        module = AFDModule(adapter.channels, act=adapter.act, **afd)
    elif afd is not False:
        raise TypeError(f"afd must be True, False, an AFDModule or a dict of AFDModule options, got {afd!r}")
    model = attach(classifier, afd=module) if module is not None else _without_afd(classifier, adapter)
    model.eval()
    model.name = spec.name
    model.checkpoint_path = None if path is None else str(path)
    model.pretrained_cfg = {
        "architecture": f"afd_{spec.name}", "input_size": spec.input_size, "interpolation": spec.interpolation,
        "crop_pct": spec.input_size[-1] / spec.resize, "crop_mode": "center",
        "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "num_classes": spec.num_classes,
        "input_dtype": "uint8 0..255 or float 0..1", "resize": spec.resize,
    }
    model.meta = _meta(model, spec, path, pretrained)
    if device is not None:
        model = model.to(device)
    return model


def _without_afd(classifier: nn.Module, adapter) -> AFDClassifier:
    model = AFDClassifier(classifier, None, adapter)
    model.use_afd = False
    return model
