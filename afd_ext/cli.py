"""The ``afd`` command: train, fit-gate, average, widen, eval, demo, predict, export, bench.

Usage errors (unknown flags, bad values) exit with status 2 and a usage line;
problems with files, folders, checkpoints, missing optional packages or a run that
cannot go on print one ``afd <command>: error: ...`` line and exit 1 (README "Errors").
Output paths are checked before the work.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from typing import Optional, Sequence

from .data import CODECS, IMAGE_EXTENSIONS, PROTOCOLS, SKIP_AFD_ABOVE_QUALITY
from .inference.export import FORMATS
from .utils import check_output_file, output_target, write_json
from .models import list_models
from .modules import BLOCKS, FDM_MODES, FDM_SOURCES, GATES, GRIDS
from .inference.pipeline import AUTOCAST_DTYPES


# -- argument types: a bad value is a usage error (exit 2) --------------------------------------

def _int_in(lo: Optional[int], hi: Optional[int], what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{what} must be in {rng}, got {v}")
        return v
    parse.__name__ = what
    return parse


quality_type = _int_in(1, 100, "JPEG quality")
# Every integer flag has an upper bound (README "Errors"): a count past 10^9 never finishes, a
# seed past 2^63 - 1 does not fit torch's generator; argparse turns a value outside into exit 2.
MAX_COUNT = 10**9
count_type = _int_in(1, MAX_COUNT, "value")
batch_type = _int_in(1, 10**6, "batch size")
seed_type = _int_in(0, 2**63 - 1, "seed")


def _float_in(lo: float, hi: float, what: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in [{lo}, {hi}], got {v}")
        return v
    parse.__name__ = what
    return parse


def _positive_float(what: str):
    base = _float_in(0.0, float("inf"), what)

    def parse(text: str) -> float:
        v = base(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a finite positive number, got {text!r}")
        return v
    parse.__name__ = what
    return parse


def _width(text: str):
    from .modules import WIDTH_PRESETS
    if text in WIDTH_PRESETS:
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"width must be one of {', '.join(WIDTH_PRESETS)} or an integer, "
                                         f"got {text!r}") from None
    if not 1 <= v <= 1024:
        raise argparse.ArgumentTypeError(f"width must be in 1..1024, got {v}")
    return text


def _train_int(name: str):
    """The parser of the ``afd train`` flag for TrainConfig field ``name``: its range is
    ``train.INT_RANGES`` (the one the config's own validation uses)."""
    from .train import INT_RANGES
    return _int_in(*INT_RANGES[name], name.replace("_", " "))


def _crop_size(text: str) -> int:
    from .train import INT_RANGES
    v = _int_in(1, INT_RANGES["crop"][1], "crop")(text)
    if v % 8:
        raise argparse.ArgumentTypeError(f"crop must be a positive multiple of 8 (the DCT block), got {v}")
    return v


def _quality_or_none(text: str) -> Optional[int]:
    return None if text.lower() == "none" else _int_in(0, 100, "quality")(text)


def _nonneg_float(text: str) -> float:
    return _float_in(0.0, float("inf"), "value")(text)


FDM_SOURCE_HELP = ("where the FDM is estimated: input (the classifier's 224 input: what model(images) does) or "
                   "file (side information: the decoded file at its own size, its 8x8 JPEG grid intact, resampled "
                   "with the resize / crop)")


def _add_model_args(p, checkpoint_default_help="the checkpoint shipped for the backbone", grid: bool = False):
    p.add_argument("--backbone", default="efficientnet_lite0",
                   choices=list_models())
    p.add_argument("--checkpoint", default=None,
                   help=f"AFD checkpoint (.safetensors) or a shipped release name (v1, ...); default: "
                        f"{checkpoint_default_help}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    if grid:
        p.add_argument("--grid", choices=GRIDS, default=None,
                       help="which 8x8 grid the AFD reads the FDM on: input (the input's own) or detect (each "
                            "input's JPEG grid, found from its pixels); default: the checkpoint's setting")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afd", description="Adaptive Feature De-drifting for JPEG-robust "
                                                             "classification")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .train import AUTOCAST_CHOICES as TRAIN_AUTOCAST, TrainConfig
    TD = TrainConfig(data=[])  # every default lives in TrainConfig (the shipped checkpoint's recipe)
    t = sub.add_parser("train", help="train an AFD module for a frozen classifier on folders of photos")
    t.add_argument("--data", nargs="+", required=True, help="image folders (recursive; no labels needed)")
    t.add_argument("--out", default=TD.out, help="output folder (afd.safetensors, last.safetensors, logs)")
    t.add_argument("--backbone", default=TD.backbone,
                   choices=list_models())
    t.add_argument("--width", type=_width, default=TD.width, help="FE-Net width: tiny, small, base or an integer")
    t.add_argument("--fdm", default=TD.fdm, choices=FDM_MODES)
    t.add_argument("--block", default=TD.block, choices=BLOCKS)
    t.add_argument("--gate", default=TD.gate, choices=GATES,
                   help="global: a whole-image gate that closes (no correction at all) on clean and mildly "
                        "compressed images, trained by --gate-weight")
    t.add_argument("--steps", type=_train_int("steps"), default=TD.steps)
    t.add_argument("--batch-size", type=_train_int("batch_size"), default=TD.batch_size)
    t.add_argument("--crop", type=_crop_size, default=TD.crop)
    t.add_argument("--scale", type=_positive_float("scale"), nargs=2, metavar=("LO", "HI"), default=list(TD.scale),
                   help="short side resized to 256 x U(LO, HI) before the crop")
    t.add_argument("--qualities", type=quality_type, nargs="+", default=list(TD.qualities))
    t.add_argument("--quality-range", type=quality_type, nargs=2, metavar=("LO", "HI"), default=None,
                   help="draw the quality uniformly from LO..HI instead of from --qualities")
    t.add_argument("--max-compressions", type=_train_int("max_compressions"), default=TD.max_compressions)
    t.add_argument("--clean-fraction", type=_float_in(0.0, 0.99, "clean fraction"), default=TD.clean_fraction)
    t.add_argument("--mild-fraction", type=_float_in(0.0, 0.99, "mild fraction"), default=TD.mild_fraction,
                   help="share of samples compressed once at a quality in --mild-range (target: the clean "
                        "features; the gate's target: closed)")
    t.add_argument("--mild-range", type=quality_type, nargs=2, metavar=("LO", "HI"), default=list(TD.mild_range))
    frac = _float_in(0.0, 1.0, "fraction")
    t.add_argument("--shift-fraction", type=frac, default=TD.shift_fraction,
                   help="share of samples compressed on a block grid shifted 1..7 px from the crop's")
    t.add_argument("--rescale-fraction", type=frac, default=TD.rescale_fraction,
                   help="share of samples compressed at k x the classifier's scale, then resized (k in "
                        "--rescale-range, log-uniform)")
    t.add_argument("--rescale-range", type=_positive_float("rescale range"), nargs=2, metavar=("LO", "HI"),
                   default=list(TD.rescale_range))
    t.add_argument("--webp-fraction", type=frac, default=TD.webp_fraction,
                   help="share of compressions through WebP instead of JPEG")
    t.add_argument("--chroma444-fraction", type=frac, default=TD.chroma444_fraction,
                   help="share of JPEG compressions with 4:4:4 chroma (else 4:2:0)")
    t.add_argument("--init", default=TD.init, metavar="CHECKPOINT",
                   help="fine-tune this AFD checkpoint instead of training a new module (its width, fdm, "
                        "block and gate replace those flags)")
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=TD.flip,
                   help="random horizontal flips")
    t.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=TD.rotate,
                   help="random 90-degree turns")
    t.add_argument("--lr", type=_nonneg_float, default=TD.lr)
    t.add_argument("--weight-decay", type=_nonneg_float, default=TD.weight_decay)
    t.add_argument("--warmup", type=_train_int("warmup"), default=TD.warmup)
    t.add_argument("--clip", type=_nonneg_float, default=TD.clip)
    # --l1/--kl/--ce: the names of earlier releases, kept as aliases.
    t.add_argument("--l1-weight", "--l1", type=_nonneg_float, default=TD.l1_weight,
                   help="weight of the feature L1 loss")
    t.add_argument("--kl-weight", "--kl", type=_nonneg_float, default=TD.kl_weight,
                   help="weight of the logit KL loss")
    t.add_argument("--ce-weight", "--ce", type=_nonneg_float, default=TD.ce_weight,
                   help="weight of cross-entropy on labelled images")
    t.add_argument("--gate-weight", type=_nonneg_float, default=TD.gate_weight,
                   help="weight of the gate's binary cross-entropy (open on heavy, closed on clean/mild samples)")
    t.add_argument("--freeze-gate", action=argparse.BooleanOptionalAction, default=TD.freeze_gate,
                   help="keep the --init checkpoint's gate head fixed (after afd fit-gate: the gate it "
                        "deploys with), so the correction learns under it; needs --gate-weight 0")
    t.add_argument("--grid", choices=GRIDS, default=TD.grid,
                   help="which 8x8 grid the module reads the FDM on while it trains, and is saved with: input, or "
                        "detect (each sample resized after compression read on its own JPEG blocks, as deployed); "
                        "default: the --init checkpoint's setting, else input")
    t.add_argument("--kl-temperature", type=_float_in(0.01, 100.0, "temperature"), default=TD.kl_temperature)
    t.add_argument("--holdout", type=_float_in(0.0, 0.99, "holdout"), default=TD.holdout,
                   help="fraction of labelled images held out for validation (stable split by file name)")
    t.add_argument("--val-every", type=_train_int("val_every"), default=TD.val_every)
    t.add_argument("--val-images", type=_train_int("val_images"), default=TD.val_images)
    t.add_argument("--val-quality", type=quality_type, default=TD.val_quality,
                   help="JPEG quality of the in-training validation")
    t.add_argument("--ckpt-every", type=_train_int("ckpt_every"), default=TD.ckpt_every)
    t.add_argument("--workers", type=_train_int("workers"), default=TD.workers)
    t.add_argument("--seed", type=_train_int("seed"), default=TD.seed)
    t.add_argument("--threads", type=_train_int("threads"), default=TD.threads)
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    t.add_argument("--stop-after", type=_train_int("stop_after"), default=None,
                   help="end this run after N steps (checkpointed); --resume continues")
    t.add_argument("--time-budget", type=_positive_float("time budget"), default=None, metavar="SECONDS",
                   help="fit the step count (at most --steps) to this wall time, fixed at the end of the "
                        "warm-up; the checkpoint records the count, and --steps N reproduces the run")
    t.add_argument("--device", default=None)
    t.add_argument("--autocast", choices=TRAIN_AUTOCAST, default=TD.autocast,
                   help="dtype of the frozen classifier (auto: bfloat16 on CUDA, float32 on CPU); the AFD "
                        "trains in float32")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=TD.channels_last,
                   help="run the frozen classifier channels_last (default: on, every device)")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=TD.progress)

    g = sub.add_parser("fit-gate", help="fit a gated AFD checkpoint's whole-image gate alone, on training photos")
    g.add_argument("checkpoint", help="an AFD checkpoint with gate 'global' (.safetensors)")
    g.add_argument("--data", nargs="+", required=True, help="folders/files of photos (as afd train's --data)")
    g.add_argument("--out", required=True, help="the new checkpoint (.safetensors; a .json beside it)")
    g.add_argument("--holdout", type=_float_in(0.0, 0.99, "holdout"), default=None,
                   help="leave out the labelled images whose name hash is below this (default: the "
                        "checkpoint's own training hold-out)")
    g.add_argument("--seed", type=seed_type, default=0)
    g.add_argument("--grid", choices=GRIDS, default="input",
                   help="where the gate's statistics are read: input (the input's own 8x8 grid, the fit of every "
                        "release before v16-grid-detectfit) or detect (each input's detected JPEG grid, where a "
                        "module set to grid detect reads its gate)")
    g.add_argument("--threads", type=_int_in(1, 1024, "threads"), default=None)
    g.add_argument("--no-progress", action="store_true")

    av = sub.add_parser("average", help="the weighted mean, tensor by tensor, of AFD checkpoints of one lineage")
    av.add_argument("checkpoints", nargs="+", help="AFD checkpoints (.safetensors) or release names, two or more")
    av.add_argument("--weights", nargs="+", type=_nonneg_float, default=None,
                    help="one weight per checkpoint (normalized to sum to 1; default: equal)")
    av.add_argument("--out", required=True, help="the averaged checkpoint (.safetensors; a .json beside it)")

    wd = sub.add_parser("widen", help="the checkpoint with a wider FE-Net computing the same function "
                                      "(continue it with afd train --init)")
    wd.add_argument("checkpoint", help="an AFD checkpoint (.safetensors) or a release name")
    wd.add_argument("--width", type=_width, default="base",
                    help="the new FE-Net width: a preset (base=16) or an integer above the checkpoint's "
                         "(default: base)")
    wd.add_argument("--seed", type=seed_type, default=0, help="seeds the new channels' initialization")
    wd.add_argument("--out", required=True, help="the widened checkpoint (.safetensors; a .json beside it)")

    e = sub.add_parser("eval", help="the evaluation protocol: top-1/top-5 per JPEG quality, direct vs AFD")
    e.add_argument("paths", nargs="+", help="labelled images: files or folders (synset in file/folder name)")
    _add_model_args(e, grid=True)
    e.add_argument("--quality", type=quality_type, nargs="+", default=[25, 18, 15, 10, 7])
    e.add_argument("--multi-compress", action="store_true", help="add the 1..5 successive compressions protocol")
    e.add_argument("--protocol", choices=PROTOCOLS, default="crop",
                   help="crop: compress the 224 crop (the paper's); resized: that JPEG through resize 256 / "
                        "crop 224 again; full: compress the whole photo, then resize / crop")
    e.add_argument("--codec", choices=CODECS, default="jpeg")
    e.add_argument("--as-predict", action="store_true",
                   help="the AFD column as `afd predict` would answer: the classifier alone where the file each "
                        "image was read from is lossless or a JPEG above --skip-afd-above (side information "
                        "from the file; the default measures pixels only)")
    e.add_argument("--skip-afd-above", type=_quality_or_none, default=SKIP_AFD_ABOVE_QUALITY, metavar="Q",
                   help="with --as-predict: the quality above which predict skips the AFD "
                        f"(default {SKIP_AFD_ABOVE_QUALITY}; 'none': never skip a JPEG)")
    e.add_argument("--fdm-source", choices=FDM_SOURCES, default="input",
                   help=FDM_SOURCE_HELP + "; with --as-predict the AFD column is then exactly predict's")
    e.add_argument("--json", default=None, help="write the result as JSON")
    e.add_argument("--plot", default=None, help="write a PNG: top-1 against quality")
    e.add_argument("--batch-size", type=batch_type, default=50)
    e.add_argument("--limit", type=count_type, default=None, help="first N labelled images only")
    e.add_argument("--holdout-only", action="store_true",
                   help="only the images the checkpoint's training run held out")
    e.add_argument("--decision-set", action="store_true",
                   help="only the decision set: labelled images whose name hash is below "
                        "afd_ext.data.DECISION_SET_FRACTION (233 of the 500 dev images; docs/accuracy.md)")
    e.add_argument("--seed", type=seed_type, default=0)
    e.add_argument("--strict", action="store_true", help="fail on the first unreadable file")
    e.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("demo", help="classify sample photos clean / JPEG / JPEG+AFD (no data needed)")
    _add_model_args(d, grid=True)
    d.add_argument("--data", default=None, help="a folder of your own photos instead of the built-in ones")
    d.add_argument("--quality", type=quality_type, nargs="+", default=[25, 15, 10, 7])
    d.add_argument("--out", default="afd_demo.png", help="PNG figure")
    d.add_argument("--json", default=None)
    d.add_argument("--strict", action="store_true")
    d.add_argument("--limit", type=count_type, default=None)

    pr = sub.add_parser("predict", help="top-k classes for image files (with the deployed AFD)")
    pr.add_argument("paths", nargs="+")
    _add_model_args(pr)
    pr.add_argument("--topk", type=_int_in(1, 1000, "topk"), default=5)
    pr.add_argument("--batch-size", type=batch_type, default=32)
    pr.add_argument("--json", nargs="?", const="-", default=None, help="JSON to a file (or stdout with no value)")
    pr.add_argument("--no-afd", action="store_true", help="the classifier alone")
    pr.add_argument("--skip-afd-above", type=_quality_or_none, default=SKIP_AFD_ABOVE_QUALITY, metavar="Q",
                    help="JPEGs whose estimated quality (from their quantization tables) is above Q skip the "
                         f"AFD (default {SKIP_AFD_ABOVE_QUALITY}; 'none': run it on every image)")
    pr.add_argument("--fdm-source", choices=FDM_SOURCES, default="input", help=FDM_SOURCE_HELP)
    pr.add_argument("--dtype", choices=AUTOCAST_DTYPES, default=None,
                    help="autocast dtype (default: float16 on CUDA, float32 on CPU)")
    pr.add_argument("--compile", action="store_true", help="torch.compile the model")
    pr.add_argument("--cuda-graphs", action="store_true", help="replay the model as CUDA graphs (CUDA only)")
    pr.add_argument("--strict", action="store_true")

    x = sub.add_parser("export", help="write the deployed classifier + AFD")
    _add_model_args(x)
    x.add_argument("--format", choices=FORMATS, default="export")
    x.add_argument("out")

    b = sub.add_parser("bench", help="end-to-end images/s, classifier vs + AFD (kernel microbenchmarks: "
                                     "python bench/report.py)")
    b.add_argument("--e2e", action="store_true", help="accepted for older scripts: end to end is what afd bench runs")
    b.add_argument("--device", default="cpu")
    b.add_argument("--json", default=None)
    b.add_argument("--batch", type=batch_type, nargs="+", default=None)
    b.add_argument("--compile", action="store_true", help="also time torch.compile on CPU (slow to compile)")
    b.add_argument("--threads", type=_int_in(1, 1024, "threads"), nargs="+", default=None,
                   help="torch CPU threads (--interleave: one A/B per count, e.g. --threads 1 2)")
    b.add_argument("--interleave", action="store_true",
                   help="classifier alone vs deployed fused AFD, taking turns (robust to the machine's drift)")
    b.add_argument("--repeats", type=_int_in(1, 10**6, "repeats"), default=7, help="--interleave: turns per row")
    from .benchmark.e2e import BACKBONES, CONFIGS
    b.add_argument("--backbone", nargs="+", choices=list_models(), default=None,
                   help=f"which classifiers (default: {' '.join(BACKBONES)})")
    b.add_argument("--configs", nargs="+", choices=CONFIGS, default=None,
                   help="which rows (default: all; --interleave: classifier afd_deploy_fused)")
    b.add_argument("--dtype", nargs="+", choices=AUTOCAST_DTYPES, default=None,
                   help="autocast dtypes (default: float32 on CPU, float32 and bfloat16 on CUDA)")
    b.add_argument("--width", type=_width, default="small", help="AFD width (the shipped Lite0 one: small)")
    b.add_argument("--budget-s", type=_positive_float("budget"), default=None,
                   help="seconds of timed calls per row (default CPU 2, GPU 1)")
    return parser


