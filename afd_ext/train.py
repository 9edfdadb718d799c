"""Train the AFD module of a frozen classifier on any folders of photos (no labels needed).

Each step takes random crops, JPEG-compresses the same crops (quality drawn from a
list or range, optionally 1..N successive compressions; a share stays clean), and
minimizes  l1 * |AFD(stem(compressed)) - act(stem(clean))|  +  kl * KL(clean logits ||
de-drifted logits)  (+ ce * cross-entropy where labels exist). Runs on one process or
under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import hashlib
import json
import math
import os
import random
import re
import stat
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import data
from ._version import __version__
from .models.checkpoint import (MAX_AFD_PARAMS, CheckpointError, check_module_config, read_checkpoint,
                                save_checkpoint)
from .models import create_model
from .modules import BLOCKS, FDM_MODES, GATES, WIDTH_PRESETS
from .utils import atomic_write_bytes, remove_stale_temps, resolve_device, write_json


#: ``TrainConfig.autocast`` choices: the dtype the frozen classifier runs in ("auto": bfloat16 on
#: CUDA, float32 elsewhere). The AFD module and the losses stay in float32 whatever the choice.
AUTOCAST_CHOICES = ("auto", "bfloat16", "off")
#: ``train_log.csv`` columns, one row per step (the same entries as ``train_log.jsonl``, flat; the
#: validation cells are empty on steps without validation, ``ce`` on batches without labels).
CSV_COLUMNS = ("step", "loss", "l1", "kl", "ce", "gate", "lr", "time_s", "val_n", "val_quality", "val_clean_direct",
               "val_clean_afd", "val_q_direct", "val_q_afd")

#: The ``torch.profiler`` ranges of one training step (``record_function``; nearly free when no profiler
#: runs): tools/profile_train_step.py splits a step's time by them. The data range is the profiler's
#: own (around the loader), "other" is the step's time outside them.
STEP_RANGES = {"teacher": "afd_train.teacher",      # the stem (clean + degraded, one call), clean logits; no grad
               "student": "afd_train.student",      # AFD, rest of the classifier on its output, losses
               "backward": "afd_train.backward",
               "optimizer": "afd_train.optimizer"}  # zero_grad, clip, AdamW step, the weights' finiteness
#: None, or a list that each step phase appends (name, this thread's CPU seconds) to: the profiling
#: tool's clock, which a machine shared with other work slows less than the wall clock.
PHASE_CLOCK: Optional[list] = None


@contextlib.contextmanager
def _phase(name: str):
    """One STEP_RANGES phase of a training step: a profiler range, and PHASE_CLOCK's entry when set."""
    with torch.profiler.record_function(STEP_RANGES[name]):
        if PHASE_CLOCK is None:
            yield
            return
        t = time.thread_time()
        yield
        PHASE_CLOCK.append((name, time.thread_time() - t))


