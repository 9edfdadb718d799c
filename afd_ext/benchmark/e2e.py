"""End-to-end throughput: the classifier alone vs. with the AFD in each of its forms.

``run_e2e(device)`` times, per backbone and batch size, on uint8 (B,3,224,224) crops
(normalization included, channels_last):

    classifier            the classifier alone (``use_afd=False``)
    afd_train             AFD in training form (three-branch RepConvs), eager
    afd_deploy_reference  ``deploy("reference")``: re-parameterized AFD, reference ops
    afd_deploy_fused      ``deploy()``: re-parameterized + fused torch.ops.afd kernels
    afd_compile           ``torch.compile`` of the deployed model (skipped on CPU unless
                          ``compile=True``: compiling there takes minutes; the row says so)
    afd_cuda_graphs       the deployed model replayed as CUDA graphs
                          (``torch.compile(mode="reduce-overhead")``; CUDA only)
    classifier_compile,   the classifier alone, compiled / as CUDA graphs: the baselines of
    classifier_cuda_graphs  the two rows above
    decode_included       JPEG bytes -> ``Pipeline.predict_bytes`` (decode, resize, crop,
                          deployed model, softmax/top-5)

On GPU each runs in float32 and under bfloat16 autocast. Each AFD row's ``vs_classifier`` is
its images/s over its baseline's in the same run (the classifier alone, eager / compiled / as
CUDA graphs, same batch and dtype). Latency is per batch
(``time.perf_counter``, ``torch.cuda.synchronize`` on GPU, warm-up excluded): the median and
95th percentile of repeated runs; images/s = batch / median. EfficientNet-Lite0 has its real
ImageNet weights; ResNet-50 (torchvision) random ones (AFD with 64 channels, act relu). The
AFD weights are random (timing does not depend on them).

Also reported: parameters and FLOPs of the AFD (training form and deployed) for each width
preset against the classifier's, at 224x224, counted with
``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of conv / matmul /
linear ops; elementwise ops are not counted; the deployed form is counted on the reference
path, which computes the same convolutions and linear layers as the fused kernels).

Every row is written as it is measured: appended, one JSON line, and flushed to the disk
(``rows_path``; default ``$AFD_BENCH_ROWS``, else the JSON's stem + ``.jsonl``), so a run cut short
keeps what it measured; the JSON + Markdown summary is built from those records at the end
(``result_from_records``; ``python bench/session.py rebuild ROWS.jsonl`` for a run that was cut).
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .utils import git_commit

CONFIGS = ("classifier", "afd_train", "afd_deploy_reference", "afd_deploy_fused", "afd_compile", "decode_included",
           "classifier_compile", "afd_cuda_graphs", "classifier_cuda_graphs")
#: config -> the classifier-alone config its ratio is taken against
BASELINES = {"afd_train": "classifier", "afd_deploy_reference": "classifier", "afd_deploy_fused": "classifier",
             "decode_included": "classifier", "afd_compile": "classifier_compile",
             "afd_cuda_graphs": "classifier_cuda_graphs"}
COMPILE_MODES = {"afd_compile": "default", "classifier_compile": "default", "afd_cuda_graphs": "reduce-overhead",
                 "classifier_cuda_graphs": "reduce-overhead"}
BACKBONES = {"efficientnet_lite0": (32, "relu6"), "resnet50": (64, "relu")}


# -- rows as they are measured (JSON Lines) --------------------------------------------------------

def append_record(path, record: dict) -> None:
    """Append ``record`` as one JSON line and push it to the disk before returning: a process killed
    afterwards (a time-out) has lost nothing it measured."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_runs(path) -> dict:
    """{run name: [records]} of a JSON Lines file that several runs append to. A run's records are
    those from its last ``meta`` record on (a run started again replaces the earlier one); a
    last line cut in the middle (a kill mid-write) is skipped."""
    runs: dict = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = rec.get("run")
        if rec.get("record") == "meta":
            runs[name] = []
        runs.setdefault(name, []).append(rec)
    return runs


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("run", "source", "record")}


