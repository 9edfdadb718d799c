"""``afd_ext.pipeline``, the documented path of ``Pipeline``: the public names of
:mod:`afd_ext.inference.pipeline` and its decoders (:mod:`afd_ext.inference.decode`)."""
from .inference.decode import (NVJPEG_GROUP_PIXELS, is_jpeg, nvjpeg_candidate, preprocess_batch,  # noqa: F401
                               resize_center_crop_tensor)
from .inference.pipeline import AUTOCAST_DTYPES, DTYPES, Pipeline  # noqa: F401
