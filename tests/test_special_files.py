"""Special files, oversized files and pixel bombs, and odd pixel formats, through every reader a user meets
them by (the library, predict, eval, train, the Pipeline's torchvision route): a FIFO or /dev/zero is never
opened, a header declaring too many pixels or an extreme aspect ratio is refused before anything is
allocated, each bad file is reported and the others classified. CPU, tiny models, a few seconds."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext import data
from afd_ext.cli import main
from helpers import TRAIN_QUICK, jpeg_bytes, jpeg_declaring, make_photo, png_declaring


@pytest.fixture
def hostile(tmp_path, photos, unblock_fifos):
    """A folder of good labelled photos plus every kind of file that hung, ate memory or stopped
    the run: a FIFO and a symlink to /dev/zero named .jpg, a 40000x1 PNG (~100 bytes), a PNG
    declaring 20000x20000, an 8x65000 JPEG header, a truncated JPEG, text named .jpg."""
    d = tmp_path / "hostile"
    d.mkdir()
    for f in sorted(photos.iterdir())[:2]:
        (d / f.name).write_bytes(f.read_bytes())
    os.mkfifo(d / "n01440764_fifo.jpg")
    unblock_fifos(d / "n01440764_fifo.jpg")
    os.symlink("/dev/zero", d / "n01440764_zero.jpg")
    (d / "n01440764_strip.png").write_bytes(png_declaring(40000, 1))
    (d / "n01440764_huge.png").write_bytes(png_declaring(20000, 20000))
    (d / "n01440764_wide.jpg").write_bytes(jpeg_declaring(65000, 8))
    full = jpeg_bytes(make_photo(80, 96, seed=9))
    (d / "n01440764_cut.jpg").write_bytes(full[: len(full) // 3])
    (d / "n01440764_text.jpg").write_text("not an image\n")
    return d


BAD_NAMES = {"n01440764_fifo.jpg": "not a regular file", "n01440764_zero.jpg": "not a regular file",
             "n01440764_strip.png": "aspect ratio", "n01440764_huge.png": "too large",
             "n01440764_wide.jpg": "aspect ratio", "n01440764_cut.jpg": "truncated",
             "n01440764_text.jpg": "not an image"}


# -- special files and pixel bombs -----------------------------------------------------------------

def test_readers_refuse_special_files_and_bombs_before_allocating(hostile, monkeypatch):
    assert len(png_declaring(40000, 1)) < 250
    for name, reason in BAD_NAMES.items():
        with pytest.raises(data.ImageError, match=reason) as err:
            data.load_image(hostile / name)
        assert err.value.path == str(hostile / name)
    with pytest.raises(data.ImageError, match="not a regular file"):
        data.read_image_bytes("/dev/zero")
    # the pixel budget holds whatever Pillow's global is set to
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(data.ImageError, match="pixel budget"):
        data.decode_image(png_declaring(20000, 20000), "huge")
    # the size cap: a regular file larger than MAX_FILE_BYTES is not read
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1000)
    big = hostile / "n01440764_0.jpg"
    with pytest.raises(data.ImageError, match="size cap"):
        data.read_image_bytes(big, max_bytes=1000)
    # every non-folder entry of a folder is listed (so loading reports it), special files included
    names = {f.name for f in data.list_images(hostile)}
    assert set(BAD_NAMES) <= names
    assert data.list_images(hostile / "n01440764_fifo.jpg") == [hostile / "n01440764_fifo.jpg"]


def test_predict_reports_each_hostile_file_and_classifies_the_rest(hostile, checkpoint, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(["predict", str(hostile), "/dev/zero", str(hostile / "n01440764_fifo.jpg"), "--checkpoint", checkpoint,
               "--device", "cpu", "--topk", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = {os.path.basename(r["path"]): r for r in result["predictions"]}
    assert result["n_ok"] == 2 and result["n_failed"] == len(BAD_NAMES) + 2
    for name, reason in BAD_NAMES.items():
        assert reason in rows[name]["error"], (name, rows[name])
    assert "not a regular file" in rows["zero"]["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_pipeline_torchvision_decoder_checks_the_header_first(checkpoint, hostile):
    """The batched torchvision/nvjpeg route reads the header size before decoding."""
    from afd_ext.inference.decode import nvjpeg_candidate
    from afd_ext.inference.pipeline import Pipeline
    wide = jpeg_declaring(65000, 8)
    assert not nvjpeg_candidate(wide)
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint)
    pipe = Pipeline(model, device="cpu", decoder="torchvision")
    good = (hostile / "n01440764_0.jpg").read_bytes()
    res = pipe.predict_bytes([good, wide, png_declaring(40000, 1)], topk=1)
    assert "topk" in res[0] and "aspect ratio" in res[1]["error"] and "aspect ratio" in res[2]["error"]
    # an image that cannot be resized never stops the others in its batch (tensor path)
    from afd_ext.inference.decode import resize_center_crop_tensor
    with pytest.raises(ValueError, match="aspect ratio"):
        resize_center_crop_tensor(torch.zeros(3, 1, 40000, dtype=torch.uint8))


def test_eval_reports_special_files(hostile, checkpoint, tmp_path, capsys, unblock_fifos):
    rc = main(["eval", str(hostile), "--checkpoint", checkpoint, "--quality", "10", "--no-progress",
               "--json", str(tmp_path / "r.json")])
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    skipped = {os.path.basename(s["path"]): s["error"] for s in result["skipped"]}
    assert result["n_images"] == 2 and set(skipped) == set(BAD_NAMES)
    assert "not a regular file" in skipped["n01440764_fifo.jpg"]
    capsys.readouterr()
    fifo = tmp_path / "n01440764_alone.jpg"
    os.mkfifo(fifo)
    unblock_fifos(fifo)
    for target in (fifo, tmp_path / "hostile" / "n01440764_fifo.jpg"):
        assert main(["eval", str(target), "--checkpoint", checkpoint, "--quality", "10", "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "not a regular file" in err and "no such file" not in err and "Traceback" not in err


def test_train_reports_unreadable_images(hostile, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(hostile), "--out", str(out)] + TRAIN_QUICK) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    met = summary["unreadable_files"]
    # the special files are screened out before the run; the rest are reported as they are met
    assert met["count"] >= 2 and len(met["first"]) <= 5
    assert any("n01440764_fifo.jpg: not a regular file" in line for line in met["first"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert sum(e.get("unreadable", {}).get("new", 0) for e in log) == met["count"]
    assert f"skipped {met['count']} unreadable training image(s)" in capsys.readouterr().err


def test_float_tiff_in_0_1_is_scaled_not_black(tmp_path):
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    img = np.asarray(data.load_image(tmp_path / "f.tif"), dtype=float)
    assert img.shape == (48, 64, 3) and np.abs(img[..., 0] - ramp * 255).max() <= 1
    Image.fromarray(ramp * 200, "F").save(tmp_path / "g.tif")  # floats above 1: 0..255 as they are
    assert np.abs(np.asarray(data.load_image(tmp_path / "g.tif"), dtype=float)[..., 0] - ramp * 200).max() <= 1


@pytest.mark.parametrize("scale", [1.0, 200.0])
def test_float_tiff_nan_and_inf_read_as_0(tmp_path, scale):
    """README "Errors": a float TIFF's NaN/Inf pixels are read as 0, and do not set the scale of the
    others (an Inf peak would turn the image black; a NaN would reach the classifier)."""
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64) * scale
    bad = ramp.copy()
    bad[0, :8], bad[1, :8], bad[2, :8] = np.nan, np.inf, -np.inf
    Image.fromarray(bad, "F").save(tmp_path / "nan.tif")
    img = np.asarray(data.load_image(tmp_path / "nan.tif"), dtype=float)
    assert img.shape == (48, 64, 3)
    assert (img[:3, :8] == 0).all(), img[:3, :8, 0]
    levels = ramp * (255 if scale == 1.0 else 1)  # 0..1 scaled; above 1: the levels as they are
    assert np.abs(img[..., 0] - levels)[3:].max() <= 1 and np.abs(img[:3, 8:, 0] - levels[:3, 8:]).max() <= 1
