"""Images in and out: robust loading, the evaluation transform, JPEG compression, labels.

Every loader turns a file into an RGB PIL image or raises :class:`ImageError`
(a ValueError) naming the file and the problem, so a caller can report it and
go on with the other files. Only regular files are opened, and nothing larger than
the budgets below (MAX_FILE_BYTES, MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO) is read or decoded.
"""
from __future__ import annotations

import functools
import io
import math
import os
import random
import re
import stat
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_QUALITIES = (25, 18, 15, 10, 7)  # ImageNet-C JPEG severities 1..5
RESIZE, CROP = 256, 224
_SYNSET = re.compile(r"^(n\d{8})")

# Budgets every reader applies before it allocates (README "Errors"): a file is read only when it
# is a regular file of at most MAX_FILE_BYTES; an image is decoded only when its header declares at
# most MAX_IMAGE_PIXELS pixels (Pillow's own decompression-bomb error level, kept here so that it
# holds whatever Image.MAX_IMAGE_PIXELS is set to) and a long side at most MAX_ASPECT_RATIO times
# the short one (the evaluation transform scales the short side to 256: a 40000x1 strip would
# become 10240000x256 pixels, gigabytes, before the crop).
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 2 * 89_478_485
MAX_ASPECT_RATIO = 64


class ImageError(ValueError):
    """A file that cannot be used as an image."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# -- files -------------------------------------------------------------------------------------

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
        if p.is_dir():
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


def _not_regular(mode: int) -> str:
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
    return f"not a regular file but {kind}; only regular files are read"


def file_problem(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> Optional[str]:
    """Why ``path`` cannot be read as an image file, from its metadata alone (nothing is opened),
    or None: missing, a broken symlink, a directory, not a regular file (FIFO, device, socket;
    symlinks are followed), empty, or larger than ``max_bytes``."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(p) else "no such file"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(st.st_mode):
        return _not_regular(st.st_mode)
    if st.st_size == 0:
        return "empty file"
    if st.st_size > max_bytes:
        return f"file of {st.st_size} bytes is above the size cap afd_ext.data.MAX_FILE_BYTES ({max_bytes} bytes)"
    return None


def check_image_size(width: int, height: int, name: str = "<image>") -> None:
    """ImageError unless a ``width`` x ``height`` image fits the pixel budget
    (``MAX_IMAGE_PIXELS``) and the aspect-ratio budget (``MAX_ASPECT_RATIO``). Call it with the
    size a header declares, before decoding."""
    if width < 1 or height < 1:
        raise ImageError(name, f"empty image ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(name, f"{width}x{height} image ({width * height} pixels) is too large: above the pixel "
                               f"budget afd_ext.data.MAX_IMAGE_PIXELS ({MAX_IMAGE_PIXELS}, Pillow's "
                               "decompression-bomb limit, Image.MAX_IMAGE_PIXELS x 2)")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(name, f"{width}x{height} image: aspect ratio above afd_ext.data.MAX_ASPECT_RATIO "
                               f"({MAX_ASPECT_RATIO}:1); resized to a short side of {RESIZE} it would need "
                               f"{round(max(width, height) * RESIZE / min(width, height))}x{RESIZE} pixels")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit integers: 0..255 or 0..65535; 32-bit floats (TIFF): 0..1 when nothing exceeds 1
        # (the float convention; Pillow's own convert() would clip them to black), else as integers.
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        if img.mode == "F" and top <= 1.0:
            peak = 1.0
        else:
            peak = 255.0 if top <= 255 else (65535.0 if top <= 65535 else top)
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Bytes of an image file -> RGB PIL image, EXIF orientation applied."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            check_image_size(img.width, img.height, name)  # the declared size, before any pixel is decoded
            img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"too large for Pillow's safety limit (Image.MAX_IMAGE_PIXELS): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated or corrupt image file ({reason})"
        elif "cannot identify" in reason:
            reason = "not an image file Pillow can read"
        raise ImageError(name, reason) from None
    if img.width < 1 or img.height < 1:
        raise ImageError(name, f"empty image ({img.width}x{img.height})")
    img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def read_image_bytes(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, or ImageError for a missing, empty, special (FIFO, device,
    socket: never opened, so nothing blocks), oversized (``MAX_FILE_BYTES``) or unreadable one."""
    p = Path(path)
    problem = file_problem(p, max_bytes)
    if problem:
        raise ImageError(p, problem)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the check, opening it does not wait
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ImageError(p, "no such file") from None
    except OSError as exc:
        raise ImageError(p, f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise ImageError(p, _not_regular(st.st_mode))
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(p, f"cannot read: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(p, "empty file")
    if len(data) > max_bytes:
        raise ImageError(p, f"file is above the size cap afd_ext.data.MAX_FILE_BYTES ({max_bytes} bytes)")
    return data


def load_image(path: str | os.PathLike) -> Image.Image:
    """Image file -> RGB PIL image (EXIF orientation applied; CMYK, grey, 16-bit, palette and
    alpha images converted). Raises ImageError naming the file on any problem."""
    return decode_image(read_image_bytes(path), str(path))


# -- transforms --------------------------------------------------------------------------------

def check_resize(width: int, height: int) -> None:
    """ValueError for an image the evaluation transform cannot resize within the budgets
    (empty, or an aspect ratio above ``MAX_ASPECT_RATIO``), before anything is allocated."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize an empty {width}x{height} image")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"a {width}x{height} image has an aspect ratio above afd_ext.data.MAX_ASPECT_RATIO "
                         f"({MAX_ASPECT_RATIO}:1): resizing its short side to {RESIZE} would allocate "
                         f"{round(max(width, height) * RESIZE / min(width, height))}x{RESIZE} pixels")


