"""afd_ext.benchmark.e2e: a minimal end-to-end run writes JSON + Markdown with honest skipped rows (CPU)."""
from __future__ import annotations

import json

import torch

import pytest

from afd_ext.benchmark import e2e
from afd_ext.benchmark.e2e import result_from_records, run_e2e, run_interleaved
from afd_ext.benchmark.results import read_runs
from afd_ext.benchmark.timing import percentile as _percentile


def test_percentile():
    assert _percentile([3.0], 0.95) == 3.0
    assert _percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert abs(_percentile(list(range(101)), 0.95) - 95.0) < 1e-9


def test_run_e2e_minimal(tmp_path):
    before = torch.get_num_threads()
    out = tmp_path / "e2e.json"
    result = run_e2e("cpu", str(out), batches=[1], backbones=("efficientnet_lite0",), warmup=1, iters=2,
                     configs=("classifier", "afd_deploy_fused", "afd_compile", "decode_included",
                              "afd_cuda_graphs"), flops=False,
                     threads=1, verbose=False)
    assert torch.get_num_threads() == before
    data = json.loads(out.read_text())
    assert data["device_type"] == "cpu" and data["torch"] == torch.__version__ and "date" in data
    rows = {r["config"]: r for r in data["rows"]}
    for cfg in ("classifier", "afd_deploy_fused", "decode_included"):
        r = rows[cfg]
        assert r["images_per_s"] > 0 and r["latency_ms_p95"] >= r["latency_ms_median"] > 0 and r["runs"] == 2
        assert r["backbone"] == "efficientnet_lite0" and r["batch"] == 1 and r["dtype"] == "float32"
    assert rows["afd_compile"]["images_per_s"] is None and "compile" in rows["afd_compile"]["skipped"]
    assert rows["afd_cuda_graphs"]["skipped"] == "CUDA graphs need a CUDA device"
    # ratios against the baseline measured in the same run; none without one
    fused = rows["afd_deploy_fused"]
    assert fused["vs_classifier"] == fused["images_per_s"] / rows["classifier"]["images_per_s"]
    assert rows["classifier"]["vs_classifier"] is None and rows["afd_compile"]["vs_classifier"] is None
    md = out.with_suffix(".md").read_text()
    assert "| efficientnet_lite0 | afd_deploy_fused | 1 | float32 |" in md and "skipped" in md
    assert result["rows"] == data["rows"] and data["complete"] is True
    # each row went to e2e.jsonl as it was measured; the summary is the one those records make
    runs = read_runs(out.with_suffix(".jsonl"))
    assert list(runs) == ["e2e"] and [r["record"] for r in runs["e2e"]][0] == "meta"
    assert result_from_records(runs["e2e"]) == data


def test_run_interleaved_minimal(tmp_path):
    """Turns alternate between the configs; each row carries the thread count and its ratio to the
    first config (the first config's own ratio is exactly 1); the caller's thread setting returns."""
    before = torch.get_num_threads()
    out = tmp_path / "inter.json"
    result = run_interleaved("cpu", str(out), backbones=("efficientnet_lite0",), batches=(1,), threads=(1, 2),
                             repeats=3, calls=1, verbose=False)
    assert torch.get_num_threads() == before
    data = json.loads(out.read_text())
    assert data["rows"] == result["rows"] and data["interleaved"]["repeats"] == 3
    rows = {(r["config"], r["threads"]): r for r in data["rows"]}
    assert set(rows) == {(c, t) for c in ("classifier", "afd_deploy_fused") for t in (1, 2)}
    for t in (1, 2):
        assert rows[("classifier", t)]["vs_first"] == 1.0
        fused = rows[("afd_deploy_fused", t)]
        assert fused["vs_first_min"] <= fused["vs_first"] <= fused["vs_first_max"] and fused["runs"] == 3
        assert fused["images_per_s"] > 0
    assert "x classifier" in out.with_suffix(".md").read_text()


class _StubAFD:
    deployed, impl = True, "fused"

    def __init__(self, seen):
        self.seen = seen

    def deploy(self, impl, dtype=None):
        self.seen["deploy"].append(dtype)


class _StubModel(torch.nn.Module):
    """Stands in for a classifier: records the autocast dtype of each call and fails on command."""

    def __init__(self, seen, config, fail=False):
        super().__init__()
        self.seen, self.fail = seen, fail
        self.afd = None if config == "classifier" else _StubAFD(seen)

    def forward(self, x):
        if self.fail:
            raise RuntimeError("device lost")
        self.seen["autocast"].add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return x.float().mean()


def _stub_models(monkeypatch, seen, fail_backbone=None):
    monkeypatch.setattr(e2e, "build_model", lambda backbone, width: backbone)
    monkeypatch.setattr(e2e, "_variant", lambda base, config: _StubModel(seen, config, fail=base == fail_backbone))


