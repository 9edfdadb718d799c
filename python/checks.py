"""Argument checks shared by the Python backends (reference, Triton) and the fake kernels.

The C++/CUDA kernels raise the same exception types with the same wording
(``csrc/afd_checks.h``): ValueError for shapes and devices, TypeError for dtypes.
These checks are where the shape contract of every op (see ``functional``) is enforced:
empty outputs are allowed, layers over no inputs (Cin, h1 or h2 = 0) are not.
"""
from __future__ import annotations

import torch

from .constants import ACTIVATIONS, BLOCK, N_DCT_CHANNELS

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_float(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float32, float64, float16 or bfloat16), got {t.dtype}")


def check_image(img: torch.Tensor, uint8: bool = False) -> None:
    """(B, 3, H, W), H and W multiples of 8; floating, or also uint8 where the op takes it
    (``uint8=True``: block_dct_fdm, whose compute dtype is then w1's; check_fde_weights)."""
    is_tensor = isinstance(img, torch.Tensor)
    if uint8 and is_tensor and img.dtype not in (torch.uint8, *FLOAT_DTYPES):
        raise TypeError(f"img must be uint8 or a floating tensor (float32, float64, float16 or bfloat16) of "
                        f"w1's dtype, got {img.dtype}")
    if not (uint8 and is_tensor and img.dtype == torch.uint8):
        check_float("img", img)
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"img must have shape (B, 3, H, W) (RGB, 0..255), got {tuple(img.shape)}")
    h, w = img.shape[-2:]
    if h % BLOCK or w % BLOCK:
        raise ValueError(f"img height and width must be multiples of {BLOCK}, got {h}x{w}")


def check_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; they must match")


def check_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; they must be on one device")


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    check_float(name, t)
    check_dtype(name, t, ref_name, ref)
    check_device(name, t, ref_name, ref)


def check_shape(name: str, t: torch.Tensor, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_fde_weights(img, w1, b1, w2, b2, w3, b3) -> None:
    """The FDE weights of block_dct_fdm (after check_image(img, uint8=True)): floating, all of
    img's dtype (a floating img) or all of w1's (a uint8 img), all on img's device. So w1's dtype
    is the op's compute and output dtype either way."""
    dtype_ref = ("w1", w1) if img.dtype == torch.uint8 else ("img", img)
    for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3)):
        check_float(name, t)
        check_dtype(name, t, *dtype_ref)
        check_device(name, t, "img", img)
    fan_in = N_DCT_CHANNELS
    for w_name, w, b_name, b, rows in (("w1", w1, "b1", b1, "h1"), ("w2", w2, "b2", b2, "h2"),
                                        ("w3", w3, "b3", b3, "C")):
        if w.dim() != 2 or w.shape[1] != fan_in:
            raise ValueError(f"{w_name} must have shape ({rows}, {fan_in}), got {tuple(w.shape)}")
        if rows != "C" and w.shape[0] == 0:  # a hidden layer of no units: the next one has no inputs
            raise ValueError(f"{w_name} must have at least one row ({rows} >= 1; a layer over no inputs is not "
                             f"defined), got {tuple(w.shape)}")
        check_shape(b_name, b, (w.shape[0],))
        fan_in = w.shape[0]


def check_gate_head(img, weight, bias) -> None:
    """block_dct_gate's head (after check_image(img, uint8=True)): weight (1, 192), bias (1,), floating,
    of one dtype (the op's compute and output dtype), on img's device; img may be of any floating dtype."""
    check_float("weight", weight)
    check_device("weight", weight, "img", img)
    check_shape("weight", weight, (1, N_DCT_CHANNELS))
    check_same("bias", bias, "weight", weight)
    check_shape("bias", bias, (1,))


def check_gate_logit(img, gate) -> None:
    """block_dct_fdm's optional gate: one logit per image, (B,), floating, on img's device."""
    if gate is None:
        return
    check_float("gate", gate)
    check_device("gate", gate, "img", img)
    check_shape("gate", gate, (img.shape[0],))


def grid_divides(cells: int, pixels: int) -> bool:
    """An FDM axis of ``cells`` tiles a feature axis of ``pixels``: cells divides pixels, and an
    empty FDM axis goes only with an empty feature axis."""
    return pixels % cells == 0 if cells else pixels == 0


