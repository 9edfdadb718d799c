"""Checkpoints shipped with the package (safetensors + JSON config)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def shipped_checkpoint(backbone: str = "efficientnet_lite0") -> Path:
    """Path of the shipped AFD checkpoint for ``backbone``; FileNotFoundError when none ships."""
    path = _HERE / f"afd_{backbone}.safetensors"
    if not path.exists():
        shipped = sorted(p.stem.removeprefix("afd_") for p in _HERE.glob("afd_*.safetensors"))
        raise FileNotFoundError(f"no AFD checkpoint ships for backbone {backbone!r} (shipped: {shipped}); "
                                "train one with `afd train` and pass --checkpoint")
    return path
