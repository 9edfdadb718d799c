"""What a training step sees: the hold-out split, and the degradation dataset (a clean crop and its
degraded copy under the mixture of ``TrainConfig``: JPEG/WebP, shifted grids, rescales, successive
compressions, a clean share) with the gate's target per sample."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Optional, Sequence

from torch.utils.data import Dataset

from .. import data
from .config import TrainConfig


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


class _Offset(Dataset):
    def __init__(self, ds, offset):
        self.ds, self.offset = ds, offset

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        """The dataset's item + the unreadable files it met ("" or lines "path: reason")."""
        item = self.ds[i + self.offset]
        return (*item, "\n".join(getattr(self.ds, "last_failures", [])))
