"""Files in: the one folder walk (:func:`list_images`) and the one safe reader (:func:`read_regular`).

The reader is what every file the package reads goes through, images and checkpoints alike: only
regular files are opened (``os.stat`` + ``S_ISREG`` first, so a FIFO, a device or a socket is never
opened; then ``O_NONBLOCK``, so a path replaced by a FIFO in between does not block either, and the
opened file is checked again), and nothing above a size cap is read. Its problems are
:class:`UnreadableFile`, with a ``kind`` a caller can phrase in its own words (the image readers
raise ``ImageError``, the checkpoint reader ``CheckpointError``).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Sequence

# Every file extension the folder walk picks up, written once. JPEG under all its names, GIF (the
# first frame) and AVIF (read where this Pillow has AVIF support; elsewhere each file is reported
# with that reason, never dropped without a word).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif")
# An image file is read only when it is a regular file of at most MAX_FILE_BYTES (README "Errors").
MAX_FILE_BYTES = 64 * 1024 * 1024


def list_images(paths: str | os.PathLike | Sequence, recursive: bool = True) -> list[Path]:
    """Image files under the given files/folders (sorted, recursive). Missing paths raise
    FileNotFoundError; no image at all raises ValueError. Everything that is not a folder is
    listed: broken symlinks, FIFOs, devices and other special files with an image extension
    inside a folder, and any such path named explicitly (loading reports each with its reason:
    ``read_image_bytes``), so nothing is skipped silently. The one folder walk of the package."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            is_dir = p.is_dir()
        except OSError as exc:  # e.g. a name too long for the file system (ENAMETOOLONG)
            raise FileNotFoundError(f"cannot look up {p}: {exc.strerror or exc}") from None
        if is_dir:
            it = p.rglob("*") if recursive else p.iterdir()
            out += sorted(f for f in it if f.suffix.lower() in IMAGE_EXTENSIONS and not f.is_dir())
        elif os.path.lexists(p):
            out.append(p)  # a file, a broken symlink or a special file: reported when loaded
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    if not out:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, paths))}")
    return out


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular(mode: int) -> str:
    """Why a file of ``mode`` (``st_mode``) is not read: the kind of special file it is."""
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
    return f"not a regular file but {kind}; only regular files are read"


class UnreadableFile(ValueError):
    """A path the safe reader does not read. ``kind``: 'missing' (no such file, or a broken
    symbolic link), 'directory', 'special' (FIFO, device, socket), 'empty', 'too_large' (``size``
    bytes, above the cap) or 'error' (the system's error, ``reason``)."""

    def __init__(self, path, kind: str, reason: str, size: Optional[int] = None):
        self.path, self.kind, self.reason, self.size = str(path), kind, reason, size
        super().__init__(f"{path}: {reason}")


def _cap(max_bytes: int, cap_name: Optional[str]) -> str:
    return f"the size cap {cap_name} ({max_bytes} bytes)" if cap_name else f"the size cap of {max_bytes} bytes"


def _metadata_problem(path: Path, max_bytes: int, cap_name: Optional[str], allow_empty: bool,
                      what: str) -> Optional[UnreadableFile]:
    """What the metadata says against reading ``path`` (nothing is opened), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return UnreadableFile(path, "missing", "broken symbolic link" if os.path.islink(path) else "no such file")
    except OSError as exc:
        return UnreadableFile(path, "error", f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return UnreadableFile(path, "directory", f"is a directory, not {what}")
    if not stat.S_ISREG(st.st_mode):
        return UnreadableFile(path, "special", not_regular(st.st_mode))
    if st.st_size == 0 and not allow_empty:
        return UnreadableFile(path, "empty", "empty file")
    if st.st_size > max_bytes:
        return UnreadableFile(path, "too_large", f"file of {st.st_size} bytes is above {_cap(max_bytes, cap_name)}",
                              st.st_size)
    return None


def file_problem(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> Optional[str]:
    """Why ``path`` cannot be read as an image file, from its metadata alone (nothing is opened),
    or None: missing, a broken symlink, a directory, not a regular file (FIFO, device, socket;
    symlinks are followed), empty, or larger than ``max_bytes``."""
    problem = _metadata_problem(Path(path), max_bytes, "afd_ext.data.MAX_FILE_BYTES", False, "an image file")
    return None if problem is None else problem.reason


def _open_nonblocking(path: Path) -> int:
    # O_NONBLOCK: should the path have become a FIFO since the check, opening it does not wait
    return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))


def read_regular(path: str | os.PathLike, max_bytes: int, cap_name: Optional[str] = None, allow_empty: bool = False,
                 what: str = "a file to read") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (``cap_name``: the setting the message
    names), or :class:`UnreadableFile`: missing, a directory (``what`` says what was expected
    instead), not a regular file (never opened, so nothing blocks), empty (unless ``allow_empty``),
    above the cap (from its size, before it is opened, and again from what was read) or unreadable."""
    p = Path(path)
    problem = _metadata_problem(p, max_bytes, cap_name, allow_empty, what)
    if problem is not None:
        raise problem
    try:
        fd = _open_nonblocking(p)
    except FileNotFoundError:
        raise UnreadableFile(p, "missing", "no such file") from None
    except OSError as exc:
        raise UnreadableFile(p, "error", f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise UnreadableFile(p, "special", not_regular(st.st_mode))
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise UnreadableFile(p, "error", f"cannot read: {exc.strerror or exc}") from None
    if not data and not allow_empty:
        raise UnreadableFile(p, "empty", "empty file")
    if len(data) > max_bytes:
        raise UnreadableFile(p, "too_large", f"file is above {_cap(max_bytes, cap_name)}", len(data))
    return data
