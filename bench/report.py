"""Run the kernel microbenchmarks and write JSON + Markdown under bench/results/.

    python bench/report.py [--device cpu|cuda] [--batch N] [--rounds R] [--no-compile] [-k EXPR]
                           [--out DIR] [--name SUFFIX]

Writes ``kernels_<device><SUFFIX>.json`` and ``.md``. Each row: op, shape, dtype, layout,
implementation, median and min time (device time by CUDA events on GPU; warm-up excluded; the
backend fixed outside the timed call), ratio to the eager reference and to torch.compile of the
reference (both measured in the same run; > 1 means faster), and the achieved GB/s against the
bytes the op must move (inputs read once, output written once) with its share of the device's
copy bandwidth, ``peak_gb_per_s``, measured in the same run (a large device-to-device copy).
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


def add_ratios(rows: list, peak_gb_per_s: float) -> list:
    """vs_eager / vs_compile within each (op, shape, dtype, layout) group, pct_of_peak per row."""
    def key(r):
        return r["op"], r["shape"], r["dtype"], r.get("layout")
    for r in rows:
        base = {g["impl"]: g["median_ms"] for g in rows if key(g) == key(r)}
        r["vs_eager"] = base["eager_reference"] / r["median_ms"] if "eager_reference" in base else None
        r["vs_compile"] = base["compile_reference"] / r["median_ms"] if "compile_reference" in base else None
        r["pct_of_peak"] = 100.0 * r["gb_per_s"] / peak_gb_per_s if peak_gb_per_s else None
    return rows


def format_markdown(result: dict) -> str:
    lines = [f"# Kernel microbenchmarks ({result['device_type']})", "",
             f"device: {result['device']} · torch {result['torch']} · CUDA {result['cuda']} · {result['date']} · "
             f"commit {result['commit']} · batch {result['batch']} · median of {result['rounds']} rounds "
             f"({result['timer']}), warm-up excluded, backend fixed outside the timed call · measured copy "
             f"bandwidth {result['peak_gb_per_s']:.1f} GB/s", "",
             "| op | shape | dtype | layout | impl | median ms | x eager | x compile | GB/s | % of copy bw |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r.get('layout', '-')} | {r['impl']} | "
                     f"{r['median_ms']:.3f} | {f(r['vs_eager'], '.2f')} | {f(r['vs_compile'], '.2f')} | "
                     f"{f(r['gb_per_s'], '.1f')} | {f(r['pct_of_peak'], '.1f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="timed calls per row (default CPU 7, GPU 50)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="", help="suffix of the result files (kernels_<device><name>.json)")
    p.add_argument("-k", default=None, help="pytest -k filter")
    a = p.parse_args(argv)
    import torch

    from afd_ext.utils import atomic_write_bytes, git_commit, write_json
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = {**os.environ, "AFD_BENCH_DEVICE": device, "AFD_BENCH_COMPILE": "0" if a.no_compile else "1"}
    if a.rounds:
        env["AFD_BENCH_ROUNDS"] = str(a.rounds)
    if a.batch:
        env["AFD_BENCH_BATCH"] = str(a.batch)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.json"
        env["AFD_BENCH_RAW"] = str(raw)
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider", "-o",
               "python_files=bench_*.py", "-o", "testpaths=bench"]
        if a.k:
            cmd += ["-k", a.k]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        if rc != 0 or not raw.exists():
            print(f"benchmarks failed (pytest exit {rc})", file=sys.stderr)
            return rc or 1
        data = json.loads(raw.read_text())
    rows = add_ratios(data.pop("rows"), data["peak_gb_per_s"])
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "device_type": device, "torch": torch.__version__, "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit() or "unknown", "batch": rows[0]["batch"], "rounds": rows[0]["rounds"],
        "timer": "CUDA events" if device == "cuda" else "time.perf_counter",
        **data, "rows": rows,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"kernels_{device}{a.name}"
    write_json(stem.with_suffix(".json"), result)
    text = format_markdown(result)
    atomic_write_bytes(stem.with_suffix(".md"), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
