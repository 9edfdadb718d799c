"""afd_ext.pipeline: batched file/bytes/tensor inference, robust to bad files (CPU)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext.data import ImageError, resize_center_crop, to_tensor
from afd_ext.inference.decode import nvjpeg_candidate, preprocess_batch, resize_center_crop_tensor
from afd_ext.inference.pipeline import Pipeline
from helpers import jpeg_bytes, make_photo, needs_data

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def pipe(checkpoint_small):
    return Pipeline.from_checkpoint("efficientnet_lite0", checkpoint_small, device="cpu", workers=2)


@pytest.fixture(scope="module")
def pipe_all(pipe):
    """The same deployed model running the AFD on every file (lossless ones included), to compare
    a JPEG's prediction with its lossless copy's."""
    return Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    files = {}
    for i, (h, w) in enumerate([(300, 400), (256, 256), (410, 290)]):
        files[f"jpg{i}"] = d / f"photo{i}.jpg"
        files[f"jpg{i}"].write_bytes(jpeg_bytes(make_photo(h, w, i)))
    rgba = np.concatenate([np.asarray(make_photo(240, 320, 7)), np.full((240, 320, 1), 128, np.uint8)], -1)
    files["png_alpha"] = d / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(files["png_alpha"])
    full = jpeg_bytes(make_photo(300, 300, 9))
    files["truncated"] = d / "truncated.jpg"
    files["truncated"].write_bytes(full[: len(full) // 2])
    files["text"] = d / "notes.jpg"
    files["text"].write_text("this is not an image\n")
    # EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise for display.
    stored = make_photo(240, 360, 11)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    files["exif"] = d / "exif_rot.jpg"
    files["exif"].write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    with Image.open(files["exif"]) as im:  # the same decoded pixels, turned by hand, saved losslessly
        turned = im.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    files["exif_manual"] = d / "exif_manual.png"
    turned.save(files["exif_manual"])
    files["exif_ignored"] = d / "exif_ignored.png"  # the stored pixels, orientation ignored
    with Image.open(files["exif"]) as im:
        im.convert("RGB").save(files["exif_ignored"])
    sub = d / "folder"
    (sub / "deeper").mkdir(parents=True)
    files["sub_a"] = sub / "a.jpg"
    files["sub_a"].write_bytes(jpeg_bytes(make_photo(200, 260, 21)))
    files["sub_b"] = sub / "deeper" / "b.png"
    make_photo(230, 230, 22).save(files["sub_b"])
    (sub / "readme.txt").write_text("ignored: not an image extension")
    files["folder"] = sub
    files["empty_folder"] = d / "empty"
    files["empty_folder"].mkdir()
    files["missing"] = d / "missing.jpg"
    return files


def _check_topk(r, k):
    assert "error" not in r, r
    assert len(r["topk"]) == k
    probs = [c["prob"] for c in r["topk"]]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    for c in r["topk"]:
        assert isinstance(c["index"], int) and 0 <= c["index"] < 1000
        assert c["name"] == afd_ext.data.class_name(c["index"])


def _same_predictions(a, b, atol=1e-4):
    """The same top-k within ``atol``: the same classes in the same order, except that two neighbours whose
    probabilities lie within ``atol`` of each other may swap (a near-tie that rounding may order either way)."""
    ia, ib = [c["index"] for c in a["topk"]], [c["index"] for c in b["topk"]]
    pa, pb = [c["prob"] for c in a["topk"]], [c["prob"] for c in b["topk"]]
    np.testing.assert_allclose(pa, pb, atol=atol)
    for k, (x, y) in enumerate(zip(ia, ib)):
        if x != y:  # a near-tie: a neighbour in this list (the one it swapped with) has nearly its probability
            if k + 1 == len(ia):  # the last rank: its partner may be the next class, outside the top-k
                assert abs(pa[k] - pb[k]) <= atol, (ia, ib, pa, pb)
                continue
            neighbours = [pa[j] for j in (k - 1, k + 1) if 0 <= j < len(pa)]
            assert x in ib and y in ia and min(abs(pa[k] - q) for q in neighbours) <= 2 * atol, (ia, ib, pa, pb)


def test_pipeline_is_deployed(pipe):
    assert pipe.device.type == "cpu" and pipe.dtype == torch.float32 and pipe.decoder == "pillow"
    assert pipe.use_afd and pipe.model.afd.fused
    assert all(rc.deployed for rc in pipe.model.afd.fe.repconvs())


def test_mixed_files_order_and_errors(pipe, images):
    order = ["jpg0", "png_alpha", "truncated", "text", "jpg1", "missing", "jpg2", "empty_folder"]
    paths = [images[k] for k in order]
    res = pipe.predict_files(paths, topk=3, batch_size=2)
    assert [r["path"] for r in res] == [str(p) for p in paths]
    bad = {"truncated", "text", "missing", "empty_folder"}
    for key, r in zip(order, res):
        if key in bad:
            assert "topk" not in r and r["error"], (key, r)
        else:
            _check_topk(r, 3)
    errors = {k: r["error"] for k, r in zip(order, res) if k in bad}
    assert "truncated" in errors["truncated"]
    assert "not an image" in errors["text"]
    assert "no such file" in errors["missing"]
    assert "no images" in errors["empty_folder"]


def test_batch_size_does_not_change_results(pipe, images):
    paths = [images[k] for k in ("jpg0", "jpg1", "text", "jpg2", "png_alpha")]
    one = pipe.predict_files(paths, topk=5, batch_size=1)
    many = pipe.predict_files(paths, topk=5, batch_size=4)
    for a, b in zip(one, many):
        assert a["path"] == b["path"]
        if "error" in a:
            assert a == b
        else:
            _same_predictions(a, b)


def test_strict_raises_first_bad_file(pipe, images):
    paths = [images["jpg0"], images["text"], images["truncated"], images["jpg1"]]
    with pytest.raises(ImageError) as info:
        pipe.predict_files(paths, strict=True, batch_size=8)
    assert info.value.path == str(images["text"])
    with pytest.raises(ImageError) as info:
        pipe.predict_files([images["jpg0"], images["jpg1"], images["missing"]], strict=True, batch_size=1)
    assert info.value.path == str(images["missing"])


def test_exif_orientation_is_applied(pipe_all, images):
    rot, manual, ignored = pipe_all.predict_files([images["exif"], images["exif_manual"], images["exif_ignored"]],
                                              topk=5, batch_size=1)
    _same_predictions(rot, manual, atol=1e-5)
    # and the orientation matters for this image: ignoring it gives other probabilities
    assert [c["prob"] for c in rot["topk"]] != pytest.approx([c["prob"] for c in ignored["topk"]], abs=1e-4)


def test_folders_are_expanded_in_place(pipe, images):
    res = pipe.predict_files([images["jpg0"], images["folder"], images["jpg1"]], topk=1)
    assert [r["path"] for r in res] == [str(images[k]) for k in ("jpg0", "sub_a", "sub_b", "jpg1")]
    assert all("topk" in r for r in res)
    res = pipe.predict_files([images["folder"]], topk=1, expand_dirs=False)
    assert res == [{"path": str(images["folder"]), "error": "is a directory, not an image file"}]


def test_predict_bytes_matches_files(pipe, images):
    keys = ["jpg0", "text", "png_alpha", "exif"]
    datas = [images[k].read_bytes() for k in keys]
    by_bytes = pipe.predict_bytes(datas, names=keys, topk=4, batch_size=3)
    by_files = pipe.predict_files([images[k] for k in keys], topk=4, batch_size=3)
    assert [r["path"] for r in by_bytes] == keys
    for a, b in zip(by_bytes, by_files):
        assert ("error" in a) == ("error" in b)
        if "topk" in a:
            _same_predictions(a, b, atol=1e-5)
    assert pipe.predict_bytes([b"", datas[0]])[0] == {"path": "<bytes 0>", "error": "empty data"}
    with pytest.raises(ValueError):
        pipe.predict_bytes(datas, names=["only one"])


def test_predict_tensor(pipe_all, images):
    keys = ["jpg0", "jpg2"]
    photos = [afd_ext.data.load_image(images[k]) for k in keys]
    # the CPU route: afd eval's transform (Pillow), in the worker, before batching
    crops = torch.stack([to_tensor(resize_center_crop(p)) for p in photos])
    from_tensor = pipe_all.predict_tensor(crops, topk=5)
    from_files = pipe_all.predict_files([images[k] for k in keys], topk=5)
    for a, b in zip(from_tensor, from_files):
        _same_predictions(a, b, atol=1e-5)
    # float input in [0, 1] is accepted too
    _same_predictions(pipe_all.predict_tensor(crops.float() / 255, topk=5)[0], from_files[0], atol=1e-4)
    # raw (not yet cropped) images: the device transform, within the resizers' rounding of the files' route
    decoded = [to_tensor(p) for p in photos]
    device_crops = preprocess_batch(decoded)
    assert device_crops.shape == (2, 3, 224, 224) and device_crops.dtype == torch.uint8
    by_device = pipe_all.predict_tensor(device_crops, topk=5)
    for a, b in zip(by_device, from_files):
        _same_predictions(a, b, atol=2e-2)
    _same_predictions(pipe_all.predict_tensor(decoded[0], topk=5)[0], by_device[0], atol=1e-5)
    assert pipe_all.predict_tensor(torch.zeros(0, 3, 224, 224, dtype=torch.uint8)) == []


def test_afd_changes_predictions(checkpoint_small, pipe, images):
    plain = Pipeline.from_checkpoint("efficientnet_lite0", None, device="cpu", use_afd=False)
    assert not plain.use_afd
    a = pipe.predict_files([images["jpg1"]], topk=5)[0]
    b = plain.predict_files([images["jpg1"]], topk=5)[0]
    assert [c["prob"] for c in a["topk"]] != pytest.approx([c["prob"] for c in b["topk"]], abs=1e-4)


def test_device_transform_matches_pillow(images):
    img = afd_ext.data.load_image(images["jpg2"])
    ours = resize_center_crop_tensor(to_tensor(img))[0]
    pil = to_tensor(resize_center_crop(img))
    assert ours.shape == pil.shape == (3, 224, 224)
    diff = (ours.int() - pil.int()).abs()
    assert diff.max() <= 2 and diff.float().mean() < 0.5


def test_torchvision_decoder_routing(pipe, images):
    """The GPU route (batched torchvision decode, Pillow for what it must not take), run on CPU."""
    assert nvjpeg_candidate(images["jpg0"].read_bytes())
    for key in ("exif", "truncated", "text", "png_alpha"):
        assert not nvjpeg_candidate(images[key].read_bytes()), key
    cmyk = io.BytesIO()
    make_photo(64, 64, 3).convert("CMYK").save(cmyk, "JPEG")
    assert not nvjpeg_candidate(cmyk.getvalue())
    tv = Pipeline(pipe.model, device="cpu", decoder="torchvision", deploy=False)
    keys = ["jpg0", "exif", "truncated", "text", "jpg1", "png_alpha"]
    a = tv.predict_files([images[k] for k in keys], topk=5, batch_size=4)
    b = pipe.predict_files([images[k] for k in keys], topk=5, batch_size=4)
    for key, ra, rb in zip(keys, a, b):
        assert ra["path"] == rb["path"] and ("error" in ra) == ("error" in rb)
        if "topk" in ra:  # the device resize (torch) vs the worker's (Pillow): within their rounding
            _same_predictions(ra, rb, atol=2e-2 if key.startswith("jpg") else 1e-4)


def test_argument_checks(checkpoint_small, pipe, images):
    with pytest.raises(ValueError):
        pipe.predict_files([images["jpg0"]], topk=0)
    with pytest.raises(ValueError):
        pipe.predict_files([images["jpg0"]], batch_size=0)
    with pytest.raises(ValueError):
        Pipeline(pipe.model, device="cpu", dtype="float16", deploy=False)
    with pytest.raises(ValueError):
        Pipeline(pipe.model, device="cpu", decoder="magic", deploy=False)
    assert pipe.predict_files([]) == []


def test_cli_predict_json(checkpoint_small, images, tmp_path):
    from afd_ext.cli import main
    out = tmp_path / "pred.json"
    rc = main(["predict", str(images["jpg0"]), str(images["text"]), "--checkpoint", checkpoint_small, "--device", "cpu",
               "--topk", "2", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["n_ok"] == 1 and data["n_failed"] == 1
    assert data["predictions"][0]["path"] == str(images["jpg0"]) and len(data["predictions"][0]["topk"]) == 2
    assert data["predictions"][1]["path"] == str(images["text"]) and data["predictions"][1]["error"]


def test_cuda_graphs_need_a_cuda_device():
    import afd_ext
    from afd_ext.inference.pipeline import Pipeline
    if torch.cuda.is_available():
        pytest.skip("checks the CPU error; a CUDA machine would build the graphs")
    model = afd_ext.attach(afd_ext.load_classifier())
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        Pipeline(model, device="cpu", cuda_graphs=True)


def test_high_quality_jpegs_skip_the_afd(checkpoint_small, pipe, tmp_path):
    """A JPEG whose tables say quality > SKIP_AFD_ABOVE_QUALITY runs the classifier alone (same
    result as use_afd=False), and so does a lossless file; low-quality JPEGs run the AFD; the row
    says the format, the quality estimate and whether the AFD ran."""
    from afd_ext.data import SKIP_AFD_ABOVE_QUALITY
    img = make_photo(260, 300, 7)
    files = {}
    for q in (10, SKIP_AFD_ABOVE_QUALITY, SKIP_AFD_ABOVE_QUALITY + 1, 95):
        files[q] = tmp_path / f"q{q}.jpg"
        files[q].write_bytes(jpeg_bytes(img, quality=q))
    png = tmp_path / "a.png"
    img.save(png)
    paths = [files[10], files[SKIP_AFD_ABOVE_QUALITY], png, files[95], files[SKIP_AFD_ABOVE_QUALITY + 1]]
    res = pipe.predict_files(paths, topk=3, batch_size=8)
    assert [r["jpeg_quality"] for r in res] == [10, SKIP_AFD_ABOVE_QUALITY, None, 95, SKIP_AFD_ABOVE_QUALITY + 1]
    assert [r["format"] for r in res] == ["JPEG", "JPEG", "PNG", "JPEG", "JPEG"]
    assert [r["afd"] for r in res] == [True, True, False, False, False]
    plain = Pipeline.from_checkpoint("efficientnet_lite0", None, device="cpu", use_afd=False)
    for i in (2, 3, 4):
        _same_predictions(res[i], plain.predict_files([paths[i]], topk=3)[0], atol=1e-6)
    always = Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=None)
    assert [r["afd"] for r in always.predict_files([files[95], png], topk=3)] == [True, True]
    with pytest.raises(ValueError, match="skip_afd_above"):
        Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=101)


# -- hostile inputs, round 2 (issue 22): decoding, memory, the AFD decision -----------------------------

def test_lossless_files_skip_the_afd_and_each_row_says_why(pipe, tmp_path):
    img = make_photo(120, 160, 4)
    cases = {"a.png": ("PNG", {}, True), "b.bmp": ("BMP", {}, True), "c.gif": ("GIF", {}, True),
             "d.tif": ("TIFF", {}, True), "e.tif": ("TIFF", {"compression": "tiff_lzw"}, True),
             "f.tif": ("TIFF", {"compression": "jpeg"}, False), "g.webp": ("WEBP", {"lossless": True}, True),
             "h.webp": ("WEBP", {"quality": 30}, False), "i.jpg": ("JPEG", {"quality": 20}, False)}
    for name, (fmt, kw, _) in cases.items():
        img.save(tmp_path / name, fmt, **kw)
    res = pipe.predict_files([tmp_path / n for n in cases], topk=1)
    for r, (name, (fmt, _, lossless)) in zip(res, cases.items()):
        assert "topk" in r, r
        assert (r["format"], r["lossless"], r["afd"]) == (fmt, lossless, not lossless), (name, r)
        assert r["jpeg_quality"] == (20 if fmt == "JPEG" else None)
    assert all(r["afd"] for r in Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=None)
               .predict_files([tmp_path / n for n in cases], topk=1))


@pytest.mark.parametrize("value", [True, False, 85.0, "85", -1])
def test_skip_afd_above_is_an_integer_quality_not_a_bool(pipe, value):
    with pytest.raises(ValueError, match="skip_afd_above must be an integer quality") as err:
        Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=value)
    assert repr(value) in str(err.value)


def test_skip_afd_above_takes_numpy_integers(pipe):
    assert Pipeline(pipe.model, device="cpu", deploy=False, skip_afd_above=np.int64(70)).skip_afd_above == 70


def _corrupt_exif():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    raw = bytearray(exif.tobytes())
    raw[8] = 0x94  # the TIFF header of the EXIF payload damaged: getexif() raises "not a TIFF file"
    return bytes(raw)


@pytest.mark.parametrize("decoder", ["pillow", "torchvision"])
def test_photos_with_a_corrupt_exif_block_are_classified(pipe, tmp_path, decoder):
    img = make_photo(200, 260, 12)
    paths = []
    for fmt, kw in (("PNG", {}), ("WEBP", {"quality": 90}), ("JPEG", {"quality": 70})):
        paths.append(tmp_path / f"bad_exif.{fmt.lower()}")
        img.save(paths[-1], fmt, exif=_corrupt_exif(), **kw)
    run = Pipeline(pipe.model, device="cpu", deploy=False, decoder=decoder, skip_afd_above=None)
    by_file = run.predict_files(paths, topk=3)
    by_bytes = run.predict_bytes([p.read_bytes() for p in paths], names=[p.name for p in paths], topk=3)
    clean = []
    for p in paths:  # the pixels as stored, without the EXIF block (PNG: lossless)
        clean.append(tmp_path / f"clean_{p.stem}_{p.suffix[1:]}.png")
        Image.open(p).save(clean[-1])
    for a, b, c in zip(by_file, by_bytes, run.predict_files(clean, topk=3)):
        assert "topk" in a and "topk" in b, (a, b)
        _same_predictions(a, b, atol=1e-6)
        # orientation 6 ignored: classified as stored (nvjpeg's JPEG: the device resize, its rounding)
        _same_predictions(a, c, atol=2e-2 if decoder == "torchvision" and a["path"].endswith(".jpeg") else 1e-6)


@pytest.mark.parametrize("decoder", ["pillow", "torchvision"])
def test_truncated_jpeg_with_an_end_marker_is_an_error_row(pipe, tmp_path, decoder):
    whole = jpeg_bytes(make_photo(300, 400, 13), quality=80)
    paths = {"good.jpg": whole}
    for k in (4, 2):  # head -c $((N/k)) photo.jpg > t.jpg; printf '\xff\xd9' >> t.jpg
        paths[f"cut{k}.jpg"] = whole[:len(whole) // k] + b"\xff\xd9"
    for name, payload in paths.items():
        (tmp_path / name).write_bytes(payload)
    run = Pipeline(pipe.model, device="cpu", deploy=False, decoder=decoder)
    res = run.predict_files([tmp_path / n for n in paths], topk=1)
    assert "topk" in res[0]
    for r in res[1:]:
        assert "topk" not in r and "truncated JPEG data" in r["error"], r
    with pytest.raises(ImageError, match="truncated JPEG data") as err:
        run.predict_files([tmp_path / "good.jpg", tmp_path / "cut2.jpg"], strict=True)
    assert err.value.path == str(tmp_path / "cut2.jpg")


@pytest.mark.parametrize("decoder", ["pillow", "torchvision"])
def test_full_resolution_photos_are_never_batched(pipe, tmp_path, monkeypatch, decoder):
    """Each photo is brought to the model's input size before batching: nothing larger than a crop
    is stacked or converted to float with others, so memory does not grow with the batch size
    times the photos' resolution (eight 24-megapixel JPEGs: 4.5 GB before, at batch size 8)."""
    run = Pipeline(pipe.model, device="cpu", deploy=False, decoder=decoder)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"big{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(make_photo(900, 1200, 30 + i)))
    reference = run.predict_files(paths, topk=3, batch_size=1)
    stacked = []
    real_stack = torch.stack

    def watching_stack(tensors, *a, **k):
        out = real_stack(tensors, *a, **k)
        stacked.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "stack", watching_stack)
    res = run.predict_files(paths, topk=3, batch_size=8)
    assert stacked and all(shape[-2:] == (224, 224) for shape in stacked), stacked
    for a, b in zip(res, reference):
        _same_predictions(a, b, atol=1e-6)


