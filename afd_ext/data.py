"""Images in and out: robust loading, the evaluation transform, JPEG compression, labels.

Every loader turns a file into an RGB PIL image or raises :class:`ImageError`
(a ValueError) naming the file and the problem, so a caller can report it and
go on with the other files. Only regular files are opened, and nothing larger than
the budgets below (MAX_FILE_BYTES, MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO) is read or decoded.

Everything a decoder raises while reading an image or its metadata becomes an ImageError in one
place, :func:`image_errors`, which :func:`inspect_image` and :func:`decode_image` (and the
pipeline's torchvision route) run under. No Pillow setting is ever changed: truncated data is
detected here (a decoder that asks for bytes past the end of the file; for JPEG, scan data that
stops before the last block), whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image, features

# Every file extension the folder walk picks up, written once. JPEG under all its names, GIF (the
# first frame) and AVIF (read where this Pillow has AVIF support; elsewhere each file is reported
# with that reason, never dropped without a word).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif")
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

#: The decision set: the labelled images whose stable name hash (:func:`name_hash_fraction`) is below
#: this fraction. Of the 500 ``imagenet-sample-dev`` images these are 233; recipes are decided on them,
#: and a checkpoint trained with ``--holdout DECISION_SET_FRACTION`` (v3) never saw one. They include
#: every image v1 (holdout 0.2) and v2 (holdout 0.35) held out, but v1 trained on 146 of them and v2
#: started from v1 (docs/accuracy.md says which checkpoint saw what).
DECISION_SET_FRACTION = 0.5


def name_hash_fraction(path: str | os.PathLike) -> float:
    """A file name's stable position in [0, 1] (SHA-1 of the name): the same on every machine and run.
    Training's hold-out split and the decision set are both read from it."""
    import hashlib
    return int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def in_decision_set(path: str | os.PathLike) -> bool:
    """Whether a labelled image belongs to the decision set (see DECISION_SET_FRACTION)."""
    return label_from_path(path) is not None and name_hash_fraction(path) < DECISION_SET_FRACTION


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
    return img if img.mode == "RGB" else img.convert("RGB")


