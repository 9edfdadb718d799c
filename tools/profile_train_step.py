"""Profile CPU training steps of ``afd train`` (torch.profiler): where a step's time goes, and crops/s.

    AFD_DATA=/work/shared/data OMP_NUM_THREADS=1 python tools/profile_train_step.py --threads 1 \
        --warmup 5 --steps 20 --out bench/results/train_step_after     # writes .json + .md
    python tools/profile_train_step.py combine --out bench/results/train_step_after RUN.json RUN.json ...
    python tools/profile_train_step.py compile-check --steps 6 --out bench/results/train_step_torch_compile

Builds exactly what ``afd train`` builds for the v3 recipe (docs/accuracy.md: Lite0, ``--width small
--gate global --crop 160 --batch-size 16`` and v3's degradation mixture), through the CLI's own parser
and ``afd_ext.train.build_training``; each step is ``afd_ext.train.train_step`` on the next batch of
the run's own loader (nothing of the loop is copied here). ``--warmup`` steps run first, then
``--steps`` steps under ``torch.profiler`` (CPU: wall time per phase, operators), then ``--steps`` more
steps without the profiler, timed by this thread's CPU clock per phase (``train.phases.PHASE_CLOCK``) and per
step. crops/s is the batch over the median step CPU time: on a machine shared with other work the
CPU clock moves much less with the load than the wall clock (both are recorded).

The split (``afd_ext.train.STEP_RANGES``):
  data       the loader: draw, decode (cached per photo, as in a long run: see --no-prefill), degrade,
             crop, collate. ``--workers 0`` (default) runs it in this process, one thread, so that its
             cost is seen; ``afd train --workers 1`` overlaps it with the step on a second core.
  teacher    the frozen classifier without a graph: the stem, the clean features' activation (the L1
             target) and the clean logits (the KL target)
  student    the AFD, the rest of the classifier on its output, the losses
  backward   loss.backward() (through the frozen rest of the classifier into the AFD)
  optimizer  gradient clipping, AdamW, the weights' finiteness check
  other      the rest of train_step (learning rate, to-device and layout, the loss's finiteness check)

``combine`` pools runs (e.g. alternated with another commit's, so that both see the same load): medians
over all their timed steps. ``compile-check`` times ``torch.compile`` of the step's frozen classifier rest
against eager (JSON only). ``--train-flags`` appends ``afd train`` flags (``--no-channels-last``) to
try a variant of the same recipe.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import json
import os
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

T = importlib.import_module("afd_ext.train")  # the module or package (the package's `train` is the function)
# The module whose PHASE_CLOCK a step's phases append to: afd_ext.train.phases (afd_ext/train/); a single
# afd_ext/train.py (an older commit measured from another worktree) is its own.
IS_PACKAGE = hasattr(T, "__path__")
PHASE_MODULE = importlib.import_module("afd_ext.train.phases") if IS_PACKAGE else T

#: The v3 recipe's ``afd train`` flags (docs/accuracy.md, "How v3 was trained"), without --data/--out.
V3_FLAGS = ("--gate global --gate-weight 0.1 --width small --crop 160 --batch-size 16 "
            "--quality-range 5 35 --max-compressions 2 --clean-fraction 0.15 --mild-fraction 0.15 --mild-range 75 95 "
            "--shift-fraction 0.15 --rescale-fraction 0.4 --rescale-range 0.7 3.0 --webp-fraction 0.2 "
            "--chroma444-fraction 0.25 --lr 2e-3 --warmup 200 --kl-weight 0.3 --holdout 0.5 --val-every 100000 "
            "--val-images 233 --ckpt-every 250 --seed 3 --steps 3197")
DATA_RANGE = "afd_train.data"
STEP_RANGE = "afd_train.step"
PHASES = ("data", "teacher", "student", "backward", "optimizer")
TOP_OPS = 8


def _repo_root() -> Path:
    """The checkout the measured afd_ext comes from (it may be another worktree than this file's)."""
    return Path(T.__file__).resolve().parents[2 if IS_PACKAGE else 1]


def _train_py_state() -> dict:
    """sha256 of the training code (afd_ext/train/'s modules by name, or afd_ext/train.py) and whether it is
    the committed one (others may edit other files)."""
    path = Path(T.__file__).parent if IS_PACKAGE else Path(T.__file__)
    h = hashlib.sha256()
    for f in sorted(path.glob("*.py")) if IS_PACKAGE else [path]:
        h.update(f.name.encode() + f.read_bytes() if IS_PACKAGE else f.read_bytes())
    sha = h.hexdigest()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_repo_root(), capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=_repo_root()).returncode
    return {"head": head, "train_py_sha256": sha, "train_py_committed": diff == 0}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _phase_of(evt, names: dict) -> str | None:
    """The step phase (a STEP_RANGES key or 'data') whose range encloses ``evt``."""
    e = evt
    while e is not None:
        if e.name in names:
            return names[e.name]
        e = e.cpu_parent
    return None


