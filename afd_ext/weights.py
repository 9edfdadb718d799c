"""``afd_ext.weights``, the path the README documents (``afd_ext.weights.list_releases``): the public
names of :mod:`afd_ext.models.weights`, the package that ships the AFD checkpoints."""
from .models.weights import RELEASES, list_releases, shipped_checkpoint  # noqa: F401