@needs_data
def test_resizing_each_photo_before_batching_keeps_the_top1():
    """The former order (full-resolution photos of one size stacked, then resized together on the
    device) and the worker's Pillow transform give the same top-1 on real photos (the shipped AFD)."""
    from helpers import DEV_IMAGES
    shipped = Pipeline.from_checkpoint("efficientnet_lite0", device="cpu", skip_afd_above=None)
    paths = sorted(DEV_IMAGES.iterdir())[::60]
    new = shipped.predict_files(paths, topk=1, batch_size=8)
    for path, r in zip(paths, new):
        full = to_tensor(afd_ext.data.load_image(path))
        old = shipped.predict_tensor(resize_center_crop_tensor(torch.stack([full, full]))[:1], topk=1)[0]
        assert r["topk"][0]["index"] == old["topk"][0]["index"], path
        assert abs(r["topk"][0]["prob"] - old["topk"][0]["prob"]) < 0.05


def test_a_path_too_long_to_look_up_is_its_own_error_row(tmp_path):
    """Pipeline.predict_files (the library route, not only the CLI): a name the file system refuses
    (ENAMETOOLONG) gets an error row; the other files are classified."""
    from PIL import Image

    import afd_ext
    from afd_ext.inference.pipeline import Pipeline
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (120, 60, 30)).save(good)
    too_long = tmp_path / ("x" * 300 + ".jpg")
    pipe = Pipeline(afd_ext.create_model("efficientnet_lite0", afd=False), device="cpu")
    rows = pipe.predict_files([good, too_long])
    assert "topk" in rows[0] and "error" not in rows[0]
    assert "error" in rows[1] and "look up" in rows[1]["error"]


