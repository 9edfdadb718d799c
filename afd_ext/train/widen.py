"""``afd widen``: an AFD checkpoint with a wider FE-Net that computes exactly the same function
(function-preserving widening, Net2WiderNet's zero-output variant: Chen et al., ICLR 2016). The
FE-Net's width is a capacity lever (item 4 of the accuracy issue: ``base`` vs ``small``); training a
wider FE-Net from scratch costs the whole schedule again, while a widened checkpoint continues
(``afd train --init``) from what the narrow one learned.

Every RepConv keeps its old weights on its old channels. The new channels get the fresh module's
seeded initialization on their inputs, and every weight from a new channel into an old one is zero
(in each branch: the 1x1/3x3 entries from new input or middle channels to old outputs), so the old
channels, and the FE-Net's output, are unchanged; the last block has only old outputs. The new
channels' own outputs are non-zero, so the zero weights leaving them get gradients at the first step.
The FDE-Net and the gate head are copied as they are. Concatenated inputs (the decoder's
``cat(up2(x), skip)``) keep each source's old channels at the start of that source's new range."""
from __future__ import annotations

import torch

from ..models.checkpoint import CheckpointError, check_module_config
from ..modules import WIDTH_PRESETS, AFDModule, FENet, RepConv


def _channel_map(parts_old: list[int], parts_new: list[int]) -> torch.Tensor:
    """New index of each old channel of an input made of concatenated parts (sizes old -> new)."""
    idx, start = [], 0
    for old, new in zip(parts_old, parts_new):
        idx.extend(range(start, start + old))
        start += new
    return torch.tensor(idx, dtype=torch.long)


@torch.no_grad()
def _widen_repconv(old: RepConv, new: RepConv, in_map: torch.Tensor, out_map: torch.Tensor) -> None:
    """Copy ``old`` into ``new`` at (out_map, in_map); zero every weight from a new input or middle
    channel into an old output. The middle channels of a RepConv are its output channels (mid = out)."""
    # old outputs (and the old middle channels) read nothing but the old weights: zero their rows, then
    # copy; the rows of new outputs keep the fresh initialization
    for name in ("a_1x1", "b_3x3", "a_3x3", "b_1x1", "c_1x1"):
        src, dst = getattr(old, name), getattr(new, name)
        reads = in_map if name in ("a_1x1", "b_3x3", "c_1x1") else out_map  # input or middle channels
        dst.weight[out_map] = 0
        dst.weight[out_map[:, None], reads[None, :]] = src.weight
        if dst.bias is not None:
            dst.bias[out_map] = src.bias


def widen_afd(afd: AFDModule, width: int | str, seed: int = 0) -> AFDModule:
    """A new AFDModule equal to ``afd`` but with FE-Net width ``width`` (a preset name or an int above
    the current width), computing the same function (up to float rounding of the composed kernels).
    ``afd`` is not changed. The new channels' initialization is seeded by ``seed``."""
    if isinstance(width, str):
        if width not in WIDTH_PRESETS:
            raise ValueError(f"unknown width preset {width!r}; choose one of {sorted(WIDTH_PRESETS)} or an int")
        width = WIDTH_PRESETS[width]
    if isinstance(width, bool) or not isinstance(width, int) or width <= afd.width:
        raise ValueError(f"width must be above the checkpoint's FE-Net width {afd.width}, got {width!r}")
    if afd.config.get("bn") or afd.config.get("block", "repconv") != "repconv":
        raise ValueError("widening supports the FE-Net of RepConv blocks without BatchNorm (the shipped form); "
                         f"this module has block={afd.config.get('block')!r}, bn={afd.config.get('bn')!r}")
    if afd.deployed:
        raise ValueError("the module is deployed (re-parameterized): widen its training-form checkpoint")
    config = {**afd.config, "width": width}
    try:  # the parameter budget, before anything is allocated
        check_module_config(config)
    except CheckpointError as exc:
        raise ValueError(f"width {width}: {exc}") from None
    fork = torch.random.fork_rng(devices=[])  # the caller's global generator is left as it was
    with fork:
        torch.manual_seed(seed)
        wide = AFDModule(**config)
    param = next(afd.parameters())
    wide = wide.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        if afd.fde is not None:
            wide.fde.load_state_dict(afd.fde.state_dict())
        if afd.gate_head is not None:
            wide.gate_head.load_state_dict(afd.gate_head.state_dict())
        old_parts, new_parts = afd.fe.input_parts(), wide.fe.input_parts()
        for name in FENet.SOURCES:
            old_block, new_block = getattr(afd.fe, name), getattr(wide.fe, name)
            _widen_repconv(old_block, new_block, _channel_map(old_parts[name], new_parts[name]),
                           _channel_map([old_block.out_ch], [new_block.out_ch]))
        for act_old, act_new in zip(afd.fe.acts, wide.fe.acts):
            act_new.weight[: act_old.weight.numel()] = act_old.weight
    wide.train(afd.training)
    return wide


def widen_checkpoint(path, out, width: int | str = "base", seed: int = 0,
                     backbone: str = "efficientnet_lite0") -> dict:
    """Save as ``out`` the checkpoint ``path`` (a path or a release name of ``backbone``) with its
    FE-Net widened to ``width`` (``widen_afd``). The config records the source, both widths and the
    seed (``widen``) and the source in ``lineage``; what the source's lineage held out stays held
    out. Training state is not carried: continue with ``afd train --init OUT``. Returns the record."""
    from ..models.checkpoint import load_checkpoint, save_checkpoint
    from .lineage import resolve_checkpoint, weights_sha256
    from .run_folder import portable_path
    source = resolve_checkpoint(path, backbone)
    afd, config = load_checkpoint(source)
    wide = widen_afd(afd, width, seed)
    record = {"source": portable_path(path), "from_width": afd.width, "to_width": wide.width, "seed": seed}
    config = {k: v for k, v in config.items() if k != "module"}
    config["widen"] = record
    config["lineage"] = [{"checkpoint": portable_path(path), "weights_sha256": weights_sha256(source)},
                         *config.get("lineage", [])]
    save_checkpoint(out, wide, config)
    return record

