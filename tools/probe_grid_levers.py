"""Probes (no decision) of inference-time levers on the detected JPEG grid, on the labelled
training-side photos only (``in_decision_set`` false): nothing here reads the decision set.

``eval VARIANT``: ``afd_ext.evaluate`` (direct vs AFD, one run) of the shipped default (grid='detect')
with its ``head`` replaced by the variant; one JSON line (gain per quality, answers gained over direct
summed over the qualities):

* ``base``: the module as shipped (the FDM and gate read on the rectified image, the correction on
  the input's stem features).
* ``up8only``: only grids with a period above 8 (enlarged after compression) rectified; the
  others read on the input's grid.
* ``rectcorr``: for a rectified input the whole correction (stem features, FE-Net, FDM, gate) made
  on the rectified image, then resampled (bilinear) onto the input's feature grid.
* ``rectcorr_up8``: ``rectcorr`` for periods above 8 only, the input's grid for the rest.
* ``gsS`` (e.g. ``gs2``): ``up8only`` with the gate logits of the rectified inputs multiplied by S.
* ``thrT`` (e.g. ``thr6``): as shipped, but a grid with a period above 8.4 (enlarged after
  compression) is also taken as shifted where its strength is at least T (instead of
  ``block_grid.GRID_MIN_STRENGTH``), its ratio to the period-8 peak unchanged.

``rates``: the share of inputs the detector takes as shifted, per protocol (and WebP crops) and quality, and at
lower strength thresholds for periods above 8.4 (clean photos included: a false positive there is
a cost on every image).

    AFD_DATA=../shared/data python tools/probe_grid_levers.py eval rectcorr --protocol resized --threads 1
    AFD_DATA=../shared/data python tools/probe_grid_levers.py rates
(docs/accuracy.md, "v18")
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afd_ext import block_grid, data, reference  # noqa: E402
from afd_ext.data.labels import in_decision_set  # noqa: E402
from afd_ext.evaluation import evaluate  # noqa: E402
from afd_ext.models import create_model  # noqa: E402

VARIANTS = ("base", "up8only", "rectcorr", "rectcorr_up8", "gsS", "thrT")


def training_side(root: str) -> list[str]:
    return [str(f) for f in data.list_images(root)
            if data.label_from_path(f, root) is not None and not in_decision_set(f)]


def _rectified_correction(model, pix, feat_size, period, ox, oy):
    """The correction act(...)'s argument minus feat, made on the rectified image and resampled onto
    the input's feature grid; and the gate logit read there."""
    afd = model.afd
    rect = block_grid.rectify(pix, [period], [ox], [oy])
    feat_r = model.adapter.stem(model.normalize(rect.image))
    z = afd.gate_logit(rect.image)
    fdm = afd.compute_fdm(rect.image, feat_r.shape[-2:], feat_r.dtype, z)
    d = afd.fe(feat_r) * reference.upsample_fdm(fdm, feat_r.shape[-2:])
    (h, w), (hf, wf), (hv, wv) = pix.shape[-2:], feat_size, rect.image.shape[-2:]
    # input pixel of each feature cell's centre -> rectified pixel -> grid_sample's [-1, 1]
    xs = ((torch.arange(wf, dtype=torch.float64) + 0.5) * w / wf - rect.x0[0]) / rect.scale[0]
    ys = ((torch.arange(hf, dtype=torch.float64) + 0.5) * h / hf - rect.y0[0]) / rect.scale[0]
    gx = (xs / wv * 2 - 1).float()[None, :].expand(hf, wf)
    gy = (ys / hv * 2 - 1).float()[:, None].expand(hf, wf)
    grid = torch.stack((gx, gy), -1)[None]
    return F.grid_sample(d, grid, mode="bilinear", padding_mode="border", align_corners=False), z


def _with_gate_scale(afd, scale: float, fn):
    head = afd.gate_head
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    try:
        return fn()
    finally:
        with torch.no_grad():
            head.weight.copy_(w0)
            head.bias.copy_(b0)


def variant_head(model, variant: str, gate_scale: float = 1.0):
    """model.head as ``variant`` computes it (``gate_scale``: gsS's S)."""
    afd, shipped_head = model.afd, model.head

    def module_on(grid: str, feat, pixels):
        afd.grid = grid
        try:
            return afd(feat, pixels, return_gate=True)
        finally:
            afd.grid = "detect"

    def head(feat, pixels, use_afd=True, fdm=None, return_gate=False):
        if not use_afd or fdm is not None or variant == "base":
            return shipped_head(feat, pixels, use_afd=use_afd, fdm=fdm, return_gate=return_gate)
        g = block_grid.detect_block_grid(pixels)
        # the detect module on enlarged grids only, the input grid for the rest (gsS: a scaled gate)
        detect_on_enlarged = variant in ("up8only", "gsS")
        up8 = detect_on_enlarged or variant == "rectcorr_up8"
        keep = g.shifted & (g.period > 8) if up8 else g.shifted
        if detect_on_enlarged:
            out_in, z_in = module_on("input", feat, pixels)
            out_d, z_d = _with_gate_scale(afd, gate_scale, lambda: module_on("detect", feat, pixels))
            out = torch.where(keep[:, None, None, None], out_d, out_in)
            z = torch.where(keep, z_d, z_in)
        else:
            out, z = module_on("input" if up8 else "detect", feat, pixels)
            out, z = out.clone(), z.clone()
            for i in keep.nonzero()[:, 0].tolist():
                d, zi = _rectified_correction(model, pixels[i:i + 1].float(), feat.shape[-2:], float(g.period[i]),
                                              float(g.offset_x[i]), float(g.offset_y[i]))
                out[i] = reference.apply_act(feat[i:i + 1] + d.to(feat.dtype), afd.act)[0]
                z[i] = zi[0]
        logits = model.adapter.rest(out)
        return (logits, z) if return_gate else logits
    return head


