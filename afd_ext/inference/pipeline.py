"""High-throughput inference: image files or bytes -> top-k classes with the deployed AFD.

``Pipeline`` runs the evaluation transform of docs/design.md §1 (short side to 256,
bilinear with antialiasing, centre crop 224) *on the model's device* and feeds
uint8 crops to a deployed :class:`~afd_ext.models.AFDClassifier`
(re-parameterized AFD, fused ``torch.ops.afd`` kernels, channels_last, autocast
on GPU, optionally ``torch.compile``)::

    pipe = Pipeline.from_checkpoint("efficientnet_lite0", "afd.safetensors")
    for r in pipe.predict_files(["a.jpg", "photos/"]):
        print(r["path"], r.get("topk") or r["error"])

Decoding
    See :mod:`afd_ext.inference.decode`: Pillow on CPU (decode + the evaluation transform in a
    thread pool, only 224x224 crops are batched), nvjpeg on CUDA for the JPEGs it decodes as Pillow
    does, each image resized and cropped on the device.

AFD or not
    JPEGs whose estimated quality is above ``skip_afd_above`` and lossless files (PNG, BMP, GIF,
    TIFF without JPEG compression, lossless WebP: nothing was compressed) run the classifier
    alone; each result row says the file's ``format``, ``jpeg_quality``, ``lossless``, whether
    the AFD ran (``afd``) and on which 8x8 grid it read the FDM (``fdm_grid``: 'input', 'detected'
    with the ``block_period`` in pixels (a model with ``grid='detect'``: the JPEG grid found in the
    input, ``afd_ext.block_grid``), 'file', or None where the AFD did not run).

Side information (``fdm_source='file'``)
    The FDM (and the whole-image gate) are estimated on each decoded file at its own size, where its
    8x8 JPEG grid is intact, and resampled with the resize / crop (``AFDClassifier.file_fdm``),
    instead of on the 224 input, where a resized photo's blocks are blurred and shifted. It costs
    the FDE-Net on every block of the file the crop shows (in the decode workers on CPU): about ten
    times the classifier for a 12-megapixel photo (docs/design.md §1).

Robustness
    A file that cannot be read or decoded gives ``{"path": ..., "error": ...}`` in its place
    and never stops the others: only regular files are read (FIFOs and devices are refused
    unopened), within ``data.MAX_FILE_BYTES``, and every decoder route checks the header's size
    against ``data.MAX_IMAGE_PIXELS`` / ``data.MAX_ASPECT_RATIO`` before decoding; whatever a
    decoder raises becomes that file's :class:`~afd_ext.data.ImageError` in one place
    (:func:`afd_ext.data.image_errors`). ``strict=True`` raises the first such error (in input
    order) instead. Folders are expanded in place (recursively, sorted, as
    :func:`afd_ext.data.list_images`) unless ``expand_dirs=False``.
"""
from __future__ import annotations

import contextlib
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from ..data import (CROP, IMAGE_EXTENSIONS, RESIZE, SKIP_AFD_ABOVE_QUALITY, ImageError, ImageInfo, afd_runs_on,
                    check_jpeg_data, class_name, decode_image, inspect_image, list_images, read_image_bytes,
                    resize_center_crop, to_tensor)
from ..block_grid import detect_block_grid
from ..modules import FDM_SOURCES
from ..utils import resolve_device
from .decode import NVJPEG_GROUP_PIXELS, _nvjpeg_decode, _nvjpeg_ok, resize_center_crop_tensor

AUTOCAST_DTYPES = ("float32", "float16", "bfloat16")  # the names the CLI offers; DTYPES also takes aliases
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "half": torch.float16}


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 autocast is for CUDA; on CPU use float32 or bfloat16")
    return dtype


# -- the pipeline --------------------------------------------------------------------------------

@dataclass
class _Item:
    name: str
    path: Optional[Path] = None
    data: Optional[bytes] = None
    error: Optional[ImageError] = None
    info: Optional[ImageInfo] = None  # the header (format, JPEG quality estimate, lossless), once read
    fdm: Optional[torch.Tensor] = None  # fdm_source='file': the FDM from the decoded file (1,C,Hf,Wf)


