"""Shared test set-up.

- Triton kernels run under the interpreter on CPU tensors when no GPU is present
  (TRITON_INTERPRET must be set before any kernel module is imported).
- Tests that need ../shared/data skip with the reason when it is absent.
"""
import os
from pathlib import Path

# Small test shapes run fastest single-threaded; several threads on 2 shared cores spin-wait.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
settings.load_profile("ci")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEV_IMAGES = SHARED_DATA / "imagenet-sample-dev"
HAS_CUDA = torch.cuda.is_available()

needs_data = pytest.mark.skipif(not DEV_IMAGES.is_dir(), reason=f"needs the shared data at {SHARED_DATA}")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


_TRITON_PROBLEM: list = []


def triton_interpreter_problem():
    """Why the Triton interpreter cannot run kernels on CPU here, or None. Triton 3.6's interpreter
    turns loop bounds passed as arguments into ints with ``int(array)``, which NumPy >= 2.4 refuses
    (TypeError: only 0-dimensional arrays can be converted); the compiled GPU path is not affected."""
    if not _TRITON_PROBLEM:
        problem = None
        if os.environ.get("TRITON_INTERPRET") == "1":
            try:
                import triton
                x = torch.zeros(4)
                _interpreter_probe[(1,)](x, 4, BLOCK=2)
                if x.tolist() != [1.0, 0.0, 1.0, 0.0]:
                    problem = f"the Triton {triton.__version__} interpreter computed {x.tolist()} for a probe"
            except ImportError:
                problem = None
            except TypeError as exc:  # only the named upstream bug skips; anything else fails loudly
                if "0-dimensional" not in str(exc) and "0-d" not in str(exc):
                    raise
                import numpy
                import triton
                problem = (f"the Triton {triton.__version__} interpreter fails on CPU with NumPy {numpy.__version__} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); an upstream interpreter bug, "
                           "not this project's kernels (compiled on a GPU they are unaffected): run them here with "
                           "`pip install 'numpy<2.4'` or a newer Triton")
        _TRITON_PROBLEM.append(problem)
    return _TRITON_PROBLEM[0]


try:
    import triton as _triton
    import triton.language as _tl

    @_triton.jit
    def _interpreter_probe(x_ptr, n, BLOCK: _tl.constexpr):
        for i in range(0, n, BLOCK):
            _tl.store(x_ptr + i, 1.0)
except ImportError:
    _interpreter_probe = None


def pytest_collection_modifyitems(config, items):
    """Triton-on-CPU cases skip, saying why, where the interpreter itself is broken."""
    problem = triton_interpreter_problem()
    if not problem:
        return
    skip = pytest.mark.skip(reason=problem)
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "triton" and params.get("device", "cpu") == "cpu":
            item.add_marker(skip)


def cpu_backends():
    """Backends that can run on CPU tensors in this process."""
    import afd_ext
    out = [b for b in afd_ext.available_backends() if b in ("reference", "cpp")]
    if "triton" in afd_ext.available_backends() and os.environ.get("TRITON_INTERPRET") == "1":
        out.append("triton")
    return out


GPU_BACKENDS = ("reference", "cuda", "triton")


def cuda_backends():
    import afd_ext
    if not HAS_CUDA:
        return []
    return [b for b in afd_ext.available_backends() if b in GPU_BACKENDS]


def backend_device_pairs():
    """(backend, device) cases: the CPU backends, and every GPU backend, always collected: on a
    machine without a GPU, or without that backend built, each GPU case is there and skips saying
    why (so the count of skipped tests shows what did not run)."""
    import afd_ext
    pairs = [(b, "cpu") for b in cpu_backends()]
    for b in GPU_BACKENDS:
        if not HAS_CUDA:
            pairs.append(pytest.param(b, "cuda", marks=pytest.mark.skip(reason="needs a CUDA device")))
        elif b not in afd_ext.available_backends():
            pairs.append(pytest.param(b, "cuda", marks=pytest.mark.skip(
                reason=f"backend {b!r} is not built here (available: {afd_ext.available_backends()})")))
        else:
            pairs.append((b, "cuda"))
    return pairs


def tol(dtype):
    """(rtol, atol) by dtype, as docs/design.md §2 sets them."""
    return {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4), torch.float16: (1e-2, 2e-2),
            torch.bfloat16: (2e-2, 5e-2)}[dtype]
