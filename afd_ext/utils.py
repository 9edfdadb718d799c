"""Small helpers every part of the package shares: the one output writer (atomic, refusing what
it must not replace), JSON results, device resolution and the git commit a result was made at.
One home each, so a fix lands once."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch


# -- the one writer ---------------------------------------------------------------------------
#
# Every file the package writes (checkpoints, logs, JSON, plots, exports) goes through
# ``atomic_path``. Its rule: the bytes land in a temporary file beside the target, fsynced and
# renamed onto it, so a reader never sees half a file; what must not be replaced is refused or
# written differently:
#   * a directory, a block device or a socket at the path, a file where a folder of the path
#     should be, a folder nothing can be created in: refused (ValueError naming the output);
#   * a character device or a FIFO (``/dev/null``, ``/dev/stdout``, a pipe a reader waits on):
#     written to as a stream, never replaced; a FIFO nobody reads is an error, not a hang;
#   * a symbolic link: written through, its target replaced atomically, the link kept;
#   * a file the run reads (``inputs``): refused.
# Temporaries have one specific name, ``.STEM.afd-PID-RANDOM.tmp.SUFFIX`` (TEMP_PATTERN: the writer
# and ``remove_stale_temps`` share it, so a user's own dotfiles are never taken for ours); they are
# removed when the write fails, on SIGINT (KeyboardInterrupt), and on SIGTERM / SIGHUP (a handler
# present only while a temporary exists, which then re-raises the signal).

TEMP_PATTERN = re.compile(r"^\.(?P<stem>.*)\.afd-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.tmp(\.[^.]+)?$")
#: Signals whose default action would kill the process with a temporary on disk.
CLEANUP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)

_live_temps: dict[str, None] = {}  # temporaries of this process, removed on CLEANUP_SIGNALS
_installed: set[int] = set()


def temp_name(out: str | os.PathLike) -> str:
    """The name of a temporary for ``out`` (its suffix kept last: writers that pick the format
    from it, like ``savefig``, still work)."""
    out = Path(out)
    return f".{out.stem}.afd-{os.getpid()}-{secrets.token_hex(4)}.tmp{out.suffix}"


def _on_signal(signum, frame) -> None:
    for tmp in list(_live_temps):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _live_temps.clear()
    # Die of the signal itself, as without the handler (the status the parent expects).
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _register(tmp: str) -> None:
    _live_temps[tmp] = None
    if threading.current_thread() is not threading.main_thread():
        return  # handlers can only be set from the main thread; its handler cleans ours too
    for sig in CLEANUP_SIGNALS:
        # Only over the default action: a caller's own handler or SIG_IGN stays theirs.
        if sig not in _installed and signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)
            _installed.add(sig)


def _unregister(tmp: str) -> None:
    _live_temps.pop(tmp, None)
    if _live_temps or threading.current_thread() is not threading.main_thread():
        return
    for sig in list(_installed):  # no temporary left: the process's signals as they were
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, signal.SIG_DFL)
        _installed.discard(sig)


def _create_temp(folder: Path, out: Path) -> str:
    for _ in range(100):
        tmp = str(folder / temp_name(out))
        try:  # O_EXCL | O_NOFOLLOW: never onto something that is already there; mode 0666 & ~umask
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{folder}: could not create a temporary file")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not a pid we can ask about): leave its files
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``atomic_path`` in ``folder`` whose writer is gone (killed by
    SIGKILL or a power cut): regular files named by TEMP_PATTERN whose pid is no running process.
    Anything else, a user's dotfile included, stays. Returns what was removed."""
    removed = []
    for f in Path(folder).iterdir():
        m = TEMP_PATTERN.match(f.name)
        if not m or _pid_alive(int(m.group("pid"))):
            continue
        try:
            if not stat.S_ISREG(os.lstat(f).st_mode):
                continue
            f.unlink()
        except FileNotFoundError:
            continue
        removed.append(f)
    return removed


@dataclasses.dataclass(frozen=True)
class OutputTarget:
    """Where ``atomic_path`` puts the bytes: ``path`` (a symlink resolved to its target) and
    whether it is a stream (character device, FIFO) written in place rather than replaced."""
    path: Path
    stream: bool


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _input_clash(target: Path, st: os.stat_result, inputs: Iterable, read_suffixes: Iterable[str]) -> Optional[str]:
    """Why ``target`` (existing, stat ``st``) is something the run reads: an input file itself,
    or a file with one of ``read_suffixes`` inside an input folder; None when it is not."""
    suffixes = {s.lower() for s in read_suffixes}
    for inp in inputs:
        if inp is None:
            continue
        try:
            ist = os.stat(inp)
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(ist.st_mode):
            if target.suffix.lower() in suffixes and Path(os.path.realpath(target)).is_relative_to(
                    os.path.realpath(inp)):
                return f"a file the run reads from the input folder {inp}"
        elif (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino):
            return f"the input {inp}"
    return None


