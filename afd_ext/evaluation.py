"""The evaluation protocol of docs/design.md §1: resize 256, centre-crop 224, JPEG at each
quality, classify with and without the AFD in the same run."""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from . import data


@dataclass
class _Tally:
    top1: dict = field(default_factory=lambda: {"direct": 0, "afd": 0})
    top5: dict = field(default_factory=lambda: {"direct": 0, "afd": 0})
    n: int = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, mode: str) -> None:
        top5 = logits.topk(5, dim=1).indices
        self.top1[mode] += int((top5[:, 0] == labels).sum())
        self.top5[mode] += int((top5 == labels[:, None]).any(1).sum())

    def percent(self) -> dict:
        n = max(self.n, 1)
        return {"top1_direct": 100.0 * self.top1["direct"] / n, "top1_afd": 100.0 * self.top1["afd"] / n,
                "top5_direct": 100.0 * self.top5["direct"] / n, "top5_afd": 100.0 * self.top5["afd"] / n}


def _variants(photo, qualities, multi: bool, rng: random.Random, protocol: str, codec: str):
    """(key, uint8 tensor) for clean, each quality and, with ``multi``, 1..5 compressions."""
    out = [("clean", data.to_tensor(data.resize_center_crop(photo)))]
    out += [(("q", q), data.to_tensor(data.degrade(photo, [q], protocol, codec))) for q in qualities]
    if multi:
        for times in range(1, 6):
            qs = [rng.choice(list(qualities)) for _ in range(times)]
            out.append((("times", times), data.to_tensor(data.degrade(photo, qs, protocol, codec))))
    return out


@torch.no_grad()
def evaluate(model, paths, qualities: Sequence[int] = data.DEFAULT_QUALITIES, *, batch_size: int = 50,
             multi_compress: bool = False, seed: int = 0, strict: bool = False, progress: bool = True,
             limit: Optional[int] = None, checkpoint: Optional[str] = None, backbone: str = "",
             protocol: str = "crop", codec: str = "jpeg") -> dict:
    """Top-1/top-5 of ``model`` (an AFDClassifier) direct and with the AFD on labelled images.

    ``protocol`` (:data:`afd_ext.data.PROTOCOLS`): where the compression happens relative to the
    evaluation transform ('crop', the paper's; 'resized'; 'full'); ``codec``: 'jpeg' or 'webp'.

    ``paths``: files or folders; labels from a leading synset in the file name or the
    folder name. Unreadable files are reported and skipped (``strict`` raises instead).
    Returns the JSON structure documented in the README.
    """
    qualities = data.parse_qualities(qualities)
    if protocol not in data.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(data.PROTOCOLS)}")
    if codec not in data.CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(data.CODECS)}")
    files = data.list_images(paths)
    labelled = []
    roots = [paths] if isinstance(paths, (str, bytes)) or not isinstance(paths, (list, tuple)) else paths
    for f in files:
        label = None
        for root in roots:
            label = data.label_from_path(f, root)
            if label is not None:
                break
        if label is not None:
            labelled.append((f, label))
    if not labelled:
        problems = [f"{f}: {why}" for f in files[:20] if (why := data.file_problem(f))]
        if problems:  # e.g. a FIFO or a device named on the command line
            raise ValueError(f"no readable labelled images: {'; '.join(problems[:3])}")
        raise ValueError("no labelled images: name files <synset>_... (n01440764_tench.JPEG) or put them in "
                         "folders named by synset or class index")
    if limit:
        labelled = labelled[:limit]
    device = next(model.parameters()).device
    model.eval()
    tallies: dict = {}
    skipped: list[dict] = []
    pending: dict = {}

    def flush(key):
        imgs, labels = zip(*pending.pop(key))
        x = torch.stack(imgs).to(device)
        y = torch.tensor(labels, device=device)
        feat, pixels = model.stem_features(x)
        tally = tallies.setdefault(key, _Tally())
        tally.n += len(labels)
        tally.add(model.head(feat, pixels, use_afd=False), y, "direct")
        tally.add(model.head(feat, pixels, use_afd=True), y, "afd")

    for idx, (path, label) in enumerate(tqdm(labelled, desc="eval", unit="img", disable=not progress,
                                             file=sys.stderr)):
        try:
            photo = data.load_image(path)
            rng = random.Random(seed * 1_000_003 + idx)
            try:  # all of a file's variants or none: a failure here skips the file, never the run
                variants = _variants(photo, qualities, multi_compress, rng, protocol, codec)
            except (ValueError, OSError, MemoryError) as exc:
                raise data.ImageError(path, f"cannot build its evaluation crops: {exc}") from None
        except data.ImageError as exc:
            if strict:
                raise
            skipped.append({"path": exc.path, "error": exc.reason})
            continue
        for key, tensor in variants:
            pending.setdefault(key, []).append((tensor, label))
            if len(pending[key]) >= batch_size:
                flush(key)
    for key in list(pending):
        flush(key)
    if "clean" not in tallies:
        raise ValueError(f"none of the {len(labelled)} labelled images could be read (" + "; ".join(
            f"{s['path']}: {s['error']}" for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "") + ")")

    result = {
        "backbone": backbone, "checkpoint": checkpoint, "protocol": protocol, "codec": codec,
        "n_images": tallies["clean"].n,
        "clean": tallies["clean"].percent(),
        "qualities": [{"quality": q, **tallies[("q", q)].percent()} for q in qualities],
    }
    result["mean"] = {k: sum(r[k] for r in result["qualities"]) / len(qualities) for k in ("top1_direct", "top1_afd")}
    if multi_compress:
        result["multi_compress"] = [{"times": t, **tallies[("times", t)].percent()} for t in range(1, 6)]
        result["multi_compress_mean"] = {
            k: sum(r[k] for r in result["multi_compress"]) / 5 for k in ("top1_direct", "top1_afd")}
    result["skipped"] = skipped
    return result


