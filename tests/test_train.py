"""afd train: a few steps on synthetic photos, resume equals an uninterrupted run, 2-process DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from afd_ext.cli import main
from afd_ext.train import TrainConfig
from helpers import make_photo

COMMON = ["--steps", "4", "--batch-size", "2", "--crop", "32", "--workers", "0", "--threads", "1",
          "--val-every", "2", "--val-images", "2", "--ckpt-every", "2", "--warmup", "1", "--no-progress",
          "--width", "2", "--quality-range", "5", "30"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        name = f"n01440764_{i}.jpg" if i % 2 else f"photo_{i}.jpg"  # some labelled (held out), some not
        make_photo(72, 96, seed=i).save(root / name, quality=95)
    return root


def _summary(out):
    return json.loads((out / "train_summary.json").read_text())


def test_train_writes_checkpoint_and_logs(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--holdout", "0.5"] + COMMON) == 0
    assert (out / "afd.safetensors").exists() and (out / "afd.json").exists() and (out / "last.safetensors").exists()
    cfg = json.loads((out / "afd.json").read_text())
    assert cfg["backbone"] == "efficientnet_lite0" and cfg["module"]["width"] == 2
    assert cfg["recipe"]["quality_range"] == [5, 30] and cfg["data"]["holdout_files"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4] and "kl" in log[0] and "val" in log[1]
    # the same entries as CSV, for pandas / spreadsheets / plotting tools
    rows = _csv(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for r, e in zip(rows, log):
        assert float(r["loss"]) == pytest.approx(e["loss"]) and float(r["kl"]) == pytest.approx(e["kl"])
        assert r["ce"] == ""  # no cross-entropy in this recipe
        if "val" in e:
            q = [k for k in e["val"] if k.endswith("_afd") and k.startswith("q")][0]
            assert int(r["val_quality"]) == int(q[1:-4]) and float(r["val_q_afd"]) == pytest.approx(e["val"][q])
            assert int(r["val_n"]) == e["val"]["n"]
        else:
            assert r["val_n"] == "" and r["val_q_afd"] == ""
    assert cfg["classifier_precision"] == {"autocast": "float32", "channels_last": True}  # CPU defaults


def _csv(out):
    import csv
    from afd_ext.train import CSV_COLUMNS
    with open(out / "train_log.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def test_resume_equals_uninterrupted(photos, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--data", str(photos), "--out", str(a)] + COMMON) == 0
    assert main(["train", "--data", str(photos), "--out", str(b), "--stop-after", "3"] + COMMON) == 0
    assert not (b / "afd.safetensors").exists()  # an interrupted run leaves only last.safetensors
    assert main(["train", "--data", str(photos), "--out", str(b), "--resume"] + COMMON) == 0
    assert _summary(b)["resumed_from"] == 3
    assert _summary(a)["param_digests"] == _summary(b)["param_digests"]
    assert [int(r["step"]) for r in _csv(b)] == [1, 2, 3, 4]  # no step logged twice


def test_classifier_precision_defaults_follow_the_device():
    import torch
    from afd_ext.train import TrainConfig, classifier_precision
    cfg = TrainConfig(data=["x"])
    assert classifier_precision(cfg, torch.device("cpu")) == (None, True)  # channels_last pays on CPU too
    assert classifier_precision(cfg, torch.device("cuda")) == (torch.bfloat16, True)
    cfg = TrainConfig(data=["x"], channels_last=False)
    assert classifier_precision(cfg, torch.device("cpu")) == (None, False)
    cfg = TrainConfig(data=["x"], autocast="off", channels_last=False)
    assert classifier_precision(cfg, torch.device("cuda")) == (None, False)
    cfg = TrainConfig(data=["x"], autocast="bfloat16", channels_last=True)
    assert classifier_precision(cfg, torch.device("cpu")) == (torch.bfloat16, True)
    with pytest.raises(ValueError, match="autocast must be one of"):
        TrainConfig(data=["x"], autocast="fp8").validate()


def test_bfloat16_channels_last_classifier_trains(photos, tmp_path):
    """The option the CUDA default turns on, run on CPU: the classifier's bfloat16 changes the
    losses (so it is applied) by a little (so it is right), and the AFD still trains in float32."""
    a, b = tmp_path / "fp32", tmp_path / "bf16"
    assert main(["train", "--data", str(photos), "--out", str(a)] + COMMON) == 0
    assert main(["train", "--data", str(photos), "--out", str(b), "--autocast", "bfloat16", "--channels-last"]
                + COMMON) == 0
    cfg = json.loads((b / "afd.json").read_text())
    assert cfg["classifier_precision"] == {"autocast": "bfloat16", "channels_last": True}
    assert cfg["recipe"]["autocast"] == "bfloat16" and cfg["recipe"]["channels_last"] is True
    la, lb = ([json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()] for d in (a, b))
    assert la[0]["l1"] != lb[0]["l1"]
    assert lb[0]["l1"] == pytest.approx(la[0]["l1"], rel=0.05)
    from safetensors.torch import load_file
    import torch
    assert all(t.dtype == torch.float32 for t in load_file(b / "afd.safetensors").values())


def test_time_budget_run_equals_fixed_step_run(photos, tmp_path):
    """--time-budget fixes the step count at the end of the warm-up; the checkpoint records it, and
    --steps N with that count reproduces the run (the warm-up's learning rate ignores the count)."""
    a, b = tmp_path / "a", tmp_path / "b"
    opts = [o for o in COMMON]
    opts[opts.index("--steps") + 1] = "500"
    opts[opts.index("--warmup") + 1] = "24"
    assert main(["train", "--data", str(photos), "--out", str(a), "--time-budget", "0.5"] + opts) == 0
    fitted = json.loads((a / "afd.json").read_text())["recipe"]["steps"]
    assert _summary(a)["steps"] == fitted and 24 <= fitted < 500
    opts[opts.index("--steps") + 1] = str(fitted)
    assert main(["train", "--data", str(photos), "--out", str(b)] + opts) == 0
    assert _summary(a)["param_digests"] == _summary(b)["param_digests"]


def test_time_budget_needs_a_warmup(photos, tmp_path, capsys):
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "x"), "--time-budget", "5"] + COMMON) == 1
    assert "warm-up" in capsys.readouterr().err