@contextlib.contextmanager
def image_errors(name) -> Iterator[None]:
    """The one place where what a decoder raises becomes an :class:`ImageError` naming the file:
    Pillow (SyntaxError, OSError, struct.error, ValueError, ... from any plugin, while reading the
    header, the metadata or the pixels) and torchvision's decoders alike. ImageError passes as it is."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"too large for Pillow's safety limit (Image.MAX_IMAGE_PIXELS): {exc}") from None
    except MemoryError:
        raise ImageError(name, "out of memory while decoding") from None
    except Exception as exc:  # noqa: BLE001 - the rule: nothing a decoder raises leaks past here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or corrupt image file ({reason})"
        elif "cannot identify" in reason:
            reason = "not an image file Pillow can read"
        elif not isinstance(exc, OSError):  # e.g. SyntaxError("not a TIFF file"): say what kind
            reason = f"corrupt image file ({type(exc).__name__}: {reason})"
        raise ImageError(name, reason) from None


# -- what a file says about itself (headers only) --------------------------------------------------

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposes that display it (the same table as ImageOps.exif_transpose)
_ORIENT = {2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
           4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,),
           6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,)}
# Formats without lossy compression (a TIFF is lossless unless JPEG/WebP-compressed, a WebP when
# its bitstream is VP8L): nothing a compression artefact corrector could correct.
_LOSSLESS_FORMATS = {"PNG", "BMP", "DIB", "GIF", "PPM", "TGA", "QOI", "ICO", "PCX", "SGI"}


@dataclass(frozen=True)
class JpegLayout:
    """A JPEG's frame and scans from its markers (see :func:`jpeg_layout`)."""
    sof: int                 # frame marker: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    components: tuple        # ((component id, table id Tq), ...) in frame order: luma first
    scans: tuple             # ((frame component indices), Ss, Se, Ah, Al) per scan
    end: int                 # offset of the EOI marker, or where the data stops when there is none
    has_eoi: bool

    @property
    def progressive(self) -> bool:
        return self.sof in (0xC2, 0xC6, 0xCA, 0xCE)

    @property
    def single_scan(self) -> bool:
        """One scan carrying every component (baseline/sequential files: nearly all JPEGs)."""
        return not self.progressive and len(self.scans) == 1 and len(self.scans[0][0]) == len(self.components)

    def missing_data(self) -> Optional[str]:
        """Why the scans do not code the whole image, or None: a sequential file needs every
        component in a scan, a progressive one every coefficient of every component down to the
        last bit (Al = 0). Encoders always send all of it; a file cut at a scan boundary does not."""
        if not self.scans:
            return "no scan data"
        if not self.progressive:
            sent = {c for comps, *_ in self.scans for c in comps}
            if len(sent) < len(self.components):
                return f"its scans code {len(sent)} of {len(self.components)} components"
            return None
        done = [[False] * 64 for _ in self.components]
        for comps, ss, se, _ah, al in self.scans:
            if al == 0:
                for c in comps:
                    for k in range(ss, min(se, 63) + 1):
                        done[c][k] = True
        short = sum(not all(d) for d in done)
        if short:
            return (f"its {len(self.scans)} progressive scans stop before {short} of {len(self.components)} "
                    "components are complete")
        return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _scan_end(data: bytes, i: int) -> Optional[int]:
    """Where the entropy-coded data starting at ``i`` stops: the 0xFF of the next marker that is
    not stuffing (0xFF00), a restart marker (RST0..7) or a fill byte; None when the data runs out."""
    n = len(data)
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= n:
            return None
        nxt = data[j + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            i = j + 2
        elif nxt == 0xFF:
            i = j + 1  # fill bytes before a marker
        else:
            return j


def _truncated(name, what: str) -> ImageError:
    return ImageError(name, f"truncated JPEG data: {what}")


def jpeg_layout(data: bytes, name: str = "<bytes>", headers_only: bool = False) -> JpegLayout:
    """Walk a JPEG's markers: the frame header, every scan (skipping its entropy-coded data) and
    the end-of-image marker. ImageError ("truncated JPEG data") when a marker segment runs past the
    end of the data or the data stops before the first scan. Reads no pixels (a regex finds the
    end of each scan). ``headers_only``: stop at the first scan."""
    if data[:2] != b"\xff\xd8":
        raise ImageError(name, "not a JPEG file (no start-of-image marker)")
    n, i = len(data), 2
    sof, components, scans = None, (), []
    while True:
        j = data.find(b"\xff", i)  # libjpeg skips stray bytes between segments with a warning
        while 0 <= j < n - 1 and data[j + 1] == 0xFF:
            j += 1  # fill bytes before a marker
        if j < 0 or j >= n - 1:
            if not scans:
                raise _truncated(name, "the file ends before the image data")
            return JpegLayout(sof, components, tuple(scans), n, False)
        marker, pos = data[j + 1], j
        i = j + 2
        if marker == 0xD9:  # EOI
            if not scans:
                raise _truncated(name, "an end-of-image marker before any image data")
            return JpegLayout(sof, components, tuple(scans), pos, True)
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7 or marker == 0x00:
            continue  # parameterless (TEM, RSTn) or stray: libjpeg passes over them too
        if i + 2 > n:
            raise _truncated(name, f"the file ends inside the marker 0xFF{marker:02X}")
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2 or i + length > n:
            raise _truncated(name, f"the 0xFF{marker:02X} segment ({length} bytes) runs past the end of the file")
        seg, i = data[i + 2:i + length], i + length
        if marker in _SOF_MARKERS and sof is None and len(seg) >= 6:
            nf = seg[5]
            sof = marker
            components = tuple((seg[6 + 3 * k], seg[8 + 3 * k]) for k in range(nf) if 8 + 3 * k < len(seg))
        elif marker == 0xDA:  # SOS: the scan's parameters, then its entropy-coded data
            if sof is None or len(seg) < 1:
                raise ImageError(name, "corrupt JPEG: a scan before the frame header")
            ns = seg[0]
            if len(seg) < 1 + 2 * ns + 3:
                raise ImageError(name, "corrupt JPEG: a short scan header")
            ids = [c for c, _ in components]
            comps = tuple(ids.index(seg[1 + 2 * k]) for k in range(ns) if seg[1 + 2 * k] in ids)
            ss, se, a = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns]
            scans.append((comps, ss, se, a >> 4, a & 15))
            if headers_only:
                return JpegLayout(sof, components, tuple(scans), i, False)
            end = _scan_end(data, i)
            if end is None:  # the scan runs to the end of the data: no end marker
                return JpegLayout(sof, components, tuple(scans), n, False)
            i = end


