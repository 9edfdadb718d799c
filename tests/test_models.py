"""create_model / list_models: the one factory, its pretrained_cfg, meta and transforms()."""
import ast
import pathlib

import pytest
import torch
from PIL import Image

import afd_ext
from afd_ext import data
from afd_ext.models import gflops, model_card

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
    with torch.no_grad():
        assert torch.equal(plain(x), m(x, use_afd=False))
        assert not torch.equal(m(x), plain(x))  # the trained AFD acts


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
    folded copy of the old weights kept running until deploy() was called again)."""
    a = afd_ext.create_model("efficientnet_lite0").deploy()
    b = afd_ext.create_model("efficientnet_lite0")
    with torch.no_grad():
        for p in b.afd.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    b.deploy()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.equal(b(x), a(x))
        b.load_state_dict(a.state_dict())
        assert torch.equal(b(x), a(x))