class _Recorder:
    """Writes one run's records (meta first, then each row as it is measured) to a JSON Lines file."""

    def __init__(self, rows_path, json_path, run: Optional[str], default_run: str, meta: dict):
        path = rows_path or os.environ.get("AFD_BENCH_ROWS") or (Path(json_path).with_suffix(".jsonl")
                                                                  if json_path else None)
        self.path = Path(path) if path else None
        self.run = run or (Path(json_path).stem if json_path else default_run)
        self.records: list = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not (rows_path or os.environ.get("AFD_BENCH_ROWS")) and self.path.exists():
                self.path.unlink()  # a file of this run's own: start it afresh
        self.write("meta", meta)

    def write(self, record: str, data: dict) -> None:
        rec = {"run": self.run, "source": "e2e", "record": record, **data}
        self.records.append(rec)
        if self.path is not None:
            append_record(self.path, rec)


def result_from_records(records: Sequence[dict]) -> dict:
    """The JSON summary of one e2e run from its records (``read_runs``): meta, rows with their
    ratios, FLOPs if counted; ``complete`` False when the run did not reach its end."""
    meta = next((_strip(r) for r in records if r.get("record") == "meta"), {})
    rows = [_strip(r) for r in records if r.get("record") == "row"]
    flops = [_strip(r) for r in records if r.get("record") == "flops"]
    complete = any(r.get("record") == "end" for r in records)
    if not meta.get("interleaved"):
        add_ratios(rows)
    return {**meta, "complete": complete, "rows": rows, "flops": flops}


