"""Export the classifier + AFD as one graph: torch.export (.pt2), TorchScript (.pt) or ONNX (.onnx).

The exported graph
    input ``images``: float32 (B, 3, 224, 224), RGB in [0, 1] (the batch size is dynamic; the
    image size is fixed at the one exported). Normalization for the classifier happens inside.
    Preprocessing (short side 256, centre crop 224) is the caller's; uint8 inputs are not
    accepted by the exported graph: divide by 255 first.
    output ``logits``: float32 (B, num_classes).

Which AFD implementation goes into the graph
    * ``'export'`` (torch.export, saved with ``torch.export.save``): the *deployed* AFD
      (``AFDClassifier.deploy()``): re-parameterized RepConvs and the fused custom ops
      ``torch.ops.afd.block_dct_fdm`` / ``torch.ops.afd.repconv_dedrift`` (traced through their
      fake kernels). The .pt2 therefore needs ``import afd_ext`` in the process that loads it
      (``load_exported`` does it); the kernel that runs is the backend afd_ext picks there.
    * ``'torchscript'`` and ``'onnx'``: their consumers (libtorch without afd_ext, ONNX
      runtimes) do not have the custom ops, so these get a graph of standard ops only: the
      AFD deployed on the reference path (``deploy(impl="reference")``: re-parameterized, exact,
      no custom ops): block DCT as einsum, FDE-Net as linear layers, the last conv
      and the de-drift as conv + elementwise ops. Same function, slower than the fused ops.
      TorchScript is produced with ``torch.jit.trace`` (deprecated upstream, still the way to
      get a libtorch-loadable file); ONNX with the torch.export-based exporter (needs the
      ``onnx`` and ``onnxscript`` packages), opset 18.
    * Either way the graph reads the FDM on the input's own 8x8 grid: ``grid='detect'`` (the
      JPEG grid estimated per image, ``afd_ext.block_grid``) picks a path per image from its
      pixels, which one graph cannot hold, so it stays in eager mode.

Every file is serialized in memory and written by the package's one writer (``utils.atomic_path``:
a temporary file in the target folder, then a rename; nothing left on a full disk or a signal),
with a small JSON description of the contract (``afd_export.json`` inside the .pt2 /
TorchScript archive, ``afd_export`` in the ONNX metadata).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from ..utils import atomic_write_bytes, check_output_file

FORMATS = ("export", "torchscript", "onnx")
SUFFIX = {"export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 18
META_NAME = "afd_export.json"
# What detect_format reads from a suffix; any other suffix is read from the content.
_BY_SUFFIX = {".pt2": "export", ".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript",
              ".torchscript": "torchscript", ".jit": "torchscript"}
INPUT_DOC = "float32 (B,3,H,W) RGB in [0,1]"


def export_target(out: Union[str, os.PathLike], fmt: str) -> Path:
    """The file ``export`` writes for ``out`` and ``fmt``, checked before any work (ValueError):
    ``out`` without a suffix gets the format's; an existing directory is refused (not written
    beside as ``DIR.pt2``); a suffix ``detect_format`` reads as another format is refused, since
    ``load_exported`` could not reload the file; then the writer's checks (``check_output_file``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"export {out}: is a directory; give a file name (e.g. {out / ('model' + SUFFIX[fmt])})")
    if not out.suffix:
        out = out.with_suffix(SUFFIX[fmt])
    named = _BY_SUFFIX.get(out.suffix.lower())
    if named is not None and named != fmt:
        raise ValueError(f"export {out}: the suffix {out.suffix} is the {named!r} format's, this is {fmt!r}; "
                         f"name it {out.with_suffix(SUFFIX[fmt]).name} or pass --format {named}")
    return check_output_file(out, "export")


def _check_onnx_packages() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export needs the 'onnx' and 'onnxscript' packages: "
                          "pip install onnx onnxscript") from exc


class ExportWrapper(nn.Module):
    """``images`` (B,3,H,W) float in [0,1] -> logits; the AFD on or off, fixed at export."""

    def __init__(self, model: nn.Module, use_afd: bool = True):
        super().__init__()
        self.model = model
        self.use_afd = bool(use_afd)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, use_afd=self.use_afd)


