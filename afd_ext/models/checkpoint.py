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

from ..data.files import UnreadableFile, read_regular
from ..modules import BLOCKS, FDM_MODES, GATES, GRIDS, WIDTH_PRESETS, AFDModule
from ..utils import atomic_write_bytes, write_json

FORMAT_VERSION = 1
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / zip (torch.save)
# What a checkpoint may ask for before anything is built (README "Errors"): a file of at most
# MAX_CHECKPOINT_BYTES, and a module config whose integers lie in MODULE_INT_RANGES and whose
# parameter count (counted on the meta device, nothing allocated) is at most MAX_AFD_PARAMS
# (width 256 is ~33M; the shipped modules ~0.1M).
MAX_CHECKPOINT_BYTES = 2 * 1024 ** 3
MAX_AFD_PARAMS = 50_000_000
MODULE_INT_RANGES = {"channels": (1, 4096), "width": (1, 1024), "h1": (1, 16384), "h2": (1, 16384)}
# No config value afd_ext reads is an integer beyond 64 bits; a longer one (Python's int() stops
# at 4300 digits with a ValueError that names neither file nor key) is refused while parsing.
MAX_CONFIG_INT_DIGITS = 19


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (names the file and the problem)."""


def check_module_config(module_cfg, where: str = "module config") -> dict:
    """The keyword arguments of ``AFDModule`` in ``module_cfg``, validated (types, names, ranges,
    the parameter budget ``MAX_AFD_PARAMS``) before anything is built; CheckpointError naming
    ``where`` (the file) and the first problem otherwise. Returns a copy."""
    from ..reference import ACTIVATIONS
    if not isinstance(module_cfg, dict):
        raise CheckpointError(f"{where}: the module config must be a JSON object, got {type(module_cfg).__name__}")
    cfg = dict(module_cfg)
    allowed = {"channels", "width", "act", "fdm", "h1", "h2", "bn", "block", "gate", "grid"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise CheckpointError(f"{where}: unknown module config key(s) {unknown}; AFDModule takes {sorted(allowed)}")
    if "channels" not in cfg:
        raise CheckpointError(f"{where}: the module config lacks 'channels'")
    if isinstance(cfg.get("width"), str):
        if cfg["width"] not in WIDTH_PRESETS:
            raise CheckpointError(f"{where}: unknown width preset {cfg['width']!r}; choose one of "
                                  f"{sorted(WIDTH_PRESETS)} or an integer")
        cfg["width"] = WIDTH_PRESETS[cfg["width"]]
    for key, (lo, hi) in MODULE_INT_RANGES.items():
        if key not in cfg:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise CheckpointError(f"{where}: module config {key!r} must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise CheckpointError(f"{where}: module config {key!r} must be in {lo}..{hi}, got {v}")
    for key, choices in (("act", ACTIVATIONS), ("fdm", FDM_MODES), ("block", BLOCKS), ("gate", GATES),
                         ("grid", GRIDS)):
        if key in cfg and cfg[key] not in choices:
            raise CheckpointError(f"{where}: module config {key!r} must be one of {list(choices)}, got {cfg[key]!r}")
    if "bn" in cfg and not isinstance(cfg["bn"], bool):
        raise CheckpointError(f"{where}: module config 'bn' must be true or false, got {cfg['bn']!r}")
    with torch.device("meta"):  # count the parameters without allocating them
        n = sum(p.numel() for p in AFDModule(**cfg).parameters())
    if n > MAX_AFD_PARAMS:
        raise CheckpointError(f"{where}: the module config {module_cfg} has {n} parameters, above the budget "
                              f"afd_ext.checkpoint.MAX_AFD_PARAMS ({MAX_AFD_PARAMS})")
    return cfg


def check_tensors_finite(tensors: dict, where: str) -> None:
    """CheckpointError naming ``where`` and the first tensor holding NaN or Inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            n_bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{where}: tensor {k} holds {n_bad} non-finite value(s) (NaN/Inf) of {v.numel()}; "
                                  "the run that wrote it diverged")


