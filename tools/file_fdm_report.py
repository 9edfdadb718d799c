"""The side-information table: ``afd eval --as-predict --fdm-source file`` on the decision set beside the
checkpoint's pixels-only row of ``bench/results/accuracy_decision_set.json``; writes JSON + Markdown.

    afd eval $AFD_DATA/imagenet-sample-dev --decision-set --protocol resized --as-predict --fdm-source file \
        --json runs/eval/file/resized.json
    afd eval $AFD_DATA/imagenet-sample-dev --decision-set --protocol full --quality 90 75 25 18 15 10 7 \
        --as-predict --fdm-source file --json runs/eval/file/full.json
    python tools/file_fdm_report.py --run v8-224-gatefit --results runs/eval/file \
        --out bench/results/accuracy_file_fdm_v8-224-gatefit

The two evaluations must be of the same pixels as the pixels-only run: the direct columns are checked to
agree quality by quality, or nothing is written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from afd_ext.data import DEFAULT_QUALITIES
from afd_ext.utils import write_json

PROTOCOLS = ("resized", "full")  # crop's file is its own input: the file FDM cannot change that row
MILD = (90, 75)


def _mean(rows, key):
    return sum(q[key] for q in rows) / len(rows)


def report(run: str, results_dir: str, decision_set: str) -> tuple[dict, str]:
    runs = {p: json.loads((Path(results_dir) / f"{p}.json").read_text()) for p in PROTOCOLS}
    ds_runs = json.loads(Path(decision_set).read_text())["runs"]
    if run not in ds_runs:
        raise SystemExit(f"{decision_set} has no run {run!r} (it has {sorted(ds_runs)})")
    pixels = {r["protocol"]: r for r in ds_runs[run]["results"] if r["codec"] == "jpeg"}
    rows = []
    for p in PROTOCOLS:
        heavy = [q for q in runs[p]["qualities"] if q["quality"] in DEFAULT_QUALITIES]
        ref = pixels[p]["qualities"]
        if [q["quality"] for q in heavy] != [q["quality"] for q in ref] or any(
                abs(a["top1_direct"] - b["top1_direct"]) > 1e-9 for a, b in zip(heavy, ref)):
            raise SystemExit(f"{p}: the direct top-1 differs from {run}'s pixels-only run: not the same pixels")
        direct, afd = _mean(heavy, "top1_direct"), _mean(heavy, "top1_afd")
        pix_gain = pixels[p]["mean"]["top1_afd"] - pixels[p]["mean"]["top1_direct"]
        rows.append(f"| {p} | {direct:.1f} | {afd:.1f} | {afd - direct:+.1f} | {pix_gain:+.1f} |")
    for q in runs["full"]["qualities"]:
        if q["quality"] in MILD:
            rows.append(f"| full q{q['quality']} | {q['top1_direct']:.1f} | {q['top1_afd']:.1f} | "
                        f"{q['top1_afd'] - q['top1_direct']:+.1f} | (AFD ran on {q['afd_ran']:.0f}%) |")
    c = runs["full"]["clean"]
    rows.append(f"| clean | {c['top1_direct']:.1f} | {c['top1_afd']:.1f} | {c['top1_afd'] - c['top1_direct']:+.1f} | "
                f"(AFD ran on {c['afd_ran']:.0f}%) |")
    n = runs["full"]["n_images"]
    md = (f"Direct vs AFD as `afd predict --fdm-source file` would answer (`afd eval --as-predict --fdm-source file`), "
          f"shipped {run}, on the decision set ({n} images, one image = {100 / n:.2f} points); mean top-1 over quality "
          f"{'/'.join(map(str, DEFAULT_QUALITIES))}. Beside it the pixels-only gain from `accuracy_decision_set.json` "
          "(the direct columns agree quality by quality).\n\n"
          "| protocol | direct | AFD, FDM from the file | gain | pixels-only gain |\n| --- | --- | --- | --- | --- |\n"
          + "\n".join(rows) +
          "\n\nReproduce: `afd eval $AFD_DATA/imagenet-sample-dev --decision-set --protocol resized --as-predict "
          "--fdm-source file` and `--protocol full --quality 90 75 25 18 15 10 7` (the same flags).\n")
    return {"checkpoint": run, "runs": runs}, md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the checkpoint's name in the decision-set results")
    ap.add_argument("--results", required=True, help="folder with the two afd eval JSONs (resized.json, full.json)")
    ap.add_argument("--decision-set", default="bench/results/accuracy_decision_set.json")
    ap.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    a = ap.parse_args()
    data, md = report(a.run, a.results, a.decision_set)
    write_json(Path(a.out + ".json"), data)
    Path(a.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
