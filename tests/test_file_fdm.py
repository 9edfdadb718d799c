"""Side information: the FDM estimated on the decoded file at its own size (``AFDModule.file_fdm``,
``AFDClassifier.file_fdm``, ``Pipeline(fdm_source='file')``, ``evaluate(fdm_source='file')``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import afd_ext
from afd_ext import data
from afd_ext.inference.decode import resize_center_crop_tensor
from afd_ext.inference.pipeline import Pipeline
from afd_ext.modules import FDM_SOURCES, AFDModule, crop_block_indices
from helpers import jpeg_bytes, make_photo, perturb


def _afd(gate="none", fdm="spatial", seed=0):
    return perturb(AFDModule(32, width=4, act="relu6", fdm=fdm, gate=gate), 0.05, seed).eval()


def _source(h, w, seed=0):
    return data.to_tensor(make_photo(h, w, seed))


def test_unresized_source_gives_the_inputs_own_fdm_on_its_blocks():
    """A 256x320 photo: the transform does not resize it (short side 256) and crops at (48, 16),
    both multiples of 8, so every block of the crop is a block of the photo: the file FDM must be
    the crop's own FDM, block for block, put on the feature grid (nearest)."""
    afd = _afd()
    src = _source(256, 320)
    nw, nh, left, top = data.center_crop_geometry(320, 256)
    assert (nw, nh, left, top) == (320, 256, 48, 16)
    crop = src[:, top:top + 224, left:left + 224].unsqueeze(0)
    fdm, z = afd.file_fdm([src], (112, 112), 224)
    assert z is None and fdm.shape == (1, 32, 112, 112)
    own = afd.compute_fdm(crop, (28, 28), torch.float32)  # one vector per 8x8 block of the crop
    torch.testing.assert_close(fdm, F.interpolate(own, size=(112, 112), mode="nearest"), rtol=0, atol=0)


def test_crop_of_an_unresized_file_is_the_input_itself():
    afd = _afd(gate="global")
    with torch.no_grad():
        afd.gate_head.bias.fill_(3.0)  # open: the gate's value must reach the FDM
    src = _source(224, 224, seed=1)
    fdm, z = afd.file_fdm([src], (112, 112), 224, resize=None)
    own = afd.compute_fdm(src.unsqueeze(0), (112, 112), torch.float32, afd.gate_logit(src.unsqueeze(0)))
    torch.testing.assert_close(fdm, F.interpolate(own, size=(112, 112), mode="nearest"))
    torch.testing.assert_close(z, afd.gate_logit(src.unsqueeze(0)))
    assert afd.gate_value(z).item() > 0


def test_block_indices_follow_the_resize():
    """Each feature cell takes the block under its centre, mapped back through the resize (here a
    2x downscale of a 512x640 photo)."""
    nw, nh, left, top = data.center_crop_geometry(640, 512)
    assert (nw, nh) == (320, 256)
    rows, cols = crop_block_indices((512, 640), (nh, nw), (left, top), 224, (112, 112))
    for i in (0, 5, 60, 111):
        # cell i covers crop pixels 2i..2i+2: centre 2i+1 -> resized 2i+1+top -> source x2
        assert rows[i].item() == (2 * i + 1 + top) * 2 // 8
        assert cols[i].item() == (2 * i + 1 + left) * 2 // 8


def test_file_fdm_is_the_whole_files_fdm_where_the_crop_lands():
    """The FDE-Net runs on the blocks the crop shows only; the values must be those of the whole
    file's FDM (odd sizes: the blocks at the file's edge are padded as the whole file's are)."""
    afd = _afd(gate="global", seed=3)
    with torch.no_grad():
        afd.gate_head.bias.fill_(2.0)
    for h, w in [(301, 419), (419, 301), (999, 260), (224, 230)]:
        src = _source(h, w, seed=h)
        img = src.unsqueeze(0)
        z = afd.gate_logit(img)
        whole = afd.fde(afd._pad8(img, torch.float32), torch.float32, z)
        nw, nh, left, top = data.center_crop_geometry(w, h)
        rows, cols = crop_block_indices((h, w), (nh, nw), (left, top), 224, (112, 112))
        fdm, z_file = afd.file_fdm([src], (112, 112), 224)
        torch.testing.assert_close(fdm, whole[:, :, rows][:, :, :, cols], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(z_file, z)


def test_global_and_no_fdm_modes_give_one_vector_per_image():
    for mode in ("global", "none"):
        afd = _afd(gate="global", fdm=mode)
        fdm, z = afd.file_fdm([_source(200, 300), _source(240, 240, 1)], (112, 112), 224)
        assert fdm.shape == (2, 32, 112, 112) and z.shape == (2,)
        assert torch.equal(fdm[:, :, :1, :1].expand_as(fdm), fdm)


def test_forward_with_an_fdm_uses_it(checkpoint_small):
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint_small).eval()
    photo = make_photo(300, 400, 2)
    src, x = data.to_tensor(photo), data.to_tensor(data.resize_center_crop(photo)).unsqueeze(0)
    fdm, _ = model.file_fdm([src], 224)
    feat, pixels = model.stem_features(x)
    ref = model.adapter.rest(afd_ext.reference.dedrift(feat, model.afd.fe(feat), fdm, model.afd.act))
    torch.testing.assert_close(model(x, fdm=fdm), ref)
    assert not torch.equal(model(x, fdm=fdm), model(x))  # a different FDM changes the answer
    assert torch.equal(model(x, fdm=torch.zeros_like(fdm)), model(x, use_afd=False))  # FDM 0: no correction
    with pytest.raises(ValueError, match="fdm must be a floating tensor"):
        model(x, fdm=fdm[:, :, :56])


