"""afd_ext.block_grid and AFDModule(grid='detect'): the JPEG block grid estimated from the pixels,
the image resampled onto it, and the module reading its FDM there (docs/design.md §1)."""
import pytest
import torch

from afd_ext import AFDModule, block_grid, data
from afd_ext.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from helpers import make_photo, needs_cuda, perturb

# a 224 crop compressed, then resized to 256 and centre-cropped again: blocks of 8 * 256 / 224 pixels,
# an edge of the first one at 8 * 256 / 224 * 2 - 16 (the crop's offset in the 256 image)
RESIZED_PERIOD = 8 * 256 / 224
RESIZED_OFFSET = 2 * RESIZED_PERIOD - 16


def _input(protocol: str, quality: int, seed: int = 0, size=(300, 400)) -> torch.Tensor:
    return data.to_tensor(data.degrade(make_photo(*size, seed=seed), [quality], protocol))


def _circular(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_finds_the_grid_of_a_crop_resized_after_compression(seed):
    g = block_grid.detect_block_grid(_input("resized", 10, seed)[None])
    assert bool(g.shifted[0])
    assert abs(float(g.period[0]) - RESIZED_PERIOD) < 0.05
    for off in (g.offset_x, g.offset_y):
        assert _circular(float(off[0]), RESIZED_OFFSET, RESIZED_PERIOD) < 0.5


def test_finds_the_grid_of_a_photo_compressed_at_its_own_size():
    g = block_grid.detect_block_grid(_input("full", 10)[None])
    assert bool(g.shifted[0])
    assert abs(float(g.period[0]) - 8 * 256 / 300) < 0.05  # short side 300 -> 256


@pytest.mark.parametrize("seed", range(4))
def test_a_crop_compressed_on_the_input_grid_is_not_shifted(seed):
    g = block_grid.detect_block_grid(_input("crop", 10, seed)[None])
    assert not bool(g.shifted[0])
    assert float(g.ratio_to_8[0]) < block_grid.GRID_MIN_RATIO_TO_8


def test_batched_detection_is_per_image():
    imgs = torch.stack([_input("resized", 10), _input("crop", 10)])
    g = block_grid.detect_block_grid(imgs)
    for i in range(2):
        one = block_grid.detect_block_grid(imgs[i:i + 1])
        assert bool(g.shifted[i]) == bool(one.shifted[0])
        assert torch.allclose(g.period[i], one.period[0]) and torch.allclose(g.strength[i], one.strength[0])
    assert g.shifted.tolist() == [True, False]


def test_floating_and_uint8_inputs_agree():
    img = _input("resized", 10)[None]
    a, b = block_grid.detect_block_grid(img), block_grid.detect_block_grid(img.float())
    assert torch.equal(a.period, b.period) and torch.equal(a.shifted, b.shifted)


def test_small_images_and_bad_shapes():
    g = block_grid.detect_block_grid(torch.zeros(2, 3, 16, 40, dtype=torch.uint8))
    assert not g.shifted.any()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        block_grid.detect_block_grid(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        block_grid.detect_block_grid(torch.zeros(1, 1, 64, 64))


def _blocky(period: float, offset: float, size: int = 96, seed: int = 0) -> torch.Tensor:
    """An image of constant blocks of ``period`` pixels with an edge at ``offset`` (both axes)."""
    g = torch.Generator().manual_seed(seed)
    n = int(size / period) + 3
    colours = torch.rand(3, n, n, generator=g) * 200 + 20
    idx = ((torch.arange(size, dtype=torch.float64) + 0.5 - offset) // period).long() + 1
    return colours[:, idx][:, :, idx]


@pytest.mark.parametrize("period,offset", [(9.142857, 2.29), (6.4, 5.1), (11.0, 0.0)])
def test_rectify_puts_the_block_edges_on_multiples_of_8(period, offset):
    rect = block_grid.rectify(_blocky(period, offset), period, offset, offset)
    v = rect.image[0]
    assert v.shape[-1] % 8 == 0 and v.shape[-2] % 8 == 0
    assert float(rect.scale[0]) == pytest.approx(period / 8)
    edges = (v[..., 1:] - v[..., :-1]).abs().mean((0, 1))  # boundary n: between columns n and n + 1
    at8 = edges[7::8]
    rest = torch.cat([edges[k::8] for k in range(7)])
    assert float(at8.mean()) > 5 * float(rest.mean())
    # and the map back: the centre of each input pixel lands in the block it belongs to
    rows, cols = block_grid.block_indices(rect, (96, 96), (96, 96))
    assert torch.equal(rows, cols) and rows.shape == (1, 96)
    blk = ((torch.arange(96, dtype=torch.float64) + 0.5 - float(rect.x0[0])) / float(rect.scale[0]) // 8).long()
    assert torch.equal(cols[0], blk.clamp(0, v.shape[-1] // 8 - 1))


def test_rectify_batched_is_each_image_rectified_alone():
    imgs = torch.stack([_blocky(9.14, 2.3, seed=0), _blocky(9.12, 2.5, seed=1), _blocky(9.16, 2.0, seed=2)])
    periods, offsets = [9.14, 9.12, 9.16], [2.3, 2.5, 2.0]
    sizes = {block_grid.placement(p, o, o, (96, 96))[3:] for p, o in zip(periods, offsets)}
    assert len(sizes) == 1
    both = block_grid.rectify(imgs, torch.tensor(periods), offsets, offsets)
    rows, cols = block_grid.block_indices(both, (96, 96), (48, 48))
    for i, (p, o) in enumerate(zip(periods, offsets)):
        one = block_grid.rectify(imgs[i], p, o, o)
        assert torch.equal(both.image[i], one.image[0])
        r1, c1 = block_grid.block_indices(one, (96, 96), (48, 48))
        assert torch.equal(rows[i], r1[0]) and torch.equal(cols[i], c1[0])


def test_rectify_refuses_images_of_different_virtual_sizes():
    imgs = torch.stack([_blocky(9.14, 2.3), _blocky(6.4, 1.0)])
    with pytest.raises(ValueError, match="one virtual size"):
        block_grid.rectify(imgs, [9.14, 6.4], [2.3, 1.0], [2.3, 1.0])
    with pytest.raises(ValueError, match="one period and offset each"):
        block_grid.rectify(imgs, [9.14], [2.3], [2.3])


def _module(gate: str = "global", seed: int = 0) -> AFDModule:
    m = perturb(AFDModule(32, width=4, act="relu6", gate=gate), 0.2, seed=seed)
    if m.gate_head is not None:  # open on every input (its logit still read from the image), so the
        with torch.no_grad():     # FDM reaches the output
            m.gate_head.bias.fill_(50.0)
    return m.eval()


def _feat(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 32, 112, 112, generator=torch.Generator().manual_seed(seed))


def _detect_pair():
    """A module set to grid='detect', a resized input (its grid shifted) and a crop (its own grid), features."""
    m = _module()
    m.grid = "detect"
    return m, torch.stack([_input("resized", 10), _input("crop", 10)]), _feat(2)


@pytest.mark.parametrize("gate", ["global", "none"])
def test_detect_changes_only_the_images_with_a_shifted_grid(gate):
    m = _module(gate)
    imgs = torch.stack([_input("resized", 10), _input("crop", 10), _input("resized", 10, seed=1)])
    feat = _feat(3)
    m.grid = "input"
    plain, z_plain = m(feat, imgs, return_gate=True)
    m.grid = "detect"
    out, z = m(feat, imgs, return_gate=True)
    assert torch.equal(out[1], plain[1])  # the crop: its own grid, the module as before
    assert not torch.allclose(out[0], plain[0]) and not torch.allclose(out[2], plain[2])
    # per image: a batch gives each image what it gets alone (up to the convolutions' batched rounding,
    # about 1e-4 on outputs up to 6 with either grid)
    for i in range(3):
        assert torch.allclose(m(feat[i:i + 1], imgs[i:i + 1]), out[i:i + 1], atol=1e-3)
    if gate == "none":
        assert z is None and z_plain is None
    else:
        assert z[1] == z_plain[1] and z[0] != z_plain[0]


def test_detect_reads_the_fdm_on_the_rectified_image():
    m = _module()
    img = _input("resized", 10)
    feat = _feat(1)
    m.grid = "detect"
    out = m(feat, img[None])
    g = block_grid.detect_block_grid(img[None])
    rect = block_grid.rectify(img, float(g.period[0]), float(g.offset_x[0]), float(g.offset_y[0]))
    z = m.gate_logit(rect.image)
    blocks = m.fde(rect.image, torch.float32, z)
    rows, cols = block_grid.block_indices(rect, (224, 224), (112, 112))
    fdm = blocks[:, :, rows[0]][:, :, :, cols[0]]
    m.grid = "input"
    assert torch.allclose(out, m(feat, img[None], fdm=fdm), atol=1e-6)


def test_training_mode_reads_the_detected_grid_with_gradients():
    """grid='detect' holds in training mode too (afd train --grid detect): the same output as in eval
    mode, and the FDE-Net and the gate head get their gradients from the FDM and gate read on the
    rectified image (the detection itself is a decision, with none)."""
    m, imgs, feat = _detect_pair()
    evaluated = m(feat, imgs)
    m.train()
    trained, z = m(feat, imgs, return_gate=True)
    assert torch.allclose(trained, evaluated, atol=1e-5)
    m.grid = "input"
    assert not torch.allclose(trained[0], m(feat, imgs)[0])  # the resized input: another FDM in training too
    m.grid = "detect"
    # only the resized image (0): its rectified FDM and gate must carry the gradient, not the one
    # computed on the input grid and then overwritten
    (trained[0].square().sum() + z[0]).backward()
    fde_grads = [p.grad for p in m.fde.parameters()]
    assert all(g is not None for g in fde_grads) and any(bool(g.abs().sum() > 0) for g in fde_grads)
    assert m.gate_head.weight.grad is not None and bool(m.gate_head.weight.grad.abs().sum() > 0)
    g = block_grid.detect_block_grid(imgs[:1])
    rect = block_grid.rectify(imgs[0], float(g.period[0]), float(g.offset_x[0]), float(g.offset_y[0]))
    m.zero_grad()
    m.gate_logit(rect.image)[0].backward()  # z[0]'s gradient alone, read on the rectified image
    expected = m.gate_head.weight.grad.clone()
    m.zero_grad()
    _, z = m(feat, imgs, return_gate=True)
    z[0].backward()
    assert torch.allclose(m.gate_head.weight.grad, expected, atol=1e-6)


def test_deployed_fused_module_agrees_with_the_reference():
    m, imgs, feat = _detect_pair()
    with torch.no_grad():
        ref = m(feat, imgs)
        m.deploy()
        assert m.fused
        fused = m(feat, imgs)
    assert float((fused - ref).abs().max() / ref.abs().max()) < 1e-4  # as test_modules' deploy parity


def test_grid_setting_checks_and_config():
    m = AFDModule(32, width=4, gate="global")
    assert m.grid == "input" and "grid" not in m.config  # files before v16 have no key
    m.grid = "detect"
    assert m.config["grid"] == "detect"
    m.grid = "input"
    assert "grid" not in m.config
    with pytest.raises(ValueError, match="grid must be one of"):
        m.grid = "auto"
    with pytest.raises(ValueError, match="needs fdm='spatial'"):
        AFDModule(32, width=4, fdm="global", grid="detect")
    assert AFDModule(32, width=4, grid="detect").grid == "detect"


def test_checkpoint_keeps_the_grid_and_refuses_a_bad_one(tmp_path):
    m = _module()
    m.grid = "detect"
    path = save_checkpoint(tmp_path / "g.safetensors", m, {"backbone": "efficientnet_lite0"})
    loaded, config = load_checkpoint(path)
    assert loaded.grid == "detect" and config["module"]["grid"] == "detect"
    from safetensors.torch import load_file, save_file
    import json
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["afd_config"])
    cfg["module"]["grid"] = "sideways"
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={**meta, "afd_config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="'grid' must be one of"):
        load_checkpoint(bad)


@needs_cuda
def test_cuda_module_reads_the_same_grid_as_the_cpu():
    m, imgs, feat = _detect_pair()
    with torch.no_grad():
        cpu = m(feat, imgs)
        g_cpu = block_grid.detect_block_grid(imgs)
        m.cuda()
        g_gpu = block_grid.detect_block_grid(imgs.cuda())
        gpu = m.deploy()(feat.cuda(), imgs.cuda()).cpu()
    assert torch.equal(g_cpu.shifted, g_gpu.shifted.cpu())
    assert torch.allclose(g_cpu.period, g_gpu.period.cpu())
    assert float((gpu - cpu).abs().max() / cpu.abs().max()) < 1e-3