def test_run_interleaved_runs_under_its_dtype_with_the_afd_deployed_in_it(monkeypatch, tmp_path):
    """dtype: the autocast of every timed call and the dtype the deployed AFD's op weights are cast
    to (float32 on CPU by default, bfloat16 on CUDA); threads=None keeps torch's setting."""
    seen = {"deploy": [], "autocast": set()}
    _stub_models(monkeypatch, seen)
    result = run_interleaved("cpu", backbones=("efficientnet_lite0",), batches=(1,), threads=None, repeats=2,
                             calls=1, dtype="bfloat16", verbose=False)
    assert seen["deploy"] == [torch.bfloat16] and seen["autocast"] == {torch.bfloat16}
    assert {r["dtype"] for r in result["rows"]} == {"bfloat16"} and result["dtype"] == "bfloat16"
    assert result["threads"] == [torch.get_num_threads()]
    seen = {"deploy": [], "autocast": set()}
    _stub_models(monkeypatch, seen)
    result = run_interleaved("cpu", backbones=("efficientnet_lite0",), batches=(1,), threads=(1,), repeats=1,
                             calls=1, verbose=False)
    assert seen["deploy"] == [] and seen["autocast"] == {None} and result["rows"][0]["dtype"] == "float32"
    with pytest.raises(ValueError, match="dtype must be"):
        run_interleaved("cpu", dtype="int8", verbose=False)


def test_run_interleaved_keeps_the_rows_measured_before_a_failure(monkeypatch, tmp_path):
    """The rows of each finished group are on the disk before the next group starts: when a later
    backbone fails, the file holds the first one's rows and no end record, and the rebuilt summary
    says it was cut short."""
    seen = {"deploy": [], "autocast": set()}
    _stub_models(monkeypatch, seen, fail_backbone="resnet50")
    rows = tmp_path / "rows.jsonl"
    with pytest.raises(RuntimeError, match="device lost"):
        run_interleaved("cpu", backbones=("efficientnet_lite0", "resnet50"), batches=(1,), threads=(1,), repeats=1,
                        calls=1, verbose=False, rows_path=str(rows), run="inter")
    result = result_from_records(read_runs(rows)["inter"])
    assert result["complete"] is False and {r["backbone"] for r in result["rows"]} == {"efficientnet_lite0"}
    assert len(result["rows"]) == 2 and "Cut short" in e2e.e2e_markdown(result)


def test_cli_bench_threads_need_interleave(capsys):
    from afd_ext.cli import main
    assert main(["bench", "--e2e", "--threads", "1", "2"]) == 2
    assert "need --interleave" in capsys.readouterr().err


def test_cli_bench_passes_rows_dtypes_width_and_budget(monkeypatch):
    from afd_ext.benchmark import e2e
    from afd_ext.cli import main
    seen = {}
    monkeypatch.setattr(e2e, "run_e2e", lambda **kw: seen.update(kw))
    assert main(["bench", "--e2e", "--device", "cpu", "--batch", "1", "32", "--dtype", "bfloat16", "--width", "tiny",
                 "--budget-s", "0.5", "--configs", "classifier", "afd_cuda_graphs", "--threads", "2"]) == 0
    assert seen["configs"] == ["classifier", "afd_cuda_graphs"] and seen["dtypes"] == ["bfloat16"]
    assert seen["width"] == "tiny" and seen["budget_s"] == 0.5 and seen["batches"] == [1, 32] and seen["threads"] == 2
    seen.clear()
    monkeypatch.setattr(e2e, "run_interleaved", lambda **kw: seen.update(kw))
    assert main(["bench", "--e2e", "--interleave", "--threads", "1", "2", "--repeats", "3"]) == 0
    assert seen["threads"] == [1, 2] and seen["repeats"] == 3 and seen["configs"] == ("classifier", "afd_deploy_fused")


def test_afd_bench_times_the_backbones_and_width_it_is_given(monkeypatch, tmp_path, capsys):
    """`afd bench --backbone ... --width ...` times those classifiers with an AFD of that width
    (default: e2e.BACKBONES); a name outside the registry is refused by the parser."""
    from afd_ext.cli import main
    built = []
    _stub_models(monkeypatch, {"deploy": [], "autocast": set()})
    monkeypatch.setattr(e2e, "build_model", lambda backbone, width: built.append((backbone, width)) or backbone)
    out = tmp_path / "b.json"
    assert main(["bench", "--interleave", "--backbone", "efficientnet_lite0", "--width", "base", "--batch", "1",
                 "--threads", "1", "--repeats", "1", "--json", str(out)]) == 0
    assert built == [("efficientnet_lite0", "base")]
    assert {r["backbone"] for r in json.loads(out.read_text())["rows"]} == {"efficientnet_lite0"}
    built.clear()
    assert main(["bench", "--interleave", "--batch", "1", "--threads", "1", "--repeats", "1"]) == 0
    assert [b for b, _ in built] == list(e2e.BACKBONES)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backbone", "no_such_net"])
    assert exc.value.code == 2 and "no_such_net" in capsys.readouterr().err
