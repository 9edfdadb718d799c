"""Images in: bytes or a file -> RGB PIL image, or :class:`ImageError` naming the file and the problem,
so a caller can report it and go on with the other files.

Only regular files are read (:func:`afd_ext.data.files.read_regular`), within MAX_FILE_BYTES, and
an image is decoded only when its header declares at most MAX_IMAGE_PIXELS pixels and an aspect
ratio of at most MAX_ASPECT_RATIO. Everything a decoder raises while reading an image or its
metadata becomes an ImageError in one place, :func:`image_errors`, which :func:`inspect_image` and
:func:`decode_image` (and the pipeline's torchvision route) run under. Truncated data is detected
here (a decoder that asks for bytes past the end of the file; for JPEG, scan data that stops before
the last block), whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""
from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from typing import Optional

from PIL import Image, features

from .errors import ImageError, image_errors
from .files import MAX_FILE_BYTES, UnreadableFile, read_regular
from .jpeg import SKIP_AFD_ABOVE_QUALITY, JpegLayout, _jpeg_quality, _truncated, jpeg_layout
from .transforms import MAX_ASPECT_RATIO, RESIZE, to_rgb

# An image is decoded only when its header declares at most MAX_IMAGE_PIXELS pixels: Pillow's own
# decompression-bomb error level, kept here so that it holds whatever Image.MAX_IMAGE_PIXELS is set to.
MAX_IMAGE_PIXELS = 2 * 89_478_485


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


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposes that display it (the same table as ImageOps.exif_transpose)
_ORIENT = {2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
           4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,),
           6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,)}
# Formats without lossy compression (a TIFF is lossless unless JPEG/WebP-compressed, a WebP when
# its bitstream is VP8L): nothing a compression artefact corrector could correct.
_LOSSLESS_FORMATS = {"PNG", "BMP", "DIB", "GIF", "PPM", "TGA", "QOI", "ICO", "PCX", "SGI"}


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


def afd_runs_on(info: Optional[ImageInfo], skip_afd_above: Optional[int] = SKIP_AFD_ABOVE_QUALITY) -> bool:
    """Whether the AFD should correct an image whose file header says ``info``: not for a lossless
    file (nothing to correct) nor a JPEG whose estimated quality is above ``skip_afd_above`` (too
    little); otherwise (lossy, unknown format or quality, no header, ``skip_afd_above=None``) yes.
    The one rule ``Pipeline``/``afd predict`` and ``afd eval --as-predict`` apply."""
    if skip_afd_above is None or info is None:
        return True
    if info.lossless:
        return False
    return info.jpeg_quality is None or info.jpeg_quality <= skip_afd_above


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
        return to_rgb(img)


def read_image_bytes(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, or ImageError for a missing, empty, special (FIFO, device,
    socket: never opened, so nothing blocks), oversized (``MAX_FILE_BYTES``) or unreadable one
    (:func:`afd_ext.data.files.read_regular`)."""
    try:
        return read_regular(path, max_bytes, "afd_ext.data.MAX_FILE_BYTES", what="an image file")
    except UnreadableFile as exc:
        raise ImageError(path, exc.reason) from None


def load_image(path: str | os.PathLike) -> Image.Image:
    """Image file -> RGB PIL image (EXIF orientation applied; CMYK, grey, 16-bit, palette and
    alpha images converted). Raises ImageError naming the file on any problem."""
    return decode_image(read_image_bytes(path), str(path))
