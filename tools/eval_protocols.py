"""Direct vs AFD under every degradation (afd eval's protocols x codecs) for several checkpoints,
on one list of images; writes JSON + Markdown + PNG. Every figure comes from afd_ext.evaluate.

    python tools/eval_protocols.py --images $AFD_DATA/imagenet-sample-dev --decision-set \
        --checkpoint v2=afd_ext/models/weights/afd_efficientnet_lite0_v2.safetensors \
        --checkpoint v3=afd_ext/models/weights/afd_efficientnet_lite0.safetensors \
        --out bench/results/accuracy_decision_set

``--decision-set`` (afd_ext.data.in_decision_set) or ``--holdout-of CHECKPOINT`` (its held-out files) picks
the images. Besides the four degradations at quality 25/18/15/10/7, each checkpoint is measured on mildly
compressed photos (the ``full`` protocol at quality 90 and 75), where the AFD must do no harm.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

import afd_ext
from afd_ext.models.checkpoint import read_checkpoint
from afd_ext.data import DECISION_SET_FRACTION, SKIP_AFD_ABOVE_QUALITY, in_decision_set, list_images
from afd_ext.modules import FDM_SOURCES
from afd_ext.utils import git_commit, save_figure, write_json

SETTINGS = (("crop", "jpeg"), ("resized", "jpeg"), ("full", "jpeg"), ("crop", "webp"))
MILD = ("full", "jpeg", (90, 75))  # protocol, codec, qualities: mildly compressed photos


def main() -> None:
    if sys.argv[1:2] == ["merge"]:  # tools/eval_protocols.py merge OUT RUN.json RUN.json ...
        if len(sys.argv) < 5 or any(a in ("-h", "--help") for a in sys.argv[2:]):
            raise SystemExit("usage: eval_protocols.py merge OUT RUN.json RUN.json [...]\n" + merge.__doc__)
        return merge(sys.argv[3:], sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True)
    pick = ap.add_mutually_exclusive_group(required=True)
    pick.add_argument("--holdout-of", help="checkpoint whose held-out files are evaluated")
    pick.add_argument("--decision-set", action="store_true", help="the decision set (afd_ext.data.in_decision_set)")
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--multi-compress", action="store_true", help="also 1..5 successive compressions (crop, JPEG)")
    ap.add_argument("--as-predict", action="store_true",
                    help="the AFD column as `afd predict` would answer (afd eval --as-predict: the classifier "
                         "alone where the file read is lossless or a JPEG above the skip quality)")
    ap.add_argument("--fdm-source", choices=FDM_SOURCES, default="input",
                    help="file: the FDM from the file each input was read from (afd eval --fdm-source file)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.decision_set:
        files = [str(f) for f in list_images(a.images) if in_decision_set(f)]
        which = f"the decision set (name hash below {DECISION_SET_FRACTION})"
    else:
        names = set(read_checkpoint(a.holdout_of)[1]["data"]["holdout_files"])
        files = [str(f) for f in list_images(a.images) if f.name in names]
        which = "held-out files of " + Path(a.holdout_of).name
    runs = {}
    for spec in a.checkpoint:
        name, path = spec.split("=", 1)
        model = afd_ext.create_model("efficientnet_lite0", checkpoint=path)
        runs[name] = {"checkpoint": path, "fdm_source": a.fdm_source, "results": []}
        for protocol, codec in SETTINGS:
            r = afd_ext.evaluate(model, files, protocol=protocol, codec=codec, progress=False,
                                 multi_compress=a.multi_compress and (protocol, codec) == ("crop", "jpeg"),
                                 checkpoint=path, backbone="efficientnet_lite0", as_predict=a.as_predict,
                                 fdm_source=a.fdm_source)
            runs[name]["results"].append(r)
            print(name, protocol, codec, f"clean {r['clean']['top1_direct']:.1f}->{r['clean']['top1_afd']:.1f}",
                  f"mean {r['mean']['top1_direct']:.1f}->{r['mean']['top1_afd']:.1f}", flush=True)
        protocol, codec, qualities = MILD
        r = afd_ext.evaluate(model, files, qualities=list(qualities), protocol=protocol, codec=codec, progress=False,
                             checkpoint=path, backbone="efficientnet_lite0", as_predict=a.as_predict,
                             fdm_source=a.fdm_source)
        runs[name]["mild"] = r
        print(name, "mild", *[f"q{q['quality']} {q['top1_direct']:.1f}->{q['top1_afd']:.1f}" for q in r["qualities"]],
              flush=True)
    n = runs[next(iter(runs))]["results"][0]["n_images"]
    commit = git_commit()
    out = {"date": datetime.date.today().isoformat(), "commit": commit, "n_images": n,
           "one_image_points": 100.0 / n, "images": which, "as_predict": a.as_predict,
           "qualities": [25, 18, 15, 10, 7], "torch": torch.__version__, "device": "cpu", "runs": runs}
    report(out, a.out)


def report(out: dict, path: str) -> None:
    """``path``.json, .md and .png of one result (several checkpoints on the same images)."""
    runs = out["runs"]
    write_json(path + ".json", out)
    n = out["n_images"]
    lines = [f"Direct vs AFD on {n} labelled dev images, {out['images']} (one image = {100.0 / n:.2f} points), "
             f"mean top-1 over JPEG/WebP quality 25/18/15/10/7; commit {out['commit']}, {out['date']}."
             + (" AFD column as `afd predict` would answer (`--as-predict`: the classifier alone where the "
                f"file read is lossless or a JPEG above quality {SKIP_AFD_ABOVE_QUALITY})."
                if out.get("as_predict") else ""),
             "",
             "| checkpoint | protocol | codec | clean direct | clean AFD | mean direct | mean AFD | gain |"
             " 1..5x direct | 1..5x AFD |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in runs.items():
        for r in run["results"]:
            m, c = r["mean"], r["clean"]
            mc = r.get("multi_compress_mean")
            lines.append(f"| {name} | {r['protocol']} | {r['codec']} | {c['top1_direct']:.1f} | {c['top1_afd']:.1f} | "
                         f"{m['top1_direct']:.1f} | {m['top1_afd']:.1f} | {m['top1_afd'] - m['top1_direct']:+.1f} | "
                         + (f"{mc['top1_direct']:.1f} | {mc['top1_afd']:.1f} |" if mc else " | |"))
    lines += ["", f"Mildly compressed photos ({MILD[0]} protocol), top-1 direct -> AFD:", "",
              "| checkpoint | " + " | ".join(f"q{q}" for q in MILD[2]) + " |", "| --- |" + " --- |" * len(MILD[2])]
    for name, run in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{q['top1_direct']:.1f} -> {q['top1_afd']:.1f} "
                                                  f"({q['top1_afd'] - q['top1_direct']:+.1f})"
                                                  for q in run["mild"]["qualities"]) + " |")
    gated = {name: run for name, run in runs.items() if "gate" in run["mild"]}
    if gated:  # how often each gated checkpoint's whole-image gate opened (z > 0), per setting
        cols = [("clean", "crop", "jpeg", "clean"), ("q90", "full", "jpeg", "mild"), ("q75", "full", "jpeg", "mild")]
        cols += [(q, p, c, None) for p, c in SETTINGS for q in ("q25", "q7")]
        lines += ["", "Gate opened (z > 0) on % of the images (mean gate value):", "",
                  "| checkpoint | " + " | ".join(f"{q} {p} {c}" for q, p, c, _ in cols) + " |",
                  "| --- |" + " --- |" * len(cols)]
        for name, run in gated.items():
            by = {(r["protocol"], r["codec"]): r for r in run["results"]}
            cells = []
            for q, p, c, where in cols:
                g = (run["mild"] if where == "mild" else by[p, c]).get("gate", {}).get(q)
                cells.append(f"{g['open']:.0f}% ({g['mean']:.2f})" if g else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    Path(path + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # One panel per setting, one horizontal bar per checkpoint: readable at any number of runs
    # (a legend of 20+ colours over grouped bars is not).
    names = list(runs)
    fig, axes = plt.subplots(1, len(SETTINGS), sharey=True, sharex=True, dpi=120,
                             figsize=(2.4 * len(SETTINGS) + 2.2, 0.26 * len(names) + 1.5), squeeze=False)
    for ax, (p, c) in zip(axes[0], SETTINGS):
        gains = []
        for name in names:
            r = next(r for r in runs[name]["results"] if (r["protocol"], r["codec"]) == (p, c))
            gains.append(r["mean"]["top1_afd"] - r["mean"]["top1_direct"])
        ax.barh(range(len(names)), gains, color="C0")
        for y, g in enumerate(gains):
            ax.text(g, y, f" {g:+.1f}", va="center", fontsize=7)
        ax.axvline(0, c="k", lw=0.8)
        ax.set_title(f"{p} {c}", fontsize=9)
        ax.set_xlabel("top-1 gain (points)", fontsize=8)
        ax.locator_params(axis="x", nbins=4)
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][0].margins(x=0.25)
    fig.suptitle(f"mean top-1 gain of the AFD over the qualities; {out['n_images']} images "
                 f"(1 image = {100.0 / out['n_images']:.2f} pt)", fontsize=9)
    save_figure(fig, path + ".png")


def merge(paths, out_path: str) -> None:
    """One result from several runs of this tool on the same images (each run's direct columns must
    agree: the same files, the same compressed pixels), e.g. v2 measured while v3 was training."""
    import json
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    # a part that is itself a merge brings the runs it was merged from, so the record keeps every commit
    sources = [s for p in parts for s in (p.get("merged_from") or [{"commit": p["commit"], "date": p["date"]}])]
    merged = {**first, "runs": {}, "merged_from": [s for i, s in enumerate(sources) if s not in sources[:i]]}
    directs = []
    for part in parts:
        if (part["images"], part["n_images"], bool(part.get("as_predict"))) != (
                first["images"], first["n_images"], bool(first.get("as_predict"))):
            raise SystemExit(f"cannot merge runs on different images or modes: {part['images']} vs {first['images']}")
        merged["runs"].update(part["runs"])
        for run in part["runs"].values():
            directs.append([r["mean"]["top1_direct"] for r in run["results"]] +
                           [q["top1_direct"] for q in run["mild"]["qualities"]])
    if any(d != directs[0] for d in directs):
        raise SystemExit(f"the runs' direct top-1 differ ({directs}): not the same pixels, not mergeable")
    report(merged, out_path)


if __name__ == "__main__":
    main()
