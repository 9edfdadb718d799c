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
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


IMPLS = ["eager_reference", "compile_reference", "cpp", "cuda", "triton"]


def kernel_ratios(rows: list, peak_gb_per_s) -> list:
    """vs_eager / vs_compile within each (op, shape, dtype, layout) group, pct_of_peak per row."""
    from afd_ext.benchmark.results import add_ratios
    add_ratios(rows, "impl", ("op", "shape", "dtype", "layout"),
               {"vs_eager": lambda _: "eager_reference", "vs_compile": lambda _: "compile_reference"},
               "median_ms", lower_is_faster=True)
    for r in rows:
        r["pct_of_peak"] = 100.0 * r["gb_per_s"] / peak_gb_per_s if peak_gb_per_s else None
    return rows


def kernels_markdown(result: dict) -> str:
    """The Markdown table of a kernels run (``afd_ext.benchmark.results.format_markdown``)."""
    from afd_ext.benchmark.results import fmt, format_markdown
    facts = (f"device: {result['device']} · torch {result['torch']} · CUDA {result['cuda']} · {result['date']} · "
             f"commit {result['commit']} · batch {result['batch']} · median of {result['rounds']} rounds "
             f"({result['timer']}), warm-up excluded, backend fixed outside the timed call · measured copy "
             f"bandwidth {fmt(result.get('peak_gb_per_s'), '.1f')} GB/s")
    columns = [("op", False, lambda r: r["op"]), ("shape", False, lambda r: str(r["shape"])),
               ("dtype", False, lambda r: r["dtype"]), ("layout", False, lambda r: r.get("layout") or "-"),
               ("impl", False, lambda r: r["impl"]), ("median ms", True, lambda r: fmt(r["median_ms"], ".3f")),
               ("x eager", True, lambda r: fmt(r["vs_eager"], ".2f")),
               ("x compile", True, lambda r: fmt(r["vs_compile"], ".2f")),
               ("GB/s", True, lambda r: fmt(r["gb_per_s"], ".1f")),
               ("% of copy bw", True, lambda r: fmt(r["pct_of_peak"], ".1f"))]
    return format_markdown(result, f"Kernel microbenchmarks ({result['device_type']})", facts,
                           [(None, [], columns, result["rows"])])


def result_from_records(records) -> dict:
    """The JSON summary of one kernels run from its JSON Lines records: meta, the copy bandwidth,
    the rows with their ratios; ``complete`` False when the run did not reach its end."""
    from afd_ext.benchmark.results import summarize
    result = summarize(records, ("row", "copy_bandwidth"))
    peak = (result.pop("copy_bandwidths") or [{"peak_gb_per_s": None}])[0]
    rows = kernel_ratios(result.pop("rows"), peak["peak_gb_per_s"])
    rows.sort(key=lambda r: (r["op"], r["dtype"], r["shape"], r.get("layout") or "",  # measured by value, read by op
                             IMPLS.index(r["impl"]) if r["impl"] in IMPLS else len(IMPLS)))
    return {**result, **peak, "rows": rows}


def write_summary(result: dict, stem: Path) -> str:
    from afd_ext.benchmark.results import write_result
    text = kernels_markdown(result)
    write_result(result, stem.with_suffix(".json"), text)
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

    from afd_ext.benchmark.results import Recorder, read_runs, run_meta
    from afd_ext.benchmark.timing import copy_bandwidth_gb_per_s
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = f"kernels_{device}{a.name}"
    stem = Path(a.out) / run
    rows = Path(a.rows) if a.rows else stem.with_suffix(".jsonl")
    rc = 0
    if not a.rebuild:
        rec = Recorder(rows, run, "kernels", fresh=not a.rows)  # the run's own file: started afresh
        batch = a.batch or (32 if device == "cpu" else 256)
        meta = run_meta(device, batch=batch, rounds=a.rounds or (7 if device == "cpu" else 50),
                        timer="CUDA events" if device == "cuda" else "time.perf_counter", filter=a.k)
        meta["commit"] = meta["commit"] or "unknown"
        rec.write("meta", **meta)
        rec.write("copy_bandwidth", **copy_bandwidth_gb_per_s(device))
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
            rec.write("end")
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
