"""Profile one deployed forward (torch.profiler): which kernels run, how often, for how long.

    python tools/profile_forward.py --device cuda --batch 256 --dtype bfloat16 \
        --out bench/results/profile_cuda            # writes profile_cuda.json + .md

Per backbone (default EfficientNet-Lite0 and ResNet-50, the e2e benchmark's models: the AFD at
the shipped width, deployed with the fused ops, channels_last, uint8 224x224 input under
autocast), three profiles of ``--iters`` calls after warm-up: the classifier alone, the whole
deployed forward, and the AFD module alone on the stem's output. Each table: kernel (device
kernels on GPU, operators on CPU), calls per forward, self time per forward, share of the
profile's total; the totals give the AFD's cost against the classifier's.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from afd_ext.e2e_benchmark import build_model
from afd_ext.utils import atomic_write_bytes, git_commit, write_json


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
                     width: str) -> dict:
    model = build_model(backbone, width=width).deploy().to(device).to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    amp = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    with torch.inference_mode(), amp:
        feat, pixels = model.stem_features(x)
        out = {
            "classifier": profile_table(lambda: model(x, use_afd=False), device, iters),
            "deployed_forward": profile_table(lambda: model(x), device, iters),
            "afd_module": profile_table(lambda: model.afd(feat, pixels), device, iters),
        }
    out["afd_share_of_forward"] = 1.0 - out["classifier"]["total_us_per_call"] / out["deployed_forward"][
        "total_us_per_call"]
    return out


def format_markdown(result: dict, top: int) -> str:
    lines = [f"# Profile of one deployed forward ({result['device']})", "",
             f"torch {result['torch']} · CUDA {result['cuda']} · {result['date']} · commit {result['commit']} · "
             f"batch {result['batch']} · {result['dtype']}{' autocast' if result['dtype'] != 'float32' else ''} · "
             f"channels_last uint8 input · AFD width "
             f"`{result['width']}`, deployed, fused ops · {result['iters']} profiled calls after warm-up; times "
             f"are {'device (kernel)' if result['device_type'] == 'cuda' else 'CPU self'} time per call.", ""]
    unit = "kernels" if result["device_type"] == "cuda" else "op calls"
    for backbone, prof in result["backbones"].items():
        cls, full = prof["classifier"], prof["deployed_forward"]
        lines += [f"## {backbone}", "",
                  f"classifier alone {cls['total_us_per_call'] / 1e3:.2f} ms ({cls['kernel_launches_per_call']:.0f} "
                  f"{unit}) · with the AFD {full['total_us_per_call'] / 1e3:.2f} ms "
                  f"({full['kernel_launches_per_call']:.0f} {unit}) · AFD share of the forward "
                  f"{100 * prof['afd_share_of_forward']:.1f}%", ""]
        for part in ("deployed_forward", "afd_module"):
            table = prof[part]
            lines += [f"### {part.replace('_', ' ')} (top {top} of {len(table['rows'])})", "",
                      "| kernel | count / call | us / call | share |", "| --- | ---: | ---: | ---: |"]
            for r in table["rows"][:top]:
                name = r["kernel"].replace("|", "\\|")
                name = name if len(name) <= 90 else name[:87] + "..."
                lines.append(f"| `{name}` | {r['calls_per_call']:g} | {r['us_per_call']:.1f} | "
                             f"{100 * r['share']:.1f}% |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on GPU, 8 on CPU")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                   help="autocast dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    p.add_argument("--width", default="small", help="AFD width preset (the shipped Lite0 checkpoint's: small = 8)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", required=True, help="output stem: writes STEM.json and STEM.md")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    batch = a.batch or (256 if gpu else 8)
    dtype = getattr(torch, a.dtype or ("bfloat16" if gpu else "float32"))
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else "cpu", "device_type": device.type,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), "batch": batch, "dtype": str(dtype).removeprefix("torch."), "width": a.width,
        "iters": a.iters,
        "backbones": {b: profile_backbone(b, device, batch, dtype, a.iters, a.width) for b in a.backbones},
    }
    stem = Path(a.out)
    write_json(stem.with_suffix(".json"), result)
    text = format_markdown(result, a.top)
    atomic_write_bytes(stem.with_suffix(".md"), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
