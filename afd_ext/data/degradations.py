"""Degradations: compression by JPEG or WebP, once or several times, and how a compressed image
reaches the classifier (the protocols of docs/design.md §1)."""
from __future__ import annotations

import io
import random
from typing import Iterable, Sequence

from PIL import Image

from .transforms import resize_center_crop

DEFAULT_QUALITIES = (25, 18, 15, 10, 7)  # ImageNet-C JPEG severities 1..5
CODECS = ("jpeg", "webp")
CHROMA_SUBSAMPLING = {"4:2:0": 2, "4:4:4": 0}  # Pillow's `subsampling` codes


def compress_bytes(img: Image.Image, quality: int, codec: str = "jpeg", subsampling: str = "4:2:0") -> bytes:
    """The file Pillow writes for ``img`` in ``codec`` ('jpeg' or 'webp') at ``quality`` (1..100).
    ``subsampling`` ('4:2:0', Pillow's JPEG default, or '4:4:4') applies to JPEG only."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"{codec.upper()} quality must be an integer in 1..100, got {quality}")
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if subsampling not in CHROMA_SUBSAMPLING:
        raise ValueError(f"unknown chroma subsampling {subsampling!r}; choose one of {', '.join(CHROMA_SUBSAMPLING)}")
    buf = io.BytesIO()
    if codec == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality), subsampling=CHROMA_SUBSAMPLING[subsampling])
    else:
        img.save(buf, format="WEBP", quality=int(quality))
    return buf.getvalue()


def _decoded(payload: bytes) -> Image.Image:
    with Image.open(io.BytesIO(payload)) as out:
        return out.convert("RGB")


def compress(img: Image.Image, quality: int, codec: str = "jpeg", subsampling: str = "4:2:0") -> Image.Image:
    """Pillow round trip through ``codec`` at ``quality``: :func:`compress_bytes`, decoded (RGB)."""
    return _decoded(compress_bytes(img, quality, codec, subsampling))


def jpeg_compress(img: Image.Image, quality: int) -> Image.Image:
    """Pillow JPEG round trip at ``quality`` (1..100; Pillow's default 4:2:0 subsampling)."""
    return compress(img, quality, "jpeg")


def multi_compress(img: Image.Image, qualities: Sequence[int], times: int, rng: random.Random,
                   codec: str = "jpeg") -> Image.Image:
    """``times`` successive compressions, each at a quality drawn from ``qualities``."""
    for _ in range(times):
        img = compress(img, rng.choice(list(qualities)), codec)
    return img


# How a compressed image reaches the classifier (README "Accuracy"):
#   crop    - the 224 crop of the evaluation transform is compressed (the paper's ImageNet-C protocol);
#   resized - that compressed crop goes through the evaluation transform again (a small JPEG in a pipeline);
#   full    - the decoded photo is compressed at its own size, then the evaluation transform (an upload).
PROTOCOLS = ("crop", "resized", "full")


def degrade(photo: Image.Image, qualities: Sequence[int], protocol: str = "crop", codec: str = "jpeg",
            return_file: bool = False):
    """The classifier's 224 input under ``protocol`` after successive compressions at ``qualities``
    (one entry: one compression). ``return_file``: (that image, the bytes of the last compressed
    file: what a reader of the file, e.g. ``afd predict``, would open)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not qualities:
        raise ValueError("degrade needs at least one quality")
    img = photo if protocol == "full" else resize_center_crop(photo)
    for q in qualities:
        payload = compress_bytes(img, q, codec)
        img = _decoded(payload)
    img = img if protocol == "crop" else resize_center_crop(img)
    return (img, payload) if return_file else img


def parse_qualities(values: Iterable) -> list[int]:
    out = []
    for v in values:
        q = int(v)
        if not 1 <= q <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {v}")
        out.append(q)
    return out
