"""``afd_ext.ray_data``, the documented path of ``Predictor`` (README "Batch inference on Ray Data"):
the public names of :mod:`afd_ext.inference.ray_data`."""
from .inference.ray_data import COLUMNS, Predictor, rows_to_columns  # noqa: F401