def _jpeg_quality(img: Image.Image, layout: Optional[JpegLayout]) -> Optional[int]:
    ids = [tq for _, tq in layout.components] if layout is not None else None
    return estimate_jpeg_quality(getattr(img, "quantization", None) or {}, ids)


def _webp_lossless(data: bytes) -> Optional[bool]:
    """True for a VP8L (lossless) WebP, False for VP8 (lossy), None when neither chunk is found.
    Walks the RIFF chunks (and the first animation frame's)."""
    i, end = 12, min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while i + 8 <= end:
        tag, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if tag == b"VP8L":
            return True
        if tag == b"VP8 ":
            return False
        if tag == b"ANMF":  # frame header of 16 bytes, then the frame's own chunks
            i += 8 + 16
            continue
        i += 8 + size + (size & 1)
    return None


def _lossless(img: Image.Image, data: bytes, layout: Optional[JpegLayout]) -> Optional[bool]:
    fmt = img.format or ""
    if layout is not None:
        return layout.sof in (0xC3, 0xC7, 0xCB, 0xCF)  # lossless JPEG processes
    if fmt in _LOSSLESS_FORMATS:
        return True
    if fmt == "TIFF":
        compression = str(img.info.get("compression", "raw"))
        return not ("jpeg" in compression or compression == "webp")
    if fmt == "WEBP":
        return _webp_lossless(data)
    return None


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when absent, out of range or unreadable: a damaged EXIF
    block is metadata every viewer ignores, so the pixels are used as stored."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF/XMP (SyntaxError "not a TIFF file", struct.error, ...)
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says (:func:`inspect_image`)."""
    format: str                         # Pillow's format name: "JPEG", "PNG", "WEBP", "MPO", ...
    width: int                          # as stored (before the EXIF orientation)
    height: int
    mode: str
    orientation: int = 1                # EXIF orientation 1..8 (1 when absent or unreadable)
    jpeg_quality: Optional[int] = None  # estimated from the quantization tables (JPEG only)
    lossless: Optional[bool] = None     # True: no lossy compression; False: lossy; None: not known
    jpeg: Optional[JpegLayout] = None


def _not_readable_reason(data: bytes) -> Optional[str]:
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis") and not features.check("avif"):
            return "an AVIF image, and this Pillow build cannot decode AVIF (Pillow >= 11.3 wheels can)"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "a HEIF/HEIC image, which Pillow cannot decode without a plugin (pillow-heif)"
    return None


def inspect_image(data: bytes, name: str = "<bytes>") -> ImageInfo:
    """The header of an image file (bytes), checked before any pixel is decoded: the declared size
    against the budgets (``check_image_size``), a JPEG's markers (``jpeg_layout``: segments inside
    the file, the scans code every component and coefficient), the EXIF orientation (1 when the
    EXIF is unreadable), the JPEG quality estimate and whether the format is lossless.
    Raises ImageError naming the file for anything else (:func:`image_errors`)."""
    with image_errors(name):
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.UnidentifiedImageError:
            reason = _not_readable_reason(data)
            if reason:
                raise ImageError(name, reason) from None
            raise
        with img:
            check_image_size(img.width, img.height, name)  # the declared size, before any pixel is decoded
            layout = None
            if img.format in ("JPEG", "MPO"):
                layout = jpeg_layout(data, name)
                missing = layout.missing_data()
                if missing:
                    raise _truncated(name, missing)
            return ImageInfo(img.format or "", img.width, img.height, img.mode, _orientation(img),
                             _jpeg_quality(img, layout) if layout is not None else None,
                             _lossless(img, data, layout), layout)


class _EndWatch(io.BytesIO):
    """The file a decoder reads; notes a read at the end of the data: a decoder that asks for more
    than the file holds met truncated data (Pillow pads it silently when LOAD_TRUNCATED_IMAGES is
    set; this library never changes that setting, it watches the reads instead)."""
    ended = False

    def read(self, size=-1, /):
        chunk = super().read(size)
        if not chunk and size != 0:
            self.ended = True
        return chunk


def _load_watched(payload: bytes, draft: bool = False) -> tuple[Image.Image, bool]:
    """(decoded image, whether the decoder read past the end of ``payload``)."""
    fp = _EndWatch(payload)
    img = Image.open(fp)
    if draft:  # libjpeg's 1/8 scale: all the entropy-coded data is read, a fraction of the pixels made
        img.draft(img.mode, ((img.width + 7) // 8, (img.height + 7) // 8))
    fp.ended = False  # only the pixel data counts, not the header probes
    try:
        img.load()
    except OSError:
        if fp.ended:
            return img, True
        raise
    return img, fp.ended


# Appended to a JPEG's data in place of its end marker (single-scan files). A complete scan lets
# libjpeg emit every row before it needs the marker; a scan cut short (even with an end marker
# glued on: libjpeg then pads the missing blocks with grey and only warns) consumes these bytes
# as data and asks for more. 16 bytes cover libjpeg-turbo's 57-bit look-ahead; zero bytes hold no marker.
_SCAN_FILLER = bytes(16)
# Placed before the end marker of a multi-scan (progressive) file: skipped as stray bytes after
# a complete last scan, decoded as data (a different image) by a last scan that was cut short.
_SCAN_PROBE = bytes(random.Random(0x4AFD).randrange(0, 255) for _ in range(256))  # no 0xFF: no marker
_EOI = b"\xff\xd9"


def _decode_jpeg(data: bytes, layout: JpegLayout, name: str, draft: bool = False) -> Image.Image:
    """libjpeg decode (through Pillow) that refuses scan data cut short, with or without an end
    marker, whatever LOAD_TRUNCATED_IMAGES says; the same pixels as Pillow's own decode."""
    body = data[:layout.end]
    if layout.single_scan:
        img, ended = _load_watched(body + _SCAN_FILLER, draft)
        if ended:
            raise _truncated(name, "the scan data stops before the last blocks of the image")
        return img
    # full scale: at 1/8 only the DC coefficients show, and a last scan usually refines the others
    img, ended = _load_watched(body + _EOI)
    probe, probe_ended = _load_watched(body + _SCAN_PROBE + _EOI)
    if ended or probe_ended or img.size != probe.size or img.tobytes() != probe.tobytes():
        raise _truncated(name, "its last scan stops before the last blocks of the image")
    return img