def resize_center_crop(img: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """The evaluation transform: short side to ``resize`` (bilinear), centre crop ``crop`` x ``crop``."""
    w, h = img.size
    check_resize(w, h)
    scale = resize / min(w, h)
    nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return img.crop((left, top, left + crop, top + crop))


class EvalTransform:
    """PIL image or uint8 tensor (3,H,W) -> uint8 tensor (3,crop,crop): short side to ``resize``
    (bilinear, antialiased), centre crop; exactly the evaluation transform of ``afd eval``.
    The model normalizes itself, so the output stays uint8 0..255."""

    def __init__(self, resize: int = RESIZE, crop: int = CROP):
        self.resize, self.crop = resize, crop

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"a tensor image must be uint8 (3, H, W), got {image.dtype} "
                                 f"{tuple(image.shape)}")
            image = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
        if not isinstance(image, Image.Image):
            raise TypeError(f"transforms() takes a PIL image or a uint8 tensor, got {type(image).__name__}")
        return to_tensor(resize_center_crop(_to_rgb(image), self.resize, self.crop))

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, crop={self.crop}, interpolation=bilinear, output=uint8)"


CODECS = ("jpeg", "webp")
CHROMA_SUBSAMPLING = {"4:2:0": 2, "4:4:4": 0}  # Pillow's `subsampling` codes


