"""The evaluation transform (docs/design.md §1): any image to RGB, short side to 256 (bilinear),
centre crop 224, as a uint8 tensor; the model normalizes itself."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

RESIZE, CROP = 256, 224
# An image is resized only when its long side is at most MAX_ASPECT_RATIO times the short one (the
# transform scales the short side to 256: a 40000x1 strip would become 10240000x256 pixels,
# gigabytes, before the crop).
MAX_ASPECT_RATIO = 64


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB: 16/32-bit and float images scaled to 0..255, alpha over white."""
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


def check_resize(width: int, height: int) -> None:
    """ValueError for an image the evaluation transform cannot resize within the budgets
    (empty, or an aspect ratio above ``MAX_ASPECT_RATIO``), before anything is allocated."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize an empty {width}x{height} image")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"a {width}x{height} image has an aspect ratio above afd_ext.data.MAX_ASPECT_RATIO "
                         f"({MAX_ASPECT_RATIO}:1): resizing its short side to {RESIZE} would allocate "
                         f"{round(max(width, height) * RESIZE / min(width, height))}x{RESIZE} pixels")


def center_crop_geometry(width: int, height: int, resize: int = RESIZE, crop: int = CROP) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top) of the evaluation transform on a width x height
    image: the short side goes to ``resize``, then the ``crop`` x ``crop`` square at (left, top) of the
    resized image is kept. Every implementation of the transform (Pillow, tensors) and the file FDM's
    resampling (``AFDModule.file_fdm``) read it from here."""
    check_resize(width, height)
    scale = resize / min(width, height)
    nw, nh = max(crop, round(width * scale)), max(crop, round(height * scale))
    return nw, nh, (nw - crop) // 2, (nh - crop) // 2


def resize_center_crop(img: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """The evaluation transform: short side to ``resize`` (bilinear), centre crop ``crop`` x ``crop``."""
    nw, nh, left, top = center_crop_geometry(*img.size, resize, crop)
    img = img.resize((nw, nh), Image.BILINEAR)
    return img.crop((left, top, left + crop, top + crop))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3,H,W)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


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
        return to_tensor(resize_center_crop(to_rgb(image), self.resize, self.crop))

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, crop={self.crop}, interpolation=bilinear, output=uint8)"
