"""The afd ops as torch.ops.afd.*: schemas, fake kernels, autograd and backend choice.

Schemas and the C++/CUDA kernels live in the compiled extension (csrc/, kernels/*.cu).
This module adds what belongs in Python, as pytorch/extension-cpp does:
``register_fake`` (so torch.compile / torch.export trace the ops) and an
Autograd kernel (backward composed from the reference; double backward and
forward-mode AD supported). When the extension is not built, the schemas are defined here from
``csrc/afd_schemas.h`` (their one written definition) and served by the
reference (CPU) and Triton (CUDA) kernels.

Backend choice per device: CPU -> ``cpp``, else ``reference``; CUDA -> ``cuda``,
else ``triton``, else ``reference``. The environment variable ``AFD_BACKEND``
forces one for the whole process; ``use_backend(name)`` (a context manager)
forces one for the calling thread only, like ``torch.autocast``: blocks nest as
a stack, and each block keeps its backend until it exits, whatever other threads
(or interleaved blocks) do. One Python kernel at the ops' ``BackendSelect``
dispatch key (just before the CPU/CUDA kernels) reads the thread's choice; the
dispatcher's registrations never change after import.

Forward-mode AD (``torch.func.jvp``, ``torch.autograd.forward_ad``) gives the
reference's tangent: the kernels compute values only, so the tangent is the
reference's forward-mode derivative at the same inputs (and with inputs that
also require grad, the reference computes the op, so every mix of modes is the
reference's).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.autograd.forward_ad as fwAD

from . import reference

OP_NAMES = ("block_dct", "block_dct_gate", "block_dct_fdm", "fe_conv", "repconv_dedrift")
BACKENDS = ("reference", "cpp", "cuda", "triton")
#: Where the one written definition of the op schemas (C++ macros, one per line) is found: the copy
#: setup.py ships inside the package (installed wheels), else csrc/ (a source tree, editable installs).
#: csrc/ops.cpp compiles the same file.
SCHEMA_HEADERS = (Path(__file__).with_name("afd_schemas.h"),
                  Path(__file__).resolve().parents[1] / "csrc" / "afd_schemas.h")


def schema_header() -> Path:
    """The schema header this install reads (FileNotFoundError naming the places looked in)."""
    for path in SCHEMA_HEADERS:
        if path.is_file():
            return path
    raise FileNotFoundError(f"afd_schemas.h not found (looked in {', '.join(map(str, SCHEMA_HEADERS))})")


def schemas_from_header(path: Optional[Path] = None) -> Dict[str, str]:
    """{op: schema} as ``csrc/afd_schemas.h`` writes them (``#define AFD_SCHEMA_<OP> "<schema>"``)."""
    text = (path or schema_header()).read_text()
    found = dict(re.findall(r'^#define AFD_SCHEMA_(\w+) "([^"]+)"$', text, re.M))
    return {name.lower(): schema for name, schema in found.items()}


def compiled_schemas() -> Dict[str, str]:
    """{op: schema} as registered with the dispatcher now, without the ``afd::`` namespace."""
    return {op: str(getattr(torch.ops.afd, op).default._schema).removeprefix("afd::") for op in OP_NAMES}


try:  # the compiled extension: schemas + C++ (and CUDA) kernels
    from . import _C  # noqa: F401
    _EXTENSION_ERROR: Optional[str] = None
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _C = None
    _EXTENSION_ERROR = str(exc)

_lib_def = None
if _C is None:  # pragma: no cover - a source tree without a build: define the schemas from the header
    try:
        _schemas = schemas_from_header()
    except OSError as exc:
        raise ImportError(f"afd_ext: the compiled extension did not import ({_EXTENSION_ERROR}) and the op "
                          f"schemas to fall back on are missing ({exc})") from exc
    _lib_def = torch.library.Library("afd", "DEF")
    for _op in OP_NAMES:
        _lib_def.define(_schemas[_op])


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"afd::{op}", key)


_COMPILED = {
    "cpp": _C is not None and all(_has_kernel(op, "CPU") for op in OP_NAMES),
    "cuda": _C is not None and all(_has_kernel(op, "CUDA") for op in OP_NAMES),
}


