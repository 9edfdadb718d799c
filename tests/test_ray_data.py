"""afd_ext.ray_data.Predictor: the map_batches class gives afd predict's answers, one row per
input, error rows for broken files; and the same through a local Ray cluster."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from afd_ext.cli import main
from afd_ext.ray_data import COLUMNS, Predictor
from helpers import make_photo


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_imgs")
    for i, (h, w, q) in enumerate([(300, 400, 20), (256, 256, 60), (410, 290, 95)]):
        make_photo(h, w, i).save(d / f"img{i}.jpg", "JPEG", quality=q)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return d


@pytest.fixture(scope="module")
def cli_top1(folder, tmp_path_factory):
    """{file name: top-1 index or None} from `afd predict --json` on the folder."""
    out = tmp_path_factory.mktemp("pred") / "p.json"
    main(["predict", str(folder), "--device", "cpu", "--json", str(out)])
    preds = json.loads(out.read_text())["predictions"]
    return {p["path"].rsplit("/", 1)[-1]: (p["topk"][0]["index"] if "topk" in p else None) for p in preds}


def _check(columns, cli_top1):
    assert set(COLUMNS) <= set(columns)
    for i, path in enumerate(columns["path"]):
        name = str(path).rsplit("/", 1)[-1]
        if cli_top1[name] is None:
            assert columns["top1"][i] == -1 and columns["error"][i] and not columns["afd_applied"][i]
        else:
            assert columns["top1"][i] == cli_top1[name] and columns["error"][i] == ""
            assert 0 < columns["top1_prob"][i] <= 1 and columns["top1_name"][i]
    by_name = {str(p).rsplit("/", 1)[-1]: i for i, p in enumerate(columns["path"])}
    assert columns["quality"][by_name["img0.jpg"]] == 20  # estimated from the quantization tables
    assert columns["afd_applied"][by_name["img0.jpg"]] and not columns["afd_applied"][by_name["img2.jpg"]]


def test_predictor_batch_matches_afd_predict(folder, cli_top1):
    files = sorted(folder.iterdir())
    batch = {"bytes": np.array([f.read_bytes() for f in files] + [b""], dtype=object),
             "path": np.array([str(f) for f in files] + [str(folder / "empty.jpg")], dtype=object)}
    out = Predictor(device="cpu", topk=3)(batch)
    cli_top1 = {**cli_top1, "empty.jpg": None}
    assert len(out["path"]) == len(files) + 1 and out["topk"].shape == (len(files) + 1, 3)
    _check(out, cli_top1)


def test_predictor_rejects_a_batch_without_bytes():
    with pytest.raises(KeyError, match="'bytes' column"):
        Predictor.__call__(object.__new__(Predictor), {"path": np.array(["a"])})


def test_on_a_local_ray_cluster(folder, cli_top1):
    ray = pytest.importorskip("ray", reason="ray[data] is an optional dependency (pip install afd_ext[ray])")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        ds = ray.data.read_binary_files(str(folder), include_paths=True)
        out = ds.map_batches(Predictor, fn_constructor_kwargs={"device": "cpu"}, batch_size=2, concurrency=1)
        rows = out.take_all()
    finally:
        ray.shutdown()
    assert len(rows) == 4
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    _check(columns, cli_top1)


def test_a_photo_with_a_corrupt_exif_block_is_a_row_not_an_error(folder):
    """A PNG whose EXIF TIFF header is damaged (every viewer shows it) is classified; a truncated
    JPEG with an end marker glued on is an error row; each row says the file's format."""
    import io
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = bytearray(exif.tobytes())
    raw[8] = 0x94  # getexif() raises SyntaxError("not a TIFF file")
    png = io.BytesIO()
    make_photo(200, 240, 5).save(png, "PNG", exif=bytes(raw))
    good = (folder / "img0.jpg").read_bytes()
    cut = good[:len(good) // 2] + b"\xff\xd9"
    batch = {"bytes": np.array([png.getvalue(), good, cut], dtype=object),
             "path": np.array(["exif.png", "img0.jpg", "cut.jpg"], dtype=object)}
    out = Predictor(device="cpu", topk=2)(batch)
    assert list(out["error"][:2]) == ["", ""] and out["top1"][0] >= 0
    assert list(out["format"]) == ["PNG", "JPEG", ""]
    assert not out["afd_applied"][0]  # lossless: nothing for the AFD to correct
    assert out["top1"][2] == -1 and "truncated JPEG data" in out["error"][2]