# -- commands ----------------------------------------------------------------------------------

def _model(a):
    from .models import create_model
    from .utils import resolve_device
    model = create_model(a.backbone, checkpoint=a.checkpoint, device=resolve_device(a.device))
    if getattr(a, "grid", None) is not None and model.afd is not None:
        model.afd.grid = a.grid
    return model


def train_config(a):
    """TrainConfig from parsed ``afd train`` flags: every field has the flag of the same name."""
    import dataclasses

    from .train import TrainConfig
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)}
    values["width"] = int(a.width) if str(a.width).isdigit() else a.width
    for name in ("qualities", "quality_range", "rescale_range", "scale", "mild_range"):
        values[name] = tuple(values[name]) if values[name] is not None else None
    return TrainConfig(**values)


def cmd_train(a) -> int:
    from .train import train
    cfg = train_config(a)
    summary = train(cfg, device=a.device)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_fit_gate(a) -> int:
    from .train import refit_gate
    if not str(a.out).endswith(".safetensors"):
        raise ValueError(f"--out {a.out}: an AFD checkpoint is a .safetensors file")
    _check_outputs(a, "out", inputs=[*a.data, a.checkpoint])
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    record = refit_gate(a.checkpoint, a.data, a.out, holdout=a.holdout, seed=a.seed, progress=not a.no_progress,
                        grid=a.grid)
    print(json.dumps(record, indent=2))
    return 0