class Pipeline:
    """Batched, device-side inference around an :class:`AFDClassifier`.

    Args:
        model: an AFDClassifier; it is deployed (``model.deploy()``: re-parameterized AFD,
            fused ops) unless ``deploy=False``, and moved to ``device``.
        device: 'cpu', 'cuda', ... (default: CUDA when available).
        use_afd: False runs the classifier alone.
        dtype: autocast dtype; default float16 on CUDA, float32 (no autocast) on CPU.
            'bfloat16' works on both.
        compile: wrap the model in ``torch.compile`` (first batches are slow).
        cuda_graphs: replay the model as CUDA graphs (``torch.compile(mode="reduce-overhead")``;
            CUDA only; each new batch shape records a graph). Implies ``compile``.
        channels_last: run the model in channels_last memory format.
        decoder: 'auto' (torchvision/nvjpeg on CUDA, Pillow on CPU), 'pillow' or 'torchvision'.
        workers: threads that read and Pillow-decode files (default min(4, CPUs)).
        skip_afd_above: JPEG files whose estimated quality (:func:`afd_ext.data.estimate_jpeg_quality`,
            from the quantization tables the file's components use) is above this, and lossless
            files (PNG, BMP, GIF, TIFF without JPEG compression, lossless WebP), run the
            classifier alone: no extra cost, no change. An integer 0..100 (not a bool), or None
            to run the AFD on every image. Lossy files of other formats (WebP, AVIF) run it.
        fdm_source: 'input' (the FDM from the model's input) or 'file' (side information: from
            each decoded file at its own size; see the module docs). Files and bytes only, and
            tensors that ``predict_tensor`` resizes itself.
    """

    def __init__(self, model, device=None, use_afd: bool = True, dtype=None, compile: bool = False,
                 cuda_graphs: bool = False, channels_last: bool = True, decoder: str = "auto",
                 workers: Optional[int] = None,
                 deploy: bool = True, resize: int = RESIZE, crop: int = CROP,
                 skip_afd_above: Optional[int] = SKIP_AFD_ABOVE_QUALITY, fdm_source: str = "input"):
        if fdm_source not in FDM_SOURCES:
            raise ValueError(f"fdm_source must be one of {FDM_SOURCES}, got {fdm_source!r}")
        self.fdm_source = fdm_source
        self.device = resolve_device(device)
        # bool is an int subclass: True would silently mean "skip above quality 1"
        if skip_afd_above is not None and (isinstance(skip_afd_above, bool)
                                           or not isinstance(skip_afd_above, numbers.Integral)
                                           or not 0 <= skip_afd_above <= 100):
            raise ValueError("skip_afd_above must be an integer quality in 0..100 or None, got "
                             f"{skip_afd_above!r} ({type(skip_afd_above).__name__})")
        self.skip_afd_above = None if skip_afd_above is None else int(skip_afd_above)
        self.dtype = _resolve_dtype(dtype, self.device)
        if decoder not in ("auto", "pillow", "torchvision"):
            raise ValueError(f"decoder must be 'auto', 'pillow' or 'torchvision', got {decoder!r}")
        self.decoder = ("torchvision" if self.device.type == "cuda" else "pillow") if decoder == "auto" else decoder
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.use_afd = bool(use_afd) and getattr(model, "afd", None) is not None
        self.channels_last = channels_last
        self.resize, self.crop = resize, crop
        if deploy:  # the op weights cast once to the dtype the model runs in (autocast)
            model.deploy(dtype=self.dtype if self.dtype != torch.float32 else None)
        model = model.eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.use_afd = self.use_afd
        self.model = model
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, got {self.device}")
        self.compiled = bool(compile or cuda_graphs)
        if cuda_graphs:
            self._forward = torch.compile(model, mode="reduce-overhead")
        else:
            self._forward = torch.compile(model) if compile else model

    @classmethod
    def from_checkpoint(cls, backbone: str = "efficientnet_lite0", checkpoint=None, device=None,
                        use_afd: bool = True, dtype=None, compile: bool = False, channels_last: bool = True,
                        **kwargs) -> "Pipeline":
        """The pipeline for a backbone in ``afd_ext.list_models()`` and an AFD checkpoint
        (default: the one shipped for the backbone; not needed with ``use_afd=False``)."""
        from ..models import create_model
        model = create_model(backbone, afd=use_afd, checkpoint=checkpoint)
        ckpt = model.checkpoint_path
        pipe = cls(model, device=device, use_afd=use_afd, dtype=dtype, compile=compile,
                   channels_last=channels_last, **kwargs)
        pipe.backbone, pipe.checkpoint = backbone, ckpt
        return pipe

    # -- model ------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def logits(self, crops: torch.Tensor, use_afd: Optional[bool] = None,
               fdm: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Preprocessed crops (N,3,crop,crop), uint8 0..255 (or float 0..1) -> float32 logits.
        ``use_afd=False`` runs the classifier alone for this call (default: the pipeline's setting).
        ``fdm``: the crops' FDM from their files (``file_fdm``), used instead of their own."""
        x = crops.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        use_afd = self.use_afd if use_afd is None else use_afd and self.use_afd
        with self._autocast():
            if fdm is not None and use_afd:
                out = self._forward(x, use_afd=True, fdm=fdm.to(self.device))
            else:
                out = self._forward(x) if use_afd == self.use_afd else self._forward(x, use_afd=use_afd)
        return out.float()

    @torch.inference_mode()
    def file_fdm(self, decoded: torch.Tensor) -> torch.Tensor:
        """One decoded file, uint8 (3,H,W) at its own size -> its FDM (1,C,Hf,Wf) for the crop this
        pipeline makes of it (``fdm_source='file'``)."""
        return self.model.file_fdm([decoded.to(self.device)], self.crop, self.resize)[0]

    def _side(self, item: _Item, decoded) -> None:
        """fdm_source='file': the item's FDM from its decoded file (a PIL image or a uint8 tensor),
        where the AFD will run on it."""
        if self.fdm_source == "file" and self._runs_afd(item.info):
            try:
                item.fdm = self.file_fdm(decoded if isinstance(decoded, torch.Tensor) else to_tensor(decoded))
            except (ValueError, MemoryError) as exc:
                raise ImageError(item.name, f"cannot estimate the FDM on the file: {exc}") from None

    def _fdm_grids(self, crops: torch.Tensor, ran: bool) -> list[tuple[Optional[str], Optional[float]]]:
        """Per crop, (the grid the AFD read its FDM on, the detected block period or None): what
        each result row reports (the model's own detection, repeated here: a few small ops)."""
        afd = getattr(self.model, "afd", None)
        if not ran or afd is None:
            return [(None, None)] * len(crops)
        if self.fdm_source == "file":
            return [("file", None)] * len(crops)
        if afd.grid != "detect":
            return [("input", None)] * len(crops)
        g = detect_block_grid(crops)
        return [("detected", round(p, 2)) if s else ("input", None)
                for s, p in zip(g.shifted.tolist(), g.period.tolist())]

    def _runs_afd(self, info: Optional[ImageInfo]) -> bool:
        """The AFD corrects compression artefacts: it runs unless the file says there are none to
        correct (lossless) or too few (a JPEG above ``skip_afd_above``)."""
        return self.use_afd and afd_runs_on(info, self.skip_afd_above)

    def _topk(self, logits: torch.Tensor, topk: int) -> list[list[dict]]:
        n_classes = logits.shape[-1]
        k = min(topk, n_classes)
        probs, idx = logits.softmax(-1).topk(k, dim=-1)
        probs, idx = probs.cpu().tolist(), idx.cpu().tolist()
        named = n_classes == 1000
        return [[{"index": int(i), "name": class_name(i) if named else str(i), "prob": float(p)}
                 for i, p in zip(ri, rp)] for ri, rp in zip(idx, probs)]

    @staticmethod
    def _check_args(topk: int, batch_size: int) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    # -- public entry points ----------------------------------------------------------------
    def predict_tensor(self, images: torch.Tensor, topk: int = 5, preprocess: Optional[bool] = None) -> list[dict]:
        """uint8 (B,3,H,W) images (or float in [0,1]) -> ``[{"topk": [...]}]`` per image.
        ``preprocess``: apply resize 256 + centre crop 224 first; default: only when the
        images are not already crop x crop."""
        self._check_args(topk, 1)
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            return []
        if preprocess is None:
            preprocess = tuple(images.shape[-2:]) != (self.crop, self.crop)
        fdm = None
        if preprocess:
            if images.is_floating_point():
                images = (images * 255).round().clamp(0, 255).to(torch.uint8)
            images = images.to(self.device)
            if self.fdm_source == "file" and self.use_afd:  # the tensors are the decoded files
                fdm = torch.cat([self.file_fdm(t) for t in images])
            images = resize_center_crop_tensor(images, self.resize, self.crop)
        return [{"topk": t} for t in self._topk(self.logits(images, fdm=fdm), topk)]

    def predict_files(self, paths: Union[str, os.PathLike, Iterable], topk: int = 5, batch_size: int = 32,
                      strict: bool = False, expand_dirs: bool = True) -> list[dict]:
        """Top-k for image files (folders expanded in place). One dict per image, in order:
        ``{"path", "topk": [{"index", "name", "prob"}, ...]}`` or ``{"path", "error"}``."""
        self._check_args(topk, batch_size)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        items: list[_Item] = []
        for p in map(Path, paths):
            try:
                is_dir = expand_dirs and p.is_dir()
            except OSError as exc:  # a name the file system cannot look up (too long): its own error row
                items.append(_Item(str(p), error=ImageError(p, f"cannot look up the path: {exc.strerror or exc}")))
                continue
            if is_dir:
                try:  # the package's one folder walk: special files inside are listed, then reported
                    items += [_Item(str(f), path=f) for f in list_images(p)]
                except ValueError:
                    items.append(_Item(str(p), error=ImageError(
                        p, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")))
            else:
                items.append(_Item(str(p), path=p))
        return self._run(items, topk, batch_size, strict)

    def predict_bytes(self, datas: Sequence[bytes], names: Optional[Sequence[str]] = None, topk: int = 5,
                      batch_size: int = 32, strict: bool = False) -> list[dict]:
        """Top-k for encoded images (file contents). ``names`` label the results (key ``path``;
        default ``<bytes i>``)."""
        self._check_args(topk, batch_size)
        datas = list(datas)
        if names is None:
            names = [f"<bytes {i}>" for i in range(len(datas))]
        names = [str(n) for n in names]
        if len(names) != len(datas):
            raise ValueError(f"got {len(datas)} images but {len(names)} names")
        items = []
        for n, d in zip(names, datas):
            if not isinstance(d, (bytes, bytearray, memoryview)):
                items.append(_Item(n, error=ImageError(n, f"expected bytes, got {type(d).__name__}")))
            elif len(d) == 0:
                items.append(_Item(n, error=ImageError(n, "empty data")))
            else:
                items.append(_Item(n, data=bytes(d)))
        return self._run(items, topk, batch_size, strict)

    # -- the batched loop ---------------------------------------------------------------------
    def _crop(self, img, name: str) -> torch.Tensor:
        """A decoded PIL image -> uint8 (3,crop,crop): the evaluation transform, in the worker."""
        try:
            return to_tensor(resize_center_crop(img, self.resize, self.crop))
        except (ValueError, MemoryError) as exc:
            raise ImageError(name, f"cannot resize to the model's input: {exc}") from None

    def _load(self, item: _Item) -> tuple[str, Any]:
        """Runs in a worker thread: ('crop', uint8 (3,crop,crop) CPU) | ('jpeg', bytes) for the
        batched device decoder | ('error', ImageError). Sets ``item.info``."""
        if item.error is not None:
            return "error", item.error
        try:
            data = item.data if item.data is not None else read_image_bytes(item.path)
            item.info = inspect_image(data, item.name)
            if self.decoder == "torchvision" and _nvjpeg_ok(item.info):
                check_jpeg_data(data, item.info, item.name)  # nvjpeg would decode a cut scan silently
                return "jpeg", data
            img = decode_image(data, item.name, item.info)
            crop = self._crop(img, item.name)
            self._side(item, img)
            return "crop", crop
        except ImageError as exc:
            return "error", exc

    def _decode_chunk(self, chunk: list[_Item], loaded: list[tuple[str, Any]]) -> list[Any]:
        """Finish a chunk: batched device decode of the JPEG candidates (in groups of at most
        NVJPEG_GROUP_PIXELS, each image resized to its crop before the next group), Pillow for
        those it fails on. Returns per item a uint8 (3,crop,crop) tensor on the device or ImageError."""
        out: list[Any] = [None] * len(chunk)
        jpeg_idx = [i for i, (kind, _) in enumerate(loaded) if kind == "jpeg"]
        groups, group, pixels = [], [], 0
        for i in jpeg_idx:
            px = chunk[i].info.width * chunk[i].info.height
            if group and pixels + px > NVJPEG_GROUP_PIXELS:
                groups.append(group)
                group, pixels = [], 0
            group.append(i)
            pixels += px
        if group:
            groups.append(group)
        for group in groups:
            decoded = _nvjpeg_decode([loaded[i][1] for i in group], [chunk[i].name for i in group], self.device)
            for i, t in zip(group, decoded):
                if t is not None:
                    try:
                        t = t.to(self.device)
                        out[i] = resize_center_crop_tensor(t, self.resize, self.crop)[0]
                        self._side(chunk[i], t)
                        continue
                    except (ValueError, RuntimeError):  # e.g. out of device memory: Pillow's route
                        pass
                try:  # the device decoder failed on it: Pillow decodes it or says why not
                    out[i] = None
                    img = decode_image(loaded[i][1], chunk[i].name, chunk[i].info)
                    loaded[i] = ("crop", self._crop(img, chunk[i].name))
                    self._side(chunk[i], img)
                except ImageError as exc:
                    loaded[i] = ("error", exc)
            del decoded
        for i, (kind, val) in enumerate(loaded):
            if out[i] is not None:
                continue
            if kind == "error":
                out[i] = val
            elif kind == "crop":
                out[i] = val.to(self.device)
        return out

    def _run(self, items: list[_Item], topk: int, batch_size: int, strict: bool) -> list[dict]:
        results: list[dict] = []
        if not items:
            return results
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="afd-decode") as pool:
            def submit(chunk):
                return [pool.submit(self._load, it) for it in chunk]

            pending = submit(chunks[0])
            for ci, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                # prefetch: the next chunk is read and decoded while this one runs on the model
                pending = submit(chunks[ci + 1]) if ci + 1 < len(chunks) else []
                decoded = self._decode_chunk(chunk, loaded)
                if strict:
                    first_bad = next((v for v in decoded if isinstance(v, ImageError)), None)
                    if first_bad is not None:
                        for f in pending:
                            f.cancel()
                        raise first_bad
                good = [i for i, v in enumerate(decoded) if isinstance(v, torch.Tensor)]
                by_index = {}
                if good:
                    crops = torch.stack([decoded[i] for i in good])
                    runs = [self._runs_afd(chunk[i].info) for i in good]
                    for flag in (True, False):  # the files that skip the AFD never enter it
                        sel = [j for j, r in enumerate(runs) if r == flag]
                        if sel:
                            part = crops if len(sel) == len(good) else crops[torch.tensor(sel, device=crops.device)]
                            fdm = (torch.cat([chunk[good[j]].fdm for j in sel])
                                   if flag and self.fdm_source == "file" and self.use_afd else None)
                            grids = self._fdm_grids(part, flag)
                            for j, t, g in zip(sel, self._topk(self.logits(part, use_afd=flag, fdm=fdm), topk), grids):
                                by_index[good[j]] = (t, flag, g)
                for i, (item, val) in enumerate(zip(chunk, decoded)):
                    item.fdm = None  # a run over many files keeps no FDM it has used
                    if i in by_index:
                        t, ran, (grid, period) = by_index[i]
                        info = item.info
                        row = {"path": item.name, "topk": t, "format": info.format, "jpeg_quality": info.jpeg_quality,
                               "lossless": info.lossless, "afd": ran, "fdm_grid": grid}
                        if period is not None:
                            row["block_period"] = period
                        results.append(row)
                    else:
                        err = val if isinstance(val, ImageError) else ImageError(item.name, "could not decode")
                        results.append({"path": item.name, "error": err.reason})
        return results

    def __repr__(self) -> str:
        return (f"Pipeline(device={self.device}, dtype={self.dtype}, use_afd={self.use_afd}, "
                f"fdm_source={self.fdm_source!r}, "
                f"decoder={self.decoder!r}, compiled={self.compiled}, channels_last={self.channels_last})")
