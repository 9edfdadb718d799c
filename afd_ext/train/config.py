"""The training recipe: ``TrainConfig`` (every setting, its default and its check), the ranges of the
integer settings, and the precision the frozen classifier runs in."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from .. import data
from ..models.checkpoint import MAX_AFD_PARAMS, CheckpointError, check_module_config
from ..modules import BLOCKS, FDM_MODES, GATES, GRIDS, WIDTH_PRESETS

#: ``TrainConfig.autocast`` choices: the dtype the frozen classifier runs in ("auto": bfloat16 on
#: CUDA, float32 elsewhere). The AFD module and the losses stay in float32 whatever the choice.
AUTOCAST_CHOICES = ("auto", "bfloat16", "off")

#: The ``TrainConfig`` fields that build the AFD module. A run from ``init`` takes them from that
#: checkpoint instead (``lineage.init_architecture``).
ARCHITECTURE_FIELDS = ("width", "fdm", "block", "gate")


#: The range of every integer setting, checked where it is parsed (the ``afd train`` flags and
#: ``TrainConfig.validate``; README "Errors"). The upper bounds keep a run finite and its numbers in
#: range: 10^20 steps overflow the sample index, a billion compressions per sample never ends, a seed
#: must fit torch's 64-bit generator.
MAX_COUNT = 10**9


INT_RANGES = {"steps": (1, MAX_COUNT), "batch_size": (1, 10**6), "crop": (8, 4096), "max_compressions": (1, 20),
              "warmup": (0, MAX_COUNT), "val_every": (1, MAX_COUNT), "val_images": (1, MAX_COUNT),
              "val_quality": (1, 100), "ckpt_every": (1, MAX_COUNT), "workers": (0, 256), "seed": (0, 2**63 - 1),
              "threads": (0, 1024), "stop_after": (1, MAX_COUNT)}


@dataclasses.dataclass
class TrainConfig:
    data: Sequence[str]
    out: str = "runs/afd"
    backbone: str = "efficientnet_lite0"
    width: int | str = "small"
    fdm: str = "spatial"
    block: str = "repconv"          # 'repconv' or 'conv' (plain 3x3, ablation)
    gate: str = "none"              # 'global': the whole-image gate (modules.GATES), trained by gate_weight
    # Defaults: the recipe of the shipped Lite0 checkpoint (README), except the quality list.
    steps: int = 4000
    batch_size: int = 32
    crop: int = 224
    scale: tuple = (0.8, 1.25)      # short side resized to 256 * U(scale) before the crop
    qualities: Sequence[int] = data.DEFAULT_QUALITIES
    quality_range: Optional[tuple] = None  # (lo, hi): draw uniformly instead of from `qualities`
    max_compressions: int = 1       # >1: 1..N successive compressions per sample
    clean_fraction: float = 0.2
    # Mildly compressed samples (quality uniform in mild_range): like the clean ones their target is the
    # clean features, and the gate's target is "closed" (see gate_target).
    mild_fraction: float = 0.0
    mild_range: tuple = (75, 95)
    # The degradation mixture (README "Training"): each compressed sample is one of
    #   crop    - the crop itself compressed: block grid on the classifier's 8x8 grid (the paper's);
    #   shift   - a window 1..7 px larger compressed, then cropped: grid at a random offset;
    #   rescale - the scene compressed at k x the classifier's scale (k log-uniform in rescale_range,
    #             any grid offset), then resized to the crop: the grid lands at every period.
    # The crop share is 1 - shift_fraction - rescale_fraction.
    shift_fraction: float = 0.0
    rescale_fraction: float = 0.0
    rescale_range: tuple = (0.7, 3.0)
    webp_fraction: float = 0.0      # share of compressions through WebP instead of JPEG
    chroma444_fraction: float = 0.0  # share of JPEG compressions with 4:4:4 chroma (else 4:2:0)
    init: Optional[str] = None      # start from this AFD checkpoint (fine-tuning) instead of a new module
    flip: bool = True
    rotate: bool = True             # random 90-degree turns
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    clip: float = 1.0
    l1_weight: float = 1.0
    kl_weight: float = 0.2
    ce_weight: float = 0.0
    gate_weight: float = 0.0        # BCE of the gate logit against gate_target (gate='global' only)
    # Keep the --init checkpoint's gate head as it is (after afd fit-gate: the gate it deploys with),
    # so the correction learns under the gate values it will run at, not a jointly trained one.
    freeze_gate: bool = False
    # The 8x8 grid the module reads the FDM on while it trains, and is saved with (modules.GRIDS):
    # 'detect' resamples each sample resized after compression onto its own JPEG blocks first, as the
    # deployed module does. None: the --init checkpoint's setting, else 'input'.
    grid: Optional[str] = None
    kl_temperature: float = 1.0
    holdout: float = 0.2            # fraction of labelled images held out for validation
    val_every: int = 400
    val_images: int = 100
    val_quality: int = 10
    ckpt_every: int = 400
    workers: int = 1
    seed: int = 0
    threads: int = 0                # torch CPU threads (0: torch's default)
    resume: bool = False
    stop_after: Optional[int] = None  # end this run after N steps (checkpointed), e.g. to split a long run
    # Wall-clock budget in seconds: at the end of the warm-up the step count is fixed to what fits
    # (at most `steps`). The learning rate of the warm-up does not depend on the step count, so the
    # run equals one started with --steps N (N is recorded in the checkpoint's recipe).
    time_budget: Optional[float] = None
    # The frozen classifier's precision and layout, as the field trains on GPUs: bfloat16 autocast
    # and channels_last ("auto" / None: bfloat16 on CUDA only; channels_last on every device, as it
    # pays on CPU too: docs/accuracy.md "Training step cost"). The AFD trains in float32.
    autocast: str = "auto"
    channels_last: Optional[bool] = None
    progress: bool = True

    def validate(self) -> None:
        for name, (lo, hi) in INT_RANGES.items():
            v = getattr(self, name)
            if v is None and name == "stop_after":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name.replace('_', ' ')} must be an integer in {lo}..{hi}, got {v!r}")
        for name in ("lr", "weight_decay", "clip", "l1_weight", "kl_weight", "ce_weight", "gate_weight",
                     "kl_temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number >= 0, got {v!r}")
        for name in ("scale", "rescale_range"):
            if len(getattr(self, name)) != 2 or not all(math.isfinite(float(v)) for v in getattr(self, name)):
                raise ValueError(f"{name.replace('_', ' ')} must be two finite numbers, got {getattr(self, name)!r}")
        if self.time_budget is not None and not math.isfinite(self.time_budget):
            raise ValueError(f"time budget must be a finite number of seconds, got {self.time_budget}")
        w = self.width
        if isinstance(w, str):
            if w not in WIDTH_PRESETS:
                raise ValueError(f"width must be one of {sorted(WIDTH_PRESETS)} or a positive integer, got {w!r}")
        elif isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"width must be one of {sorted(WIDTH_PRESETS)} or a positive integer, got {w!r}")
        if self.init is None:  # the parameter budget, with the smallest stem: nothing is allocated
            try:
                check_module_config({"channels": 1, "width": w,
                                     "fdm": self.fdm if self.fdm in FDM_MODES else "spatial"})
            except CheckpointError:
                raise ValueError(f"width {w}: the AFD module would have more than "
                                 f"afd_ext.checkpoint.MAX_AFD_PARAMS ({MAX_AFD_PARAMS}) parameters") from None
        if self.crop % 8:
            raise ValueError(f"crop must be a positive multiple of 8, got {self.crop}")
        data.parse_qualities(self.qualities)
        if self.quality_range is not None:
            lo, hi = self.quality_range
            data.parse_qualities([lo, hi])
            if lo > hi:
                raise ValueError(f"quality range {lo}-{hi} is empty")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ValueError(f"clean fraction must be in [0, 1), got {self.clean_fraction}")
        if not 0.0 <= self.mild_fraction < 1.0 or self.clean_fraction + self.mild_fraction >= 1.0:
            raise ValueError(f"mild fraction must be in [0, 1) and clean + mild fractions below 1, got "
                             f"{self.clean_fraction} + {self.mild_fraction}")
        data.parse_qualities(list(self.mild_range))
        if len(self.mild_range) != 2 or self.mild_range[0] > self.mild_range[1]:
            raise ValueError(f"mild range must be LO HI with LO <= HI, got {self.mild_range!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.grid is not None and self.grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {self.grid!r}")
        if self.grid == "detect" and self.init is None and self.fdm != "spatial":
            raise ValueError(f"grid 'detect' needs fdm 'spatial' (a grid of FDM vectors to place), got {self.fdm!r}")
        if self.freeze_gate and self.init is None:
            raise ValueError("freeze gate keeps the gate head of --init: give the checkpoint to start from")
        if self.freeze_gate and self.gate_weight:
            raise ValueError(f"freeze gate: a frozen gate head learns nothing from the gate's loss; "
                             f"set gate weight 0, got {self.gate_weight}")

        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        for name in ("shift_fraction", "rescale_fraction", "webp_fraction", "chroma444_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name.replace('_', ' ')} must be in [0, 1], got {v}")
        if self.shift_fraction + self.rescale_fraction > 1.0 + 1e-9:
            raise ValueError(f"shift fraction + rescale fraction must be at most 1, got "
                             f"{self.shift_fraction} + {self.rescale_fraction}")
        lo, hi = self.rescale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"rescale range must satisfy 0 < lo <= hi, got {lo}-{hi}")
        if self.init is not None and not Path(self.init).is_file():
            if Path(self.init).exists():  # a folder, a FIFO, a device
                raise ValueError(f"--init {self.init}: not a regular file; give a checkpoint (.safetensors)")
            raise FileNotFoundError(f"--init: no checkpoint at {self.init}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time budget must be positive, got {self.time_budget}")
        if self.time_budget is not None and self.resume:
            raise ValueError("--time-budget cannot be combined with --resume: the first run fixed the step count "
                             "(pass it as --steps)")
        if self.time_budget is not None and self.warmup < 10:
            raise ValueError("a time budget needs a warm-up of at least 10 steps (its speed is measured there)")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.fdm not in FDM_MODES:
            raise ValueError(f"fdm must be one of {FDM_MODES}, got {self.fdm!r}")
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"autocast must be one of {AUTOCAST_CHOICES}, got {self.autocast!r}")
        if self.channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be True, False or None (auto), got {self.channels_last!r}")
        lo, hi = self.scale
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale must satisfy 0 < lo <= hi, got {lo}-{hi}")


def classifier_precision(cfg: TrainConfig, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype of the frozen classifier or None, channels_last) for ``cfg`` on ``device``."""
    on_cuda = device.type == "cuda"
    dtype = {"auto": torch.bfloat16 if on_cuda else None, "bfloat16": torch.bfloat16, "off": None}[cfg.autocast]
    return dtype, True if cfg.channels_last is None else cfg.channels_last
