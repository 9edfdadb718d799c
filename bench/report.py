"""Run the kernel microbenchmarks and write JSON + Markdown under bench/results/.

    python bench/report.py [--device cpu|cuda] [--batch N] [--rounds R] [--no-compile] [--out DIR]

Each row: op, shape, dtype, implementation, median time, ratio to the eager reference
and to torch.compile of the reference (both measured in the same run; > 1 means faster),
and the achieved GB/s against the bytes the op must move (inputs read once, output written once).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _git_commit():
    if os.environ.get("AFD_COMMIT"):  # a copied tree (a lent GPU machine) may carry a stale .git
        return os.environ["AFD_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("-k", default=None, help="pytest -k filter")
    a = p.parse_args(argv)
    import torch
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = {**os.environ, "AFD_BENCH_DEVICE": device, "AFD_BENCH_ROUNDS": str(a.rounds),
           "AFD_BENCH_COMPILE": "0" if a.no_compile else "1"}
    if a.batch:
        env["AFD_BENCH_BATCH"] = str(a.batch)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.json"
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider", "-o",
               "python_files=bench_*.py", "-o", "testpaths=bench", f"--benchmark-json={raw}",
               "--benchmark-columns=median,min,rounds"]
        if a.k:
            cmd += ["-k", a.k]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        if rc != 0 or not raw.exists():
            print(f"benchmarks failed (pytest exit {rc})", file=sys.stderr)
            return rc or 1
        data = json.loads(raw.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b["extra_info"]
        rows.append({"op": info["op"], "shape": info["shape"], "dtype": info["dtype"], "impl": info["impl"],
                     "median_ms": b["stats"]["median"] * 1e3, "rounds": b["stats"]["rounds"],
                     "bytes": info.get("bytes")})
    for r in rows:
        group = [g for g in rows if (g["op"], g["shape"], g["dtype"]) == (r["op"], r["shape"], r["dtype"])]
        base = {g["impl"]: g["median_ms"] for g in group}
        r["vs_eager"] = base["eager_reference"] / r["median_ms"] if "eager_reference" in base else None
        r["vs_compile"] = base["compile_reference"] / r["median_ms"] if "compile_reference" in base else None
        r["gb_per_s"] = r["bytes"] / (r["median_ms"] * 1e-3) / 1e9 if r["bytes"] else None
    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(), "batch": a.batch or (32 if device == "cpu" else 256), "rounds": a.rounds,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"kernels_{device}"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Kernel microbenchmarks ({device})", "",
             f"device: {meta['device']} · torch {meta['torch']} · CUDA {meta['cuda']} · {meta['date']} · "
             f"commit {meta['commit']} · batch {meta['batch']} · median of {a.rounds} rounds, warm-up excluded", "",
             "| op | shape | dtype | impl | median ms | x eager | x compile | GB/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in rows:
        lines.append(f"| {r['op']} | {r['shape']} | {r['dtype'].replace('torch.', '')} | {r['impl']} | "
                     f"{r['median_ms']:.2f} | {f(r['vs_eager'], '.2f')} | {f(r['vs_compile'], '.2f')} | "
                     f"{f(r['gb_per_s'], '.1f')} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
