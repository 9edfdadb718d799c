"""Ablations of the AFD recipe on EfficientNet-Lite0 (README "Ablations").

Every arm trains with the shipped recipe (L1 + 0.05 KL) on a shorter, common schedule on the
shared data, then is evaluated with the protocol on the dev images the run held out. Arms run
two at a time (about 17 min per 1000 steps on this 2-core CPU). Writes
bench/results/ablations.{json,md,png}.

    python tools/ablations.py [--steps 1000] [--arms baseline fdm_global ...] [--jobs 2]
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FOLDERS = [DATA / "imagenet-sample-dev", DATA / "bsds500" / "train", DATA / "bsds500" / "val"]
COMMON = ["--batch-size", "12", "--crop", "160", "--quality-range", "5", "30", "--clean-fraction", "0.2",
          "--lr", "2e-3", "--warmup", "100", "--kl", "0.05", "--workers", "1", "--threads", "1", "--seed", "0",
          "--no-progress"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # two arms share two cores
ARMS = {
    "baseline": [],                               # spatial FDM, RepConv, width small, 20% clean crops
    "l1_only": ["--kl", "0"],
    "fdm_global": ["--fdm", "global"],
    "fdm_none": ["--fdm", "none"],
    "plain_conv": ["--block", "conv"],
    "no_clean_crops": ["--clean-fraction", "0"],
    "width_tiny": ["--width", "tiny"],
    "width_base": ["--width", "base"],
}


def flops_fraction(width):
    import torch

    import afd_ext
    from afd_ext.benchmark.flops import count_flops
    clf = afd_ext.load_classifier("efficientnet_lite0")
    x = torch.rand(1, 3, 224, 224)
    afd = afd_ext.AFDModule(32, width=width, act="relu6").eval().reparameterize()
    return count_flops(lambda: afd(torch.randn(1, 32, 112, 112), x * 255)) / count_flops(lambda: clf(x))


def run_arm(name, steps, out_root):
    out = out_root / name
    width = next((ARMS[name][i + 1] for i, a in enumerate(ARMS[name]) if a == "--width"), "small")
    train = [sys.executable, "-m", "afd_ext", "train", "--data", *map(str, FOLDERS), "--out", str(out), "--steps",
             str(steps), "--val-every", str(steps), "--ckpt-every", str(steps), *COMMON, *ARMS[name]]
    if not (out / "afd.safetensors").exists():  # a finished arm is kept: rerunning resumes the set
        subprocess.run(train, check=True, stdout=subprocess.DEVNULL, env=ONE_THREAD)
    result = out / "eval.json"
    if not result.exists():
        subprocess.run([sys.executable, "-m", "afd_ext", "eval", str(FOLDERS[0]), "--checkpoint",
                        str(out / "afd.safetensors"), "--holdout-only", "--json", str(result), "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL, env=ONE_THREAD)
    r = json.loads(result.read_text())
    return {"arm": name, "args": ARMS[name], "width": width, "n_images": r["n_images"],
            "clean_direct": r["clean"]["top1_direct"], "clean_afd": r["clean"]["top1_afd"],
            "mean_direct": r["mean"]["top1_direct"], "mean_afd": r["mean"]["top1_afd"],
            "qualities": [{k: q[k] for k in ("quality", "top1_direct", "top1_afd")} for q in r["qualities"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "ablations"))
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    a = p.parse_args(argv)
    out_root = Path(a.out)
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda n: run_arm(n, a.steps, out_root), a.arms))
    for r in rows:
        r["flops_fraction_of_lite0"] = flops_fraction(
            {"tiny": 4, "small": 8, "base": 16}.get(r["width"], r["width"]))
        r["mean_gain"] = r["mean_afd"] - r["mean_direct"]
        r["clean_change"] = r["clean_afd"] - r["clean_direct"]
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "ablations.json").write_text(json.dumps({"steps": a.steps, "common_args": COMMON, "rows": rows},
                                                   indent=2) + "\n")
    qs = [q["quality"] for q in rows[0]["qualities"]]
    lines = [f"Ablations: {a.steps} steps each, L1 + 0.05 KL, same seed; top-1 % on the "
             f"{rows[0]['n_images']} held-out dev images, direct -> AFD (mean over the qualities).", "",
             "| arm | AFD FLOPs / Lite0 | clean | " + " | ".join(f"q{q}" for q in qs) + " | mean | mean gain |",
             "| --- | --- | --- | " + " | ".join("---" for _ in qs) + " | --- | --- |"]
    for r in rows:
        cells = [f"{q['top1_direct']:.1f} -> {q['top1_afd']:.1f}" for q in r["qualities"]]
        lines.append(f"| {r['arm']} | {100 * r['flops_fraction_of_lite0']:.0f}% | {r['clean_direct']:.1f} -> "
                     f"{r['clean_afd']:.1f} | " + " | ".join(cells) + f" | {r['mean_direct']:.1f} -> "
                     f"{r['mean_afd']:.1f} | {r['mean_gain']:+.1f} |")
    (res / "ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    widths = [r for r in rows if r["arm"] in ("width_tiny", "baseline", "width_base")]
    if len(widths) > 1:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        widths.sort(key=lambda r: r["flops_fraction_of_lite0"])
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        ax.plot([100 * r["flops_fraction_of_lite0"] for r in widths], [r["mean_gain"] for r in widths], "o-")
        for r in widths:
            ax.annotate(r["width"], (100 * r["flops_fraction_of_lite0"], r["mean_gain"]), fontsize=8)
        ax.set_xlabel("AFD FLOPs, % of Lite0")
        ax.set_ylabel("mean top-1 gain (points)")
        ax.grid(alpha=0.3)
        from afd_ext.utils import save_figure
        save_figure(fig, res / "ablations_width.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
