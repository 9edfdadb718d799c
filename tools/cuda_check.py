"""One-shot GPU check of the CUDA kernels: parity (both kernel paths) and timings.

    python tools/cuda_check.py            # parity + timings
    python tools/cuda_check.py parity     # parity only (~1 min)
    python tools/cuda_check.py bench      # timings only
    python tools/cuda_check.py tiny       # one small call per kernel (for compute-sanitizer)

Parity compares torch.ops.afd.* (CUDA) with the reference computed in float64 on the same
inputs and rounded to the dtype, with the tests' tolerances and layouts (one home:
afd_ext.reference.testing), over dtypes, layouts, odd sizes, default path and
AFD_CUDA_FORCE_GENERIC=1. Timings: afd_ext.benchmark.timing (CUDA events, median of repeats), the
acceptance sizes.
"""
import os
import sys

import torch
import torch.nn.functional as F

import afd_ext  # noqa: F401  (registers the ops; CUDA kernels from afd_ext._C)
from afd_ext import reference as R
from afd_ext.benchmark.timing import copy_bandwidth_gb_per_s, time_calls
from afd_ext.reference.testing import tol, with_layout

DEV = "cuda"
FAILS = []
# the layouts of the checks below, by their short names
_LAYOUT = {"nchw": "contiguous", "cl": "channels_last", "slice": "noncontiguous"}


def layout(t, kind):
    return with_layout(t, _LAYOUT[kind])


def close(op, name, out, ref, dt, ref_input):
    ref = ref.to(dt)  # the float64 reference rounded to the dtype, as the tests compare
    rtol, atol = tol(dt, ref, op)
    want_cl = (not ref_input.is_contiguous()) and ref_input.is_contiguous(memory_format=torch.channels_last)
    fmt_ok = out.is_contiguous(memory_format=torch.channels_last) if want_cl else out.is_contiguous()
    d = (out.double() - ref.double()).abs()
    ok = fmt_ok and out.dtype == dt and bool((d <= atol + rtol * ref.double().abs()).all())
    print(("OK   " if ok else "FAIL ") + f"{name} maxabs={d.max().item() if d.numel() else 0:.3g}"
          + ("" if fmt_ok else " WRONG MEMORY FORMAT"), flush=True)
    if not ok:
        FAILS.append(name)


def parity():
    g = torch.Generator().manual_seed(0)
    dts = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    for force in ("0", "1"):
        os.environ["AFD_CUDA_FORCE_GENERIC"] = force
        tag = "generic" if force == "1" else "default"
        for dt in dts:
            for shape, kind in [((2, 3, 16, 24), "nchw"), ((3, 3, 40, 136), "cl"), ((1, 3, 24, 8), "slice"),
                                ((0, 3, 8, 8), "nchw")]:
                img = layout((torch.rand(*shape, generator=g) * 255).to(dt).to(DEV), kind)
                if force == "0":
                    close("block_dct", f"block_dct {dt} {shape} {kind}", torch.ops.afd.block_dct(img),
                          R.block_dct(img.double()), dt, img)
                for h1, h2, c in [(128, 64, 32), (128, 64, 64), (37, 20, 9), (160, 96, 96), (16, 130, 3)]:
                    ws = []
                    for o, i, s in [(h1, 192, 0.01), (h2, h1, 0.3), (c, h2, 0.3)]:
                        ws += [(torch.randn(o, i, generator=g) * s).to(dt).to(DEV),
                               (torch.randn(o, generator=g) * 0.1).to(dt).to(DEV)]
                    out = torch.ops.afd.block_dct_fdm(img, *ws)
                    ref = R.block_dct_fdm(img.double(), *[w.double() for w in ws])
                    close("block_dct_fdm", f"block_dct_fdm[{tag}] {dt} {shape} {kind} {(h1, h2, c)}", out, ref, dt,
                          img)
            for (B, Cin, C, Hf, Wf, Hb, Wb) in [(2, 64, 64, 112, 112, 28, 28), (2, 32, 32, 56, 56, 28, 28),
                                                (1, 16, 32, 17, 22, 17, 11), (2, 13, 20, 30, 18, 5, 3),
                                                (1, 24, 40, 9, 7, 9, 7), (0, 8, 8, 8, 8, 2, 2)]:
                for kind in ("nchw", "cl", "mixed", "slice"):
                    for act in ("relu", "relu6", "identity"):
                        x = torch.randn(B, Cin, Hf, Wf, generator=g).to(dt).to(DEV)
                        w = (torch.randn(C, Cin, 3, 3, generator=g) / (9 * Cin) ** 0.5).to(dt).to(DEV)
                        b = (torch.randn(C, generator=g) * 0.1).to(dt).to(DEV) if act != "relu6" else None
                        fdm = torch.rand(B, C, Hb, Wb, generator=g).to(dt).to(DEV)
                        feat = torch.randn(B, C, Hf, Wf, generator=g).to(dt).to(DEV)
                        if kind in ("cl", "mixed"):
                            x = layout(x, "cl")
                        if kind == "cl":
                            feat = layout(feat, "cl")
                        if kind == "slice":
                            x, feat = layout(x, "slice"), layout(feat, "slice")
                        out = torch.ops.afd.repconv_dedrift(x, w, b, fdm, feat, act)
                        ref = R.repconv_dedrift(x.double(), w.double(), None if b is None else b.double(),
                                                fdm.double(), feat.double(), act)
                        close("repconv_dedrift",
                              f"repconv_dedrift[{tag}] {dt} {(B, Cin, C, Hf, Wf, Hb, Wb)} {kind} {act}", out, ref,
                              dt, feat)
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def timeit(fn, reps=20):
    """Median microseconds of ``fn()`` on the device (CUDA events, 3 warm-up calls)."""
    return time_calls(fn, (), DEV, rounds=reps, warmup=3).median * 1e6