def build_model(backbone: str, width="small", seed: int = 0):
    """AFDClassifier (training form, eval mode, CPU) with a random non-trivial AFD."""
    from .models import create_model
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; bench knows {sorted(BACKBONES)}")
    # ResNet-50's ImageNet weights are a download: its timings do not depend on them.
    model = create_model(backbone, pretrained=backbone != "resnet50", afd={"width": width})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained module has a non-zero last RepConv
        for p in model.afd.fe.last.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _variant(model, config: str):
    m = copy.deepcopy(model)
    if config.startswith("classifier"):
        m.use_afd = False
    elif config == "afd_deploy_reference":
        m.deploy("reference")
    elif config in ("afd_deploy_fused", "afd_compile", "afd_cuda_graphs", "decode_included"):
        m.deploy()
    return m.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, iters: Optional[int],
            budget_s: float) -> tuple[list[float], float]:
    """(per-call seconds of the timed runs, seconds of the first warm-up call).
    ``iters=None``: at least 3 runs, then more until ``budget_s`` is spent (at most 100)."""
    first = None
    for i in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if first is None:
            first = time.perf_counter() - t0
    times: list[float] = []
    n_min = iters if iters is not None else 3
    n_max = iters if iters is not None else 100
    start = time.perf_counter()
    while len(times) < n_max and (len(times) < n_min or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, first


def _percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _jpeg_batch(n: int, seed: int = 0, size=(375, 500), quality: int = 75) -> list[bytes]:
    """n distinct photo-like JPEGs (smooth colour fields plus noise), ImageNet-typical size."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        ph = rng.uniform(0, 6.3, size=3)
        img = np.stack([127 + 100 * np.sin(f[c, 0] * yy + f[c, 1] * xx + ph[c]) for c in range(3)], -1)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


# -- FLOPs and parameters -------------------------------------------------------------------------

def _flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(backbones: Sequence[str] = tuple(BACKBONES), widths: Sequence[str] = ("tiny", "small", "base"),
                size: int = 224) -> list[dict]:
    """Per backbone and width preset: AFD parameters and FLOPs (training form, deployed) vs the
    classifier's, one image at size x size."""
    from .modules import AFDModule
    rows = []
    x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    for backbone in backbones:
        base = build_model(backbone)
        cls_flops = _flops(lambda: base(x, use_afd=False))
        cls_params = _n_params(base.classifier)
        with torch.no_grad():
            feat, pixels = base.stem_features(x)
        channels, act = BACKBONES[backbone]
        for width in widths:
            afd = AFDModule(channels, width=width, act=act).eval()
            train_flops = _flops(lambda: afd(feat, pixels))
            train_params = _n_params(afd)
            afd.deploy("reference")
            dep_flops = _flops(lambda: afd(feat, pixels))
            dep_params = _n_params(afd)
            rows.append({
                "backbone": backbone, "width": width, "width_channels": afd.width, "size": size,
                "classifier_params": cls_params, "classifier_gflops": cls_flops / 1e9,
                "afd_params_train": train_params, "afd_params_deploy": dep_params,
                "afd_gflops_train": train_flops / 1e9, "afd_gflops_deploy": dep_flops / 1e9,
                "afd_params_pct": 100.0 * dep_params / cls_params,
                "afd_flops_pct_train": 100.0 * train_flops / cls_flops,
                "afd_flops_pct_deploy": 100.0 * dep_flops / cls_flops,
            })
    return rows


# -- the benchmark ------------------------------------------------------------------------------

def _meta(dev: torch.device, width, channels_last: bool, warmup, iters, **extra) -> dict:
    from .ops import current_backend
    return {"device": _device_name(dev), "device_type": dev.type, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "afd_backend": current_backend(dev), "threads": torch.get_num_threads(),
            "afd_width": width, "channels_last": channels_last, "warmup": warmup, "iters": iters, **extra}


def run_e2e(device: str = "cpu", json_path: Optional[str] = None, batches: Optional[Sequence[int]] = None,
            backbones: Sequence[str] = ("efficientnet_lite0", "resnet50"), warmup: Optional[int] = None,
            iters: Optional[int] = None, compile: Optional[bool] = None, dtypes: Optional[Sequence[str]] = None,
            configs: Sequence[str] = CONFIGS, width="small", flops: bool = True, budget_s: Optional[float] = None,
            channels_last: bool = True, threads: Optional[int] = None, verbose: bool = True,
            rows_path: Optional[str] = None, run: Optional[str] = None) -> dict:
    """Run the end-to-end benchmark; returns the result dict and, with ``json_path``, writes it
    as JSON plus a Markdown table beside it (same stem, ``.md``). Each row is appended to
    ``rows_path`` (JSON Lines, see the module's doc) as it is measured, under the name ``run``
    (default: the JSON's stem, else ``e2e_<device>``).

    batches: default CPU [1, 32], GPU [1, 32, 256]. warmup: untimed calls (CPU 1, GPU 5).
    iters: timed calls per row (default: >= 3, more while the row's budget lasts: CPU 2 s,
    GPU 1 s). compile: run the ``afd_compile`` rows (default: on GPU only; skipped rows say
    why). dtypes: default CPU ['float32'], GPU ['float32', 'bfloat16'] (autocast).
    threads: torch intra-op threads for the run (default: leave torch's setting); recorded.
    """
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_e2e(device, json_path, batches, backbones, warmup, iters, compile, dtypes, configs, width,
                           flops, budget_s, channels_last, None, verbose, rows_path, run)
        finally:
            torch.set_num_threads(before)
    from .pipeline import Pipeline
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run_e2e(device='cuda'): no CUDA device is available")
    gpu = dev.type == "cuda"
    batches = list(batches) if batches else ([1, 32, 256] if gpu else [1, 32])
    warmup = warmup if warmup is not None else (5 if gpu else 1)
    budget_s = budget_s if budget_s is not None else (1.0 if gpu else 2.0)
    compile = gpu if compile is None else compile
    dtypes = list(dtypes) if dtypes else (["float32", "bfloat16"] if gpu else ["float32"])
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown configs {sorted(unknown)}; choose from {CONFIGS}")

    def log(msg):
        if verbose:
            print(msg, flush=True)

    rec = _Recorder(rows_path, json_path, run, f"e2e_{dev.type}", _meta(dev, width, channels_last, warmup, iters))

    def emit(row):
        rec.write("row", row)
    for backbone in backbones:
        base = build_model(backbone, width=width)
        for config in configs:
            model = None
            try:
                if config.endswith("cuda_graphs") and not gpu:
                    raise _Skip("CUDA graphs need a CUDA device")
                if config in COMPILE_MODES and not compile:
                    raise _Skip("torch.compile not run on CPU by default (compiling takes minutes there); "
                                "pass compile=True")
                model = _variant(base, config).to(dev)
                if channels_last:
                    model = model.to(memory_format=torch.channels_last)
            except _Skip as s:
                for dtype in dtypes:
                    for b in batches:
                        emit(_row(config, backbone, b, dtype, dev, skipped=str(s)))
                        log(f"{backbone:18s} {config:22s} b={b:<4d} {dtype:9s} skipped: {s}")
                continue
            fn_model = torch.compile(model, mode=COMPILE_MODES[config]) if config in COMPILE_MODES else model
            pipe = None
            if config == "decode_included":
                pipe = Pipeline(model, device=dev, dtype="float32", channels_last=channels_last, deploy=False)
            for dtype in dtypes:
                torch_dtype = getattr(torch, dtype)
                afd = getattr(model, "afd", None)
                if afd is not None and afd.deployed:  # as Pipeline deploys: op weights cast once to the dtype
                    afd.deploy(afd.impl, torch_dtype if torch_dtype != torch.float32 else None)
                if pipe is not None:
                    pipe.dtype = torch_dtype
                for b in batches:
                    try:
                        if pipe is not None:
                            datas = _jpeg_batch(b)
                            def fn(d=datas, n=b, p=pipe):
                                return p.predict_bytes(d, batch_size=n, topk=5)
                        else:
                            x = torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8, device=dev)
                            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x

                            def fn(x=x, m=fn_model, dt=torch_dtype):
                                with torch.inference_mode(), (torch.autocast(dev.type, dtype=dt)
                                                              if dt != torch.float32 else contextlib.nullcontext()):
                                    return m(x)
                        times, first = time_fn(fn, dev, warmup, iters, budget_s)
                        med = statistics.median(times)
                        row = _row(config, backbone, b, dtype, dev, images_per_s=b / med,
                                   latency_ms_median=1e3 * med, latency_ms_p95=1e3 * _percentile(times, 0.95),
                                   runs=len(times), first_call_s=first)
                        if config in COMPILE_MODES:
                            row["note"] = "first_call_s includes compilation"
                        if config == "decode_included":
                            row["note"] = f"{pipe.decoder} decode of {b} JPEGs 500x375 q75 + resize/crop + model"
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        row = _row(config, backbone, b, dtype, dev, skipped="out of GPU memory")
                    except Exception as exc:  # a failing config is recorded, not fatal
                        row = _row(config, backbone, b, dtype, dev, error=f"{type(exc).__name__}: {exc}"[:300])
                    emit(row)
                    if row.get("images_per_s"):
                        log(f"{backbone:18s} {config:22s} b={b:<4d} {dtype:9s} {row['images_per_s']:9.1f} img/s  "
                            f"median {row['latency_ms_median']:9.2f} ms  p95 {row['latency_ms_p95']:9.2f} ms  "
                            f"({row['runs']} runs)")
                    else:
                        log(f"{backbone:18s} {config:22s} b={b:<4d} {dtype:9s} "
                            f"{row.get('skipped') or row.get('error')}")
            del model, fn_model, pipe
            if gpu:
                torch.cuda.empty_cache()

    for f in count_flops(backbones) if flops else []:
        rec.write("flops", f)
    rec.write("end", {})
    result = result_from_records(rec.records)
    if json_path:
        write_result(result, json_path)
        log(f"wrote {json_path} and {Path(json_path).with_suffix('.md')}")
    return result


