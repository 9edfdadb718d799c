"""What a JPEG file says about itself, from its markers alone: frame, scans, end
(:func:`jpeg_layout`), and the quality its quantization tables were made for
(:func:`estimate_jpeg_quality`)."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .errors import ImageError, image_errors


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


def _jpeg_quality(img: Image.Image, layout: Optional[JpegLayout]) -> Optional[int]:
    ids = [tq for _, tq in layout.components] if layout is not None else None
    return estimate_jpeg_quality(getattr(img, "quantization", None) or {}, ids)


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