#: The range of every integer setting, checked where it is parsed (the ``afd train`` flags and
#: ``TrainConfig.validate``; README "Errors"). The upper bounds keep a run finite and its numbers in
#: range: 10^20 steps overflow the sample index, a billion compressions per sample never ends, a seed
#: must fit torch's 64-bit generator.
MAX_COUNT = 10**9
INT_RANGES = {"steps": (1, MAX_COUNT), "batch_size": (1, 10**6), "crop": (8, 4096), "max_compressions": (1, 20),
              "warmup": (0, MAX_COUNT), "val_every": (1, MAX_COUNT), "val_images": (1, MAX_COUNT),
              "val_quality": (1, 100), "ckpt_every": (1, MAX_COUNT), "workers": (0, 256), "seed": (0, 2**63 - 1),
              "threads": (0, 1024), "stop_after": (1, MAX_COUNT)}


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; nothing of it was written."""


class OutputLocked(RuntimeError):
    """Another ``afd train`` holds the output folder."""


@dataclasses.dataclass
class TrainConfig:
    data: Sequence[str]
    out: str = "runs/afd"
    backbone: str = "efficientnet_lite0"
    width: int | str = "small"
    fdm: str = "spatial"
    block: str = "repconv"          # 'repconv' or 'conv' (plain 3x3, ablation)
    gate: str = "none"              # 'global': the whole-image gate (modules.GATES), trained by gate_weight
    # Defaults: the recipe of the shipped Lite0 checkpoint (README), except the quality list.
    steps: int = 4000
    batch_size: int = 32
    crop: int = 224
    scale: tuple = (0.8, 1.25)      # short side resized to 256 * U(scale) before the crop
    qualities: Sequence[int] = data.DEFAULT_QUALITIES
    quality_range: Optional[tuple] = None  # (lo, hi): draw uniformly instead of from `qualities`
    max_compressions: int = 1       # >1: 1..N successive compressions per sample
    clean_fraction: float = 0.2
    # Mildly compressed samples (quality uniform in mild_range): like the clean ones their target is the
    # clean features, and the gate's target is "closed" (see gate_target).
    mild_fraction: float = 0.0
    mild_range: tuple = (75, 95)
    # The degradation mixture (README "Training"): each compressed sample is one of
    #   crop    - the crop itself compressed: block grid on the classifier's 8x8 grid (the paper's);
    #   shift   - a window 1..7 px larger compressed, then cropped: grid at a random offset;
    #   rescale - the scene compressed at k x the classifier's scale (k log-uniform in rescale_range,
    #             any grid offset), then resized to the crop: the grid lands at every period.
    # The crop share is 1 - shift_fraction - rescale_fraction.
    shift_fraction: float = 0.0
    rescale_fraction: float = 0.0
    rescale_range: tuple = (0.7, 3.0)
    webp_fraction: float = 0.0      # share of compressions through WebP instead of JPEG
    chroma444_fraction: float = 0.0  # share of JPEG compressions with 4:4:4 chroma (else 4:2:0)
    init: Optional[str] = None      # start from this AFD checkpoint (fine-tuning) instead of a new module
    flip: bool = True
    rotate: bool = True             # random 90-degree turns
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    clip: float = 1.0
    l1_weight: float = 1.0
    kl_weight: float = 0.2
    ce_weight: float = 0.0
    gate_weight: float = 0.0        # BCE of the gate logit against gate_target (gate='global' only)
    kl_temperature: float = 1.0
    holdout: float = 0.2            # fraction of labelled images held out for validation
    val_every: int = 400
    val_images: int = 100
    val_quality: int = 10
    ckpt_every: int = 400
    workers: int = 1
    seed: int = 0
    threads: int = 0                # torch CPU threads (0: torch's default)
    resume: bool = False
    stop_after: Optional[int] = None  # end this run after N steps (checkpointed), e.g. to split a long run
    # Wall-clock budget in seconds: at the end of the warm-up the step count is fixed to what fits
    # (at most `steps`). The learning rate of the warm-up does not depend on the step count, so the
    # run equals one started with --steps N (N is recorded in the checkpoint's recipe).
    time_budget: Optional[float] = None
    # The frozen classifier's precision and layout, as the field trains on GPUs: bfloat16 autocast
    # and channels_last ("auto" / None: bfloat16 on CUDA only; channels_last on every device, as it
    # pays on CPU too: docs/accuracy.md "Training step cost"). The AFD trains in float32.
    autocast: str = "auto"
    channels_last: Optional[bool] = None
    progress: bool = True

    def validate(self) -> None:
        for name, (lo, hi) in INT_RANGES.items():
            v = getattr(self, name)
            if v is None and name == "stop_after":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name.replace('_', ' ')} must be an integer in {lo}..{hi}, got {v!r}")
        for name in ("lr", "weight_decay", "clip", "l1_weight", "kl_weight", "ce_weight", "gate_weight",
                     "kl_temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number >= 0, got {v!r}")
        for name in ("scale", "rescale_range"):
            if len(getattr(self, name)) != 2 or not all(math.isfinite(float(v)) for v in getattr(self, name)):
                raise ValueError(f"{name.replace('_', ' ')} must be two finite numbers, got {getattr(self, name)!r}")
        if self.time_budget is not None and not math.isfinite(self.time_budget):
            raise ValueError(f"time budget must be a finite number of seconds, got {self.time_budget}")
        w = self.width
        if isinstance(w, str):
            if w not in WIDTH_PRESETS:
                raise ValueError(f"width must be one of {sorted(WIDTH_PRESETS)} or a positive integer, got {w!r}")
        elif isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"width must be one of {sorted(WIDTH_PRESETS)} or a positive integer, got {w!r}")
        if self.init is None:  # the parameter budget, with the smallest stem: nothing is allocated
            try:
                check_module_config({"channels": 1, "width": w,
                                     "fdm": self.fdm if self.fdm in FDM_MODES else "spatial"})
            except CheckpointError:
                raise ValueError(f"width {w}: the AFD module would have more than "
                                 f"afd_ext.checkpoint.MAX_AFD_PARAMS ({MAX_AFD_PARAMS}) parameters") from None
        if self.crop % 8:
            raise ValueError(f"crop must be a positive multiple of 8, got {self.crop}")
        data.parse_qualities(self.qualities)
        if self.quality_range is not None:
            lo, hi = self.quality_range
            data.parse_qualities([lo, hi])
            if lo > hi:
                raise ValueError(f"quality range {lo}-{hi} is empty")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ValueError(f"clean fraction must be in [0, 1), got {self.clean_fraction}")
        if not 0.0 <= self.mild_fraction < 1.0 or self.clean_fraction + self.mild_fraction >= 1.0:
            raise ValueError(f"mild fraction must be in [0, 1) and clean + mild fractions below 1, got "
                             f"{self.clean_fraction} + {self.mild_fraction}")
        data.parse_qualities(list(self.mild_range))
        if len(self.mild_range) != 2 or self.mild_range[0] > self.mild_range[1]:
            raise ValueError(f"mild range must be LO HI with LO <= HI, got {self.mild_range!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")

        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        for name in ("shift_fraction", "rescale_fraction", "webp_fraction", "chroma444_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name.replace('_', ' ')} must be in [0, 1], got {v}")
        if self.shift_fraction + self.rescale_fraction > 1.0 + 1e-9:
            raise ValueError(f"shift fraction + rescale fraction must be at most 1, got "
                             f"{self.shift_fraction} + {self.rescale_fraction}")
        lo, hi = self.rescale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"rescale range must satisfy 0 < lo <= hi, got {lo}-{hi}")
        if self.init is not None and not Path(self.init).is_file():
            if Path(self.init).exists():  # a folder, a FIFO, a device
                raise ValueError(f"--init {self.init}: not a regular file; give a checkpoint (.safetensors)")
            raise FileNotFoundError(f"--init: no checkpoint at {self.init}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time budget must be positive, got {self.time_budget}")
        if self.time_budget is not None and self.resume:
            raise ValueError("--time-budget cannot be combined with --resume: the first run fixed the step count "
                             "(pass it as --steps)")
        if self.time_budget is not None and self.warmup < 10:
            raise ValueError("a time budget needs a warm-up of at least 10 steps (its speed is measured there)")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.fdm not in FDM_MODES:
            raise ValueError(f"fdm must be one of {FDM_MODES}, got {self.fdm!r}")
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"autocast must be one of {AUTOCAST_CHOICES}, got {self.autocast!r}")
        if self.channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be True, False or None (auto), got {self.channels_last!r}")
        lo, hi = self.scale
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale must satisfy 0 < lo <= hi, got {lo}-{hi}")


# -- the output folder: one run at a time, no stale temporary files, a log without repeats ----------

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


def classifier_precision(cfg: TrainConfig, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype of the frozen classifier or None, channels_last) for ``cfg`` on ``device``."""
    on_cuda = device.type == "cuda"
    dtype = {"auto": torch.bfloat16 if on_cuda else None, "bfloat16": torch.bfloat16, "off": None}[cfg.autocast]
    return dtype, True if cfg.channels_last is None else cfg.channels_last


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