def bench():
    torch.manual_seed(0)
    bw = copy_bandwidth_gb_per_s(DEV, nbytes=1 << 29, rounds=20)["peak_gb_per_s"] * 1e9  # bytes/s, read+write
    print(f"device {torch.cuda.get_device_name()}, copy bandwidth {bw / 1e12:.2f} TB/s")
    compiled = torch.compile(R.block_dct_fdm)
    for dt, kind, c in [(torch.float16, "nchw", 32), (torch.bfloat16, "nchw", 32), (torch.float16, "cl", 32),
                        (torch.float16, "nchw", 64), (torch.float32, "nchw", 32)]:
        if True:
            if True:
                img = layout((torch.rand(256, 3, 224, 224, device=DEV) * 255).to(dt), kind)
                ws = []
                for o, i in [(128, 192), (64, 128), (c, 64)]:
                    ws += [(torch.randn(o, i, device=DEV) / i ** 0.5).to(dt), (torch.randn(o, device=DEV) * 0.1).to(dt)]
                t_op = timeit(lambda: torch.ops.afd.block_dct_fdm(img, *ws))
                t_ref = timeit(lambda: R.block_dct_fdm(img, *ws), reps=5)
                t_cmp = timeit(lambda: compiled(img, *ws), reps=10)  # recompiles per dtype/layout
                floor = (img.numel() * img.element_size() + 256 * c * 28 * 28 * img.element_size()) / bw * 1e6
                print(f"block_dct_fdm {dt} {kind} C={c}: cuda {t_op:.0f} us | eager ref {t_ref:.0f} us "
                      f"({t_ref / t_op:.1f}x) | compiled ref {t_cmp:.0f} us ({t_cmp / t_op:.1f}x) | "
                      f"bandwidth floor {floor:.0f} us ({100 * floor / t_op:.0f}% of floor)", flush=True)
                t_dct = timeit(lambda: torch.ops.afd.block_dct(img))
                floor_dct = 2 * img.numel() * img.element_size() / bw * 1e6
                print(f"block_dct {dt} {kind}: cuda {t_dct:.0f} us (floor {floor_dct:.0f} us)")
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        for kind in ("cl", "nchw"):
            for cin, c in ((64, 64), (32, 32), (16, 32), (64, 32)):
                x = layout(torch.randn(256, cin, 112, 112, device=DEV).to(dt), kind)
                feat = layout(torch.randn(256, c, 112, 112, device=DEV).to(dt), kind)
                w = (torch.randn(c, cin, 3, 3, device=DEV) / (9 * cin) ** 0.5).to(dt)
                b = (torch.randn(c, device=DEV) * 0.1).to(dt)
                fdm = torch.rand(256, c, 28, 28, device=DEV).to(dt)
                t_op = timeit(lambda: torch.ops.afd.repconv_dedrift(x, w, b, fdm, feat, "relu"))
                t_ref = timeit(lambda: R.repconv_dedrift(x, w, b, fdm, feat, "relu"), reps=5)

                def native():  # cuDNN conv in the input dtype + elementwise
                    up = fdm.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
                    return F.relu(feat + F.conv2d(x, w, b, padding=1) * up)
                t_nat = timeit(native, reps=5)
                floor = (x.numel() + 2 * feat.numel()) * x.element_size() / bw * 1e6
                print(f"repconv_dedrift {dt} {kind} Cin={cin} C={c}: cuda {t_op:.0f} us | eager ref {t_ref:.0f} us "
                      f"({t_ref / t_op:.1f}x) | native eager {t_nat:.0f} us ({t_nat / t_op:.1f}x) | "
                      f"floor {floor:.0f} us ({100 * floor / t_op:.0f}%)", flush=True)


def tiny():
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        for kind in ("nchw", "cl"):
            img = layout((torch.rand(2, 3, 40, 48, device=DEV) * 255).to(dt), kind)
            ws = []
            for o, i in [(128, 192), (64, 128), (40, 64)]:
                ws += [(torch.randn(o, i, device=DEV) / i ** 0.5).to(dt), (torch.randn(o, device=DEV) * 0.1).to(dt)]
            torch.ops.afd.block_dct(img)
            torch.ops.afd.block_dct_fdm(img, *ws)
            x = layout(torch.randn(2, 32, 20, 34, device=DEV).to(dt), kind)
            feat = layout(torch.randn(2, 40, 20, 34, device=DEV).to(dt), kind)
            w = torch.randn(40, 32, 3, 3, device=DEV).to(dt)
            fdm = torch.rand(2, 40, 5, 17, device=DEV).to(dt)
            torch.ops.afd.repconv_dedrift(x, w, None, fdm, feat, "relu6")
    torch.cuda.synchronize()
    print("tiny: done")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "parity"):
        parity()
        print(f"parity: {len(FAILS)} failures")
    if what in ("all", "bench"):
        bench()
    if what == "tiny":
        tiny()
    sys.exit(1 if FAILS else 0)