def test_time_budget_with_resume_is_refused(photos, tmp_path, capsys):
    opts = [o for o in COMMON]
    opts[opts.index("--warmup") + 1] = "24"
    args = ["train", "--data", str(photos), "--out", str(tmp_path / "x"), "--time-budget", "5", "--resume"]
    assert main(args + opts) == 1
    assert "cannot be combined with --resume" in capsys.readouterr().err


def test_resume_without_checkpoint_fails_cleanly(photos, tmp_path, capsys):
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "x"), "--resume"] + COMMON) == 1
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_train_on_missing_or_empty_folder(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")] + COMMON) == 1
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")] + COMMON) == 1
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "no images" in err


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_identical(photos, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "afd_ext", "train", "--data", str(photos), "--out", str(out)] + COMMON
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = _summary(out)["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert _summary(out)["world_size"] == 2


def test_mixture_flags_and_init_are_recorded(photos, tmp_path):
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first)] + COMMON) == 0
    out = tmp_path / "mix"
    args = ["train", "--data", str(photos), "--out", str(out), "--init", str(first / "afd.safetensors"),
            "--shift-fraction", "0.2", "--rescale-fraction", "0.5", "--rescale-range", "0.8", "2.5",
            "--webp-fraction", "0.3", "--chroma444-fraction", "0.4", "--max-compressions", "2"] + COMMON
    assert main(args) == 0
    recipe = json.loads((out / "afd.json").read_text())["recipe"]
    assert recipe["shift_fraction"] == 0.2 and recipe["rescale_fraction"] == 0.5
    assert recipe["rescale_range"] == [0.8, 2.5] and recipe["webp_fraction"] == 0.3
    from afd_ext.train import portable_path  # the machine's folder tree stays out of the checkpoint
    assert recipe["chroma444_fraction"] == 0.4 and recipe["init"] == portable_path(first / "afd.safetensors")


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_checkpoints_record_no_absolute_paths(photos, tmp_path):
    """The config (JSON and safetensors metadata) names the training folders and --init without the
    training machine's folder tree; a path below the working directory stays relative."""
    from afd_ext.models.checkpoint import read_checkpoint
    from afd_ext.train import portable_path
    first, out = tmp_path / "first", tmp_path / "run"
    assert main(["train", "--data", str(photos.resolve()), "--out", str(first)] + COMMON) == 0
    assert main(["train", "--data", str(photos.resolve()), "--out", str(out),
                 "--init", str((first / "afd.safetensors").resolve())] + COMMON) == 0
    for run in (first, out):
        configs = [json.loads((run / "afd.json").read_text()), read_checkpoint(run / "afd.safetensors")[1]]
        for cfg in configs:
            leaked = [s for s in _strings(cfg) if str(tmp_path) in s or s.startswith("/")]
            assert not leaked, leaked
        assert configs[0]["data"]["folders"] == [str(os.path.join("...", *photos.resolve().parts[-2:]))]
    assert json.loads((out / "afd.json").read_text())["recipe"]["init"].endswith("first/afd.safetensors")
    assert portable_path("runs/x") == "runs/x"
    assert portable_path(os.path.join(os.getcwd(), "a", "b")) == os.path.join("a", "b")


