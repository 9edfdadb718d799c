"""``afd demo``: sample photos, JPEG-compressed, classified clean / compressed / compressed+AFD.

With no folder it uses photos that ship inside scikit-image and scikit-learn, so it
runs on a fresh install with no data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from . import data

# (name, loader) of photos bundled with scikit-image / scikit-learn (no download).
_BUILTIN = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle", "camera", "china", "flower")


def _builtin_photo(name: str) -> Image.Image:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data
        arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8), "RGB")


def builtin_photos() -> list[tuple[str, Image.Image]]:
    return [(n, _builtin_photo(n)) for n in _BUILTIN]


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
        variants = [crop] + [data.jpeg_compress(crop, q) for q in qualities]
        x = torch.stack([data.to_tensor(v) for v in variants]).to(device)
        feat, pixels = model.stem_features(x)
        direct = model.head(feat, pixels, use_afd=False).argmax(1).tolist()
        afd = model.head(feat, pixels, use_afd=True).argmax(1).tolist()
        clean = direct[0]
        for i, q in enumerate(qualities, start=1):
            rows.append({"photo": name, "quality": q, "clean": data.class_name(clean),
                         "compressed": data.class_name(direct[i]), "compressed_afd": data.class_name(afd[i]),
                         "agree_direct": direct[i] == clean, "agree_afd": afd[i] == clean})
        rows.append({"photo": name, "quality": None, "clean": data.class_name(clean),
                     "clean_afd": data.class_name(afd[0]), "agree_clean_afd": afd[0] == clean})
    comp_rows = [r for r in rows if r["quality"] is not None]
    summary = {
        "n_photos": len(photos),
        "agreement_direct": 100.0 * sum(r["agree_direct"] for r in comp_rows) / max(1, len(comp_rows)),
        "agreement_afd": 100.0 * sum(r["agree_afd"] for r in comp_rows) / max(1, len(comp_rows)),
        "clean_unchanged": 100.0 * sum(r["agree_clean_afd"] for r in rows if r["quality"] is None) / max(
            1, len(photos)),
        "per_quality": {q: {"direct": 100.0 * sum(r["agree_direct"] for r in comp_rows if r["quality"] == q) /
                            len(photos),
                            "afd": 100.0 * sum(r["agree_afd"] for r in comp_rows if r["quality"] == q) /
                            len(photos)} for q in qualities},
    }
    if verbose:
        _print(rows, summary, qualities)
    if out_png:
        _figure(photos, crops, rows, qualities, out_png)
    return {"rows": rows, "summary": summary, "skipped": skipped, "figure": out_png}


def _print(rows, summary, qualities) -> None:
    w = max(len(r["photo"]) for r in rows)
    print(f"{'photo':<{w}}  {'q':>3}  {'clean':<24} {'compressed':<24} {'compressed + AFD':<24}")
    for r in rows:
        if r["quality"] is None:
            continue
        mark_d = " " if r["agree_direct"] else "x"
        mark_a = " " if r["agree_afd"] else "x"
        print(f"{r['photo']:<{w}}  {r['quality']:>3}  {r['clean'][:24]:<24} {mark_d}{r['compressed'][:23]:<23} "
              f"{mark_a}{r['compressed_afd'][:23]:<23}")
    print()
    print("agreement with the clean prediction (x marks a change):")
    for q in qualities:
        pq = summary["per_quality"][q]
        print(f"  q{q:<3} direct {pq['direct']:5.1f}%   AFD {pq['afd']:5.1f}%")
    print(f"  all  direct {summary['agreement_direct']:5.1f}%   AFD {summary['agreement_afd']:5.1f}%")
    print(f"clean images whose prediction the AFD leaves unchanged: {summary['clean_unchanged']:.1f}%")


def _figure(photos, crops, rows, qualities, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lowest = min(qualities)
    n = len(photos)
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 5.4), dpi=110, squeeze=False)
    for j, ((name, _), crop) in enumerate(zip(photos, crops)):
        r = next(r for r in rows if r["photo"] == name and r["quality"] == lowest)
        axes[0][j].imshow(crop)
        axes[0][j].set_title(f"{name}\nclean: {r['clean'][:18]}", fontsize=7)
        axes[1][j].imshow(data.jpeg_compress(crop, lowest))
        col_d = "green" if r["agree_direct"] else "red"
        col_a = "green" if r["agree_afd"] else "red"
        axes[1][j].set_title(f"JPEG q{lowest}: {r['compressed'][:18]}", fontsize=7, color=col_d)
        axes[1][j].set_xlabel(f"+AFD: {r['compressed_afd'][:18]}", fontsize=7, color=col_a)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("top-1 class: clean (top), JPEG-compressed and with the AFD (bottom); green = same as clean",
                 fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
