"""Profile one deployed forward (torch.profiler): which kernels run, how often, for how long.

    python tools/profile_forward.py --device cuda --batch 256 --dtype bfloat16 \
        --out bench/results/profile_cuda            # writes profile_cuda.json + .md

Per backbone (default EfficientNet-Lite0 and ResNet-50, the e2e benchmark's models: the AFD at
the shipped width, deployed with the fused ops, channels_last, uint8 224x224 input under
autocast), three profiles of ``--iters`` calls after warm-up: the classifier alone, the whole
deployed forward, and the AFD module alone on the stem's output. Each table: kernel (device
kernels on GPU, operators on CPU), calls per forward, self time per forward, share of the
profile's total; the totals give the AFD's cost against the classifier's. The AFD is deployed
with the dtype it runs in (``deploy(dtype=torch.bfloat16)`` under bf16 autocast: its op weights
cast once, as the Pipeline does), so no per-call weight casts show up in the tables.

Each table is appended to ``--rows`` (JSON Lines, default STEM.jsonl) as soon as it is profiled;
a run cut short is summarized with ``python bench/session.py rebuild STEM.jsonl``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from afd_ext.benchmark.e2e import build_model
from afd_ext.benchmark.results import Recorder, format_markdown, run_meta, summarize, write_result


def _self_time_us(evt, cuda: bool) -> float:
    if cuda:
        for name in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(evt, name):
                return float(getattr(evt, name))
        return 0.0
    return float(evt.self_cpu_time_total)


def profile_table(fn, device: torch.device, iters: int, warmup: int = 3) -> dict:
    """{'total_us_per_call', 'rows': [{kernel, calls_per_call, us_per_call, share}]} of ``fn()``."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        if cuda:
            torch.cuda.synchronize()
    times: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    for evt in prof.key_averages():
        if cuda and getattr(evt, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue  # on GPU: device kernels only (the launches' host side is not device time)
        t = _self_time_us(evt, cuda)
        if t <= 0:
            continue
        times[evt.key] += t
        counts[evt.key] += evt.count
    total = sum(times.values())
    rows = [{"kernel": k, "calls_per_call": counts[k] / iters, "us_per_call": times[k] / iters,
             "share": times[k] / total if total else 0.0} for k in sorted(times, key=times.get, reverse=True)]
    return {"total_us_per_call": total / iters, "kernel_launches_per_call": sum(counts.values()) / iters,
            "rows": rows}


def profile_backbone(backbone: str, device: torch.device, batch: int, dtype: torch.dtype, iters: int,
                     width: str, warmup: int = 3, emit=None) -> dict:
    """The three profiles of one backbone; ``emit(part, table)`` is called as each one ends."""
    weights = dtype if dtype != torch.float32 else None  # deployed in the dtype it runs in
    model = build_model(backbone, width=width).deploy(dtype=weights).to(device).to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    amp = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    out = {}
    with torch.inference_mode(), amp:
        feat, pixels = model.stem_features(x)
        for part, fn in (("classifier", lambda: model(x, use_afd=False)), ("deployed_forward", lambda: model(x)),
                         ("afd_module", lambda: model.afd(feat, pixels))):
            out[part] = profile_table(fn, device, iters, warmup)
            if emit is not None:
                emit(part, out[part])
    return _with_share(out)


def _with_share(prof: dict) -> dict:
    if "classifier" in prof and "deployed_forward" in prof:
        prof["afd_share_of_forward"] = 1.0 - prof["classifier"]["total_us_per_call"] / prof["deployed_forward"][
            "total_us_per_call"]
    return prof


def result_from_records(records) -> dict:
    """The JSON summary of one profile run from its JSON Lines records (tables of the backbones and
    parts profiled before the run ended; ``complete`` False when it did not reach its end)."""
    result = summarize(records, ("table",))
    backbones: dict = {}
    for r in result.pop("tables"):
        backbones.setdefault(r["backbone"], {})[r["part"]] = r["table"]
    return {**result, "backbones": {b: _with_share(prof) for b, prof in backbones.items()}}


def format_markdown_profile(result: dict, top: int) -> str:
    """The Markdown tables of a profile run (``afd_ext.benchmark.results.format_markdown``)."""
    facts = (f"torch {result['torch']} · CUDA {result['cuda']} · {result['date']} · commit {result['commit']} · "
             f"batch {result['batch']} · {result['dtype']}{' autocast' if result['dtype'] != 'float32' else ''} · "
             f"channels_last uint8 input · AFD width `{result['width']}`, deployed with its op weights in "
             f"{result['dtype']}, fused ops · {result['iters']} profiled calls after warm-up; times "
             f"are {'device (kernel)' if result['device_type'] == 'cuda' else 'CPU self'} time per call.")
    unit = "kernels" if result["device_type"] == "cuda" else "op calls"

    def kernel(r):
        name = r["kernel"].replace("|", "\\|")
        return f"`{name if len(name) <= 90 else name[:87] + '...'}`"
    columns = [("kernel", False, kernel), ("count / call", True, lambda r: f"{r['calls_per_call']:g}"),
               ("us / call", True, lambda r: f"{r['us_per_call']:.1f}"),
               ("share", True, lambda r: f"{100 * r['share']:.1f}%")]
    sections = []
    for backbone, prof in result["backbones"].items():
        intro = []
        if "afd_share_of_forward" in prof:
            cls, full = prof["classifier"], prof["deployed_forward"]
            intro = [f"classifier alone {cls['total_us_per_call'] / 1e3:.2f} ms "
                     f"({cls['kernel_launches_per_call']:.0f} {unit}) · with the AFD "
                     f"{full['total_us_per_call'] / 1e3:.2f} ms ({full['kernel_launches_per_call']:.0f} {unit}) · "
                     f"AFD share of the forward {100 * prof['afd_share_of_forward']:.1f}%"]
        sections.append((f"## {backbone}", intro, None, []))
        for part in ("deployed_forward", "afd_module"):
            if part in prof:
                table = prof[part]
                sections.append((f"### {part.replace('_', ' ')} (top {top} of {len(table['rows'])})", [], columns,
                                 table["rows"][:top]))
    return format_markdown(result, f"Profile of one deployed forward ({result['device']})", facts, sections)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on GPU, 8 on CPU")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                   help="autocast dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    p.add_argument("--width", default="small", help="AFD width preset (the shipped Lite0 checkpoint's: small = 8)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", required=True, help="output stem: writes STEM.json and STEM.md")
    p.add_argument("--rows", default=None, help="JSON Lines file the tables are appended to as they are profiled "
                                                "(default STEM.jsonl, started afresh)")
    p.add_argument("--run", default=None, help="the run's name in --rows (default: STEM's name)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    batch = a.batch or (256 if gpu else 8)
    dtype = getattr(torch, a.dtype or ("bfloat16" if gpu else "float32"))
    stem = Path(a.out)
    rows = Path(a.rows) if a.rows else stem.with_suffix(".jsonl")
    run = a.run or stem.name
    rec = Recorder(rows, run, "profile", fresh=not a.rows)
    rec.write("meta", **run_meta(device, batch=batch, dtype=str(dtype).removeprefix("torch."), width=a.width,
                                 iters=a.iters, top=a.top))
    for b in a.backbones:
        profile_backbone(b, device, batch, dtype, a.iters, a.width, a.warmup,
                         emit=lambda part, table, b=b: rec.write("table", backbone=b, part=part, table=table))
    rec.write("end")
    result = result_from_records(rec.records)
    text = format_markdown_profile(result, a.top)
    write_result(result, stem.with_suffix(".json"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