def run_interleaved(device: str = "cpu", json_path: Optional[str] = None,
                    configs: Sequence[str] = ("classifier", "afd_deploy_fused"),
                    backbones: Sequence[str] = ("efficientnet_lite0", "resnet50"), batches: Sequence[int] = (1, 32),
                    threads: Optional[Sequence[int]] = (1, 2), repeats: int = 7, calls: int = 3, warmup: int = 1,
                    width="small", channels_last: bool = True, verbose: bool = True, dtype: Optional[str] = None,
                    rows_path: Optional[str] = None, run: Optional[str] = None) -> dict:
    """A/B of ``configs`` that the machine's drift cannot bias: per (threads, backbone, batch) the
    configs take turns, ``repeats`` times (the order reversed every other turn), each turn timing
    ``calls`` calls of each (after ``warmup`` untimed ones per config). A config's latency is the
    median over turns of its turn medians; ``vs_first`` is the median over turns of the turn's
    ratio of the first config's latency to this one's (> 1: faster than the first config, which is
    the classifier alone by default), with its min..max over turns as the spread.
    dtype: the autocast dtype (default: bfloat16 on CUDA, float32 on CPU); the deployed AFD's op
    weights are cast to it once, as ``run_e2e`` and the Pipeline do. threads: torch intra-op
    thread counts, one A/B each (None: leave torch's setting, one pass). Each (threads, backbone,
    batch) group's rows are appended to ``rows_path`` as soon as its turns end (the module's doc).
    Rows use ``run_e2e``'s schema plus ``threads``, ``vs_first`` and ``vs_first_min/max``."""
    if repeats < 1 or calls < 1:
        raise ValueError(f"repeats and calls must be >= 1, got {repeats} and {calls}")
    unknown = set(configs) - {"classifier", "afd_train", "afd_deploy_reference", "afd_deploy_fused"}
    if unknown:
        raise ValueError(f"run_interleaved times model configs only; not {sorted(unknown)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run_interleaved(device='cuda'): no CUDA device is available")
    dtype = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    torch_dtype = getattr(torch, dtype, None)
    if torch_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    before = torch.get_num_threads()
    thread_counts = list(threads) if threads else [before]
    meta = _meta(dev, width, channels_last, warmup, calls, dtype=dtype,
                 interleaved={"configs": list(configs), "repeats": repeats, "calls_per_turn": calls})
    meta["threads"] = thread_counts
    if dev.type == "cpu":
        meta["device"] = f"cpu ({os.cpu_count()} cores)"
    rec = _Recorder(rows_path, json_path, run, f"e2e_{dev.type}_interleaved", meta)

    def log(msg):
        if verbose:
            print(msg, flush=True)
    amp = (lambda: torch.autocast(dev.type, dtype=torch_dtype)) if torch_dtype != torch.float32 else (
        contextlib.nullcontext)
    try:
        for backbone in backbones:
            base = build_model(backbone, width=width)
            models = {}
            for config in configs:
                m = _variant(base, config).to(dev)
                afd = getattr(m, "afd", None)
                if afd is not None and afd.deployed and torch_dtype != torch.float32:
                    afd.deploy(afd.impl, torch_dtype)  # as run_e2e and the Pipeline: op weights cast once
                models[config] = m.to(memory_format=torch.channels_last) if channels_last else m
            for n_threads in thread_counts:
                torch.set_num_threads(n_threads)
                for b in batches:
                    x = torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8, device=dev)
                    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x

                    def fn(m):
                        with torch.inference_mode(), amp():
                            return m(x)
                    for config in configs:
                        time_fn(lambda m=models[config]: fn(m), dev, warmup, 1, 0.0)
                    turns = {c: [] for c in configs}
                    for r in range(repeats):
                        for config in (configs if r % 2 == 0 else tuple(reversed(configs))):
                            times, _ = time_fn(lambda m=models[config]: fn(m), dev, 0, calls, 0.0)
                            turns[config].append(statistics.median(times))
                    first = turns[configs[0]]
                    for config in configs:
                        med = statistics.median(turns[config])
                        ratios = [f / t for f, t in zip(first, turns[config])]
                        row = _row(config, backbone, b, dtype, dev, images_per_s=b / med,
                                   latency_ms_median=1e3 * med, latency_ms_p95=1e3 * _percentile(turns[config], 0.95),
                                   runs=repeats * calls, threads=n_threads, vs_first=statistics.median(ratios),
                                   vs_first_min=min(ratios), vs_first_max=max(ratios))
                        rec.write("row", row)
                        log(f"{backbone:18s} {config:22s} b={b:<4d} threads={n_threads} {dtype:9s} "
                            f"{row['images_per_s']:8.1f} img/s  median {row['latency_ms_median']:9.2f} ms  vs "
                            f"{configs[0]} {row['vs_first']:.3f} "
                            f"({row['vs_first_min']:.3f}..{row['vs_first_max']:.3f})")
            del models, base
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(before)
    rec.write("end", {})
    result = result_from_records(rec.records)
    if json_path:
        write_result(result, json_path)
        log(f"wrote {json_path} and {Path(json_path).with_suffix('.md')}")
    return result


