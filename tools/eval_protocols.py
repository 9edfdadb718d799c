"""Direct vs AFD under every degradation (afd eval's protocols x codecs) for several checkpoints,
on one list of images; writes JSON + Markdown + PNG. Every figure comes from afd_ext.evaluate.

    python tools/eval_protocols.py --images <folders> --holdout-of runs/mix/afd.safetensors \
        --checkpoint v1=afd_ext/weights/afd_efficientnet_lite0_v1.safetensors \
        --checkpoint v2=afd_ext/weights/afd_efficientnet_lite0.safetensors --out bench/results/accuracy_protocols
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

import afd_ext
from afd_ext.checkpoint import read_checkpoint
from afd_ext.data import list_images
from afd_ext.utils import git_commit, write_json

SETTINGS = (("crop", "jpeg"), ("resized", "jpeg"), ("full", "jpeg"), ("crop", "webp"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--holdout-of", required=True, help="checkpoint whose held-out files are evaluated")
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--multi-compress", action="store_true", help="also 1..5 successive compressions (crop, JPEG)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = set(read_checkpoint(a.holdout_of)[1]["data"]["holdout_files"])
    files = [str(f) for f in list_images(a.images) if f.name in names]
    runs = {}
    for spec in a.checkpoint:
        name, path = spec.split("=", 1)
        model = afd_ext.create_model("efficientnet_lite0", checkpoint=path)
        runs[name] = {"checkpoint": path, "results": []}
        for protocol, codec in SETTINGS:
            r = afd_ext.evaluate(model, files, protocol=protocol, codec=codec, progress=False,
                                 multi_compress=a.multi_compress and (protocol, codec) == ("crop", "jpeg"), checkpoint=path,
                                 backbone="efficientnet_lite0")
            runs[name]["results"].append(r)
            print(name, protocol, codec, f"clean {r['clean']['top1_direct']:.1f}->{r['clean']['top1_afd']:.1f}",
                  f"mean {r['mean']['top1_direct']:.1f}->{r['mean']['top1_afd']:.1f}", flush=True)
    n = runs[next(iter(runs))]["results"][0]["n_images"]
    commit = git_commit()
    out = {"date": datetime.date.today().isoformat(), "commit": commit, "n_images": n,
           "one_image_points": 100.0 / n, "images": "held-out files of " + Path(a.holdout_of).name,
           "qualities": [25, 18, 15, 10, 7], "torch": torch.__version__, "device": "cpu", "runs": runs}
    write_json(a.out + ".json", out)
    lines = [f"Direct vs AFD on {n} held-out labelled dev images (one image = {100.0 / n:.2f} points), "
             f"mean top-1 over JPEG/WebP quality 25/18/15/10/7; commit {commit}, {out['date']}.", "",
             "| checkpoint | protocol | codec | clean direct | clean AFD | mean direct | mean AFD | gain |"
             " 1..5x direct | 1..5x AFD |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in runs.items():
        for r in run["results"]:
            m, c = r["mean"], r["clean"]
            mc = r.get("multi_compress_mean")
            lines.append(f"| {name} | {r['protocol']} | {r['codec']} | {c['top1_direct']:.1f} | {c['top1_afd']:.1f} | "
                         f"{m['top1_direct']:.1f} | {m['top1_afd']:.1f} | {m['top1_afd'] - m['top1_direct']:+.1f} | "
                         + (f"{mc['top1_direct']:.1f} | {mc['top1_afd']:.1f} |" if mc else " | |"))
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    labels = [f"{p}\n{c}" for p, c in SETTINGS]
    width = 0.8 / len(runs)
    for i, (name, run) in enumerate(runs.items()):
        gains = [r["mean"]["top1_afd"] - r["mean"]["top1_direct"] for r in run["results"]]
        ax.bar([j + i * width for j in range(len(SETTINGS))], gains, width, label=name)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(SETTINGS))], labels)
    ax.axhline(0, c="k", lw=0.8)
    ax.set_ylabel("mean top-1 gain of the AFD (points)")
    ax.set_title(f"{n} held-out images (1 image = {100.0 / n:.2f} pt)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out + ".png")


if __name__ == "__main__":
    main()