def output_target(out: str | os.PathLike, what: str = "output", inputs: Iterable = (),
                  read_suffixes: Iterable[str] = ()) -> OutputTarget:
    """Check ``out`` as an output file by the writer's rule (above) and say where the bytes go.
    ``inputs``: files and folders the run reads (an existing output among them is refused; in a
    folder, files with ``read_suffixes``). ValueError naming ``what`` otherwise; nothing is written."""
    out = Path(out)
    try:
        st = os.stat(out)  # follows symlinks: what a write would reach
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise ValueError(f"{what} {out}: cannot write there ({exc.strerror or exc})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{what} {out}: is a directory; give a file name")
        if (clash := _input_clash(out, st, inputs, read_suffixes)) is not None:
            raise ValueError(f"{what} {out}: is {clash}; an input is never overwritten, give another file name")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            return OutputTarget(out, stream=True)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{what} {out}: is {_kind(st.st_mode)}; it is never written to or replaced")
        if str(out).startswith(("/dev/", "/proc/")):  # e.g. /dev/stdout redirected to a file: append, never replace
            return OutputTarget(out, stream=True)
    path = Path(os.path.realpath(out)) if os.path.islink(out) else out  # write through a link
    if path != out and not os.path.isdir(path.parent):
        raise ValueError(f"{what} {out}: is a symbolic link to {path}, whose folder does not exist")
    for folder in (path.parent, *path.parent.parents):
        if os.path.lexists(folder):
            if not folder.is_dir():
                raise ValueError(f"{what} {out}: {folder} is not a folder")
            break
    return OutputTarget(path, stream=False)


def check_output_file(out: str | os.PathLike, what: str = "output", inputs: Iterable = (),
                      read_suffixes: Iterable[str] = ()) -> Path:
    """Fail before any work when ``out`` cannot be written by ``atomic_path`` (ValueError naming
    ``what`` and the reason; see ``output_target``), and check that a file can be created in its
    folder (missing folders are created, as the write would create them; a probe is written and
    removed). Returns ``out`` as a Path."""
    target = output_target(out, what, inputs, read_suffixes)
    if not target.stream:
        try:
            target.path.parent.mkdir(parents=True, exist_ok=True)
            os.unlink(_create_temp(target.path.parent, target.path))
        except OSError as exc:
            raise ValueError(f"{what} {out}: cannot write there ({exc.strerror or exc})") from None
    return Path(out)


def _write_stream(path: Path, data: bytes) -> None:
    """``data`` written to a character device or FIFO in place (appended to a file reached
    through /dev or /proc, e.g. /dev/stdout redirected to a file)."""
    try:  # O_NONBLOCK: a FIFO nobody reads is ENXIO at once, not a wait forever
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(exc.errno, "no process reads it (a FIFO without a reader)", str(path)) from None
        raise
    try:
        os.set_blocking(fd, True)  # then wait for the reader like any pipe writer
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path for ``out`` (same suffix, so writers that pick the format from it
    work); on success it is fsynced and renamed onto ``out`` (through a symlink onto its target;
    a device or FIFO gets the bytes as a stream), on failure or a signal removed: a reader never
    sees a half-written file. See the writer's rule above."""
    target = output_target(out, what)
    if target.stream:
        folder = Path(tempfile.gettempdir())
    else:
        folder = target.path.parent
        folder.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(folder, target.path)
    _register(tmp)
    try:
        yield Path(tmp)
        if target.stream:
            _write_stream(target.path, Path(tmp).read_bytes())
            os.unlink(tmp)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _unregister(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` by the writer's rule (``atomic_path``)."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_json(path: str | os.PathLike, obj) -> None:
    """A result as indented JSON, written by ``atomic_write_bytes``."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_figure(fig, path: str | os.PathLike) -> None:
    """A matplotlib figure laid out (``tight_layout``), saved by the writer's rule (``atomic_path``;
    the format from the suffix) and closed."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; a named CUDA device that is absent is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r}: no CUDA device is available")
    return dev


def _git(*args) -> Optional[str]:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> Optional[str]:
    """HEAD, with '-dirty' when any tracked file of the repository differs from it (a kernel, a
    benchmark, a tool: anything that can change a measured row). AFD_COMMIT
    overrides it (a copied working tree, as on a lent GPU machine, can carry a stale .git)."""
    if os.environ.get("AFD_COMMIT"):
        return os.environ["AFD_COMMIT"]
    head = _git("rev-parse", "HEAD")
    if not head:
        return None
    top = _git("rev-parse", "--show-toplevel")
    changed = _git("-C", top, "status", "--porcelain", "--untracked-files=no") if top else None
    return head + ("-dirty" if changed else "")