# -- the output folder and hostile run state (README "Errors") --------------------------------------

def test_a_lock_file_that_is_a_symlink_is_never_followed(photos, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (out / ".lock").symlink_to(precious)
    assert main(["train", "--data", str(photos), "--out", str(out)] + COMMON) == 1
    err = capsys.readouterr().err
    assert "afd train: error:" in err and ".lock is a symbolic link" in err and "Traceback" not in err
    assert precious.read_text() == "keep me" and not (out / "train_log.jsonl").exists()


def test_a_lock_file_hard_linked_to_another_file_is_refused(photos, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    os.link(precious, out / ".lock")
    assert main(["train", "--data", str(photos), "--out", str(out)] + COMMON) == 1
    assert "other hard links" in capsys.readouterr().err and precious.read_text() == "keep me"


def test_stale_cleanup_removes_only_the_writers_own_temporaries(tmp_path):
    from afd_ext.train import clean_stale_tmp
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has exited
    ours_dead = tmp_path / f".last.afd-{dead}-0123abcd.tmp.safetensors"  # utils.TEMP_PATTERN
    ours_live = tmp_path / f".afd.afd-{os.getpid()}-4567cdef.tmp.json"  # alive: its write may be under way
    users = [tmp_path / n for n in (".X.abcdefgh.tmp", ".notes.12345678.tmp", ".last.k1ll3d_0.tmp.safetensors")]
    for f in [ours_dead, ours_live, *users]:
        f.write_bytes(b"\0" * 64)
    assert clean_stale_tmp(tmp_path) == [ours_dead]
    assert not ours_dead.exists() and ours_live.exists() and all(f.exists() for f in users)


def test_a_fresh_run_into_a_used_folder_removes_the_previous_runs_files(photos, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out)] + COMMON) == 0
    assert (out / "afd.safetensors").exists() and (out / "train_summary.json").exists()
    # a fresh run (no --resume) stopped before its end: no final model of the previous run beside its files
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "1"] + COMMON) == 0
    assert not (out / "afd.safetensors").exists() and not (out / "afd.json").exists()
    assert not (out / "train_summary.json").exists()
    assert json.loads((out / "last.json").read_text())["train_state"]["step"] == 1  # this run's state
    assert [int(r["step"]) for r in _csv(out)] == [1]


