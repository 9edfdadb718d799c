"""afd_ext: Adaptive Feature De-drifting for JPEG-robust classification, with fused C++/CUDA/Triton ops."""
from ._version import __version__  # noqa: F401

from . import reference  # noqa: F401  (pure-PyTorch definition of every op)
from .ops import available_backends, current_backend, use_backend  # noqa: F401
from . import ops  # noqa: F401
from .modules import AFDModule, FDENet, FENet, RepConv, WIDTH_PRESETS  # noqa: F401,E402
from .models import (AFDClassifier, CheckpointError, attach, create_model, find_adapter, list_models,  # noqa: F401,E402
                     load_checkpoint, load_classifier, register_model, save_checkpoint, shipped_checkpoint)
from .evaluation import evaluate  # noqa: F401,E402
from .train import TrainConfig, train  # noqa: F401,E402
from . import data, models  # noqa: F401,E402  (the subpackages, as attributes)
from . import checkpoint, timm_models, weights  # noqa: F401,E402  (documented paths: re-exports of afd_ext.models.*)

timm_models.register_if_timm_loaded()  # timm users get timm.create_model("afd_efficientnet_lite0")
