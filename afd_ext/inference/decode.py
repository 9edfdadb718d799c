"""Decoding for batch inference: which files a GPU JPEG decoder (nvjpeg) may take, that decoder
batched, and the evaluation transform on tensors (resize and crop on the device).

Decoding
    Every file is first read by :func:`afd_ext.data.inspect_image` (header, budgets, a JPEG's
    markers, EXIF orientation, quality estimate, lossless or not) in a thread pool, then:

    * CPU (``decoder='pillow'``, the default there): :func:`afd_ext.data.decode_image` in the
      thread pool (Pillow releases the GIL while decoding); EXIF orientation applied, grey,
      CMYK, palette and alpha images converted to RGB (alpha over white); then, still in the
      worker, the evaluation transform :func:`afd_ext.data.resize_center_crop` (exactly
      ``afd eval``'s), so that only 224x224 crops are batched: memory does not grow with the
      batch size times the photos' resolution.
    * CUDA (``decoder='torchvision'``, the default there): the JPEGs of a batch are decoded
      together with ``torchvision.io.decode_jpeg(list, device='cuda')`` (nvjpeg), in groups of
      at most ``NVJPEG_GROUP_PIXELS``, and each image is resized and cropped on the device
      (:func:`resize_center_crop_tensor`, within 2 grey levels of Pillow's) before the next
      group. nvjpeg ignores EXIF orientation, decodes scan data cut short without a word and
      does not handle every colour space, so libjpeg first reads each file's scan data at 1/8
      scale (:func:`afd_ext.data.check_jpeg_data`), and a file goes to Pillow instead when it is
      not a single-scan JPEG, carries an EXIF orientation other than 1, is not RGB/grey
      (CMYK...), or when nvjpeg fails on it (the group is retried file by file first). Results
      therefore agree with the CPU path up to the decoders' and resizers' rounding.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import CROP, RESIZE, ImageError, ImageInfo, center_crop_geometry, image_errors, inspect_image

# Decoded pixels one nvjpeg call may hold on the device (about 200 MB of RGB): a batch of camera
# photos is decoded in groups of this size, each group resized to crops before the next.
NVJPEG_GROUP_PIXELS = 64 * 2**20


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _nvjpeg_ok(info: ImageInfo) -> bool:
    return (info.jpeg is not None and info.jpeg.single_scan and info.jpeg.has_eoi and info.mode in ("RGB", "L")
            and info.orientation == 1)


def nvjpeg_candidate(data: bytes) -> bool:
    """Whether a GPU JPEG decoder gives the same image as Pillow's ``decode_image``: a
    single-scan RGB or grey JPEG within the pixel budgets, without an EXIF rotation, whose
    markers are complete up to the end marker (:func:`afd_ext.data.inspect_image`). Reads the
    headers only; the scan data itself is checked by :func:`afd_ext.data.check_jpeg_data`."""
    if not is_jpeg(data):
        return False
    try:
        return _nvjpeg_ok(inspect_image(data))
    except ImageError:  # Pillow's path reports it
        return False


def _nvjpeg_decode(datas: list[bytes], names: list[str], device: torch.device) -> list[Optional[torch.Tensor]]:
    """Decode JPEG bytes on ``device`` with torchvision (batched). None for the files it
    could not decode (the caller falls back to Pillow for those)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    if not datas:
        return []
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    kwargs = dict(mode=ImageReadMode.RGB, device=device)
    if device.type == "cpu":
        kwargs["apply_exif_orientation"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io decoding -> torchcodec
        try:
            with image_errors(names[0] if len(names) == 1 else f"{len(names)} JPEGs"):
                out = decode_jpeg(tensors, **kwargs)
            return [t if t.dim() == 3 and t.shape[0] == 3 else None for t in out]
        except ImageError:  # one bad file fails the batch: retry file by file
            res: list[Optional[torch.Tensor]] = []
            for t, name in zip(tensors, names):
                try:
                    with image_errors(name):
                        img = decode_jpeg([t], **kwargs)[0]
                    res.append(img if img.dim() == 3 and img.shape[0] == 3 else None)
                except ImageError:
                    res.append(None)
            return res


def resize_center_crop_tensor(img: torch.Tensor, resize: int = RESIZE, crop: int = CROP) -> torch.Tensor:
    """uint8 (3,H,W) or (N,3,H,W) of one size -> uint8 (N,3,crop,crop): short side to ``resize``
    (bilinear, antialias), centre crop; the same geometry as ``data.resize_center_crop``
    (Pillow), pixel values within one grey level of it."""
    x = img if img.dim() == 4 else img.unsqueeze(0)
    h, w = x.shape[-2:]
    # checked (check_resize) before the float copy and the resized tensor are allocated
    nw, nh, left, top = center_crop_geometry(w, h, resize, crop)
    y = x.float()
    if (nh, nw) != (h, w):
        y = F.interpolate(y, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    y = y[..., top:top + crop, left:left + crop]
    return y.round_().clamp_(0, 255).to(torch.uint8)


def preprocess_batch(images: Sequence[torch.Tensor], resize: int = RESIZE, crop: int = CROP) -> torch.Tensor:
    """Decoded uint8 (3,H,W) images (any sizes, one device) -> uint8 (N,3,crop,crop). Each image
    is resized on its own and only the crops are stacked: full-resolution photos are never
    stacked nor converted to float together (eight 24-megapixel photos would take gigabytes)."""
    if not images:
        raise ValueError("no images")
    out = torch.empty((len(images), 3, crop, crop), dtype=torch.uint8, device=images[0].device)
    for i, t in enumerate(images):
        out[i] = resize_center_crop_tensor(t, resize, crop)[0]
    return out