def test_init_from_the_folder_a_fresh_run_replaces_is_refused(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out)] + COMMON) == 0
    before = (out / "afd.safetensors").read_bytes()
    assert main(["train", "--data", str(photos), "--out", str(out), "--init", str(out / "afd.safetensors")]
                + COMMON) == 1
    assert "a fresh run into --out" in capsys.readouterr().err
    assert (out / "afd.safetensors").read_bytes() == before


def test_resume_from_a_step_beyond_the_recipe_is_refused(photos, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "2"] + COMMON) == 0
    last = out / "last.safetensors"
    with safe_open(str(last), "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    config = json.loads(meta["afd_config"])
    config["train_state"]["step"] = 10**6  # crafted: claims to be far past the 4-step recipe
    save_file(tensors, str(last), metadata={**meta, "afd_config": json.dumps(config)})
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + COMMON) == 1
    err = capsys.readouterr().err
    assert "1000000" in err and "beyond" in err and "Traceback" not in err
    assert not (out / "afd.safetensors").exists()


def test_an_update_that_overflows_is_reported_as_divergence(photos, tmp_path, capsys):
    opts = [o for o in COMMON]
    opts[opts.index("--warmup") + 1] = "0"
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "x"), "--lr", "1e38"] + opts) == 1
    err = capsys.readouterr().err
    assert "afd train: error: training diverged at step 1" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "afd.safetensors").exists()


@pytest.mark.parametrize("field,value", [("steps", 10**20), ("max_compressions", 10**9), ("seed", 10**30),
                                         ("seed", -1), ("batch_size", 10**7), ("workers", 10**6),
                                         ("threads", 10**6), ("warmup", 10**10), ("steps", True), ("crop", 10**6)])
def test_config_integers_are_range_checked(field, value):
    from afd_ext.train import TrainConfig
    with pytest.raises(ValueError, match=field.replace("_", " ") + " must be an integer in"):
        TrainConfig(data=["x"], **{field: value}).validate()


def _feature_errors(checkpoint, photo_dir, n=24):
    """(mean |AFD(stem(q10 crop)) - act(stem(clean crop))|, the same without the AFD) over ``n`` crops
    of the photos in ``photo_dir`` (none of them seen in training)."""
    import torch

    import afd_ext
    from afd_ext import reference
    from afd_ext.train import CompressedPairs, TrainConfig
    model = afd_ext.create_model("efficientnet_lite0", checkpoint=str(checkpoint)).eval()
    cfg = TrainConfig(data=[], crop=48, qualities=(10,), clean_fraction=0.0, seed=123, flip=False, rotate=False)
    ds = CompressedPairs(sorted(photo_dir.iterdir()), cfg, n)
    clean = torch.stack([ds[i][0] for i in range(n)])
    comp = torch.stack([ds[i][1] for i in range(n)])
    with torch.no_grad():
        target = reference.apply_act(model.stem_features(clean)[0], model.adapter.act)
        feat, pixels = model.stem_features(comp)
        err_afd = (model.afd(feat, pixels) - target).abs().mean().item()
        err_identity = (reference.apply_act(feat, model.adapter.act) - target).abs().mean().item()
    return err_afd, err_identity


def _textured_photos(root, n, seed):
    """``n`` PNGs of fine texture (frequencies up to 0.4 rad/pixel: what JPEG at q10 destroys)."""
    root.mkdir()
    for i in range(n):
        make_photo(96, 128, seed=seed * 1000 + i, noise=12, freq=(0.05, 0.4)).save(root / f"photo_{i}.png")
    return root


