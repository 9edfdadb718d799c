"""nn modules of the AFD method: RepConv, FDENet, FENet and AFDModule (docs/design.md §1)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import block_grid, reference
from .data.transforms import RESIZE, center_crop_geometry
from .reference.constants import N_COEFF, N_DCT_CHANNELS

FDM_MODES = ("spatial", "global", "none")
# Where the FDM is estimated at inference: the classifier's input (what model(images) sees), or the
# decoded file at its own size, its 8x8 grid intact (side information: Pipeline, afd eval/predict).
FDM_SOURCES = ("input", "file")
# Whole-image gate on the correction (docs/design.md §1): 'none' (v1/v2: the FDM alone scales it) or
# 'global': a blind quality estimate z = linear(log of the image's mean |block-DCT coefficient|, one per
# coefficient and colour channel), g = relu(tanh(z / 2)); trained to close (z <= 0, g = 0 exactly: the
# classifier's own features) on clean and mildly compressed images. JPEG quantization empties the high
# frequencies relative to the low ones, which these 192 log energies show whatever the content.
GATES = ("none", "global")
# Which 8x8 grid the FDE-Net and the gate read: the input's own ('input', v1..v12), or the JPEG block
# grid estimated from the pixels ('detect': an input resized after compression is resampled onto its
# blocks first; afd_ext.block_grid, docs/design.md §1). In training too (afd train --grid detect): the
# correction then learns from the FDM it deploys with.
GRIDS = ("input", "detect")
# How a module computes its ops: the fused torch.ops.afd kernels or the pure-PyTorch reference.
IMPLS = ("fused", "reference")
# FE-Net building blocks: re-parameterizable RepConv (the paper's) or plain 3x3 convs (ablation).
BLOCKS = ("repconv", "conv")


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


# What deploy(dtype=) may cast the weights to: an integer or bool "weight" would be truncated
# (int8: every |w| < 1 becomes 0) and still run, so anything else is refused.
WEIGHT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_weight_dtype(dtype, where: str = "deploy") -> Optional[torch.dtype]:
    """``dtype`` if it is None or one of ``WEIGHT_DTYPES``; a TypeError naming ``where`` otherwise."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in WEIGHT_DTYPES):
        return dtype
    raise TypeError(f"{where}: dtype must be None or a floating dtype for the weights "
                    f"({', '.join(str(d) for d in WEIGHT_DTYPES)}), got {dtype!r}")


# Width presets: FE-Net width w (the U-Net runs at w, 2w, 4w channels).
WIDTH_PRESETS = {"tiny": 4, "small": 8, "base": 16}


def act_name(module: Optional[nn.Module]) -> str:
    """Name of a stem activation the de-drift op can apply itself, else 'identity'."""
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and module.min_val == 0
                                        and module.max_val == 6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    return "identity"


