"""Where compression happens: codecs, the eval protocols, the training mixture, JPEG quality estimates."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext import data
from afd_ext.train import CompressedPairs, TrainConfig
from helpers import make_photo


def _arr(img):
    return np.asarray(img, dtype=np.int16)


def test_codecs_and_chroma_differ_and_bad_values_raise():
    img = data.resize_center_crop(make_photo(300, 420))
    jpeg, webp = data.compress(img, 10, "jpeg"), data.compress(img, 10, "webp")
    full_chroma = data.compress(img, 10, "jpeg", "4:4:4")
    assert jpeg.size == webp.size == full_chroma.size == img.size
    assert not np.array_equal(_arr(jpeg), _arr(webp)) and not np.array_equal(_arr(jpeg), _arr(full_chroma))
    assert np.array_equal(_arr(jpeg), _arr(data.jpeg_compress(img, 10)))
    with pytest.raises(ValueError, match="codec"):
        data.compress(img, 10, "gif")
    with pytest.raises(ValueError, match="subsampling"):
        data.compress(img, 10, "jpeg", "4:1:1")
    with pytest.raises(ValueError, match="quality"):
        data.compress(img, 0, "webp")


def test_protocols_are_defined_as_documented():
    photo = make_photo(300, 420)
    crop = data.resize_center_crop(photo)
    c = data.degrade(photo, [10], "crop")
    assert np.array_equal(_arr(c), _arr(data.jpeg_compress(crop, 10)))
    assert np.array_equal(_arr(data.degrade(photo, [10], "resized")), _arr(data.resize_center_crop(c)))
    full = data.degrade(photo, [10], "full")
    assert np.array_equal(_arr(full), _arr(data.resize_center_crop(data.jpeg_compress(photo, 10))))
    twice = data.degrade(photo, [25, 10], "crop", "webp")
    assert np.array_equal(_arr(twice), _arr(data.compress(data.compress(crop, 25, "webp"), 10, "webp")))
    for p in data.PROTOCOLS:
        assert data.degrade(photo, [10], p).size == (data.CROP, data.CROP)
    with pytest.raises(ValueError, match="protocol"):
        data.degrade(photo, [10], "upload")


@pytest.mark.parametrize("sub", [0, 2])
def test_jpeg_quality_estimate_is_exact_for_pillow_files(sub):
    img = make_photo(64, 64)
    for q in (1, 7, 10, 18, 50, 75, 85, 86, 95, 100):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q, subsampling=sub)
        assert data.jpeg_quality_of_bytes(buf.getvalue()) == q
    png = io.BytesIO()
    img.save(png, format="PNG")
    assert data.jpeg_quality_of_bytes(png.getvalue()) is None
    assert data.jpeg_quality_of_bytes(b"\xff\xd8\xff\xe0 not really a jpeg") is None
    assert data.estimate_jpeg_quality({}) is None


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        make_photo(200 + 20 * i, 260, seed=i).save(root / f"n01440764_{i}.png")
    return sorted(root.iterdir())


def _cfg(**kw):
    base = dict(data=[], crop=64, flip=False, rotate=False, clean_fraction=0.0, qualities=(10,))
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def test_crop_protocol_sample_is_the_compressed_clean_crop(photo_files):
    ds = CompressedPairs(photo_files, _cfg(), 16)
    for i in range(6):
        clean, comp, label, _ = ds[i]
        assert clean.shape == comp.shape == (3, 64, 64) and label == 0
        expected = data.to_tensor(data.jpeg_compress(Image.fromarray(clean.permute(1, 2, 0).numpy()), 10))
        assert torch.equal(comp, expected)


def test_mixture_samples_are_deterministic_and_off_grid(photo_files):
    cfg = _cfg(shift_fraction=0.3, rescale_fraction=0.7, webp_fraction=0.3, chroma444_fraction=0.5,
               max_compressions=3, flip=True, rotate=True)
    ds, again = CompressedPairs(photo_files, cfg, 40), CompressedPairs(photo_files, cfg, 40)
    off_grid = 0
    for i in range(20):
        clean, comp, _, _ = ds[i]
        c2, k2, _, _ = again[i]
        assert torch.equal(clean, c2) and torch.equal(comp, k2)
        assert clean.shape == comp.shape == (3, 64, 64) and not torch.equal(clean, comp)
        # not the crop protocol: the compressed crop is not the JPEG of the clean crop
        recompressed = data.to_tensor(data.jpeg_compress(Image.fromarray(clean.permute(1, 2, 0).numpy()), 10))
        off_grid += not torch.equal(comp, recompressed)
    assert off_grid >= 18
    # clean and compressed show the same scene: close on average
    diffs = [(ds[i][0].float() - ds[i][1].float()).abs().mean() for i in range(10)]
    assert max(diffs) < 40


@pytest.mark.parametrize("kw,needle", [
    (dict(shift_fraction=0.6, rescale_fraction=0.6), "at most 1"),
    (dict(webp_fraction=1.5), "webp fraction"),
    (dict(rescale_range=(0.0, 2.0)), "rescale range"),
    (dict(init="/nonexistent/afd.safetensors"), "--init"),
])
def test_mixture_config_errors(kw, needle):
    with pytest.raises((ValueError, FileNotFoundError), match=needle):
        TrainConfig(data=[], **kw).validate()


def test_evaluate_records_protocol_and_codec(photo_files):
    model = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"))  # a new AFD: the identity
    for protocol in data.PROTOCOLS:
        r = afd_ext.evaluate(model, [str(f) for f in photo_files], qualities=[10], progress=False,
                             protocol=protocol, codec="webp", multi_compress=protocol == "full")
        assert r["protocol"] == protocol and r["codec"] == "webp" and r["n_images"] == 4
        assert r["qualities"][0]["top1_direct"] == r["qualities"][0]["top1_afd"]
    with pytest.raises(ValueError, match="protocol"):
        afd_ext.evaluate(model, [str(f) for f in photo_files], protocol="upload", progress=False)
    with pytest.raises(ValueError, match="codec"):
        afd_ext.evaluate(model, [str(f) for f in photo_files], codec="png", progress=False)


def _import_imagecorruptions():
    """imagecorruptions (the reference implementation of ImageNet-C's corruptions, as a package),
    or skip saying why. It imports ``pkg_resources.resource_filename`` for the frost images only;
    setuptools >= 81 no longer ships pkg_resources, so a stand-in is given for that one name
    (the JPEG corruption never calls it)."""
    import importlib
    import sys
    import types
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.resource_filename = lambda package, name: name
        sys.modules["pkg_resources"] = stand_in
    try:
        return importlib.import_module("imagecorruptions")
    except ModuleNotFoundError as exc:  # only "not installed" skips; a broken install fails the test
        if exc.name != "imagecorruptions":
            raise
        pytest.skip("imagecorruptions is not installed; pip install imagecorruptions (requirements.txt) to run "
                    "the ImageNet-C cross-check")


def _test_photos():
    photos = [make_photo(300, 420), make_photo(240, 320, seed=3).rotate(90, expand=True)]
    try:
        from skimage import data as skdata
        photos += [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.astronaut())]
    except ImportError:
        pass
    return photos


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_crop_protocol_is_imagenet_c_jpeg_compression(severity):
    """The paper's protocol at DEFAULT_QUALITIES[s - 1] gives the very pixels of ImageNet-C's
    reference corruption ``jpeg_compression`` at severity s, applied (as ImageNet-C does) to the
    resize-256 / centre-crop-224 image. (The published ImageNet-C files were then saved once more
    as JPEG at quality 85; this protocol, like the paper's evaluation, leaves that step out.)"""
    ic = _import_imagecorruptions()
    for photo in _test_photos():
        crop = data.resize_center_crop(photo)
        ours = np.asarray(data.degrade(photo, [data.DEFAULT_QUALITIES[severity - 1]], "crop"))
        theirs = np.asarray(ic.corrupt(np.asarray(crop), severity=severity, corruption_name="jpeg_compression"))
        assert ours.dtype == theirs.dtype == np.uint8 and ours.shape == theirs.shape == (224, 224, 3)
        np.testing.assert_array_equal(ours, theirs)
        # the comparison can fail: a neighbouring severity gives other pixels
        other = data.DEFAULT_QUALITIES[severity % 5]
        assert not np.array_equal(np.asarray(data.degrade(photo, [other], "crop")), theirs)


def test_evaluate_gives_the_model_each_settings_own_pixels(photo_files):
    """``evaluate(protocol=, codec=, multi_compress=)`` changes what the classifier is given: the
    batch of each quality is that setting's ``data.degrade`` of the photos, different for every
    protocol and codec; the clean batch is the same whatever the setting; --multi-compress adds
    the 1..5-times compressed batches."""
    model = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"))
    seen = []
    stem = model.stem_features

    def spy(x):
        seen.append(x.clone())
        return stem(x)
    model.stem_features = spy  # the batches evaluate() hands the classifier, in order
    files = [str(f) for f in photo_files[:2]]
    photos = [data.load_image(f) for f in files]

    def expected(qualities, protocol, codec):
        return torch.stack([data.to_tensor(data.degrade(p, qualities, protocol, codec)) for p in photos])

    batches = {}
    for protocol, codec in [("crop", "jpeg"), ("resized", "jpeg"), ("full", "jpeg"), ("crop", "webp")]:
        seen.clear()
        afd_ext.evaluate(model, files, qualities=[10], progress=False, protocol=protocol, codec=codec)
        assert len(seen) == 2  # clean, q10
        assert torch.equal(seen[1], expected([10], protocol, codec)), (protocol, codec)
        batches[protocol, codec] = seen[1]
        assert torch.equal(seen[0], torch.stack([data.to_tensor(data.resize_center_crop(p)) for p in photos]))
    keys = list(batches)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not torch.equal(batches[a], batches[b]), (a, b)
    seen.clear()
    r = afd_ext.evaluate(model, files, qualities=[10, 7], progress=False, protocol="full", multi_compress=True)
    assert len(seen) == 8 and [m["times"] for m in r["multi_compress"]] == [1, 2, 3, 4, 5]  # clean, q10, q7, 1..5x
    import itertools
    more_than_once = 0
    for times in range(1, 6):  # each photo: `times` successive compressions at qualities drawn from {10, 7}
        for i, p in enumerate(photos):
            got = seen[2 + times][i]
            draws = [qs for qs in itertools.product([10, 7], repeat=times)
                     if torch.equal(got, data.to_tensor(data.degrade(p, list(qs), "full", "jpeg")))]
            assert draws, (times, i)
            more_than_once += not (torch.equal(got, seen[1][i]) or torch.equal(got, seen[2][i]))
    assert more_than_once >= 3  # not one compression again and again


def test_degrade_returns_the_file_a_reader_would_open():
    photo = make_photo(300, 420)
    for protocol in data.PROTOCOLS:
        img, payload = data.degrade(photo, [40, 20], protocol, return_file=True)
        assert np.array_equal(_arr(img), _arr(data.degrade(photo, [40, 20], protocol)))
        info = data.inspect_image(payload)
        assert info.format == "JPEG" and info.jpeg_quality == 20  # the last compression's file
        assert (info.width, info.height) == ((420, 300) if protocol == "full" else (data.CROP, data.CROP))
    with pytest.raises(ValueError, match="at least one quality"):
        data.degrade(photo, [], "crop")


def test_afd_runs_on_is_predicts_skip_rule():
    crop = data.resize_center_crop(make_photo(300, 420))
    png = io.BytesIO()
    crop.save(png, format="PNG")
    infos = {q: data.inspect_image(data.compress_bytes(crop, q)) for q in (95, 86, 85, 30)}
    lossless = data.inspect_image(png.getvalue())
    assert [data.afd_runs_on(infos[q]) for q in (95, 86, 85, 30)] == [False, False, True, True]
    assert not data.afd_runs_on(lossless) and data.afd_runs_on(lossless, None) and data.afd_runs_on(None)
    assert data.afd_runs_on(infos[95], 95) and not data.afd_runs_on(infos[95], 94)
    assert data.afd_runs_on(data.inspect_image(data.compress_bytes(crop, 95, "webp")))  # lossy WebP: no quality


class _OneHotModel(torch.nn.Module):
    """Direct logits name the label (class 0), the AFD's name class 1: top-1 AFD counts the
    images the AFD did not run on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.afd_batches = []

    def stem_features(self, x):
        return x.float(), x

    def head(self, feat, pixels, use_afd=True, fdm=None, return_gate=False):  # AFDClassifier.head's signature
        logits = torch.zeros(feat.shape[0], 1000)
        logits[:, 1 if use_afd else 0] = 1.0
        if use_afd:
            self.afd_batches.append(feat.shape[0])
        return (logits, None) if return_gate else logits


def test_evaluate_as_predict_skips_the_afd_where_predict_would(tmp_path):
    photos = [make_photo(300, 420, seed=s) for s in range(3)]
    paths = [tmp_path / "n01440764_a.png", tmp_path / "n01440764_b.jpg", tmp_path / "n01440764_c.jpg"]
    photos[0].save(paths[0])                      # lossless: predict skips the AFD
    photos[1].save(paths[1], quality=95)          # above 85: skipped
    photos[2].save(paths[2], quality=50)          # runs
    files = [str(p) for p in paths]
    model = _OneHotModel()
    r = afd_ext.evaluate(model, files, qualities=[90, 40], protocol="full", as_predict=True, progress=False)
    ran = [r["clean"]["afd_ran"]] + [q["afd_ran"] for q in r["qualities"]]
    assert ran == pytest.approx([100 / 3, 0.0, 100.0])
    for row in [r["clean"], *r["qualities"]]:
        assert row["top1_direct"] == 100.0 and row["top1_afd"] == pytest.approx(100.0 - row["afd_ran"])
    assert r["as_predict"] and r["skip_afd_above"] == data.SKIP_AFD_ABOVE_QUALITY
    assert sum(model.afd_batches) == 1 + 3        # the skipped images never entered the AFD
    assert "AFD ran" in afd_ext.evaluation.format_table(r)
    # the threshold is predict's: 'none' runs it on every image, 95 on the q95 file and q90 too
    r = afd_ext.evaluate(model, files, qualities=[90], protocol="full", as_predict=True, skip_afd_above=None,
                         progress=False)
    assert r["clean"]["afd_ran"] == r["qualities"][0]["afd_ran"] == 100.0
    r = afd_ext.evaluate(model, files, qualities=[90], protocol="full", as_predict=True, skip_afd_above=95,
                         progress=False)
    assert r["clean"]["afd_ran"] == pytest.approx(200 / 3) and r["qualities"][0]["afd_ran"] == 100.0
    # pixels only (the default): the AFD runs on everything
    r = afd_ext.evaluate(model, files, qualities=[90], protocol="full", progress=False)
    assert not r["as_predict"] and "afd_ran" not in r["clean"] and r["clean"]["top1_afd"] == 0.0
    with pytest.raises(ValueError, match="skip_afd_above"):
        afd_ext.evaluate(model, files, as_predict=True, skip_afd_above=101, progress=False)


def test_evaluate_reports_how_far_the_gate_opened(photo_files):
    """A gated AFD's result says, per setting, the % of images whose gate opened (z > 0) and the
    mean gate value: here a constant logit (zero weights), +1 (open, g = tanh(1/2)) or -1 (closed)."""
    model = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"), gate="global", width=2)
    files = [str(f) for f in photo_files[:2]]
    for bias, opened, mean in ((1.0, 100.0, float(np.tanh(0.5))), (-1.0, 0.0, 0.0)):
        with torch.no_grad():
            model.afd.gate_head.bias.fill_(bias)
        r = afd_ext.evaluate(model, files, qualities=[10], progress=False)
        assert set(r["gate"]) == {"clean", "q10"}
        for g in r["gate"].values():
            assert g["open"] == opened and g["mean"] == pytest.approx(mean, rel=1e-5)
        assert "gate open" in afd_ext.evaluation.format_table(r)
    r = afd_ext.evaluate(afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"), width=2), files,
                         qualities=[10], progress=False)
    assert "gate" not in r  # no gate, no gate figures
