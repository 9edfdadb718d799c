"""Batch inference on Ray Data: ``Predictor`` is the callable class for ``map_batches``.

    import ray, afd_ext.ray_data                 # this module, under its documented name
    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)   # columns bytes, path
    out = ds.map_batches(afd_ext.ray_data.Predictor,
                         fn_constructor_kwargs={"backbone": "efficientnet_lite0"},
                         batch_size=256, num_gpus=1, concurrency=4)
    out.write_parquet("s3://bucket/predictions/")

Each actor builds the model once (``Pipeline.from_checkpoint``: deployed AFD, fused ops, nvjpeg
decoding on GPU) and classifies its batches through ``Pipeline.predict_bytes``; a broken file
gives a row with its ``error`` and never fails the batch. Ray itself is an optional dependency
(``pip install afd_ext[ray]``): this module imports without it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..data import SKIP_AFD_ABOVE_QUALITY

# The output columns, one row per input row, in this order.
COLUMNS = ("path", "top1", "top1_name", "top1_prob", "format", "quality", "afd_applied", "block_period", "error",
           "topk", "topk_probs")


class Predictor:
    """Callable class for ``ray.data.Dataset.map_batches`` over ``read_binary_files(...,
    include_paths=True)`` (columns ``bytes`` and ``path``; ``path`` may be absent).

    Output columns: ``path``; ``top1`` (class index, -1 on error), ``top1_name``, ``top1_prob``;
    ``format`` (Pillow's name: 'JPEG', 'PNG', ...; '' on error); ``quality`` (the JPEG quality
    estimated from the quantization tables its components use, -1 when not a JPEG or on error);
    ``afd_applied`` (False for JPEGs above ``skip_afd_above``, lossless files and on error);
    ``block_period`` (the JPEG block period in pixels the AFD read the FDM on when it found the
    input's blocks off its 8x8 grid, ``Pipeline``'s row; 0.0 otherwise);
    ``error`` ('' when none); ``topk`` / ``topk_probs`` (N, topk) (-1 / 0.0 on error).
    ``fdm_source``: as ``Pipeline``'s ('file': the FDM from each file at its own size).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", checkpoint: Optional[str] = None,
                 device: Optional[str] = None, dtype: Optional[str] = None, topk: int = 5,
                 skip_afd_above: Optional[int] = SKIP_AFD_ABOVE_QUALITY, use_afd: bool = True,
                 fdm_source: str = "input"):
        from .pipeline import Pipeline
        if not 1 <= int(topk) <= 1000:
            raise ValueError(f"topk must be in 1..1000, got {topk}")
        self.topk = int(topk)
        self.pipe = Pipeline.from_checkpoint(backbone, checkpoint, device=device, dtype=dtype, use_afd=use_afd,
                                             skip_afd_above=skip_afd_above, fdm_source=fdm_source)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        if hasattr(batch, "to_dict") and not isinstance(batch, dict):  # a pandas batch
            batch = {k: batch[k].to_numpy() for k in batch.columns}
        if "bytes" not in batch:
            raise KeyError(f"the batch needs a 'bytes' column (ray.data.read_binary_files), got {sorted(batch)}")
        datas = list(batch["bytes"])
        n = len(datas)
        paths = [str(p) for p in batch["path"]] if "path" in batch else [f"<row {i}>" for i in range(n)]
        # predict_bytes turns anything that is not non-empty bytes into an error row
        datas = [bytes(d) if isinstance(d, (bytes, bytearray, memoryview, np.ndarray)) else d for d in datas]
        results = self.pipe.predict_bytes(datas, names=paths, topk=self.topk, batch_size=max(1, n))
        return rows_to_columns(results, self.topk)


def rows_to_columns(results: list[dict], topk: int) -> dict[str, np.ndarray]:
    """``Pipeline`` results -> the column dict ``Predictor`` returns."""
    n = len(results)
    out = {
        "path": np.array([r["path"] for r in results], dtype=object),
        "top1": np.full(n, -1, dtype=np.int64),
        "top1_name": np.array([""] * n, dtype=object),
        "top1_prob": np.zeros(n, dtype=np.float32),
        "format": np.array([""] * n, dtype=object),
        "quality": np.full(n, -1, dtype=np.int64),
        "afd_applied": np.zeros(n, dtype=bool),
        "block_period": np.zeros(n, dtype=np.float32),
        "error": np.array([r.get("error", "") for r in results], dtype=object),
        "topk": np.full((n, topk), -1, dtype=np.int64),
        "topk_probs": np.zeros((n, topk), dtype=np.float32),
    }
    for i, r in enumerate(results):
        if "error" in r:
            continue
        top = r["topk"]
        out["top1"][i] = top[0]["index"]
        out["top1_name"][i] = top[0]["name"]
        out["top1_prob"][i] = top[0]["prob"]
        out["format"][i] = r.get("format") or ""
        out["quality"][i] = -1 if r.get("jpeg_quality") is None else r["jpeg_quality"]
        out["afd_applied"][i] = bool(r.get("afd"))
        out["block_period"][i] = r.get("block_period") or 0.0
        out["topk"][i, :len(top)] = [c["index"] for c in top]
        out["topk_probs"][i, :len(top)] = [c["prob"] for c in top]
    return out