def profiled_steps(prof, steps: int) -> dict:
    """{'wall_ms': {phase or 'step': [ms per step]}, 'op_ms': {phase: {operator: self ms, all steps}}}."""
    names = {v: k for k, v in T.STEP_RANGES.items()}
    names[DATA_RANGE] = "data"
    wall: dict = defaultdict(list)
    ops: dict = defaultdict(lambda: defaultdict(float))
    for evt in prof.events():
        if evt.name in names:
            wall[names[evt.name]].append(evt.cpu_time_total / 1000)
        elif evt.name == STEP_RANGE:
            wall["step"].append(evt.cpu_time_total / 1000)
        elif not evt.name.startswith("afd_train."):
            ops[_phase_of(evt, names) or "other"][evt.name] += evt.self_cpu_time_total / 1000
    for phase in (*PHASES, "step"):
        if len(wall[phase]) != steps:
            raise RuntimeError(f"{phase}: {len(wall[phase])} ranges in the profile, expected one a step ({steps})")
    return {"wall_ms": dict(wall), "op_ms": {k: dict(v) for k, v in ops.items()}}


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    argv = ["train", "--data", *args.data, *shlex.split(V3_FLAGS), "--threads", str(args.threads),
            "--workers", str(args.workers), *shlex.split(args.train_flags)]
    cfg = train_config(build_parser().parse_args(argv))
    cfg.validate()
    torch.manual_seed(cfg.seed)  # as train() does
    train_files, _ = T.split_files(cfg.data, cfg.holdout)
    run = T.build_training(cfg, torch.device("cpu"), train_files)
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
    load0 = os.getloadavg()
    it = iter(run.loader)
    step = 0

    def one_step():
        nonlocal step
        with record_function(STEP_RANGE):
            with record_function(DATA_RANGE):
                clean, comp, labels, gate_targets, _ = next(it)
            T.train_step(run, (clean, comp, labels, gate_targets), step)
        step += 1

    for _ in range(args.warmup):
        one_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            one_step()
    prof_steps = profiled_steps(prof, args.steps)
    print(f"warm-up {args.warmup} steps, profiled {args.steps}", file=sys.stderr)
    # The timed steps: wall and this thread's CPU time per step and per phase (train.phases.PHASE_CLOCK).
    cpu_ms: dict = defaultdict(list)
    wall_ms = []
    proc0, thread_total = time.process_time(), 0.0
    for _ in range(args.steps):
        PHASE_MODULE.PHASE_CLOCK = clock = []
        w, c = time.perf_counter(), time.thread_time()
        clean, comp, labels, gate_targets, _ = next(it)
        clock.append(("data", time.thread_time() - c))
        T.train_step(run, (clean, comp, labels, gate_targets), step)
        step += 1
        total, PHASE_MODULE.PHASE_CLOCK = time.thread_time() - c, None
        wall_ms.append((time.perf_counter() - w) * 1000)
        thread_total += total
        per = defaultdict(float)
        for name, sec in clock:
            per[name] += sec
        for name in PHASES:
            cpu_ms[name].append(per[name] * 1000)
        cpu_ms["other"].append((total - sum(per[n] for n in PHASES)) * 1000)
        cpu_ms["step"].append(total * 1000)
    load1 = os.getloadavg()
    return {
        "label": args.label or Path(args.out).name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), **_train_py_state(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "workers": args.workers,
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "loadavg": [round(load0[0], 2), round(load1[0], 2)],
        "afd_train_argv": ["afd", *argv], "batch_size": cfg.batch_size, "crop": cfg.crop,
        "warmup_steps": args.warmup, "prefilled_photo_cache": not args.no_prefill, "prefill_s": round(t_prefill, 1),
        # all threads over this one: 1.0 when the step runs on this thread alone (what the CPU clock assumes)
        "process_cpu_over_thread_cpu": round((time.process_time() - proc0) / thread_total, 3),
        "profiled": prof_steps, "timed": {"cpu_ms": dict(cpu_ms), "wall_ms": wall_ms},
    }


