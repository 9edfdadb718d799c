"""Shared test set-up.

- Triton kernels run under the interpreter on CPU tensors when no GPU is present
  (TRITON_INTERPRET must be set before any kernel module is imported).
- Tests that need ../shared/data skip with the reason when it is absent.
The helpers tests import (backend lists, tolerances, data paths, skip marks, the synthetic-photo
generator) live in helpers.py; this file holds pytest's hooks, process set-up and the fixtures
shared by several test modules (the AFD checkpoints ``checkpoint`` and ``checkpoint_small``, the
labelled ``photos`` and ``unblock_fifos``).
"""
import os
import threading

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


# -- fixtures shared by the test modules (built by helpers.write_checkpoint) -------------------------

@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A perturbed tiny AFD (width 4) for Lite0, as a path string: the CLI and file tests' checkpoint."""
    from helpers import write_checkpoint
    return write_checkpoint(tmp_path_factory.mktemp("ck_tiny") / "afd.safetensors", width=4)


@pytest.fixture(scope="session")
def checkpoint_small(tmp_path_factory):
    """A perturbed AFD of the shipped checkpoint's width ("small", 8) for Lite0, as a path string."""
    from helpers import write_checkpoint
    return write_checkpoint(tmp_path_factory.mktemp("ck_small") / "afd.safetensors", width="small")


# -- hostile inputs (tests/test_special_files.py, test_cli_errors.py, test_train_runs.py) -------------

@pytest.fixture
def unblock_fifos():
    """Fail instead of hanging: FIFOs registered here get a writer after 20 s (a reader blocked
    in open() then sees EOF), so a pre-fix reader ends the test with an assertion, not a hang."""
    fifos, stop = [], threading.Event()

    def watchdog():
        if stop.wait(20):
            return
        while not stop.wait(0.2):
            for f in fifos:
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
    t = threading.Thread(target=watchdog, daemon=True)
    t.start()
    yield fifos.append
    stop.set()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four labelled photo-like JPEGs of 80x96 (a module's own ``photos`` fixture overrides this one)."""
    from helpers import jpeg_bytes, make_photo
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        (root / f"n01440764_{i}.jpg").write_bytes(jpeg_bytes(make_photo(80, 96, seed=i)))
    return root
