"""Train the AFD module of a frozen classifier on any folders of photos (no labels needed).

Each step takes random crops, JPEG-compresses the same crops (quality drawn from a
list or range, optionally 1..N successive compressions; a share stays clean), and
minimizes  l1 * |AFD(stem(compressed)) - act(stem(clean))|  +  kl * KL(clean logits ||
de-drifted logits)  (+ ce * cross-entropy where labels exist). Runs on one process or
under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).

This module: the step (``build_training``, ``train_step``, the frozen classifier it runs, its profiler
ranges: afd_ext.train.phases) and the loop (``train``: processes, checkpoints, validation, logs). The
recipe, the data, the objective and the run folder are its neighbours: config, dataset, losses, run_folder.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import data
from .._version import __version__
from ..models import create_model
from ..models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ..utils import resolve_device, write_json
from .config import ARCHITECTURE_FIELDS, TrainConfig, classifier_precision
from .dataset import CompressedPairs, _Offset, split_files
from .lineage import init_architecture, init_grid, lineage_record
from .losses import _lr_at, afd_loss
from .phases import _phase
from .run_folder import (RUN_FILES, _check_resume, _csv_text, _recipe, _restart_log, csv_row, lock_output,
                         portable_path)


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; nothing of it was written."""


@torch.no_grad()
def held_out_top1(model, files: Sequence[Path], quality: int, limit: int) -> dict:
    """Top-1 at ``quality`` and on clean images, direct vs AFD, on held-out labelled images."""
    from ..evaluation import evaluate
    if not files:
        return {}
    r = evaluate(model, [str(f) for f in files[:limit]], qualities=[quality], progress=False, batch_size=50)
    q = r["qualities"][0]
    return {"n": r["n_images"], "clean_direct": r["clean"]["top1_direct"], "clean_afd": r["clean"]["top1_afd"],
            f"q{quality}_direct": q["top1_direct"], f"q{quality}_afd": q["top1_afd"]}


