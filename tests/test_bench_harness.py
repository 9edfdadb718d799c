"""The kernel benchmark harness (bench/): what it times and what it writes, on CPU. No timing
is asserted; the benchmarks themselves run from bench/report.py."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
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
    from afd_ext.benchmark import timing
    calls = []
    times = timing.time_calls(lambda x: calls.append(x), (1,), "cpu", rounds=4, warmup=2).times
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
    # every record went to the JSON Lines file as it was made: meta and copy bandwidth first, the end last
    records = [json.loads(line) for line in (tmp_path / "kernels_cpu_test.jsonl").read_text().splitlines()]
    kinds = [r["record"] for r in records]
    assert kinds[:2] == ["meta", "copy_bandwidth"] and kinds[-1] == "end" and kinds.count("row") == len(rows)
    assert {r["run"] for r in records} == {"kernels_cpu_test"} and result["complete"] is True


def test_rows_run_in_the_order_of_their_value():
    """bfloat16 first; within it the compiled CUDA kernels, then the eager reference, Triton, and
    torch.compile last; the ops with a bandwidth target before block_dct; channels_last first."""
    conftest = _bench_module("conftest")
    rows = [("float16", "cuda", "repconv_dedrift", "nhwc"), ("bfloat16", "triton", "block_dct_fdm", "nhwc"),
            ("bfloat16", "compile_reference", "block_dct_fdm", "nhwc"), ("bfloat16", "cuda", "block_dct", "nhwc"),
            ("bfloat16", "eager_reference", "repconv_dedrift", "nchw"), ("bfloat16", "cuda", "repconv_dedrift", "nchw"),
            ("bfloat16", "cuda", "block_dct_fdm", "nchw"), ("bfloat16", "cuda", "block_dct_fdm", "nhwc")]
    ordered = sorted(rows, key=lambda r: conftest.value_key({"dtype": getattr(torch, r[0]), "impl": r[1],
                                                              "layout": r[3]}, r[2]))
    assert ordered == [("bfloat16", "cuda", "block_dct_fdm", "nhwc"), ("bfloat16", "cuda", "block_dct_fdm", "nchw"),
                       ("bfloat16", "cuda", "repconv_dedrift", "nchw"), ("bfloat16", "cuda", "block_dct", "nhwc"),
                       ("bfloat16", "eager_reference", "repconv_dedrift", "nchw"),
                       ("bfloat16", "triton", "block_dct_fdm", "nhwc"),
                       ("bfloat16", "compile_reference", "block_dct_fdm", "nhwc"),
                       ("float16", "cuda", "repconv_dedrift", "nhwc")]


def test_a_cut_run_is_summarized_from_the_rows_it_wrote(tmp_path):
    """Three runs appended to one JSON Lines file (as tools/gpu_session.sh does), the last cut in the
    middle of a line: `bench/session.py rebuild` writes each run's JSON + Markdown, marks the runs
    without an end record as cut short, and keeps every complete row."""
    from afd_ext.benchmark.results import append_record
    session = _bench_module("session")
    rows = tmp_path / "rows.jsonl"

    def rec(run, source, kind, **data):
        append_record(rows, {"run": run, "source": source, "record": kind, **data})
    e2e_meta = dict(device="cpu", device_type="cpu", torch="t", cuda=None, afd_backend="cpp", date="d", commit="c",
                    afd_width="small", channels_last=True)
    rec("e2e_cuda_b256_interleaved", "e2e", "meta", **e2e_meta,
        interleaved={"configs": ["classifier", "afd_deploy_fused"], "repeats": 2, "calls_per_turn": 1})
    for config, ips, vs in (("classifier", 100.0, 1.0), ("afd_deploy_fused", 90.0, 0.9)):
        rec("e2e_cuda_b256_interleaved", "e2e", "row", config=config, backbone="resnet50", batch=256,
            dtype="bfloat16", device="cuda", images_per_s=ips, latency_ms_median=1.0, latency_ms_p95=1.0, runs=2,
            threads=1, vs_first=vs, vs_first_min=vs, vs_first_max=vs)
    rec("e2e_cuda_b256_interleaved", "e2e", "end")
    table = {"total_us_per_call": 10.0, "kernel_launches_per_call": 2.0,
             "rows": [{"kernel": "k", "calls_per_call": 2.0, "us_per_call": 10.0, "share": 1.0}]}
    rec("profile_cuda", "profile", "meta", device="cpu", device_type="cpu", torch="t", cuda=None, date="d",
        commit="c", batch=1, dtype="bfloat16", width="small", iters=1, top=25)
    rec("profile_cuda", "profile", "table", backbone="resnet50", part="classifier", table=table)
    rec("kernels_cuda", "kernels", "meta", device="cpu", device_type="cpu", torch="t", cuda=None, date="d",
        commit="c", batch=1, rounds=2, timer="t")
    rec("kernels_cuda", "kernels", "copy_bandwidth", peak_gb_per_s=10.0, copy_bytes=1, copy_median_ms=1.0,
        copy_rounds=1)
    for impl, ms in (("cuda", 1.0), ("eager_reference", 4.0)):
        rec("kernels_cuda", "kernels", "row", op="repconv_dedrift", impl=impl, shape="s", dtype="bfloat16",
            layout="nhwc", median_ms=ms, gb_per_s=5.0 / ms, batch=1, rounds=2)
    with open(rows, "a") as fh:
        fh.write('{"run": "kernels_cuda", "source": "kernels", "record": "row", "op": "bl')  # killed mid-write
    out = tmp_path / "summaries"
    lines = session.rebuild(rows, out, tmp_path / "summary.md")
    assert len(lines) == 3 and sum("CUT SHORT" in line for line in lines) == 2, lines
    inter = json.loads((out / "e2e_cuda_b256_interleaved.json").read_text())
    assert inter["complete"] is True and [r["vs_first"] for r in inter["rows"]] == [1.0, 0.9]
    kernels = json.loads((out / "kernels_cuda.json").read_text())
    assert kernels["complete"] is False and len(kernels["rows"]) == 2
    cuda = next(r for r in kernels["rows"] if r["impl"] == "cuda")
    assert cuda["vs_eager"] == 4.0 and cuda["pct_of_peak"] == 50.0
    profile = json.loads((out / "profile_cuda.json").read_text())
    assert profile["complete"] is False and list(profile["backbones"]["resnet50"]) == ["classifier"]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("Cut short") == 2 and "| resnet50 | afd_deploy_fused | 256 | bfloat16 |" in summary


def test_preflight_names_each_missing_piece(monkeypatch):
    """No commit, or one that is not a hash, and (where a GPU is needed) no CUDA: each is named."""
    session = _bench_module("session")
    problems, facts = session.preflight(need_gpu=False, commit=None)
    assert any("AFD_COMMIT is not set" in p for p in problems) and facts["torch"] == torch.__version__
    problems, _ = session.preflight(need_gpu=False, commit="$(git rev-parse HEAD)")
    assert any("is not a commit hash" in p for p in problems)
    problems, _ = session.preflight(need_gpu=False, commit="0123abc-dirty")
    assert problems == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    setup = session.setup_module()
    monkeypatch.setattr(session, "setup_module", lambda: setup)
    monkeypatch.setattr(setup, "_find_cuda_home", lambda: None)
    problems, _ = session.preflight(need_gpu=True, commit="0123abc")
    assert any("torch.cuda.is_available() is False" in p for p in problems)
    assert any("nvcc not found" in p for p in problems)


def test_the_build_in_place_is_used_only_when_it_matches(tmp_path, monkeypatch):
    """bench/session.py installed: no build info, no digest, other sources or another torch each
    mean an install, with the reason."""
    session = _bench_module("session")
    monkeypatch.setattr(session, "ROOT", tmp_path)
    (tmp_path / "setup.py").write_text((ROOT / "setup.py").read_text())
    (tmp_path / "afd_ext").mkdir()
    info = tmp_path / "afd_ext" / "_build_info.json"
    assert session.build_in_place("cpp") == (False, "no build in place (afd_ext/_build_info.json missing)")
    info.write_text(json.dumps({"torch": torch.__version__, "cuda_archs": None}))
    assert "no source digest" in session.build_in_place("cpp")[1]
    digest = session.setup_module().source_digest(str(tmp_path))
    info.write_text(json.dumps({"torch": torch.__version__, "cuda_archs": None, "sources": "0" * 64}))
    assert "sources changed" in session.build_in_place("cpp")[1]
    info.write_text(json.dumps({"torch": "1.0", "cuda_archs": None, "sources": digest}))
    assert session.build_in_place("cpp") == (False, f"built for torch 1.0, running {torch.__version__}")
    info.write_text(json.dumps({"torch": torch.__version__, "cuda_archs": None, "sources": digest}))
    assert session.build_in_place("cuda") == (False, "the build in place has no CUDA kernels")
    ok, why = session.build_in_place("cpp")  # all recorded facts match; afd_ext imports from elsewhere
    assert not ok and "not from this checkout" in why


def _session_script(tmp_path, **env):
    import os
    e = {k: v for k, v in os.environ.items() if k not in ("AFD_COMMIT", "REHEARSE", "STAGES")}
    e.update(OUT=str(tmp_path / "out"), AFD_WORK=str(tmp_path / "work"), **env)
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu_session.sh")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=e)


def test_gpu_session_refuses_to_run_without_a_literal_commit(tmp_path):
    r = _session_script(tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    log = (tmp_path / "out" / "session.log").read_text()
    assert "STOPPED: AFD_COMMIT is not set" in log and "preflight" not in log


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop when no GPU is there")
def test_gpu_session_stops_at_the_preflight_without_a_gpu(tmp_path):
    """Nothing is installed, built or timed when CUDA is missing: exit 2 in seconds, the reason in
    session.log, which comes back in $OUT."""
    r = _session_script(tmp_path, AFD_COMMIT="0123456789abcdef0123456789abcdef01234567")
    assert r.returncode == 2, r.stdout + r.stderr
    log = (tmp_path / "out" / "session.log").read_text()
    assert "STOPPED: pre-flight failed" in log and "torch.cuda.is_available() is False" in log
    assert "install" not in log.split("STOPPED")[1] and not (tmp_path / "work" / "build.log").exists()


def test_the_profile_deploys_in_the_dtype_it_runs_in(monkeypatch):
    """tools/profile_forward.py under bfloat16 autocast deploys the AFD with bfloat16 op weights (as
    the Pipeline does), and every profiled call runs under that autocast."""
    profile = importlib.util.module_from_spec(spec := importlib.util.spec_from_file_location(
        "afd_profile_forward", ROOT / "tools" / "profile_forward.py"))
    spec.loader.exec_module(profile)
    seen = {"deploy": [], "autocast": set()}

    class Model(torch.nn.Module):
        def deploy(self, impl="fused", dtype=None):
            seen["deploy"].append(dtype)
            return self

        def stem_features(self, x):
            return x.float(), x

        def afd(self, feat, pixels):
            seen["autocast"].add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return feat + 1

        def forward(self, x, use_afd=True):
            return self.afd(x.float(), x) if use_afd else self.afd(x.float(), x) * 0
    monkeypatch.setattr(profile, "build_model", lambda backbone, width: Model())
    tables = []
    out = profile.profile_backbone("efficientnet_lite0", torch.device("cpu"), 1, torch.bfloat16, iters=1,
                                   width="small", warmup=1, emit=lambda part, table: tables.append(part))
    assert seen["deploy"] == [torch.bfloat16] and seen["autocast"] == {torch.bfloat16}
    assert tables == ["classifier", "deployed_forward", "afd_module"] and "afd_share_of_forward" in out
    profile.profile_backbone("efficientnet_lite0", torch.device("cpu"), 1, torch.float32, iters=1, width="small",
                             warmup=1)
    assert seen["deploy"][-1] is None and None in seen["autocast"]
