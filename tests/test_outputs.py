"""The one output writer (afd_ext.utils.atomic_path): what it must not replace, its temporaries,
signals. README "Errors": output paths."""
import json
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest

from afd_ext.cli import main
from afd_ext.utils import check_output_file
from afd_ext.utils import atomic_path, atomic_write_bytes, write_json
from helpers import make_photo


def _leftovers(folder):
    """The writer's temporaries in ``folder`` (``.NAME.afd-PID-RANDOM.tmp.SUFFIX``)."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "a.jpg"
    make_photo(64, 80).save(path, quality=90)
    return path


# -- what is at the path ---------------------------------------------------------------------------

def test_a_symlink_is_written_through_and_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    write_json(link, {"a": 1})
    assert link.is_symlink() and os.readlink(link) == target.name  # the link stays a link
    assert json.loads(target.read_text()) == {"a": 1} and _leftovers(tmp_path) == []


def test_a_dangling_symlink_creates_its_target_and_a_link_into_a_missing_folder_is_refused(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to("made.json")
    write_json(link, [1])
    assert link.is_symlink() and json.loads((tmp_path / "made.json").read_text()) == [1]
    bad = tmp_path / "bad.json"
    bad.symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(ValueError, match="symbolic link .* whose folder does not exist"):
        write_json(bad, [1])
    assert not (tmp_path / "nowhere").exists()


def test_a_fifo_with_a_reader_gets_the_bytes_as_a_stream(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there, as `cat pipe` would be
    try:
        write_json(fifo, {"x": 1})
        assert json.loads(os.read(reader, 65536)) == {"x": 1}
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _leftovers(tmp_path) == []


def test_a_fifo_without_a_reader_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="no process reads it"):
        atomic_write_bytes(fifo, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_character_device_is_written_to_not_replaced(tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers, in tmp_path
    except PermissionError:
        pytest.skip("creating a device node needs root")
    write_json(node, {"x": 1})
    assert stat.S_ISCHR(os.lstat(node).st_mode) and _leftovers(tmp_path) == []


def test_a_full_device_through_a_link_is_one_oserror_and_the_link_stays(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    link = tmp_path / "m.json"
    link.symlink_to("/dev/full")
    with pytest.raises(OSError) as exc:
        write_json(link, {"x": 1})
    assert exc.value.errno == 28  # ENOSPC, as on a full disk
    assert link.is_symlink() and os.readlink(link) == "/dev/full" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["dir", "socket"])
def test_what_cannot_be_written_is_refused_before_any_work(tmp_path, kind):
    path = tmp_path / "out.json"
    if kind == "dir":
        path.mkdir()
    else:
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    with pytest.raises(ValueError, match=r"--json .*out\.json: is a (directory|socket)"):
        check_output_file(path, "--json")


def test_an_input_is_never_overwritten(tmp_path, photo):
    with pytest.raises(ValueError, match="is the input"):
        check_output_file(photo, "--json", inputs=[str(photo)])
    (tmp_path / "sub").mkdir()
    alias = tmp_path / "sub" / "alias.jpg"
    alias.symlink_to(photo)  # the same file by another name
    with pytest.raises(ValueError, match="is the input"):
        check_output_file(alias, "--json", inputs=[str(photo)])
    with pytest.raises(ValueError, match="reads from the input folder"):  # an image inside an input folder
        check_output_file(photo, "--plot", inputs=[str(tmp_path)], read_suffixes=[".jpg"])
    check_output_file(tmp_path / "result.json", "--json", inputs=[str(tmp_path)], read_suffixes=[".jpg"])


def test_predict_json_onto_its_own_input_is_refused(photo, capsys):
    before = photo.read_bytes()
    assert main(["predict", str(photo), "--json", str(photo)]) == 1
    err = capsys.readouterr().err
    assert "--json" in err and "never overwritten" in err and "Traceback" not in err
    assert photo.read_bytes() == before


def test_predict_json_into_a_fifo_reaches_its_reader(photo, tmp_path, capsys):
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert main(["predict", str(photo), "--json", str(fifo), "--no-afd"]) == 0
        got = json.loads(os.read(reader, 1 << 20))
    finally:
        os.close(reader)
    assert got["n_ok"] == 1 and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_two_outputs_naming_one_file_are_refused(photo, tmp_path, capsys):
    out = tmp_path / "same"
    assert main(["eval", str(photo), "--json", str(out), "--plot", str(out)]) == 1
    assert "the same file as --json" in capsys.readouterr().err


# -- temporaries ----------------------------------------------------------------------------------

def test_temporaries_have_one_specific_name():
    from afd_ext.utils import TEMP_PATTERN, temp_name
    name = temp_name("runs/x/last.safetensors")
    assert TEMP_PATTERN.match(name) and name.startswith(".last.afd-") and name.endswith(".tmp.safetensors")
    for user in (".notes.abcdefgh.tmp", ".X.12345678.tmp", ".last.k1ll3d_0.tmp.safetensors", "afd-1-abcdef12.tmp"):
        assert not TEMP_PATTERN.match(user), user


def test_the_temporary_is_beside_the_target_with_the_usual_mode(tmp_path):
    from afd_ext.utils import TEMP_PATTERN
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path and TEMP_PATTERN.match(tmp.name) and tmp.suffix == ".png"
        tmp.write_bytes(b"png")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o666 & ~umask and _leftovers(tmp_path) == []


_WRITER = """
import signal, sys, time
from afd_ext.utils import atomic_path
# the default dispositions, delivered: a test run under nohup passes SIGHUP on ignored, and a
# runner may pass it on blocked (an inherited mask), which would leave the signal pending forever
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGHUP])
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 100000)
    print("writing", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_write_removes_the_temporary(tmp_path, sig):
    out = tmp_path / "m.pt2"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(_leftovers(tmp_path)) == 1
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == -sig  # it still dies of the signal (the usual exit status)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _leftovers(tmp_path) == [] and not out.exists()


def test_the_signal_handlers_exist_only_during_a_write(tmp_path):
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("this process has its own SIGTERM handler (the writer leaves such a handler alone)")
    seen = []
    with atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
        seen.append(signal.getsignal(signal.SIGTERM))
    assert seen[0] != signal.SIG_DFL and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # from another thread it writes too (handlers can only be set in the main thread)
    t = threading.Thread(target=write_json, args=(tmp_path / "b.json", [2]))
    t.start()
    t.join()
    assert json.loads((tmp_path / "b.json").read_text()) == [2]
