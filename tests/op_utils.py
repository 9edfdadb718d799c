"""Helpers shared by the per-op test modules."""
import os

import torch

import afd_ext

LAYOUTS = ("contiguous", "channels_last", "noncontiguous")
# Examples per backend in the hypothesis parity tests. The Triton interpreter is slow on CPU,
# so it gets fewer; together every op sees well over 200 random cases per CI run.
EXAMPLES = {"reference": 40, "cpp": 200, "cuda": 200, "triton": int(os.environ.get("AFD_TRITON_EXAMPLES", "100"))}


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        # every other column of a twice-as-wide tensor
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        out = wide[..., ::2]
        assert not out.is_contiguous() or t.numel() <= 1 or t.shape[-1] == 1
        return out
    raise ValueError(layout)


def dtypes_for(backend: str, device: str):
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    if backend == "triton":
        return [torch.float32]
    return [torch.float32, torch.float64]


def run(backend: str, op, *args):
    with afd_ext.use_backend(backend):
        return op(*args)


def assert_close(out, ref, dtype):
    from conftest import tol
    rtol, atol = tol(dtype)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=atol, equal_nan=True)
