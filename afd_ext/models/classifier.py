"""Plug the AFD module into a pre-trained classifier: ``attach(classifier) -> AFDClassifier``.

A backbone adapter (``adapters.find_adapter``) splits the classifier into ``stem``, the stem
activation and ``rest``, and knows the input normalization. The AFD sits between:
``rest(AFD(stem(x), image))``. The classifier a user hands over computes exactly what it did before.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..modules import AFDModule, check_weight_dtype
from .adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, find_adapter


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

    def head(self, feat: torch.Tensor, pixels: torch.Tensor, use_afd: bool = True,
             fdm: Optional[torch.Tensor] = None, return_gate: bool = False):
        """De-drift (or only activate) the stem features, then the rest of the classifier.
        ``fdm``: the FDM to use instead of the one estimated from the pixels (``file_fdm``).
        ``return_gate``: (logits, the gate logits (B,) the AFD used, or None: no gate, no AFD, or
        ``fdm`` given)."""
        from .. import reference
        z = None
        if use_afd and self.afd is not None:
            if fdm is None:
                out, z = self.afd(feat, pixels, return_gate=True)
            else:
                out = self.afd(feat, pixels, fdm=fdm)
        else:
            out = reference.apply_act(feat, self.adapter.act)
        logits = self.adapter.rest(out)
        return (logits, z) if return_gate else logits

    @torch.no_grad()
    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """(Hf, Wf) of the stem's features for a height x width input (the stem run once on zeros
        of that size, then remembered)."""
        cache = self.__dict__.setdefault("_feature_sizes", {})
        if (height, width) not in cache:
            ref = next(self.classifier.parameters(), self.mean)
            with _eval_mode(self.classifier):
                x = torch.zeros((1, 3, height, width), dtype=self.input_dtype(), device=ref.device)
                cache[(height, width)] = tuple(self.adapter.stem(x).shape[-2:])
        return cache[(height, width)]

    def file_fdm(self, sources, crop: int, resize="auto") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The FDM for inputs made from decoded files by the evaluation transform, estimated on each
        file's own 8x8 grid (``AFDModule.file_fdm``): ``sources`` uint8 (3,H,W) each, ``crop`` the
        input's size, ``resize`` the transform's short side ('auto': ``pretrained_cfg``'s, else 256;
        None: the input is a centre crop of the file as it is). Returns (the FDM for
        ``model(inputs, fdm=...)``, the gate's logits (B,) or None)."""
        from ..data.transforms import RESIZE
        if self.afd is None:
            raise ValueError("file_fdm needs a model with an AFD module")
        if resize == "auto":
            resize = self.pretrained_cfg.get("resize", RESIZE)
        ref = next(self.afd.parameters())
        # a source that is not a tensor goes on as it is: AFDModule.file_fdm names the problem
        sources = [s.to(ref.device) if isinstance(s, torch.Tensor) else s for s in sources]
        return self.afd.file_fdm(sources, self.feature_size(crop, crop), crop, resize, dtype=self.input_dtype())

    def transforms(self):
        """PIL image / uint8 tensor -> this model's input, as ``afd eval`` makes it
        (``pretrained_cfg`` gives the sizes; models not made by ``create_model`` use 256/224)."""
        from ..data.transforms import CROP, RESIZE, EvalTransform
        cfg = self.pretrained_cfg
        return EvalTransform(cfg.get("resize", RESIZE), cfg.get("input_size", (3, CROP, CROP))[-1])

    def train(self, mode: bool = True) -> "AFDClassifier":
        self.training = mode
        if self.afd is not None:
            self.afd.train(mode)
        return self

    def forward(self, images: torch.Tensor, use_afd: Optional[bool] = None,
                fdm: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits for images. ``fdm``: side information, the FDM ``file_fdm`` estimated on the files
        the images were cut from, used instead of the images' own."""
        with _eval_mode(self.classifier):
            feat, pixels = self.stem_features(images)
            return self.head(feat, pixels, self.use_afd if use_afd is None else use_afd, fdm)

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
