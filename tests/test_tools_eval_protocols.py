"""tools/eval_protocols.py merge: one table from runs on the same pixels, and a refusal otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "eval_protocols.py")


def _row(direct, afd):
    return {"top1_direct": direct, "top1_afd": afd}


def _part(name, direct, afd, as_predict=False, commit="abc"):
    results = [{"protocol": p, "codec": c, "clean": _row(90.0, 90.0), "mean": _row(direct, afd)}
               for p, c in (("crop", "jpeg"), ("resized", "jpeg"), ("full", "jpeg"), ("crop", "webp"))]
    mild = {"qualities": [{"quality": q, **_row(85.0, 85.0)} for q in (90, 75)]}
    return {"date": "2026-12-06", "commit": commit, "n_images": 4, "one_image_points": 25.0, "images": "x",
            "as_predict": as_predict, "qualities": [25, 18, 15, 10, 7], "torch": "t", "device": "cpu",
            "runs": {name: {"checkpoint": name, "fdm_source": "input", "results": results, "mild": mild}}}


def _merge(tmp_path, *parts):
    paths = []
    for i, part in enumerate(parts):
        p = tmp_path / f"part{i}.json"
        p.write_text(json.dumps(part))
        paths.append(str(p))
    out = tmp_path / "merged"
    return subprocess.run([sys.executable, TOOL, "merge", str(out), *paths], capture_output=True, text=True), out


def test_merge_puts_runs_on_the_same_pixels_side_by_side(tmp_path):
    r, out = _merge(tmp_path, _part("a", 60.0, 62.0), _part("b", 60.0, 64.0, commit="def"))
    assert r.returncode == 0, r.stderr
    merged = json.loads((out.parent / "merged.json").read_text())
    assert list(merged["runs"]) == ["a", "b"] and [m["commit"] for m in merged["merged_from"]] == ["abc", "def"]
    md = (out.parent / "merged.md").read_text()
    assert "| b | resized | jpeg |" in md and "+4.0" in md
    assert (out.parent / "merged.png").stat().st_size > 0
    # a merge merged again keeps every commit it came from (once each)
    r, out = _merge(tmp_path, merged, _part("c", 60.0, 63.0, commit="ghi"), _part("d", 60.0, 63.0, commit="abc"))
    assert r.returncode == 0, r.stderr
    again = json.loads((out.parent / "merged.json").read_text())
    assert list(again["runs"]) == ["a", "b", "c", "d"]
    assert [m["commit"] for m in again["merged_from"]] == ["abc", "def", "ghi"]


def test_merge_refuses_other_pixels_or_modes(tmp_path):
    r, _ = _merge(tmp_path, _part("a", 60.0, 62.0), _part("b", 61.0, 64.0))
    assert r.returncode != 0 and "not the same pixels" in r.stderr
    r, _ = _merge(tmp_path, _part("a", 60.0, 62.0), _part("b", 60.0, 64.0, as_predict=True))
    assert r.returncode != 0 and "different images or modes" in r.stderr
