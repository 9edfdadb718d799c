"""CPU emulation check of the CUDA kernels' index math (no GPU needed).

Compiles kernels/*.cu and csrc/cuda/*_cuda.cpp as plain C++ against emu_cuda.h (one OS thread
per CUDA thread; __syncthreads, ldmatrix, mma.sync and cp.async emulated), registers the
launchers as torch.ops.afd_emu.* on CPU tensors and compares them with the reference
(python/functional.py) over layouts, dtypes (uint8 images for block_dct_fdm too), odd sizes and
both kernel paths.
Slow (minutes): every CTA runs as 128-256 threads. Numerics are the host's, not the GPU's
(no fast-math), so this checks indexing, tiling, padding and fragment layouts, not speed.

    python kernels/emu/check.py [dct] [fdm] [repconv] [fe] [skip] [poison] [redteam] [sweep] [quick]

``quick`` (tests/test_cuda_emulation.py runs it): block_dct, one tensor-core case of each other op
(fe_conv with and without skip and pool, repconv_dedrift with a skip) and the red-team cases: every
launcher and kernel path once, in about a minute after the build.
"""
import os
import random
import sys
import tempfile
import time

import torch
from torch.utils.cpp_extension import load

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from python import functional as R  # noqa: E402


def build():
    build_dir = os.path.join(tempfile.gettempdir(), "afd_emu_build")
    os.makedirs(build_dir, exist_ok=True)
    flags = ["-O1", "-std=c++20", "-include", os.path.join(HERE, "emu_cuda.h"), "-DAFD_EMU",
             "-I/usr/local/cuda/include", "-I" + os.path.join(ROOT, "csrc"), "-I" + os.path.join(ROOT, "kernels"),
             "-I" + os.path.join(ROOT, "csrc", "cuda"), "-Wno-unused-variable", "-Wno-attributes"]
    srcs = [os.path.join(HERE, f) for f in ("emu_block_dct.cpp", "emu_block_dct_fdm.cpp",
                                            "emu_repconv_dedrift.cpp", "emu_fe_conv.cpp", "emu_launchers.cpp")]
    load(name="afd_emu_ext", sources=srcs, extra_cflags=flags, extra_ldflags=["-lpthread"],
         is_python_module=False, build_directory=build_dir, verbose=False)


FAILS = []


