"""afd fit-gate: the whole-image gate's head fitted alone (afd_ext.train.gate_fit)."""
import json

import pytest
import torch

import afd_ext
from afd_ext import block_grid, data, reference
from afd_ext.cli import main
from afd_ext.models.checkpoint import load_checkpoint, save_checkpoint
from afd_ext.train import gate_fit as G
from helpers import make_photo, perturb


def _blobs(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.3).double()
    x = torch.randn(n, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0],
                                                                            dtype=torch.float64)
    x[:, 0] += 3 * y  # one informative feature, on its own scale
    x[:, 3] += 100.0  # an offset the fold-back must carry into the bias
    return x, y


def test_fit_logistic_separates_and_folds_the_standardization_back():
    x, y = _blobs()
    w, b = G.fit_logistic(x, y, 1e-4)
    assert w.shape == (1, 5) and b.shape == (1,)
    z = x @ w[0] + b
    assert ((z > 0).double() == y).double().mean() > 0.9
    mean, std = x.mean(0), x.std(0)
    per_sd = w[0] * std  # the weights per standard deviation of each feature
    assert per_sd[0] > 0 and per_sd[0] > 5 * per_sd[1:].abs().max()
    # the same fit on standardized features gives the same logits: the fold-back is exact
    ws, bs = G.fit_logistic((x - mean) / std, y, 1e-4)
    torch.testing.assert_close(((x - mean) / std) @ ws[0] + bs, z, rtol=1e-6, atol=1e-6)
    # a larger penalty shrinks the weights; weighting the (rarer) open side up opens more samples
    w2, _ = G.fit_logistic(x, y, 1.0)
    assert (w2[0] * std).norm() < (w[0] * std).norm()
    w_bal, b_bal = G.fit_logistic(x, y, 1e-4, G._balanced(y))
    assert G._balanced(y)[y == 1].sum() == pytest.approx(float((y == 0).sum()))
    assert int(((x @ w_bal[0] + b_bal) > 0).sum()) > int((z > 0).sum())


def test_closed_margin_keeps_at_most_that_share_of_closed_samples_open():
    x, y = _blobs(1000, seed=1)
    w, b = G.fit_logistic(x, y, 1e-4)
    for pct in (10.0, 2.0, 0.5):
        b2 = G._closed_margin(w, b, x, y, pct)
        assert b2 <= b
        opened = float(((x[y == 0] @ w[0] + b2) > 0).double().mean()) * 100
        assert opened <= pct + 1e-9
    assert torch.equal(G._closed_margin(w, b + 100.0, x, y, 100.0), b + 100.0)  # never raised


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate_photos")
    for i in range(6):
        make_photo(300, 400, seed=i).save(root / f"photo_{i}.png")
    make_photo(300, 400, seed=9).save(root / "n01440764_held.png")  # labelled: held out below hash 0.99
    return root


def test_gate_samples_are_the_protocols_inputs_with_their_targets(photos):
    files = sorted(p for p in photos.iterdir() if p.name.startswith("photo_"))[:2]
    s = G.gate_samples(files, seed=3, progress=False)
    per_photo = 1 + len(data.PROTOCOLS) + len(G.SETTINGS) + 1
    assert s.stats.shape == (2 * per_photo, 192) and s.stats.dtype == torch.float64
    assert s.photo.tolist() == [0] * per_photo + [1] * per_photo
    closed = [k == "clean" or k.startswith("mild") for k in s.kinds]
    assert s.targets.tolist() == [0.0 if c else 1.0 for c in closed]
    lo, hi = G.OPEN_QUALITIES
    for k, q, t in zip(s.kinds, s.qualities.tolist(), s.targets.tolist()):
        mild_lo, mild_hi = G.MILD_QUALITIES
        assert (q == 0) if k == "clean" else (mild_lo <= q <= mild_hi if t == 0 else lo <= q <= hi)
    # the clean sample's statistics are the gate op's own input statistics of the eval crop
    crop = data.to_tensor(data.resize_center_crop(data.load_image(files[0])))[None]
    torch.testing.assert_close(s.stats[0], reference.gate_statistics(crop, torch.float64)[0])
    again = G.gate_samples(files, seed=3, progress=False)
    assert torch.equal(again.stats, s.stats)  # deterministic in (files, seed)
    with pytest.raises(ValueError, match="no readable photo"):
        G.gate_samples([photos / "missing.jpg"], progress=False)