def _dist_info():
    if dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _param_digest(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _optimizer_tensors(opt) -> dict:
    out = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            out[f"train_state.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_optimizer_tensors(opt, tensors: dict) -> None:
    params = opt.param_groups[0]["params"]
    for key, v in tensors.items():
        if not key.startswith("train_state."):
            continue
        _, i, name = key.split(".", 2)
        p = params[int(i)]
        if name in ("exp_avg", "exp_avg_sq") and v.shape != p.shape:
            raise ValueError(f"optimizer state {key} has shape {tuple(v.shape)}, its weight {tuple(p.shape)}")
        opt.state[p][name] = v.to(p.device)


def train(cfg: TrainConfig, device: Optional[str] = None) -> dict:
    """Train and write ``<out>/afd.safetensors`` (+ .json, ``last.safetensors`` for --resume,
    ``train_log.jsonl``, ``train_summary.json``). Returns the summary."""
    cfg.validate()
    cfg = dataclasses.replace(cfg)  # --time-budget sets cfg.steps; leave the caller's config alone
    if cfg.init is not None:  # a fine-tune's module is its checkpoint's: the recipe records that, not the flags
        cfg = dataclasses.replace(cfg, **init_architecture(cfg.init, cfg.backbone))
    if cfg.grid is None:  # recorded resolved, like the architecture
        cfg = dataclasses.replace(cfg, grid=init_grid(cfg.init, cfg.backbone) if cfg.init is not None else "input")
    rank, world = _dist_info()
    device = resolve_device(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    train_files, held = split_files(cfg.data, cfg.holdout)
    # Files that cannot be images (special, empty, oversized, broken links) leave before the run;
    # those that fail to decode are met while drawing. Both are reported (log, summary, stderr).
    unreadable: dict[str, None] = {}  # "path: reason", in the order met
    problems = [(f, data.file_problem(f)) for f in train_files]
    unreadable.update((f"{f}: {why}", None) for f, why in problems if why)
    train_files = [f for f, why in problems if not why]
    if not train_files:
        raise ValueError("no training images left after the hold-out split" + (
            f" ({len(unreadable)} unreadable, e.g. {next(iter(unreadable))})" if unreadable else ""))
    with lock_output(out) if rank == 0 else contextlib.nullcontext():
        return _train_locked(cfg, device, rank, world, out, train_files, held, unreadable)


def _nonfinite_tensor(module) -> Optional[str]:
    """The name of the first weight or buffer of ``module`` holding NaN/Inf (one device sync)."""
    items = [(k, v) for k, v in module.state_dict().items() if v.is_floating_point()]
    if not items:
        return None
    ok = torch.stack([torch.isfinite(v).all() for _, v in items])
    if bool(ok.all()):
        return None
    return next(k for (k, _), good in zip(items, ok.tolist()) if not good)


@dataclasses.dataclass
class TrainingRun:
    """What a run builds before its first step (``build_training``); ``train_step`` runs one step of it."""
    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module          # the classifier + AFD as built (validation, checkpoints)
    afd: torch.nn.Module            # model.afd
    ddp: torch.nn.Module            # afd, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    loader: DataLoader
    autocast: Optional[torch.dtype]
    channels_last: bool
    memory_format: torch.memory_format
    world: int = 1
    step_model: Optional[torch.nn.Module] = None  # what the steps run (frozen_step_model(model))


# -- the frozen classifier of a training step: the same function, fewer operations ------------------

#: (conv, BatchNorm) attribute pairs of afd_ext's EfficientNet-Lite (backbones/efficientnet_lite.py):
#: each BatchNorm directly follows its conv, whose output nothing else reads.
_LITE_CONV_BN = {"EfficientNetLite": (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
                 "MBConvBlock": (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))}


@torch.no_grad()
def _fold_conv_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> torch.nn.Conv2d:
    """A frozen conv computing bn(conv(x)) for an eval-mode ``bn``: the BatchNorm's per-channel affine
    folded into the weights and bias. A stride-1, odd-kernel ``Conv2dSame`` (TensorFlow 'SAME': pads
    (k - 1) / 2 on each side at stride 1, whatever the input size) becomes an ``nn.Conv2d`` with that
    padding: the conv pads inside its kernel instead of copying its input into a padded tensor first."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    k = conv.kernel_size
    if (type(conv).__name__ == "Conv2dSame" and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and all(v % 2 == 1 for v in k)):
        new = torch.nn.Conv2d(conv.in_channels, conv.out_channels, k, 1, (k[0] // 2, k[1] // 2),
                              groups=conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    else:
        new = copy.deepcopy(conv)
    new.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype), requires_grad=False)
    new.bias = torch.nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return new.eval()


def frozen_step_model(model):
    """The model a training step runs: ``model`` itself, or, for afd_ext's EfficientNet-Lite, a wrapper
    around a copy of its frozen classifier with every BatchNorm folded into the conv before it (the
    classifier runs in eval mode, so each BatchNorm is a per-channel affine: one operation less per
    conv in the teacher's and the student's forward and in the backward) and the stride-1 'SAME' pads
    done by the convs (see _fold_conv_bn). The same function of the input up to float rounding; it shares
    ``model.afd`` (the module being trained) and the step never writes the copy. Any other classifier,
    or one whose BatchNorms are not in eval mode: ``model``."""
    clf, adapter = model.classifier, model.adapter
    if (type(clf).__name__ != "EfficientNetLite" or getattr(adapter.stem, "__self__", None) is not clf
            or getattr(adapter.rest, "__self__", None) is not clf):
        return model
    pairs = [(m, names) for m in clf.modules() for names in _LITE_CONV_BN.get(type(m).__name__, ())
             if hasattr(m, names[0])]
    bns = [getattr(m, b) for m, (_, b) in pairs]
    if any(type(bn) is not torch.nn.BatchNorm2d or bn.training or bn.running_var is None for bn in bns) or len(
            {id(bn) for bn in bns}) != sum(isinstance(m, torch.nn.BatchNorm2d) for m in clf.modules()):
        return model  # a BatchNorm that is not a frozen affine right after its conv: nothing folded
    folded = copy.deepcopy(clf)
    for m in folded.modules():
        for conv_name, bn_name in _LITE_CONV_BN.get(type(m).__name__, ()):
            if hasattr(m, conv_name):
                setattr(m, conv_name, _fold_conv_bn(getattr(m, conv_name), getattr(m, bn_name)))
                setattr(m, bn_name, torch.nn.Identity())
    folded.requires_grad_(False).eval()
    step_adapter = dataclasses.replace(adapter, stem=getattr(folded, adapter.stem.__name__),
                                       rest=getattr(folded, adapter.rest.__name__))
    return type(model)(folded, model.afd, step_adapter)


def build_training(cfg: TrainConfig, device: torch.device, train_files, *, start: int = 0, rank: int = 0,
                   world: int = 1, resume_tensors: Optional[dict] = None,
                   resume_path: Optional[Path] = None) -> TrainingRun:
    """The model (frozen classifier + the AFD in training mode), optimizer and data loader of a run
    from step ``start`` (``resume_tensors``: the weights and optimizer state of ``resume_path``)."""
    # fine-tune: the checkpoint's architecture (train() has put it into cfg already)
    new_afd = {key: getattr(cfg, key) for key in ARCHITECTURE_FIELDS}
    model = create_model(cfg.backbone, afd=new_afd if cfg.init is None else True, checkpoint=cfg.init,
                         device=device)
    model.classifier.requires_grad_(False)  # ours, built here: only the AFD learns
    autocast, channels_last = classifier_precision(cfg, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.classifier.to(memory_format=memory_format)  # ours too; the AFD keeps its own layout
    step_model = frozen_step_model(model)
    step_model.classifier.to(memory_format=memory_format)
    model.afd.train()
    afd = model.afd
    if cfg.grid is not None:  # (train() resolves None; a direct caller's None keeps the module's)
        afd.grid = cfg.grid
    if cfg.freeze_gate:
        if afd.gate_head is None:
            raise ValueError(f"--freeze-gate: {cfg.init} has no whole-image gate (module gate 'none')")
        afd.gate_head.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in afd.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    if resume_tensors is not None:
        try:
            afd.load_state_dict({k: v for k, v in resume_tensors.items() if not k.startswith("train_state.")})
            _load_optimizer_tensors(opt, resume_tensors)
        except (RuntimeError, ValueError, KeyError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"--resume: {resume_path}: its weights do not fit the module this run builds "
                                  f"({first})") from None
    ddp = afd
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(afd, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    remaining = cfg.steps - start
    ds = CompressedPairs(train_files, cfg, max(remaining, 0) * cfg.batch_size, rank=rank)
    # The dataset is indexed by global sample number, so resuming continues the same stream.
    ds_offset = start * cfg.batch_size
    loader = DataLoader(_Offset(ds, ds_offset), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.workers, persistent_workers=False, drop_last=True,
                        pin_memory=device.type == "cuda")
    return TrainingRun(cfg, device, model, afd, ddp, opt, loader, autocast, channels_last, memory_format, world,
                       step_model)


def _diverged_plain(what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}")


def train_step(run: TrainingRun, batch, step: int, diverged=_diverged_plain) -> tuple[torch.Tensor, dict]:
    """One optimizer step of ``run`` on ``batch`` = (clean, comp, labels, gate_targets) as the loader gives
    them, at step index ``step`` (0-based: its learning rate). Returns (loss, its parts); raises
    ``diverged(what)`` when the loss or a weight stops being finite."""
    cfg, opt, afd = run.cfg, run.opt, run.afd
    clean, comp, labels, gate_targets = batch
    for g in opt.param_groups:
        g["lr"] = _lr_at(step, cfg)
    clean, comp = (t.to(run.device).contiguous(memory_format=run.memory_format) for t in (clean, comp))
    labels, gate_targets = labels.to(run.device), gate_targets.to(run.device)
    model = run.step_model if run.step_model is not None else run.model
    loss, parts = afd_loss(model, clean, comp, labels, cfg, afd=run.ddp,
                           autocast=run.autocast, gate_targets=gate_targets)
    if run.world == 1 and not math.isfinite(float(loss.detach())):  # (DDP: the weight check, on every rank)
        raise diverged(f"the loss is {float(loss.detach())}")
    with _phase("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with _phase("optimizer"):
        torch.nn.utils.clip_grad_norm_(afd.parameters(), cfg.clip)
        try:
            opt.step()
        except RuntimeError as exc:  # e.g. --lr 1e38: AdamW's step size lr / (1 - beta1) overflows float32
            if "overflow" not in str(exc):
                raise
            raise diverged(f"the optimizer's update overflows ({str(exc).splitlines()[0]})") from None
        bad = _nonfinite_tensor(afd)
    if bad is not None:
        raise diverged(f"weight {bad} is no longer finite")
    return loss, parts


def _train_locked(cfg: TrainConfig, device, rank: int, world: int, out: Path, train_files, held,
                  unreadable: dict) -> dict:
    start = 0
    last = out / "last.safetensors"
    resume_tensors = None
    if not cfg.resume and cfg.init is not None:
        init = Path(cfg.init).resolve()
        if any(init == (out / name).resolve() for name in RUN_FILES):
            raise ValueError(f"--init {cfg.init}: a fresh run into --out {out} replaces that file; copy it "
                             "elsewhere first, or train into another --out")
    if cfg.resume:  # checked before anything is built
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
        resume_tensors, saved = read_checkpoint(last)
        start = _check_resume(last, saved, resume_tensors, cfg)

    run = build_training(cfg, device, train_files, start=start, rank=rank, world=world,
                         resume_tensors=resume_tensors, resume_path=last)
    model, afd, opt, loader = run.model, run.afd, run.opt, run.loader
    autocast, channels_last = run.autocast, run.channels_last
    saved_step = start if cfg.resume else None  # the step of the last checkpoint on disk
    config = {
        "backbone": cfg.backbone, "version": __version__,
        "recipe": _recipe(cfg),
        "data": {"folders": [portable_path(p) for p in cfg.data], "n_train": len(train_files),
                 "holdout_files": sorted(f.name for f in held)},
        "world_size": world, "device": device.type,
        "classifier_precision": {"autocast": str(autocast).removeprefix("torch.") if autocast else "float32",
                                 "channels_last": channels_last},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    if cfg.init is not None:  # what the starting point (and its own) never trained on
        record = lineage_record(cfg.init, cfg.backbone, {f.name for f in held})
        config["lineage"] = record["lineage"]
        config["data"]["lineage_holdout_files"] = record["lineage_holdout_files"]
    log_path = out / "train_log.jsonl"  # and train_log.csv, the same entries flat
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # a fresh run replaces the folder's previous run: its final model and state go
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()
        _restart_log(log_path, start)  # a killed run's steps after the checkpoint are run (and logged) again
    new_unreadable = list(unreadable)
    t0 = time.time()
    history = []
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step",
               disable=not cfg.progress or rank != 0, file=sys.stderr)
    step = start
    rate_from = None  # (step, time) where the speed measurement for --time-budget starts

    def diverged(what: str) -> TrainingDiverged:
        kept = (f"the last finite checkpoint is {last} (step {saved_step})" if saved_step is not None
                else "no checkpoint was written")
        return TrainingDiverged(f"training diverged at step {step + 1}: {what} (lr {opt.param_groups[0]['lr']:g}); "
                                f"stopped without saving it, {kept}. Lower --lr or --clip")

    for clean, comp, labels, gate_targets, failed in loader:
        if step >= cfg.steps:
            break
        for line in (ln for f in failed if f for ln in f.split("\n")):
            if line not in unreadable:
                unreadable[line] = None
                new_unreadable.append(line)
        loss, parts = train_step(run, (clean, comp, labels, gate_targets), step, diverged)
        step += 1
        if cfg.time_budget is not None:
            if step == min(20, cfg.warmup // 2):  # past the workers' start-up
                rate_from = (step, time.time())
            elif step == cfg.warmup and rate_from is not None:
                per_step = (time.time() - rate_from[1]) / (step - rate_from[0])
                left = cfg.time_budget - (time.time() - t0)
                fitted = max(step, min(cfg.steps, step + int(0.97 * left / per_step)))
                if world > 1:  # every rank must stop at the same step
                    t = torch.tensor([fitted], device=device if device.type == "cuda" else "cpu")
                    dist.all_reduce(t, op=dist.ReduceOp.MIN)
                    fitted = int(t)
                cfg.steps = fitted
                config["recipe"]["steps"] = fitted
                bar.total = fitted
                tqdm.write(f"time budget {cfg.time_budget:.0f} s: {per_step * 1000:.1f} ms/step -> "
                           f"{fitted} steps", file=sys.stderr)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()})
        if rank == 0:
            entry = {"step": step, "loss": float(loss.detach()), **parts, "lr": opt.param_groups[0]["lr"],
                     "time_s": round(time.time() - t0, 1)}
            if new_unreadable:  # skipped training images, reported where they were met (first few)
                entry["unreadable"] = {"new": len(new_unreadable), "total": len(unreadable),
                                       "first": new_unreadable[:5]}
                for line in new_unreadable[:5]:
                    tqdm.write(f"skipped unreadable training image {line}", file=sys.stderr)
                new_unreadable = []
            if step % cfg.val_every == 0 or step == cfg.steps:
                afd.eval()
                entry["val"] = held_out_top1(model, held, cfg.val_quality, cfg.val_images)
                afd.train()
                tqdm.write(f"step {step}: {entry['val']}", file=sys.stderr)
            with open(log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            with open(log_path.with_suffix(".csv"), "a") as fh:
                fh.write(_csv_text([csv_row(entry)]))
            history.append(entry)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or step == cfg.stop_after:
                save_checkpoint(last, afd, {**config, "train_state": {"step": step}},
                                extra_tensors=_optimizer_tensors(opt))
                saved_step = step
        if cfg.stop_after is not None and step >= cfg.stop_after:
            break
    bar.close()
    digest = _param_digest(afd)
    digests = [digest]
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, digest)
    summary = {"steps": step, "total_steps": cfg.steps, "resumed_from": start, "wall_s": round(time.time() - t0, 1),
               "world_size": world, "param_digests": digests,
               "final_val": next((h["val"] for h in reversed(history) if "val" in h), None),
               "unreadable_files": {"count": len(unreadable), "first": list(unreadable)[:5]}}
    if unreadable and rank == 0:
        tqdm.write(f"skipped {len(unreadable)} unreadable training image(s) (train_summary.json: unreadable_files)",
                   file=sys.stderr)
    if rank == 0 and step >= cfg.steps:
        save_checkpoint(out / "afd.safetensors", afd, {**config, "train_summary": summary})
        write_json(out / "train_summary.json", summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
