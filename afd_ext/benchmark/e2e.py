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
CUDA graphs, same batch and dtype). Latency is per batch (``timing.time_calls`` with the wall
clock: ``time.perf_counter``, ``torch.cuda.synchronize`` on GPU, warm-up excluded): the median and
95th percentile of repeated runs; images/s = batch / median. EfficientNet-Lite0 has its real
ImageNet weights; ResNet-50 (torchvision) random ones. Each AFD is built for the stem its model's
adapter describes (width, activation). The AFD weights are random (timing does not depend on them).

Also reported: parameters and FLOPs of the AFD (training form and deployed) for each width
preset against the classifier's, at 224x224 (``flops.count_flops``).

Every row is written as it is measured (``results.Recorder``: appended, one JSON line, and
flushed to the disk; ``rows_path``, default ``$AFD_BENCH_ROWS``, else the JSON's stem + ``.jsonl``),
so a run cut short keeps what it measured; the JSON + Markdown summary is built from those records
at the end (``result_from_records``; ``python bench/session.py rebuild ROWS.jsonl`` for a run that
was cut).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
from pathlib import Path
from typing import Optional, Sequence

import torch

from .flops import NOTE as FLOPS_NOTE
from .flops import count_flops, n_params
from .results import (Recorder, add_ratios, device_name, fmt, format_markdown, run_meta, summarize,
                      write_result)
from .timing import percentile, time_calls

CONFIGS = ("classifier", "afd_train", "afd_deploy_reference", "afd_deploy_fused", "afd_compile", "decode_included",
           "classifier_compile", "afd_cuda_graphs", "classifier_cuda_graphs")
#: config -> the classifier-alone config its ratio is taken against
BASELINES = {"afd_train": "classifier", "afd_deploy_reference": "classifier", "afd_deploy_fused": "classifier",
             "decode_included": "classifier", "afd_compile": "classifier_compile",
             "afd_cuda_graphs": "classifier_cuda_graphs"}
COMPILE_MODES = {"afd_compile": "default", "classifier_compile": "default", "afd_cuda_graphs": "reduce-overhead",
                 "classifier_cuda_graphs": "reduce-overhead"}
#: The backbones timed by default (any name of ``afd_ext.list_models()`` works); the stem's width
#: and activation come from the model's adapter.
BACKBONES = ("efficientnet_lite0", "resnet50")


def _recorder(rows_path, json_path, run: Optional[str], default_run: str, meta: dict) -> Recorder:
    """The run's records: to ``rows_path``, else $AFD_BENCH_ROWS (both shared files: appended to),
    else the JSON's stem + ``.jsonl`` (the run's own file: started afresh)."""
    shared = rows_path or os.environ.get("AFD_BENCH_ROWS")
    path = shared or (Path(json_path).with_suffix(".jsonl") if json_path else None)
    rec = Recorder(path, run or (Path(json_path).stem if json_path else default_run), "e2e", fresh=not shared)
    rec.write("meta", **meta)
    return rec


def add_e2e_ratios(rows: list) -> list:
    """Each AFD row's ``vs_classifier``: its images/s over its baseline's (BASELINES), same backbone,
    batch and dtype, measured in the same run; None where either was not measured."""
    return add_ratios(rows, "config", ("backbone", "batch", "dtype"), {"vs_classifier": BASELINES.get},
                      "images_per_s")


def result_from_records(records: Sequence[dict]) -> dict:
    """The JSON summary of one e2e run from its records (``results.read_runs``): meta, rows with
    their ratios, FLOPs if counted; ``complete`` False when the run did not reach its end."""
    result = summarize(records, ("row", "flops"))
    result["flops"] = result.pop("flopss")
    if not result.get("interleaved"):
        add_e2e_ratios(result["rows"])
    return result


def build_model(backbone: str, width="small", seed: int = 0):
    """AFDClassifier (training form, eval mode, CPU) with a random non-trivial AFD."""
    from ..models import create_model
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


# -- FLOPs and parameters -------------------------------------------------------------------------

def afd_cost(backbones: Sequence[str] = BACKBONES, widths: Sequence[str] = ("tiny", "small", "base"),
             size: int = 224) -> list[dict]:
    """Per backbone and width preset: AFD parameters and FLOPs (training form, deployed) vs the
    classifier's, one image at size x size (``flops.count_flops``; the AFD built for the stem the
    model's adapter describes)."""
    from ..modules import AFDModule
    rows = []
    x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    for backbone in backbones:
        base = build_model(backbone)
        cls_flops = count_flops(lambda: base(x, use_afd=False))
        cls_params = n_params(base.classifier)
        with torch.no_grad():
            feat, pixels = base.stem_features(x)
        for width in widths:
            afd = AFDModule(base.adapter.channels, width=width, act=base.adapter.act).eval()
            train_flops = count_flops(lambda: afd(feat, pixels))
            train_params = n_params(afd)
            afd.deploy("reference")
            dep_flops = count_flops(lambda: afd(feat, pixels))
            dep_params = n_params(afd)
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


def _meta(dev: torch.device, width, channels_last: bool, warmup, iters, **extra) -> dict:
    from ..ops import current_backend
    return run_meta(dev, afd_backend=current_backend(dev), afd_width=width, channels_last=channels_last,
                    warmup=warmup, iters=iters, **extra)


def _finish(rec: Recorder, json_path, log) -> dict:
    rec.write("end")
    result = result_from_records(rec.records)
    if json_path:
        write_result(result, json_path, e2e_markdown(result))
        log(f"wrote {json_path} and {Path(json_path).with_suffix('.md')}")
    return result


# -- the benchmark ------------------------------------------------------------------------------

def run_e2e(device: str = "cpu", json_path: Optional[str] = None, batches: Optional[Sequence[int]] = None,
            backbones: Sequence[str] = BACKBONES, warmup: Optional[int] = None,
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
    from ..inference.pipeline import Pipeline
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

    rec = _recorder(rows_path, json_path, run, f"e2e_{dev.type}", _meta(dev, width, channels_last, warmup, iters))

    def emit(row):
        rec.write("row", **row)
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
                        t = time_calls(fn, (), dev, rounds=iters, warmup=warmup, clock="wall", budget_s=budget_s)
                        row = _row(config, backbone, b, dtype, dev, images_per_s=b / t.median,
                                   latency_ms_median=1e3 * t.median, latency_ms_p95=1e3 * t.percentile(0.95),
                                   runs=len(t.times), first_call_s=t.first_s)
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

    for f in afd_cost(backbones) if flops else []:
        rec.write("flops", **f)
    return _finish(rec, json_path, log)


def run_interleaved(device: str = "cpu", json_path: Optional[str] = None,
                    configs: Sequence[str] = ("classifier", "afd_deploy_fused"),
                    backbones: Sequence[str] = BACKBONES, batches: Sequence[int] = (1, 32),
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
    meta["device"] = device_name(dev, threads=False)
    rec = _recorder(rows_path, json_path, run, f"e2e_{dev.type}_interleaved", meta)

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
                        time_calls(fn, (models[config],), dev, rounds=1, warmup=warmup, clock="wall")
                    turns = {c: [] for c in configs}
                    for r in range(repeats):
                        for config in (configs if r % 2 == 0 else tuple(reversed(configs))):
                            t = time_calls(fn, (models[config],), dev, rounds=calls, warmup=0, clock="wall")
                            turns[config].append(t.median)
                    first = turns[configs[0]]
                    for config in configs:
                        med = statistics.median(turns[config])
                        ratios = [f / t for f, t in zip(first, turns[config])]
                        row = _row(config, backbone, b, dtype, dev, images_per_s=b / med,
                                   latency_ms_median=1e3 * med, latency_ms_p95=1e3 * percentile(turns[config], 0.95),
                                   runs=repeats * calls, threads=n_threads, vs_first=statistics.median(ratios),
                                   vs_first_min=min(ratios), vs_first_max=max(ratios))
                        rec.write("row", **row)
                        log(f"{backbone:18s} {config:22s} b={b:<4d} threads={n_threads} {dtype:9s} "
                            f"{row['images_per_s']:8.1f} img/s  median {row['latency_ms_median']:9.2f} ms  vs "
                            f"{configs[0]} {row['vs_first']:.3f} "
                            f"({row['vs_first_min']:.3f}..{row['vs_first_max']:.3f})")
            del models, base
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(before)
    return _finish(rec, json_path, log)


class _Skip(Exception):
    pass


def _row(config, backbone, batch, dtype, dev, **kw) -> dict:
    row = {"config": config, "backbone": backbone, "batch": batch, "dtype": dtype, "device": dev.type,
           "images_per_s": None, "latency_ms_median": None, "latency_ms_p95": None}
    row.update(kw)
    return row


def _e2e_cell(r: dict, key: str, spec: str) -> str:
    return fmt(r.get(key), spec) if r.get("images_per_s") else "-"


def e2e_markdown(result: dict) -> str:
    """The Markdown tables of an e2e run (``results.format_markdown``)."""
    facts = (f"torch {result['torch']}, CUDA {result['cuda']}, afd backend `{result['afd_backend']}`, "
             f"{result['date']}, commit {result['commit'] or 'n/a'}; AFD width `{result['afd_width']}`, "
             f"uint8 224x224 inputs, channels_last={result['channels_last']}.")
    title = f"End-to-end benchmark: {result['device']}"
    inter = result.get("interleaved")
    if inter:
        first = inter["configs"][0]
        intro = (f"Interleaved: the configs take turns, {inter['repeats']} turns of {inter['calls_per_turn']} "
                 f"calls each (order reversed every other turn); latency = median of the turn medians; "
                 f"x {first} = median over turns of ({first} latency / this latency), min..max over turns.")
        columns = [("backbone", False, lambda r: r["backbone"]), ("config", False, lambda r: r["config"]),
                   ("batch", True, lambda r: str(r["batch"])), ("dtype", False, lambda r: r["dtype"]),
                   ("threads", True, lambda r: str(r["threads"])),
                   ("images/s", True, lambda r: fmt(r["images_per_s"], ".1f")),
                   ("median ms", True, lambda r: fmt(r["latency_ms_median"], ".2f")),
                   (f"x {first}", True, lambda r: fmt(r["vs_first"], ".3f")),
                   ("min..max", False, lambda r: f"{fmt(r['vs_first_min'], '.3f')}..{fmt(r['vs_first_max'], '.3f')}")]
        return format_markdown(result, title, facts, [(None, [intro], columns, result["rows"])])

    def note(r):
        if r.get("images_per_s"):
            return r.get("note", "")
        return r.get("skipped") and f"skipped: {r['skipped']}" or f"error: {r.get('error')}"
    columns = [("backbone", False, lambda r: r["backbone"]), ("config", False, lambda r: r["config"]),
               ("batch", True, lambda r: str(r["batch"])), ("dtype", False, lambda r: r["dtype"]),
               ("images/s", True, lambda r: _e2e_cell(r, "images_per_s", ".1f")),
               ("x classifier", True, lambda r: _e2e_cell(r, "vs_classifier", ".3f")),
               ("median ms", True, lambda r: _e2e_cell(r, "latency_ms_median", ".2f")),
               ("p95 ms", True, lambda r: _e2e_cell(r, "latency_ms_p95", ".2f")),
               ("runs", True, lambda r: _e2e_cell(r, "runs", "")), ("note", False, note)]
    sections = [(None, [], columns, result["rows"])]
    if result.get("flops"):
        cost = [("backbone", False, lambda f: f["backbone"]),
                ("width", False, lambda f: f"{f['width']} ({f['width_channels']})"),
                ("AFD params (train / deploy)", True,
                 lambda f: f"{f['afd_params_train']:,} / {f['afd_params_deploy']:,}"),
                ("AFD GFLOPs (train / deploy)", True,
                 lambda f: f"{f['afd_gflops_train']:.3f} / {f['afd_gflops_deploy']:.3f}"),
                ("classifier params", True, lambda f: f"{f['classifier_params']:,}"),
                ("classifier GFLOPs", True, lambda f: f"{f['classifier_gflops']:.3f}"),
                ("AFD / classifier FLOPs (deploy)", True, lambda f: f"{f['afd_flops_pct_deploy']:.1f}%")]
        sections.append(("## AFD cost at 224x224 (one image)", [], cost, result["flops"]))
        sections.append((None, [FLOPS_NOTE], None, []))
    return format_markdown(result, title, facts, sections)
