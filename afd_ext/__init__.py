"""afd_ext: Adaptive Feature De-drifting for JPEG-robust classification, with fused C++/CUDA/Triton ops."""
from ._version import __version__  # noqa: F401

from . import reference  # noqa: F401  (pure-PyTorch definition of every op)
from .ops import available_backends, current_backend, use_backend  # noqa: F401
from . import ops  # noqa: F401
from .modules import AFDModule, FDENet, FENet, RepConv, WIDTH_PRESETS  # noqa: F401,E402
from .classifier import AFDClassifier, attach, find_adapter  # noqa: F401,E402
from .models import create_model, list_models, load_classifier, register_model  # noqa: F401,E402
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401,E402
from .weights import shipped_checkpoint  # noqa: F401,E402
from .evaluation import evaluate  # noqa: F401,E402
from .train import TrainConfig, train  # noqa: F401,E402

from . import timm_models as _timm_models  # noqa: E402

_timm_models.register_if_timm_loaded()  # timm users get timm.create_model("afd_efficientnet_lite0")
