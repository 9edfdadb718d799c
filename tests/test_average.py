"""``afd average`` / ``afd_ext.train.average_checkpoints``: the weighted mean of AFD checkpoints."""
import json

import pytest
import torch

import afd_ext
from afd_ext.cli import main
from afd_ext.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from afd_ext.train import average_checkpoints, held_out_by_lineage
from afd_ext.train.lineage import weights_sha256
from helpers import perturb


def _save(path, seed, config=None, width=4):
    afd = perturb(afd_ext.AFDModule(32, width=width, act="relu6", gate="global"), 0.1, seed=seed)
    return save_checkpoint(path, afd, {"backbone": "efficientnet_lite0", **(config or {})})


def test_mean_is_tensor_by_tensor_and_weighted(tmp_path):
    a, b = _save(tmp_path / "a.safetensors", 0), _save(tmp_path / "b.safetensors", 1)
    ta, tb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    record = average_checkpoints([a, b], tmp_path / "m.safetensors", weights=[3, 1])
    assert record["weights"] == [0.75, 0.25]
    tm = read_checkpoint(tmp_path / "m.safetensors")[0]
    assert set(tm) == set(ta)
    for name, t in tm.items():
        if t.is_floating_point():
            torch.testing.assert_close(t, 0.75 * ta[name] + 0.25 * tb[name], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(t, ta[name])  # batch-norm step counters: the first checkpoint's
    # equal weights by default; the average of a checkpoint with itself is itself
    average_checkpoints([a, a], tmp_path / "self.safetensors")
    assert weights_sha256(tmp_path / "self.safetensors") == weights_sha256(a)
    load_checkpoint(tmp_path / "m.safetensors", backbone="efficientnet_lite0", channels=32)  # loads as any other


def test_lineage_is_every_source_and_held_out_is_what_all_held_out(tmp_path):
    a = _save(tmp_path / "a.safetensors", 0, {"recipe": {"init": None}, "data": {"holdout_files": ["x", "y", "z"]}})
    b = _save(tmp_path / "b.safetensors", 1, {"recipe": {"init": "a.safetensors"}, "lineage": [
        {"checkpoint": "a.safetensors", "weights_sha256": weights_sha256(a)}],
        "data": {"lineage_holdout_files": ["y", "z"]}})
    average_checkpoints([a, b], tmp_path / "m.safetensors")
    cfg = read_checkpoint(tmp_path / "m.safetensors")[1]
    shas = [e["weights_sha256"] for e in cfg["lineage"]]
    assert shas == [weights_sha256(a), weights_sha256(b)]  # a once, though it is also b's ancestor
    assert held_out_by_lineage(cfg) == {"y", "z"}
    assert "holdout_files" not in cfg["data"]  # b's record does not say what its own run held out
    assert cfg["average"]["sources"][0].endswith("a.safetensors")
    b2 = _save(tmp_path / "b2.safetensors", 3, {"recipe": {"init": "a.safetensors"}, "data": {
        "holdout_files": ["x", "z"], "lineage_holdout_files": ["z"]}})
    average_checkpoints([a, b2], tmp_path / "m2.safetensors")
    cfg = read_checkpoint(tmp_path / "m2.safetensors")[1]
    assert cfg["data"]["holdout_files"] == ["x", "z"] and cfg["data"]["lineage_holdout_files"] == ["z"]
    c = _save(tmp_path / "c.safetensors", 2, {"recipe": {"init": "elsewhere.safetensors"}})
    average_checkpoints([a, c], tmp_path / "n.safetensors")  # c cannot say what it held out
    assert held_out_by_lineage(read_checkpoint(tmp_path / "n.safetensors")[1]) is None


# problem -> (which checkpoints: a, b, or w (another width) / k (another backbone); weights; the error's words)
REFUSED = {"one": ("a", None, "at least two"), "weights": ("ab", [1], "one weight per"),
           "negative": ("ab", [1, -1], "non-negative"), "zero": ("ab", [0, 0], "not all zero"),
           "width": ("aw", None, "module config"), "backbone": ("ak", None, "backbone")}


@pytest.mark.parametrize("problem", sorted(REFUSED))
def test_what_cannot_be_averaged_is_refused_by_name(tmp_path, problem):
    which, weights, match = REFUSED[problem]
    made = {"a": lambda: _save(tmp_path / "a.safetensors", 0), "b": lambda: _save(tmp_path / "b.safetensors", 1),
            "w": lambda: _save(tmp_path / "w.safetensors", 0, width=8),
            "k": lambda: _save(tmp_path / "k.safetensors", 0, {"backbone": "efficientnet_lite1"})}
    with pytest.raises(ValueError, match=match):
        average_checkpoints([made[c]() for c in which], tmp_path / "m.safetensors", weights=weights)
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_average(tmp_path, capsys):
    a, b = _save(tmp_path / "a.safetensors", 0), _save(tmp_path / "b.safetensors", 1)
    out, sha_a = tmp_path / "m.safetensors", weights_sha256(a)
    assert main(["average", str(a), str(b), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == [0.5, 0.5]
    assert json.loads(out.with_suffix(".json").read_text())["average"]["weights"] == [0.5, 0.5]
    # a release name is a checkpoint too; a missing file, a non-checkpoint output, an input as output fail
    assert main(["average", "v1", "v2", "--out", str(tmp_path / "r.safetensors")]) == 0
    for argv in (["average", str(a), str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.safetensors")],
                 ["average", str(a), str(b), "--out", str(tmp_path / "x.pt")],
                 ["average", str(a), str(b), "--out", str(a)]):
        assert main(argv) == 1
        assert capsys.readouterr().err.strip()
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.pt").exists()
    assert weights_sha256(a) == sha_a  # the input named as output was not touched
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.safetensors")
