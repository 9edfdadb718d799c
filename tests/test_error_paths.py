"""Each op's input checks, per backend and device, in a child process, so that a crash
(segfault, abort) shows up as a failed test naming the case instead of killing the run.
A case passes when the child raises the expected Python exception type."""
import subprocess
import sys

import pytest
import torch

import afd_ext

CASES = {  # name: (code after `import torch, afd_ext; op = torch.ops.afd`, expected exception)
    "block_dct H%8": ("op.block_dct(torch.rand(1, 3, 12, 16, device=D))", "ValueError"),
    "block_dct rank": ("op.block_dct(torch.rand(3, 16, 16, device=D))", "ValueError"),
    "block_dct int64": ("op.block_dct(torch.zeros(1, 3, 8, 8, dtype=torch.int64, device=D))", "TypeError"),
    "block_dct_fdm int32 img": (
        "op.block_dct_fdm(torch.zeros(1, 3, 8, 8, dtype=torch.int32, device=D), torch.rand(4, 192, device=D), "
        "torch.rand(4, device=D), torch.rand(2, 4, device=D), torch.rand(2, device=D), "
        "torch.rand(3, 2, device=D), torch.rand(3, device=D))", "TypeError"),
    "block_dct_fdm bool img": (
        "op.block_dct_fdm(torch.zeros(1, 3, 8, 8, dtype=torch.bool, device=D), torch.rand(4, 192, device=D), "
        "torch.rand(4, device=D), torch.rand(2, 4, device=D), torch.rand(2, device=D), "
        "torch.rand(3, 2, device=D), torch.rand(3, device=D))", "TypeError"),
    "block_dct_fdm uint8 img, int weights": (
        "op.block_dct_fdm(torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device=D), "
        "torch.zeros(4, 192, dtype=torch.int32, device=D), torch.rand(4, device=D), torch.rand(2, 4, device=D), "
        "torch.rand(2, device=D), torch.rand(3, 2, device=D), torch.rand(3, device=D))", "TypeError"),
    "block_dct_fdm w1 shape": (
        "op.block_dct_fdm(torch.rand(1, 3, 16, 16, device=D), torch.rand(128, 191, device=D), "
        "torch.rand(128, device=D), torch.rand(64, 128, device=D), torch.rand(64, device=D), "
        "torch.rand(8, 64, device=D), torch.rand(8, device=D))", "ValueError"),
    "repconv_dedrift act": (
        "op.repconv_dedrift(torch.rand(1, 4, 16, 16, device=D), torch.rand(8, 4, 3, 3, device=D), None, "
        "torch.rand(1, 8, 2, 2, device=D), torch.rand(1, 8, 16, 16, device=D), 'gelu')", "ValueError"),
}


def _pairs():
    backends = afd_ext.available_backends()
    pairs = [(b, "cpu") for b in backends if b in ("reference", "cpp")]
    pairs += [pytest.param(b, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA device"))
              for b in ("reference", "cuda", "triton")]
    return pairs


@pytest.mark.parametrize("backend,device", _pairs())
def test_input_checks_raise_and_never_crash(backend, device):
    if device == "cuda" and backend not in afd_ext.available_backends():
        pytest.skip(f"backend {backend} is not built here")
    # One child per backend runs every case and reports each; a crash ends it with a signal.
    lines = ["import torch, afd_ext", "op = torch.ops.afd", f"D = {device!r}"]
    for name, (code, expected) in CASES.items():
        lines += [f"print({name!r}, flush=True)", f"with afd_ext.use_backend({backend!r}):", "    try:",
                  f"        {code}", f"    except {expected}:", "        print('raised', flush=True)",
                  "    else:", "        print('NO ERROR', flush=True)"]
    r = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=300)
    out = r.stdout.split("\n")
    assert r.returncode == 0, f"child died (rc={r.returncode}) after: {out[-3:]}\n{r.stderr[-2000:]}"
    results = dict(zip(out[0::2], out[1::2]))
    assert results == {name: "raised" for name in CASES}, results
