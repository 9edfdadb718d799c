"""``afd widen`` / ``afd_ext.train.widen_afd``: a wider FE-Net that computes the same function."""
import json

import pytest
import torch

import afd_ext
from afd_ext.cli import main
from afd_ext.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from afd_ext.train import held_out_by_lineage, widen_afd, widen_checkpoint
from afd_ext.train.lineage import weights_sha256
from helpers import perturb


def _trained(width=4, channels=16, seed=0, gate="global"):
    # perturbed everywhere, the last RepConv included: a new module's zero last block would hide a wrong copy
    return perturb(afd_ext.AFDModule(channels, width=width, act="relu6", gate=gate), 0.2, seed=seed)


@pytest.mark.parametrize("new_width", [5, 8, "base"])
@pytest.mark.parametrize("size", [(16, 16), (13, 22)])  # odd sizes: the pools round up, the upsamples follow
def test_widened_module_computes_the_same_function(new_width, size):
    afd = _trained().eval()
    before = {k: v.clone() for k, v in afd.state_dict().items()}
    wide = widen_afd(afd, new_width, seed=3).eval()
    assert wide.width == (16 if new_width == "base" else new_width) and afd.width == 4
    assert all(torch.equal(v, afd.state_dict()[k]) for k, v in before.items())  # the source is untouched
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 16, *size, generator=g, dtype=torch.float64)
    img = torch.randint(0, 256, (2, 3, size[0] * 4, size[1] * 4), generator=g).double()
    afd, wide = afd.double(), wide.double()
    with torch.no_grad():
        torch.testing.assert_close(wide.fe(feat), afd.fe(feat), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(wide(feat, img), afd(feat, img), rtol=1e-10, atol=1e-10)
        # and so does the deployed (re-parameterized, fused) form
        torch.testing.assert_close(wide.reparameterize()(feat, img), afd(feat, img), rtol=1e-10, atol=1e-10)


def test_sources_describe_the_fe_net():
    fe = afd_ext.AFDModule(16, width=4).fe
    assert set(fe.SOURCES) == {name for name, m in fe.named_children() if isinstance(m, afd_ext.modules.RepConv)}
    for name, parts in fe.input_parts().items():
        assert sum(parts) == getattr(fe, name).in_ch, name


def test_new_channels_are_live_and_learn():
    afd = _trained()
    wide = widen_afd(afd, 8, seed=0)
    feat = torch.randn(2, 16, 12, 12)
    e1 = wide.fe.acts[0](wide.fe.enc1(feat))
    assert e1[:, 4:].abs().amax() > 0  # the new channels compute something ...
    wide.fe(feat).square().sum().backward()
    grad = wide.fe.last.c_1x1.weight.grad  # ... and the zero weights leaving them get gradients
    assert grad[:, 4:8].abs().amax() > 0 and grad[:, 12:].abs().amax() > 0


def test_seed_decides_the_new_channels_only():
    afd = _trained()
    a, b, c = widen_afd(afd, 8, seed=0), widen_afd(afd, 8, seed=0), widen_afd(afd, 8, seed=1)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.fe.enc2.a_1x1.weight, c.fe.enc2.a_1x1.weight)
    torch.testing.assert_close(a.fe.enc2.a_1x1.weight[:8, :4], c.fe.enc2.a_1x1.weight[:8, :4], rtol=0, atol=0)
    for name, t in afd.state_dict().items():  # the FDE-Net and the gate head are copied as they are
        if not name.startswith("fe."):
            assert torch.equal(a.state_dict()[name], t), name


# problem -> (module, width, the error's words)
REFUSED = {"narrower": (lambda: _trained(), 2, "above"), "same": (lambda: _trained(), 4, "above"),
           "preset": (lambda: _trained(), "huge", "preset"),
           "deployed": (lambda: _trained().reparameterize(), 8, "deployed"),
           "plain convs": (lambda: afd_ext.AFDModule(16, width=4, block="conv"), 8, "RepConv"),
           "budget": (lambda: _trained(), 1024, "parameters")}


@pytest.mark.parametrize("problem", sorted(REFUSED))
def test_what_cannot_be_widened_is_refused_by_name(problem):
    make, width, match = REFUSED[problem]
    with pytest.raises(ValueError, match=match):
        widen_afd(make(), width)


def test_checkpoint_records_its_source_and_keeps_what_was_held_out(tmp_path, capsys):
    src = save_checkpoint(tmp_path / "a.safetensors", _trained(), {
        "backbone": "efficientnet_lite0", "recipe": {"init": "z.safetensors"},
        "data": {"holdout_files": ["x", "y"], "lineage_holdout_files": ["y"]},
        "lineage": [{"checkpoint": "z.safetensors", "weights_sha256": "0" * 64}]})
    out = tmp_path / "wide.safetensors"
    assert main(["widen", str(src), "--width", "8", "--seed", "2", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["from_width"] == 4 and record["to_width"] == 8 and record["seed"] == 2
    _, cfg = read_checkpoint(out)
    assert cfg["module"]["width"] == 8 and cfg["widen"] == record
    assert [e["weights_sha256"] for e in cfg["lineage"]] == [weights_sha256(src), "0" * 64]
    assert held_out_by_lineage(cfg) == {"y"} and cfg["data"]["holdout_files"] == ["x", "y"]
    wide, _ = load_checkpoint(out, backbone="efficientnet_lite0", channels=16)  # loads as any other
    assert wide.width == 8
    # the same through the library, into another file: the same weights
    widen_checkpoint(src, tmp_path / "again.safetensors", width=8, seed=2)
    assert weights_sha256(tmp_path / "again.safetensors") == weights_sha256(out)


def test_cli_widen_refuses_with_one_line_and_writes_nothing(tmp_path, capsys):
    src = save_checkpoint(tmp_path / "a.safetensors", _trained(), {"backbone": "efficientnet_lite0"})
    sha, out = weights_sha256(src), str(tmp_path / "w.safetensors")
    for args, words in ((["--width", "2", "--out", out], "above"),
                        (["--out", str(tmp_path / "w.pt")], ".safetensors"),
                        (["--out", str(src)], "a.safetensors")):
        assert main(["widen", str(src), *args]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert main(["widen", str(tmp_path / "missing.safetensors"), "--out", out]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "w.pt").exists()
    assert weights_sha256(src) == sha  # the input named as the output was not replaced
