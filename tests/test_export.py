"""afd_ext.inference.export: torch.export / TorchScript / ONNX graphs reload and agree with eager (CPU)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import afd_ext
from afd_ext.inference.export import (FORMATS, OnnxModel, detect_format, export, export_model, load_exported,
                            read_export_info)
from helpers import perturb

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxscript") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX,
                                reason="ONNX export needs onnx and onnxscript (pip install onnx onnxscript)")


@pytest.fixture(scope="module")
def eager(checkpoint_small):
    return afd_ext.create_model("efficientnet_lite0", checkpoint=checkpoint_small, device="cpu")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 224, 224, generator=g)  # batch 3: the graphs were traced at batch 2


@pytest.fixture(scope="module")
def expected(eager, images):
    with torch.no_grad():
        out = eager(images)
        plain = eager(images, use_afd=False)
    assert (out - plain).abs().max() > 1e-2, "the test AFD must change the logits"
    return out


class TinyNet(nn.Module):
    """A small classifier with a stride-2 conv+BN stem, for quick export round trips."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def stem(self, x):
        return self.bn(self.conv(x))

    def rest(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.body(x)), 1).flatten(1))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = TinyNet().eval()
    model = afd_ext.attach(net, stem=net.stem, rest=net.rest, act="relu", channels=8, width="tiny")
    perturb(model.afd, 0.1)
    return model.eval()


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


def test_torch_export_roundtrip(checkpoint_small, images, expected, tmp_path):
    path = export("efficientnet_lite0", checkpoint_small, "export", tmp_path / "model")
    assert path == tmp_path / "model.pt2" and path.is_file() and _no_temp_files(tmp_path)
    module = load_exported(path)
    targets = {str(n.target) for n in module.exported_program.graph.nodes if n.op == "call_function"}
    assert any("afd.block_dct_fdm" in t for t in targets) and any("afd.repconv_dedrift" in t for t in targets)
    with torch.no_grad():
        out = module(images)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    info = read_export_info(path)
    assert info["format"] == "export" and info["backbone"] == "efficientnet_lite0" and info["use_afd"]
    assert "[0,1]" in info["input"]


def test_torchscript_roundtrip(checkpoint_small, eager, images, expected, tmp_path):
    path = export("efficientnet_lite0", checkpoint_small, "torchscript", tmp_path / "model.pt")
    assert detect_format(path) == "torchscript" and _no_temp_files(tmp_path)
    module = load_exported(path)
    assert "afd::" not in str(module.inlined_graph)  # standard ops only: loadable without afd_ext
    with torch.no_grad():
        torch.testing.assert_close(module(images), expected, atol=1e-4, rtol=1e-4)
    assert read_export_info(path)["afd_path"].startswith("re-parameterized reference")
    # exporting leaves the model it was given untouched (a prepared copy is exported)
    assert not eager.afd.fused and not any(rc.deployed for rc in eager.afd.fe.repconvs())


@needs_onnx
def test_onnx_small_model_agrees_with_eager(tiny, tmp_path):
    import onnx
    path = export_model(tiny, "onnx", tmp_path / "tiny.onnx", image_size=64)
    assert _no_temp_files(tmp_path)
    model = load_exported(path)
    assert isinstance(model, OnnxModel)
    onnx.checker.check_model(model.model, full_check=True)
    domains = {n.domain for n in model.model.graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom ops
    dims = model.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = tiny(x)
    torch.testing.assert_close(model.run_reference(x), ref, atol=1e-4, rtol=1e-4)


@needs_onnx
@pytest.mark.slow
def test_onnx_backbone_export(checkpoint_small, images, expected, tmp_path):
    import onnx
    path = export("efficientnet_lite0", checkpoint_small, "onnx", tmp_path / "model.onnx")
    model = load_exported(path)
    onnx.checker.check_model(model.model)
    assert {n.domain for n in model.model.graph.node} <= {"", "ai.onnx"}
    assert read_export_info(path)["backbone"] == "efficientnet_lite0"
    # onnx's pure-numpy evaluator: slow, so one image
    torch.testing.assert_close(model.run_reference(images[:1]), expected[:1], atol=1e-4, rtol=1e-4)
    if HAS_ORT:
        torch.testing.assert_close(model(images), expected, atol=1e-4, rtol=1e-4)


@needs_onnx
@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (numeric checks used onnx.reference instead)")
def test_onnxruntime_runs_small_model(tiny, tmp_path):
    model = load_exported(export_model(tiny, "onnx", tmp_path / "tiny.onnx", image_size=64))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny(x), atol=1e-4, rtol=1e-4)


def test_small_model_all_formats_without_afd_ops(tiny, tmp_path):
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = tiny(x)
        plain = tiny(x, use_afd=False)
    for fmt in ("export", "torchscript"):
        module = load_exported(export_model(tiny, fmt, tmp_path / f"tiny_{fmt}", image_size=64))
        with torch.no_grad():
            torch.testing.assert_close(module(x), ref, atol=1e-4, rtol=1e-4)
    off = load_exported(export_model(tiny, "export", tmp_path / "tiny_off.pt2", image_size=64, use_afd=False))
    with torch.no_grad():
        torch.testing.assert_close(off(x), plain, atol=1e-4, rtol=1e-4)


