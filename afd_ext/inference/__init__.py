"""Inference: batch inference on files or bytes (``pipeline.Pipeline``, with its decoders in
``decode``), on Ray Data (``ray_data.Predictor``), and export of the deployed model (``export``).
``afd_ext.pipeline`` and ``afd_ext.ray_data`` are the documented paths of the first two."""
from .export import FORMATS, export, export_model, load_exported  # noqa: F401
from .pipeline import Pipeline  # noqa: F401
from .ray_data import Predictor  # noqa: F401