def cmd_average(a) -> int:
    from .train import average_checkpoints
    if not str(a.out).endswith(".safetensors"):
        raise ValueError(f"--out {a.out}: an AFD checkpoint is a .safetensors file")
    _check_outputs(a, "out", inputs=a.checkpoints)
    record = average_checkpoints(a.checkpoints, a.out, weights=a.weights)
    print(json.dumps(record, indent=2))
    return 0


def cmd_widen(a) -> int:
    from .train import widen_checkpoint
    if not str(a.out).endswith(".safetensors"):
        raise ValueError(f"--out {a.out}: an AFD checkpoint is a .safetensors file")
    _check_outputs(a, "out", inputs=[a.checkpoint])
    width = int(a.width) if str(a.width).isdigit() else a.width
    record = widen_checkpoint(a.checkpoint, a.out, width=width, seed=a.seed)
    print(json.dumps(record, indent=2))
    return 0


def _check_outputs(a, *flags, inputs=()) -> None:
    """Every output file flag given, checked before the work by the writer's rule
    (``utils.output_target``: a directory, a block device, a path under a file, an unwritable
    folder; one of ``inputs`` or an image inside an input folder; two flags naming one file:
    one error line, exit 1, nothing computed)."""
    seen: dict[str, str] = {}
    for flag in flags:
        value = getattr(a, flag, None)
        if value is None or value == "-":
            continue
        check_output_file(value, f"--{flag}", inputs=inputs, read_suffixes=IMAGE_EXTENSIONS)
        target = output_target(value, f"--{flag}")
        key = os.path.realpath(target.path)
        if not target.stream and key in seen:
            raise ValueError(f"--{flag} {value}: the same file as --{seen[key]}; give each output its own name")
        seen[key] = flag


