"""Checkpoints that must not be used (README "Errors"): NaN/Inf or integer weights, and configs with unknown
keys, wrong types, out-of-range values or a parameter count above the budget, each refused naming the
file and the tensor or key before anything is built; a module of NaNs is never written."""
from __future__ import annotations

import json

import pytest
import torch

import afd_ext
from afd_ext.cli import main
from afd_ext.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_checkpoint_with_nan_weights_is_refused_naming_file_and_tensor(tmp_path, photos, capsys):
    from safetensors.torch import save_file
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    state = {k: v.contiguous() for k, v in afd.state_dict().items()}
    state["fe.enc1.c_1x1.weight"] = torch.full_like(state["fe.enc1.c_1x1.weight"], float("nan"))
    path = tmp_path / "nan.safetensors"
    save_file(state, path, metadata={"afd_config": json.dumps({"backbone": "efficientnet_lite0",
                                                               "module": afd.config})})
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor fe\.enc1\.c_1x1\.weight holds"):
        load_checkpoint(path)
    assert main(["predict", str(photos), "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "fe.enc1.c_1x1.weight" in err and "(nan)" not in err
    with torch.no_grad():
        afd.fe.enc1.c_1x1.weight.fill_(float("inf"))
    with pytest.raises(CheckpointError, match="refusing to write"):
        save_checkpoint(tmp_path / "inf.safetensors", afd, {"backbone": "efficientnet_lite0"})
    assert not (tmp_path / "inf.safetensors").exists()


# -- hostile checkpoint configs ----------------------------------------------------------------------

def _with_config(tmp_path, config, tensors=None, name="bad"):
    from safetensors.torch import save_file
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    tensors = tensors if tensors is not None else {k: v.contiguous() for k, v in afd.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, path, metadata={"afd_config": json.dumps(config)})
    return path


MODULE = dict(afd_ext.AFDModule(32, width=4, act="relu6").config)


@pytest.mark.parametrize("config,needle", [
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "width": 10 ** 9}}, "'width' must be in 1..1024"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "width": 900}}, "MAX_AFD_PARAMS"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "act": "gelu"}}, "'act' must be one of"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "h1": -1}}, "'h1' must be in"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "channels": -1}}, "'channels' must be in"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "channels": 32.5}}, "'channels' must be an integer"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "bn": "yes"}}, "'bn' must be true or false"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "fdm": None}}, "'fdm' must be one of"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "evil": 1}}, "unknown module config key"),
    ({"backbone": "efficientnet_lite0", "module": None}, "module config must be a JSON object"),
    ({"backbone": 7, "module": MODULE}, "'backbone' must be a string"),
    ({"backbone": "efficientnet_lite0", "module": MODULE, "format_version": 99}, "format_version"),
    (None, "must be a JSON object"),
    ([1, 2], "must be a JSON object"),
])
def test_hostile_checkpoint_configs_are_refused_naming_the_file(config, needle, tmp_path, monkeypatch):
    path = _with_config(tmp_path, config)
    import afd_ext.models.checkpoint as ckpt
    built_on = []  # the device each AFDModule is built on: only "meta" (counting) before a refusal
    real = ckpt.AFDModule
    monkeypatch.setattr(ckpt, "AFDModule", lambda *a, **k: (built_on.append(torch.empty(0).device.type),
                                                            real(*a, **k))[1])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)
    assert set(built_on) <= {"meta"}, "a module was allocated before the config was refused"


def test_integer_weights_are_refused_not_cast(tmp_path):
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    tensors = {k: v.contiguous() for k, v in afd.state_dict().items()}
    tensors["fe.enc1.c_1x1.weight"] = tensors["fe.enc1.c_1x1.weight"].to(torch.int32)
    path = _with_config(tmp_path, {"backbone": "efficientnet_lite0", "module": afd.config}, tensors)
    with pytest.raises(CheckpointError,
                       match=r"bad\.safetensors: tensor fe\.enc1\.c_1x1\.weight has dtype torch\.int32"):
        load_checkpoint(path)
