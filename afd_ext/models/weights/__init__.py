"""Checkpoints shipped with the package (safetensors + JSON config + a card).

Each backbone's releases are listed in ``RELEASES``, oldest first. The newest is the default and
ships as ``afd_<backbone>.safetensors``; earlier ones stay loadable by name and ship as
``afd_<backbone>_<release>.safetensors`` (``create_model(name, checkpoint="v1")``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

_HERE = Path(__file__).parent

#: Released AFD checkpoints per backbone, oldest first; the last one is the default.
RELEASES = {"efficientnet_lite0": ("v1", "v2", "v3", "v5-gatefit", "v6-rescale-gatefit",
                                    "v7-heavy-gatefit", "v8-224-gatefit",
                                    "v10-lr-webp-gatefit", "v11-kl-gatefit",
                                    "v12-kl3-gatefit", "v16-grid", "v16-grid-detectfit")}


def list_releases(backbone: str = "efficientnet_lite0") -> tuple[str, ...]:
    """Names of the AFD checkpoints shipped for ``backbone``, oldest first (empty: none ships)."""
    return RELEASES.get(backbone, ())


def shipped_checkpoint(backbone: str = "efficientnet_lite0", release: Optional[str] = None) -> Path:
    """Path of the AFD checkpoint shipped for ``backbone``: the default (newest) one, or ``release``
    (one of ``list_releases(backbone)``). FileNotFoundError when none ships; ValueError for a release
    that does not exist."""
    releases = list_releases(backbone)
    if not releases:
        shipped = sorted(RELEASES)
        raise FileNotFoundError(f"no AFD checkpoint ships for backbone {backbone!r} (AFD weights ship for: "
                                f"{shipped}); train one with `afd train --backbone {backbone} --data DIR --out RUN` "
                                "and pass checkpoint='RUN/afd.safetensors' (CLI: --checkpoint)")
    if release is not None and release not in releases:
        raise ValueError(f"no AFD release {release!r} for {backbone!r}; shipped: {list(releases)}")
    suffix = "" if release in (None, releases[-1]) else f"_{release}"
    return _HERE / f"afd_{backbone}{suffix}.safetensors"
