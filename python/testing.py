"""What parity with the reference means, written once for the tests (tests/helpers.py) and the
tools (tools/cuda_check.py): the tolerance of an op's result per dtype (docs/design.md §2) and the
memory layouts every op is checked in."""
import torch

#: The memory layouts inputs are given in: as they are, channels_last, and a strided view (every
#: other column of a tensor twice as wide).
LAYOUTS = ("contiguous", "channels_last", "noncontiguous")


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout (one of LAYOUTS)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        out = wide[..., ::2]
        assert not out.is_contiguous() or t.numel() <= 1 or t.shape[-1] == 1
        return out
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


#: Unit roundoff u = 2^-p of the 16-bit types (p significand bits, the implicit one included).
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
#: Per op, the absolute error of a float16/bfloat16 result beyond its final rounding, in units of
#: u x spread(reference output): what the op's kernels round to 16 bits on the way (docs/design.md §2).
HALF_ATOL_UNITS = {
    # float32 arithmetic all through (the tensor-core repconv: exact 16-bit products, float32 sums);
    # only the result is rounded, so what is left is float32 summation error (measured on the CPU
    # backends: < 1e-4 of these units).
    "block_dct": 1 / 8,
    "fe_conv": 1 / 8,  # the same, and the pool commutes with the final rounding (both monotone)
    "repconv_dedrift": 1 / 8,
    # The 192 DCT coefficients rounded to the type before layer 1 (the reference in the type and the
    # Triton kernel; the CUDA tensor-core path rounds the folded first layer and the hidden layers to
    # float16), the error then carried through two more layers. Measured on ~1500 random cases with
    # weights scaled as tests/test_block_dct_fdm.py scales them: up to 1.3 units where conversions
    # round to nearest, 2.2 for Triton under TRITON_INTERPRET=1 (its float32 -> bfloat16 conversion
    # truncates), 0.5 for the tensor-core kernel under kernels/emu (40 cases); 6 leaves a margin of
    # 2.7 over the worst.
    "block_dct_fdm": 6,
}
#: (rtol, atol) of the float64 and float32 results.
FIXED_TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4)}


def spread(ref) -> float:
    """The range the reference's finite values span, zero included (max(ref, 0) - min(ref, 0)): the
    size of what an op sums, which its rounding errors scale with."""
    finite = ref[torch.isfinite(ref)].double()
    if finite.numel() == 0:
        return 0.0
    return float(finite.max().clamp(min=0) - finite.min().clamp(max=0))


def tol(dtype, ref=None, op=None):
    """(rtol, atol) for an op's result in ``dtype`` against the float64 reference rounded to ``dtype``,
    as docs/design.md §2 sets them. float32 and float64: fixed. float16 and bfloat16 (u = 2^-11, 2^-8):
    rtol = 2u, one ulp of the result, since a kernel's float32 value and the float64 one may round to
    neighbours; atol = HALF_ATOL_UNITS[op] * u * spread(ref) for what ``op`` rounds on the way, which
    scales with the size of the values it sums, not with each result (a fixed atol is too loose on a
    0..1 map and meaningless on features of size 30)."""
    if dtype in UNIT_ROUNDOFF:
        if ref is None or op not in HALF_ATOL_UNITS:
            raise ValueError(f"{dtype} tolerances need the reference output and the op "
                             f"(one of {sorted(HALF_ATOL_UNITS)}), got op={op!r}")
        u = UNIT_ROUNDOFF[dtype]
        return 2 * u, HALF_ATOL_UNITS[op] * u * spread(ref)
    return FIXED_TOL[dtype]
