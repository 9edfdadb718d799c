"""The afd command: usage errors exit 2, file problems exit 1 with one line, bad files are skipped."""
import json
import os
import sys

import pytest
import torch

from afd_ext.cli import main
from helpers import make_photo


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "usage: afd" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["eval", "x", "--quality", "0"], "JPEG quality must be in 1..100, got 0"),
    (["eval", "x", "--quality", "101"], "got 101"),
    (["eval", "x", "--quality", "ten"], "must be an integer"),
    (["train", "--data", "x", "--steps", "-5"], "steps must be in 1..1000000000, got -5"),
    # every integer flag has an upper bound: huge values are usage errors, not overflows or hangs
    (["train", "--data", "x", "--steps", "100000000000000000000"], "steps must be in 1..1000000000"),
    (["train", "--data", "x", "--max-compressions", "1000000000"], "max compressions must be in 1..20"),
    (["train", "--data", "x", "--seed", "1e30"], "seed must be an integer"),
    (["train", "--data", "x", "--seed", "1" + "0" * 30], "seed must be in 0..9223372036854775807"),
    (["train", "--data", "x", "--workers", "1000000"], "workers must be in 0..256"),
    (["train", "--data", "x", "--threads", "100000"], "threads must be in 0..1024"),
    (["train", "--data", "x", "--batch-size", "10000000"], "batch size must be in 1..1000000"),
    (["train", "--data", "x", "--crop", "8000"], "crop must be in 1..4096"),
    (["train", "--data", "x", "--stop-after", "1" + "0" * 20], "stop after must be in"),
    (["train", "--data", "x", "--ckpt-every", "1" + "0" * 5000], "must be an integer"),
    (["eval", "x", "--seed", "1" + "0" * 30], "seed must be in"),
    (["eval", "x", "--limit", "1" + "0" * 20], "must be in 1..1000000000"),
    (["predict", "x", "--batch-size", "1" + "0" * 20], "batch size must be in"),
    (["bench", "--e2e", "--threads", "100000"], "threads must be in 1..1024"),
    (["train", "--data", "x", "--clean-fraction", "2"], "clean fraction"),
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--data", "x", "--crop", "7"], "multiple of 8"),
    (["train", "--data", "x", "--webp-fraction", "1.5"], "fraction"),
    (["eval", "x", "--protocol", "upload"], "invalid choice"),
    (["predict", "x", "--skip-afd-above", "101"], "quality must be in 0..100"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors_exit_2(argv, needle, capsys):
    assert needle in _usage_error(argv, capsys)


@pytest.fixture
def mixed_folder(tmp_path):
    for i, syn in enumerate(["n01440764", "n01443537", "n01484850"]):
        make_photo(80, 100, seed=i).save(tmp_path / f"{syn}_ok{i}.jpg", quality=90)
    (tmp_path / "n01440764_broken.jpg").write_text("not a jpeg")
    good = (tmp_path / "n01440764_ok0.jpg").read_bytes()
    (tmp_path / "n01443537_cut.jpg").write_bytes(good[: len(good) // 3])
    return tmp_path


def test_eval_skips_bad_files_and_reports_them(mixed_folder, checkpoint, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    rc = main(["eval", str(mixed_folder), "--checkpoint", checkpoint, "--quality", "10", "--json", str(out_json),
               "--plot", str(tmp_path / "r.png"), "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "skipped 2 unreadable file(s)" in captured.err
    assert "n01440764_broken.jpg" in captured.err and "n01443537_cut.jpg" in captured.err
    result = json.loads(out_json.read_text())
    assert result["n_images"] == 3 and len(result["skipped"]) == 2
    assert set(result["clean"]) == {"top1_direct", "top1_afd", "top5_direct", "top5_afd"}
    assert result["qualities"][0]["quality"] == 10 and "mean" in result
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_eval_strict_fails(mixed_folder, checkpoint, capsys):
    rc = main(["eval", str(mixed_folder), "--checkpoint", checkpoint, "--quality", "10", "--strict",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["eval", "/nonexistent/dir", "--quality", "10"], "no such file or folder"),
    (["eval", "{empty}", "--quality", "10"], "no images"),
    (["eval", "{good}", "--checkpoint", "/nonexistent.safetensors"], "no such checkpoint file"),
])
def test_file_errors_exit_1(argv, needle, tmp_path, mixed_folder, capsys):
    (tmp_path / "emptydir").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "emptydir")).replace("{good}", str(mixed_folder)) for a in argv]
    assert main(argv + ["--no-progress"]) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_demo_on_a_folder_with_bad_files(mixed_folder, checkpoint, tmp_path, capsys):
    png = tmp_path / "demo.png"
    rc = main(["demo", "--data", str(mixed_folder), "--checkpoint", checkpoint, "--quality", "10", "--out",
               str(png), "--json", str(tmp_path / "d.json")])
    assert rc == 0
    out = capsys.readouterr()
    assert "top-1 agreement" in out.out and "skipped 2" in out.err
    assert png.stat().st_size > 1000
    assert json.loads((tmp_path / "d.json").read_text())["summary"]["n_photos"] == 3


def test_demo_builtin_photos_with_shipped_checkpoint(tmp_path, capsys):
    """The README's main job: no data folder, the shipped checkpoint. On the bundled photos the AFD
    brings the compressed crops' predictions closer to the clean ones (the paper's protocol): the
    mean KL to the clean prediction falls (v2: 0.800 -> 0.614; v3: 0.800 -> 0.758; v5-gatefit:
    0.800 -> 0.689; v6-rescale-gatefit: 0.800 -> 0.706; v7-heavy-gatefit: 0.800 -> 0.688; v8-224-gatefit:
    0.800 -> 0.676; v10-lr-webp-gatefit: 0.800 -> 0.666; v11-kl-gatefit: 0.800 -> 0.661; v12-kl3-gatefit and the
    v16-grid (its weights, the grid read from the pixels): 0.800 -> 0.640; the shipped
    v16-grid-detectfit (its gate refitted on that grid): 0.800 -> 0.644; a
    no-op AFD gives equal means, a harmful one higher). Under the
    `full` protocol its effect on these 10 photos is within their noise (v5-gatefit: KL 0.335 ->
    0.340, clean-class probability 0.271 -> 0.280, agreement 45.0 -> 47.5%; v3: KL 0.335 -> 0.330;
    v8-224-gatefit: KL 0.335 -> 0.334; v10-lr-webp-gatefit: KL 0.335 -> 0.331; v11-kl-gatefit: 0.335 -> 0.335;
    v12-kl3-gatefit: 0.335 -> 0.332; v16-grid: 0.335 -> 0.328, agreement 45.0 -> 52.5%;
    v16-grid-detectfit: 0.335 -> 0.321, agreement 45.0 -> 55.0%):
    the mean KL may move by no more than a tenth there."""
    png = tmp_path / "demo.png"
    assert main(["demo", "--out", str(png), "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "chelsea" in out and "mean KL" in out and "top-1 agreement" in out
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["summary"]["n_photos"] >= 8 and result["checkpoint"].endswith("afd_efficientnet_lite0.safetensors")
    for protocol in ("crop", "full"):  # continuous measures, direct vs AFD, for both protocols
        s = result["summary"][protocol]
        assert 0 < s["p_clean_class_direct"] < 1 and 0 < s["p_clean_class_afd"] < 1
        assert s["kl_direct"] > 0 and s["kl_afd"] >= 0
        if protocol == "crop":
            assert s["kl_afd"] < s["kl_direct"] and s["agreement_afd"] >= s["agreement_direct"], s
        else:
            assert abs(s["kl_afd"] - s["kl_direct"]) < 0.1 * s["kl_direct"], (protocol, s)
        rows = [r for r in result["rows"] if r["protocol"] == protocol]
        assert len(rows) == result["summary"]["n_photos"] * 4 and all("kl_afd" in r for r in rows)
    assert png.stat().st_size > 10_000


def test_out_of_memory_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import afd_ext.inference.pipeline

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    monkeypatch.setattr(afd_ext.inference.pipeline.Pipeline, "from_checkpoint", boom)
    assert main(["predict", str(tmp_path), "--batch-size", "100000"]) == 1
    err = capsys.readouterr().err
    assert "out of device memory (CUDA out of memory. Tried to allocate 80.00 GiB)" in err
    assert "smaller --batch-size" in err and "Traceback" not in err


def test_train_flags_are_the_train_config_fields():
    """Every TrainConfig field has the `afd train` flag of the same name, and parsing no extra
    flag gives TrainConfig's defaults."""
    import dataclasses

    from afd_ext.cli import build_parser, train_config
    from afd_ext.train import TrainConfig
    args = build_parser().parse_args(["train", "--data", "x"])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert names <= set(vars(args)), names - set(vars(args))
    cfg = train_config(args)
    default = TrainConfig(data=["x"])
    for f in dataclasses.fields(TrainConfig):
        got, want = getattr(cfg, f.name), getattr(default, f.name)
        as_tuple = (tuple(got) if isinstance(got, list) else got), (tuple(want) if isinstance(want, list) else want)
        assert as_tuple[0] == as_tuple[1], f.name
    cfg = train_config(build_parser().parse_args(["train", "--data", "x", "--kl-weight", "0.7", "--no-flip",
                                                  "--width", "12", "--no-progress"]))
    assert cfg.kl_weight == 0.7 and cfg.flip is False and cfg.width == 12 and cfg.progress is False


# -- optional packages, odd paths (README "Errors") -----------------------------------------------------

@pytest.fixture
def no_matplotlib(monkeypatch):
    import afd_ext.cli
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError

    def no_work(*a, **k):
        raise AssertionError("the work started before the missing package was found")
    monkeypatch.setattr(afd_ext.cli, "_model", no_work)


@pytest.mark.parametrize("argv", [["eval", "{d}", "--plot", "{t}/p.png", "--json", "{t}/r.json"],
                                  ["demo", "--data", "{d}", "--out", "{t}/demo.png", "--json", "{t}/d.json"]])
def test_missing_matplotlib_is_found_before_the_work(argv, no_matplotlib, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.replace("{d}", str(mixed_folder)).replace("{t}", str(out)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "pip install matplotlib" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_predict_reports_a_name_too_long_and_classifies_the_rest(mixed_folder, checkpoint, capsys):
    good = str(mixed_folder / "n01440764_ok0.jpg")
    long_name = str(mixed_folder / ("x" * 300 + ".jpg"))
    assert main(["predict", good, long_name, "--checkpoint", checkpoint, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in result["predictions"]] == [good, long_name]
    assert "topk" in result["predictions"][0] and "too long" in result["predictions"][1]["error"]
    assert result["n_ok"] == 1 and result["n_failed"] == 1


def test_predict_prints_a_non_utf8_name_escaped_and_finishes(tmp_path, checkpoint, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    img = make_photo(64, 64, seed=1)
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system
    img.save(folder / latin1, format="JPEG")
    img.save(folder / "plain.jpg")
    (folder / os.fsdecode(b"bad\xff.jpg")).write_text("not an image")
    # capsys's streams are strict UTF-8, like PYTHONIOENCODING=utf-8
    assert main(["predict", str(folder), "--checkpoint", checkpoint]) == 0
    out = capsys.readouterr()
    assert "caf\\xe9.jpg: " in out.out and "plain.jpg: " in out.out
    assert "bad\\xff.jpg" in out.err and "skipped 1" in out.err


# -- afd predict: the file size cap and the AFD's skip threshold as the command uses them ------------

def _sparse(path, size):
    """A file of ``size`` bytes that takes no disk space (all zeros: not an image)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def test_predict_reports_a_file_above_64_mib_without_reading_it(tmp_path, checkpoint, monkeypatch, capsys):
    """README "Errors": a file above afd_ext.data.MAX_FILE_BYTES (64 MiB) is not read, its row names
    the cap; the rest are classified (exit 0); nothing classified: exit 1. At the cap it is read (and
    refused for what it holds, not for its size)."""
    import builtins

    from afd_ext import data
    assert data.MAX_FILE_BYTES == 64 * 1024 ** 2
    folder = tmp_path / "in"
    folder.mkdir()
    make_photo(120, 160).save(folder / "good.jpg", quality=50)
    big = _sparse(folder / "big.jpg", data.MAX_FILE_BYTES + 1)
    at_cap = _sparse(folder / "at_cap.jpg", data.MAX_FILE_BYTES)
    opened = []
    real_os_open, real_open = os.open, builtins.open

    def spy_os_open(path, *a, **k):
        opened.append(os.fspath(path))
        return real_os_open(path, *a, **k)

    def spy_open(path, *a, **k):
        if isinstance(path, (str, bytes, os.PathLike)):
            opened.append(os.fspath(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(builtins, "open", spy_open)
    assert main(["predict", str(folder), "--checkpoint", checkpoint, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {os.path.basename(r["path"]): r for r in result["predictions"]}
    assert result["n_ok"] == 1 and result["n_failed"] == 2 and "topk" in rows["good.jpg"]
    assert "above the size cap afd_ext.data.MAX_FILE_BYTES (67108864 bytes)" in rows["big.jpg"]["error"]
    assert "size cap" not in rows["at_cap.jpg"]["error"]
    assert str(big) not in opened and str(at_cap) in opened
    assert main(["predict", str(big), "--checkpoint", checkpoint]) == 1
    err = capsys.readouterr().err
    assert "size cap" in err and "no image could be classified" in err and "Traceback" not in err
    assert str(big) not in opened


@pytest.fixture(scope="module")
def qualities_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("qualities")
    img = make_photo(120, 160, seed=5)
    for q in (50, 85, 86, 95):
        img.save(d / f"q{q}.jpg", quality=q)
    return d


@pytest.mark.parametrize("flags,afd_on", [
    ([], {50: True, 85: True, 86: False, 95: False}),  # the default: skip above 85
    (["--skip-afd-above", "100"], {50: True, 85: True, 86: True, 95: True}),
    (["--skip-afd-above", "60"], {50: True, 85: False, 86: False, 95: False}),
])
def test_predict_skip_afd_above_and_its_default(flags, afd_on, qualities_folder, checkpoint, capsys):
    """README "Command line": files whose estimated JPEG quality is above Q (default 85) skip the AFD."""
    from afd_ext import data
    assert data.SKIP_AFD_ABOVE_QUALITY == 85
    assert main(["predict", str(qualities_folder), "--checkpoint", checkpoint, "--json"] + flags) == 0
    rows = {os.path.basename(r["path"]): r for r in json.loads(capsys.readouterr().out)["predictions"]}
    assert {q: rows[f"q{q}.jpg"]["jpeg_quality"] for q in afd_on} == {q: q for q in afd_on}
    assert {q: rows[f"q{q}.jpg"]["afd"] for q in afd_on} == afd_on


# -- afd eval: --protocol, --codec, --multi-compress reach the images the model sees ------------------

@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("labelled")
    for i in range(2):
        make_photo(150, 200, seed=i).save(d / f"n01440764_{i}.JPEG", quality=95)
    return d


@pytest.mark.parametrize("flags,protocol,codec,multi", [
    ([], "crop", "jpeg", False),
    (["--protocol", "resized"], "resized", "jpeg", False),
    (["--protocol", "full"], "full", "jpeg", False),
    (["--codec", "webp"], "crop", "webp", False),
    (["--multi-compress", "--protocol", "full"], "full", "jpeg", True),  # the 1..5x images too
])
def test_eval_degradation_flags(flags, protocol, codec, multi, labelled, checkpoint, tmp_path, monkeypatch):
    """Each flag is what the run does: every degraded image is made with that protocol and codec (1..5
    compressions with --multi-compress), and the JSON records it (test_degradations checks that each
    setting gives the model other pixels)."""
    from afd_ext import data
    calls = []
    real = data.degrade

    def spy(photo, qualities, protocol="crop", codec="jpeg", *a, **k):
        calls.append((protocol, codec, len(qualities)))
        return real(photo, qualities, protocol, codec, *a, **k)
    monkeypatch.setattr(data, "degrade", spy)
    out = tmp_path / "r.json"
    assert main(["eval", str(labelled), "--checkpoint", checkpoint, "--quality", "10", "--json", str(out),
                 "--no-progress"] + flags) == 0
    result = json.loads(out.read_text())
    assert (result["protocol"], result["codec"], result["n_images"]) == (protocol, codec, 2)
    assert ("multi_compress" in result) == multi
    if multi:
        assert [r["times"] for r in result["multi_compress"]] == [1, 2, 3, 4, 5]
    assert {(p, c) for p, c, _ in calls} == {(protocol, codec)}
    assert sorted(n for _, _, n in calls) == sorted([1] * 2 + ([1, 2, 3, 4, 5] * 2 if multi else []))


@pytest.mark.parametrize("grid", [None, "input", "detect"])
def test_eval_grid_flag_sets_the_grid_and_the_json_records_it(grid, labelled, checkpoint, tmp_path, monkeypatch):
    """--grid overrides the checkpoint's setting for the run (default: the checkpoint's, 'input' for
    this test checkpoint), and the result says which grid the FDM was read on."""
    import afd_ext.cli as cli
    seen = []
    real = cli._model

    def spy(a):
        model = real(a)
        seen.append(model.afd.grid)
        return model
    monkeypatch.setattr(cli, "_model", spy)
    out = tmp_path / "r.json"
    flags = [] if grid is None else ["--grid", grid]
    assert main(["eval", str(labelled), "--checkpoint", checkpoint, "--quality", "10", "--json", str(out),
                 "--no-progress", "--protocol", "resized"] + flags) == 0
    want = grid or "input"
    assert seen == [want] and json.loads(out.read_text())["grid"] == want


def test_grid_flag_refuses_an_unknown_grid(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "x", "--grid", "sideways"])
    assert exc.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err
