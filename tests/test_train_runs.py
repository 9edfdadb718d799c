"""Training runs that go wrong: a loss or update that stops being finite, two runs into one folder (the
lock), a run killed mid-write (stale temporaries, the log without repeats on --resume), and --resume
from a checkpoint of another recipe or without training state. CPU, tiny models, a few seconds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import afd_ext
from afd_ext.cli import main
from afd_ext.models.checkpoint import read_checkpoint
from helpers import TRAIN_QUICK


# -- non-finite training ---------------------------------------------------------------------------

def test_diverging_training_stops_without_a_checkpoint_of_nans(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--lr", "1e30"] + TRAIN_QUICK) == 1
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "Traceback" not in err
    assert not (out / "afd.safetensors").exists()
    if (out / "last.safetensors").exists():  # whatever was saved before is finite
        read_checkpoint(out / "last.safetensors")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        afd_ext.TrainConfig(data=[str(photos)], lr=float("inf")).validate()


# -- two runs into one folder, interrupted runs ---------------------------------------------------------

def test_a_second_run_into_a_held_folder_is_refused_naming_the_pid(photos, tmp_path, capsys):
    from afd_ext.train import lock_output
    out = tmp_path / "run"
    # another process holds the folder (the lock protocol: flock on OUT/.lock holding the pid)
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fh = open({str(out / '.lock')!r}, 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()\n"
        "print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN_QUICK) == 1
        err = capsys.readouterr().err
        assert f"another afd train (pid {holder.pid})" in err and "Traceback" not in err
        assert not (out / "train_log.jsonl").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the lock went with the killed process; in this process too it is refused while held
    with lock_output(out):
        assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN_QUICK) == 1
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert main(["train", "--data", str(photos), "--out", str(out)] + TRAIN_QUICK) == 0
    with lock_output(out):  # released on exit
        pass


def test_killed_run_leaves_no_stale_temporaries_and_resume_does_not_repeat_steps(photos, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "2"] + TRAIN_QUICK) == 0
    # what a SIGKILL during step 3's log line and a checkpoint write leaves behind
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(killed.stdout)  # the writer's temporaries (utils.TEMP_PATTERN), their process gone
    stale = [out / f".last.afd-{pid}-0123abcd.tmp.safetensors", out / f".afd.afd-{pid}-89abcdef.tmp.json"]
    for f in stale:
        f.write_bytes(b"\0" * 4096)
    (out / "notes.tmp").write_text("not ours")
    (out / ".notes.abcdefgh.tmp").write_text("not ours either")
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN_QUICK) == 0
    assert not any(f.exists() for f in stale) and (out / "notes.tmp").exists()
    assert (out / ".notes.abcdefgh.tmp").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert log[2]["loss"] != 1.0  # step 3 is the resumed run's, not the killed one's


# -- --resume from something else ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--stop-after", "2"] + TRAIN_QUICK) == 0
    return out


@pytest.mark.parametrize("flags,needle", [
    (["--width", "small"], "width: 'tiny' there, 'small' here"),
    (["--fdm", "global"], "fdm: 'spatial' there, 'global' here"),
    (["--block", "conv"], "block: 'repconv' there, 'conv' here"),
    (["--lr", "0.01"], "lr: 0.002 there, 0.01 here"),
])
def test_resume_with_another_recipe_is_refused(stopped_run, photos, tmp_path, flags, needle, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    before = (out / "last.safetensors").read_bytes()
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN_QUICK + flags) == 1
    err = capsys.readouterr().err
    assert str(out / "last.safetensors") in err and needle in err and "Traceback" not in err, err
    assert (out / "last.safetensors").read_bytes() == before


def test_resume_from_a_checkpoint_without_training_state(photos, checkpoint, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(checkpoint, out / "last.safetensors")
    assert main(["train", "--data", str(photos), "--out", str(out), "--resume"] + TRAIN_QUICK) == 1
    err = capsys.readouterr().err
    assert "holds no training state" in err and str(out / "last.safetensors") in err and "Traceback" not in err
