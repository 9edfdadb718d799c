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
from .modules import FDM_SOURCES


@dataclass
class _Tally:
    top1: dict = field(default_factory=lambda: {"direct": 0, "afd": 0})
    top5: dict = field(default_factory=lambda: {"direct": 0, "afd": 0})
    n: int = 0
    ran: int = 0  # images the AFD ran on (all of them, except as predict)
    gate_open: int = 0  # images whose whole-image gate opened (z > 0), of those it ran on
    gate_sum: float = 0.0  # sum of their gate values g = relu(tanh(z / 2))
    gated: bool = False  # the model's AFD has a whole-image gate

    def add(self, logits: torch.Tensor, labels: torch.Tensor, mode: str) -> None:
        top5 = logits.topk(5, dim=1).indices
        self.top1[mode] += int((top5[:, 0] == labels).sum())
        self.top5[mode] += int((top5 == labels[:, None]).any(1).sum())

    def percent(self, ran: bool = False) -> dict:
        """The row's percentages; ``ran`` adds ``afd_ran`` (the as-predict mode's share)."""
        n = max(self.n, 1)
        out = {"top1_direct": 100.0 * self.top1["direct"] / n, "top1_afd": 100.0 * self.top1["afd"] / n,
               "top5_direct": 100.0 * self.top5["direct"] / n, "top5_afd": 100.0 * self.top5["afd"] / n}
        if ran:
            out["afd_ran"] = 100.0 * self.ran / n
        return out


def _variants(photo, qualities, multi: bool, rng: random.Random, protocol: str, codec: str, source: bytes,
              skip_afd_above: Optional[int], file_fdm=None):
    """(key, uint8 tensor, whether the AFD runs, side information) for clean, each quality and, with
    ``multi``, 1..5 compressions. ``skip_afd_above`` (the as-predict mode): whether the AFD runs is
    decided as ``afd predict`` decides it, from the header of the file that variant was read from (the
    source file for clean, the last compressed file otherwise); None: it always runs. ``file_fdm``
    (decoded file, resize) -> (FDM (1,C,Hf,Wf), gate logits or None): the side information of the
    file each variant was read from, where the AFD runs (else None)."""
    def runs(payload: bytes) -> bool:
        return skip_afd_above is None or data.afd_runs_on(data.inspect_image(payload), skip_afd_above)

    def variant(key, qs):
        img, payload = data.degrade(photo, qs, protocol, codec, return_file=True)
        ran = runs(payload)
        side = None
        if file_fdm is not None and ran:  # crop: the input is the file itself (not resized again)
            side = file_fdm(data.to_tensor(data.decode_image(payload, "<variant>")),
                            None if protocol == "crop" else data.RESIZE)
        return key, data.to_tensor(img), ran, side
    ran = runs(source)
    side = file_fdm(data.to_tensor(photo), data.RESIZE) if file_fdm is not None and ran else None
    out = [("clean", data.to_tensor(data.resize_center_crop(photo)), ran, side)]
    out += [variant(("q", q), [q]) for q in qualities]
    if multi:
        for times in range(1, 6):
            out.append(variant(("times", times), [rng.choice(list(qualities)) for _ in range(times)]))
    return out