def _built_for_torch() -> str:
    """The torch version afd_ext._C was compiled against (setup.py records it), or 'unknown'."""
    try:
        import json
        return json.loads((Path(__file__).with_name("_build_info.json")).read_text())["torch"]
    except (OSError, ValueError, KeyError):
        return "unknown"


if _C is None:  # say it once, at import: otherwise the ops silently run a slower backend
    import warnings
    warnings.warn(f"afd_ext: the compiled extension afd_ext._C did not import ({_EXTENSION_ERROR}); it was "
                  f"built for torch {_built_for_torch()}, this is torch {torch.__version__}. torch.ops.afd.* "
                  "use the Triton kernels where available, else the pure-PyTorch reference "
                  "(afd_ext.available_backends() lists them); rebuild with "
                  "`pip install --no-build-isolation -e .` against this torch.", RuntimeWarning, stacklevel=2)


# ---------------------------------------------------------------------------------------------
# Python kernels (reference and Triton), one function per op and backend.

def _output_like(t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Give ``out`` the memory format every backend returns: the suggested format of ``t``."""
    return out.contiguous(memory_format=reference.checks.output_memory_format(t))


def _reference_kernels() -> Dict[str, Callable]:
    return {
        "block_dct": lambda img: _output_like(img, reference.block_dct(img)),
        "block_dct_gate": reference.block_dct_gate,  # (B,): no memory format
        "block_dct_fdm": lambda img, *w: _output_like(img, reference.block_dct_fdm(img, *w)),
        "fe_conv": lambda x, skip, weight, bias, alpha, pool: _output_like(
            x if skip is None else skip, reference.fe_conv(x, skip, weight, bias, alpha, pool)),
        "repconv_dedrift": lambda x, weight, bias, fdm, feat, act, skip=None: _output_like(
            feat, reference.repconv_dedrift(x, weight, bias, fdm, feat, act, skip)),
    }


def _triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def _triton_kernels() -> Dict[str, Callable]:
    mods = {op: importlib.import_module(f"afd_ext.kernels.triton_{op}") for op in OP_NAMES}
    return {op: getattr(mods[op], op) for op in OP_NAMES}


_PY_KERNELS: Dict[str, Callable[[], Dict[str, Callable]]] = {
    "reference": _reference_kernels,
    "triton": _triton_kernels,
}


def available_backends() -> list[str]:
    """Backends built in this install (whether a device to run them is present or not)."""
    out = ["reference"]
    out += [b for b in ("cpp", "cuda") if _COMPILED[b]]
    if _triton_available():
        out.append("triton")
    return out


def extension_error() -> Optional[str]:
    """Why the compiled extension could not be imported, or None when it was."""
    return _EXTENSION_ERROR


def _default_backend(device_type: str) -> str:
    if device_type == "cuda":
        if _COMPILED["cuda"]:
            return "cuda"
        return "triton" if _triton_available() else "reference"
    return "cpp" if _COMPILED["cpp"] else "reference"


# The backends forced by use_backend, per thread (a context variable: each thread, and each asyncio
# task, sees only its own blocks): the open blocks innermost last, as (block, name), and the kernel
# table of the innermost one. AFD_BACKEND (end of this module) is the process-wide default under them.
_forced: contextvars.ContextVar[tuple] = contextvars.ContextVar("afd_forced_backends", default=())
_active: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("afd_active_kernels", default=None)
_ENV_BACKEND: Optional[str] = None  # AFD_BACKEND when it names a usable backend
_ENV_KERNELS: Optional[dict] = None  # its kernel table
_ENV_BACKEND_ERROR: Optional[str] = None  # why AFD_BACKEND could not be applied (end of this module)


def current_backend(device: str | torch.device = "cpu") -> str:
    """The backend that torch.ops.afd.* run for tensors on ``device`` right now, in this thread."""
    device_type = torch.device(device).type
    forced = _forced.get()
    if forced:
        return forced[-1][1]
    if _ENV_BACKEND_ERROR is not None:
        raise RuntimeError(_ENV_BACKEND_ERROR)
    if _ENV_BACKEND is not None:
        return _ENV_BACKEND
    return _default_backend(device_type)


def _unsupported(backend: str, device_key: str) -> Callable:
    def kernel(*args, **kwargs):
        raise RuntimeError(f"afd backend '{backend}' cannot run on {device_key} tensors "
                           f"(available: {available_backends()})")
    return kernel


def _kernels_for(backend: str) -> Dict[str, Dict[str, Optional[Callable]]]:
    """``backend``'s kernels: {device type: {op: kernel}}, for CPU and CUDA tensors. None stands for
    the compiled kernel registered for that device (the backend's own); ValueError/RuntimeError when
    ``backend`` is unknown or not built here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown afd backend {backend!r}; choose one of {BACKENDS}")
    if backend not in available_backends():
        raise RuntimeError(f"afd backend {backend!r} is not built in this install "
                           f"(available: {available_backends()})"
                           + (f"; extension import failed: {_EXTENSION_ERROR}" if _EXTENSION_ERROR else ""))
    kernels = _PY_KERNELS[backend]() if backend in _PY_KERNELS else None
    table = {}
    for device_type, native in (("cpu", "cpp"), ("cuda", "cuda")):
        if backend == native:  # available, so compiled: its kernel is the one registered
            table[device_type] = dict.fromkeys(OP_NAMES)
        elif kernels is not None:
            table[device_type] = kernels
        else:
            table[device_type] = {op: _unsupported(backend, device_type.upper()) for op in OP_NAMES}
    return table


def _activate(name: Optional[str]) -> None:
    """Make ``name``'s kernels the ones this thread's calls run (None: nothing forced). The table is
    built here, once per block, not per call; an unusable name raises before anything changes."""
    _active.set(_kernels_for(name) if name is not None else None)


@contextlib.contextmanager
def use_backend(name: str):
    """Force one backend for torch.ops.afd.* (and everything built on them) inside the block, in the
    calling thread (other threads keep theirs). Blocks nest; each keeps its backend until it exits,
    even when blocks exit out of order.

    >>> with afd_ext.use_backend("reference"):
    ...     y = torch.ops.afd.block_dct(img)
    """
    _activate(name)
    block = (object(), name)
    _forced.set(_forced.get() + (block,))
    try:
        yield name
    finally:
        # Remove this block, not the innermost one: a block entered later and still open keeps its backend.
        remaining = tuple(b for b in _forced.get() if b is not block)
        _forced.set(remaining)
        _activate(remaining[-1][1] if remaining else None)


_AFTER_BACKEND_SELECT = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.BackendSelect)


def _backend_switch(op_name: str) -> Callable:
    """The ops' BackendSelect kernel: runs the calling thread's forced backend (else AFD_BACKEND's),
    else passes the call on to the kernel registered for the device (the default backend)."""
    op = getattr(torch.ops.afd, op_name).default

    def kernel(keyset, *args):
        table = _active.get()
        device_type = args[0].device.type  # the first argument of every afd op is a tensor
        if table is None:
            if _ENV_BACKEND_ERROR is not None and device_type in ("cpu", "cuda"):
                raise RuntimeError(_ENV_BACKEND_ERROR)  # nothing may silently run another backend
            table = _ENV_KERNELS
        fn = table.get(device_type, {}).get(op_name) if table is not None else None
        if fn is not None:
            return fn(*args)
        return op.redispatch(keyset & _AFTER_BACKEND_SELECT, *args)
    return kernel


_lib_switch = torch.library.Library("afd", "IMPL")
for _op in OP_NAMES:
    _lib_switch.impl(_op, _backend_switch(_op), "BackendSelect", with_keyset=True)


# ---------------------------------------------------------------------------------------------
# Default kernels where nothing compiled serves a device key.

_lib_impl = torch.library.Library("afd", "IMPL")
if not _COMPILED["cpp"]:
    for _op, _fn in _reference_kernels().items():
        _lib_impl.impl(_op, _fn, "CPU")
if not _COMPILED["cuda"]:
    def _lazy_cuda(op):
        def kernel(*args):
            backend = "triton" if _triton_available() else "reference"
            return _PY_KERNELS[backend]()[op](*args)
        return kernel
    for _op in OP_NAMES:
        _lib_impl.impl(_op, _lazy_cuda(_op), "CUDA")


# ---------------------------------------------------------------------------------------------
# Fake kernels: shapes, dtypes, memory format; the same argument checks as the kernels.

@torch.library.register_fake("afd::block_dct")
def _block_dct_fake(img):
    reference.checks.check_image(img)
    b, _, h, w = img.shape
    out = img.new_empty((b, reference.N_DCT_CHANNELS, h // 8, w // 8))
    return out.contiguous(memory_format=reference.checks.output_memory_format(img))


@torch.library.register_fake("afd::block_dct_gate")
def _block_dct_gate_fake(img, weight, bias):
    reference.checks.check_image(img, uint8=True)
    reference.checks.check_gate_head(img, weight, bias)
    return weight.new_empty((img.shape[0],))


@torch.library.register_fake("afd::block_dct_fdm")
def _block_dct_fdm_fake(img, w1, b1, w2, b2, w3, b3, gate=None):
    reference.checks.check_image(img, uint8=True)
    reference.checks.check_fde_weights(img, w1, b1, w2, b2, w3, b3)
    reference.checks.check_gate_logit(img, gate)
    b, _, h, w = img.shape
    # The weights' dtype: a floating img's own, and the output dtype for a uint8 img.
    out = img.new_empty((b, w3.shape[0], h // 8, w // 8), dtype=w1.dtype)
    return out.contiguous(memory_format=reference.checks.output_memory_format(img))


@torch.library.register_fake("afd::fe_conv")
def _fe_conv_fake(x, skip, weight, bias, alpha, pool):
    reference.checks.check_fe_conv(x, skip, weight, bias, alpha, pool)
    like = x if skip is None else skip
    b, _, h, w = like.shape
    if pool:
        h, w = reference.checks.half_size(h), reference.checks.half_size(w)
    out = like.new_empty((b, weight.shape[0], h, w))
    return out.contiguous(memory_format=reference.checks.output_memory_format(like))


@torch.library.register_fake("afd::repconv_dedrift")
def _repconv_dedrift_fake(x, weight, bias, fdm, feat, act, skip=None):
    reference.checks.check_repconv_dedrift(x, weight, bias, fdm, feat, act, skip)
    return torch.empty_like(feat, memory_format=reference.checks.output_memory_format(feat))


# ---------------------------------------------------------------------------------------------
# Autograd: backward recomputes the reference under autograd (exact, and needs no extra kernels).
# Double backward (create_graph=True, e.g. a gradient penalty) works too: autograd runs backward
# with grad mode on, and the reference's vjp is then taken on the original inputs with
# create_graph, so the gradients carry their own graph (reference ops all the way down).

def _reference_vjp(fn, inputs, grad_out):
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if create_graph:
            leaves = [t if isinstance(t, torch.Tensor) and needs else None for t, needs in inputs]
        else:
            leaves = [t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) and needs else None
                      for t, needs in inputs]
        args = [leaf if leaf is not None else t for leaf, (t, _) in zip(leaves, inputs)]
        out = fn(*args)
        wanted = [leaf for leaf in leaves if leaf is not None]
        grads = (torch.autograd.grad(out, wanted, grad_out, allow_unused=True, create_graph=create_graph)
                 if wanted else [])
    it = iter(grads)
    return tuple(next(it) if leaf is not None else None for leaf in leaves)


def _setup_saving_all(ctx, inputs, output):
    """Tensors through ``save_for_backward`` (version-checked: an in-place change of an input
    before backward is an error, not a wrong gradient); the rest (``act``, a None bias) on ctx."""
    is_tensor = [isinstance(t, torch.Tensor) for t in inputs]
    ctx.save_for_backward(*(t for t, keep in zip(inputs, is_tensor) if keep))
    ctx.is_tensor = is_tensor
    ctx.others = [t for t, keep in zip(inputs, is_tensor) if not keep]


def _saved_inputs(ctx) -> list:
    tensors, others = iter(ctx.saved_tensors), iter(ctx.others)
    return [next(tensors) if keep else next(others) for keep in ctx.is_tensor]


def _block_dct_backward(ctx, grad):
    (img,) = _saved_inputs(ctx)
    return _reference_vjp(reference.block_dct, [(img, ctx.needs_input_grad[0])], grad)


def _block_dct_gate_backward(ctx, grad):
    pairs = list(zip(_saved_inputs(ctx), ctx.needs_input_grad))
    return _reference_vjp(reference.block_dct_gate, pairs, grad)


def _block_dct_fdm_backward(ctx, grad):
    # A uint8 img never needs a gradient (autograd does not track integer tensors): None for it; nor a
    # gate that is None.
    pairs = [(t, needs and t is not None) for t, needs in zip(_saved_inputs(ctx), ctx.needs_input_grad)]
    return _reference_vjp(reference.block_dct_fdm, pairs, grad)


def _fe_conv_backward(ctx, grad):
    x, skip, weight, bias, alpha, pool = _saved_inputs(ctx)
    needs = ctx.needs_input_grad
    tensors = [(x, needs[0]), (skip, skip is not None and needs[1]), (weight, needs[2]),
               (bias, bias is not None and needs[3]), (alpha, needs[4])]
    grads = _reference_vjp(lambda *a: reference.fe_conv(*a, pool), tensors, grad)
    return (*grads, None)


def _repconv_dedrift_backward(ctx, grad):
    # skip is the schema's trailing default: a call that leaves it out passes six inputs
    x, weight, bias, fdm, feat, act, *rest = _saved_inputs(ctx)
    skip = rest[0] if rest else None
    needs = ctx.needs_input_grad
    tensors = [(x, needs[0]), (weight, needs[1]), (bias, bias is not None and needs[2]),
               (fdm, needs[3]), (feat, needs[4]), (skip, skip is not None and needs[6])]
    grads = _reference_vjp(lambda x_, w_, b_, m_, f_, s_: reference.repconv_dedrift(x_, w_, b_, m_, f_, act, s_),
                           tensors, grad)
    return (*grads[:5], None, grads[5])[:6 + len(rest)]


# Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad): the kernels compute values only, and
# torch.library.register_autograd's kernel passes inputs that carry a tangent but no requires_grad
# straight to them, which drops the tangent (jvp then reads zeros, forward_ad None). This Autograd
# kernel does what register_autograd's does (an autograd.Function whose backward is the reference's
# vjp) and sees tangents first:
# * inputs with tangents, none needing grad: the value is the chosen backend's, the tangent the
#   reference's at the same inputs (the reference is plain torch ops, so forward AD runs through it);
# * inputs with tangents that also need grad (forward-over-reverse, e.g. Hessian-vector products):
#   the reference computes the op, so value, tangent and the graph over both are the reference's
#   (a kernel's value with the reference's backward would leave the tangent's own derivative out).

_AFTER_AUTOGRAD = torch._C._after_autograd_keyset


def _register_autograd(lib: torch.library.Library, op_name: str, reference_kernel: Callable,
                       backward: Callable) -> None:
    op = getattr(torch.ops.afd, op_name).default

    def below_autograd(keyset, args):
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & _AFTER_AUTOGRAD, *args)

    def forward(ctx, *args):  # the op's inputs, then the dispatch key set
        *inputs, keyset = args
        out = below_autograd(keyset, inputs)
        _setup_saving_all(ctx, inputs, out)
        return out

    def backward_with_keyset(ctx, grad):
        return (*backward(ctx, grad), None)  # ctx.needs_input_grad ends with the key set's entry

    function = type(f"AFD_{op_name}_Function", (torch.autograd.Function,),
                    {"forward": staticmethod(forward), "backward": staticmethod(backward_with_keyset)})

    def kernel(keyset, *args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        if any(fwAD.unpack_dual(t).tangent is not None for t in tensors):
            if needs_grad:
                return reference_kernel(*args)
            primals = [fwAD.unpack_dual(a).primal if isinstance(a, torch.Tensor) else a for a in args]
            out = below_autograd(keyset, primals)
            tangent = fwAD.unpack_dual(reference_kernel(*args)).tangent
            # No tangent: the output does not depend on the ones given (e.g. an empty result).
            return out if tangent is None else fwAD.make_dual(out, tangent)
        if needs_grad:
            return function.apply(*args, keyset)
        return below_autograd(keyset, args)

    lib.impl(op_name, kernel, "Autograd", with_keyset=True)


_lib_autograd = torch.library.Library("afd", "IMPL")
for _op, _backward in (("block_dct", _block_dct_backward), ("block_dct_gate", _block_dct_gate_backward),
                       ("block_dct_fdm", _block_dct_fdm_backward),
                       ("fe_conv", _fe_conv_backward), ("repconv_dedrift", _repconv_dedrift_backward)):
    _register_autograd(_lib_autograd, _op, _reference_kernels()[_op], _backward)


# ---------------------------------------------------------------------------------------------
# The functional API (README "Python API"), as torchvision.ops wraps torch.ops.torchvision: a
# documented Python signature over each op; the modules call torch.ops.afd.* directly.

def block_dct(img: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 -> (B,192,H/8,W/8) JPEG block-DCT coefficients (docs/design.md §2)."""
    return torch.ops.afd.block_dct(img)


def block_dct_gate(img, weight, bias) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 (uint8 or floating) -> the whole-image gate's logit z (B,) =
    bias + weight . log(mean over blocks |block DCT| + GATE_EPS), weight (1, 192), bias (1,)."""
    return torch.ops.afd.block_dct_gate(img, weight, bias)


def block_dct_fdm(img, w1, b1, w2, b2, w3, b3, gate=None) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 (floating of the weights' dtype, or uint8) -> (B,C,H/8,W/8) FDM in the
    weights' dtype: block DCT + FDE-Net MLP + sigmoid, fused (docs/design.md §2); ``gate`` (B,) logits
    scale each image's FDM by relu(tanh(gate / 2))."""
    return torch.ops.afd.block_dct_fdm(img, w1, b1, w2, b2, w3, b3, gate)


def fe_conv(x, skip, weight, bias, alpha, pool: bool = False) -> torch.Tensor:
    """One deployed FE-Net block, fused: maxpool2x2?(prelu(conv3x3(u, weight) + bias, alpha)) with
    u = x, or u = cat(nearest_up2(x), skip) (a decoder block; x at ceil(H/2) x ceil(W/2) of skip's
    H x W). Neither u nor the activation before the pool is written to memory (docs/design.md §2)."""
    return torch.ops.afd.fe_conv(x, skip, weight, bias, alpha, pool)


def repconv_dedrift(x, weight, bias, fdm, feat, act: str = "relu", skip=None) -> torch.Tensor:
    """act(feat + (conv3x3(u, weight) + bias) * nearest_up(fdm)), fused; u = x, or
    cat(nearest_up2(x), skip) as in :func:`fe_conv`."""
    return torch.ops.afd.repconv_dedrift(x, weight, bias, fdm, feat, act, skip)


# AFD_BACKEND: applied at import, the process-wide default under every thread's use_backend blocks. A
# value that names no usable backend must not break the import (the CLI could not even report it):
# every op, and current_backend(), raise the error instead (where no use_backend block is open), so
# nothing silently runs another backend. check_environment() raises it up front.
_env_backend = os.environ.get("AFD_BACKEND")
if _env_backend:
    try:
        _ENV_KERNELS = _kernels_for(_env_backend)
        _ENV_BACKEND = _env_backend
    except (ValueError, RuntimeError) as exc:
        _ENV_BACKEND_ERROR = f"environment variable AFD_BACKEND={_env_backend!r}: {exc}"


def check_environment() -> None:
    """Raise ValueError if ``AFD_BACKEND`` names no backend this install can use."""
    if _ENV_BACKEND_ERROR is not None:
        raise ValueError(_ENV_BACKEND_ERROR)
