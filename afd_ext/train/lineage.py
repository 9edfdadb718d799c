"""What a checkpoint's training saw, through everything it started from: a run started from another
checkpoint (``afd train --init``, ``afd fit-gate``) can only have held out an image that every
checkpoint before it held out too. The new checkpoint's config records its ``lineage`` (each
ancestor's path and the sha256 of its weights, nearest first) and ``data.lineage_holdout_files``:
the labelled images no checkpoint of the lineage trained on (None when an ancestor's own record
does not say it)."""
from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Optional

import torch

from ..models.checkpoint import read_checkpoint
from ..modules import AFDModule
from .config import ARCHITECTURE_FIELDS
from .run_folder import portable_path


def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint's tensors (names, dtypes, shapes, bytes, in name order): the same for
    the same weights whatever the file's metadata says (a lineage recorded later, a new config)."""
    tensors, _ = read_checkpoint(path)
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
    entry = {"checkpoint": portable_path(init), "weights_sha256": weights_sha256(path)}
    return {"lineage": [entry, *config.get("lineage", [])],
            "lineage_holdout_files": None if inherited is None else sorted(own_holdout & inherited)}


def init_architecture(init, backbone: str) -> dict:
    """The ``TrainConfig`` architecture fields (width, fdm, block, gate) of the module in ``init``:
    a run from a checkpoint trains that module whatever its flags say (``afd widen`` changes the
    width), so its recipe records these."""
    _, config = read_checkpoint(resolve_checkpoint(init, backbone))
    module = config["module"]
    # a key an older checkpoint omits is the AFDModule default it was built with
    defaults = inspect.signature(AFDModule).parameters
    return {key: module.get(key, defaults[key].default) for key in ARCHITECTURE_FIELDS}


def init_grid(init, backbone: str) -> str:
    """The grid setting (``modules.GRIDS``) of the module in ``init``: a run from it trains and saves
    that setting unless ``--grid`` says otherwise."""
    _, config = read_checkpoint(resolve_checkpoint(init, backbone))
    return config["module"].get("grid", inspect.signature(AFDModule).parameters["grid"].default)


def record_lineage(checkpoint, init, out) -> dict:
    """For a checkpoint trained before runs recorded their lineage: save it as ``out`` with the
    record a run from ``init`` writes today (``lineage``, ``data.lineage_holdout_files``). ``init``
    must hold the weights its recipe's ``init`` named (the caller vouches for it, e.g. by the sha256
    of that file at the commit the run was trained from); the config says the record came later
    (``lineage_recorded_later``). Returns the record."""
    from ..models.checkpoint import load_checkpoint, save_checkpoint
    afd, config = load_checkpoint(checkpoint)
    recorded = config.get("recipe", {}).get("init")
    if recorded is None:
        raise ValueError(f"{checkpoint}: trained from scratch (no init); its hold-out is its lineage's")
    record = lineage_record(init, config.get("backbone", ""), set(config.get("data", {}).get("holdout_files", [])))
    config["lineage"] = record["lineage"]
    config["lineage_recorded_later"] = True
    config["data"] = {**config.get("data", {}), "lineage_holdout_files": record["lineage_holdout_files"]}
    save_checkpoint(out, afd, config)
    return record
