"""What a checkpoint's training saw, through everything it started from: a run started from another
checkpoint (``afd train --init``, ``afd fit-gate``) can only have held out an image that every
checkpoint before it held out too. The new checkpoint's config records its ``lineage`` (each
ancestor's path and sha256, nearest first) and ``data.lineage_holdout_files``: the labelled images no
checkpoint of the lineage trained on (absent when an ancestor's own record does not say it)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ..models.checkpoint import read_checkpoint
from .run_folder import portable_path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def held_out_by_lineage(config: dict) -> Optional[set]:
    """The labelled images (file names) that neither this checkpoint's training nor any it started
    from saw; None when its config cannot say (an ancestor without a record)."""
    data = config.get("data", {})
    if "lineage_holdout_files" in data:
        held = data["lineage_holdout_files"]
        return None if held is None else set(held)
    if config.get("recipe", {}).get("init") is None and "holdout_files" in data:
        return set(data["holdout_files"])  # trained from scratch: its own hold-out is the lineage's
    return None


def resolve_checkpoint(init, backbone: str) -> Path:
    """A checkpoint path, or the name of a release shipped for ``backbone`` (``checkpoint="v3"``)."""
    from ..models.weights import list_releases, shipped_checkpoint
    if isinstance(init, (str, os.PathLike)) and str(init) in list_releases(backbone):
        return shipped_checkpoint(backbone, str(init))
    return Path(init)


def lineage_record(init, backbone: str, own_holdout: set) -> dict:
    """``{"lineage": [...], "lineage_holdout_files": [...] or None}`` for a run that starts from
    ``init`` and holds out ``own_holdout`` (file names) itself."""
    path = resolve_checkpoint(init, backbone)
    _, config = read_checkpoint(path)
    inherited = held_out_by_lineage(config)
    entry = {"checkpoint": portable_path(init), "sha256": _sha256(path)}
    return {"lineage": [entry, *config.get("lineage", [])],
            "lineage_holdout_files": None if inherited is None else sorted(own_holdout & inherited)}