def test_bad_sources_are_refused():
    afd = _afd()
    with pytest.raises(ValueError, match="uint8 \\(3, H, W\\)"):
        afd.file_fdm([torch.zeros(3, 64, 64)], (112, 112), 224)
    with pytest.raises(ValueError, match="uint8 \\(3, H, W\\)"):
        afd.file_fdm([torch.zeros(1, 3, 64, 64, dtype=torch.uint8)], (112, 112), 224)
    with pytest.raises(ValueError, match="smaller than"):
        afd.file_fdm([torch.zeros(3, 100, 300, dtype=torch.uint8)], (112, 112), 224, resize=None)
    with pytest.raises(ValueError, match="no sources"):
        afd.file_fdm([], (112, 112), 224)


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("side")
    paths = []
    for i, (h, w) in enumerate([(300, 420), (500, 375), (224, 224)]):
        p = d / f"n01440764_{i}.jpg"
        p.write_bytes(jpeg_bytes(make_photo(h, w, seed=20 + i), quality=20))
        paths.append(p)
    return paths


def test_pipeline_file_fdm_is_the_models(checkpoint_small, jpeg_files):
    """The deployed pipeline (fused ops, channels_last, decode workers) answers what the model does
    with the FDM of each file decoded at its own size."""
    pipe = Pipeline.from_checkpoint("efficientnet_lite0", checkpoint_small, device="cpu", fdm_source="file")
    plain = Pipeline.from_checkpoint("efficientnet_lite0", checkpoint_small, device="cpu")
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint_small).eval()
    rows, rows_input = pipe.predict_files(jpeg_files, topk=1), plain.predict_files(jpeg_files, topk=1)
    for p, row, row_input in zip(jpeg_files, rows, rows_input):
        src = data.decode_image(p.read_bytes())
        x = data.to_tensor(data.resize_center_crop(src)).unsqueeze(0)
        fdm, _ = model.file_fdm([data.to_tensor(src)], 224)
        prob = model(x, fdm=fdm).softmax(-1)[0]
        assert row["afd"] and row["topk"][0]["prob"] == pytest.approx(prob.max().item(), abs=1e-4)
        assert row["topk"][0]["prob"] != pytest.approx(row_input["topk"][0]["prob"], abs=1e-6)
    # predict_tensor, resizing the decoded files itself (on the device: within a grey level of Pillow),
    # takes them as the files
    t = data.to_tensor(data.decode_image(jpeg_files[0].read_bytes())).unsqueeze(0)
    fdm, _ = model.file_fdm([t[0]], 224)
    prob = model(resize_center_crop_tensor(t), fdm=fdm).softmax(-1).max().item()
    assert pipe.predict_tensor(t, topk=1)[0]["topk"][0]["prob"] == pytest.approx(prob, abs=1e-4)
    assert "fdm_source='file'" in repr(pipe)
    with pytest.raises(ValueError, match="fdm_source"):
        Pipeline(pipe.model, device="cpu", deploy=False, fdm_source="crop")


def test_evaluate_file_fdm(checkpoint_small, jpeg_files):
    """crop protocol: the file is the input itself, so the file FDM is the input's and the figures
    are the same; full protocol: they are the figures of the model with the file FDM."""
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint_small).eval()
    files = [str(p) for p in jpeg_files]
    kw = dict(qualities=[10], progress=False)
    a = afd_ext.evaluate(model, files, protocol="crop", **kw)
    b = afd_ext.evaluate(model, files, protocol="crop", fdm_source="file", **kw)
    assert b["fdm_source"] == "file" and a["fdm_source"] == "input"
    assert a["qualities"] == b["qualities"] and a["clean"]["top1_direct"] == b["clean"]["top1_direct"]
    r = afd_ext.evaluate(model, files, protocol="full", fdm_source="file", as_predict=True, skip_afd_above=None,
                         **kw)
    assert r["qualities"][0]["afd_ran"] == 100.0
    assert "FDM from the file" in afd_ext.evaluation.format_table(r)
    with pytest.raises(ValueError, match="fdm_source"):
        afd_ext.evaluate(model, files, fdm_source="crop", **kw)


def test_fdm_sources_are_the_clis_choices():
    from afd_ext.cli import build_parser
    parser = build_parser()
    for cmd in (["eval", "x"], ["predict", "x"]):
        assert parser.parse_args([*cmd, "--fdm-source", "file"]).fdm_source == "file"
        assert parser.parse_args(cmd).fdm_source == "input"
        with pytest.raises(SystemExit):
            parser.parse_args([*cmd, "--fdm-source", "crop"])
    assert FDM_SOURCES == ("input", "file")


def test_ray_predictor_passes_the_fdm_source_on(checkpoint_small, jpeg_files):
    from afd_ext.ray_data import Predictor
    pred = Predictor(checkpoint=checkpoint_small, device="cpu", topk=1, fdm_source="file")
    assert pred.pipe.fdm_source == "file"
    pipe = Pipeline.from_checkpoint("efficientnet_lite0", checkpoint_small, device="cpu", fdm_source="file")
    out = pred({"bytes": [jpeg_files[1].read_bytes()], "path": ["x"]})
    assert out["top1_prob"][0] == pytest.approx(pipe.predict_files([jpeg_files[1]], topk=1)[0]["topk"][0]["prob"],
                                                abs=1e-5)
