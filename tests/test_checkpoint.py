"""Checkpoints: safetensors only, atomic writes, clear errors for every kind of bad file."""
import json
import pickle

import pytest
import torch

import afd_ext
from afd_ext.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    with torch.no_grad():
        for p in afd.parameters():
            p.add_(torch.randn_like(p) * 0.1)
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
    import afd_ext.checkpoint as ck

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
