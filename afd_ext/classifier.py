"""Plug the AFD module into a pre-trained classifier: ``attach(classifier) -> AFDClassifier``.

A backbone adapter splits the classifier into ``stem`` (up to the stem's output
activation, excluded), the stem activation, and ``rest``, and knows the input
normalization. The AFD sits between: ``rest(AFD(stem(x), image))``. Adapters only *call*
the classifier's layers (skipping the stem activation themselves); they never replace or
reconfigure them, so the classifier a user hands over computes exactly what it did before.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Optional

import torch
import torch.nn as nn

from .modules import AFDModule, act_name, check_weight_dtype

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


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Run ``module`` in eval mode and put back the modes it had: a classifier handed over in
    training mode (a fresh torchvision model is) must neither use batch statistics nor update them."""
    if not any(m.training for m in module.modules()):
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class AFDClassifier(nn.Module):
    """A classifier with the AFD module after its stem.

    Input: RGB images (B,3,H,W), float in [0,1] (any floating dtype: converted to the
    classifier's weight dtype) or uint8 in [0,255], any size (the AFD pads to multiples of 8
    for the DCT). It normalizes for the classifier itself.
    ``afd=None`` in forward-less form (``use_afd=False``) gives the plain classifier.

    The classifier is frozen inside the wrapper: it always runs in eval mode (its BatchNorm
    statistics never move), whatever mode the wrapper is in; ``train()`` only reaches the AFD.
    """

    def __init__(self, classifier: nn.Module, afd: Optional[AFDModule], adapter: Adapter):
        super().__init__()
        self.classifier = classifier
        self.afd = afd
        self.adapter = adapter
        self.register_buffer("mean", torch.tensor(adapter.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(adapter.std).view(1, 3, 1, 1), persistent=False)
        self.use_afd = True
        # Filled by afd_ext.create_model (the factory); a model made by attach() keeps these defaults.
        self.name: Optional[str] = None
        self.pretrained_cfg: dict = {}
        self.meta: dict = {}
        self.checkpoint_path: Optional[str] = None

    @staticmethod
    def to_pixels(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (0..255) or float (0..1) images -> float pixels in 0..255."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.to(dtype)
        if not images.is_floating_point():
            raise TypeError(f"images must be uint8 (0..255) or floating (0..1), got {images.dtype}")
        return images.to(dtype) * 255.0

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels 0..255 -> the classifier's normalized input."""
        return (pixels / 255.0 - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def input_dtype(self) -> torch.dtype:
        """The dtype images are converted to: the classifier's weights' (the wrapper's buffers'
        when it has no floating parameter)."""
        for p in self.classifier.parameters():
            if p.is_floating_point():
                return p.dtype
        return self.mean.dtype

    def stem_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stem features before activation, the image 0..255 for the AFD) for images. A uint8
        input is handed to the AFD as it is (its FDE op reads 1 byte a pixel); floats of any
        floating dtype as pixels in the classifier's weight dtype (a float64 or float16 image
        into float32 convolutions would stop with a dtype mismatch)."""
        pixels = self.to_pixels(images, self.input_dtype())
        return self.adapter.stem(self.normalize(pixels)), images if images.dtype == torch.uint8 else pixels

    def head(self, feat: torch.Tensor, pixels: torch.Tensor, use_afd: bool = True) -> torch.Tensor:
        """De-drift (or only activate) the stem features, then the rest of the classifier."""
        from . import reference
        if use_afd and self.afd is not None:
            out = self.afd(feat, pixels)
        else:
            out = reference.apply_act(feat, self.adapter.act)
        return self.adapter.rest(out)

    def transforms(self):
        """PIL image / uint8 tensor -> this model's input, as ``afd eval`` makes it
        (``pretrained_cfg`` gives the sizes; models not made by ``create_model`` use 256/224)."""
        from .data import CROP, RESIZE, EvalTransform
        cfg = self.pretrained_cfg
        return EvalTransform(cfg.get("resize", RESIZE), cfg.get("input_size", (3, CROP, CROP))[-1])

    def train(self, mode: bool = True) -> "AFDClassifier":
        self.training = mode
        if self.afd is not None:
            self.afd.train(mode)
        return self

    def forward(self, images: torch.Tensor, use_afd: Optional[bool] = None) -> torch.Tensor:
        with _eval_mode(self.classifier):
            feat, pixels = self.stem_features(images)
            return self.head(feat, pixels, self.use_afd if use_afd is None else use_afd)

    def deploy(self, impl: str = "fused", dtype: Optional[torch.dtype] = None) -> "AFDClassifier":
        """The AFD in its inference form (``AFDModule.deploy``), eval mode."""
        check_weight_dtype(dtype, "AFDClassifier.deploy")
        if self.afd is not None:
            self.afd.deploy(impl, dtype)
        return self.eval()


def attach(classifier: nn.Module, afd: Optional[AFDModule] = None, *, stem: Optional[Callable] = None,
           rest: Optional[Callable] = None, act: Optional[str] = None, channels: Optional[int] = None,
           mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD, **afd_kwargs) -> AFDClassifier:
    """Wrap ``classifier`` with an AFD module after its stem.

    Known architectures are adapted automatically (torchvision ResNet / MobileNetV2/V3, timm
    EfficientNet-style ``conv_stem``+``bn1`` and RepVGG ``stem``, afd_ext's EfficientNet-Lite).
    For others pass ``stem``, ``rest``, ``act`` and ``channels``. ``afd=None`` builds a new
    ``AFDModule`` (``afd_kwargs`` go to it) that leaves the logits unchanged until trained.
    The de-drift applies the stem's own activation; the adapter skips it when it runs the stem.

    ``classifier`` is never modified: no layer is replaced and its mode and ``requires_grad``
    flags stay as they were, so calling it directly gives bit-identical outputs before and after.
    The wrapper runs it in eval mode (see ``AFDClassifier``); only the AFD is trained by
    ``afd_ext.train``, which freezes the classifier it builds itself.
    """
    if stem is not None or rest is not None:
        if stem is None or rest is None or channels is None:
            raise ValueError("pass stem=, rest= and channels= together (act= defaults to 'identity')")
        adapter = Adapter("custom", stem, rest, act or "identity", channels, tuple(mean), tuple(std))
    else:
        adapter = find_adapter(classifier)
    if afd is None:
        afd = AFDModule(adapter.channels, act=adapter.act, **afd_kwargs)
    elif afd.channels != adapter.channels or afd.act != adapter.act:
        raise ValueError(f"the AFD module was built for {afd.channels} channels and act={afd.act!r}, but the "
                         f"classifier's stem gives {adapter.channels} channels and act={adapter.act!r}")
    ref = next(classifier.parameters(), None)
    if ref is not None:
        afd = afd.to(ref.device)
    return AFDClassifier(classifier, afd, adapter)
