"""The Lite0 loader and the JPEG path on real images (the starting point the README's accuracy section reports)."""
import pytest
import torch

import afd_ext
from afd_ext import data
from helpers import DEV_IMAGES, needs_data


@pytest.fixture(scope="module")
def lite0_top1():
    clf = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0")).eval()
    files = data.list_images(DEV_IMAGES)
    hits = {"clean": [0, 0], "q10": [0, 0]}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    batch = {"clean": [], "q10": []}
    labels = []

    def flush():
        y = torch.tensor(labels)
        for key in batch:
            with torch.no_grad():
                top5 = clf(torch.stack(batch[key]), use_afd=False).topk(5, 1).indices
            hits[key][0] += int((top5[:, 0] == y).sum())
            hits[key][1] += int((top5 == y[:, None]).any(1).sum())
            batch[key].clear()
        labels.clear()

    for f in files:
        img = data.resize_center_crop(data.load_image(f))
        batch["clean"].append(data.to_tensor(img))
        batch["q10"].append(data.to_tensor(data.jpeg_compress(img, 10)))
        labels.append(data.label_from_path(f))
        if len(labels) == 50:
            flush()
    if labels:
        flush()
    n = len(files)
    return {"n": n, **{k: (100.0 * v[0] / n, 100.0 * v[1] / n) for k, v in hits.items()}}


@needs_data
@pytest.mark.slow
def test_lite0_clean_accuracy_matches_published_dev_figure(lite0_top1):
    top1, top5 = lite0_top1["clean"]
    assert lite0_top1["n"] == 500
    assert abs(top1 - 88.8) <= 1.5, top1
    assert abs(top5 - 97.0) <= 1.5, top5


@needs_data
@pytest.mark.slow
def test_lite0_q10_accuracy_catches_broken_jpeg_path(lite0_top1):
    top1, _ = lite0_top1["q10"]
    assert abs(top1 - 60.2) <= 2.0, top1
