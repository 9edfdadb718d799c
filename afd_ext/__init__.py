"""afd_ext: Adaptive Feature De-drifting for JPEG-robust classification, with fused C++/CUDA/Triton ops."""
__version__ = "0.1.0"

from . import reference  # noqa: F401  (pure-PyTorch definition of every op)
from .ops import available_backends, current_backend, use_backend  # noqa: F401
from . import ops  # noqa: F401