def test_training_lowers_the_feature_error_on_held_pairs_below_the_identity(tmp_path):
    """A short run learns what the method promises: on pairs it never saw, the de-drifted features of
    a compressed crop are closer to the clean crop's than the compressed crop's own are (200 steps:
    about 6% closer; the L1 target alone, the KL term moves logits more than features this early). A
    loss with the wrong sign or target (the compressed features) leaves it at or above the identity's."""
    train_dir = _textured_photos(tmp_path / "train", 8, seed=0)
    held_dir = _textured_photos(tmp_path / "held", 4, seed=1)
    out = tmp_path / "run"
    args = ["train", "--data", str(train_dir), "--out", str(out), "--steps", "200", "--batch-size", "8",
            "--crop", "48", "--workers", "0", "--threads", "1", "--warmup", "5", "--lr", "3e-3",
            "--no-progress", "--width", "4", "--qualities", "10", "--clean-fraction", "0.1", "--kl-weight", "0",
            "--val-every", "1000", "--ckpt-every", "1000", "--seed", "0"]
    assert main(args) == 0
    err_afd, err_identity = _feature_errors(out / "afd.safetensors", held_dir)
    assert err_afd < 0.97 * err_identity, (err_afd, err_identity)


def test_init_loads_the_given_weights(photos, tmp_path):
    """--init starts from the checkpoint's tensors: with a zero learning rate and no weight decay the
    run's weights are exactly the checkpoint's (a fresh module would differ)."""
    import torch
    from safetensors.torch import load_file
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first)] + COMMON) == 0
    second = tmp_path / "second"
    args = ["train", "--data", str(photos), "--out", str(second), "--init", str(first / "afd.safetensors"),
            "--lr", "0", "--weight-decay", "0"] + COMMON
    assert main(args) == 0
    want, got = load_file(first / "afd.safetensors"), load_file(second / "afd.safetensors")
    assert set(want) == set(got)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in want.items() if k.startswith("fe.last"))


def test_init_records_the_architecture_it_trained_not_the_flags(photos, tmp_path):
    """A run from --init trains the checkpoint's module whatever --width says (``afd widen`` gives
    it another width): its recipe records that module's width, and --resume of it still matches."""
    from afd_ext.models.checkpoint import read_checkpoint
    from afd_ext.train import widen_checkpoint
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first)] + COMMON) == 0
    wide = tmp_path / "wide.safetensors"
    widen_checkpoint(first / "afd.safetensors", wide, width=3)
    second = tmp_path / "second"
    args = ["train", "--data", str(photos), "--out", str(second), "--init", str(wide)] + COMMON  # COMMON: --width 2
    assert main(args) == 0
    _, cfg = read_checkpoint(second / "afd.safetensors")
    assert cfg["module"]["width"] == 3
    assert cfg["recipe"]["width"] == 3 and cfg["recipe"]["fdm"] == cfg["module"]["fdm"]
    assert cfg["recipe"]["gate"] == cfg["module"].get("gate", "none")
    assert main(args + ["--resume"]) == 0  # the recorded recipe is the one a resume rebuilds


def test_freeze_gate_keeps_the_init_gate_head_and_trains_the_rest(photos, tmp_path):
    """--freeze-gate: the gate head of --init (what afd fit-gate fitted) comes out bit-identical,
    the correction still learns, and the recipe records it; it refuses what cannot mean anything."""
    from afd_ext.models.checkpoint import read_checkpoint
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first), "--gate", "global", "--gate-weight", "0.5"]
                + COMMON) == 0
    second = tmp_path / "second"
    assert main(["train", "--data", str(photos), "--out", str(second), "--init", str(first / "afd.safetensors"),
                 "--freeze-gate", "--gate-weight", "0", "--lr", "0.01"] + COMMON) == 0
    t1, _ = read_checkpoint(first / "afd.safetensors")
    t2, cfg2 = read_checkpoint(second / "afd.safetensors")
    gate = [k for k in t1 if k.startswith("gate_head.")]
    assert gate and all(torch.equal(t1[k], t2[k]) for k in gate)
    assert any(not torch.equal(t1[k], t2[k]) for k in t1 if k not in gate)
    assert cfg2["recipe"]["freeze_gate"] is True
    for extra in (["--gate-weight", "0.5"], []):  # the gate's own loss would be ignored; no --init: no head to keep
        args = ["train", "--data", str(photos), "--out", str(tmp_path / "bad"), "--freeze-gate"] + COMMON
        if extra:
            args += ["--init", str(first / "afd.safetensors")] + extra
        assert main(args) != 0
        assert not (tmp_path / "bad" / "afd.safetensors").exists()