def _require_matplotlib(what: str) -> None:
    """A plot needs matplotlib (an optional package): checked before the work, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"{what} needs matplotlib: pip install matplotlib (or pip install 'afd_ext[demo]')") \
            from None


def _shown(path) -> str:
    """``path`` as printed: a name that is not valid in the file system's encoding (e.g. Latin-1
    bytes on a UTF-8 system) with those bytes escaped (\\xe9), so any stdout can print it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if isinstance(path, str) else str(path)


def cmd_eval(a) -> int:
    from . import evaluation as ev
    _check_outputs(a, "json", "plot", inputs=[*a.paths, a.checkpoint])
    if a.plot:
        _require_matplotlib("--plot")
    model = _model(a)
    ckpt = model.checkpoint_path
    paths = a.paths
    if a.holdout_only:
        from pathlib import Path

        from .models.checkpoint import read_checkpoint
        from .data import list_images
        _, config = read_checkpoint(ckpt)
        names = set(config.get("data", {}).get("holdout_files", []))
        if not names:
            raise ValueError(f"{ckpt}: the checkpoint records no held-out files")
        paths = [str(f) for f in list_images(paths) if Path(f).name in names]
    if a.decision_set:
        from .data import in_decision_set, list_images
        paths = [str(f) for f in list_images(paths) if in_decision_set(f)]
        if not paths:
            raise ValueError(f"no labelled image of the decision set in {', '.join(map(str, a.paths))}")
    result = ev.evaluate(model, paths, a.quality, batch_size=a.batch_size, multi_compress=a.multi_compress,
                         seed=a.seed, strict=a.strict, progress=not a.no_progress, limit=a.limit,
                         checkpoint=ckpt, backbone=a.backbone, protocol=a.protocol, codec=a.codec,
                         as_predict=a.as_predict, skip_afd_above=a.skip_afd_above, fdm_source=a.fdm_source)
    print(ev.format_table(result))
    _report_skipped(result["skipped"])
    if a.json:
        write_json(a.json, result)
    if a.plot:
        ev.plot(result, a.plot)
    return 0


