"""AFDModule: identity at init, exact reparameterization, shapes and layouts."""
import pytest
import torch

import afd_ext
from afd_ext import AFDModule, FENet
from afd_ext import reference as R
from helpers import perturb


def _inputs(b=2, c=16, h=64, w=48, stride=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, h, w, generator=g, dtype=dtype) * 255
    feat = torch.randn(b, c, h // stride, w // stride, generator=g, dtype=dtype) * 2
    return feat, img


@pytest.mark.parametrize("act", ["relu", "relu6", "identity"])
@pytest.mark.parametrize("fdm", ["spatial", "global", "none"])
def test_new_module_is_exact_identity_after_act(act, fdm):
    m = AFDModule(16, width=4, act=act, fdm=fdm).eval()
    feat, img = _inputs()
    assert torch.equal(m(feat, img), R.apply_act(feat, act))


@pytest.mark.parametrize("fdm", ["spatial", "global", "none"])
# six re-parameterized layers in a row: float32 rounding compounds beyond one op's 1e-5
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_reparameterize_and_deploy_keep_outputs(fdm, dtype, tol):
    m = perturb(AFDModule(16, width=4, act="relu6", fdm=fdm).to(dtype), 0.2).eval()
    feat, img = _inputs(dtype=dtype)
    before = m(feat, img)
    m.reparameterize()
    after = m(feat, img)
    scale = before.abs().max()
    assert ((after - before).abs().max() / scale) < tol
    m.deploy()
    assert m.fused
    deployed = m(feat, img)
    assert ((deployed - before).abs().max() / scale) < tol


@pytest.mark.parametrize("b", [0, 1, 3])
def test_batch_sizes(b):
    m = perturb(AFDModule(8, width=4), 0.2).eval()
    feat, img = _inputs(b=b, c=8)
    out = m(feat, img)
    assert out.shape == feat.shape


@pytest.mark.parametrize("h,w,stride", [(64, 40, 2), (30, 22, 2), (57, 33, 2), (64, 64, 4), (17, 9, 1)])
def test_odd_and_non_square_sizes(h, w, stride):
    """Images are padded to multiples of 8 for the DCT; an FDM grid that does not divide the
    feature grid is resampled (nearest) to it."""
    m = perturb(AFDModule(8, width=4), 0.2).eval()
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, h, w, generator=g) * 255
    feat = torch.randn(2, 8, -(-h // stride), -(-w // stride), generator=g)
    out = m(feat, img)
    assert out.shape == feat.shape and torch.isfinite(out).all()
    m.deploy()
    assert torch.allclose(m(feat, img), out, rtol=1e-4, atol=1e-4)


def test_channels_last_and_non_contiguous_inputs():
    m = perturb(AFDModule(8, width=4), 0.2).eval()
    feat, img = _inputs(c=8)
    ref = m(feat, img)
    out = m(feat.contiguous(memory_format=torch.channels_last), img.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)
    big = torch.randn(2, 16, 32, 24)
    nc = big[:, ::2]
    assert not nc.is_contiguous()
    assert torch.allclose(m(nc, img), m(nc.contiguous(), img), rtol=1e-4, atol=1e-4)


def test_uint8_image_accepted_and_bad_dtypes_rejected():
    m = perturb(AFDModule(8, width=4), 0.2).eval()
    feat, img = _inputs(c=8)
    u8 = img.round().to(torch.uint8)
    assert torch.allclose(m(feat, u8), m(feat, u8.float()))
    with pytest.raises(TypeError, match="img must be uint8 or floating"):
        m(feat, u8.to(torch.int64))
    with pytest.raises(TypeError, match="img must be uint8 or floating"):
        m(feat, u8.bool())
    with pytest.raises(ValueError, match=r"feat must have shape \(B, 8"):
        m(torch.randn(2, 5, 32, 24), img)
    with pytest.raises(ValueError, match="img must have shape"):
        m(feat, img[:1])


def test_gradients_flow_to_every_trainable_parameter():
    m = AFDModule(8, width=4, act="identity")
    perturb(m.fe.last, 0.1)  # a zero last block blocks the gradient to the rest at step 0
    feat, img = _inputs(c=8)
    m(feat, img).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_fenet_any_size():
    net = FENet(6, width=2)
    for hw in [(1, 1), (3, 5), (112, 112), (13, 8)]:
        assert net(torch.randn(1, 6, *hw)).shape == (1, 6, *hw)


def test_width_presets_and_bad_args():
    assert AFDModule(8, width="tiny").width == afd_ext.WIDTH_PRESETS["tiny"]
    with pytest.raises(ValueError, match="width preset"):
        AFDModule(8, width="huge")
    with pytest.raises(ValueError, match="act must be"):
        AFDModule(8, act="gelu")
    with pytest.raises(ValueError, match="fdm must be"):
        AFDModule(8, fdm="local")


def test_plain_conv_ablation_has_deploy_cost():
    m = AFDModule(8, width=4, block="conv")
    assert all(rc.deployed for rc in m.fe.repconvs())
    feat, img = _inputs(c=8)
    assert torch.equal(m.eval()(feat, img), R.apply_act(feat, "relu"))


def test_deployed_module_under_autocast():
    """Autocast must not reach inside the fused kernels (their ATen calls keep the dtype given)."""
    m = perturb(AFDModule(8, width=4, act="relu6"), 0.05).eval().deploy()
    feat, img = _inputs(c=8)
    with torch.no_grad():
        ref = m(feat, img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(feat, img)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=1e-1)


@pytest.mark.parametrize("impl", ["training form", "reference", "fused"])
@pytest.mark.parametrize("h,w", [(64, 48), (60, 44)])
def test_uint8_image_goes_to_the_fde_as_it_is(impl, h, w, monkeypatch):
    """The deployed and training forms take a uint8 image with exactly the float image's result;
    where the size needs no padding the FDE-Net (and its op) receives the uint8 tensor itself."""
    m = perturb(AFDModule(8, width=4, act="relu6"), 0.2).eval()
    if impl != "training form":
        m.deploy(impl)
    feat, img = _inputs(c=8, h=h, w=w, stride=2)
    u8 = img.round().to(torch.uint8)
    seen = []
    forward = afd_ext.FDENet.forward
    def spy(self, im, *a):
        seen.append(im.dtype)
        return forward(self, im, *a)
    monkeypatch.setattr(afd_ext.FDENet, "forward", spy)
    with torch.no_grad():
        got = m(feat, u8)
        want = m(feat, u8.float())
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert seen == [torch.uint8 if (h % 8 == 0 and w % 8 == 0) else torch.float32, torch.float32]


def test_deploy_casts_the_dedrift_weights_once():
    m = perturb(AFDModule(8, width=4, act="relu6"), 0.05).eval().deploy(dtype=torch.bfloat16)
    w, b = m._dedrift_w, m._dedrift_b
    assert w.dtype == b.dtype == torch.bfloat16
    assert torch.equal(w, m.fe.last.conv.weight.to(torch.bfloat16))
    assert "_dedrift_w" not in m.state_dict()  # a cache, not a weight
    feat, img = _inputs(c=8)
    uncached = __import__("copy").deepcopy(m)
    uncached._drop_dedrift_cast()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(m(feat, img), uncached(feat, img))
    m.to(torch.float64)  # the cast copies follow .to()
    assert m._dedrift_w.dtype == torch.float64
    m.train()
    assert "_dedrift_w" not in dict(m.named_buffers())  # training drops them (the weights will move)


def test_redeploy_in_another_dtype_folds_from_the_parameters():
    m = perturb(AFDModule(8, width=4), 0.2).eval().deploy()
    first = [w.clone() for w in m.fde.op_weights()]
    m.deploy(dtype=torch.bfloat16)
    assert all(w.dtype == torch.bfloat16 for w in m.fde.op_weights())
    m.deploy()  # back to float32: exactly the first fold, not a bfloat16 round trip
    for a, b in zip(first, m.fde.op_weights()):
        assert b.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_state_dict_loaded_into_a_deployed_module_is_what_runs(dtype):
    """deploy() keeps folded / cast copies of the weights; load_state_dict makes them again from
    the loaded parameters, in the deployed dtype (before: the old FDE-Net weights kept running)."""
    a = perturb(AFDModule(8, width=4, act="relu6"), 0.1, seed=1).eval().deploy(dtype=dtype)
    b = perturb(AFDModule(8, width=4, act="relu6"), 0.1, seed=2).eval().deploy(dtype=dtype)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.fde.op_weights(), b.fde.op_weights()):
        assert y.dtype == (dtype or torch.float32) and torch.equal(x, y)
    if dtype is not None:
        assert torch.equal(a._dedrift_w, b._dedrift_w) and torch.equal(a._dedrift_b, b._dedrift_b)
    feat, img = _inputs(c=8)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        assert torch.equal(b(feat, img), a(feat, img))


def test_deploy_cast_copies_are_not_used_in_another_dtype():
    """After deploy(dtype=bfloat16), .to(float64) moves the cast copies too; they would carry
    bfloat16's precision, so the module computes from its float64 parameters instead."""
    feat, img = _inputs(c=8, dtype=torch.float64)
    m = perturb(AFDModule(8, width=4, act="relu6"), 0.1).eval()
    want = __import__("copy").deepcopy(m).deploy().to(torch.float64)(feat, img)
    got = m.deploy(dtype=torch.bfloat16).to(torch.float64)(feat, img)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    m.to(torch.bfloat16)  # back in the deployed dtype: the copies are exactly the parameters' cast
    assert torch.equal(m.fde.op_weights()[2], m.fde.fc2.weight)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.uint8, "float16"])