def _is_holdout(path: Path, fraction: float) -> bool:
    """Stable split by file name, the same on every machine and run (--holdout 0.5: the decision set)."""
    return data.name_hash_fraction(path) < fraction


def split_files(paths: Sequence[str], holdout: float) -> tuple[list[Path], list[Path]]:
    """(training files, held-out labelled files). Only labelled images are held out."""
    files = data.list_images(list(paths))
    held = [f for f in files if data.label_from_path(f) is not None and _is_holdout(f, holdout)]
    held_set = set(held)
    return [f for f in files if f not in held_set], held


# The gate's training target by the (lowest) quality a sample was compressed at: closed (0) for clean
# samples and from GATE_CLOSED_FROM up, open (1) up to GATE_OPEN_UP_TO, no target in between.
GATE_CLOSED_FROM = 75
GATE_OPEN_UP_TO = 50
NO_GATE_TARGET = -1.0


def gate_target(quality: Optional[int]) -> float:
    """1.0 (open), 0.0 (closed) or NO_GATE_TARGET for a sample compressed at ``quality`` (None: clean)."""
    if quality is None or quality >= GATE_CLOSED_FROM:
        return 0.0
    return 1.0 if quality <= GATE_OPEN_UP_TO else NO_GATE_TARGET


class CompressedPairs(Dataset):
    """Item i: (clean crop uint8, compressed crop uint8, label or -1, gate target (see gate_target)).
    Deterministic in (seed, i).

    Each worker keeps the decoded photos it has met (up to ``CACHE_PIXELS``): decoding a whole
    photo costs more than cropping and compressing a crop, and the training sets are small.
    """

    CACHE_PIXELS = 400_000_000  # ~1.2 GB of RGB per worker

    def __init__(self, files: Sequence[Path], cfg: TrainConfig, length: int, rank: int = 0):
        self.files, self.cfg, self.length, self.rank = list(files), cfg, length, rank
        self._cache, self._cached_pixels = {}, 0

    def _load(self, path: Path):
        img = self._cache.get(path)
        if img is None:
            img = data.load_image(path)
            if self._cached_pixels + img.width * img.height <= self.CACHE_PIXELS:
                self._cache[path] = img
                self._cached_pixels += img.width * img.height
        return img

    def __len__(self):
        return self.length

    def _quality(self, rng: random.Random) -> int:
        if self.cfg.quality_range is not None:
            return rng.randint(*self.cfg.quality_range)
        return rng.choice(list(self.cfg.qualities))

    def __getitem__(self, i):
        cfg = self.cfg
        rng = random.Random((cfg.seed * 1_000_003 + self.rank) * 10_000_019 + i)
        self.last_failures = []  # what this item met: the trainer reports them (see _Offset)
        for _ in range(20):  # an unreadable file: draw another (reported by the trainer)
            path = self.files[rng.randrange(len(self.files))]
            try:
                img = self._load(path)
                break
            except data.ImageError as exc:
                self.last_failures.append(f"{exc.path}: {exc.reason}")
                continue
        else:
            raise RuntimeError("20 unreadable images in a row; check the training folders (e.g. "
                               f"{self.last_failures[0]})")
        clean, comp, target = self._pair(img, rng)
        return clean, comp, -1 if (label := data.label_from_path(path)) is None else label, target

    def _pair(self, img, rng: random.Random):
        """(clean, compressed) uint8 tensors of one crop, drawn from the degradation mixture, and the
        sample's gate target."""
        cfg = self.cfg
        crop = cfg.crop
        u = rng.random()
        mode = "shift" if u < cfg.shift_fraction else (
            "rescale" if u < cfg.shift_fraction + cfg.rescale_fraction else "crop")
        k = math.exp(rng.uniform(*map(math.log, cfg.rescale_range))) if mode == "rescale" else 1.0
        # The scene window: a crop x crop square of the photo at the classifier's scale
        # (short side 256 * U(scale)), seen at k x that scale as a win x win square.
        w, h = img.size
        win = max(8, round(crop * k))
        margin = 8 * crop / win  # room for the grid offset, in pixels at the classifier's scale
        s = max(data.RESIZE * rng.uniform(*cfg.scale) / min(w, h), (crop + margin) / min(w, h))
        # Grid offset of the compression relative to the window (0: aligned, the crop protocol).
        dx, dy = (0, 0) if mode == "crop" else (rng.randint(1 if mode == "shift" else 0, 7),
                                                rng.randint(1 if mode == "shift" else 0, 7))
        sw, sh = w * s, h * s                      # photo size at the classifier's scale
        x0, y0 = rng.uniform(margin, sw - crop), rng.uniform(margin, sh - crop)
        px = crop / win / s                        # photo pixels per window pixel
        box = (max(0.0, x0 / s - dx * px), max(0.0, y0 / s - dy * px), min(w, (x0 + crop) / s),
               min(h, (y0 + crop) / s))
        region = img.resize((win + dx, win + dy), data.Image.BILINEAR, box=box)
        comp = region
        lowest = None  # the lowest quality the sample went through (None: clean)
        u = rng.random()
        if u >= cfg.clean_fraction:
            mild = u < cfg.clean_fraction + cfg.mild_fraction
            for _ in range(1 if mild else rng.randint(1, cfg.max_compressions)):
                codec = "webp" if rng.random() < cfg.webp_fraction else "jpeg"
                sub = "4:4:4" if rng.random() < cfg.chroma444_fraction else "4:2:0"
                q = rng.randint(*cfg.mild_range) if mild else self._quality(rng)
                comp = data.compress(comp, q, codec, sub)
                lowest = q if lowest is None else min(lowest, q)
        pair = []
        for im in (region, comp):
            im = im.crop((dx, dy, dx + win, dy + win))
            if win != crop:  # the classifier's own resize (bilinear, antialiased when shrinking)
                im = im.resize((crop, crop), data.Image.BILINEAR)
            pair.append(im)
        # Flips and quarter turns after compression: a flipped JPEG is a JPEG of the flipped
        # crop (quantization is sign-symmetric) and the crop protocol's grid stays aligned.
        if cfg.flip and rng.random() < 0.5:
            pair = [im.transpose(data.Image.FLIP_LEFT_RIGHT) for im in pair]
        if cfg.rotate and rng.random() < 0.25:
            t = rng.choice([data.Image.ROTATE_90, data.Image.ROTATE_180, data.Image.ROTATE_270])
            pair = [im.transpose(t) for im in pair]
        return data.to_tensor(pair[0]), data.to_tensor(pair[1]), gate_target(lowest)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def afd_loss(model, clean: torch.Tensor, comp: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
             afd=None, autocast: Optional[torch.dtype] = None,
             gate_targets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """The training objective; ``afd`` may be a DDP wrapper of ``model.afd``. ``autocast``: the dtype
    the frozen classifier's stem and rest run in (None: their own); the AFD and losses stay float32."""
    from . import reference
    afd = afd if afd is not None else model.afd
    device_type = clean.device.type

    def classifier_ctx():
        return torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    # The classifier is frozen: its stem and the clean logits need no graph. The clean and degraded
    # crops go through the stem in one call (the same per-sample op, one batch).
    with _phase("teacher"), torch.no_grad(), classifier_ctx():
        b = clean.shape[0]
        both = torch.cat([clean, comp]) if clean.dtype == comp.dtype else None
        if both is not None:
            feats, pixels = model.stem_features(both)
            feat_clean, feat, pixels = feats[:b], feats[b:], pixels[b:]
        else:
            (feat_clean, _), (feat, pixels) = model.stem_features(clean), model.stem_features(comp)
        target = reference.apply_act(feat_clean.float(), model.adapter.act)
        logits_clean = model.adapter.rest(target).float() if (cfg.kl_weight > 0) else None
    with _phase("student"):
        gated = model.afd.gate_mode != "none"
        out = afd(feat.float(), pixels, return_gate=True) if gated else afd(feat.float(), pixels)
        z = None
        if gated:
            out, z = out
        losses = {"l1": F.l1_loss(out, target)}
        if z is not None and cfg.gate_weight > 0 and gate_targets is not None:
            known = gate_targets != NO_GATE_TARGET
            if bool(known.any()):
                losses["gate"] = F.binary_cross_entropy_with_logits(z[known].float(), gate_targets[known].float())
        if cfg.kl_weight > 0 or cfg.ce_weight > 0:
            with classifier_ctx():
                logits = model.adapter.rest(out).float()
            if cfg.kl_weight > 0:
                t = cfg.kl_temperature
                losses["kl"] = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(logits_clean / t, 1),
                                        log_target=True, reduction="batchmean") * t * t
            if cfg.ce_weight > 0 and bool((labels >= 0).any()):
                losses["ce"] = F.cross_entropy(logits, labels, ignore_index=-1)
        total = cfg.l1_weight * losses["l1"] + cfg.kl_weight * losses.get("kl", 0.0) + cfg.ce_weight * losses.get(
            "ce", 0.0) + cfg.gate_weight * losses.get("gate", 0.0)
    return total, {k: float(v.detach()) for k, v in losses.items()}


