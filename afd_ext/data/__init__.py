"""Images in and out: the folder walk and the safe reader, robust decoding, the evaluation transform,
degradations (JPEG/WebP compression, protocols), labels.

    files          list_images (the one folder walk), read_regular (the one safe reader: regular
                   files only, non-blocking open, size cap; checkpoints use it too), file_problem
    errors         ImageError, image_errors (the one place decoder exceptions become ImageError)
    jpeg           a JPEG's markers (jpeg_layout) and quality estimate (estimate_jpeg_quality)
    images         inspect_image, decode_image, read_image_bytes, load_image; the pixel budget;
                   afd_runs_on (the rule by which a file's header skips the AFD)
    transforms     the evaluation transform (resize_center_crop, EvalTransform, to_tensor)
    degradations   compress (compress_bytes: the file), degrade (PROTOCOLS, CODECS), multi_compress
    labels         imagenet_classes, label_from_path, class_name, the decision set

Every loader turns a file into an RGB PIL image or raises :class:`ImageError` (a ValueError) naming
the file and the problem, so a caller can report it and go on with the other files. Only regular
files are opened, and nothing larger than the budgets (MAX_FILE_BYTES, MAX_IMAGE_PIXELS,
MAX_ASPECT_RATIO) is read or decoded. Every public name is importable from ``afd_ext.data``.
"""
from PIL import Image, features  # noqa: F401  (Pillow's modules, as afd_ext.data.Image / .features)

from .degradations import (CHROMA_SUBSAMPLING, CODECS, DEFAULT_QUALITIES, PROTOCOLS, compress, compress_bytes,
                           degrade, jpeg_compress, multi_compress, parse_qualities)
from .errors import ImageError, image_errors
from .files import IMAGE_EXTENSIONS, MAX_FILE_BYTES, UnreadableFile, file_problem, list_images, read_regular
from .images import (MAX_IMAGE_PIXELS, ImageInfo, afd_runs_on, check_image_size, check_jpeg_data, decode_image,
                     inspect_image, load_image, read_image_bytes)
from .jpeg import SKIP_AFD_ABOVE_QUALITY, JpegLayout, estimate_jpeg_quality, jpeg_layout, jpeg_quality_of_bytes
from .labels import (DECISION_SET_FRACTION, class_name, imagenet_classes, in_decision_set, label_from_path,
                     name_hash_fraction)
from .transforms import (CROP, MAX_ASPECT_RATIO, RESIZE, EvalTransform, center_crop_geometry, check_resize,
                         resize_center_crop, to_rgb, to_tensor)

__all__ = [
    "CHROMA_SUBSAMPLING", "CODECS", "DEFAULT_QUALITIES", "PROTOCOLS", "compress", "compress_bytes", "degrade",
    "jpeg_compress", "multi_compress", "parse_qualities", "ImageError", "image_errors", "IMAGE_EXTENSIONS",
    "MAX_FILE_BYTES", "UnreadableFile", "file_problem", "list_images", "read_regular", "MAX_IMAGE_PIXELS",
    "ImageInfo", "afd_runs_on",
    "check_image_size", "check_jpeg_data", "decode_image", "inspect_image", "load_image", "read_image_bytes",
    "SKIP_AFD_ABOVE_QUALITY", "JpegLayout", "estimate_jpeg_quality", "jpeg_layout", "jpeg_quality_of_bytes",
    "DECISION_SET_FRACTION", "class_name", "imagenet_classes", "in_decision_set", "label_from_path",
    "name_hash_fraction", "CROP", "MAX_ASPECT_RATIO", "RESIZE", "EvalTransform", "center_crop_geometry", "check_resize",
    "resize_center_crop", "to_rgb", "to_tensor",
]