def test_grid_detect_trains_and_saves_the_detected_grid(photos, tmp_path):
    """--grid detect: the module reads the FDM on each sample's detected JPEG grid while it trains,
    and the checkpoint deploys the same way; a run from it keeps the setting unless --grid says
    otherwise; the recipe records the setting it resolved."""
    from afd_ext.models.checkpoint import read_checkpoint
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first), "--gate", "global", "--grid", "detect",
                 "--rescale-fraction", "1.0"] + COMMON) == 0
    _, cfg = read_checkpoint(first / "afd.safetensors")
    assert cfg["module"]["grid"] == "detect" and cfg["recipe"]["grid"] == "detect"
    for extra, grid in (([], "detect"), (["--grid", "input"], "input")):
        out = tmp_path / f"from-{grid}"
        assert main(["train", "--data", str(photos), "--out", str(out), "--init", str(first / "afd.safetensors")]
                    + extra + COMMON) == 0
        _, cfg = read_checkpoint(out / "afd.safetensors")
        assert cfg["module"].get("grid", "input") == grid and cfg["recipe"]["grid"] == grid
    _, cfg = read_checkpoint(tmp_path / "from-input" / "afd.safetensors")
    assert "grid" not in cfg["module"]  # 'input' is the default: configs keep the key out, as before v16
    with pytest.raises(ValueError, match="grid 'detect' needs fdm 'spatial'"):
        TrainConfig(data=[str(photos)], fdm="global", grid="detect").validate()
    with pytest.raises(ValueError, match="grid must be one of"):
        TrainConfig(data=[str(photos)], grid="shifted").validate()


def test_init_records_the_lineage_and_what_all_of_it_held_out(photos, tmp_path):
    """A run from --init records its starting point (path, sha256) and the labelled images that
    neither it nor its starting point trained on: the intersection of the two hold-outs."""
    from afd_ext.models.checkpoint import read_checkpoint
    from afd_ext.train import held_out_by_lineage
    from afd_ext.train.lineage import weights_sha256
    first = tmp_path / "first"
    assert main(["train", "--data", str(photos), "--out", str(first), "--holdout", "0.99"] + COMMON) == 0
    _, cfg1 = read_checkpoint(first / "afd.safetensors")
    held1 = set(cfg1["data"]["holdout_files"])
    assert held1 and "lineage" not in cfg1 and held_out_by_lineage(cfg1) == held1  # from scratch
    for holdout, expected in (("0.99", held1), ("0.0", set())):
        second = tmp_path / f"second_{holdout}"
        assert main(["train", "--data", str(photos), "--out", str(second), "--init", str(first / "afd.safetensors"),
                     "--holdout", holdout] + COMMON) == 0
        _, cfg2 = read_checkpoint(second / "afd.safetensors")
        sha = weights_sha256(first / "afd.safetensors")
        assert len(cfg2["lineage"]) == 1 and cfg2["lineage"][0]["weights_sha256"] == sha
        assert cfg2["lineage"][0]["checkpoint"].endswith("first/afd.safetensors")
        assert held_out_by_lineage(cfg2) == expected
    # a checkpoint from before runs recorded their lineage gets the same record afterwards
    from afd_ext.models.checkpoint import load_checkpoint, save_checkpoint
    from afd_ext.train.lineage import record_lineage
    afd, cfg_old = load_checkpoint(tmp_path / "second_0.99" / "afd.safetensors")
    cfg_old = {k: v for k, v in cfg_old.items() if k not in ("lineage", "format_version", "module")}
    cfg_old["data"] = {k: v for k, v in cfg_old["data"].items() if k != "lineage_holdout_files"}
    save_checkpoint(tmp_path / "old.safetensors", afd, cfg_old)
    assert held_out_by_lineage(read_checkpoint(tmp_path / "old.safetensors")[1]) is None
    record_lineage(tmp_path / "old.safetensors", first / "afd.safetensors", tmp_path / "recorded.safetensors")
    _, cfg3 = read_checkpoint(tmp_path / "recorded.safetensors")
    assert held_out_by_lineage(cfg3) == held1 and cfg3["lineage_recorded_later"]
    assert cfg3["lineage"][0]["weights_sha256"] == weights_sha256(first / "afd.safetensors")
    with pytest.raises(ValueError, match="from scratch"):
        record_lineage(first / "afd.safetensors", first / "afd.safetensors", tmp_path / "x.safetensors")
    # an ancestor that cannot say what it held out (it started from somewhere unrecorded): unknown
    assert held_out_by_lineage({"recipe": {"init": "x.safetensors"}, "data": {"holdout_files": ["a"]}}) is None