def _more_enlarged_grids(detect, min_strength: float):
    """detect_block_grid, also taking an enlarged grid (period > 8.4) of at least min_strength (the
    module looks the function up in block_grid at each call, so the probe replaces it there)."""
    def detect_more(img):
        g = detect(img)
        enlarged = g.period > 8 + block_grid.GRID_NEAR_8
        g.shifted = g.shifted | (enlarged & (g.strength >= min_strength)
                                 & (g.ratio_to_8 >= block_grid.GRID_MIN_RATIO_TO_8))
        return g
    return detect_more


def run_eval(a) -> dict:
    numbered = re.fullmatch(r"(gs|thr)([0-9]+(?:\.[0-9]+)?)", a.variant)
    if a.variant not in VARIANTS[:-2] and not numbered:
        raise SystemExit(f"unknown variant {a.variant!r}; choose one of {VARIANTS}")
    model = create_model("efficientnet_lite0")
    if model.afd.grid != "detect":
        raise SystemExit("the shipped default is expected to read grid='detect'")
    if numbered and numbered.group(1) == "thr":
        block_grid.detect_block_grid = _more_enlarged_grids(block_grid.detect_block_grid, float(numbered.group(2)))
    elif numbered:
        model.head = variant_head(model, "gsS", float(numbered.group(2)))
    else:
        model.head = variant_head(model, a.variant)
    t = time.time()
    with torch.no_grad():
        res = evaluate(model, training_side(a.images), a.qualities, protocol=a.protocol, codec=a.codec,
                       progress=False)
    n = res["n_images"]
    gains = {r["quality"]: round(r["top1_afd"] - r["top1_direct"], 2) for r in res["qualities"]}
    answers = sum(round((r["top1_afd"] - r["top1_direct"]) * n / 100) for r in res["qualities"])
    return {"variant": a.variant, "protocol": a.protocol, "codec": a.codec, "n": n,
            "clean": round(res["clean"]["top1_afd"] - res["clean"]["top1_direct"], 2),
            "gain": gains, "answers": answers, "seconds": round(time.time() - t)}


def run_rates(a) -> list:
    photos = [data.load_image(f) for f in training_side(a.images)]
    out = []

    def row(name, quality, xs):
        g = block_grid.detect_block_grid(xs)
        up = (g.period > 8 + block_grid.GRID_NEAR_8) & (g.ratio_to_8 >= block_grid.GRID_MIN_RATIO_TO_8)
        r = {"input": name, "quality": quality, "n": len(xs),
             "shifted": round(float(g.shifted.float().mean()), 3),
             "shifted_period_above_8": round(float((g.shifted & (g.period > 8)).float().mean()), 3),
             "above_8_at_strength": {t: round(float(((g.strength >= t) & up).float().mean()), 3)
                                     for t in (3, 4, 5, 6, block_grid.GRID_MIN_STRENGTH)}}
        print(json.dumps(r), flush=True)
        out.append(r)
    row("clean", None, torch.stack([data.to_tensor(data.resize_center_crop(p)) for p in photos]))
    for protocol, codec in [(p, "jpeg") for p in data.PROTOCOLS] + [("crop", "webp")]:
        name = protocol if codec == "jpeg" else f"{protocol} {codec}"
        for q in a.qualities:
            row(name, q, torch.stack([data.to_tensor(data.degrade(p, [q], protocol, codec)) for p in photos]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("variant", help=f"one of {VARIANTS} (gsS: S a number, e.g. gs2)")
    e.add_argument("--protocol", choices=data.PROTOCOLS, default="resized")
    e.add_argument("--codec", choices=data.CODECS, default="jpeg")
    r = sub.add_parser("rates")
    for p in (e, r):
        p.add_argument("--images", default=os.path.join(os.environ.get("AFD_DATA", "../shared/data"),
                                                        "imagenet-sample-dev"))
        p.add_argument("--qualities", type=int, nargs="+", default=[25, 18, 15, 10, 7])
        p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.cmd == "eval":
        print(json.dumps(run_eval(a)), flush=True)
    else:
        run_rates(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
