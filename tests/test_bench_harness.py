"""The kernel benchmark harness (bench/): what it times and what it writes, on CPU. No timing
is asserted; the benchmarks themselves run from bench/report.py."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

import afd_ext

ROOT = Path(__file__).resolve().parents[1]


def _bench_module(name):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"afd_bench_{name}", ROOT / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_backend_is_chosen_once_outside_the_timed_calls(monkeypatch):
    conftest = _bench_module("conftest")
    activations, seen = [], []
    real_activate = afd_ext.ops._activate
    monkeypatch.setattr(afd_ext.ops, "_activate", lambda name: (activations.append(name), real_activate(name)))
    op = torch.ops.afd.block_dct
    monkeypatch.setattr(conftest, "make_callable",
                        lambda op_name, impl: lambda img: (seen.append(afd_ext.current_backend("cpu")), op(img)))
    img = torch.rand(1, 3, 16, 16) * 255
    row = conftest.measure_row("block_dct", "reference", "reference", (img,), 1000, device="cpu", rounds=5,
                               shape="s", dtype="float32")
    assert activations == ["reference", None]  # one switch in, one out, whatever the number of calls
    assert seen == ["reference"] * 8  # 3 warm-up + 5 timed calls, all on the chosen backend
    assert row["rounds"] == 5 and row["batch"] == 1 and row["median_ms"] > 0
    assert row["gb_per_s"] == 1000 / (row["median_ms"] * 1e-3) / 1e9


def test_time_calls_and_copy_bandwidth_on_cpu():
    timing = _bench_module("timing")
    calls = []
    times = timing.time_calls(lambda x: calls.append(x), (1,), "cpu", rounds=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)
    peak = timing.copy_bandwidth_gb_per_s("cpu", nbytes=1 << 20, rounds=3)
    assert peak["peak_gb_per_s"] > 0 and peak["copy_bytes"] == 1 << 20


def test_report_writes_rows_with_ratios_and_the_measured_copy_bandwidth(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--device", "cpu", "--batch", "1",
                        "--rounds", "2", "--no-compile", "-k", "repconv_dedrift and not 64",
                        "--out", str(tmp_path), "--name", "_test"], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    result = json.loads((tmp_path / "kernels_cpu_test.json").read_text())
    for key in ("device", "torch", "cuda", "date", "commit", "batch", "rounds", "timer", "peak_gb_per_s",
                "copy_bytes"):
        assert key in result, key
    assert result["peak_gb_per_s"] > 0 and result["batch"] == 1
    rows = result["rows"]
    assert {r["impl"] for r in rows} >= {"eager_reference", "cpp"}
    assert {r["layout"] for r in rows} == {"nchw", "nhwc"}
    for row in rows:
        assert row["gb_per_s"] > 0 and row["pct_of_peak"] > 0 and row["vs_eager"] > 0
        assert row["pct_of_peak"] == 100 * row["gb_per_s"] / result["peak_gb_per_s"]
    assert "% of copy bw" in (tmp_path / "kernels_cpu_test.md").read_text()