def _report_skipped(skipped) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {_shown(s['path'])}: {s['error']}", file=sys.stderr)


def cmd_demo(a) -> int:
    from .demo import run_demo
    _check_outputs(a, "out", "json", inputs=[a.data, a.checkpoint])
    _require_matplotlib("afd demo (its figure, --out)")
    model = _model(a)
    ckpt = model.checkpoint_path
    result = run_demo(model, data_dir=a.data, qualities=a.quality, out_png=a.out, strict=a.strict, limit=a.limit)
    result["checkpoint"] = ckpt
    _report_skipped(result["skipped"])
    if a.json:
        write_json(a.json, result)
    return 0


def cmd_predict(a) -> int:
    from .data import ImageError
    from .inference.pipeline import Pipeline
    _check_outputs(a, "json", inputs=[*a.paths, a.checkpoint])
    problems = {p: why for p in a.paths if (why := _path_problem(p)) is not None}
    if a.strict and problems:
        raise ImageError(*next(iter(problems.items())))
    pipe = Pipeline.from_checkpoint(a.backbone, a.checkpoint, device=a.device, use_afd=not a.no_afd, dtype=a.dtype,
                                    compile=a.compile, cuda_graphs=a.cuda_graphs, skip_afd_above=a.skip_afd_above,
                                    fdm_source=a.fdm_source)
    # A path the system cannot even look up (a name too long) is that path's error row; the
    # rest are classified, in the order given.
    results, run = [], []
    for p in [*a.paths, None]:
        if p is not None and p not in problems:
            run.append(p)
            continue
        if run:
            results += pipe.predict_files(run, topk=a.topk, batch_size=a.batch_size, strict=a.strict)
            run = []
        if p is not None:
            results.append({"path": p, "error": problems[p]})
    ok = [r for r in results if "error" not in r]
    bad = [r for r in results if "error" in r]
    if a.json:
        text = json.dumps({"predictions": results, "n_ok": len(ok), "n_failed": len(bad)}, indent=2)
        if a.json == "-":
            print(text)
        else:
            from .utils import atomic_write_bytes
            atomic_write_bytes(a.json, (text + "\n").encode())
    else:
        for r in ok:
            top = ", ".join(f"{c['name']} ({c['prob']:.2f})" for c in r["topk"])
            quality = "" if r.get("jpeg_quality") is None else f" q~{r['jpeg_quality']}"
            grid = f", JPEG grid {r['block_period']:.2f} px" if r.get("block_period") is not None else ""
            q = f"  [{r.get('format') or '?'}{quality}, AFD {'on' if r['afd'] else 'skipped'}{grid}]"
            print(f"{_shown(r['path'])}: {top}{q}")
    _report_skipped([{"path": r["path"], "error": r["error"]} for r in bad])
    if not ok:  # nothing classified (missing paths, empty folders, only unreadable files)
        print(f"afd predict: error: no image could be classified ({len(bad)} path(s) failed)", file=sys.stderr)
        return 1
    return 0