class RepConv(nn.Module):
    """Re-parameterizable 3x3 conv (training form: three branches summed).

    (a) 1x1 (no bias) -> 3x3; (b) 3x3 -> 1x1; (c) 1x1. ``bn=True`` adds a
    BatchNorm at the end of each branch. ``reparameterize()`` switches the module
    in place to one ``nn.Conv2d`` 3x3 (``self.conv``) that computes the same function.
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: Optional[int] = None, bn: bool = False):
        super().__init__()
        mid = mid_ch or out_ch
        self.in_ch, self.out_ch = in_ch, out_ch
        self.a_1x1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.a_3x3 = nn.Conv2d(mid, out_ch, 3, padding=1)
        self.b_3x3 = nn.Conv2d(in_ch, mid, 3, padding=1)
        self.b_1x1 = nn.Conv2d(mid, out_ch, 1)
        self.c_1x1 = nn.Conv2d(in_ch, out_ch, 1)
        self.bn = nn.ModuleList([nn.BatchNorm2d(out_ch) for _ in range(3)]) if bn else None
        self.conv: Optional[nn.Conv2d] = None

    # The training form's forward: False runs the three branches as five convs (the definition,
    # reference.repconv); True (default) composes them into one 3x3 conv per call.
    compose_branches: bool = True

    @property
    def deployed(self) -> bool:
        return self.conv is not None

    def forward(self, x):
        if self.conv is not None:
            return self.conv(x)
        if self.bn is None and self.compose_branches:
            # Without BatchNorm the branches are one 3x3 conv (get_equivalent_kernel_bias, exact up to
            # rounding, differentiable): one conv per call instead of five, the same function and gradients.
            return F.conv2d(x, *self.get_equivalent_kernel_bias(), padding=1)
        a = self.a_3x3(self.a_1x1(x))
        b = self.b_1x1(self.b_3x3(x))
        c = self.c_1x1(x)
        if self.bn is not None:
            a, b, c = self.bn[0](a), self.bn[1](b), self.bn[2](c)
        return a + b + c

    def zero_init(self) -> None:
        """Make the block output exactly zero (every branch's last layer zeroed)."""
        for conv in (self.a_3x3, self.b_1x1, self.c_1x1):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if self.bn is not None:
            for bn in self.bn:
                nn.init.zeros_(bn.weight)
                nn.init.zeros_(bn.bias)

    def _branch_last(self, conv: nn.Conv2d, idx: int):
        if self.bn is None:
            return conv.weight, conv.bias
        bn = self.bn[idx]
        return reference.fold_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 bn.eps)

    def get_equivalent_kernel_bias(self):
        """(weight (out,in,3,3), bias (out,)) of the single 3x3 conv equal to the three branches."""
        if self.conv is not None:
            return self.conv.weight, self.conv.bias
        a3_w, a3_b = self._branch_last(self.a_3x3, 0)
        b1_w, b1_b = self._branch_last(self.b_1x1, 1)
        c1_w, c1_b = self._branch_last(self.c_1x1, 2)
        return reference.repconv_reparam(self.a_1x1.weight, a3_w, a3_b, self.b_3x3.weight, self.b_3x3.bias,
                                         b1_w, b1_b, c1_w, c1_b)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.conv is not None:
            return
        weight, bias = self.get_equivalent_kernel_bias()
        conv = nn.Conv2d(self.in_ch, self.out_ch, 3, padding=1).to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        for name in ("a_1x1", "a_3x3", "b_3x3", "b_1x1", "c_1x1", "bn"):
            delattr(self, name)
        self.bn = None
        self.conv = conv