def report(ok, msg):
    print(("OK   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)


def layout(t, kind):
    if kind == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "slice":
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


def check_format(out, ref_input):
    want_cl = (not ref_input.is_contiguous()) and ref_input.is_contiguous(memory_format=torch.channels_last)
    return out.is_contiguous(memory_format=torch.channels_last) if want_cl else out.is_contiguous()


def check_dct(E):
    tol = {torch.float32: 2e-3, torch.float64: 1e-9, torch.float16: 1.0, torch.bfloat16: 8.0}
    for dt in tol:
        for shape, kind in [((2, 3, 16, 24), "nchw"), ((1, 3, 8, 136), "cl"), ((2, 3, 24, 16), "slice"),
                            ((0, 3, 8, 8), "nchw")]:
            img = layout((torch.rand(*shape) * 255).to(dt), kind)
            out, ref = E.block_dct(img), R.block_dct(img)
            d = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
            report(d <= tol[dt] and check_format(out, img), f"block_dct {dt} {shape} {kind} maxabs={d:.3g}")


def fdm_weights(h1, h2, c, dt, g):
    ws = []
    for o, i in [(h1, 192), (h2, h1), (c, h2)]:
        ws += [((torch.rand(o, i, generator=g) * 2 - 1) / i ** 0.5).to(dt),
               ((torch.rand(o, generator=g) * 2 - 1) / i ** 0.5).to(dt)]
    return ws


def check_fdm(E):
    g = torch.Generator().manual_seed(0)
    tol = {torch.float32: 2e-5, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 2e-2}
    cases = [((2, 16, 24), (20, 12, 5), "nchw", 2), ((1, 24, 48), (128, 64, 32), "cl", 2),
             ((3, 8, 16), (7, 3, 2), "slice", 2), ((3, 48, 64), (40, 24, 10), "cl", 1),
             ((1, 40, 24), (70, 100, 70), "slice", 2), ((2, 32, 40), (128, 64, 64), "nchw", 2),
             ((1, 16, 24), (48, 130, 20), "cl", 2)]
    for force in ("1", "0"):
        os.environ["AFD_CUDA_FORCE_GENERIC"] = force
        dts = [torch.float32, torch.float64, torch.bfloat16] if force == "1" else [torch.float16, torch.bfloat16]
        for dt in dts:
            for (b, h, w), (h1, h2, c), kind, sms in cases:
                if force == "1" and h1 * h2 > 128 * 64:
                    continue
                E.set_sms(sms)
                img = layout((torch.rand(b, 3, h, w, generator=g) * 255).round().to(dt), kind)
                ws = fdm_weights(h1, h2, c, dt, g)
                t = time.time()
                out = E.block_dct_fdm(img, *ws)
                ref = R.block_dct_fdm(img.double(), *[x.double() for x in ws])
                d = (out.double() - ref).abs().max().item()
                report(d <= tol[dt] and check_format(out, img),
                       f"block_dct_fdm {'generic' if force == '1' else 'default'} {dt} {(b, h, w)} {(h1, h2, c)} "
                       f"{kind} sms={sms} ({time.time() - t:.1f}s) maxabs vs fp64 ref={d:.3g}")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def check_fdm_uint8(E):
    """uint8 images, on both paths the launcher has: by default (float16/bfloat16 weights: widened
    to the weights' dtype, then the tensor-core kernel; else the generic kernel reading uint8) and
    forced generic (reads the pixels as uint8, writes the weights' dtype). Each close to the fp64
    reference and bit-equal to the same path on img.to(dtype)."""
    g = torch.Generator().manual_seed(1)
    tol = {torch.float32: 2e-5, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 2e-2}
    cases = [((2, 16, 24), (20, 12, 5), "nchw", 2), ((1, 24, 48), (128, 64, 32), "cl", 2),
             ((3, 8, 16), (7, 3, 2), "slice", 1)]
    for force in ("0", "1"):
        os.environ["AFD_CUDA_FORCE_GENERIC"] = force
        for dt in tol:
            for (b, h, w), (h1, h2, c), kind, sms in cases:
                E.set_sms(sms)
                img = layout(torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8), kind)
                ws = fdm_weights(h1, h2, c, dt, g)
                t = time.time()
                out = E.block_dct_fdm(img, *ws)
                same = E.block_dct_fdm(img.to(dt), *ws)
                ref = R.block_dct_fdm(img.double(), *[x.double() for x in ws])
                d = (out.double() - ref).abs().max().item()
                report(d <= tol[dt] and out.dtype == dt and check_format(out, img) and torch.equal(out, same),
                       f"block_dct_fdm uint8 image, {dt} weights {(b, h, w)} {(h1, h2, c)} {kind} sms={sms} "
                       f"{'generic' if force == '1' else 'default'} ({time.time() - t:.1f}s) maxabs vs fp64 "
                       f"ref={d:.3g}, bit-equal to the {dt} image: {torch.equal(out, same)}")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def sweep_fdm(E, n=10, seed=0):
    """Random cases drawn like tests/test_block_dct_fdm.py, half types, tests' tolerances."""
    tol = {torch.float16: (1e-2, 2e-2), torch.bfloat16: (2e-2, 5e-2)}
    rng = random.Random(seed)
    for _ in range(n):
        b, hb, wb = rng.randint(1, 4), rng.randint(1, 8), rng.randint(1, 8)
        h1, h2, c = rng.randint(1, 160), rng.randint(1, 96), rng.randint(1, 96)
        dt = rng.choice(list(tol))
        kind = rng.choice(["nchw", "cl", "slice"])
        g = torch.Generator().manual_seed(rng.randint(0, 2 ** 31 - 1))

        def r(*s, scale=1.0):
            return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dt)
        img = layout((torch.rand(b, 3, 8 * hb, 8 * wb, generator=g, dtype=torch.float64) * 255).to(dt), kind)
        w = [r(h1, 192, scale=0.01), r(h1, scale=0.1), r(h2, h1, scale=0.3), r(h2, scale=0.1), r(c, h2, scale=0.3),
             r(c, scale=0.1)]
        E.set_sms(rng.randint(1, 3))
        out = E.block_dct_fdm(img, *w)
        ref = R.block_dct_fdm(img.double(), *[t.double() for t in w]).to(dt)
        rtol, atol = tol[dt]
        d = (out.float() - ref.float()).abs()
        report(bool((d <= atol + rtol * ref.float().abs()).all()),
               f"block_dct_fdm sweep {dt} {(b, hb, wb, h1, h2, c)} {kind} maxabs={d.max().item():.4f}")


