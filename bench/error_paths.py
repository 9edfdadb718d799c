"""Each op's input checks, per backend and device, each in a child process, so that a crash
(segfault, abort) shows up as such instead of killing the run:

    python bench/error_paths.py [BACKEND ...]   # one line per case; exit 1 if any case crashed

A case passes when the child raises the expected Python exception type.
"""
import subprocess
import sys

CASES = {  # name: (code after `import torch, afd_ext; op = torch.ops.afd`, expected exception)
    "block_dct H%8": ("op.block_dct(torch.rand(1, 3, 12, 16, device=D))", "ValueError"),
    "block_dct rank": ("op.block_dct(torch.rand(3, 16, 16, device=D))", "ValueError"),
    "block_dct int64": ("op.block_dct(torch.zeros(1, 3, 8, 8, dtype=torch.int64, device=D))", "TypeError"),
    "block_dct_fdm w1 shape": (
        "op.block_dct_fdm(torch.rand(1, 3, 16, 16, device=D), torch.rand(128, 191, device=D), "
        "torch.rand(128, device=D), torch.rand(64, 128, device=D), torch.rand(64, device=D), "
        "torch.rand(8, 64, device=D), torch.rand(8, device=D))", "ValueError"),
    "repconv_dedrift act": (
        "op.repconv_dedrift(torch.rand(1, 4, 16, 16, device=D), torch.rand(8, 4, 3, 3, device=D), None, "
        "torch.rand(1, 8, 2, 2, device=D), torch.rand(1, 8, 16, 16, device=D), 'gelu')", "ValueError"),
}


def main():
    import torch
    import afd_ext
    pairs = [(b, "cpu") for b in afd_ext.available_backends() if b in ("reference", "cpp")]
    if torch.cuda.is_available():
        pairs += [(b, "cuda") for b in afd_ext.available_backends() if b in ("reference", "cuda", "triton")]
    if sys.argv[1:]:
        pairs = [p for p in pairs if p[0] in sys.argv[1:]]
    crashed = 0
    for backend, device in pairs:
        for name, (code, expected) in CASES.items():
            prog = (f"import torch, afd_ext\nop = torch.ops.afd\nD = {device!r}\n"
                    f"with afd_ext.use_backend({backend!r}):\n"
                    f"    try:\n        {code}\n    except {expected} as e:\n        print('raised', repr(e)[:90])\n"
                    f"    else:\n        print('NO ERROR')\n")
            r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True)
            ok = r.returncode == 0 and r.stdout.startswith("raised")
            crashed += r.returncode < 0
            last = (r.stdout.strip() or r.stderr.strip().splitlines()[-1:] or ["?"])
            last = last if isinstance(last, str) else last[0]
            print(f"{'ok  ' if ok else 'FAIL'} {backend:9s} {device:4s} {name:24s} rc={r.returncode} {last[:110]}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
