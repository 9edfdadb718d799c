"""The output folder of a run: one run at a time (a lock holding the pid), no stale temporary files, the
logs (JSON Lines and CSV) without repeated steps, and the checks that a ``--resume`` continues the same
recipe."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import stat
from pathlib import Path

from ..models.checkpoint import CheckpointError
from ..modules import WIDTH_PRESETS
from ..utils import atomic_write_bytes, remove_stale_temps
from .config import TrainConfig


#: ``train_log.csv`` columns, one row per step (the same entries as ``train_log.jsonl``, flat; the
#: validation cells are empty on steps without validation, ``ce`` on batches without labels).
CSV_COLUMNS = ("step", "loss", "l1", "kl", "ce", "gate", "lr", "time_s", "val_n", "val_quality", "val_clean_direct",
               "val_clean_afd", "val_q_direct", "val_q_afd")


class OutputLocked(RuntimeError):
    """Another ``afd train`` holds the output folder."""


LOCK_NAME = ".lock"


#: What a run writes into its --out folder (besides the logs); a fresh run (no --resume) removes the
#: previous run's, so the folder never holds one run's final model beside another's logs.
RUN_FILES = ("afd.safetensors", "afd.json", "last.safetensors", "last.json", "train_summary.json")


def clean_stale_tmp(out: Path) -> list[Path]:
    """Remove the temporary files an interrupted (killed) write left in ``out``: only the writer's
    own (``utils.TEMP_PATTERN``, of a process that is gone); call it while holding the folder's
    lock. Returns what was removed."""
    return remove_stale_temps(out)


def _open_lock_file(out: Path):
    """``OUT/.lock`` opened for read/write without ever following a link or opening something
    that is not a plain file of its own (its pid is written into it: a link or a hard link to
    another file would truncate that file)."""
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"--out {out}: {path} is a symbolic link; the lock file is never followed "
                             "(remove the link)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        why = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
        raise ValueError(f"--out {out}: {path} {why}; the lock file must be the folder's own (remove it)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+")


@contextlib.contextmanager
def lock_output(out: str | os.PathLike):
    """Hold ``out`` (created if needed) for one run: an exclusive ``flock`` on ``OUT/.lock``,
    which holds the pid; a second holder gets :class:`OutputLocked` naming the first one's pid.
    The lock goes with the process (exit, crash or SIGKILL). Stale temporary files of the folder
    are removed once it is held."""
    import fcntl
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    fh = _open_lock_file(out)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise OutputLocked(f"--out {out}: another afd train (pid {pid}) is writing into this folder; wait for it "
                           "to end or pass another --out") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        clean_stale_tmp(out)
        yield out
    finally:
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def csv_row(entry: dict) -> list:
    """One ``train_log.jsonl`` entry as a ``train_log.csv`` row (CSV_COLUMNS)."""
    row = {k: entry.get(k, "") for k in ("step", "loss", "l1", "kl", "ce", "gate", "lr", "time_s")}
    val = entry.get("val") or {}
    quality = next((int(m.group(1)) for k in val if (m := re.fullmatch(r"q(\d+)_direct", k))), None)
    if val:
        row.update(val_n=val.get("n", ""), val_quality=quality if quality is not None else "",
                   val_clean_direct=val.get("clean_direct", ""), val_clean_afd=val.get("clean_afd", ""),
                   val_q_direct=val.get(f"q{quality}_direct", ""), val_q_afd=val.get(f"q{quality}_afd", ""))
    return [row.get(c, "") for c in CSV_COLUMNS]


def _csv_text(rows: list) -> str:
    import csv
    import io
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _restart_log(log_path: Path, start: int) -> None:
    """Keep the log entries of steps 1..``start`` (what the resumed checkpoint holds) and drop the
    rest: the steps after it are run again, and a fresh run (start 0) starts a fresh log. A line
    cut by a kill is dropped too. ``train_log.csv`` (beside it) is rewritten from the kept entries."""
    kept = []
    # is_file: a regular file (through a link too); a FIFO put in its place would block the read
    for line in (log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= start:
            kept.append((line, entry))
    atomic_write_bytes(log_path, "".join(line + "\n" for line, _ in kept).encode())
    rows = [list(CSV_COLUMNS)] + [csv_row(entry) for _, entry in kept]
    atomic_write_bytes(log_path.with_suffix(".csv"), _csv_text(rows).encode())


# Recipe fields a resumed run may change: they affect only what is logged and when it checkpoints.
RESUME_MAY_CHANGE = ("val_every", "val_images", "val_quality", "ckpt_every")


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as a checkpoint records it: relative paths as given; an absolute one relative to the
    working directory when it lies below it, else only its last two parts (``.../parent/name``).
    Checkpoints travel; the training machine's folder tree does not belong in them."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    with contextlib.suppress(ValueError):
        return str(p.relative_to(Path.cwd()))
    return str(Path("...", *p.parts[-2:]))


def _recipe(cfg: TrainConfig) -> dict:
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
              if k not in ("data", "out", "resume", "stop_after", "progress", "workers", "threads", "time_budget")}
    if recipe["init"] is not None:
        recipe["init"] = portable_path(recipe["init"])
    return recipe


def _check_resume(path: Path, saved: dict, tensors: dict, cfg: TrainConfig) -> int:
    """The step ``path`` (OUT/last.safetensors) was saved at, after checking that it holds training
    state and that this run's recipe is the one it was trained with (CheckpointError naming the
    file and every difference otherwise)."""
    state = saved.get("train_state")
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"--resume: {path} holds no training state (train_state.step): it is not a "
                              "last.safetensors written by afd train")
    if step > cfg.steps:  # a crafted or foreign state: the final model would be written untrained
        raise CheckpointError(f"--resume: {path} claims step {step}, beyond this recipe's {cfg.steps} steps")
    if not any(k.startswith("train_state.") for k in tensors) and step > 0:
        raise CheckpointError(f"--resume: {path} holds no optimizer state (train_state.* tensors)")
    if saved.get("backbone") != cfg.backbone:
        raise CheckpointError(f"--resume: {path} was trained for backbone {saved.get('backbone')!r}, this run "
                              f"asks {cfg.backbone!r}")
    old = saved.get("recipe")
    if not isinstance(old, dict):
        raise CheckpointError(f"--resume: {path} records no training recipe")
    new = _recipe(cfg)

    def norm(key, v):
        if key == "width" and isinstance(v, str):
            return WIDTH_PRESETS.get(v, v)
        return list(v) if isinstance(v, tuple) else v
    diffs = [f"{k}: {old[k]!r} there, {new[k]!r} here" for k in sorted(set(old) & set(new))
             if k not in RESUME_MAY_CHANGE and norm(k, old[k]) != norm(k, new[k])]
    if diffs:
        raise CheckpointError(f"--resume: {path} was trained with another recipe ({'; '.join(diffs)}); resume "
                              "with the flags of the first run, or train into another --out")
    return step
