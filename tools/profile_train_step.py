"""Profile CPU training steps of ``afd train`` (torch.profiler): where a step's time goes, and crops/s.

    AFD_DATA=/work/shared/data OMP_NUM_THREADS=1 python tools/profile_train_step.py --threads 1 \
        --warmup 5 --steps 20 --out bench/results/train_step_after     # writes .json + .md

Builds exactly what ``afd train`` builds for the v3 recipe (docs/accuracy.md: Lite0, ``--width small
--gate global --crop 160 --batch-size 16`` and v3's degradation mixture), through the CLI's own parser
and ``afd_ext.train.build_training``; each step is ``afd_ext.train.train_step`` on the next batch of
the run's own loader (nothing of the loop is copied here). ``--warmup`` steps run first, then
``--steps`` steps under ``torch.profiler`` (CPU) give the split of a step, then ``--steps`` more steps
without the profiler give the step times that crops/s is computed from (the profiler's own overhead
stays out of them). Medians over steps throughout.

The split (``afd_ext.train.STEP_RANGES``):
  data       the loader: draw, decode (cached per photo, as in a long run: see --no-prefill), degrade,
             crop, collate. ``--workers 0`` (default) runs it in this process, one thread, so that its
             cost is seen; ``afd train --workers 1`` overlaps it with the step on a second core.
  teacher    clean stem + its activation (the L1 target) + clean logits (the KL target), no grad
  student    degraded stem, the AFD, the rest of the classifier on the AFD's output, the losses
  backward   loss.backward() (through the frozen rest of the classifier into the AFD)
  optimizer  gradient clipping, AdamW, the weights' finiteness check
  other      the rest of train_step (learning rate, to-device, the loss's finiteness check)

The machine is whatever runs it; on a shared machine the figures move with the load (the load
average before and after is recorded). ``--train-flags`` appends ``afd train`` flags (e.g.
``--channels-last``) to try a variant of the same recipe.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from afd_ext.cli import build_parser, train_config
from afd_ext.utils import atomic_write_bytes, git_commit, write_json

T = importlib.import_module("afd_ext.train")  # the module (the package's `train` is the function)

#: The v3 recipe's ``afd train`` flags (docs/accuracy.md, "How v3 was trained"), without --data/--out.
V3_FLAGS = ("--gate global --gate-weight 0.1 --width small --crop 160 --batch-size 16 "
            "--quality-range 5 35 --max-compressions 2 --clean-fraction 0.15 --mild-fraction 0.15 --mild-range 75 95 "
            "--shift-fraction 0.15 --rescale-fraction 0.4 --rescale-range 0.7 3.0 --webp-fraction 0.2 "
            "--chroma444-fraction 0.25 --lr 2e-3 --warmup 200 --kl-weight 0.3 --holdout 0.5 --val-every 100000 "
            "--val-images 233 --ckpt-every 250 --seed 3 --steps 3197")
DATA_RANGE = "afd_train.data"
PHASES = ("data", "teacher", "student", "backward", "optimizer")


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _train_py_state() -> dict:
    """sha256 of afd_ext/train.py and whether it is the committed one (others may edit other files)."""
    path = Path(T.__file__)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_repo_root(), capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=_repo_root()).returncode
    return {"head": head, "train_py_sha256": sha, "train_py_committed": diff == 0}


def _phase_of(evt, names: dict) -> str | None:
    """The step phase (a STEP_RANGES key or 'data') whose range encloses ``evt``."""
    e = evt
    while e is not None:
        if e.name in names:
            return names[e.name]
        e = e.cpu_parent
    return None


def split_from_profile(prof, steps: int) -> dict:
    """Per phase: median ms per step, and its top operators by self time (ms per step)."""
    names = {v: k for k, v in T.STEP_RANGES.items()}
    names[DATA_RANGE] = "data"
    per_phase: dict = defaultdict(list)
    step_ms = []
    op_self: dict = defaultdict(lambda: defaultdict(float))
    for evt in prof.events():
        if evt.name in names:
            per_phase[names[evt.name]].append(evt.cpu_time_total / 1000)
        elif evt.name == "afd_train.step":
            step_ms.append(evt.cpu_time_total / 1000)
        elif not evt.name.startswith("afd_train."):
            phase = _phase_of(evt, names)
            op_self[phase or "other"][evt.name] += evt.self_cpu_time_total / 1000
    out = {}
    for phase in PHASES:
        vals = per_phase.get(phase, [])
        if len(vals) != steps:
            raise RuntimeError(f"{phase}: {len(vals)} ranges in the profile, expected one a step ({steps})")
        top = sorted(op_self[phase].items(), key=lambda kv: -kv[1])[:8]
        out[phase] = {"median_ms": statistics.median(vals),
                      "top_ops_ms_per_step": {k: round(v / steps, 2) for k, v in top}}
    med_step = statistics.median(step_ms)
    out["other"] = {"median_ms": max(0.0, med_step - sum(out[p]["median_ms"] for p in PHASES)),
                    "top_ops_ms_per_step": {k: round(v / steps, 2) for k, v in
                                            sorted(op_self["other"].items(), key=lambda kv: -kv[1])[:8]}}
    out["step_median_ms"] = med_step
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_root = os.environ.get("AFD_DATA", "/work/shared/data")
    ap.add_argument("--data", nargs="+", default=[f"{data_root}/imagenet-sample-dev", f"{data_root}/bsds500/train"])
    ap.add_argument("--warmup", type=int, default=5, help="steps before anything is measured")
    ap.add_argument("--steps", type=int, default=20, help="profiled steps, then as many timed steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="loader workers (0: the data cost is in the step)")
    ap.add_argument("--no-prefill", action="store_true",
                    help="leave the loader's photo cache empty (default: decode every training photo first, "
                         "as a long run has after its first few hundred steps)")
    ap.add_argument("--train-flags", default="", help="extra afd train flags (a variant of the recipe)")
    ap.add_argument("--label", default=None, help="name of this measurement (default: the --out file name)")
    ap.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    argv = ["train", "--data", *args.data, *shlex.split(V3_FLAGS), "--threads", str(args.threads),
            "--workers", str(args.workers), *shlex.split(args.train_flags)]
    cfg = train_config(build_parser().parse_args(argv))
    cfg.validate()
    torch.manual_seed(cfg.seed)  # as train() does
    device = torch.device("cpu")
    train_files, _ = T.split_files(cfg.data, cfg.holdout)
    run = T.build_training(cfg, device, train_files)
    load0 = os.getloadavg()
    t_prefill = 0.0
    if not args.no_prefill:
        t = time.perf_counter()
        ds = run.loader.dataset.ds
        for f in train_files:
            try:
                ds._load(f)
            except Exception:  # an unreadable photo: the loader meets it and draws another
                pass
        t_prefill = time.perf_counter() - t
        print(f"decoded {len(ds._cache)} photos into the loader's cache in {t_prefill:.1f} s", file=sys.stderr)

    it = iter(run.loader)
    step = 0

    def one_step():
        nonlocal step
        with record_function("afd_train.step"):
            with record_function(DATA_RANGE):
                clean, comp, labels, gate_targets, _ = next(it)
            loss, parts = T.train_step(run, (clean, comp, labels, gate_targets), step)
        step += 1
        return parts

    for _ in range(args.warmup):
        one_step()
    print(f"warm-up: {args.warmup} steps", file=sys.stderr)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            one_step()
    split = split_from_profile(prof, args.steps)
    print("profiled", file=sys.stderr)
    # The timed steps: wall and this thread's CPU time per step and per phase (train.PHASE_CLOCK).
    wall, cpu, phases = [], [], defaultdict(list)
    proc0 = time.process_time()
    for _ in range(args.steps):
        T.PHASE_CLOCK = clock = []
        w, c = time.perf_counter(), time.thread_time()
        clean, comp, labels, gate_targets, _ = next(it)
        clock.append(("data", time.thread_time() - c))
        T.train_step(run, (clean, comp, labels, gate_targets), step)
        step += 1
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
        T.PHASE_CLOCK = None
        per = defaultdict(float)
        for name, sec in clock:
            per[name] += sec
        for name in PHASES:
            phases[name].append(per[name])
        phases["other"].append(cpu[-1] - sum(per[n] for n in PHASES))
    proc_cpu = time.process_time() - proc0  # all threads: ~ the sum of `cpu` when the step is one thread
    load1 = os.getloadavg()
    b = cfg.batch_size
    med_wall, med_cpu = statistics.median(wall), statistics.median(cpu)
    med_cpu_compute = statistics.median(c - d for c, d in zip(cpu, phases["data"]))
    result = {
        "label": args.label or Path(args.out).name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), **_train_py_state(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "workers": args.workers,
        "cpu": _cpu_model(), "cpus": os.cpu_count(),
        "loadavg_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "afd_train_argv": ["afd", *argv],
        "batch_size": b, "crop": cfg.crop, "warmup_steps": args.warmup, "profiled_steps": args.steps,
        "timed_steps": args.steps, "prefilled_photo_cache": not args.no_prefill, "prefill_s": round(t_prefill, 1),
        "profiled": {"split_wall_ms_per_step": {k: round(v["median_ms"], 1) for k, v in split.items()
                                                if isinstance(v, dict)},
                     "step_wall_median_ms": round(split["step_median_ms"], 1),
                     "top_ops_ms_per_step": {k: v["top_ops_ms_per_step"] for k, v in split.items()
                                             if isinstance(v, dict)}},
        "timed": {"split_cpu_ms_per_step": {k: round(statistics.median(v) * 1000, 1) for k, v in phases.items()},
                  "step_cpu_median_ms": round(med_cpu * 1000, 1), "step_wall_median_ms": round(med_wall * 1000, 1),
                  "step_cpu_ms": [round(t * 1000, 1) for t in cpu], "step_wall_ms": [round(t * 1000, 1) for t in wall],
                  "crops_per_cpu_s_median": round(b / med_cpu, 2),
                  "crops_per_cpu_s_total": round(b * len(cpu) / sum(cpu), 2),
                  "crops_per_cpu_s_without_data_median": round(b / med_cpu_compute, 2),
                  "crops_per_wall_s_median": round(b / med_wall, 2),
                  "process_cpu_over_thread_cpu": round(proc_cpu / sum(cpu), 3)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    atomic_write_bytes(out.with_suffix(".md"), markdown(result).encode())
    print(markdown(result))


def markdown(r: dict) -> str:
    p, t = r["profiled"], r["timed"]
    sw, sc = p["split_wall_ms_per_step"], t["split_cpu_ms_per_step"]
    tot_w, tot_c = p["step_wall_median_ms"], t["step_cpu_median_ms"]
    lines = [f"# Training step cost: {r['label']}", "",
             f"{r['date']}, commit {r['commit']} "
             f"(train.py {'as committed' if r['train_py_committed'] else 'MODIFIED'}, "
             f"sha256 {r['train_py_sha256'][:12]}), torch {r['torch']}, {r['threads']} thread(s), "
             f"{r['workers']} loader workers, {r['cpu']}, {r['cpus']} CPUs shared with other work (load average "
             f"{r['loadavg_before_after'][0]} before, {r['loadavg_before_after'][1]} after).", "",
             f"v3 recipe, batch {r['batch_size']} crops of {r['crop']}; {r['warmup_steps']} warm-up steps, then "
             f"{r['profiled_steps']} steps under torch.profiler (wall time, operators) and {r['timed_steps']} steps "
             "without it (this thread's CPU time per phase and step); medians over steps. Photo cache "
             f"{'prefilled (a long run steady state)' if r['prefilled_photo_cache'] else 'empty at the start'}.", "",
             "| phase | CPU ms / step | share | wall ms / step (profiled) |", "| --- | --- | --- | --- |"]
    for k in (*PHASES, "other"):
        lines.append(f"| {k} | {sc[k]:.1f} | {100 * sc[k] / tot_c:.0f}% | {sw[k]:.1f} |")
    lines.append(f"| **step** | **{tot_c:.1f}** | | {tot_w:.1f} |")
    lines += ["", f"**{t['crops_per_cpu_s_median']} crops per CPU second** (batch / median step CPU time; "
              f"{t['crops_per_cpu_s_total']} over all {r['timed_steps']} steps; "
              f"{t['crops_per_cpu_s_without_data_median']} "
              f"without the data, as with a loader worker on another core). Wall clock: median step "
              f"{t['step_wall_median_ms']} ms, {t['crops_per_wall_s_median']} crops/s (moves with the machine's load).",
              "", "Top operators by self time (profiled, wall ms per step):", ""]
    for k in (*PHASES, "other"):
        ops = ", ".join(f"{name} {ms}" for name, ms in list(p["top_ops_ms_per_step"][k].items())[:6])
        lines.append(f"- {k}: {ops}")
    lines += ["", "```", " ".join(shlex.quote(a) for a in r["afd_train_argv"]), "```", ""]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
