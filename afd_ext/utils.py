"""Small helpers every part of the package shares: atomic file writes, JSON results,
device resolution and the git commit a result was made at. One home each, so a fix lands once."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import torch


def _usual_mode(path: str | os.PathLike) -> None:
    umask = os.umask(0)  # mkstemp makes 0600 files; give the usual permissions
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (same suffix, so writers that pick the format from
    it work); fsynced and renamed onto ``out`` on success, removed on failure: a reader never
    sees a half-written file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_mode(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj) -> None:
    """A result as indented JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


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
    """HEAD, with '-dirty' when tracked files under the package differ from it. AFD_COMMIT
    overrides it (a copied working tree, as on a lent GPU machine, can carry a stale .git)."""
    if os.environ.get("AFD_COMMIT"):
        return os.environ["AFD_COMMIT"]
    head = _git("rev-parse", "HEAD")
    if not head:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no", ".")
    return head + ("-dirty" if changed else "")
