"""tools/file_fdm_report.py: the side-information table beside the pixels-only row, and a refusal when the
two runs were not on the same pixels."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "file_fdm_report.py")
HEAVY = (25, 18, 15, 10, 7)


def _q(quality, direct, afd, ran=100.0):
    return {"quality": quality, "top1_direct": direct, "top1_afd": afd, "afd_ran": ran}


def _file_run(protocol, direct, afd, mild=()):
    return {"protocol": protocol, "n_images": 4, "clean": {"top1_direct": 90.0, "top1_afd": 90.0, "afd_ran": 25.0},
            "qualities": [_q(q, d, a, 0.0) for q, d, a in mild] + [_q(q, direct, afd) for q in HEAVY]}


def _decision_set(direct, afd):
    rows = [{"protocol": p, "codec": c, "mean": {"top1_direct": direct, "top1_afd": afd},
             "qualities": [_q(q, direct, afd) for q in HEAVY]}
            for p, c in (("crop", "jpeg"), ("resized", "jpeg"), ("full", "jpeg"), ("crop", "webp"))]
    return {"runs": {"ck": {"results": rows}}}


def _run(tmp_path, resized_direct):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "resized.json").write_text(json.dumps(_file_run("resized", resized_direct, 65.0)))
    full = _file_run("full", 60.0, 64.0, [(90, 85.0, 85.0), (75, 80.0, 80.0)])
    (tmp_path / "res" / "full.json").write_text(json.dumps(full))
    (tmp_path / "ds.json").write_text(json.dumps(_decision_set(60.0, 62.0)))
    r = subprocess.run([sys.executable, TOOL, "--run", "ck", "--results", str(tmp_path / "res"), "--decision-set",
                        str(tmp_path / "ds.json"), "--out", str(tmp_path / "report")], capture_output=True, text=True)
    return r


def test_report_sets_the_file_fdm_gain_beside_the_pixels_only_gain(tmp_path):
    r = _run(tmp_path, 60.0)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    assert "| resized | 60.0 | 65.0 | +5.0 | +2.0 |" in md
    assert "| full | 60.0 | 64.0 | +4.0 | +2.0 |" in md
    assert "| full q90 | 85.0 | 85.0 | +0.0 | (AFD ran on 0%) |" in md and "| clean |" in md
    assert set(json.loads((tmp_path / "report.json").read_text())["runs"]) == {"resized", "full"}


def test_report_refuses_runs_on_other_pixels(tmp_path):
    r = _run(tmp_path, 61.0)
    assert r.returncode != 0 and "not the same pixels" in r.stderr
    assert not (tmp_path / "report.md").exists()


def test_report_names_a_run_the_decision_set_lacks(tmp_path):
    _run(tmp_path, 60.0)
    r = subprocess.run([sys.executable, TOOL, "--run", "other", "--results", str(tmp_path / "res"), "--decision-set",
                        str(tmp_path / "ds.json"), "--out", str(tmp_path / "r2")], capture_output=True, text=True)
    assert r.returncode != 0 and "has no run 'other'" in r.stderr
    assert not (tmp_path / "r2.md").exists()
