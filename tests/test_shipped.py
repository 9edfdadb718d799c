"""The shipped Lite0 checkpoint helps on dev images its training run held out (needs ../shared/data)."""
import pytest

import afd_ext
from afd_ext.checkpoint import read_checkpoint
from afd_ext.data import list_images
from helpers import DEV_IMAGES, needs_data


@needs_data
@pytest.mark.slow
def test_shipped_checkpoint_gains_at_quality_10_on_held_out_images():
    path = afd_ext.shipped_checkpoint("efficientnet_lite0")
    _, config = read_checkpoint(path)
    held = set(config["data"]["holdout_files"])
    files = [str(f) for f in list_images(DEV_IMAGES) if f.name in held][:100]
    assert len(files) >= 80, "the training run must hold out dev images for this test"
    afd, _ = afd_ext.load_checkpoint(path, backbone="efficientnet_lite0")
    model = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"), afd=afd).deploy()
    r = afd_ext.evaluate(model, files, qualities=[10], progress=False)
    q10 = r["qualities"][0]
    # gain at q10 on images the module never saw, and clean accuracy kept within 2 images
    assert q10["top1_afd"] > q10["top1_direct"], q10
    assert r["clean"]["top1_afd"] >= r["clean"]["top1_direct"] - 200.0 / len(files), r["clean"]


@pytest.mark.parametrize("name", ["afd_efficientnet_lite0", "afd_efficientnet_lite0_v1"])
def test_shipped_checkpoints_record_no_absolute_paths(name):
    import json
    from pathlib import Path
    weights = Path(afd_ext.weights.__file__).parent
    configs = [json.loads((weights / f"{name}.json").read_text()), read_checkpoint(weights / f"{name}.safetensors")[1]]
    for cfg in configs:
        text = json.dumps(cfg)
        assert '"/' not in text and "/work/" not in text and "/home/" not in text, name