class FDENet(nn.Module):
    """Feature Drifting Estimation: per-8x8-block MLP on the 192 JPEG DCT coefficients -> (0,1)^C.

    The coefficients are scaled by a fixed per-coefficient factor (DC ~ +-1024,
    AC much smaller) folded into ``fc1`` when the op is called, so the op
    contract (raw coefficients in, nn.Linear layouts) stays as docs/design.md §2 fixes it.
    """

    def __init__(self, channels: int, h1: int = 128, h2: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(N_DCT_CHANNELS, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, channels)
        scale = torch.full((3, N_COEFF), 1.0 / 16)
        scale[:, 0] = 1.0 / 256
        self.register_buffer("input_scale", scale.reshape(-1), persistent=False)
        self.impl = "reference"
        self._folded: Optional[tuple[str, ...]] = None  # names of the buffers deploy() folded
        self._folded_dtype: Optional[torch.dtype] = None  # deploy()'s dtype (None: the parameters')
        # load_state_dict writes the parameters only: re-fold, or the old weights would keep running
        self.register_load_state_dict_post_hook(_refold_after_load)

    def op_weights(self):
        """(w1, b1, w2, b2, w3, b3) in the layout of afd::block_dct_fdm, input scale folded into w1."""
        if self._folded is not None:
            folded = tuple(getattr(self, n) for n in self._folded)
            # .to(another dtype) moved the snapshot too; from a lower-precision cast it would carry
            # that precision, so it is used only in the dtype it was made for
            if folded[0].dtype == (self._folded_dtype or self.fc1.weight.dtype):
                return folded
        return self._fold_parameters()

    def _fold_parameters(self):
        return (self.fc1.weight * self.input_scale, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                self.fc3.weight, self.fc3.bias)

    @torch.no_grad()
    def deploy(self, impl: str = "fused", dtype: Optional[torch.dtype] = None) -> "FDENet":
        """Fold the input scale into fc1 and cast the op weights to ``dtype`` once, as buffers (they
        follow ``.to()``), instead of on every call. Training again (``train()``) drops the snapshot."""
        self.impl = _check_impl(impl)
        self._fold(check_weight_dtype(dtype, "FDENet.deploy"))
        return self.eval()

    def _fold(self, dtype: Optional[torch.dtype]) -> None:
        names = tuple(f"_op_w{i}" for i in range(6))
        for name, w in zip(names, self._fold_parameters()):  # from the parameters: a re-deploy loses nothing
            self.register_buffer(name, w.detach().to(dtype or w.dtype).clone(), persistent=False)
        self._folded, self._folded_dtype = names, dtype

    def train(self, mode: bool = True):
        if mode and self._folded is not None:
            for name in self._folded:
                delattr(self, name)
            self._folded, self._folded_dtype = None, None
        return super().train(mode)

    def forward(self, img: torch.Tensor, dtype: Optional[torch.dtype] = None,
                gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        """img (B,3,H,W) RGB 0..255, H and W multiples of 8, floating or uint8 -> FDM (B,C,H/8,W/8)
        in ``dtype`` (default: a floating img's own). A uint8 img goes to the op as it is (1 byte a
        pixel read, no widened copy of the image). ``gate``: the whole-image gate's logits (B,), which
        the op applies (each image's FDM times relu(tanh(gate / 2)))."""
        dtype = dtype or img.dtype
        if not dtype.is_floating_point:
            raise TypeError(f"FDENet: a {img.dtype} img needs the FDM's floating dtype (dtype=...)")
        weights = [w if w.dtype == dtype else w.to(dtype) for w in self.op_weights()]
        if self.impl == "fused":
            return torch.ops.afd.block_dct_fdm(img, *weights, gate)
        return reference.block_dct_fdm(img, *weights, gate)


class FENet(nn.Module):
    """Feature Enhancement: a small U-Net of RepConv blocks with PReLU.

    e1 = RC(C->w); e2 = RC(w->2w), maxpool; e3 = RC(2w->4w), maxpool;
    u3 = RC(4w->2w), up x2; u2 = RC(cat(u3, e2): 4w->w), up x2;
    ``last`` = RC(cat(u2, e1): 2w->C), no activation: fused with the de-drift.
    Max-pooling rounds up and upsampling targets the skip's size, so any feature size works.
    """

    def __init__(self, channels: int, width: int = 8, bn: bool = False):
        super().__init__()
        w = width
        self.enc1 = RepConv(channels, w, bn=bn)
        self.enc2 = RepConv(w, 2 * w, bn=bn)
        self.enc3 = RepConv(2 * w, 4 * w, bn=bn)
        self.dec3 = RepConv(4 * w, 2 * w, bn=bn)
        self.dec2 = RepConv(4 * w, w, bn=bn)
        self.last = RepConv(2 * w, channels, bn=bn)
        self.acts = nn.ModuleList([nn.PReLU(c) for c in (w, 2 * w, 4 * w, 2 * w, w)])

    # What each block reads, in channel order: the blocks whose outputs are concatenated into its
    # input (None: the FE-Net's input). features() is the definition; widening reads this.
    SOURCES = {"enc1": (None,), "enc2": ("enc1",), "enc3": ("enc2",), "dec3": ("enc3",), "dec2": ("dec3", "enc2"),
               "last": ("dec2", "enc1")}

    def input_parts(self) -> dict:
        """{block name: [channels of each concatenated part of its input]} (SOURCES with sizes)."""
        return {name: [self.enc1.in_ch if src is None else getattr(self, src).out_ch for src in sources]
                for name, sources in self.SOURCES.items()}

    def features(self, f: torch.Tensor) -> torch.Tensor:
        """Everything up to the input of the last RepConv."""
        e1 = self.acts[0](self.enc1(f))
        e2 = F.max_pool2d(self.acts[1](self.enc2(e1)), 2, ceil_mode=True)
        e3 = F.max_pool2d(self.acts[2](self.enc3(e2)), 2, ceil_mode=True)
        u3 = F.interpolate(self.acts[3](self.dec3(e3)), size=e2.shape[-2:], mode="nearest")
        u2 = F.interpolate(self.acts[4](self.dec2(torch.cat([u3, e2], 1))), size=e1.shape[-2:], mode="nearest")
        return torch.cat([u2, e1], 1)

    def forward(self, f):
        return self.last(self.features(f))

    # The deployed U-Net as afd ops: (block, pool, skip source) per fe_conv call, in order. The skip
    # is the output of an earlier call (by index): the decoder's cat(up2(x), skip) is read in the op.
    FUSED_PLAN = (("enc1", False, None), ("enc2", True, None), ("enc3", True, None), ("dec3", False, None),
                  ("dec2", False, 1))
    LAST_SKIP = 0  # the last block (the de-drift op) reads cat(up2(dec2's output), enc1's output)

    def op_weights(self):
        """[(weight, bias, alpha)] of the five fe_conv blocks in FUSED_PLAN order, then (weight, bias) of
        the last: the deploy form's (every RepConv re-parameterized)."""
        blocks = [getattr(self, name).conv for name, _, _ in self.FUSED_PLAN]
        out = [(c.weight, c.bias, act.weight) for c, act in zip(blocks, self.acts)]
        return out + [(self.last.conv.weight, self.last.conv.bias)]

    def repconvs(self):
        return [m for m in self.modules() if isinstance(m, RepConv)]


class AFDModule(nn.Module):
    """Adaptive Feature De-drifting: ``out = act(feat + FENet(feat) * up(FDENet(img)))``.

    Args:
        channels: stem width C.
        width: FE-Net width w, or a preset name (``tiny``=4, ``small``=8, ``base``=16).
        act: the stem's own output activation ('relu', 'relu6' or 'identity').
        fdm: 'spatial' (one C-vector per 8x8 block, the default), 'global' (pooled per
            image, as the authors' release) or 'none' (FE-Net only, ablation).
        grid: 'input' (the FDE-Net reads the input's 8x8 grid) or 'detect' (an input whose JPEG
            blocks were moved off that grid by a resize is read on its own blocks:
            ``afd_ext.block_grid``); 'detect' needs fdm='spatial'.
        h1, h2: FDE-Net hidden sizes.

    ``forward(feat, img)``: feat (B,C,Hf,Wf) is the stem output *before* its activation;
    img (B,3,H,W) the RGB image in 0..255 the stem saw. Sizes that are not multiples of 8
    are padded (edge replicate) at the bottom/right for the DCT; when the FDM grid does
    not divide the feature grid, the FDM is resampled (nearest) to the feature grid.
    A new module has a zero last RepConv, so it returns exactly ``act(feat)``.
    """

    def __init__(self, channels: int, width: int | str = "small", act: str = "relu", fdm: str = "spatial",
                 h1: int = 128, h2: int = 64, bn: bool = False, block: str = "repconv", gate: str = "none",
                 grid: str = "input"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if isinstance(width, str):
            if width not in WIDTH_PRESETS:
                raise ValueError(f"unknown width preset {width!r}; choose one of {sorted(WIDTH_PRESETS)} or an int")
            width = WIDTH_PRESETS[width]
        if act not in reference.ACTIVATIONS:
            raise ValueError(f"act must be one of {reference.ACTIVATIONS}, got {act!r}")
        if fdm not in FDM_MODES:
            raise ValueError(f"fdm must be one of {FDM_MODES}, got {fdm!r}")
        self.channels, self.width, self.act, self.fdm_mode = channels, int(width), act, fdm
        self.config = dict(channels=channels, width=int(width), act=act, fdm=fdm, h1=h1, h2=h2, bn=bn, block=block)
        if gate != "none":  # v1/v2 configs have no key: they load as gate='none'
            self.config["gate"] = gate
        self.gate_mode = gate
        self.grid = grid  # checked by the setter; configs before v16 have no key: 'input'
        self.fde = FDENet(channels, h1, h2) if fdm != "none" else None
        # opens half-way at the start (tanh(0.5)) so that the FE-Net learns from the first step
        self.gate_head = nn.Linear(N_DCT_CHANNELS, 1) if gate != "none" else None
        if self.gate_head is not None:
            nn.init.zeros_(self.gate_head.weight)
            nn.init.constant_(self.gate_head.bias, 1.0)
        self.fe = FENet(channels, int(width), bn=bn)
        self.fe.last.zero_init()
        self._impl = "reference"
        self._dedrift_dtype: Optional[torch.dtype] = None  # what deploy(dtype=) cast the FE-Net op weights to
        self._dedrift_names: tuple = ()  # the buffers holding those casts
        self.register_load_state_dict_post_hook(_recast_after_load)  # as FDENet's: no stale cast copies
        if block == "conv":
            use_plain_convs(self)

    @property
    def grid(self) -> str:
        """Which 8x8 grid the FDE-Net and the gate read (:data:`GRIDS`); settable."""
        return self._grid

    @grid.setter
    def grid(self, value: str) -> None:
        if value not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {value!r}")
        if value == "detect" and self.fdm_mode != "spatial":
            raise ValueError(f"grid='detect' needs fdm='spatial' (a grid of FDM vectors to place), "
                             f"not {self.fdm_mode!r}")
        self._grid = value
        if value == "input":
            self.config.pop("grid", None)
        else:
            self.config["grid"] = value

    # -- deployment ---------------------------------------------------------------------------
    def reparameterize(self) -> "AFDModule":
        """Fold every RepConv into one 3x3 conv (exact); the module keeps using the reference path."""
        for rc in self.fe.repconvs():
            rc.reparameterize()
        return self

    @property
    def impl(self) -> str:
        """'fused' (torch.ops.afd kernels) or 'reference' (pure PyTorch): set by deploy()/set_impl()."""
        return self._impl

    @property
    def fused(self) -> bool:
        return self._impl == "fused"

    @property
    def deployed(self) -> bool:
        return all(rc.deployed for rc in self.fe.repconvs())

    def set_impl(self, impl: str) -> "AFDModule":
        """Compute with the fused ops or the reference without changing the form (the fused FE-Net
        and de-drift need every RepConv re-parameterized; until then they run the reference)."""
        self._impl = _check_impl(impl)
        if self.fde is not None:
            self.fde.impl = impl
        return self

    def deploy(self, impl: str = "fused", dtype: Optional[torch.dtype] = None) -> "AFDModule":
        """The inference form, in one call: every RepConv re-parameterized (exact), the FDE-Net's
        op weights folded (and cast to ``dtype``) once, eval mode, and ``impl``: 'fused'
        (torch.ops.afd.block_dct_fdm / repconv_dedrift) or 'reference' (the same function in
        pure PyTorch ops, for export formats that cannot carry custom ops). ``dtype``: None or
        one of ``WEIGHT_DTYPES``. The folded and cast copies are made again from the parameters
        whenever a state dict is loaded (``load_state_dict``), so the loaded weights are what runs."""
        check_weight_dtype(dtype, "AFDModule.deploy")  # before anything changes
        _check_impl(impl)
        self.reparameterize()
        self.set_impl(impl)
        if self.fde is not None:
            self.fde.deploy(impl, dtype)
        # The FE-Net ops' weights in the dtype they will run in (autocast's), cast once here, as
        # buffers (like the FDE-Net's: they follow .to() and stay out of the state dict).
        self._drop_dedrift_cast()
        if dtype is not None:
            self._cast_dedrift(dtype)
        return self.eval()

    def _cast_dedrift(self, dtype: torch.dtype) -> None:
        names = []
        groups = self.fe.op_weights()
        for i, group in enumerate(groups):
            last = i == len(groups) - 1  # the de-drift's: _dedrift_w, _dedrift_b
            for suffix, t in zip("wba", group):
                name = f"_dedrift_{suffix}" if last else f"_fe{i}_{suffix}"
                self.register_buffer(name, t.detach().to(dtype).clone(), persistent=False)
                names.append(name)
        self._dedrift_names, self._dedrift_dtype = tuple(names), dtype

    def _drop_dedrift_cast(self) -> None:
        for name in getattr(self, "_dedrift_names", ()):
            if name in self._buffers:
                delattr(self, name)
        self._dedrift_names, self._dedrift_dtype = (), None

    def _fe_op_weights(self, dt: torch.dtype):
        """The FE-Net ops' weights (FENet.op_weights' structure) in dtype ``dt``: deploy(dtype=dt)'s copies,
        used only in the dtype they were cast to (after .to(float64) a bfloat16 copy keeps bfloat16's
        precision), else cast from the parameters on this call."""
        groups = self.fe.op_weights()
        if self._dedrift_names and self._dedrift_dtype == dt and self._buffers[self._dedrift_names[0]].dtype == dt:
            it = iter(self._buffers[n] for n in self._dedrift_names)
            return [tuple(next(it) for _ in g) for g in groups]
        return [tuple(t if t.dtype == dt else t.to(dt) for t in g) for g in groups]

    def train(self, mode: bool = True):
        if mode:
            self._drop_dedrift_cast()  # training moves the weights: the cast copies would go stale
        return super().train(mode)

    # -- forward ------------------------------------------------------------------------------
    @staticmethod
    def _pad8(img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """img edge-replicated at the bottom/right to multiples of 8 (as it is when they already are)."""
        pad_h, pad_w = (-img.shape[-2]) % 8, (-img.shape[-1]) % 8
        if pad_h or pad_w:
            img = F.pad(img.to(dtype), (0, pad_w, 0, pad_h), mode="replicate")
        return img

    def compute_fdm(self, img: torch.Tensor, feat_size, dtype: Optional[torch.dtype] = None,
                    gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        """FDM in ``dtype`` (default: img's) for img (floating, or uint8 of a size the DCT takes), times
        the whole-image gate relu(tanh(gate / 2)) when its logits ``gate`` (B,) are given."""
        b = img.shape[0]
        dtype = dtype or img.dtype
        if self.fde is None:
            fdm = torch.ones((b, self.channels, 1, 1), dtype=dtype, device=img.device)
            return fdm if gate is None else fdm * self.gate_value(gate).to(dtype).view(-1, 1, 1, 1)
        if self.fdm_mode == "global":
            fdm = self.fde(self._pad8(img, dtype), dtype).mean(dim=(2, 3), keepdim=True)
            return fdm if gate is None else fdm * self.gate_value(gate).to(dtype).view(-1, 1, 1, 1)
        fdm = self.fde(self._pad8(img, dtype), dtype, gate)  # the op applies the gate (spatial FDM)
        hf, wf = feat_size
        if hf % fdm.shape[-2] or wf % fdm.shape[-1]:
            fdm = F.interpolate(fdm, size=(hf, wf), mode="nearest")
        return fdm

    @torch.no_grad()
    def file_fdm(self, sources, feat_size, crop: int, resize: Optional[int] = RESIZE,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The FDM estimated on each decoded file at its own size, resampled onto the feature grid of
        the crop the classifier sees (side information: only a file gives it; docs/design.md §1).

        A resized photo's 8x8 JPEG blocks no longer sit on the input's 8x8 grid: the FDM of the
        input sees them blurred and shifted. Here the FDE-Net (and the whole-image gate) read the
        file's own grid, and each block's C-vector lands where the evaluation transform puts that
        block: ``sources[i]`` (uint8 (3,H,W), RGB) became the input by ``resize`` (short side) and a
        centre ``crop`` (``data.center_crop_geometry``); ``resize=None``: a centre crop of the file
        as it is (it was not resized). Returns (FDM (B,C,Hf,Wf) in ``dtype``, the gate's logits (B,)
        or None), for ``forward(feat, img, fdm=...)``; the gate is already applied to the FDM."""
        hf, wf = feat_size
        maps, logits = [], []
        for src in sources:
            if not isinstance(src, torch.Tensor) or src.dtype != torch.uint8 or src.dim() != 3 or src.shape[0] != 3:
                raise ValueError("file_fdm: each source must be a uint8 (3, H, W) tensor, got "
                                 + (f"{src.dtype} {tuple(src.shape)}" if isinstance(src, torch.Tensor)
                                    else type(src).__name__))
            h, w = src.shape[-2:]
            if resize is None:
                if min(h, w) < crop:
                    raise ValueError(f"file_fdm: a {w}x{h} source is smaller than the {crop}x{crop} crop")
                nw, nh, left, top = w, h, (w - crop) // 2, (h - crop) // 2
            else:
                nw, nh, left, top = center_crop_geometry(w, h, resize, crop)
            img = src.unsqueeze(0)
            z = self.gate_logit(img)  # the whole file's statistics
            if self.fde is None or self.fdm_mode == "global":  # no grid to resample: one vector an image
                fdm = self.compute_fdm(img, (1, 1), dtype, z).expand(1, self.channels, hf, wf)
            else:
                rows, cols = crop_block_indices((h, w), (nh, nw), (left, top), crop, (hf, wf))
                rows, cols = rows.to(src.device), cols.to(src.device)
                # only the blocks the crop shows: the FDE-Net is per block, so the same values as
                # from the whole file (a region ending at the file's edge is padded as the file is)
                r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
                region = img[..., r0 * 8:min(h, r1 * 8), c0 * 8:min(w, c1 * 8)]
                blocks = self.fde(self._pad8(region, dtype), dtype, z)
                fdm = blocks[:, :, rows - r0][:, :, :, cols - c0]
            maps.append(fdm.to(dtype))
            if z is not None:
                logits.append(z)
        if not maps:
            raise ValueError("file_fdm: no sources")
        return torch.cat(maps), (torch.cat(logits) if logits else None)

    GATE_EPS = reference.GATE_EPS  # floor of the mean |coefficient| before the log (flat images)

    def gate_logit(self, img: torch.Tensor) -> Optional[torch.Tensor]:
        """z (B,) of the whole-image gate for img (B,3,H,W) RGB 0..255 (None without a gate): the
        afd::block_dct_gate op (or its reference), in the head's dtype (float32 unless cast), computed
        in float32 at least whatever the run's dtype (it feeds a log); a uint8 img is read as it is."""
        if self.gate_head is None:
            return None
        if img.shape[-2] % 8 or img.shape[-1] % 8:
            img = self._pad8(img.float(), torch.float32)
        head = self.gate_head
        if self.fused:
            return torch.ops.afd.block_dct_gate(img, head.weight, head.bias)
        return reference.block_dct_gate(img, head.weight, head.bias)

    gate_value = staticmethod(reference.gate_value)  # g = relu(tanh(z / 2)): exactly 0 for z <= 0

    def forward(self, feat: torch.Tensor, img: torch.Tensor, return_gate: bool = False,
                fdm: Optional[torch.Tensor] = None):
        """De-drifted features; ``return_gate=True``: (features, gate logit z (B,) or None).
        ``fdm`` (B,C,Hf,Wf): use this FDM, gate applied (``file_fdm``'s), instead of estimating it
        from img (then z is None)."""
        if feat.dim() != 4 or feat.shape[1] != self.channels:
            raise ValueError(f"feat must have shape (B, {self.channels}, Hf, Wf), got {tuple(feat.shape)}")
        if fdm is not None:
            if tuple(fdm.shape) != tuple(feat.shape) or not fdm.is_floating_point():
                raise ValueError(f"fdm must be a floating tensor of feat's shape {tuple(feat.shape)}, got "
                                 f"{fdm.dtype} {tuple(fdm.shape)}")
            out = self._dedrift(feat, fdm.to(feat.dtype))
            return (out, None) if return_gate else out
        if img.dim() != 4 or img.shape[1] != 3 or img.shape[0] != feat.shape[0]:
            raise ValueError(f"img must have shape ({feat.shape[0]}, 3, H, W), got {tuple(img.shape)}")
        if img.dtype != torch.uint8:  # uint8 stays uint8: the FDE op reads it directly
            if not img.is_floating_point():
                raise TypeError(f"img must be uint8 or floating (RGB 0..255), got {img.dtype}")
            img = img if img.dtype == feat.dtype else img.to(feat.dtype)
        z = self.gate_logit(img)
        fdm = self.compute_fdm(img, feat.shape[-2:], feat.dtype, z)  # the gate scales the whole correction
        if self._grid == "detect":
            fdm, z = self._on_block_grid(img, feat.shape[-2:], fdm, z)
        out = self._dedrift(feat, fdm)
        return (out, z) if return_gate else out

    def _on_block_grid(self, img: torch.Tensor, feat_size, fdm: torch.Tensor,
                       z: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """fdm and z with the images whose JPEG grid is shifted (``block_grid.detect_block_grid``)
        estimated on their own blocks: each image resampled onto them (``block_grid.rectify``), the
        gate and the FDE-Net read there, each block's vector put where the block lies in the input.
        Images of one virtual size go through together (one resample, gate and FDE-Net call). The
        detection is a decision (no gradient); the FDM and gate read on the resampled image carry
        the FDE-Net's and gate head's gradients, so a module trained with grid='detect' learns there."""
        with torch.no_grad():
            grid = block_grid.detect_block_grid(img)
        shifted = grid.shifted.nonzero()[:, 0].tolist()
        if not shifted:
            return fdm, z
        (h, w), (hf, wf) = img.shape[-2:], feat_size
        dtype = fdm.dtype
        fdm = F.interpolate(fdm, size=(hf, wf), mode="nearest") if tuple(fdm.shape[-2:]) != (hf, wf) else fdm.clone()
        z = None if z is None else z.clone()
        period, ox, oy = (t.tolist() for t in (grid.period, grid.offset_x, grid.offset_y))
        groups: dict = {}
        for i in shifted:
            groups.setdefault(block_grid.placement(period[i], ox[i], oy[i], (h, w))[3:], []).append(i)
        for ids in groups.values():
            rect = block_grid.rectify(img[ids], [period[i] for i in ids], [ox[i] for i in ids], [oy[i] for i in ids])
            zi = self.gate_logit(rect.image)
            blocks = self.fde(rect.image.to(dtype), dtype, zi)  # (n, C, Hv/8, Wv/8)
            rows, cols = block_grid.block_indices(rect, (h, w), (hf, wf))
            n = torch.arange(len(ids), device=img.device)[:, None, None]
            index = torch.tensor(ids, device=img.device)
            fdm[index] = blocks.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            if z is not None:
                z[index] = zi.to(z.dtype)
        return fdm, z

    def _dedrift(self, feat: torch.Tensor, fdm: torch.Tensor) -> torch.Tensor:
        if self.fused and self.deployed:
            return self._dedrift_fused(feat, fdm)
        d = self.fe(feat)
        return reference.dedrift(feat, d, fdm, self.act)

    def _dedrift_fused(self, feat: torch.Tensor, fdm: torch.Tensor) -> torch.Tensor:
        """The deployed FE-Net and de-drift as six ops (docs/design.md §2): five afd::fe_conv (conv, bias,
        PReLU, the encoder's max-pools and the decoder's up/cat read inside) and afd::repconv_dedrift
        reading cat(up2(dec2), enc1). Under autocast the ops cast their inputs themselves (their Autocast
        kernels); otherwise every tensor runs in feat's dtype."""
        dt = torch.get_autocast_dtype(feat.device.type) if torch.is_autocast_enabled(feat.device.type) else feat.dtype
        *blocks, (weight, bias) = self._fe_op_weights(dt)
        outs = []
        x = feat
        for (w, b, alpha), (_, pool, skip) in zip(blocks, self.fe.FUSED_PLAN):
            x = torch.ops.afd.fe_conv(x, None if skip is None else outs[skip], w, b, alpha, pool)
            outs.append(x)
        return torch.ops.afd.repconv_dedrift(x, weight, bias, fdm, feat, self.act, outs[self.fe.LAST_SKIP])


def crop_block_indices(source_size, resized_size, offset, crop: int, out_size) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (Ho,), columns (Wo,)) of the source's 8x8 block under the centre of each cell of an
    out_size grid over the crop x crop square at ``offset`` (left, top) of the source resized to
    ``resized_size`` (H, W): where the evaluation transform puts each block of the source."""
    (h, w), (nh, nw), (left, top) = source_size, resized_size, offset
    ho, wo = out_size
    # cell centres -> resized-image coordinates -> source pixels (float64: no rounding across an edge)
    ys = ((torch.arange(ho, dtype=torch.float64) + 0.5) * crop / ho + top) * h / nh
    xs = ((torch.arange(wo, dtype=torch.float64) + 0.5) * crop / wo + left) * w / nw
    return ((ys // 8).long().clamp_(0, (h + 7) // 8 - 1), (xs // 8).long().clamp_(0, (w + 7) // 8 - 1))


def _refold_after_load(fde: FDENet, incompatible_keys) -> None:
    """load_state_dict post-hook: a deployed FDE-Net folds the loaded parameters again (same dtype)."""
    if fde._folded is not None:
        with torch.no_grad():
            fde._fold(fde._folded_dtype)


def _recast_after_load(afd: AFDModule, incompatible_keys) -> None:
    """load_state_dict post-hook: the de-drift weights' deploy-time cast made again from the loaded ones."""
    if afd._dedrift_dtype is not None and afd.deployed:
        afd._cast_dedrift(afd._dedrift_dtype)


def use_plain_convs(afd: AFDModule) -> AFDModule:
    """Ablation: train plain 3x3 convs instead of RepConv blocks (same deploy cost).
    Each RepConv becomes its deploy form with a fresh default init (the last stays zero)."""
    for rc in afd.fe.repconvs():
        rc.reparameterize()
        if rc is not afd.fe.last:
            rc.conv.reset_parameters()
    return afd