@torch.no_grad()
def held_out_top1(model, files: Sequence[Path], quality: int, limit: int) -> dict:
    """Top-1 at ``quality`` and on clean images, direct vs AFD, on held-out labelled images."""
    from .evaluation import evaluate
    if not files:
        return {}
    r = evaluate(model, [str(f) for f in files[:limit]], qualities=[quality], progress=False, batch_size=50)
    q = r["qualities"][0]
    return {"n": r["n_images"], "clean_direct": r["clean"]["top1_direct"], "clean_afd": r["clean"]["top1_afd"],
            f"q{quality}_direct": q["top1_direct"], f"q{quality}_afd": q["top1_afd"]}


def _dist_info():
    if dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _param_digest(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _optimizer_tensors(opt) -> dict:
    out = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            out[f"train_state.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_optimizer_tensors(opt, tensors: dict) -> None:
    params = opt.param_groups[0]["params"]
    for key, v in tensors.items():
        if not key.startswith("train_state."):
            continue
        _, i, name = key.split(".", 2)
        p = params[int(i)]
        if name in ("exp_avg", "exp_avg_sq") and v.shape != p.shape:
            raise ValueError(f"optimizer state {key} has shape {tuple(v.shape)}, its weight {tuple(p.shape)}")
        opt.state[p][name] = v.to(p.device)


def train(cfg: TrainConfig, device: Optional[str] = None) -> dict:
    """Train and write ``<out>/afd.safetensors`` (+ .json, ``last.safetensors`` for --resume,
    ``train_log.jsonl``, ``train_summary.json``). Returns the summary."""
    cfg.validate()
    cfg = dataclasses.replace(cfg)  # --time-budget sets cfg.steps; leave the caller's config alone
    rank, world = _dist_info()
    device = resolve_device(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    train_files, held = split_files(cfg.data, cfg.holdout)
    # Files that cannot be images (special, empty, oversized, broken links) leave before the run;
    # those that fail to decode are met while drawing. Both are reported (log, summary, stderr).
    unreadable: dict[str, None] = {}  # "path: reason", in the order met
    problems = [(f, data.file_problem(f)) for f in train_files]
    unreadable.update((f"{f}: {why}", None) for f, why in problems if why)
    train_files = [f for f, why in problems if not why]
    if not train_files:
        raise ValueError("no training images left after the hold-out split" + (
            f" ({len(unreadable)} unreadable, e.g. {next(iter(unreadable))})" if unreadable else ""))
    with lock_output(out) if rank == 0 else contextlib.nullcontext():
        return _train_locked(cfg, device, rank, world, out, train_files, held, unreadable)


def _nonfinite_tensor(module) -> Optional[str]:
    """The name of the first weight or buffer of ``module`` holding NaN/Inf (one device sync)."""
    items = [(k, v) for k, v in module.state_dict().items() if v.is_floating_point()]
    if not items:
        return None
    ok = torch.stack([torch.isfinite(v).all() for _, v in items])
    if bool(ok.all()):
        return None
    return next(k for (k, _), good in zip(items, ok.tolist()) if not good)


@dataclasses.dataclass
class TrainingRun:
    """What a run builds before its first step (``build_training``); ``train_step`` runs one step of it."""
    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module          # the classifier + AFD as built (validation, checkpoints)
    afd: torch.nn.Module            # model.afd
    ddp: torch.nn.Module            # afd, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    loader: DataLoader
    autocast: Optional[torch.dtype]
    channels_last: bool
    memory_format: torch.memory_format
    world: int = 1
    step_model: Optional[torch.nn.Module] = None  # what the steps run (frozen_step_model(model))


# -- the frozen classifier of a training step: the same function, fewer operations ------------------

#: (conv, BatchNorm) attribute pairs of afd_ext's EfficientNet-Lite (backbones/efficientnet_lite.py):
#: each BatchNorm directly follows its conv, whose output nothing else reads.
_LITE_CONV_BN = {"EfficientNetLite": (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
                 "MBConvBlock": (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))}


@torch.no_grad()
def _fold_conv_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> torch.nn.Conv2d:
    """A frozen conv computing bn(conv(x)) for an eval-mode ``bn``: the BatchNorm's per-channel affine
    folded into the weights and bias. A stride-1, odd-kernel ``Conv2dSame`` (TensorFlow 'SAME': pads
    (k - 1) / 2 on each side at stride 1, whatever the input size) becomes an ``nn.Conv2d`` with that
    padding: the conv pads inside its kernel instead of copying its input into a padded tensor first."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    k = conv.kernel_size
    if (type(conv).__name__ == "Conv2dSame" and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and all(v % 2 == 1 for v in k)):
        new = torch.nn.Conv2d(conv.in_channels, conv.out_channels, k, 1, (k[0] // 2, k[1] // 2),
                              groups=conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    else:
        new = copy.deepcopy(conv)
    new.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype), requires_grad=False)
    new.bias = torch.nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return new.eval()


def frozen_step_model(model):
    """The model a training step runs: ``model`` itself, or, for afd_ext's EfficientNet-Lite, a wrapper
    around a copy of its frozen classifier with every BatchNorm folded into the conv before it (the
    classifier runs in eval mode, so each BatchNorm is a per-channel affine: one operation less per
    conv in the teacher's and the student's forward and in the backward) and the stride-1 'SAME' pads
    done by the convs (see _fold_conv_bn). The same function of the input up to float rounding; it shares
    ``model.afd`` (the module being trained) and the step never writes the copy. Any other classifier,
    or one whose BatchNorms are not in eval mode: ``model``."""
    clf, adapter = model.classifier, model.adapter
    if (type(clf).__name__ != "EfficientNetLite" or getattr(adapter.stem, "__self__", None) is not clf
            or getattr(adapter.rest, "__self__", None) is not clf):
        return model
    pairs = [(m, names) for m in clf.modules() for names in _LITE_CONV_BN.get(type(m).__name__, ())
             if hasattr(m, names[0])]
    bns = [getattr(m, b) for m, (_, b) in pairs]
    if any(type(bn) is not torch.nn.BatchNorm2d or bn.training or bn.running_var is None for bn in bns) or len(
            {id(bn) for bn in bns}) != sum(isinstance(m, torch.nn.BatchNorm2d) for m in clf.modules()):
        return model  # a BatchNorm that is not a frozen affine right after its conv: nothing folded
    folded = copy.deepcopy(clf)
    for m in folded.modules():
        for conv_name, bn_name in _LITE_CONV_BN.get(type(m).__name__, ()):
            if hasattr(m, conv_name):
                setattr(m, conv_name, _fold_conv_bn(getattr(m, conv_name), getattr(m, bn_name)))
                setattr(m, bn_name, torch.nn.Identity())
    folded.requires_grad_(False).eval()
    step_adapter = dataclasses.replace(adapter, stem=getattr(folded, adapter.stem.__name__),
                                       rest=getattr(folded, adapter.rest.__name__))
    return type(model)(folded, model.afd, step_adapter)


def build_training(cfg: TrainConfig, device: torch.device, train_files, *, start: int = 0, rank: int = 0,
                   world: int = 1, resume_tensors: Optional[dict] = None,
                   resume_path: Optional[Path] = None) -> TrainingRun:
    """The model (frozen classifier + the AFD in training mode), optimizer and data loader of a run
    from step ``start`` (``resume_tensors``: the weights and optimizer state of ``resume_path``)."""
    # fine-tune: the checkpoint's architecture replaces width/fdm/block
    new_afd = {"width": cfg.width, "fdm": cfg.fdm, "block": cfg.block, "gate": cfg.gate}
    model = create_model(cfg.backbone, afd=new_afd if cfg.init is None else True, checkpoint=cfg.init,
                         device=device)
    model.classifier.requires_grad_(False)  # ours, built here: only the AFD learns
    autocast, channels_last = classifier_precision(cfg, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.classifier.to(memory_format=memory_format)  # ours too; the AFD keeps its own layout
    step_model = frozen_step_model(model)
    step_model.classifier.to(memory_format=memory_format)
    model.afd.train()
    afd = model.afd
    opt = torch.optim.AdamW([p for p in afd.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    if resume_tensors is not None:
        try:
            afd.load_state_dict({k: v for k, v in resume_tensors.items() if not k.startswith("train_state.")})
            _load_optimizer_tensors(opt, resume_tensors)
        except (RuntimeError, ValueError, KeyError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"--resume: {resume_path}: its weights do not fit the module this run builds "
                                  f"({first})") from None
    ddp = afd
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(afd, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    remaining = cfg.steps - start
    ds = CompressedPairs(train_files, cfg, max(remaining, 0) * cfg.batch_size, rank=rank)
    # The dataset is indexed by global sample number, so resuming continues the same stream.
    ds_offset = start * cfg.batch_size
    loader = DataLoader(_Offset(ds, ds_offset), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.workers, persistent_workers=False, drop_last=True,
                        pin_memory=device.type == "cuda")
    return TrainingRun(cfg, device, model, afd, ddp, opt, loader, autocast, channels_last, memory_format, world,
                       step_model)


def _diverged_plain(what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}")


def train_step(run: TrainingRun, batch, step: int, diverged=_diverged_plain) -> tuple[torch.Tensor, dict]:
    """One optimizer step of ``run`` on ``batch`` = (clean, comp, labels, gate_targets) as the loader gives
    them, at step index ``step`` (0-based: its learning rate). Returns (loss, its parts); raises
    ``diverged(what)`` when the loss or a weight stops being finite."""
    cfg, opt, afd = run.cfg, run.opt, run.afd
    clean, comp, labels, gate_targets = batch
    for g in opt.param_groups:
        g["lr"] = _lr_at(step, cfg)
    clean, comp = (t.to(run.device).contiguous(memory_format=run.memory_format) for t in (clean, comp))
    labels, gate_targets = labels.to(run.device), gate_targets.to(run.device)
    model = run.step_model if run.step_model is not None else run.model
    loss, parts = afd_loss(model, clean, comp, labels, cfg, afd=run.ddp,
                           autocast=run.autocast, gate_targets=gate_targets)
    if run.world == 1 and not math.isfinite(float(loss.detach())):  # (DDP: the weight check, on every rank)
        raise diverged(f"the loss is {float(loss.detach())}")
    with _phase("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with _phase("optimizer"):
        torch.nn.utils.clip_grad_norm_(afd.parameters(), cfg.clip)
        try:
            opt.step()
        except RuntimeError as exc:  # e.g. --lr 1e38: AdamW's step size lr / (1 - beta1) overflows float32
            if "overflow" not in str(exc):
                raise
            raise diverged(f"the optimizer's update overflows ({str(exc).splitlines()[0]})") from None
        bad = _nonfinite_tensor(afd)
    if bad is not None:
        raise diverged(f"weight {bad} is no longer finite")
    return loss, parts


def _train_locked(cfg: TrainConfig, device, rank: int, world: int, out: Path, train_files, held,
                  unreadable: dict) -> dict:
    start = 0
    last = out / "last.safetensors"
    resume_tensors = None
    if not cfg.resume and cfg.init is not None:
        init = Path(cfg.init).resolve()
        if any(init == (out / name).resolve() for name in RUN_FILES):
            raise ValueError(f"--init {cfg.init}: a fresh run into --out {out} replaces that file; copy it "
                             "elsewhere first, or train into another --out")
    if cfg.resume:  # checked before anything is built
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
        resume_tensors, saved = read_checkpoint(last)
        start = _check_resume(last, saved, resume_tensors, cfg)

    run = build_training(cfg, device, train_files, start=start, rank=rank, world=world,
                         resume_tensors=resume_tensors, resume_path=last)
    model, afd, opt, loader = run.model, run.afd, run.opt, run.loader
    autocast, channels_last = run.autocast, run.channels_last
    saved_step = start if cfg.resume else None  # the step of the last checkpoint on disk
    config = {
        "backbone": cfg.backbone, "version": __version__,
        "recipe": _recipe(cfg),
        "data": {"folders": [portable_path(p) for p in cfg.data], "n_train": len(train_files),
                 "holdout_files": sorted(f.name for f in held)},
        "world_size": world, "device": device.type,
        "classifier_precision": {"autocast": str(autocast).removeprefix("torch.") if autocast else "float32",
                                 "channels_last": channels_last},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    log_path = out / "train_log.jsonl"  # and train_log.csv, the same entries flat
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # a fresh run replaces the folder's previous run: its final model and state go
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()
        _restart_log(log_path, start)  # a killed run's steps after the checkpoint are run (and logged) again
    new_unreadable = list(unreadable)
    t0 = time.time()
    history = []
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step",
               disable=not cfg.progress or rank != 0, file=sys.stderr)
    step = start
    rate_from = None  # (step, time) where the speed measurement for --time-budget starts

    def diverged(what: str) -> TrainingDiverged:
        kept = (f"the last finite checkpoint is {last} (step {saved_step})" if saved_step is not None
                else "no checkpoint was written")
        return TrainingDiverged(f"training diverged at step {step + 1}: {what} (lr {opt.param_groups[0]['lr']:g}); "
                                f"stopped without saving it, {kept}. Lower --lr or --clip")

    for clean, comp, labels, gate_targets, failed in loader:
        if step >= cfg.steps:
            break
        for line in (ln for f in failed if f for ln in f.split("\n")):
            if line not in unreadable:
                unreadable[line] = None
                new_unreadable.append(line)
        loss, parts = train_step(run, (clean, comp, labels, gate_targets), step, diverged)
        step += 1
        if cfg.time_budget is not None:
            if step == min(20, cfg.warmup // 2):  # past the workers' start-up
                rate_from = (step, time.time())
            elif step == cfg.warmup and rate_from is not None:
                per_step = (time.time() - rate_from[1]) / (step - rate_from[0])
                left = cfg.time_budget - (time.time() - t0)
                fitted = max(step, min(cfg.steps, step + int(0.97 * left / per_step)))
                if world > 1:  # every rank must stop at the same step
                    t = torch.tensor([fitted], device=device if device.type == "cuda" else "cpu")
                    dist.all_reduce(t, op=dist.ReduceOp.MIN)
                    fitted = int(t)
                cfg.steps = fitted
                config["recipe"]["steps"] = fitted
                bar.total = fitted
                tqdm.write(f"time budget {cfg.time_budget:.0f} s: {per_step * 1000:.1f} ms/step -> "
                           f"{fitted} steps", file=sys.stderr)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()})
        if rank == 0:
            entry = {"step": step, "loss": float(loss.detach()), **parts, "lr": opt.param_groups[0]["lr"],
                     "time_s": round(time.time() - t0, 1)}
            if new_unreadable:  # skipped training images, reported where they were met (first few)
                entry["unreadable"] = {"new": len(new_unreadable), "total": len(unreadable),
                                       "first": new_unreadable[:5]}
                for line in new_unreadable[:5]:
                    tqdm.write(f"skipped unreadable training image {line}", file=sys.stderr)
                new_unreadable = []
            if step % cfg.val_every == 0 or step == cfg.steps:
                afd.eval()
                entry["val"] = held_out_top1(model, held, cfg.val_quality, cfg.val_images)
                afd.train()
                tqdm.write(f"step {step}: {entry['val']}", file=sys.stderr)
            with open(log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            with open(log_path.with_suffix(".csv"), "a") as fh:
                fh.write(_csv_text([csv_row(entry)]))
            history.append(entry)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or step == cfg.stop_after:
                save_checkpoint(last, afd, {**config, "train_state": {"step": step}},
                                extra_tensors=_optimizer_tensors(opt))
                saved_step = step
        if cfg.stop_after is not None and step >= cfg.stop_after:
            break
    bar.close()
    digest = _param_digest(afd)
    digests = [digest]
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, digest)
    summary = {"steps": step, "total_steps": cfg.steps, "resumed_from": start, "wall_s": round(time.time() - t0, 1),
               "world_size": world, "param_digests": digests,
               "final_val": next((h["val"] for h in reversed(history) if "val" in h), None),
               "unreadable_files": {"count": len(unreadable), "first": list(unreadable)[:5]}}
    if unreadable and rank == 0:
        tqdm.write(f"skipped {len(unreadable)} unreadable training image(s) (train_summary.json: unreadable_files)",
                   file=sys.stderr)
    if rank == 0 and step >= cfg.steps:
        save_checkpoint(out / "afd.safetensors", afd, {**config, "train_summary": summary})
        write_json(out / "train_summary.json", summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


class _Offset(Dataset):
    def __init__(self, ds, offset):
        self.ds, self.offset = ds, offset

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        """The dataset's item + the unreadable files it met ("" or lines "path: reason")."""
        item = self.ds[i + self.offset]
        return (*item, "\n".join(getattr(self.ds, "last_failures", [])))