# -- the training step's frozen classifier: fewer operations, the same objective ---------------------

def _tiny_run(photos, tmp_path, **overrides):
    import torch
    from afd_ext.train import TrainConfig, build_training, split_files
    cfg = TrainConfig(data=[str(photos)], out=str(tmp_path / "unused"), width=2, gate="global", gate_weight=0.1,
                      kl_weight=0.3, crop=32, batch_size=4, steps=4, warmup=1, workers=0, **overrides)
    cfg.validate()
    files, _ = split_files(cfg.data, cfg.holdout)
    run = build_training(cfg, torch.device("cpu"), files)
    torch.manual_seed(1)
    with torch.no_grad():  # a module that corrects and gates (a new one's last conv is zero)
        for p in run.afd.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return run


def _written_out_objective(model, clean, comp, gate_targets, cfg):
    """l1, kl, gate of the recipe, written out on the classifier as built (its BatchNorms, separate stem
    calls for the clean and the degraded crops): what afd_loss computed before the step was optimized."""
    import torch
    import torch.nn.functional as F
    clf = model.classifier
    with torch.no_grad():
        target = F.relu6(clf.stem(model.normalize(clean.float())))  # Lite0's stem activation
        logits_clean = clf.forward_rest(target)
        feat = clf.stem(model.normalize(comp.float()))
    out, z = model.afd(feat, comp, return_gate=True)
    logits = clf.forward_rest(out)
    p_clean = F.softmax(logits_clean, 1)
    kl = (p_clean * (F.log_softmax(logits_clean, 1) - F.log_softmax(logits, 1))).sum(1).mean()
    known = gate_targets >= 0
    gate = F.binary_cross_entropy_with_logits(z[known], gate_targets[known])
    l1 = (out - target).abs().mean()
    return {"l1": l1, "kl": kl, "gate": gate}, cfg.l1_weight * l1 + cfg.kl_weight * kl + cfg.gate_weight * gate