def test_rows_say_which_grid_the_fdm_was_read_on(tmp_path):
    """A 224 JPEG, which the transform resizes to 256 (its blocks then 9.14 px apart), is read on its
    detected grid by the shipped model (grid='detect'); a JPEG whose short side is already 256 keeps
    8 px blocks (the input's own grid); with grid='input' every row says 'input', and a file that
    skips the AFD says None."""
    import copy
    photo = make_photo(300, 400, seed=0)
    resize_center_crop(photo).save(tmp_path / "small.jpg", quality=10)
    photo.resize((341, 256)).save(tmp_path / "big.jpg", quality=10)
    photo.save(tmp_path / "lossless.png")
    files = [tmp_path / n for n in ("small.jpg", "big.jpg", "lossless.png")]
    pipe = Pipeline.from_checkpoint("efficientnet_lite0", None, device="cpu")
    assert pipe.model.afd.grid == "detect"
    small, big, png = pipe.predict_files(files, topk=1)
    assert small["fdm_grid"] == "detected" and abs(small["block_period"] - 8 * 256 / 224) < 0.05
    assert big["fdm_grid"] == "input" and "block_period" not in big
    assert png["afd"] is False and png["fdm_grid"] is None  # lossless: the AFD does not run
    model = copy.deepcopy(pipe.model)
    model.afd.grid = "input"
    plain = Pipeline(model, device="cpu", deploy=False)
    assert [r["fdm_grid"] for r in plain.predict_files(files, topk=1)] == ["input", "input", None]
