"""Run the kernel microbenchmarks and write JSON + Markdown under bench/results/.

    python bench/report.py [--device cpu|cuda] [--batch N] [--rounds R] [--no-compile] [-k EXPR]
                           [--out DIR] [--name SUFFIX] [--rows FILE] [--rebuild]

Writes ``kernels_<device><SUFFIX>.json`` and ``.md``. Each row: op, shape, dtype, layout,
implementation, median and min time (device time by CUDA events on GPU; warm-up excluded; the
backend fixed outside the timed call), ratio to the eager reference and to torch.compile of the
reference (both measured in the same run; > 1 means faster), and the achieved GB/s against the
bytes the op must move (inputs read once, output written once) with its share of the device's
copy bandwidth, ``peak_gb_per_s``, measured in the same run (a large device-to-device copy).

The run's records go to ``--rows`` (JSON Lines; default ``kernels_<device><SUFFIX>.jsonl`` in
--out, started afresh; a given file is appended to): its meta record and the copy bandwidth
first, then each row the moment it is measured, in the order of value (bench/conftest.py). The
tables are built from that file at the end, also when the benchmarks failed part-way;
``--rebuild`` builds them from the file alone (a run that was cut: see also
``python bench/session.py rebuild FILE``).
"""
import argparse
import datetime
import os
import subprocess
import sys
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
    peak = result.get("peak_gb_per_s")
    lines = [f"# Kernel microbenchmarks ({result['device_type']})", "",
             f"device: {result['device']} · torch {result['torch']} · CUDA {result['cuda']} · {result['date']} · "
             f"commit {result['commit']} · batch {result['batch']} · median of {result['rounds']} rounds "
             f"({result['timer']}), warm-up excluded, backend fixed outside the timed call · measured copy "
             f"bandwidth {'-' if peak is None else format(peak, '.1f')} GB/s", ""]
    if result.get("complete") is False:
        lines += ["**Cut short**: the rows below are those measured before the run ended (rebuilt from its "
                  "JSON Lines records).", ""]
    lines += ["| op | shape | dtype | layout | impl | median ms | x eager | x compile | GB/s | % of copy bw |",
              "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r.get('layout', '-')} | {r['impl']} | "
                     f"{r['median_ms']:.3f} | {f(r['vs_eager'], '.2f')} | {f(r['vs_compile'], '.2f')} | "
                     f"{f(r['gb_per_s'], '.1f')} | {f(r['pct_of_peak'], '.1f')} |")
    return "\n".join(lines) + "\n"


def result_from_records(records) -> dict:
    """The JSON summary of one kernels run from its JSON Lines records: meta, the copy bandwidth,
    the rows with their ratios; ``complete`` False when the run did not reach its end."""
    def strip(r):
        return {k: v for k, v in r.items() if k not in ("run", "source", "record")}
    meta = next((strip(r) for r in records if r.get("record") == "meta"), {})
    peak = next((strip(r) for r in records if r.get("record") == "copy_bandwidth"), {"peak_gb_per_s": None})
    rows = add_ratios([strip(r) for r in records if r.get("record") == "row"], peak["peak_gb_per_s"])
    impls = ["eager_reference", "compile_reference", "cpp", "cuda", "triton"]
    rows.sort(key=lambda r: (r["op"], r["dtype"], r["shape"], r.get("layout") or "",  # measured by value, read by op
                             impls.index(r["impl"]) if r["impl"] in impls else len(impls)))
    return {**meta, **peak, "complete": any(r.get("record") == "end" for r in records), "rows": rows}


def write_summary(result: dict, stem: Path) -> str:
    from afd_ext.utils import atomic_write_bytes, write_json
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_suffix(".json"), result)
    text = format_markdown(result)
    atomic_write_bytes(stem.with_suffix(".md"), text.encode())
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="timed calls per row (default CPU 7, GPU 50)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="", help="suffix of the result files (kernels_<device><name>.json)")
    p.add_argument("--rows", default=None, help="JSON Lines file of the records (default: beside the JSON)")
    p.add_argument("--rebuild", action="store_true", help="only build the tables from --rows (no benchmark runs)")
    p.add_argument("-k", default=None, help="pytest -k filter")
    a = p.parse_args(argv)
    import torch

    from afd_ext.e2e_benchmark import append_record, read_runs
    from afd_ext.utils import git_commit
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = f"kernels_{device}{a.name}"
    stem = Path(a.out) / run
    rows = Path(a.rows) if a.rows else stem.with_suffix(".jsonl")
    rc = 0
    if not a.rebuild:
        rows.parent.mkdir(parents=True, exist_ok=True)
        if not a.rows and rows.exists():
            rows.unlink()  # the run's own file: start it afresh

        def record(kind, **data):
            append_record(rows, {"run": run, "source": "kernels", "record": kind, **data})
        batch = a.batch or (32 if device == "cpu" else 256)
        record("meta", device=torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
               device_type=device, torch=torch.__version__, cuda=torch.version.cuda, threads=torch.get_num_threads(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               commit=git_commit() or "unknown", batch=batch, rounds=a.rounds or (7 if device == "cpu" else 50),
               timer="CUDA events" if device == "cuda" else "time.perf_counter", filter=a.k)
        sys.path.insert(0, str(HERE))
        from timing import copy_bandwidth_gb_per_s
        record("copy_bandwidth", **copy_bandwidth_gb_per_s(device))
        if device == "cuda":
            torch.cuda.empty_cache()
        env = {**os.environ, "AFD_BENCH_DEVICE": device, "AFD_BENCH_COMPILE": "0" if a.no_compile else "1",
               "AFD_BENCH_ROWS": str(rows.resolve()), "AFD_BENCH_RUN": run, "AFD_BENCH_BATCH": str(batch)}
        if a.rounds:
            env["AFD_BENCH_ROUNDS"] = str(a.rounds)
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider", "-o",
               "python_files=bench_*.py", "-o", "testpaths=bench"]
        if a.k:
            cmd += ["-k", a.k]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        if rc == 0:
            record("end")
        else:
            print(f"benchmarks failed (pytest exit {rc}); the tables hold the rows measured before", file=sys.stderr)
    records = read_runs(rows).get(run, []) if rows.exists() else []
    if not any(r.get("record") == "row" for r in records):
        print(f"no rows of run {run} in {rows}", file=sys.stderr)
        return rc or 1
    print(write_summary(result_from_records(records), stem))
    return rc


if __name__ == "__main__":
    sys.exit(main())