def half_size(n: int) -> int:
    """ceil(n / 2): a 2x2 max-pool's output size (ceil mode), and the coarse size a skip of n takes."""
    return (n + 1) // 2


def check_conv_input(x, skip, size: str = "H, W") -> tuple:
    """The input of a 3x3 conv of the FE-Net: ``x`` alone, or ``cat(up2(x), skip)`` (the decoder's:
    ``x`` at the coarse size ceil(H/2) x ceil(W/2) of ``skip``, both floating of one dtype and device).
    Returns (B, Cin, H, W) of that input; Cin >= 1 (a conv over no input channels is not defined)."""
    check_float("x", x)
    if skip is None:
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, Cin, {size}), got {tuple(x.shape)}")
        b, cin, h, w = x.shape
        if cin == 0:
            raise ValueError(f"x must have at least one channel (Cin >= 1; a conv over no input channels is not "
                             f"defined), got {tuple(x.shape)}")
        return b, cin, h, w
    check_same("skip", skip, "x", x)
    if skip.dim() != 4:
        raise ValueError(f"skip must have shape (B, Cs, {size}), got {tuple(skip.shape)}")
    b, cs, h, w = skip.shape
    if x.dim() != 4 or x.shape[0] != b or tuple(x.shape[2:]) != (half_size(h), half_size(w)):
        raise ValueError(f"x must have shape ({b}, Cx, {half_size(h)}, {half_size(w)}) for a skip of shape "
                         f"{tuple(skip.shape)} (ceil(H/2) x ceil(W/2): it is upsampled 2x to the skip's size), "
                         f"got {tuple(x.shape)}")
    if x.shape[1] == 0 or cs == 0:
        raise ValueError(f"x and skip must have at least one channel each, got {tuple(x.shape)} and "
                         f"{tuple(skip.shape)}")
    return b, x.shape[1] + cs, h, w


def check_conv3x3_weights(x, weight, bias, cin: int, out_name: str) -> int:
    """A 3x3 conv's weight (out, cin, 3, 3) and bias (out,) or None, of x's dtype and device; returns out
    (named ``out_name`` in the message)."""
    check_same("weight", weight, "x", x)
    if weight.dim() != 4 or weight.shape[1] != cin or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"weight must have shape ({out_name}, {cin}, 3, 3), got {tuple(weight.shape)}")
    c = weight.shape[0]
    if bias is not None:
        check_same("bias", bias, "x", x)
        check_shape("bias", bias, (c,))
    return c


def check_fe_conv(x, skip, weight, bias, alpha, pool) -> None:
    _, cin, _, _ = check_conv_input(x, skip)
    c = check_conv3x3_weights(x, weight, bias, cin, "Cout")
    check_same("alpha", alpha, "x", x)
    check_shape("alpha", alpha, (c,))
    if not isinstance(pool, bool):
        raise TypeError(f"pool must be a bool, got {type(pool).__name__}")


def check_repconv_dedrift(x, weight, bias, fdm, feat, act, skip=None) -> None:
    b, cin, hf, wf = check_conv_input(x, skip, "Hf, Wf")
    c = check_conv3x3_weights(x, weight, bias, cin, "C")
    check_same("feat", feat, "x", x)
    check_shape("feat", feat, (b, c, hf, wf))
    check_same("fdm", fdm, "x", x)
    if fdm.dim() != 4 or fdm.shape[0] != b or fdm.shape[1] != c:
        raise ValueError(f"fdm must have shape ({b}, {c}, Hb, Wb), got {tuple(fdm.shape)}")
    hb, wb = fdm.shape[2:]
    if not (grid_divides(hb, hf) and grid_divides(wb, wf)):
        raise ValueError(
            f"fdm grid {hb}x{wb} must divide the feature grid {hf}x{wf} (Hf % Hb == Wf % Wb == 0)")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    """The memory format every backend gives its output: channels_last when ``t`` is
    channels_last (and not also plainly contiguous), else contiguous. Mirrors ATen's
    ``suggest_memory_format`` for 4-D tensors."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