@torch.no_grad()
def evaluate(model, paths, qualities: Sequence[int] = data.DEFAULT_QUALITIES, *, batch_size: int = 50,
             multi_compress: bool = False, seed: int = 0, strict: bool = False, progress: bool = True,
             limit: Optional[int] = None, checkpoint: Optional[str] = None, backbone: str = "",
             protocol: str = "crop", codec: str = "jpeg", as_predict: bool = False,
             skip_afd_above: Optional[int] = data.SKIP_AFD_ABOVE_QUALITY, fdm_source: str = "input") -> dict:
    """Top-1/top-5 of ``model`` (an AFDClassifier) direct and with the AFD on labelled images.

    ``protocol`` (:data:`afd_ext.data.PROTOCOLS`): where the compression happens relative to the
    evaluation transform ('crop', the paper's; 'resized'; 'full'); ``codec``: 'jpeg' or 'webp'.

    ``as_predict``: the AFD column is what ``afd predict`` (``Pipeline``) would answer: where the
    file the variant was read from is lossless or a JPEG above ``skip_afd_above``
    (:func:`afd_ext.data.afd_runs_on`), the classifier's own logits; the AFD elsewhere. Each row then
    reports ``afd_ran``, the percentage of images the AFD ran on. The pixels are the protocol's (for
    ``crop``, predict would also resize the 224 file again: the ``resized`` protocol's pixels).

    ``fdm_source`` (:data:`afd_ext.modules.FDM_SOURCES`): 'input' (the FDM from the classifier's
    input, what ``model(images)`` does) or 'file': side information, the FDM estimated on the file
    each variant was read from, decoded at its own size (``AFDClassifier.file_fdm``), as ``afd
    predict --fdm-source file`` does; with ``as_predict`` the AFD column is exactly predict's answer.

    ``paths``: files or folders; labels from a leading synset in the file name or the
    folder name. Unreadable files are reported and skipped (``strict`` raises instead).
    Returns the JSON structure documented in the README.
    """
    qualities = data.parse_qualities(qualities)
    if protocol not in data.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(data.PROTOCOLS)}")
    if codec not in data.CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(data.CODECS)}")
    if as_predict and skip_afd_above is not None and (isinstance(skip_afd_above, bool)
                                                      or not 0 <= int(skip_afd_above) <= 100):
        raise ValueError(f"skip_afd_above must be a quality in 0..100 or None, got {skip_afd_above!r}")
    if fdm_source not in FDM_SOURCES:
        raise ValueError(f"fdm_source must be one of {FDM_SOURCES}, got {fdm_source!r}")
    if fdm_source == "file" and getattr(model, "afd", None) is None:
        raise ValueError("fdm_source='file' needs a model with an AFD module")
    skip = skip_afd_above if as_predict else None
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
        imgs, labels, ran, sides = zip(*pending.pop(key))
        x = torch.stack(imgs).to(device)
        y = torch.tensor(labels, device=device)
        ran = torch.tensor(ran, device=device)
        feat, pixels = model.stem_features(x)
        tally = tallies.setdefault(key, _Tally())
        tally.n += len(labels)
        tally.ran += int(ran.sum())
        direct = model.head(feat, pixels, use_afd=False)
        tally.add(direct, y, "direct")
        # as predict: the AFD's answer only where it would have run (it never sees the others)
        if bool(ran.any()):
            fdm = None
            if fdm_source == "file":  # the files' FDMs and gate logits, computed per variant
                got = [sd for sd in sides if sd is not None]
                fdm = torch.cat([f for f, _ in got]).to(device)
                z = torch.cat([g for _, g in got]) if got[0][1] is not None else None
                afd = model.head(feat[ran], pixels[ran], use_afd=True, fdm=fdm)
            else:  # the gate logits the AFD used (grid='detect': read on each input's own block grid)
                afd, z = model.head(feat[ran], pixels[ran], use_afd=True, return_gate=True)
            if z is not None:  # how far the gate let the correction through (docs/design.md §1)
                tally.gated = True
                tally.gate_open += int((z > 0).sum())
                tally.gate_sum += float(model.afd.gate_value(z.float()).sum())
            direct = direct.clone()
            direct[ran] = afd.to(direct.dtype)
        tally.add(direct, y, "afd")

    side_fdm = (lambda decoded, resize: model.file_fdm([decoded], data.CROP, resize)) if fdm_source == "file" else None
    for idx, (path, label) in enumerate(tqdm(labelled, desc="eval", unit="img", disable=not progress,
                                             file=sys.stderr)):
        try:
            photo = data.load_image(path)
            rng = random.Random(seed * 1_000_003 + idx)
            source = data.read_image_bytes(path) if skip is not None else b""
            try:  # all of a file's variants or none: a failure here skips the file, never the run
                variants = _variants(photo, qualities, multi_compress, rng, protocol, codec, source, skip,
                                     side_fdm)
            except (ValueError, OSError, MemoryError) as exc:
                raise data.ImageError(path, f"cannot build its evaluation crops: {exc}") from None
        except data.ImageError as exc:
            if strict:
                raise
            skipped.append({"path": exc.path, "error": exc.reason})
            continue
        for key, tensor, ran, side in variants:
            pending.setdefault(key, []).append((tensor, label, ran, side))
            if len(pending[key]) >= batch_size:
                flush(key)
    for key in list(pending):
        flush(key)
    if "clean" not in tallies:
        raise ValueError(f"none of the {len(labelled)} labelled images could be read (" + "; ".join(
            f"{s['path']}: {s['error']}" for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "") + ")")

    result = {
        "backbone": backbone, "checkpoint": checkpoint, "protocol": protocol, "codec": codec,
        "as_predict": bool(as_predict), "skip_afd_above": skip, "fdm_source": fdm_source,
        "grid": getattr(getattr(model, "afd", None), "grid", None),  # which 8x8 grid the FDM was read on
        "n_images": tallies["clean"].n,
        "clean": tallies["clean"].percent(as_predict),
        "qualities": [{"quality": q, **tallies[("q", q)].percent(as_predict)} for q in qualities],
    }
    result["mean"] = {k: sum(r[k] for r in result["qualities"]) / len(qualities) for k in ("top1_direct", "top1_afd")}
    if multi_compress:
        result["multi_compress"] = [{"times": t, **tallies[("times", t)].percent(as_predict)} for t in range(1, 6)]
        result["multi_compress_mean"] = {
            k: sum(r[k] for r in result["multi_compress"]) / 5 for k in ("top1_direct", "top1_afd")}
    if any(t.gated for t in tallies.values()):
        # per setting: % of the images the AFD ran on whose gate opened, and the mean gate value there
        result["gate"] = {_setting_name(key): {"open": 100.0 * t.gate_open / max(t.ran, 1),
                                               "mean": t.gate_sum / max(t.ran, 1)} for key, t in tallies.items()}
    result["skipped"] = skipped
    return result