def test_failed_export_leaves_existing_file(tiny, tmp_path, monkeypatch):
    out = tmp_path / "model.pt2"
    out.write_bytes(b"previous")

    def broken_save(ep, f, **kw):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch.export, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_model(tiny, "export", out, image_size=64)
    assert out.read_bytes() == b"previous" and _no_temp_files(tmp_path)


def test_written_file_permissions(tiny, tmp_path):
    path = export_model(tiny, "torchscript", tmp_path / "perm.pt", image_size=64)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_arguments(tiny, tmp_path):
    assert set(FORMATS) == {"export", "torchscript", "onnx"}
    with pytest.raises(ValueError):
        export_model(tiny, "tflite", tmp_path / "x")
    with pytest.raises(ValueError):
        export("efficientnet_lite0", None, "pickle", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "nothing.pt2")


def test_cli_export(checkpoint_small, tmp_path, capsys):
    from afd_ext.cli import main
    out = tmp_path / "cli.pt"
    assert main(["export", "--checkpoint", checkpoint_small, "--device", "cpu", "--format", "torchscript",
                 str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


# -- where the export goes (README "Errors": output paths) ------------------------------------------

def test_export_onto_an_existing_directory_is_refused(tiny, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        export_model(tiny, "export", folder, image_size=64)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []  # no models.pt2 beside it


def test_cli_export_onto_a_directory_exits_1(tmp_path, capsys):
    from afd_ext.cli import main
    assert main(["export", "--format", "export", "--device", "cpu", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "afd export: error:" in err and "is a directory" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [] and not tmp_path.with_suffix(".pt2").exists()


@pytest.mark.parametrize("fmt,name", [("export", "m.onnx"), ("torchscript", "m.pt2"), ("onnx", "m.pt")])
def test_a_suffix_of_another_format_is_refused(tiny, tmp_path, fmt, name):
    with pytest.raises(ValueError, match=f"the suffix .* format's, this is '{fmt}'"):
        export_model(tiny, fmt, tmp_path / name, image_size=64)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_suffix_is_read_back_by_content(tiny, tmp_path):
    path = export_model(tiny, "torchscript", tmp_path / "m.model", image_size=64)
    assert path == tmp_path / "m.model" and detect_format(path) == "torchscript"


_FULL_DISK_EXPORT = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
import afd_ext
from afd_ext.cli import main
from test_export import TinyNet
net = TinyNet().eval()
model = afd_ext.attach(net, stem=net.stem, rest=net.rest, act="relu", channels=8, width="tiny").eval()
model.checkpoint_path = None
import afd_ext.models
afd_ext.models.create_model = lambda *a, **k: model  # the tiny model instead of the backbone
sys.exit(main(["export", "--device", "cpu", "--format", sys.argv[2], sys.argv[3]]))
"""


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB file system (the exports are 270-500 KB): a disk that fills during the write."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (and mount rights here)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_a_full_disk_during_export_is_one_error_line_and_nothing_left(small_tmpfs, fmt):
    # in a child: the failure this guards against is torch's C++ writer aborting the process
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_EXPORT, str(Path(__file__).parent), fmt,
                        str(small_tmpfs / "m")], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr[-2000:]
    assert lines[-1].startswith("afd export: error:") and "No space left on device" in lines[-1]
    assert "Traceback" not in r.stderr and "terminate called" not in r.stderr
    assert os.listdir(small_tmpfs) == []  # neither the file nor a hidden temporary


@pytest.mark.parametrize("fmt,suffix", [("export", ".pt2"), pytest.param("onnx", ".onnx", marks=needs_onnx)])
def test_cli_export_formats(fmt, suffix, tiny, checkpoint_small, tmp_path, monkeypatch, capsys):
    """`afd export --format export|onnx OUT` writes that format (the model create_model gives, here the
    tiny one for speed: the backbone's graphs are checked above), which loads back and agrees."""
    import afd_ext.models
    from afd_ext.cli import main
    calls = []

    def fake_create_model(*a, **k):
        calls.append((a, k))
        return tiny
    monkeypatch.setattr(afd_ext.models, "create_model", fake_create_model)
    out = tmp_path / "m"
    assert main(["export", "--checkpoint", checkpoint_small, "--device", "cpu", "--format", fmt, str(out)]) == 0
    path = out.with_suffix(suffix)
    assert path.is_file() and str(path) in capsys.readouterr().out and _no_temp_files(tmp_path)
    assert calls == [(("efficientnet_lite0",), {"afd": True, "checkpoint": checkpoint_small,
                                                "device": torch.device("cpu")})]
    assert detect_format(path) == fmt and read_export_info(path)["format"] == fmt
    module = load_exported(path)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = tiny(x)
        got = module(x) if fmt == "export" or HAS_ORT else module.run_reference(x)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