def check_jpeg_data(data: bytes, info: ImageInfo, name: str = "<bytes>") -> None:
    """For decoders other than libjpeg (nvjpeg, which decodes truncated scans without a word):
    ImageError unless the JPEG's scan data is complete, decoded by libjpeg (a single-scan file at
    1/8 scale: every entropy-coded bit is read, in about half the time of a full decode)."""
    if info.jpeg is None:
        return
    with image_errors(name):
        _decode_jpeg(data, info.jpeg, name, draft=True)


def decode_image(data: bytes, name: str = "<bytes>", info: Optional[ImageInfo] = None) -> Image.Image:
    """Bytes of an image file -> RGB PIL image, EXIF orientation applied (ignored when the EXIF is
    unreadable). ``info``: this file's :func:`inspect_image` when the caller has it already. Raises
    ImageError naming the file for anything the file or a decoder gets wrong: every decode of the
    package goes through here (and :func:`image_errors`)."""
    with image_errors(name):
        if info is None:
            info = inspect_image(data, name)
        if info.jpeg is not None:
            img = _decode_jpeg(data, info.jpeg, name)
        else:
            img, ended = _load_watched(data)
            if ended:
                raise ImageError(name, "truncated or corrupt image file (the image data ends before the last row)")
        if img.width < 1 or img.height < 1:
            raise ImageError(name, f"empty image ({img.width}x{img.height})")
        for op in _ORIENT.get(info.orientation, ()):
            img = img.transpose(op)
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
def _reference_tables() -> tuple[np.ndarray, np.ndarray]:
    """(log luma tables, log chroma tables), each (100, 64): Pillow/libjpeg's scaled IJG tables for
    quality 1..100, in the order Pillow reports ``Image.quantization`` (read back from tiny encodes)."""
    probe = Image.new("RGB", (16, 16), (128, 64, 32))
    luma, chroma = [], []
    for q in range(1, 101):
        buf = io.BytesIO()
        probe.save(buf, format="JPEG", quality=q)
        with Image.open(buf) as im:
            t = im.quantization
        luma.append(t[0])
        chroma.append(t.get(1, t[0]))
    return np.log(np.asarray(luma, np.float64)), np.log(np.asarray(chroma, np.float64))


