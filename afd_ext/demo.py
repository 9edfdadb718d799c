"""``afd demo``: sample photos, JPEG-compressed, classified clean / compressed / compressed+AFD.

With no folder it uses photos that ship inside scikit-image and scikit-learn, so it
runs on a fresh install with no data.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from . import data

# (name, loader) of photos bundled with scikit-image / scikit-learn (no download).
# Where the compression happens (data.PROTOCOLS): on the classifier's crop, and on the whole photo.
DEMO_PROTOCOLS = ("crop", "full")
# Continuous measures per photo and quality, direct vs AFD (higher p, lower KL: closer to clean).
MEASURES = ("p_clean_class_direct", "p_clean_class_afd", "kl_direct", "kl_afd")
# Every colour photo bundled with scikit-image / scikit-learn (no download on a fresh install;
# one that a version lacks is left out and named).
_BUILTIN = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle", "immunohistochemistry", "hubble_deep_field",
            "retina", "china", "flower")


def _builtin_photo(name: str) -> Image.Image:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data
        arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8), "RGB")


def builtin_photos() -> list[tuple[str, Image.Image]]:
    out = []
    for n in _BUILTIN:
        try:
            out.append((n, _builtin_photo(n)))
        except Exception as exc:  # e.g. a scikit-image build that fetches this one over the network
            print(f"demo: built-in photo {n!r} unavailable ({type(exc).__name__}); left out", file=sys.stderr)
    if not out:
        raise RuntimeError("no built-in demo photo could be loaded; pass --data with a folder of photos")
    return out


@torch.no_grad()
def run_demo(model, data_dir: Optional[str] = None, qualities: Sequence[int] = (25, 15, 10, 7),
             out_png: Optional[str] = "afd_demo.png", strict: bool = False, limit: Optional[int] = None,
             verbose: bool = True) -> dict:
    """Classify each photo clean and at each JPEG quality, with and without the AFD.

    Prints one line per photo and quality, the agreement rates with the clean prediction,
    and writes a PNG strip. Returns the same as a dict.
    """
    qualities = data.parse_qualities(qualities)
    skipped = []
    if data_dir is None:
        photos = builtin_photos()
    else:
        photos = []
        for path in data.list_images(data_dir):
            try:
                photos.append((Path(path).name, data.load_image(path)))
            except data.ImageError as exc:
                if strict:
                    raise
                skipped.append({"path": exc.path, "error": exc.reason})
        if not photos:
            raise ValueError(f"none of the images in {data_dir} could be read")
    if limit:
        photos = photos[:limit]
    device = next(model.parameters()).device
    rows = []
    crops = []
    for name, img in photos:
        crop = data.resize_center_crop(img)
        crops.append(crop)
        for protocol in DEMO_PROTOCOLS:
            variants = [crop] + [data.degrade(img, [q], protocol) for q in qualities]
            x = torch.stack([data.to_tensor(v) for v in variants]).to(device)
            feat, pixels = model.stem_features(x)
            logp_d = model.head(feat, pixels, use_afd=False).float().log_softmax(1)
            logp_a = model.head(feat, pixels, use_afd=True).float().log_softmax(1)
            clean = int(logp_d[0].argmax())
            p0 = logp_d[0].exp()
            kl_d = (p0 * (logp_d[0] - logp_d)).sum(1).tolist()  # KL(clean || compressed)
            kl_a = (p0 * (logp_d[0] - logp_a)).sum(1).tolist()
            direct, afd = logp_d.argmax(1).tolist(), logp_a.argmax(1).tolist()
            for i, q in enumerate(qualities, start=1):
                rows.append({"photo": name, "protocol": protocol, "quality": q, "clean": data.class_name(clean),
                             "compressed": data.class_name(direct[i]), "compressed_afd": data.class_name(afd[i]),
                             "agree_direct": direct[i] == clean, "agree_afd": afd[i] == clean,
                             "p_clean_class_direct": float(logp_d[i, clean].exp()),
                             "p_clean_class_afd": float(logp_a[i, clean].exp()),
                             "kl_direct": max(0.0, kl_d[i]), "kl_afd": max(0.0, kl_a[i])})
            if protocol == "crop":
                rows.append({"photo": name, "protocol": None, "quality": None, "clean": data.class_name(clean),
                             "clean_afd": data.class_name(afd[0]), "agree_clean_afd": afd[0] == clean,
                             "p_clean_class": float(p0[clean]), "kl_clean_afd": max(0.0, kl_a[0])})
    summary = {"n_photos": len(photos), "clean_unchanged": 100.0 * sum(
        r["agree_clean_afd"] for r in rows if r["quality"] is None) / max(1, len(photos))}
    for protocol in DEMO_PROTOCOLS:
        comp = [r for r in rows if r["protocol"] == protocol]
        summary[protocol] = {
            "agreement_direct": 100.0 * _mean(r["agree_direct"] for r in comp),
            "agreement_afd": 100.0 * _mean(r["agree_afd"] for r in comp),
            **{k: _mean(r[k] for r in comp) for k in MEASURES},
            "per_quality": {q: {k: _mean(r[k] for r in comp if r["quality"] == q)
                                for k in ("agree_direct", "agree_afd") + MEASURES} for q in qualities},
        }
    if verbose:
        _print(rows, summary, qualities)
    if out_png:
        _figure(photos, crops, rows, summary, qualities, out_png)
    return {"rows": rows, "summary": summary, "skipped": skipped, "figure": out_png}


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / max(1, len(values))


def _print(rows, summary, qualities) -> None:
    comp = [r for r in rows if r["quality"] is not None]
    w = max(len(r["photo"]) for r in comp)
    print("p = probability of the clean prediction's class, KL = KL(clean || compressed); "
          "x marks a top-1 change")
    print(f"{'photo':<{w}} {'proto':<5} {'q':>3}  {'clean':<20} {'compressed':<21} {'+ AFD':<21} "
          f"{'p dir':>6} {'p AFD':>6} {'KL dir':>7} {'KL AFD':>7}")
    for r in comp:
        md = " " if r["agree_direct"] else "x"
        ma = " " if r["agree_afd"] else "x"
        print(f"{r['photo']:<{w}} {r['protocol']:<5} {r['quality']:>3}  {r['clean'][:20]:<20} "
              f"{md}{r['compressed'][:20]:<20} "
              f"{ma}{r['compressed_afd'][:20]:<20} {r['p_clean_class_direct']:6.3f} {r['p_clean_class_afd']:6.3f} "
              f"{r['kl_direct']:7.3f} {r['kl_afd']:7.3f}")
    print()
    for protocol in DEMO_PROTOCOLS:
        sm = summary[protocol]
        print(f"{protocol}: mean p {sm['p_clean_class_direct']:.3f} -> {sm['p_clean_class_afd']:.3f} with the AFD, "
              f"mean KL {sm['kl_direct']:.3f} -> {sm['kl_afd']:.3f}, top-1 agreement "
              f"{sm['agreement_direct']:.1f}% -> {sm['agreement_afd']:.1f}%")
        for q in qualities:
            pq = sm["per_quality"][q]
            print(f"  q{q:<3} p {pq['p_clean_class_direct']:.3f} -> {pq['p_clean_class_afd']:.3f}   "
                  f"KL {pq['kl_direct']:.3f} -> {pq['kl_afd']:.3f}")
    print(f"clean images whose prediction the AFD leaves unchanged: {summary['clean_unchanged']:.1f}%")


def _figure(photos, crops, rows, summary, qualities, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lowest = min(qualities)
    n = len(photos)
    fig = plt.figure(figsize=(max(2.3 * n, 9), 8.4), dpi=110)
    grid = fig.add_gridspec(3, max(n, 2), height_ratios=[1, 1, 1.1])
    for j, ((name, _), crop) in enumerate(zip(photos, crops)):
        r = next(r for r in rows if r["photo"] == name and r["quality"] == lowest and r["protocol"] == "crop")
        top, bottom = fig.add_subplot(grid[0, j]), fig.add_subplot(grid[1, j])
        top.imshow(crop)
        top.set_title(f"{name}\nclean: {r['clean'][:18]}", fontsize=7)
        bottom.imshow(data.degrade(crop, [lowest], "crop"))
        bottom.set_title(f"JPEG q{lowest}: {r['compressed'][:18]}\np={r['p_clean_class_direct']:.2f}", fontsize=7,
                         color="green" if r["agree_direct"] else "red")
        bottom.set_xlabel(f"+AFD: {r['compressed_afd'][:18]}\np={r['p_clean_class_afd']:.2f}", fontsize=7,
                          color="green" if r["agree_afd"] else "red")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    half = max(n, 2) // 2
    ax_p, ax_kl = fig.add_subplot(grid[2, :half]), fig.add_subplot(grid[2, half:])
    for protocol, style in zip(DEMO_PROTOCOLS, ("-", "--")):
        pq = summary[protocol]["per_quality"]
        for mode, marker in (("direct", "o"), ("afd", "s")):
            label = f"{protocol}, {'AFD' if mode == 'afd' else 'direct'}"
            ax_p.plot(qualities, [pq[q][f"p_clean_class_{mode}"] for q in qualities], style, marker=marker, label=label)
            ax_kl.plot(qualities, [pq[q][f"kl_{mode}"] for q in qualities], style, marker=marker, label=label)
    ax_p.set_ylabel("mean p(clean class)")
    ax_kl.set_ylabel("mean KL(clean || compressed)")
    for ax in (ax_p, ax_kl):
        ax.set_xlabel("JPEG quality")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("top: clean crop; middle: JPEG at the lowest quality, direct (title) and with the AFD (below), "
                 "green = same top-1 as clean; bottom: means over the photos", fontsize=8)
    from .utils import save_figure
    save_figure(fig, path)
