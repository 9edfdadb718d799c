"""Checkpoints: safetensors only, atomic writes, clear errors for every kind of bad file."""
import json
import pickle
import re

import pytest
import torch

import afd_ext
from afd_ext.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from helpers import perturb


@pytest.fixture
def saved(tmp_path):
    """(the module, its checkpoint file) in this test's own folder: the tests below damage the file."""
    afd = perturb(afd_ext.AFDModule(32, width=4, act="relu6"), 0.1)
    path = save_checkpoint(tmp_path / "ck.safetensors", afd, {"backbone": "efficientnet_lite0"})
    return afd, path


def test_round_trip(saved):
    afd, path = saved
    loaded, config = load_checkpoint(path, backbone="efficientnet_lite0", channels=32)
    assert config["backbone"] == "efficientnet_lite0" and config["module"]["width"] == 4
    for (k, a), (_, b) in zip(sorted(afd.state_dict().items()), sorted(loaded.state_dict().items())):
        assert torch.equal(a, b), k
    assert json.loads(path.with_suffix(".json").read_text())["module"]["act"] == "relu6"
    assert not list(path.parent.glob(".*tmp"))  # no temporary files left behind


def test_truncated_file(saved):
    _, path = saved
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(path)


def test_other_backbone_and_width(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="trained for backbone 'efficientnet_lite0', not 'resnet50'"):
        load_checkpoint(path, backbone="resnet50")
    with pytest.raises(CheckpointError, match="stem of 32 channels"):
        load_checkpoint(path, channels=64)
    # weights of another width under this config
    other = afd_ext.AFDModule(32, width=8, act="relu6")
    from safetensors.torch import save_file
    meta = {"afd_config": json.dumps({"backbone": "efficientnet_lite0", "module": {**other.config, "width": 4}})}
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, bad, metadata=meta)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(bad)


def test_missing_config(saved, tmp_path):
    afd, _ = saved
    from safetensors.torch import save_file
    path = tmp_path / "noconfig.safetensors"
    save_file({k: v.contiguous() for k, v in afd.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="no AFD config"):
        load_checkpoint(path)


def test_pickle_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)
    torch_file = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, torch_file)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(torch_file)
    assert not marker.exists()


def test_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


def test_interrupted_write_leaves_old_file(saved, monkeypatch):
    afd, path = saved
    before = path.read_bytes()
    import afd_ext.models.checkpoint as ck

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(ck.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, afd, {"backbone": "efficientnet_lite0"})
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp"))


def test_shipped_checkpoint_loads_for_lite0():
    try:
        path = afd_ext.shipped_checkpoint("efficientnet_lite0")
    except FileNotFoundError:
        pytest.fail("the package must ship an AFD checkpoint for efficientnet_lite0")
    afd, config = load_checkpoint(path, backbone="efficientnet_lite0", channels=32)
    assert config["module"]["act"] == "relu6"
    with pytest.raises(FileNotFoundError, match="no AFD checkpoint ships"):
        afd_ext.shipped_checkpoint("resnet50")


def test_deployed_module_is_refused(tmp_path):
    """load_checkpoint builds the training form; the folded RepConvs of a deployed module cannot
    be loaded into it, so save_checkpoint refuses them instead of writing a file that never loads."""
    deployed = afd_ext.AFDModule(8, width=4).deploy()
    partly = afd_ext.AFDModule(8, width=4)
    partly.fe.enc2.reparameterize()
    for form, m in (("deployed", deployed), ("partly", partly)):
        path = tmp_path / f"{form}.safetensors"
        with pytest.raises(CheckpointError, match="refusing to write: the module is deployed .*before deploy"):
            save_checkpoint(path, m, {"backbone": "efficientnet_lite0"})
        assert not list(tmp_path.iterdir())
    plain = afd_ext.AFDModule(8, width=4, block="conv")  # always folded, and loadable as such
    path = save_checkpoint(tmp_path / "conv.safetensors", plain, {"backbone": "efficientnet_lite0"})
    assert load_checkpoint(path)[0].config["block"] == "conv"


def _with_config(tmp_path, config_text, name="ck.safetensors"):
    from safetensors.torch import save_file
    afd = afd_ext.AFDModule(8, width=4)
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in afd.state_dict().items()}, path, metadata={"afd_config": config_text})
    return path


@pytest.mark.parametrize("where,key", [("module", "module.channels"), ("recipe", "recipe.steps"),
                                       ("list", "recipe.qualities[1]"), ("state", "train_state.step")])
def test_huge_integer_in_config_names_file_and_key(tmp_path, where, key):
    """Python's int() stops at 4300 digits with a ValueError naming neither file nor key."""
    huge = "9" * 5000
    module = {"channels": huge if where == "module" else 8, "width": 4}
    recipe = {"steps": huge if where == "recipe" else 6, "qualities": [10, huge if where == "list" else 20]}
    state = {"step": huge if where == "state" else 1}
    text = json.dumps({"backbone": "efficientnet_lite0", "module": module, "recipe": recipe, "train_state": state})
    path = _with_config(tmp_path, text.replace(f'"{huge}"', huge))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: the AFD config's {re.escape(key)} "
                                              r"is an integer of 5000 digits"):
        read_checkpoint(path)
    # in the JSON beside a checkpoint without metadata: that file is named
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in afd_ext.AFDModule(8, width=4).state_dict().items()}, path)
    path.with_suffix(".json").write_text(text.replace(f'"{huge}"', huge))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path.with_suffix('.json')))}: the AFD config's"):
        read_checkpoint(path)


def test_a_checkpoint_above_2_gib_is_refused_unread(tmp_path, monkeypatch, capsys):
    """README "Errors": a checkpoint file above 2 GiB is a CheckpointError naming the file and the
    cap, from its size alone (a sparse file: nothing is written, nothing may be read)."""
    from afd_ext.models import checkpoint as ck
    assert ck.MAX_CHECKPOINT_BYTES == 2 * 1024 ** 3
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.truncate(2 * 1024 ** 3 + 1)

    def no_read(*a, **k):
        raise AssertionError(f"the oversized checkpoint was opened: {a}")
    from afd_ext.data import files  # the one safe reader every checkpoint is read by
    monkeypatch.setattr(files, "_open_nonblocking", no_read)
    for call in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: 2147483649 bytes, above the checkpoint "
                                                  r"size cap of 2147483648 bytes"):
            call(path)
    # the CLI: one error line, exit 1
    from afd_ext.cli import main
    assert main(["predict", str(tmp_path), "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "size cap of 2147483648 bytes" in err and "Traceback" not in err