def _setting_name(key) -> str:
    return key if isinstance(key, str) else (f"q{key[1]}" if key[0] == "q" else f"{key[1]}x")


def format_table(result: dict) -> str:
    """Markdown table of an evaluate() result."""
    ran = bool(result.get("as_predict"))  # as predict: the share of images the AFD ran on, per row
    gate = result.get("gate")  # a gated AFD: how often its gate opened, and how far
    afd = "AFD, FDM from the file" if result.get("fdm_source") == "file" else "AFD"
    lines = [f"| setting | top-1 direct | top-1 {afd} | gain | top-5 direct | top-5 {afd} |"
             + (" AFD ran |" if ran else "") + (" gate open (mean g) |" if gate else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- |" if ran else "") + (" --- |" if gate else "")]

    def row(name, r, key):
        g = gate.get(key) if gate else None
        lines.append(f"| {name} | {r['top1_direct']:.1f} | {r['top1_afd']:.1f} | "
                     f"{r['top1_afd'] - r['top1_direct']:+.1f} | {r['top5_direct']:.1f} | {r['top5_afd']:.1f} |"
                     + (f" {r['afd_ran']:.0f}% |" if ran else "")
                     + ((f" {g['open']:.0f}% ({g['mean']:.2f}) |" if g else " |") if gate else ""))
    row("clean", result["clean"], "clean")
    for r in result["qualities"]:
        row(f"q{r['quality']}", r, _setting_name(("q", r["quality"])))
    m = result["mean"]
    lines.append(f"| mean of qualities | {m['top1_direct']:.1f} | {m['top1_afd']:.1f} | "
                 f"{m['top1_afd'] - m['top1_direct']:+.1f} | | |" + (" |" if ran else "") + (" |" if gate else ""))
    for r in result.get("multi_compress", []):
        row(f"{r['times']}x compressed", r, _setting_name(("times", r["times"])))
    if "multi_compress_mean" in result:
        m = result["multi_compress_mean"]
        lines.append(f"| mean of 1..5x | {m['top1_direct']:.1f} | {m['top1_afd']:.1f} | "
                     f"{m['top1_afd'] - m['top1_direct']:+.1f} | | |" + (" |" if ran else "") + (" |" if gate else ""))
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