@pytest.mark.parametrize("channels_last", [True, False])
def test_training_step_objective_and_gradients_equal_the_written_out_ones(photos, tmp_path, channels_last):
    """The step runs a folded copy of the frozen classifier (BatchNorms in the convs, one stem call
    for both crops, channels_last by default); on a fixed synthetic batch its losses (L1, KL, gate BCE)
    and the AFD's gradients are the written-out objective's on the classifier as built (contiguous),
    within float32 rounding."""
    import torch
    from afd_ext.train import afd_loss
    run = _tiny_run(photos, tmp_path, channels_last=channels_last)
    assert run.step_model is not run.model and run.step_model.afd is run.afd
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (4, 3, 40, 48), dtype=torch.uint8, generator=g)
    noise = torch.randint(-40, 41, clean.shape, generator=g)
    comp = (clean.int() + noise).clamp(0, 255).to(torch.uint8)
    gate_targets = torch.tensor([0.0, 1.0, -1.0, 1.0])
    labels = torch.full((4,), -1)

    fmt = run.memory_format  # as train_step hands the batch over
    loss, parts = afd_loss(run.step_model, clean.contiguous(memory_format=fmt), comp.contiguous(memory_format=fmt),
                           labels, run.cfg, afd=run.ddp, gate_targets=gate_targets)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in run.afd.named_parameters()}
    run.model.classifier.to(memory_format=torch.contiguous_format)
    ref_parts, ref_loss = _written_out_objective(run.model, clean, comp, gate_targets, run.cfg)
    run.opt.zero_grad(set_to_none=True)
    ref_loss.backward()

    assert set(parts) == {"l1", "kl", "gate"}
    for k, v in ref_parts.items():
        assert parts[k] == pytest.approx(float(v.detach()), rel=1e-4, abs=1e-7), k
    assert parts["kl"] > 1e-4 and parts["l1"] > 1e-3  # the AFD changes the features: a real comparison
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-4)
    for n, p in run.afd.named_parameters():
        scale = float(p.grad.abs().max()) + 1e-12
        assert torch.allclose(grads[n], p.grad, rtol=1e-3, atol=1e-4 * scale), n
    # no graph through the frozen classifier: no gradient lands on it, as built or folded
    for m in (run.model, run.step_model):
        assert all(not p.requires_grad and p.grad is None for p in m.classifier.parameters())


def test_the_folded_step_classifier_computes_the_classifier(photos, tmp_path):
    """frozen_step_model: no BatchNorm left, the original classifier untouched, logits equal at odd
    sizes too (the stride-2 'SAME' pads stay asymmetric) and in channels_last."""
    import torch
    from afd_ext.train import frozen_step_model
    run = _tiny_run(photos, tmp_path)
    model, fast = run.model, run.step_model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.classifier.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.classifier.modules()) > 40
    assert not any(m.training for m in fast.classifier.modules())
    g = torch.Generator().manual_seed(3)
    for shape in ((2, 3, 64, 64), (1, 3, 37, 45)):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        with torch.no_grad():
            a = model(x, use_afd=False)
            b = fast(x, use_afd=False)
            fast.classifier.to(memory_format=torch.channels_last)
            c = fast(x.contiguous(memory_format=torch.channels_last), use_afd=False)
            fast.classifier.to(memory_format=torch.contiguous_format)
        tol = 1e-5 * float(a.abs().max())
        assert (a - b).abs().max() <= tol and (a - c).abs().max() <= tol
    before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    frozen_step_model(model)
    assert all(torch.equal(v, model.classifier.state_dict()[k]) for k, v in before.items())
    # anything but afd_ext's EfficientNet-Lite (or one with a BatchNorm in training mode): the model itself
    model.classifier._blocks[0]._bn1.train()
    assert frozen_step_model(model) is model


def test_profile_train_step_tool_measures_a_step(photos, tmp_path):
    """tools/profile_train_step.py (the step-cost figures of docs/accuracy.md) runs on this tree and
    writes its per-phase CPU times and crops per CPU second."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "step"
    r = subprocess.run([sys.executable, os.path.join(repo, "tools", "profile_train_step.py"), "--data", str(photos),
                        "--warmup", "1", "--steps", "2", "--train-flags=--batch-size 2 --crop 32 --width 2",
                        "--out", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    text = json.dumps(result)
    assert "crops_per_cpu_s" in text and out.with_suffix(".md").exists()