def summarize(runs: list[dict], label: str) -> dict:
    """The pooled result of ``runs`` (one run or several of one code): medians over all their steps."""
    first = runs[0]
    for key in ("commit", "train_py_sha256", "afd_train_argv", "threads", "workers", "prefilled_photo_cache"):
        if any(r[key] != first[key] for r in runs):
            raise ValueError(f"runs differ in {key}: {[r[key] for r in runs]}")
    b = first["batch_size"]
    cpu = {k: [v for r in runs for v in r["timed"]["cpu_ms"][k]] for k in (*PHASES, "other", "step")}
    wall = [v for r in runs for v in r["timed"]["wall_ms"]]
    pwall = {k: [v for r in runs for v in r["profiled"]["wall_ms"][k]] for k in (*PHASES, "step")}
    n_prof = len(pwall["step"])
    ops: dict = defaultdict(lambda: defaultdict(float))
    for r in runs:
        for phase, d in r["profiled"]["op_ms"].items():
            for name, ms in d.items():
                ops[phase][name] += ms / n_prof
    med = {k: statistics.median(v) for k, v in cpu.items()}
    compute = [s - d for s, d in zip(cpu["step"], cpu["data"])]
    pmed = {k: statistics.median(v) for k, v in pwall.items()}
    pmed["other"] = max(0.0, pmed["step"] - sum(pmed[p] for p in PHASES))
    return {
        "label": label, "runs": len(runs), "dates": [r["date"] for r in runs],
        **{k: first[k] for k in ("commit", "head", "train_py_sha256", "train_py_committed", "torch", "threads",
                                 "workers", "cpu", "cpus", "afd_train_argv", "batch_size", "crop", "warmup_steps",
                                 "prefilled_photo_cache")},
        "loadavg_per_run": [r["loadavg"] for r in runs],
        "process_cpu_over_thread_cpu": max(r["process_cpu_over_thread_cpu"] for r in runs),
        "timed_steps": len(cpu["step"]), "profiled_steps": n_prof,
        "cpu_ms_per_step_median": {k: round(v, 1) for k, v in med.items()},
        "crops_per_cpu_s_median": round(b / (med["step"] / 1000), 2),
        "crops_per_cpu_s_total": round(b * len(cpu["step"]) / (sum(cpu["step"]) / 1000), 2),
        "crops_per_cpu_s_without_data_median": round(b / (statistics.median(compute) / 1000), 2),
        "wall_ms_per_step_median": round(statistics.median(wall), 1),
        "crops_per_wall_s_median": round(b / (statistics.median(wall) / 1000), 2),
        "profiled_wall_ms_per_step_median": {k: round(v, 1) for k, v in pmed.items()},
        "top_ops_wall_ms_per_step": {p: {k: round(v, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:TOP_OPS]}
                                     for p, d in ops.items()},
        "per_run": runs,
    }


def markdown(s: dict) -> str:
    c, p = s["cpu_ms_per_step_median"], s["profiled_wall_ms_per_step_median"]
    loads = ", ".join(f"{a:g} -> {b:g}" for a, b in s["loadavg_per_run"])
    lines = [f"# Training step cost: {s['label']}", "",
             f"Commit {s['commit']} (afd_ext/train {'as committed' if s['train_py_committed'] else 'MODIFIED'}, "
             f"sha256 {s['train_py_sha256'][:12]}), torch {s['torch']}, {s['threads']} thread, {s['workers']} loader "
             f"workers; {s['cpu']}, {s['cpus']} CPUs shared with other work (load average over each run: {loads}). "
             f"{s['runs']} run(s) ({', '.join(s['dates'])}).", "",
             f"v3 recipe, batch {s['batch_size']} crops of {s['crop']}; per run {s['warmup_steps']} warm-up steps, "
             "then steps under torch.profiler (wall time per phase, operators) and as many without it (this "
             f"thread's CPU time per phase and step): {s['timed_steps']} timed and {s['profiled_steps']} profiled "
             "steps in all, medians over them. Photo cache "
             f"{'prefilled (a long run steady state)' if s['prefilled_photo_cache'] else 'empty at the start'}.", "",
             "| phase | CPU ms / step | share | wall ms / step, profiled |", "| --- | --- | --- | --- |"]
    for k in (*PHASES, "other"):
        lines.append(f"| {k} | {c[k]:.1f} | {100 * c[k] / c['step']:.0f}% | {p[k]:.1f} |")
    lines.append(f"| **step** | **{c['step']:.1f}** | | {p['step']:.1f} |")
    lines += ["", f"**{s['crops_per_cpu_s_median']} crops per CPU second** (batch / median step CPU time; "
              f"{s['crops_per_cpu_s_total']} over all {s['timed_steps']} steps; "
              f"{s['crops_per_cpu_s_without_data_median']} without the data, as with a loader worker on another "
              f"core). Wall clock: median step {s['wall_ms_per_step_median']} ms, {s['crops_per_wall_s_median']} "
              "crops/s (it moves with the machine's load).", "",
              "Top operators by self time (profiled, wall ms per step):", ""]
    for k in (*PHASES, "other"):
        ops = ", ".join(f"{name} {ms}" for name, ms in list(s["top_ops_wall_ms_per_step"].get(k, {}).items())[:6])
        lines.append(f"- {k}: {ops}")
    lines += ["", "```", " ".join(shlex.quote(a) for a in s["afd_train_argv"]), "```", ""]
    return "\n".join(lines)


