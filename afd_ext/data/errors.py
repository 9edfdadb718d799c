"""ImageError, and the one place where what a decoder raises becomes it (:func:`image_errors`).

No Pillow setting is ever changed: truncated data is detected by the readers (a decoder that asks
for bytes past the end of the file; for JPEG, scan data that stops before the last block), whatever
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from PIL import Image


class ImageError(ValueError):
    """A file that cannot be used as an image."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


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
