"""AFD checkpoints: safetensors weights + a JSON config, written atomically.

A checkpoint is ``NAME.safetensors`` (tensors, with the config JSON also stored in the
safetensors metadata under ``afd_config``) and ``NAME.json`` beside it (the same config,
for people). Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from .modules import AFDModule
from .utils import atomic_write_bytes, write_json

FORMAT_VERSION = 1
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / zip (torch.save)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (names the file and the problem)."""


def save_checkpoint(path: str | os.PathLike, afd: AFDModule, config: dict,
                    extra_tensors: Optional[dict] = None) -> Path:
    """Save ``afd``'s training-form weights and ``config`` (must hold ``backbone``)."""
    from safetensors.torch import save
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    config = {"format_version": FORMAT_VERSION, **config, "module": afd.config}
    tensors = {k: v.detach().cpu().contiguous() for k, v in afd.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    blob = save(tensors, metadata={"afd_config": json.dumps(config)})
    atomic_write_bytes(path, blob)
    write_json(path.with_suffix(".json"), config)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors, config) of a checkpoint file; CheckpointError for anything unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    blob = path.read_bytes()
    looks_safetensors = len(blob) >= 9 and blob[8:9] == b"{"  # u64 header size, then the JSON header
    pickled = (blob[:1] == _PICKLE_MAGIC[0] and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or \
        blob[:4] == _PICKLE_MAGIC[1]
    if pickled and not looks_safetensors:
        raise CheckpointError(f"{path}: looks like a pickle / torch.save file; afd_ext reads only safetensors "
                              "checkpoints and never unpickles files")
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file (truncated or corrupt?): {exc}") from None
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors metadata: {exc}") from None
    raw = meta.get("afd_config")
    if raw is None:
        side = path.with_suffix(".json")
        if not side.exists():
            raise CheckpointError(f"{path}: no AFD config (neither 'afd_config' metadata nor {side.name})")
        raw = side.read_text()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the AFD config is not valid JSON: {exc}") from None
    if "module" not in config or "backbone" not in config:
        raise CheckpointError(f"{path}: the AFD config lacks 'module' or 'backbone'")
    return tensors, config


def load_checkpoint(path: str | os.PathLike, backbone: Optional[str] = None,
                    channels: Optional[int] = None) -> tuple[AFDModule, dict]:
    """Build the AFDModule a checkpoint describes and load its weights.

    ``backbone``/``channels``: what the caller will plug it into; a checkpoint made for
    another backbone or stem width raises CheckpointError.
    """
    tensors, config = read_checkpoint(path)
    if backbone is not None and config["backbone"] != backbone:
        raise CheckpointError(f"{path}: checkpoint was trained for backbone {config['backbone']!r}, "
                              f"not {backbone!r}")
    module_cfg = dict(config["module"])
    if channels is not None and module_cfg.get("channels") != channels:
        raise CheckpointError(f"{path}: checkpoint is for a stem of {module_cfg.get('channels')} channels, "
                              f"the classifier's stem has {channels}")
    try:
        afd = AFDModule(**module_cfg)
    except TypeError as exc:
        raise CheckpointError(f"{path}: bad module config {module_cfg}: {exc}") from None
    state = {k: v for k, v in tensors.items() if not k.startswith("train_state.")}
    expected = afd.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the module config {module_cfg} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    bad = [k for k, v in expected.items() if v.shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{path}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, the config "
                              f"{module_cfg} needs {tuple(expected[bad[0]].shape)}")
    afd.load_state_dict(state)
    return afd, config