def write(summary: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path.with_suffix(".json"), summary)
    atomic_write_bytes(path.with_suffix(".md"), markdown(summary).encode())
    print(markdown(summary))


def compile_check(args) -> dict:
    """torch.compile of the step's frozen classifier rest (what the teacher runs without a graph and the
    student with one, into the AFD's output) against eager, on the stem features of one v3 batch:
    the first calls' time (compilation) and the CPU time of each pass, interleaved, medians."""
    from afd_ext import reference
    torch.set_num_threads(args.threads)
    argv = ["train", "--data", *args.data, *shlex.split(V3_FLAGS), "--threads", str(args.threads),
            "--workers", "0", *shlex.split(args.train_flags)]
    cfg = train_config(build_parser().parse_args(argv))
    torch.manual_seed(cfg.seed)
    run = T.build_training(cfg, torch.device("cpu"), T.split_files(cfg.data, cfg.holdout)[0])
    model = run.step_model if run.step_model is not None else run.model
    clean = next(iter(run.loader))[0].contiguous(memory_format=run.memory_format)
    with torch.no_grad():
        x = reference.apply_act(model.stem_features(clean)[0], model.adapter.act)
    eager = model.adapter.rest
    t0, c0 = time.perf_counter(), time.process_time()
    compiled = torch.compile(eager)

    def fwd(fn):
        with torch.no_grad():
            return fn(x)

    def fwd_bwd(fn):
        xx = x.detach().clone().requires_grad_(True)
        fn(xx).logsumexp(1).sum().backward()

    fwd(compiled)
    fwd_bwd(compiled)
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    times: dict = defaultdict(list)
    for _ in range(args.steps):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            for kind, g in (("forward_no_grad", fwd), ("forward_backward", fwd_bwd)):
                c = time.thread_time()
                g(fn)
                times[f"{name} {kind}"].append((time.thread_time() - c) * 1000)
    med = {k: round(statistics.median(v), 1) for k, v in times.items()}
    per_step = {n: round(med[f"{n} forward_no_grad"] + med[f"{n} forward_backward"], 1) for n in ("eager", "compiled")}
    return {"label": "torch.compile of the step's frozen classifier rest",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), **_train_py_state(), "torch": torch.__version__, "threads": args.threads,
            "cpu": _cpu_model(), "loadavg": round(os.getloadavg()[0], 2), "input": list(x.shape),
            "channels_last": run.channels_last, "rounds": args.steps,
            "first_calls_s": round(compile_s, 1), "first_calls_process_cpu_s": round(compile_cpu_s, 1),
            "cpu_ms_median": med, "cpu_ms_per_step_teacher_plus_student": per_step,
            "max_abs_logit_difference": float((fwd(compiled) - fwd(eager)).abs().max())}


def main() -> None:
    if sys.argv[1:2] == ["compile-check"]:  # same options as a measurement; --steps: interleaved rounds
        sys.argv.pop(1)
        compile_mode = True
    else:
        compile_mode = False
    if sys.argv[1:2] == ["combine"]:
        ap = argparse.ArgumentParser(prog="profile_train_step.py combine")
        ap.add_argument("--out", required=True)
        ap.add_argument("--label", default=None)
        ap.add_argument("runs", nargs="+", help="JSON files of single runs (or of combined ones)")
        a = ap.parse_args(sys.argv[2:])
        runs = []
        for f in a.runs:
            r = json.loads(Path(f).read_text())
            runs.extend(r.get("per_run", [r]))
        return write(summarize(runs, a.label or Path(a.out).name), a.out)
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
    ap.add_argument("--train-flags", default="", help="extra afd train flags, e.g. --train-flags=--no-channels-last")
    ap.add_argument("--label", default=None, help="name of this measurement (default: the --out file name)")
    ap.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = ap.parse_args()
    if compile_mode:
        r = compile_check(args)
        write_json(Path(args.out).with_suffix(".json"), r)
        print(json.dumps(r, indent=2))
        return
    r = measure(args)
    write(summarize([r], r["label"]), args.out)


if __name__ == "__main__":
    main()