def _path_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot even be looked up (a name longer than the system allows, a loop of
    links or a file above it, a NUL byte), or None; a missing path is left to the reader."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    except ValueError as exc:
        return f"cannot read: {exc}"
    return None


def cmd_export(a) -> int:
    from .inference.export import export
    path = export(a.backbone, a.checkpoint, a.format, a.out, device=a.device)
    print(f"wrote {_shown(path)}")
    return 0


def cmd_bench(a) -> int:
    from .benchmark.e2e import BACKBONES, CONFIGS, run_e2e, run_interleaved
    backbones = tuple(a.backbone or BACKBONES)
    if a.interleave:
        _check_outputs(a, "json")
        run_interleaved(device=a.device, json_path=a.json, batches=a.batch or (1, 32), threads=a.threads or (1, 2),
                        repeats=a.repeats, configs=a.configs or ("classifier", "afd_deploy_fused"), width=a.width,
                        backbones=backbones)
        return 0
    if a.threads and len(a.threads) > 1:
        print("afd bench: error: several --threads need --interleave", file=sys.stderr)
        return 2
    _check_outputs(a, "json")
    run_e2e(device=a.device, json_path=a.json, batches=a.batch, compile=True if a.compile else None,
            threads=a.threads[0] if a.threads else None, configs=a.configs or CONFIGS, dtypes=a.dtype,
            width=a.width, budget_s=a.budget_s, backbones=backbones)
    return 0