def test_deploy_accepts_floating_dtypes_only(dtype):
    """An integer dtype would truncate the weights and still run (int8: every |w| < 1 is 0)."""
    m = perturb(AFDModule(8, width=4), 0.1).eval()
    with pytest.raises(TypeError, match=r"AFDModule.deploy: dtype must be None or a floating dtype .*torch.bfloat16"):
        m.deploy(dtype=dtype)
    assert not any(rc.deployed for rc in m.fe.repconvs())  # refused before anything changed
    with pytest.raises(TypeError, match="FDENet.deploy: dtype must be"):
        m.fde.deploy(dtype=dtype)
    assert m.fde._folded is None


@pytest.mark.parametrize("h,w,stride", [(57, 33, 2), (30, 22, 2), (17, 9, 1)])
def test_odd_sizes_pad_edge_replicate_and_resample_nearest(h, w, stride):
    """The FDM of an odd-sized image is the FDE of the image edge-replicated at the bottom/right to
    multiples of 8 (index clamping, written independently of F.pad), then, where its grid does not
    divide the feature grid, resampled by nearest neighbour: cell (i, j) takes block
    (floor(i * hb / hf), floor(j * wb / wf))."""
    m = perturb(AFDModule(8, width=4), 0.2).eval()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, h, w, generator=g) * 255
    hf, wf = -(-h // stride), -(-w // stride)
    rows = torch.arange(-(-h // 8) * 8).clamp(max=h - 1)
    cols = torch.arange(-(-w // 8) * 8).clamp(max=w - 1)
    padded = img[:, :, rows][:, :, :, cols]
    blocks = m.fde(padded)
    hb, wb = blocks.shape[-2:]
    with torch.no_grad():
        fdm = m.compute_fdm(img, (hf, wf))
    if hf % hb or wf % wb:
        ii = (torch.arange(hf) * hb) // hf
        jj = (torch.arange(wf) * wb) // wf
        want = blocks[:, :, ii][:, :, :, jj]
    else:
        want = blocks
    assert fdm.shape == want.shape
    assert torch.allclose(fdm, want, rtol=1e-5, atol=1e-6)


def _gated(bias, seed=0):
    m = perturb(AFDModule(8, width=4, act="relu6", gate="global"), 0.2, seed=seed).eval()
    with torch.no_grad():
        m.gate_head.weight.zero_()
        m.gate_head.bias.fill_(bias)
    return m


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_closed_gate_leaves_the_stem_features_exactly(impl):
    """Do no harm by construction: where the gate's logit is <= 0 the module returns exactly
    act(feat), whatever the FE-Net and FDM would add."""
    m = _gated(-3.0)
    feat, img = _inputs(c=8)
    if impl == "fused":
        m.deploy()
    out, z = m(feat, img, return_gate=True)
    assert (z <= 0).all()
    assert torch.equal(out, R.apply_act(feat, "relu6"))
    open_out = _gated(3.0)(feat, img)
    assert not torch.allclose(open_out, R.apply_act(feat, "relu6"), atol=1e-3)  # the FE-Net does act


def test_gate_scales_the_correction_and_survives_deploy_and_checkpoints(tmp_path):
    """g = relu(tanh(z/2)) multiplies the whole correction: out - act-free feat is g x the ungated
    module's correction (identity act); deploy and a checkpoint round trip keep the outputs."""
    gated = perturb(AFDModule(8, width=4, act="identity", gate="global"), 0.2).eval()
    plain = AFDModule(8, width=4, act="identity").eval()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate_head.")})
    feat, img = _inputs(c=8)
    out, z = gated(feat, img, return_gate=True)
    g = torch.relu(torch.tanh(z / 2)).view(-1, 1, 1, 1)
    assert torch.allclose(out - feat, g * (plain(feat, img) - feat), atol=1e-5)
    path = afd_ext.save_checkpoint(tmp_path / "g.safetensors", gated, {"backbone": "x"})
    loaded, config = afd_ext.load_checkpoint(path)
    assert config["module"]["gate"] == "global" and loaded.gate_mode == "global"
    assert torch.equal(loaded.eval()(feat, img), out)
    gated.deploy()
    assert torch.allclose(gated(feat, img), out, atol=1e-4)


GLUE_OPS = ("aten::cat", "aten::upsample_nearest2d", "aten::max_pool2d", "aten::max_pool2d_with_indices",
            "aten::prelu", "aten::_prelu_kernel", "aten::repeat_interleave")


@pytest.mark.parametrize("gate", ["none", "global"])
def test_deployed_fused_forward_runs_the_fe_net_as_six_ops(gate):
    """Deployed with the fused ops, the FE-Net and de-drift are five afd::fe_conv and one
    afd::repconv_dedrift: no PReLU, pool, upsample or concatenation operator runs (the ops read and
    write those in their own passes)."""
    m = perturb(AFDModule(16, width=4, act="relu6", gate=gate), 0.2).eval().deploy()
    feat, img = _inputs()
    with torch.no_grad(), torch.profiler.profile() as prof:
        m(feat, img)
    names = [e.name for e in prof.events()]
    assert not [n for n in names if n in GLUE_OPS], sorted(set(names))
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    assert top.count("afd::fe_conv") == 5 and top.count("afd::repconv_dedrift") == 1, top


@pytest.mark.parametrize("h,w", [(64, 48), (57, 33), (18, 10), (2, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_fused_fe_net_equals_the_training_form(h, w, layout, dtype, tol):
    """The six fused ops compute the training-form U-Net (three RepConv branches, PReLU, ceil-mode
    pools, nearest upsampling to the skip's size, concatenations) at even and odd feature sizes."""
    m = perturb(AFDModule(8, width=4, act="relu6").to(dtype), 0.2).eval()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, 2 * h, 2 * w, generator=g, dtype=dtype) * 255
    feat = (torch.randn(2, 8, h, w, generator=g, dtype=dtype) * 2).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    with torch.no_grad():
        want = m(feat, img)
        got = m.deploy()(feat, img)
    assert ((got - want).abs().max() / want.abs().max()) < tol