def check_repconv(E):
    tol = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 6e-2}

    def run(dt, B, Cin, C, Hf, Wf, Hb, Wb, kind, act, bias=True, sms=2):
        E.set_sms(sms)
        x = torch.randn(B, Cin, Hf, Wf).to(dt)
        w = (torch.randn(C, Cin, 3, 3) / max(Cin * 9, 1) ** 0.5).to(dt)
        bb = (torch.randn(C) * 0.1).to(dt) if bias else None
        fdm = torch.rand(B, C, Hb, Wb).to(dt)
        feat = torch.randn(B, C, Hf, Wf).to(dt)
        if kind == "cl":
            x, feat = layout(x, "cl"), layout(feat, "cl")
        elif kind == "mixed":
            x = layout(x, "cl")
        elif kind == "slice":
            x = layout(x, "slice")
            fdm = torch.rand(B, C, Wb, Hb).to(dt).transpose(2, 3)
        t = time.time()
        out = E.repconv_dedrift(x, w, bb, fdm, feat, act)
        ref = R.repconv_dedrift(x, w, bb, fdm, feat, act)
        d = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
        report(d <= tol[dt] and check_format(out, feat),
               f"repconv_dedrift {dt} B,Cin,C,Hf,Wf,Hb,Wb={(B, Cin, C, Hf, Wf, Hb, Wb)} {kind} {act} "
               f"{'bias' if bias else 'nobias'} sms={sms} ({time.time() - t:.1f}s) maxabs={d:.3g}")

    os.environ["AFD_CUDA_FORCE_GENERIC"] = "1"
    run(torch.float32, 2, 5, 7, 12, 10, 3, 5, "nchw", "relu")
    run(torch.float32, 1, 16, 40, 9, 35, 9, 7, "cl", "relu6", bias=False)
    run(torch.float64, 1, 9, 33, 10, 33, 5, 11, "slice", "identity")
    run(torch.bfloat16, 2, 3, 4, 8, 8, 1, 1, "mixed", "relu")
    run(torch.float16, 1, 16, 32, 17, 13, 17, 13, "nchw", "relu")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"
    run(torch.float32, 0, 4, 4, 8, 8, 2, 2, "cl", "relu")
    for dt in (torch.float16, torch.bfloat16):
        run(dt, 1, 16, 32, 20, 18, 5, 9, "cl", "relu")
        run(dt, 2, 24, 8, 16, 16, 2, 8, "cl", "relu6", bias=False, sms=1)
        run(dt, 1, 64, 64, 18, 20, 9, 10, "cl", "identity", sms=1)
        run(dt, 1, 16, 32, 20, 18, 5, 9, "nchw", "relu")
        run(dt, 1, 13, 20, 17, 22, 17, 11, "nchw", "relu6", sms=3)
        run(dt, 2, 64, 40, 16, 34, 4, 17, "mixed", "identity", sms=2)
        run(dt, 1, 5, 6, 7, 9, 7, 3, "slice", "relu")  # generic fallback (odd width, NCHW)


# ---------------------------------------------------------------------------------------------
# fe_conv and the skip path of repconv_dedrift

#: |out - ref| <= atol + rtol |ref| against the reference in the same dtype (which computes in
#: float32 and rounds once): the kernels differ only in the accumulation order (half types: about
#: one ulp of the result)
FE_TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12), torch.float16: (2e-3, 2 ** -10),
          torch.bfloat16: (1.6e-2, 2 ** -7)}


