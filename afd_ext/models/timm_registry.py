"""The AFD models in timm's registry: ``timm.create_model("afd_efficientnet_lite0", pretrained=True)``.

timm is optional. ``import afd_ext`` registers the models when timm is already imported;
otherwise call ``afd_ext.timm_models.register()`` (idempotent; this module,
``afd_ext.models.timm_registry``, is importable under that name). The entry points build through
``afd_ext.create_model``, so the weights, ``pretrained_cfg`` and ``meta`` are the same.
"""
from __future__ import annotations

import functools
import sys

_REGISTERED: set = set()


def _entrypoint(name: str, pretrained: bool = False, checkpoint=None, device=None, **timm_kwargs):
    from .factory import create_model
    # timm passes its own bookkeeping (pretrained_cfg, cache_dir, ...): afd_ext's weights are local.
    unknown = set(timm_kwargs) - {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
    if unknown:
        raise TypeError(f"afd_{name}: unsupported options {sorted(unknown)}")
    return create_model(name, pretrained=pretrained, afd=True, checkpoint=checkpoint, device=device)


def register() -> list[str]:
    """Register ``afd_<name>`` in timm for every model afd_ext ships an AFD checkpoint for."""
    from timm.models import register_model

    from .registry import list_models
    from .weights import shipped_checkpoint
    names = []
    for name in list_models():
        try:
            shipped_checkpoint(name)
        except FileNotFoundError:
            continue
        key = f"afd_{name}"
        if key not in _REGISTERED:
            fn = functools.partial(_entrypoint, name)
            fn.__name__, fn.__module__ = key, __name__
            register_model(fn)
            _REGISTERED.add(key)
        names.append(key)
    return names


def register_if_timm_loaded() -> None:
    if "timm" in sys.modules:
        register()
