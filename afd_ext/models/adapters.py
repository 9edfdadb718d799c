"""Backbone adapters: where a classifier's stem ends, the stem's activation and width, and the
normalization its input needs (``find_adapter``).

An adapter splits the classifier into ``stem`` (up to the stem's output activation, excluded), the
stem activation, and ``rest``. Adapters only *call* the classifier's layers (skipping the stem
activation themselves); they never replace or reconfigure them, so the classifier a user hands over
computes exactly what it did before.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
import torch.nn as nn

from ..modules import act_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Adapter:
    """How to run a classifier around the AFD.

    stem: normalized image -> stem features before the activation.
    rest: activated stem features -> logits.
    act: 'relu' | 'relu6' | 'identity' (the de-drift applies it; anything else stays in ``rest``).
    mean, std: per-channel normalization on 0..1 pixels.
    channels: stem width; stride: stem stride (for information).
    """
    name: str
    stem: Callable[[torch.Tensor], torch.Tensor]
    rest: Callable[[torch.Tensor], torch.Tensor]
    act: str
    channels: int
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    stride: int = 2


def _split_act(module: nn.Module) -> tuple[str, Callable]:
    """(act name for the de-drift, what ``rest`` must still apply before its own layers): an
    activation the de-drift knows is applied by it, anything else stays at the start of ``rest``."""
    name = act_name(module)
    return name, _identity if name != "identity" else module


def _identity(x):
    return x


# Stems and rests are module-level functions bound with functools.partial (not closures), so
# that copy.deepcopy of an AFDClassifier binds them to the copied classifier, not the original.
def _bn_act_stem(conv: nn.Module, bn_act: nn.Module, x):
    """conv -> timm BatchNormAct2d without its activation (bn -> drop)."""
    return bn_act.drop(nn.BatchNorm2d.forward(bn_act, conv(x)))


def _repvgg_stem(block: nn.Module, x):
    """timm RepVggBlock.forward without its final activation."""
    if block.reparam_conv is not None:
        return block.attn(block.reparam_conv(x))
    y = block.conv_1x1(x) + block.conv_kxk(x)
    if block.identity is not None:
        y = block.drop_path(y) + block.identity(x)
    return block.attn(y)


def _first_conv_out(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.out_channels
    raise ValueError("no Conv2d in the stem")


def _adapt_efficientnet_lite(model) -> Adapter:
    from .backbones.efficientnet_lite import MEAN_255, STD_255
    act = act_name(model.stem_act)
    return Adapter("efficientnet_lite", model.stem, model.forward_rest, act, model._conv_stem.out_channels,
                   mean=(MEAN_255 / 255,) * 3, std=(STD_255 / 255,) * 3)


def _adapt_torchvision_resnet(model) -> Adapter:
    act, pre = _split_act(model.relu)
    stem = nn.Sequential(model.conv1, model.bn1)
    # model.relu is used only in the stem of torchvision ResNets (blocks own their ReLUs).
    return Adapter("torchvision_resnet", stem, functools.partial(_resnet_rest, model, pre), act,
                   model.conv1.out_channels)


def _resnet_rest(model, pre, x):
    x = model.maxpool(pre(x))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return model.fc(torch.flatten(model.avgpool(x), 1))


def _mobilenet_rest(model, pre, x):
    x = model.features[1:](pre(x))
    pool = getattr(model, "avgpool", None)  # MobileNetV3 has one; V2 pools functionally
    x = pool(x) if pool is not None else nn.functional.adaptive_avg_pool2d(x, 1)
    return model.classifier(torch.flatten(x, 1))


def _timm_efficientnet_rest(model, pre, x):
    x = model.blocks(pre(x))
    if hasattr(model, "bn2"):  # EfficientNet: head conv in forward_features; MobileNetV3: in forward_head
        x = model.bn2(model.conv_head(x))
    return model.forward_head(x)


def _timm_byobnet_rest(model, pre, x):
    return model.forward_head(model.final_conv(model.stages(pre(x))))


def _adapt_torchvision_mobilenet(model) -> Adapter:
    first = model.features[0]  # Conv2dNormActivation(conv, bn, act)
    act_module = first[2] if len(first) > 2 else nn.Identity()
    act = act_name(act_module)
    stem = nn.Sequential(first[0], first[1])
    pre = _identity if act != "identity" else act_module
    return Adapter(type(model).__name__.lower(), stem, functools.partial(_mobilenet_rest, model, pre), act,
                   first[0].out_channels)


def _adapt_timm_efficientnet(model) -> Adapter:
    act, pre = _split_act(model.bn1.act)  # timm BatchNormAct2d: bn -> drop -> act
    stem = functools.partial(_bn_act_stem, model.conv_stem, model.bn1)
    rest = functools.partial(_timm_efficientnet_rest, model, pre)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return Adapter("timm_efficientnet", stem, rest, act, model.conv_stem.out_channels,
                   mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))


def _adapt_timm_byobnet(model) -> Adapter:
    act, pre = _split_act(model.stem.act)  # RepVGG stem block: branches -> act
    rest = functools.partial(_timm_byobnet_rest, model, pre)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return Adapter("timm_repvgg", functools.partial(_repvgg_stem, model.stem), rest, act, _first_conv_out(model.stem),
                   mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))


def find_adapter(model: nn.Module) -> Adapter:
    """The adapter for a known architecture; a ValueError saying how to pass stem/rest otherwise."""
    from .backbones.efficientnet_lite import EfficientNetLite
    cls = type(model).__name__
    mod = type(model).__module__
    if isinstance(model, EfficientNetLite):
        return _adapt_efficientnet_lite(model)
    if mod.startswith("torchvision.models.resnet") and cls == "ResNet":
        return _adapt_torchvision_resnet(model)
    if mod.startswith("torchvision.models.mobilenet") and cls in ("MobileNetV2", "MobileNetV3"):
        return _adapt_torchvision_mobilenet(model)
    if mod.startswith("timm") and hasattr(model, "conv_stem") and hasattr(
            getattr(model, "bn1", None), "act"):
        return _adapt_timm_efficientnet(model)
    if mod.startswith("timm") and hasattr(model, "stem") and hasattr(model, "stages") and hasattr(
            getattr(model, "stem"), "act"):
        return _adapt_timm_byobnet(model)
    raise ValueError(
        f"afd_ext does not know where the stem of {mod}.{cls} ends. Pass it explicitly: "
        "attach(model, stem=<callable: normalized images -> stem features before the activation>, "
        "rest=<callable: activated stem features -> logits>, act='relu'|'relu6'|'identity', channels=<stem width>, "
        "mean=..., std=...)")