def format_table(result: dict) -> str:
    """Markdown table of an evaluate() result."""
    lines = ["| setting | top-1 direct | top-1 AFD | gain | top-5 direct | top-5 AFD |",
             "| --- | --- | --- | --- | --- | --- |"]

    def row(name, r):
        lines.append(f"| {name} | {r['top1_direct']:.1f} | {r['top1_afd']:.1f} | "
                     f"{r['top1_afd'] - r['top1_direct']:+.1f} | {r['top5_direct']:.1f} | {r['top5_afd']:.1f} |")
    row("clean", result["clean"])
    for r in result["qualities"]:
        row(f"q{r['quality']}", r)
    m = result["mean"]
    lines.append(f"| mean of qualities | {m['top1_direct']:.1f} | {m['top1_afd']:.1f} | "
                 f"{m['top1_afd'] - m['top1_direct']:+.1f} | | |")
    for r in result.get("multi_compress", []):
        row(f"{r['times']}x compressed", r)
    if "multi_compress_mean" in result:
        m = result["multi_compress_mean"]
        lines.append(f"| mean of 1..5x | {m['top1_direct']:.1f} | {m['top1_afd']:.1f} | "
                     f"{m['top1_afd'] - m['top1_direct']:+.1f} | | |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """PNG: top-1 against JPEG quality, direct vs AFD (clean as a dashed line)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    qs = [r["quality"] for r in result["qualities"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot(qs, [r["top1_direct"] for r in result["qualities"]], "o-", label="direct")
    ax.plot(qs, [r["top1_afd"] for r in result["qualities"]], "s-", label="AFD")
    ax.axhline(result["clean"]["top1_direct"], ls="--", c="gray", lw=1, label="clean, direct")
    ax.set_xlabel("JPEG quality")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{result.get('backbone') or 'classifier'}: {result['n_images']} images")
    ax.grid(alpha=0.3)
    ax.legend()
    from .utils import save_figure
    save_figure(fig, path)