def test_gate_samples_on_the_detected_grid_read_what_a_detect_module_reads(photos):
    """grid='detect': an input whose JPEG grid a resize moved gives the statistics of its rectified
    image, the image AFDModule(grid='detect') feeds its gate; any other input, the same as 'input'."""
    photo = make_photo(300, 400, seed=1)
    resized = data.degrade(photo, [10], "resized")
    img = data.to_tensor(resized)[None]
    found = block_grid.detect_block_grid(img)
    assert bool(found.shifted[0])
    rect = block_grid.rectify(img, found.period, found.offset_x, found.offset_y).image
    torch.testing.assert_close(G._stats(resized, "detect"), reference.gate_statistics(rect, torch.float64)[0])
    module = _gated_module()
    module.grid = "detect"
    _, z = module(torch.zeros(1, 32, 112, 112), img.float(), return_gate=True)
    torch.testing.assert_close(z.double(), G._stats(resized, "detect") @ module.gate_head.weight[0].double()
                               + module.gate_head.bias.double(), rtol=1e-4, atol=1e-4)
    crop = data.degrade(photo, [10], "crop")  # its own grid: read as it is
    assert torch.equal(G._stats(crop, "detect"), G._stats(crop, "input"))
    files = sorted(p for p in photos.iterdir() if p.name.startswith("photo_"))[:1]
    plain = G.gate_samples(files, seed=3, progress=False)
    detect = G.gate_samples(files, seed=3, progress=False, grid="detect")
    assert detect.kinds == plain.kinds and torch.equal(detect.targets, plain.targets)
    assert not torch.equal(detect.stats, plain.stats)    # the resized inputs were read on their blocks
    with pytest.raises(ValueError, match="grid must be one of"):
        G.gate_samples(files, progress=False, grid="shifted")


def _gated_module():
    return perturb(afd_ext.AFDModule(32, width=2, act="relu6", gate="global"), 0.05).eval()


def _gated_checkpoint(path, holdout=0.99):
    afd = perturb(afd_ext.AFDModule(32, width=2, act="relu6", gate="global"), 0.05)
    return str(save_checkpoint(path, afd, {"backbone": "efficientnet_lite0", "recipe": {"holdout": holdout}}))


def test_fit_gate_cli_changes_only_the_gate_head(photos, tmp_path, capsys):
    src = _gated_checkpoint(tmp_path / "src.safetensors")
    out = tmp_path / "fitted.safetensors"
    assert main(["fit-gate", src, "--data", str(photos), "--out", str(out), "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["held_out_files"] == 1 and record["photos"] == 6 and record["holdout"] == 0.99
    assert record["grid"] == "input"
    before, _ = load_checkpoint(src)
    after, config = load_checkpoint(out)
    assert config["gate_fit"]["l2"] in G.L2_GRID and config["backbone"] == "efficientnet_lite0"
    assert config["lineage"][0]["checkpoint"].endswith("src.safetensors") and len(config["lineage"]) == 1
    assert config["data"]["lineage_holdout_files"] is None  # the source cannot say what it held out
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    assert changed == {"gate_head.weight", "gate_head.bias"}
    # the op computes the fitted logit: statistics x weight + bias
    img = data.to_tensor(data.degrade(make_photo(300, 400, seed=1), [10], "resized"))[None]
    z = after.gate_logit(img)
    torch.testing.assert_close(z.double(), reference.gate_statistics(img, torch.float64) @ after.gate_head.weight[0]
                               .double() + after.gate_head.bias.double(), rtol=1e-4, atol=1e-4)
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=str(out))  # loads like any checkpoint
    assert model.afd.gate_mode == "global"
    # --grid detect: the statistics read where a detect module reads its gate; recorded
    detect = tmp_path / "fitted-detect.safetensors"
    assert main(["fit-gate", src, "--data", str(photos), "--out", str(detect), "--no-progress",
                 "--grid", "detect"]) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == "detect"
    assert load_checkpoint(detect)[1]["gate_fit"]["grid"] == "detect"


def test_fit_gate_refuses_what_it_cannot_fit(photos, tmp_path, capsys):
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(plain, afd_ext.AFDModule(32, width=2, act="relu6"), {"backbone": "efficientnet_lite0"})
    assert main(["fit-gate", str(plain), "--data", str(photos), "--out", str(tmp_path / "o.safetensors")]) != 0
    assert "no whole-image gate" in capsys.readouterr().err
    src = _gated_checkpoint(tmp_path / "src.safetensors")
    assert main(["fit-gate", src, "--data", str(photos), "--out", str(tmp_path / "o.pt")]) != 0
    assert ".safetensors" in capsys.readouterr().err
    no_recipe = tmp_path / "norecipe.safetensors"
    save_checkpoint(no_recipe, afd_ext.AFDModule(32, width=2, act="relu6", gate="global"),
                    {"backbone": "efficientnet_lite0"})
    assert main(["fit-gate", str(no_recipe), "--data", str(photos), "--out", str(tmp_path / "o.safetensors")]) != 0
    assert "hold-out" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