def compress(img: Image.Image, quality: int, codec: str = "jpeg", subsampling: str = "4:2:0") -> Image.Image:
    """Pillow round trip through ``codec`` ('jpeg' or 'webp') at ``quality`` (1..100).
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
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def jpeg_compress(img: Image.Image, quality: int) -> Image.Image:
    """Pillow JPEG round trip at ``quality`` (1..100; Pillow's default 4:2:0 subsampling)."""
    return compress(img, quality, "jpeg")


def multi_compress(img: Image.Image, qualities: Sequence[int], times: int, rng: random.Random,
                   codec: str = "jpeg") -> Image.Image:
    """``times`` successive compressions, each at a quality drawn from ``qualities``."""
    for _ in range(times):
        img = compress(img, rng.choice(list(qualities)), codec)
    return img


# -- what a JPEG file says about itself ----------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _reference_tables() -> tuple:
    """((quality, luma table, chroma table), ...) of Pillow/libjpeg's scaled IJG tables, 1..100,
    in the order Pillow reports ``Image.quantization`` (read back from tiny encodes)."""
    probe = Image.new("RGB", (16, 16), (128, 64, 32))
    out = []
    for q in range(1, 101):
        buf = io.BytesIO()
        probe.save(buf, format="JPEG", quality=q)
        with Image.open(buf) as im:
            t = im.quantization
        out.append((q, np.asarray(t[0], np.float64), np.asarray(t.get(1, t[0]), np.float64)))
    return tuple(out)


# A JPEG whose tables say quality above this has nothing for the AFD to correct (it is trained on
# quality 5..30; README "Accuracy" measures 50..95): Pipeline / afd predict skip the AFD for it.
SKIP_AFD_ABOVE_QUALITY = 85


def estimate_jpeg_quality(quantization: dict) -> Optional[int]:
    """The IJG quality (1..100) whose scaled standard tables are closest (mean absolute log
    ratio) to a JPEG's quantization tables (Pillow's ``Image.quantization``); exact for files
    written by libjpeg/Pillow, the nearest equivalent for other encoders. None without tables."""
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    luma = np.log(np.maximum(np.asarray(quantization[0], np.float64), 1.0))
    chroma = np.log(np.maximum(np.asarray(quantization[1], np.float64), 1.0)) if (
        1 in quantization and len(quantization[1]) == 64) else None
    best, best_err = None, math.inf
    for q, ref_l, ref_c in _reference_tables():
        err = np.abs(luma - np.log(ref_l)).mean()
        if chroma is not None:
            err = 0.5 * (err + np.abs(chroma - np.log(ref_c)).mean())
        if err < best_err:
            best, best_err = q, err
    return best


def jpeg_quality_of_bytes(data: bytes) -> Optional[int]:
    """Estimated quality of JPEG file bytes from their quantization tables (headers only, no
    pixel decoding); None for other formats or unreadable headers."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return estimate_jpeg_quality(getattr(im, "quantization", None) or {})
    except Exception:  # a broken header: the decoder reports the file
        return None


# How a compressed image reaches the classifier (README "Accuracy"):
#   crop    - the 224 crop of the evaluation transform is compressed (the paper's ImageNet-C protocol);
#   resized - that compressed crop goes through the evaluation transform again (a small JPEG in a pipeline);
#   full    - the decoded photo is compressed at its own size, then the evaluation transform (an upload).
PROTOCOLS = ("crop", "resized", "full")


def degrade(photo: Image.Image, qualities: Sequence[int], protocol: str = "crop", codec: str = "jpeg") -> Image.Image:
    """The classifier's 224 input under ``protocol`` after successive compressions at ``qualities``
    (one entry: one compression)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    img = photo if protocol == "full" else resize_center_crop(photo)
    for q in qualities:
        img = compress(img, q, codec)
    return img if protocol == "crop" else resize_center_crop(img)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3,H,W)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


# -- labels ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((synset, name), ...) in ImageNet-1k class order (sorted synsets)."""
    path = Path(__file__).with_name("imagenet_classes.tsv")
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return tuple((r[1], r[2]) for r in rows)


@functools.lru_cache(maxsize=1)
def _synset_index() -> dict[str, int]:
    return {s: i for i, (s, _) in enumerate(imagenet_classes())}


def class_name(index: int) -> str:
    return imagenet_classes()[index][1]


def label_from_path(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> Optional[int]:
    """ImageNet class index from a leading WordNet synset in the file name
    (``n01530575_brambling.JPEG``) or from the parent folder's name (a synset or a class
    index, as in an ImageFolder). None when neither says."""
    p = Path(path)
    m = _SYNSET.match(p.name)
    if m and m.group(1) in _synset_index():
        return _synset_index()[m.group(1)]
    parent = p.parent
    if root is not None and parent.resolve() == Path(root).resolve():
        return None
    m = _SYNSET.match(parent.name)
    if m and m.group(1) in _synset_index():
        return _synset_index()[m.group(1)]
    if parent.name.isdigit() and 0 <= int(parent.name) < len(imagenet_classes()):
        return int(parent.name)
    return None


def parse_qualities(values: Iterable) -> list[int]:
    out = []
    for v in values:
        q = int(v)
        if not 1 <= q <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {v}")
        out.append(q)
    return out