def prepare(model, fmt: str) -> nn.Module:
    """A copy of an AFDClassifier in the form ``fmt`` exports: deployed (fused ops) for
    'export', re-parameterized on the reference path for 'torchscript' and 'onnx'."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    model = copy.deepcopy(model).eval()
    if model.afd is not None:
        model.deploy("fused" if fmt == "export" else "reference")
        # one graph for every input: the FDM on the input's 8x8 grid (grid='detect' picks a path per
        # image from its pixels, which a traced or exported graph cannot hold)
        model.afd.grid = "input"
    return model


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    return stack


def export_model(model, fmt: str, out: Union[str, os.PathLike], image_size: int = 224, device=None,
                 use_afd: bool = True, meta: Optional[dict] = None) -> Path:
    """Export an AFDClassifier (left untouched: a copy is prepared) to ``out``. See the module
    docstring for the graph's contract. Returns the path written (the format's suffix is
    added when ``out`` has none)."""
    out = export_target(out, fmt)
    if fmt == "onnx":
        _check_onnx_packages()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    wrapper = ExportWrapper(prepare(model, fmt).to(device), use_afd=use_afd).eval()
    example = torch.rand(2, 3, image_size, image_size, device=device)
    info = {"format": fmt, "input": f"images: float32 (B,3,{image_size},{image_size}) RGB in [0,1], B dynamic",
            "output": "logits: float32 (B,num_classes)", "use_afd": bool(use_afd) and model.afd is not None,
            "afd_path": ("fused torch.ops.afd ops (import afd_ext to load)" if fmt == "export"
                         else "re-parameterized reference (standard ops)"),
            "fdm_grid": "input (the graph reads every input's FDM on its own 8x8 grid; grid='detect' is eager-only)",
            "torch": torch.__version__, **(meta or {})}
    batch = torch.export.Dim("batch", min=1, max=4096)
    # Serialized in memory, then written by the one writer: a full disk or a signal during the
    # write is an OSError / a removed temporary, never torch's C++ writer aborting the process
    # (SIGABRT on ENOSPC) with a half-written file left.
    buf = io.BytesIO()
    with torch.no_grad(), _quiet():
        if fmt == "export":
            ep = torch.export.export(wrapper, (example,), dynamic_shapes={"images": {0: batch}})
            torch.export.save(ep, buf, extra_files={META_NAME: json.dumps(info)})
        elif fmt == "torchscript":
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            torch.jit.save(traced, buf, _extra_files={META_NAME: json.dumps(info)})
        else:
            with contextlib.redirect_stdout(None):
                prog = torch.onnx.export(wrapper, (example,), input_names=["images"], output_names=["logits"],
                                         opset_version=ONNX_OPSET, dynamo=True, verbose=False,
                                         dynamic_shapes={"images": {0: batch}})
            prog.model.metadata_props["afd_export"] = json.dumps(info)
            buf.write(prog.model_proto.SerializeToString())  # initializers inline (external_data=False)
    atomic_write_bytes(out, buf.getvalue(), "export")
    return out


def export(backbone: str, checkpoint: Optional[Union[str, os.PathLike]], fmt: str, out: Union[str, os.PathLike],
           device=None, use_afd: bool = True) -> Path:
    """Export ``backbone`` (a name in ``afd_ext.list_models()``) with the AFD of
    ``checkpoint`` (default: the shipped one) to ``out`` in format ``fmt``
    ('export' | 'torchscript' | 'onnx'). ``device`` defaults to CPU (the graph is tied to
    the device it was exported on). Returns the path written."""
    from ..models import create_model
    export_target(out, fmt)  # before the model is built and traced
    if fmt == "onnx":
        _check_onnx_packages()
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = create_model(backbone, afd=use_afd, checkpoint=checkpoint, device=device)
    ckpt = model.checkpoint_path
    return export_model(model, fmt, out, image_size=224, device=device, use_afd=use_afd,
                        meta={"backbone": backbone, "checkpoint": ckpt})


# -- loading -------------------------------------------------------------------------------------

class OnnxModel:
    """An exported .onnx file: ``model`` (onnx.ModelProto, checked on load); calling it runs
    onnxruntime when installed (``run_reference`` uses onnx's slow pure-numpy evaluator)."""

    def __init__(self, path: Union[str, os.PathLike]):
        import onnx
        self.path = Path(path)
        self.model = onnx.load(str(self.path))
        onnx.checker.check_model(self.model)
        self.meta = {p.key: p.value for p in self.model.metadata_props}
        self._session = None

    def __call__(self, images) -> torch.Tensor:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise ImportError("running an ONNX model needs onnxruntime (pip install onnxruntime); "
                                  "OnnxModel.run_reference works without it, slowly") from exc
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        return torch.from_numpy(self._session.run(["logits"], {"images": x})[0])

    def run_reference(self, images) -> torch.Tensor:
        from onnx.reference import ReferenceEvaluator
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        return torch.from_numpy(ReferenceEvaluator(self.model).run(["logits"], {"images": x})[0])


def detect_format(path: Union[str, os.PathLike]) -> str:
    """'export' | 'torchscript' | 'onnx' from the suffix, else from the content."""
    p = Path(path)
    if p.suffix.lower() in _BY_SUFFIX:
        return _BY_SUFFIX[p.suffix.lower()]
    if not zipfile.is_zipfile(p):
        return "onnx"
    names = zipfile.ZipFile(p).namelist()
    if any(n.endswith("/code/") or "/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return "export"


def load_exported(path: Union[str, os.PathLike], fmt: Optional[str] = None, device=None):
    """Reload what ``export`` wrote: a callable ``images (B,3,H,W) float [0,1] -> logits``.
    'export' -> the ExportedProgram's module (``.exported_program`` kept on it);
    'torchscript' -> a ScriptModule; 'onnx' -> :class:`OnnxModel`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such exported model: {p}")
    fmt = fmt or detect_format(p)
    if fmt == "export":
        from .. import ops  # noqa: F401  (registers torch.ops.afd.* used by the graph)
        ep = torch.export.load(str(p))
        module = ep.module()
        module.exported_program = ep
        return module if device is None else module.to(device)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.* deprecation notices
            return torch.jit.load(str(p), map_location=device)
    if fmt == "onnx":
        return OnnxModel(p)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def read_export_info(path: Union[str, os.PathLike], fmt: Optional[str] = None) -> dict:
    """The JSON contract stored with an exported model ({} when absent)."""
    p = Path(path)
    fmt = fmt or detect_format(p)
    if fmt == "onnx":
        import onnx
        model = onnx.load(str(p), load_external_data=False)
        meta = {m.key: m.value for m in model.metadata_props}
        return json.loads(meta.get("afd_export", "{}"))
    with zipfile.ZipFile(p) as zf:
        for n in zf.namelist():
            if n.endswith(META_NAME):
                return json.loads(zf.read(n))
    return {}