class _Skip(Exception):
    pass


def add_ratios(rows: list) -> list:
    """Each AFD row's ``vs_classifier``: its images/s over its baseline's (BASELINES), same backbone,
    batch and dtype, measured in the same run; None where either was not measured."""
    speed = {(r["config"], r["backbone"], r["batch"], r["dtype"]): r.get("images_per_s") for r in rows}
    for r in rows:
        base = BASELINES.get(r["config"])
        ref = speed.get((base, r["backbone"], r["batch"], r["dtype"])) if base else None
        r["vs_classifier"] = r["images_per_s"] / ref if (ref and r.get("images_per_s")) else None
    return rows


def _row(config, backbone, batch, dtype, dev, **kw) -> dict:
    row = {"config": config, "backbone": backbone, "batch": batch, "dtype": dtype, "device": dev.type,
           "images_per_s": None, "latency_ms_median": None, "latency_ms_p95": None}
    row.update(kw)
    return row


def format_markdown(result: dict) -> str:
    lines = [f"# End-to-end benchmark: {result['device']}", "",
             f"torch {result['torch']}, CUDA {result['cuda']}, afd backend `{result['afd_backend']}`, "
             f"{result['date']}, commit {result['commit'] or 'n/a'}; AFD width `{result['afd_width']}`, "
             f"uint8 224x224 inputs, channels_last={result['channels_last']}.", ""]
    if result.get("complete") is False:
        lines += ["**Cut short**: the rows below are those measured before the run ended (rebuilt from its "
                  "JSON Lines records).", ""]
    inter = result.get("interleaved")
    if inter:
        first = inter["configs"][0]
        lines += [f"Interleaved: the configs take turns, {inter['repeats']} turns of {inter['calls_per_turn']} "
                  f"calls each (order reversed every other turn); latency = median of the turn medians; "
                  f"x {first} = median over turns of ({first} latency / this latency), min..max over turns.", "",
                  f"| backbone | config | batch | dtype | threads | images/s | median ms | x {first} | min..max |",
                  "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        for r in result["rows"]:
            lines.append(f"| {r['backbone']} | {r['config']} | {r['batch']} | {r['dtype']} | {r['threads']} | "
                         f"{r['images_per_s']:.1f} | {r['latency_ms_median']:.2f} | {r['vs_first']:.3f} | "
                         f"{r['vs_first_min']:.3f}..{r['vs_first_max']:.3f} |")
        return "\n".join(lines) + "\n"
    lines += ["| backbone | config | batch | dtype | images/s | x classifier | median ms | p95 ms | runs | note |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        if r.get("images_per_s"):
            ratio = f"{r['vs_classifier']:.3f}" if r.get("vs_classifier") else "-"
            lines.append(f"| {r['backbone']} | {r['config']} | {r['batch']} | {r['dtype']} | "
                         f"{r['images_per_s']:.1f} | {ratio} | {r['latency_ms_median']:.2f} | "
                         f"{r['latency_ms_p95']:.2f} | {r['runs']} | {r.get('note', '')} |")
        else:
            why = r.get("skipped") and f"skipped: {r['skipped']}" or f"error: {r.get('error')}"
            lines.append(f"| {r['backbone']} | {r['config']} | {r['batch']} | {r['dtype']} | - | - | - | - | - | "
                         f"{why} |")
    if result.get("flops"):
        lines += ["", "## AFD cost at 224x224 (one image)", "",
                  "| backbone | width | AFD params (train / deploy) | AFD GFLOPs (train / deploy) | "
                  "classifier params | classifier GFLOPs | AFD / classifier FLOPs (deploy) |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for f in result["flops"]:
            lines.append(f"| {f['backbone']} | {f['width']} ({f['width_channels']}) | "
                         f"{f['afd_params_train']:,} / {f['afd_params_deploy']:,} | "
                         f"{f['afd_gflops_train']:.3f} / {f['afd_gflops_deploy']:.3f} | "
                         f"{f['classifier_params']:,} | {f['classifier_gflops']:.3f} | "
                         f"{f['afd_flops_pct_deploy']:.1f}% |")
        lines += ["", "FLOPs: torch.utils.flop_counter.FlopCounterMode (2 x MACs of conv/matmul/linear; "
                      "elementwise ops not counted)."]
    return "\n".join(lines) + "\n"


def write_result(result: dict, json_path) -> None:
    from .utils import atomic_write_bytes, write_json
    p = Path(json_path)
    write_json(p, result)
    atomic_write_bytes(p.with_suffix(".md"), format_markdown(result).encode())
