"""Benchmark result files, written once for every benchmark (kernels, end to end, profiles).

One schema: a run is a sequence of records in a JSON Lines file, each
``{"run": NAME, "source": "kernels"|"e2e"|"profile", "record": KIND, ...}``; KIND ``meta`` first
(``run_meta``: device, torch, CUDA, date, commit, ...), then what the run measures (``row``,
``flops``, ``copy_bandwidth``, ``table``), each appended and flushed to the disk the moment it is
measured (``Recorder``), and ``end`` when the run completed. A run cut short keeps every record it
wrote. The summary of a run (``summarize``) is ``{**meta, "complete": bool, KIND + "s": [records]}``,
written as JSON + Markdown (``write_result``); ratios between rows of one run come from
``add_ratios`` and every Markdown table from ``format_markdown``.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from ..utils import atomic_write_bytes, git_commit, write_json

#: Keys of a record that say where it belongs, not what was measured.
RECORD_KEYS = ("run", "source", "record")


# -- records (JSON Lines) ----------------------------------------------------------------------------

def append_record(path, record: dict) -> None:
    """Append ``record`` as one JSON line and push it to the disk before returning: a process killed
    afterwards (a time-out) has lost nothing it measured."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_runs(path) -> dict:
    """{run name: [records]} of a JSON Lines file that several runs append to. A run's records are
    those from its last ``meta`` record on (a run started again replaces the earlier one); a
    last line cut in the middle (a kill mid-write) is skipped."""
    runs: dict = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = rec.get("run")
        if rec.get("record") == "meta":
            runs[name] = []
        runs.setdefault(name, []).append(rec)
    return runs


def strip(record: dict) -> dict:
    """A record without its bookkeeping keys (RECORD_KEYS)."""
    return {k: v for k, v in record.items() if k not in RECORD_KEYS}


class Recorder:
    """Writes one run's records to ``path`` (None: kept in memory only), each appended and flushed as
    it is written. ``fresh``: the file is the run's own, so an earlier one is removed first;
    otherwise (a file several runs share) the records are appended."""

    def __init__(self, path, run: str, source: str, fresh: bool = True):
        self.path = Path(path) if path else None
        self.run, self.source = run, source
        self.records: list = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh and self.path.exists():
                self.path.unlink()

    def write(self, kind: str, **data) -> dict:
        rec = {"run": self.run, "source": self.source, "record": kind, **data}
        self.records.append(rec)
        if self.path is not None:
            append_record(self.path, rec)
        return rec


def summarize(records: Sequence[dict], kinds: Sequence[str] = ("row",)) -> dict:
    """``{**meta, "complete": bool, KIND + "s": [...] for KIND in kinds}`` of one run's records;
    ``complete`` is False when the run did not write its ``end`` record."""
    meta = next((strip(r) for r in records if r.get("record") == "meta"), {})
    out = {**meta, "complete": any(r.get("record") == "end" for r in records)}
    for kind in kinds:
        out[kind + "s"] = [strip(r) for r in records if r.get("record") == kind]
    return out


def device_name(device, threads: bool = True) -> str:
    """The GPU's name, or ``cpu (N cores[, T torch threads])``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores" + (f", {torch.get_num_threads()} torch threads)" if threads else ")")


def run_meta(device, **extra) -> dict:
    """What every run's ``meta`` record says: the device, torch, CUDA, the date (UTC), the commit
    (``utils.git_commit``, ``-dirty`` for uncommitted changes) and torch's thread count."""
    device = torch.device(device)
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "threads": torch.get_num_threads(), **extra}


# -- ratios between rows of one run ------------------------------------------------------------------

def add_ratios(rows: list, variant: str, group: Sequence[str], ratios: dict, speed: str,
               lower_is_faster: bool = False) -> list:
    """For each ratio column ``name -> baseline_of`` in ``ratios``: the row's speed over the speed of
    the row of the same ``group`` (same values of those keys, same run) whose ``variant`` is
    ``baseline_of(row[variant])``, > 1 when the row is faster (``speed`` is a rate, or a time when
    ``lower_is_faster``); None where either was not measured or there is no baseline."""
    def key(r, v):
        return (v, *(r.get(k) for k in group))
    index = {key(r, r[variant]): r.get(speed) for r in rows}
    for r in rows:
        mine = r.get(speed)
        for name, baseline_of in ratios.items():
            base = baseline_of(r[variant])
            ref = index.get(key(r, base)) if base is not None else None
            r[name] = ((ref / mine if lower_is_faster else mine / ref) if (ref and mine) else None)
    return rows


# -- Markdown ----------------------------------------------------------------------------------------

def fmt(value, spec: str = "") -> str:
    """``format(value, spec)``, or '-' for None."""
    return "-" if value is None else format(value, spec)


def format_markdown(result: dict, title: str, facts: str, sections: Sequence[tuple]) -> str:
    """The Markdown summary of a run: ``# title``, the ``facts`` line, a note when the run was cut
    short (``result["complete"]`` False), then each section ``(heading or None, [paragraphs],
    columns or None, rows)``: a ``## heading``, its paragraphs and a table of ``rows`` with
    ``columns`` [(header, right-aligned, row -> cell text)]."""
    lines = [f"# {title}", "", facts, ""]
    if result.get("complete") is False:
        lines += ["**Cut short**: what follows was measured before the run ended (rebuilt from its JSON Lines "
                  "records).", ""]
    for heading, paragraphs, columns, rows in sections:
        if heading:
            lines += [heading, ""]
        for p in paragraphs:
            lines += [p, ""]
        if columns:
            lines.append("| " + " | ".join(h for h, _, _ in columns) + " |")
            lines.append("| " + " | ".join("---:" if right else "---" for _, right, _ in columns) + " |")
            lines += ["| " + " | ".join(cell(r) for _, _, cell in columns) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_result(result: dict, json_path, markdown: str) -> None:
    """The summary as JSON at ``json_path`` and its Markdown beside it (same stem, ``.md``), each
    written atomically."""
    p = Path(json_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, result)
    atomic_write_bytes(p.with_suffix(".md"), markdown.encode())
