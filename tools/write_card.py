"""Write a shipped checkpoint's card (``NAME.card.json`` beside it, read by ``afd_ext.models.model_card``):
its release name, the GFLOPs counter's figures for the model, and its decision-set rows from one
``tools/eval_protocols.py`` result.

    python tools/write_card.py --checkpoint afd_ext/models/weights/afd_efficientnet_lite0.safetensors \
        --release v5-gatefit --results bench/results/accuracy_decision_set.json --run v5-gatefit
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import afd_ext
from afd_ext.benchmark.flops import gflops
from afd_ext.utils import write_json


def card(checkpoint: str, release: str, results: str, run: str, backbone: str = "efficientnet_lite0") -> dict:
    res = json.loads(Path(results).read_text())
    if run not in res["runs"]:
        raise SystemExit(f"{results} has no run {run!r} (it has {sorted(res['runs'])})")
    r = res["runs"][run]
    model = afd_ext.create_model(backbone, checkpoint=checkpoint)
    g = gflops(model)
    return {
        "release": release,
        "gflops": {"classifier": g["classifier"], "with_afd": g["classifier"] + g["afd"], "afd": g["afd"]},
        "accuracy": {
            "n_images": res["n_images"], "one_image_points": res["one_image_points"],
            "images": "the decision set: labelled imagenet-sample-dev images whose name hash is below 0.5 "
                      "(afd_ext.data.in_decision_set), none seen by this checkpoint's lineage",
            "qualities": res["qualities"], "metric": "top-1 %, mean over the qualities", "source": results,
            "rows": [{"protocol": x["protocol"], "codec": x["codec"], "clean_direct": x["clean"]["top1_direct"],
                      "clean_afd": x["clean"]["top1_afd"], "mean_direct": x["mean"]["top1_direct"],
                      "mean_afd": x["mean"]["top1_afd"]} for x in r["results"]],
            "mild": [{"protocol": r["mild"]["protocol"], "quality": q["quality"], "top1_direct": q["top1_direct"],
                      "top1_afd": q["top1_afd"]} for q in r["mild"]["qualities"]],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--results", required=True, help="a tools/eval_protocols.py JSON")
    ap.add_argument("--run", required=True, help="the checkpoint's name in that result")
    a = ap.parse_args()
    out = Path(a.checkpoint).with_suffix(".card.json")
    write_json(out, card(a.checkpoint, a.release, a.results, a.run))
    print(out)


if __name__ == "__main__":
    main()
