"""Backend choice: defaults, use_backend, AFD_BACKEND, and what happens when a backend is missing."""
import os
import subprocess
import sys

import pytest
import torch

import afd_ext
from afd_ext import ops


def test_available_backends_lists_reference_and_what_was_built():
    avail = afd_ext.available_backends()
    assert avail[0] == "reference"
    assert set(avail) <= set(ops.BACKENDS)
    if afd_ext.ops.extension_error() is None:
        assert "cpp" in avail  # the compiled extension always carries the CPU kernels


def test_default_backend_per_device():
    cpu = afd_ext.current_backend("cpu")
    assert cpu == ("cpp" if "cpp" in afd_ext.available_backends() else "reference")
    cuda = afd_ext.current_backend("cuda")
    assert cuda in ("cuda", "triton", "reference")


def test_use_backend_forces_and_restores():
    img = torch.rand(1, 3, 16, 16) * 255
    before = afd_ext.current_backend("cpu")
    with afd_ext.use_backend("reference") as name:
        assert name == "reference" and afd_ext.current_backend("cpu") == "reference"
        out_ref = torch.ops.afd.block_dct(img)
    assert afd_ext.current_backend("cpu") == before
    torch.testing.assert_close(torch.ops.afd.block_dct(img), out_ref, rtol=1e-5, atol=1e-3)


def test_forced_reference_really_runs_the_reference(monkeypatch):
    calls = []
    real = afd_ext.reference.block_dct

    def spy(img):
        calls.append(img.shape)
        return real(img)
    monkeypatch.setattr(afd_ext.reference, "block_dct", spy)
    with afd_ext.use_backend("reference"):
        torch.ops.afd.block_dct(torch.rand(1, 3, 8, 8))
    assert calls == [(1, 3, 8, 8)]


def test_nested_use_backend():
    with afd_ext.use_backend("reference"):
        with afd_ext.use_backend(afd_ext.available_backends()[-1]) as inner:
            assert afd_ext.current_backend("cpu") == inner
        assert afd_ext.current_backend("cpu") == "reference"


def test_unknown_or_missing_backend():
    with pytest.raises(ValueError, match="unknown afd backend"):
        with afd_ext.use_backend("opencl"):
            pass
    if "cuda" in afd_ext.available_backends() and not torch.cuda.is_available():
        with afd_ext.use_backend("cuda"):
            with pytest.raises(RuntimeError, match="cannot run on CPU tensors"):
                torch.ops.afd.block_dct(torch.rand(1, 3, 8, 8))


def test_env_var_forces_backend():
    code = "import afd_ext; print(afd_ext.current_backend('cpu'))"
    env = {**os.environ, "AFD_BACKEND": "reference"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"


def test_env_var_naming_no_backend_fails_at_use_not_at_import():
    # The import works (so the CLI can report it); every op and current_backend() raise, naming the
    # variable; nothing silently runs another backend; use_backend() still works inside it.
    code = ("import torch, afd_ext\n"
            "for call in (lambda: torch.ops.afd.block_dct(torch.rand(1, 3, 8, 8)),\n"
            "             lambda: afd_ext.current_backend('cpu')):\n"
            "    try:\n"
            "        call()\n"
            "    except RuntimeError as exc:\n"
            "        print('raised:', exc)\n"
            "    else:\n"
            "        print('ran')\n"
            "with afd_ext.use_backend('reference'):\n"
            "    print(tuple(torch.ops.afd.block_dct(torch.rand(1, 3, 8, 8)).shape))\n")
    env = {**os.environ, "AFD_BACKEND": "nonsense"}
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 0, bad.stderr
    lines = bad.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[2] == "(1, 192, 1, 1)", lines
    for line in lines[:2]:
        assert line.startswith("raised: environment variable AFD_BACKEND='nonsense'"), line
        assert "unknown afd backend 'nonsense'" in line
    # the CLI: one error line naming the variable, exit 2 (a bad setting, like a bad flag), no traceback
    cli = subprocess.run([sys.executable, "-m", "afd_ext", "predict", "nowhere.jpg"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, (cli.returncode, cli.stderr)
    assert "Traceback" not in cli.stderr
    assert cli.stderr.strip() == ("afd predict: error: environment variable AFD_BACKEND='nonsense': unknown afd "
                                  "backend 'nonsense'; choose one of ('reference', 'cpp', 'cuda', 'triton')")


def _other_cpu_backend():
    from helpers import cpu_backends
    others = [b for b in cpu_backends() if b != "reference"]
    if not others:
        pytest.skip("needs a second CPU backend besides the reference")
    return others[0]


def test_use_backend_is_per_thread_and_each_block_keeps_its_backend(monkeypatch):
    """Thread A enters, thread B enters, A exits: B keeps its backend until it exits, and neither
    thread's block changes what the other (or the main thread) runs."""
    import threading
    other, default = _other_cpu_backend(), afd_ext.current_backend("cpu")
    ran_reference = []  # the threads whose block_dct calls ran the reference
    real = afd_ext.reference.block_dct
    monkeypatch.setattr(afd_ext.reference, "block_dct",
                        lambda img: (ran_reference.append(threading.current_thread().name), real(img))[1])
    img = torch.rand(1, 3, 8, 8) * 255
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen, errors = {}, []

    def thread_a():
        try:
            with afd_ext.use_backend("reference"):
                a_in.set()
                assert b_in.wait(60)
                seen["a inside, b inside"] = afd_ext.current_backend("cpu")
                torch.ops.afd.block_dct(img)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            a_in.set()
            a_out.set()

    def thread_b():
        try:
            assert a_in.wait(60)
            with afd_ext.use_backend(other):
                b_in.set()
                assert a_out.wait(60)
                seen["b inside, a exited"] = afd_ext.current_backend("cpu")
                torch.ops.afd.block_dct(img)
            seen["b exited"] = afd_ext.current_backend("cpu")
        except BaseException as exc:
            errors.append(exc)
        finally:
            b_in.set()

    threads = [threading.Thread(target=thread_a, name="A"), threading.Thread(target=thread_b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert seen == {"a inside, b inside": "reference", "b inside, a exited": other, "b exited": default}
    assert ran_reference == ["A"]  # B's call ran its own backend, not A's reference
    assert afd_ext.current_backend("cpu") == default  # the main thread never saw either block


def test_blocks_exiting_out_of_order_keep_their_backends():
    other, default = _other_cpu_backend(), afd_ext.current_backend("cpu")
    outer, inner = afd_ext.use_backend("reference"), afd_ext.use_backend(other)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the outer block ends first (e.g. generators, ExitStack misuse)
    assert afd_ext.current_backend("cpu") == other  # the still-open inner block keeps its backend
    inner.__exit__(None, None, None)
    assert afd_ext.current_backend("cpu") == default