def compare(out, ref, dt):
    """(ok, max |out - ref| over finite values, #nonfinite): NaN/+-inf at exactly the reference's
    positions, finite values within FE_TOL."""
    if out.shape != ref.shape or out.dtype != ref.dtype:
        return False, float("inf"), 0
    o, r = out.double(), ref.double()
    same_nan = torch.equal(o.isnan(), r.isnan())
    same_inf = torch.equal(o == float("inf"), r == float("inf")) and torch.equal(o == -float("inf"),
                                                                                  r == -float("inf"))
    fin = r.isfinite() & o.isfinite()
    atol, rtol = FE_TOL[dt]
    d = (o - r).abs()[fin]
    ok = same_nan and same_inf and bool((d <= atol + rtol * r.abs()[fin]).all())
    return ok, (d.max().item() if d.numel() else 0.0), int((~r.isfinite()).sum())


def fe_inputs(g, dt, B, Cx, Cs, C, H, W, kind, bias=True):
    """x (and skip when Cs) for a conv at H x W, weight, bias, alpha; ``kind``: nchw, cl (both
    channels_last), slice (non-contiguous views), mixed (x channels_last, skip NCHW)."""
    hx, wx = ((H + 1) // 2, (W + 1) // 2) if Cs else (H, W)
    x = torch.randn(B, Cx, hx, wx, generator=g).to(dt)
    skip = torch.randn(B, Cs, H, W, generator=g).to(dt) if Cs else None
    cin = Cx + Cs
    w = (torch.randn(C, cin, 3, 3, generator=g) / (9 * cin) ** 0.5).to(dt)
    bb = (torch.randn(C, generator=g) * 0.1).to(dt) if bias else None
    alpha = (torch.rand(C, generator=g) * 0.5).to(dt)
    if kind in ("cl", "mixed"):
        x = layout(x, "cl")
    if kind == "cl" and skip is not None:
        skip = layout(skip, "cl")
    if kind == "slice":
        x = layout(x, "slice")
        if skip is not None:
            skip = layout(skip, "slice")
    return x, skip, w, bb, alpha


def poison(x, skip, w, bb, alpha):
    """NaN / +-inf in every input: a NaN pixel of x, +inf in skip (or x), an infinite weight (its
    taps on the zero padding give NaN), an infinite bias, a NaN slope."""
    x, w, alpha = x.clone(), w.clone(), alpha.clone()
    x[0, 0, x.shape[2] // 2, x.shape[3] // 2] = float("nan")
    if skip is not None:
        skip = skip.clone()
        skip[-1, -1, -1, 0] = float("inf")
    else:
        x[-1, -1, -1, 0] = float("inf")
    w[min(1, w.shape[0] - 1), 0, 0, 2] = -float("inf")
    if bb is not None:
        bb = bb.clone()
        bb[-1] = float("inf")
    alpha[0] = float("nan")
    return x, skip, w, bb, alpha


def kernel_path(E):
    """Which kernel the last launch ran: the tensor-core kernels take dynamic shared memory, the
    generic ones none."""
    return "mma" if E.last_dyn_smem() > 0 else "generic"


def run_fe(E, g, force, dt, B, Cx, Cs, C, H, W, kind, pool, bias=True, sms=2, nan=False, tag="", want=None):
    """One fe_conv case against the reference; ``want``: the kernel it must run ('mma' by default
    unless forced generic)."""
    want = want or ("generic" if force == "1" else "mma")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = force
    E.set_sms(sms)
    args = fe_inputs(g, dt, B, Cx, Cs, C, H, W, kind, bias)
    if nan:
        args = poison(*args)
    x, skip, w, bb, alpha = args
    t = time.time()
    out = E.fe_conv(x, skip, w, bb, alpha, pool)
    path = kernel_path(E)
    ref = R.fe_conv(x, skip, w, bb, alpha, pool)
    ok, d, nonfin = compare(out, ref, dt)
    ok = ok and check_format(out, x if skip is None else skip) and path == want
    report(ok, f"{tag}fe_conv [{path}] {'generic' if force == '1' else 'default'} {dt} B,Cx,Cs,C,H,W="
               f"{(B, Cx, Cs, C, H, W)} {kind} pool={pool} {'bias' if bias else 'nobias'} sms={sms}"
               f"{' poisoned (%d nonfinite)' % nonfin if nan else ''} ({time.time() - t:.1f}s) maxabs={d:.3g}")


def run_rc_skip(E, g, force, dt, B, Cx, Cs, C, Hf, Wf, Hb, Wb, kind, act, sms=2, nan=False, tag="", want=None):
    want = want or ("generic" if force == "1" else "mma")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = force
    E.set_sms(sms)
    x, skip, w, bb, _ = fe_inputs(g, dt, B, Cx, Cs, C, Hf, Wf, kind)
    fdm = torch.rand(B, C, Hb, Wb, generator=g).to(dt)
    feat = torch.randn(B, C, Hf, Wf, generator=g).to(dt)
    if kind == "cl":
        feat = layout(feat, "cl")
    elif kind == "slice":
        fdm = torch.rand(B, C, Wb, Hb, generator=g).to(dt).transpose(2, 3)
    if nan:
        x, skip, w, bb, _ = poison(x, skip, w, bb, torch.zeros(C, dtype=dt))
    t = time.time()
    out = E.repconv_dedrift(x, w, bb, fdm, feat, act, skip)
    path = kernel_path(E)
    ref = R.repconv_dedrift(x, w, bb, fdm, feat, act, skip)
    ok, d, nonfin = compare(out, ref, dt)
    report(ok and check_format(out, feat) and path == want,
           f"{tag}repconv_dedrift skip [{path}] {'generic' if force == '1' else 'default'} {dt} B,Cx,Cs,C,Hf,Wf,Hb,Wb="
           f"{(B, Cx, Cs, C, Hf, Wf, Hb, Wb)} {kind} {act} sms={sms}"
           f"{' poisoned (%d nonfinite)' % nonfin if nan else ''} ({time.time() - t:.1f}s) maxabs={d:.3g}")


def check_fe(E):
    """fe_conv: both paths, pool on/off, skip on/off, odd sizes, every layout and dtype."""
    g = torch.Generator().manual_seed(2)
    # generic kernel: every dtype and layout, odd sizes, channel blocks past 32, Cin chunks past 8
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        run_fe(E, g, "1", dt, 2, 5, 0, 7, 11, 13, "nchw", True)
        run_fe(E, g, "1", dt, 1, 3, 6, 33, 9, 35, "slice", False)
        run_fe(E, g, "1", dt, 2, 4, 5, 6, 7, 9, "mixed", True, bias=False)
    run_fe(E, g, "1", torch.float32, 1, 12, 0, 40, 17, 34, "cl", False)
    run_fe(E, g, "1", torch.float32, 1, 7, 9, 8, 1, 1, "nchw", True)
    run_fe(E, g, "1", torch.float64, 1, 2, 2, 5, 2, 33, "cl", True)
    # tensor-core kernel (float16 / bfloat16, channels_last): piece widths 8/4/2 in and out, one and
    # two n-tile groups (C <= 32, <= 64), odd sizes, several tiles per CTA (sms=1)
    for dt in (torch.float16, torch.bfloat16):
        run_fe(E, g, "0", dt, 1, 16, 0, 8, 20, 18, "cl", True)
        run_fe(E, g, "0", dt, 1, 16, 0, 32, 17, 19, "cl", False, sms=1)
        run_fe(E, g, "0", dt, 2, 8, 8, 4, 13, 15, "cl", False)
        run_fe(E, g, "0", dt, 1, 4, 4, 8, 19, 17, "cl", True, bias=False, sms=3)
        run_fe(E, g, "0", dt, 1, 32, 32, 64, 16, 16, "cl", True)
        run_fe(E, g, "0", dt, 1, 64, 0, 16, 9, 33, "cl", True, sms=1)
        run_fe(E, g, "0", dt, 1, 6, 0, 6, 7, 5, "cl", True)
        run_fe(E, g, "0", dt, 1, 2, 4, 10, 1, 3, "cl", True)
        run_fe(E, g, "0", dt, 1, 8, 8, 16, 15, 17, "mixed", True, want="generic")  # skip NCHW: NCHW output
        run_fe(E, g, "0", dt, 1, 3, 0, 8, 9, 9, "cl", False, want="generic")        # odd Cin
        run_fe(E, g, "0", dt, 1, 8, 0, 8, 9, 12, "nchw", True, want="generic")      # NCHW output
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def check_skip(E):
    """repconv_dedrift with a skip: both kernels (MMA NHWC and NCHW), odd sizes, every dtype."""
    g = torch.Generator().manual_seed(3)
    for dt in (torch.float32, torch.float64, torch.bfloat16):
        run_rc_skip(E, g, "1", dt, 2, 3, 5, 7, 11, 10, 11, 5, "nchw", "relu")
        run_rc_skip(E, g, "1", dt, 1, 4, 4, 9, 9, 35, 3, 7, "slice", "identity")
    run_rc_skip(E, g, "1", torch.float16, 1, 8, 4, 40, 10, 12, 5, 6, "cl", "relu6")
    for dt in (torch.float16, torch.bfloat16):
        run_rc_skip(E, g, "0", dt, 1, 8, 8, 32, 18, 20, 9, 10, "cl", "relu")
        run_rc_skip(E, g, "0", dt, 1, 4, 4, 64, 17, 15, 17, 5, "cl", "identity", sms=1)
        run_rc_skip(E, g, "0", dt, 2, 16, 8, 16, 12, 18, 6, 9, "nchw", "relu6")
        run_rc_skip(E, g, "0", dt, 1, 5, 7, 8, 13, 14, 13, 7, "nchw", "relu")
        run_rc_skip(E, g, "0", dt, 1, 2, 6, 6, 9, 7, 3, 7, "cl", "relu")
        run_rc_skip(E, g, "0", dt, 1, 4, 4, 8, 9, 9, 3, 3, "nchw", "relu", want="generic")  # odd width NCHW
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def check_poison(E):
    """NaN / +-inf inputs: the nonfinite outputs sit where the reference's do, on both paths."""
    g = torch.Generator().manual_seed(4)
    for force, dt, kind in (("1", torch.float32, "nchw"), ("1", torch.float64, "slice"), ("1", torch.float16, "cl"),
                            ("0", torch.float16, "cl"), ("0", torch.bfloat16, "cl")):
        run_fe(E, g, force, dt, 1, 8, 0, 8, 9, 11, kind, True, nan=True)
        run_fe(E, g, force, dt, 1, 4, 4, 8, 10, 7, kind, False, nan=True)
        run_rc_skip(E, g, force, dt, 1, 4, 4, 8, 10, 8, 5, 4, kind, "relu", nan=True)
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"


def check_quick(E):
    """One case per kernel path: block_dct (all dtypes and layouts), block_dct_fdm on the tensor-core
    path (float16, channels_last) and generic path (float32), repconv_dedrift tensor-core and generic."""
    check_dct(E)
    g = torch.Generator().manual_seed(1)
    for force, dt, kind, tol in (("0", torch.float16, "cl", 5e-3), ("1", torch.float32, "nchw", 2e-5)):
        os.environ["AFD_CUDA_FORCE_GENERIC"] = force
        E.set_sms(2)
        img = layout((torch.rand(2, 3, 16, 24, generator=g) * 255).round().to(dt), kind)
        ws = fdm_weights(40, 24, 10, dt, g)
        out = E.block_dct_fdm(img, *ws)
        d = (out.double() - R.block_dct_fdm(img.double(), *[x.double() for x in ws])).abs().max().item()
        report(d <= tol and check_format(out, img), f"quick block_dct_fdm force_generic={force} {dt} {kind} "
                                                    f"maxabs={d:.3g}")
    for force, dt, kind, tol in (("0", torch.bfloat16, "cl", 6e-2), ("1", torch.float32, "nchw", 1e-4)):
        os.environ["AFD_CUDA_FORCE_GENERIC"] = force
        E.set_sms(2)
        x = layout(torch.randn(1, 16, 12, 10, generator=g).to(dt), kind)
        w = (torch.randn(32, 16, 3, 3, generator=g) / 12).to(dt)
        bb = (torch.randn(32, generator=g) * 0.1).to(dt)
        fdm = torch.rand(1, 32, 3, 5, generator=g).to(dt)
        feat = layout(torch.randn(1, 32, 12, 10, generator=g).to(dt), kind)
        out = E.repconv_dedrift(x, w, bb, fdm, feat, "relu6")
        d = (out.double() - R.repconv_dedrift(x, w, bb, fdm, feat, "relu6").double()).abs().max().item()
        report(d <= tol and check_format(out, feat), f"quick repconv_dedrift force_generic={force} {dt} {kind} "
                                                     f"maxabs={d:.3g}")
    # fe_conv: tensor-core (skip + pool; no skip, no pool) and generic (skip + pool, poisoned);
    # repconv_dedrift with a skip on both kernels
    run_fe(E, g, "0", torch.bfloat16, 1, 8, 8, 16, 13, 11, "cl", True, tag="quick ")
    run_fe(E, g, "0", torch.float16, 1, 16, 0, 8, 9, 10, "cl", False, tag="quick ")
    run_fe(E, g, "1", torch.float32, 2, 3, 5, 7, 11, 9, "nchw", True, nan=True, tag="quick ")
    run_rc_skip(E, g, "0", torch.float16, 1, 4, 4, 16, 13, 12, 13, 6, "cl", "relu", tag="quick ")
    run_rc_skip(E, g, "1", torch.float32, 1, 3, 5, 7, 9, 12, 3, 4, "slice", "relu6", tag="quick ")
    os.environ["AFD_CUDA_FORCE_GENERIC"] = "0"
    check_redteam(E)


def huge_view(values, strides, offset=2 ** 31):
    """``values`` as a view whose offsets pass 2^31 elements, in a sparse file mapped shared (only the
    pages touched become memory); it starts 2^31 in, so a wrapped int32 offset reads wrong values."""
    extent = offset + sum((n - 1) * s for n, s in zip(values.shape, strides)) + 1
    path = os.path.join(tempfile.gettempdir(), f"afd_emu_huge_{os.getpid()}.bin")
    storage = torch.from_file(path, shared=True, size=extent, dtype=values.dtype)
    os.unlink(path)
    view = storage.as_strided(values.shape, strides, offset)
    view.copy_(values)
    return view


def check_redteam(E):
    """The ops' shape contract (python/functional.py) and offsets past 2^31 elements, through the
    CUDA launchers and kernels (tests/test_op_shapes.py checks the CPU backends the same way)."""
    g = torch.Generator().manual_seed(0)

    def img(b, h, w):
        return torch.rand(b, 3, h, w, generator=g) * 255

    def rc(b, cin, c, hf, wf, hb, wb):
        return [torch.randn(b, cin, hf, wf, generator=g), torch.randn(c, cin, 3, 3, generator=g) * 0.3,
                torch.randn(c, generator=g), torch.rand(b, c, hb, wb, generator=g),
                torch.randn(b, c, hf, wf, generator=g)]

    def fde(h1, h2, c):
        return fdm_weights(h1, h2, c, torch.float32, g)

    def fe(b, cx, cs, c, h, w, pool=True):
        hx, wx = ((h + 1) // 2, (w + 1) // 2) if cs else (h, w)
        return [torch.randn(b, cx, hx, wx, generator=g), torch.randn(b, cs, h, w, generator=g) if cs else None,
                torch.randn(c, cx + cs, 3, 3, generator=g) * 0.3, torch.randn(c, generator=g),
                torch.rand(c, generator=g), pool]
    empty = [("block_dct B=0", E.block_dct, R.block_dct, [img(0, 16, 8)]),
             ("block_dct H=0", E.block_dct, R.block_dct, [img(2, 0, 16)]),
             ("block_dct_fdm W=0", E.block_dct_fdm, R.block_dct_fdm, [img(1, 8, 0), *fde(4, 3, 2)]),
             ("block_dct_fdm C=0", E.block_dct_fdm, R.block_dct_fdm, [img(1, 16, 8), *fde(4, 3, 0)]),
             ("block_dct_fdm uint8 B=0", E.block_dct_fdm, R.block_dct_fdm,
              [img(0, 16, 8).to(torch.uint8), *fde(4, 3, 2)]),
             ("repconv_dedrift B=0", E.repconv_dedrift, R.repconv_dedrift, [*rc(0, 2, 4, 6, 4, 3, 2), "relu"]),
             ("repconv_dedrift C=0", E.repconv_dedrift, R.repconv_dedrift, [*rc(2, 2, 0, 6, 4, 3, 2), "relu"]),
             ("repconv_dedrift Hf=Hb=0", E.repconv_dedrift, R.repconv_dedrift, [*rc(2, 2, 4, 0, 4, 0, 2), "relu"]),
             ("fe_conv B=0", E.fe_conv, R.fe_conv, fe(0, 2, 0, 4, 6, 5)),
             ("fe_conv C=0", E.fe_conv, R.fe_conv, fe(2, 2, 3, 0, 6, 5)),
             ("fe_conv skip H=0", E.fe_conv, R.fe_conv, fe(1, 2, 3, 4, 0, 5)),
             ("fe_conv W=0 no pool", E.fe_conv, R.fe_conv, fe(1, 2, 0, 4, 3, 0, False))]
    for name, op, ref, args in empty:
        out, want = op(*args), ref(*args)
        report(out.shape == want.shape and out.dtype == want.dtype and out.numel() == 0,
               f"redteam empty {name} -> {tuple(out.shape)} {out.dtype}")
    raising = [("repconv_dedrift Cin=0", E.repconv_dedrift, [*rc(2, 0, 4, 6, 4, 3, 2), "relu"], "Cin >= 1"),
               ("block_dct_fdm h1=0", E.block_dct_fdm, [img(1, 8, 8), *fde(0, 3, 2)], "h1 >= 1"),
               ("block_dct_fdm h2=0", E.block_dct_fdm, [img(1, 8, 8), *fde(4, 0, 2)], "h2 >= 1"),
               ("fe_conv Cin=0", E.fe_conv, fe(1, 0, 0, 4, 6, 5), "Cin >= 1")]
    for name, op, args, words in raising:
        try:
            op(*args)
            report(False, f"redteam {name} did not raise")
        except ValueError as exc:
            report(words in str(exc), f"redteam {name} raises ValueError: {str(exc).splitlines()[0]}")
    s = 2 ** 30
    big_img = huge_view(img(1, 8, 16), (3 * s, s, 16, 1))
    x, w, b, fdm, feat = rc(2, 2, 3, 4, 4, 2, 2)
    big = [huge_view(x, (2 * s, s, 4, 1)), w, b, huge_view(fdm, (3 * s, s, 2, 1)), huge_view(feat, (3 * s, s, 4, 1))]
    big_u8 = huge_view(img(1, 8, 16).to(torch.uint8), (3 * s, s, 16, 1))
    fw = fde(4, 3, 2)
    fx, fs, fwt, fb, fa, _ = fe(2, 2, 3, 4, 5, 6)
    big_fe = [huge_view(fx, (2 * s, s, 3, 1)), huge_view(fs, (3 * s, s, 6, 1)), fwt, fb, fa, True]
    for name, op, ref, args in [("block_dct", E.block_dct, R.block_dct, [big_img]),
                                ("block_dct_fdm", E.block_dct_fdm, R.block_dct_fdm, [big_img, *fw]),
                                ("block_dct_fdm uint8", E.block_dct_fdm, R.block_dct_fdm, [big_u8, *fw]),
                                ("repconv_dedrift", E.repconv_dedrift, R.repconv_dedrift, [*big, "relu6"]),
                                ("fe_conv skip pool", E.fe_conv, R.fe_conv, big_fe)]:
        d = (op(*args) - ref(*args)).abs().max().item()
        report(d <= 1e-3, f"redteam {name} with offsets past 2^31 maxabs={d:.3g}")


def main():
    which = set(sys.argv[1:]) or {"dct", "fdm", "repconv", "fe", "skip", "poison", "redteam"}
    t = time.time()
    build()
    torch.ops.load_library(os.path.join(tempfile.gettempdir(), "afd_emu_build", "afd_emu_ext.so"))
    print(f"built in {time.time() - t:.0f}s", flush=True)
    E = torch.ops.afd_emu
    if "dct" in which:
        check_dct(E)
    if "fdm" in which:
        check_fdm(E)
        check_fdm_uint8(E)
    if "sweep" in which:
        sweep_fdm(E)
    if "repconv" in which:
        check_repconv(E)
    if "fe" in which:
        check_fe(E)
    if "skip" in which:
        check_skip(E)
    if "poison" in which:
        check_poison(E)
    if "redteam" in which:
        check_redteam(E)
    if "quick" in which:
        check_quick(E)
    print(f"{len(FAILS)} failures")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
