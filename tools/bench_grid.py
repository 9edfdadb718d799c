"""What reading the FDM on the detected JPEG grid (``AFDModule(grid='detect')``) costs: latency of the
deployed model on inputs whose grid is the input's own (a crop compressed at 224) and on inputs
resized after compression (every one rectified), the classifier alone, the AFD with grid='input' and
with grid='detect' taking turns (the order reversed every other turn), medians over turns.

    python tools/bench_grid.py --threads 2 --batch 1 32 --repeats 9 --out bench/results/grid_cost_cpu
    python tools/bench_grid.py --device cuda --dtype bfloat16 --batch 1 32 256 --out DIR/grid_cost_cuda
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import afd_ext  # noqa: E402
from afd_ext import data  # noqa: E402
from afd_ext.benchmark.e2e import _jpeg_batch  # noqa: E402
from afd_ext.benchmark.results import fmt, format_markdown, run_meta, write_result  # noqa: E402
from afd_ext.benchmark.timing import time_calls  # noqa: E402

CONFIGS = ("classifier", "afd_grid_input", "afd_grid_detect")


def inputs(protocol: str, n: int, quality: int = 25) -> torch.Tensor:
    photos = [data.decode_image(b) for b in _jpeg_batch(n, seed=1)]
    return torch.stack([data.to_tensor(data.degrade(p, [quality], protocol)) for p in photos])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="autocast dtype; the AFD's op weights are cast to it once, as the Pipeline does")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", required=True, help="path stem: writes .json and .md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    amp = ((lambda: torch.autocast(dev.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext)
    # channels_last, as afd bench times every model (the classifier's convolutions are faster in it)
    model = afd_ext.create_model("efficientnet_lite0", device=dev).eval()
    model = model.deploy("fused", dtype=None if dtype == torch.float32 else dtype).to(memory_format=torch.channels_last)
    models = {"classifier": (model, False)}
    for grid in ("input", "detect"):
        m = copy.deepcopy(model)
        m.afd.grid = grid
        models[f"afd_grid_{grid}"] = (m, True)
    rows = []
    for protocol in ("crop", "resized"):
        pool = inputs(protocol, max(args.batch)).to(dev)
        for b in args.batch:
            x = pool[:b].contiguous(memory_format=torch.channels_last)
            shifted = int(afd_ext.block_grid.detect_block_grid(x).shifted.sum())

            def fn(mu):
                m, use = mu
                with torch.inference_mode(), amp():
                    return m(x, use_afd=use)
            for c in CONFIGS:
                time_calls(fn, (models[c],), dev, rounds=1, warmup=1, clock="wall")
            turns = {c: [] for c in CONFIGS}
            for r in range(args.repeats):
                for c in (CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))):
                    turns[c].append(time_calls(fn, (models[c],), dev, rounds=args.calls, warmup=0,
                                               clock="wall").median)
            for c in CONFIGS:
                med = statistics.median(turns[c])
                row = {"inputs": f"{protocol} JPEG q25", "shifted_grid": f"{shifted}/{b}", "batch": b, "config": c,
                       "latency_ms_median": 1e3 * med, "images_per_s": b / med,
                       "vs_classifier": statistics.median(f / t for f, t in zip(turns["classifier"], turns[c])),
                       "vs_grid_input": statistics.median(f / t for f, t in zip(turns["afd_grid_input"], turns[c]))}
                rows.append(row)
                print(f"{protocol:8s} b={b:<3d} {c:16s} {row['latency_ms_median']:9.2f} ms  vs classifier "
                      f"{row['vs_classifier']:.3f}  vs grid input {row['vs_grid_input']:.3f}  "
                      f"shifted {row['shifted_grid']}", flush=True)
    meta = run_meta(dev, repeats=args.repeats, calls_per_turn=args.calls, dtype=args.dtype,
                    model=f"efficientnet_lite0 + the shipped AFD, deployed (fused ops), {args.dtype}, uint8 input, "
                    "channels_last",
                    inputs="photo-like 375x500 JPEGs (afd_ext.benchmark.e2e), then afd_ext.data.degrade at q25")
    result = {"meta": meta, "rows": rows}
    cols = [("inputs", False, lambda r: r["inputs"]), ("shifted grid", True, lambda r: r["shifted_grid"]),
            ("batch", True, lambda r: str(r["batch"])), ("config", False, lambda r: r["config"]),
            ("median ms", True, lambda r: fmt(r["latency_ms_median"], ".2f")),
            ("images/s", True, lambda r: fmt(r["images_per_s"], ".1f")),
            ("vs classifier", True, lambda r: fmt(r["vs_classifier"], ".3f")),
            ("vs grid input", True, lambda r: fmt(r["vs_grid_input"], ".3f"))]
    facts = (f"{meta['device']}, torch {meta['torch']}, commit {meta['commit']}, {meta['date']}; "
             f"{args.repeats} interleaved turns of {args.calls} calls each, medians over turns; 'vs' = median over "
             "turns of that config's latency over this one's (< 1: slower).")
    title = f"Cost of reading the FDM on the detected JPEG grid (grid='detect', {dev.type})"
    md = format_markdown(result, title, facts,
                         [(None, [meta["model"] + "; inputs: " + meta["inputs"] + "."], cols, rows)])
    write_result(result, args.out + ".json", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
