"""``afd_ext.timm_models``, the path the README documents (``afd_ext.timm_models.register()``): the
public names of :mod:`afd_ext.models.timm_registry`, the AFD models in timm's registry."""
from .models.timm_registry import register, register_if_timm_loaded  # noqa: F401