# A JPEG whose tables say quality above this has nothing for the AFD to correct (it is trained on
# quality 5..30; README "Accuracy" measures 50..95): Pipeline / afd predict skip the AFD for it.
SKIP_AFD_ABOVE_QUALITY = 85


def estimate_jpeg_quality(quantization: dict, table_ids: Optional[Sequence[int]] = None) -> Optional[int]:
    """The IJG quality (1..100) whose scaled standard tables are closest (mean absolute log
    ratio) to a JPEG's quantization tables (Pillow's ``Image.quantization``: {table id: 64
    values}); exact for files written by libjpeg/Pillow, the nearest equivalent for other
    encoders. None without tables.

    ``table_ids``: the table id (Tq) each frame component uses, in frame order (luma first), as
    the frame header says (``jpeg_layout(data).components``); the ids are the encoder's choice
    (0/1 usually, 2/3 or swapped in some files). Without it: the lowest id is taken as luma, the
    next as chroma."""
    tables = {k: v for k, v in (quantization or {}).items() if len(v) == 64}
    if not tables:
        return None
    if table_ids:
        luma_id = table_ids[0]
        chroma_id = next((t for t in table_ids[1:] if t != luma_id), None) if len(table_ids) > 1 else None
    else:
        ids = sorted(tables)
        luma_id, chroma_id = ids[0], (ids[1] if len(ids) > 1 else None)
    if luma_id not in tables:
        return None
    ref_l, ref_c = _reference_tables()
    err = np.abs(np.log(np.maximum(np.asarray(tables[luma_id], np.float64), 1.0)) - ref_l).mean(1)
    if chroma_id in tables:
        err = 0.5 * (err + np.abs(np.log(np.maximum(np.asarray(tables[chroma_id], np.float64), 1.0)) - ref_c).mean(1))
    return int(np.argmin(err)) + 1  # the first (lowest) quality on a tie, as before


def jpeg_quality_of_bytes(data: bytes) -> Optional[int]:
    """Estimated quality of JPEG file bytes from the quantization tables its components use
    (headers only, no pixel decoding); None for other formats or unreadable headers."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with image_errors("<bytes>"), Image.open(io.BytesIO(data)) as im:
            return _jpeg_quality(im, jpeg_layout(data, headers_only=True))
    except ImageError:  # a broken header: the decoder reports the file
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
