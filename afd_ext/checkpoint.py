"""``afd_ext.checkpoint``, the path the README documents (``afd_ext.checkpoint.MAX_AFD_PARAMS``):
the public names of :mod:`afd_ext.models.checkpoint`, where AFD checkpoints are written and read."""
from .models.checkpoint import (FORMAT_VERSION, MAX_AFD_PARAMS, MAX_CHECKPOINT_BYTES, MAX_CONFIG_INT_DIGITS,  # noqa: F401
                                MODULE_INT_RANGES, CheckpointError, check_module_config, check_tensors_finite,
                                load_checkpoint, read_checkpoint, save_checkpoint)
