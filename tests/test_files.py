"""Image files: every odd kind of file either loads as RGB or fails with an ImageError naming it."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from afd_ext import data
from helpers import DEV_IMAGES, SHARED_DATA, jpeg_bytes, make_photo, needs_data


@pytest.fixture
def folder(tmp_path):
    img = make_photo(48, 64)
    img.save(tmp_path / "n01440764_good.jpg", quality=90)
    img.convert("CMYK").save(tmp_path / "n01440764_cmyk.jpg")
    img.convert("L").save(tmp_path / "n01440764_grey.jpg")
    Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(tmp_path / "n01440764_16bit.png")
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "n01440764_rgba.png")
    img.convert("P", palette=Image.ADAPTIVE).save(tmp_path / "n01440764_palette.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "n01440764_tiny.png")
    full = io.BytesIO()
    img.save(full, format="JPEG", quality=90)
    (tmp_path / "n01440764_truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (tmp_path / "n01440764_text.jpg").write_text("this is not an image\n")
    (tmp_path / "n01440764_empty.jpg").write_bytes(b"")
    (tmp_path / "n01440764_dir.jpg").mkdir()
    os.symlink(tmp_path / "missing.jpg", tmp_path / "n01440764_broken.jpg")
    return tmp_path


GOOD = ["good", "cmyk", "grey", "16bit", "rgba", "palette", "tiny"]
BAD = {"truncated": "truncated", "text": "not an image", "empty": "empty file", "dir": "is a directory",
       "broken": "broken symbolic link"}


@pytest.mark.parametrize("kind", GOOD)
def test_good_files_load_as_rgb(folder, kind):
    path = next(folder.glob(f"n01440764_{kind}.*"))
    img = data.load_image(path)
    assert img.mode == "RGB" and img.size[0] >= 1
    crop = data.resize_center_crop(img)
    assert crop.size == (224, 224)


def test_sixteen_bit_keeps_the_range(folder):
    img = np.asarray(data.load_image(folder / "n01440764_16bit.png"))
    ref = np.asarray(make_photo(48, 64).convert("L"))
    assert np.abs(img[..., 0].astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("kind,reason", list(BAD.items()))
def test_bad_files_name_path_and_problem(folder, kind, reason):
    path = folder / f"n01440764_{kind}.jpg"
    with pytest.raises(data.ImageError, match=reason) as err:
        data.load_image(path)
    assert str(path) in str(err.value) and err.value.path == str(path)


def test_exif_orientation_honoured(tmp_path):
    arr = np.zeros((32, 64, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None]  # red grows to the right
    arr[:16, :, 2] = 255  # blue top half
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    loaded = data.load_image(tmp_path / "rot.jpg")
    assert loaded.size == (32, 64)
    got = np.asarray(loaded, dtype=int)
    right = np.abs(got - np.asarray(img.transpose(Image.ROTATE_270), dtype=int)).mean()
    wrong = np.abs(got - np.asarray(img.transpose(Image.ROTATE_90), dtype=int)).mean()
    assert right < 5 and wrong > 40


@pytest.mark.slow
def test_ten_thousand_pixels_square(tmp_path):
    Image.new("RGB", (10000, 10000), (30, 120, 200)).save(tmp_path / "huge.png")
    img = data.load_image(tmp_path / "huge.png")  # above Pillow's warning limit, below its error limit
    assert img.size == (10000, 10000)
    assert data.resize_center_crop(img).size == (224, 224)


def test_list_images(folder, tmp_path):
    files = data.list_images(folder)
    names = {f.name for f in files}
    assert "n01440764_good.jpg" in names and "n01440764_broken.jpg" in names
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        data.list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.list_images(tmp_path / "empty")


def test_labels_from_names_and_folders(tmp_path):
    assert data.label_from_path("x/n01530575_brambling.JPEG") == 10
    (tmp_path / "n01440764").mkdir()
    assert data.label_from_path(tmp_path / "n01440764" / "a.jpg") == 0
    (tmp_path / "7").mkdir()
    assert data.label_from_path(tmp_path / "7" / "b.jpg") == 7
    assert data.label_from_path(tmp_path / "c.jpg", root=tmp_path) is None
    assert data.class_name(0) == "tench"


def test_jpeg_quality_bounds():
    img = make_photo(48, 64)
    for q in (0, 101):
        with pytest.raises(ValueError, match="1..100"):
            data.jpeg_compress(img, q)
    assert data.jpeg_compress(img, 1).size == img.size


# -- hostile inputs, round 2 (issue 22): decoding and metadata ----------------------------------------

def _corrupt_exif(orientation=6):
    """EXIF whose TIFF header is damaged (byte 8 of the payload, after 'Exif\\0\\0', = 0x94):
    Pillow's getexif() raises SyntaxError('not a TIFF file')."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = bytearray(exif.tobytes())
    raw[8] = 0x94
    return bytes(raw)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_corrupt_exif_decodes_with_orientation_ignored(tmp_path, fmt):
    img = make_photo(48, 64)
    path = tmp_path / f"n01440764_badexif.{fmt.lower()}"
    img.save(path, fmt, exif=_corrupt_exif(), **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(path) as im, pytest.raises(SyntaxError):
        im.getexif()  # the damage is real: Pillow's own EXIF reader refuses it
    loaded = data.load_image(path)
    assert loaded.size == (64, 48)  # orientation 6 ignored: the pixels as stored
    assert np.array_equal(np.asarray(loaded), np.asarray(img))
    info = data.inspect_image(path.read_bytes(), str(path))
    assert info.orientation == 1 and info.format == fmt


class _Boom:
    """Raises ``exc`` from inside a Pillow plugin's decode."""

    def __init__(self, exc):
        self.exc = exc

    def __call__(self, *a, **k):
        raise self.exc


@pytest.mark.parametrize("exc", [IndexError("list index out of range"), KeyError(3), ZeroDivisionError("division"),
                                 TypeError("bad operand"), RuntimeError("decoder"), SyntaxError("not a TIFF file"),
                                 __import__("struct").error("unpack requires a buffer")])
def test_anything_pillow_raises_becomes_image_error(tmp_path, monkeypatch, exc):
    """The rule: whatever a plugin raises while decoding or reading metadata is an ImageError
    naming the file (one place: data.image_errors), so no route (load_image, decode_image,
    inspect_image) leaks a raw exception."""
    from PIL import PngImagePlugin
    path = tmp_path / "a.png"
    make_photo(32, 32).save(path)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_end", _Boom(exc))
    with pytest.raises(data.ImageError) as err:
        data.load_image(path)
    assert err.value.path == str(path) and err.value.reason
    monkeypatch.undo()
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", _Boom(exc))
    with pytest.raises(data.ImageError):
        data.inspect_image(path.read_bytes(), str(path))
    with pytest.raises(data.ImageError):
        data.decode_image(path.read_bytes(), str(path))


def _cuts(jpeg: bytes):
    """The issue's reproduction: head -c N*k/4 and an end marker glued on; also 7/8 (a cut that
    loses only the last few bytes, about the last MCU, is padded as libjpeg pads it)."""
    n = len(jpeg)
    out = {f"{k}/8": jpeg[:n * k // 8] + b"\xff\xd9" for k in (2, 4, 6, 7)}
    out["no end marker"] = jpeg[:n // 2]
    return out


JPEG_KINDS = {"baseline": {}, "grey": {"grey": True}, "progressive": {"progressive": True},
              "restart markers": {"restart_marker_blocks": 4}, "4:4:4 q95": {"subsampling": 0, "quality": 95},
              "progressive grey": {"progressive": True, "grey": True}}


@pytest.mark.parametrize("kind", list(JPEG_KINDS))
def test_truncated_jpeg_with_an_end_marker_is_refused(kind):
    kw = dict(JPEG_KINDS[kind])
    img = make_photo(240, 320, seed=3)
    if kw.pop("grey", False):
        img = img.convert("L")
    whole = jpeg_bytes(img, **kw)
    ref = Image.open(io.BytesIO(whole)).convert("RGB")
    assert np.array_equal(np.asarray(data.decode_image(whole, "whole.jpg")), np.asarray(ref))
    if kind == "baseline":  # the case that was found: Pillow alone decodes it without a word
        Image.open(io.BytesIO(_cuts(whole)["2/8"])).load()
    for cut, payload in _cuts(whole).items():
        with pytest.raises(data.ImageError, match="truncated") as err:
            data.decode_image(payload, f"{kind} {cut}")
        assert err.value.path == f"{kind} {cut}"


def test_truncated_jpeg_on_disk_and_a_jpeg_without_end_marker(tmp_path):
    whole = jpeg_bytes(make_photo(), quality=85)
    (tmp_path / "t.jpg").write_bytes(whole[:len(whole) // 4] + b"\xff\xd9")
    with pytest.raises(data.ImageError, match="truncated JPEG data") as err:
        data.load_image(tmp_path / "t.jpg")
    assert err.value.path == str(tmp_path / "t.jpg")
    # complete scan data whose end marker is missing (some encoders write that): decoded
    (tmp_path / "noeoi.jpg").write_bytes(whole[:-2])
    assert np.array_equal(np.asarray(data.load_image(tmp_path / "noeoi.jpg")),
                          np.asarray(Image.open(io.BytesIO(whole)).convert("RGB")))


@pytest.mark.parametrize("setting", [True, False])
def test_pillow_settings_are_never_changed(tmp_path, monkeypatch, setting):
    """LOAD_TRUNCATED_IMAGES stays what the caller set, and truncated files are refused either way."""
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", setting)
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(make_photo()))
    data.load_image(good)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is setting
    whole = good.read_bytes()
    png = io.BytesIO()
    make_photo().save(png, "PNG")
    for name, payload in {"cut.jpg": whole[:len(whole) // 2], "cut_eoi.jpg": whole[:len(whole) // 2] + b"\xff\xd9",
                          "cut.png": png.getvalue()[:len(png.getvalue()) // 2]}.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(data.ImageError, match="truncated"):
            data.load_image(tmp_path / name)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is setting


def _retag_tables(jpeg: bytes, mapping: dict) -> bytes:
    """The same JPEG with its quantization table ids renamed (DQT Tq and the frame's component Tq):
    a valid file that decodes to the same pixels."""
    out, i = bytearray(jpeg), 2
    while i < len(out):
        marker, length = out[i + 1], int.from_bytes(out[i + 2:i + 4], "big")
        if marker == 0xDB:  # DQT: (Pq<<4 | Tq, 64 or 128 values) ...
            j = i + 4
            while j < i + 2 + length:
                pq, tq = out[j] >> 4, out[j] & 15
                out[j] = (pq << 4) | mapping[tq]
                j += 1 + 64 * (pq + 1)
        elif marker in (0xC0, 0xC2):  # SOF: (id, sampling, Tq) per component
            for k in range(out[i + 9]):
                out[i + 12 + 3 * k] = mapping[out[i + 12 + 3 * k]]
        elif marker == 0xDA:
            break
        i += 2 + length
    return bytes(out)


@pytest.mark.parametrize("quality,mapping", [(100, {0: 2, 1: 3}), (10, {0: 1, 1: 0}), (50, {0: 3, 1: 2}),
                                             (90, {0: 0, 1: 1})])
def test_quality_estimate_reads_the_tables_the_components_use(quality, mapping):
    whole = jpeg_bytes(make_photo(), quality=quality)
    retagged = _retag_tables(whole, mapping)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(retagged))), np.asarray(Image.open(io.BytesIO(whole))))
    assert data.jpeg_quality_of_bytes(retagged) == quality
    info = data.inspect_image(retagged)
    assert info.jpeg_quality == quality and [tq for _, tq in info.jpeg.components] == [mapping[0], mapping[1],
                                                                                       mapping[1]]
    with Image.open(io.BytesIO(retagged)) as im:  # the public estimator, given the frame's table ids
        assert data.estimate_jpeg_quality(im.quantization, [mapping[0], mapping[1], mapping[1]]) == quality
    grey = jpeg_bytes(make_photo().convert("L"), quality=quality)
    assert data.jpeg_quality_of_bytes(_retag_tables(grey, {0: mapping[0]})) == quality


def test_every_image_extension_is_read_or_reported(tmp_path):
    img = make_photo(40, 56)
    img.save(tmp_path / "n01440764_a.jfif", "JPEG")
    img.save(tmp_path / "n01440764_b.JPE", "JPEG")
    img.save(tmp_path / "n01440764_c.gif", "GIF")
    frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(tmp_path / "n01440764_d.gif", save_all=True, append_images=frames[1:])
    img.save(tmp_path / "n01440764_e.avif", "AVIF") if data.features.check("avif") else (
        tmp_path / "n01440764_e.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(40))
    (tmp_path / "notes.txt").write_text("not an image")
    listed = {p.name for p in data.list_images(tmp_path)}
    assert listed == {"n01440764_a.jfif", "n01440764_b.JPE", "n01440764_c.gif", "n01440764_d.gif",
                      "n01440764_e.avif"}
    for name in ("n01440764_a.jfif", "n01440764_b.JPE", "n01440764_c.gif", "n01440764_d.gif"):
        assert data.load_image(tmp_path / name).size == (56, 40)
    first = np.asarray(data.load_image(tmp_path / "n01440764_d.gif"))  # an animation: its first frame
    with Image.open(tmp_path / "n01440764_d.gif") as im:
        assert im.n_frames == 2
        assert np.array_equal(first, np.asarray(im.convert("RGB")))
        im.seek(1)
        assert not np.array_equal(first, np.asarray(im.convert("RGB")))
    if data.features.check("avif"):
        assert data.load_image(tmp_path / "n01440764_e.avif").size == (56, 40)
    else:
        with pytest.raises(data.ImageError, match="AVIF"):
            data.load_image(tmp_path / "n01440764_e.avif")


def _sample(folder, step):
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in data.IMAGE_EXTENSIONS)[::step]


@needs_data
def test_real_photos_decode_as_pillow_does_and_their_cuts_are_refused():
    """No valid photo of the shared data is refused (every 10th here; all 800 were checked once),
    each decodes to Pillow's own pixels, and the cuts that were found (a quarter, a half, with an end marker)
    of each, baseline as shipped and re-encoded progressive, are refused."""
    from PIL import ImageOps
    files = _sample(DEV_IMAGES, 10) + _sample(SHARED_DATA / "bsds500", 10)
    assert len(files) >= 50
    for f in files:
        raw = f.read_bytes()
        ours = np.asarray(data.decode_image(raw, str(f)))
        with Image.open(f) as im:
            ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert np.array_equal(ours, ref), f
    for f in files[::5]:
        raw = f.read_bytes()
        progressive = jpeg_bytes(Image.open(f).convert("RGB"), quality=90, progressive=True)
        for variant in (raw, progressive):
            for cut in (len(variant) // 4, len(variant) // 2):
                with pytest.raises(data.ImageError, match="truncated"):
                    data.decode_image(variant[:cut] + b"\xff\xd9", str(f))


def test_eval_and_demo_read_every_photo_and_report_the_cut_one(tmp_path):
    """`afd eval` / `afd demo --data` over a folder with a damaged-EXIF PNG and WebP, a .jfif, a
    .gif and a truncated JPEG with an end marker: every photo counted, the cut one skipped with why."""
    import afd_ext
    from afd_ext.demo import run_demo
    from afd_ext.evaluation import evaluate
    img = make_photo(96, 128, seed=9)
    img.save(tmp_path / "n01440764_exif.png", exif=_corrupt_exif())
    img.save(tmp_path / "n01440764_exif.webp", exif=_corrupt_exif(), lossless=True)
    img.save(tmp_path / "n01440764_a.jfif", "JPEG", quality=70)
    img.save(tmp_path / "n01440764_b.gif")
    whole = jpeg_bytes(img, quality=70)
    (tmp_path / "n01440764_cut.jpg").write_bytes(whole[:len(whole) // 2] + b"\xff\xd9")
    model = afd_ext.create_model("efficientnet_lite0", afd={"width": 8}, pretrained=False)
    result = evaluate(model, tmp_path, qualities=[10], progress=False)
    assert result["n_images"] == 4
    assert [(s["path"], "truncated JPEG data" in s["error"]) for s in result["skipped"]] == [
        (str(tmp_path / "n01440764_cut.jpg"), True)]
    demo = run_demo(model, str(tmp_path), qualities=[10], out_png=None, verbose=False)
    assert demo["summary"]["n_photos"] == 4 and len(demo["skipped"]) == 1