COMMANDS = {"train": cmd_train, "fit-gate": cmd_fit_gate, "average": cmd_average, "widen": cmd_widen,
            "eval": cmd_eval, "demo": cmd_demo,
            "predict": cmd_predict, "export": cmd_export, "bench": cmd_bench}


def _os_error(exc: OSError) -> str:
    """'PATH: reason' for an OSError from the system ('[Errno 21] Is a directory: ...' otherwise)."""
    if exc.strerror and exc.filename is not None:
        names = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{names}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and str(exc).startswith("[Errno"):
        return _os_error(exc)
    lines = (str(exc).strip() or type(exc).__name__).splitlines()
    return lines[0] if len(lines) > 3 else " ".join(lines)


@contextlib.contextmanager
def _printable_streams():
    """stdout/stderr that escape what their encoding cannot show (a file name of non-UTF-8 bytes
    under PYTHONIOENCODING=utf-8, any name under an ASCII locale) instead of stopping the run
    with UnicodeEncodeError; restored afterwards (``main`` may be called in-process)."""
    saved = []
    for stream in (sys.stdout, sys.stderr):
        if callable(getattr(stream, "reconfigure", None)) and getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="backslashreplace")
                saved.append(stream)
    try:
        yield
    finally:
        for stream in saved:
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="strict")


def main(argv: Optional[Sequence[str]] = None) -> int:
    with _printable_streams():
        return _main(argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    from . import ops
    try:
        ops.check_environment()
    except ValueError as exc:  # a bad setting, like a bad flag: exit 2 before any work
        print(f"afd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    from .models.checkpoint import CheckpointError
    from .data import ImageError
    try:
        return COMMANDS[args.command](args)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        where = "device memory" if isinstance(exc, torch.OutOfMemoryError) else "memory"
        hint = " use a smaller --batch-size" if hasattr(args, "batch_size") else ""
        print(f"afd {args.command}: error: out of {where} ({first});{hint}", file=sys.stderr)
        return 1
    except (FileNotFoundError, NotADirectoryError, CheckpointError, ImageError, ValueError, TypeError,
            RuntimeError, ImportError) as exc:
        print(f"afd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # any other: a file where a folder should be, permissions, a full disk...
        print(f"afd {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("afd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