def save_checkpoint(path: str | os.PathLike, afd: AFDModule, config: dict,
                    extra_tensors: Optional[dict] = None) -> Path:
    """Save ``afd``'s training-form weights and ``config`` (must hold ``backbone``). A module whose
    state dict is not the one ``load_checkpoint`` builds from its config (a deployed module: its
    RepConvs folded) is refused with a CheckpointError: nothing is written that cannot be loaded."""
    from safetensors.torch import save
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    _check_loadable_form(afd, path)
    # the format and the module config are the writer's, whatever a config read from another file says
    rest = {k: v for k, v in config.items() if k not in ("format_version", "module")}
    config = {"format_version": FORMAT_VERSION, **rest, "module": afd.config}
    tensors = {k: v.detach().cpu().contiguous() for k, v in afd.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    check_tensors_finite(tensors, f"{path}: refusing to write")  # a checkpoint of NaNs is never written
    blob = save(tensors, metadata={"afd_config": json.dumps(config)})
    atomic_write_bytes(path, blob)
    write_json(path.with_suffix(".json"), config)
    return path


def _check_loadable_form(afd: AFDModule, path: Path) -> None:
    """CheckpointError unless ``afd.state_dict()`` has the keys and shapes of the module
    ``load_checkpoint`` builds from ``afd.config`` (built on the meta device, nothing allocated)."""
    where = f"{path}: refusing to write"
    if afd.config.get("block", "repconv") == "repconv" and any(rc.deployed for rc in afd.fe.repconvs()):
        raise CheckpointError(f"{where}: the module is deployed (RepConv folded by deploy()/reparameterize()) and "
                              "the fold cannot be undone; save the training-form module, e.g. before deploy() "
                              "(or deploy a copy)")
    with torch.device("meta"):
        expected = {k: v.shape for k, v in AFDModule(**afd.config).state_dict().items()}
    state = {k: v.shape for k, v in afd.state_dict().items()}
    if state != expected:
        diff = sorted(set(state) ^ set(expected)) or sorted(k for k in state if state[k] != expected[k])
        raise CheckpointError(f"{where}: the module's weights are not those of its config {afd.config} "
                              f"(first difference: {diff[0]}); load_checkpoint could not load them")


class _HugeInt:
    """What the config parser returns for an integer literal of more than MAX_CONFIG_INT_DIGITS digits."""

    def __init__(self, text: str):
        self.digits = len(text.lstrip("-"))


def _parse_int(text: str):
    return int(text) if len(text.lstrip("-")) <= MAX_CONFIG_INT_DIGITS else _HugeInt(text)


def _find_huge_int(config) -> Optional[tuple[str, _HugeInt]]:
    """(key path, marker) of the first over-long integer in a parsed config, else None (a loop, not
    recursion: json.loads accepts nesting nearly as deep as the recursion limit)."""
    todo = [("", config)]
    while todo:
        key, value = todo.pop()
        if isinstance(value, _HugeInt):
            return key or "value", value
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        todo.extend(reversed([(f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k), v)
                              for k, v in items]))
    return None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors, config) of a checkpoint file; CheckpointError for anything unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    path = Path(path)
    blob = _read_regular(path, "checkpoint", MAX_CHECKPOINT_BYTES)
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
    source = path  # the file the config is read from, named in its errors
    if raw is None:
        side = path.with_suffix(".json")
        if not side.exists():
            raise CheckpointError(f"{path}: no AFD config (neither 'afd_config' metadata nor {side.name})")
        raw = _read_regular(side, "config", 16 * 1024 ** 2).decode("utf-8", "replace")
        source = side
    try:
        config = json.loads(raw, parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{source}: the AFD config is not valid JSON: {exc}") from None
    huge = _find_huge_int(config)
    if huge is not None:
        raise CheckpointError(f"{source}: the AFD config's {huge[0]} is an integer of {huge[1].digits} "
                              f"digits; no afd_ext setting takes more than {MAX_CONFIG_INT_DIGITS}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the AFD config must be a JSON object, got {type(config).__name__}")
    if "module" not in config or "backbone" not in config:
        raise CheckpointError(f"{path}: the AFD config lacks 'module' or 'backbone'")
    if not isinstance(config["backbone"], str):
        raise CheckpointError(f"{path}: the AFD config's 'backbone' must be a string, got {config['backbone']!r}")
    version = config.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version!r}; this afd_ext reads 1..{FORMAT_VERSION}")
    check_module_config(config["module"], str(source))
    check_tensors_finite(tensors, str(path))
    return tensors, config


def _read_regular(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read by the package's one safe reader
    (``afd_ext.data.files.read_regular``: a FIFO or device is never opened, the open does not block,
    nothing above the cap is read); CheckpointError naming the file and the problem."""
    try:
        return read_regular(path, max_bytes, allow_empty=True, what=f"a {what} file")
    except UnreadableFile as exc:
        reason = {"missing": f"no such {what} file",
                  "directory": f"is a directory, not a {what} file",
                  "special": f"{exc.reason}; the {what} must be a file",
                  "too_large": f"{exc.size} bytes, above the {what} size cap of {max_bytes} bytes"
                  }.get(exc.kind, f"cannot read the {what} file: {exc.reason.removeprefix('cannot read: ')}")
        raise CheckpointError(f"{path}: {reason}") from None


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
        afd = AFDModule(**check_module_config(module_cfg, str(path)))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
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
    # float16/bfloat16/float64 weights are cast to the module's float32; integers or bools are not weights
    bad = [k for k, v in expected.items() if v.is_floating_point() and not state[k].is_floating_point()]
    if bad:
        raise CheckpointError(f"{path}: tensor {bad[0]} has dtype {state[bad[0]].dtype}; AFD weights are floating "
                              f"point ({expected[bad[0]].dtype})")
    afd.load_state_dict(state)
    return afd, config
