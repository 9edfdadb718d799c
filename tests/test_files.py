"""Image files: every odd kind of file either loads as RGB or fails with an ImageError naming it."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from afd_ext import data


def _photo(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 3))
    return Image.fromarray(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def folder(tmp_path):
    img = _photo()
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
    ref = np.asarray(_photo().convert("L"))
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
    img = _photo()
    for q in (0, 101):
        with pytest.raises(ValueError, match="1..100"):
            data.jpeg_compress(img, q)
    assert data.jpeg_compress(img, 1).size == img.size
