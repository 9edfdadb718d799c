"""attach(): a new AFD leaves every adapted classifier's logits bit-identical."""
import copy

import pytest
import torch
import torchvision

import afd_ext

try:
    import timm
except ImportError:  # only the timm cases need it: they skip, the rest run
    timm = None
needs_timm = pytest.mark.skipif(timm is None, reason="the timm adapters need timm (pip install timm)")

BUILDERS = {
    "efficientnet_lite0": lambda: afd_ext.load_classifier("efficientnet_lite0"),
    "resnet18": lambda: torchvision.models.resnet18(),
    "resnet50": lambda: torchvision.models.resnet50(),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0"),
    "timm_tf_efficientnet_lite0": lambda: timm.create_model("tf_efficientnet_lite0"),
    "timm_mobilenetv3": lambda: timm.create_model("mobilenetv3_small_100"),
    "timm_repvgg_a0": lambda: timm.create_model("repvgg_a0"),
}
# Stems whose activation the de-drift cannot apply (SiLU, hardswish): the AFD must sit before it.
OTHER_ACT_STEMS = ("mobilenet_v3_small", "timm_efficientnet_b0", "timm_mobilenetv3")


def cases(names):
    return [pytest.param(n, marks=needs_timm) if n.startswith("timm_") else n for n in names]


EXPECTED_ACT = {"efficientnet_lite0": "relu6", "resnet18": "relu", "resnet50": "relu", "mobilenet_v2": "relu6",
                "mobilenet_v3_small": "identity", "timm_efficientnet_b0": "identity",
                "timm_tf_efficientnet_lite0": "relu6", "timm_mobilenetv3": "identity", "timm_repvgg_a0": "relu"}


@pytest.mark.parametrize("name", cases(BUILDERS))
def test_new_afd_leaves_logits_bit_identical(name):
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    original = copy.deepcopy(model)
    clf = afd_ext.attach(model)
    assert clf.adapter.act == EXPECTED_ACT[name]
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        expect = original(clf.normalize(x * 255))
        assert torch.equal(clf(x), expect)
        assert torch.equal(clf(x, use_afd=False), expect)
        clf.deploy()
        assert torch.equal(clf(x), expect)


@pytest.mark.parametrize("name", cases(BUILDERS))
def test_deepcopy_is_independent_of_the_original(name):
    """A copy (what the benchmarks and torch.compile variants make) runs its own weights: zeroing
    the original's parameters leaves the copy's logits unchanged."""
    torch.manual_seed(0)
    clf = afd_ext.attach(BUILDERS[name]().eval())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expect = clf(x)
        twin = copy.deepcopy(clf)
        for p in clf.parameters():
            p.zero_()
        assert torch.equal(twin(x), expect)
        assert not torch.equal(clf(x), expect)


def test_uint8_and_float_inputs_agree():
    clf = afd_ext.attach(afd_ext.load_classifier())
    u8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(clf(u8), clf(u8.float() / 255), atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        clf(u8.to(torch.int64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        clf(torch.rand(3, 64, 64))


def test_lite0_stem_and_real_weights():
    model = afd_ext.load_classifier("efficientnet_lite0")
    clf = afd_ext.attach(model)
    assert clf.adapter.channels == 32 and clf.afd.channels == 32 and clf.afd.act == "relu6"
    assert all(p.requires_grad for p in model.parameters())  # attach() freezes nothing of the user's
    # real weights: BN statistics are not the defaults
    assert not torch.allclose(model._bn0.running_var, torch.ones(32))
    feat, _ = clf.stem_features(torch.rand(1, 3, 224, 224))
    assert feat.shape == (1, 32, 112, 112)


def test_unknown_architecture_says_how_to_pass_stem_and_rest():
    with pytest.raises(ValueError, match="stem=.*rest="):
        afd_ext.attach(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten()))
    with pytest.raises(ValueError, match="unknown model"):
        afd_ext.load_classifier("vgg16")


def test_custom_stem_and_rest():
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    model = torch.nn.ModuleDict({"conv": conv, "head": head})
    clf = afd_ext.attach(model, stem=conv, rest=head, act="relu", channels=8)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clf(x), head(torch.relu(conv(clf.normalize(x * 255)))))
    with pytest.raises(ValueError, match="together"):
        afd_ext.attach(model, stem=conv)


def test_afd_for_other_stem_rejected():
    with pytest.raises(ValueError, match="built for 16 channels"):
        afd_ext.attach(torchvision.models.resnet18(), afd=afd_ext.AFDModule(16, act="relu"))


def test_shapes_batch_and_layouts():
    clf = afd_ext.attach(torchvision.models.resnet18()).eval()
    with torch.no_grad():
        for b in (0, 1, 3):
            assert clf(torch.rand(b, 3, 64, 48)).shape == (b, 1000)
        x = torch.rand(2, 3, 64, 48)
        assert torch.allclose(clf(x.contiguous(memory_format=torch.channels_last)), clf(x), atol=1e-4)
        assert clf(torch.rand(1, 3, 57, 41)).shape == (1, 1000)  # odd sizes: the AFD pads for the DCT


def _structure(model):
    return [(n, type(m)) for n, m in model.named_modules()]


@pytest.mark.parametrize("name", cases(BUILDERS))
def test_attach_leaves_the_users_classifier_unchanged(name):
    """The classifier a user hands over computes bit-identically after attach(), in eval and in
    training mode; no layer is replaced, no mode or requires_grad flag changes."""
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before_eval = model(x)
    structure, flags = _structure(model), [p.requires_grad for p in model.parameters()]
    clf = afd_ext.attach(model)
    clf.train()  # the wrapper's mode never reaches the classifier
    with torch.no_grad():
        clf(torch.rand(2, 3, 64, 64))
        assert torch.equal(model(x), before_eval)
    assert not model.training and _structure(model) == structure
    assert [p.requires_grad for p in model.parameters()] == flags


def test_classifier_in_training_mode_runs_in_eval_inside_the_wrapper():
    """A fresh torchvision model is in training mode: the wrapper neither uses nor updates its
    BatchNorm statistics, and gives the model its mode back."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    stats = copy.deepcopy(model.bn1.running_mean)
    clf = afd_ext.attach(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = clf(x)
        assert torch.equal(model.bn1.running_mean, stats) and model.training
        expect = copy.deepcopy(model).eval()(clf.normalize(x * 255))
    assert torch.equal(out, expect)


def test_wrapper_train_mode_keeps_classifier_statistics():
    """AFDClassifier.train(): one forward must not move the classifier's BatchNorm statistics."""
    clf = afd_ext.attach(afd_ext.load_classifier("efficientnet_lite0"))
    before = {k: v.clone() for k, v in clf.classifier.state_dict().items()}
    clf.train()
    assert clf.training and clf.afd.training and not clf.classifier.training
    clf(torch.rand(2, 3, 64, 64))
    after = clf.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_images_of_every_floating_dtype_are_converted():
    """float64/float16/bfloat16 images (0..1) are cast to the classifier's weight dtype, so they give
    the float32 image's logits exactly (before: a convolution's dtype-mismatch RuntimeError); the
    caller's tensor is not changed. Integer dtypes other than uint8 and bool: a TypeError."""
    clf = afd_ext.attach(afd_ext.load_classifier())
    with torch.no_grad():
        for p in clf.afd.parameters():  # a non-identity AFD, so its FDE-Net sees the pixels too
            p.add_(torch.randn_like(p) * 0.05)
    base = torch.rand(2, 3, 40, 48)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        images = base.to(dtype)
        kept = images.clone()
        with torch.no_grad():
            assert torch.equal(clf(images), clf(images.float())), dtype
        assert images.dtype == dtype and torch.equal(images, kept)
    u8 = (base * 255).round().to(torch.uint8)
    for dtype in (torch.int32, torch.int8, torch.bool):
        with pytest.raises(TypeError, match=r"images must be uint8 \(0..255\) or floating \(0..1\)"):
            clf(u8.to(dtype))


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_deploy_refuses_non_floating_dtypes_without_an_afd(dtype):
    clf = afd_ext.attach(afd_ext.load_classifier())
    with pytest.raises(TypeError, match="AFDClassifier.deploy: dtype must be None or a floating dtype"):
        clf.deploy(dtype=dtype)
    assert not clf.afd.deployed
    clf.afd = None
    with pytest.raises(TypeError, match="AFDClassifier.deploy: dtype must be"):
        clf.deploy(dtype=dtype)


@pytest.mark.parametrize("name", cases(OTHER_ACT_STEMS))
def test_afd_sits_before_a_silu_or_hardswish_stem_activation(name):
    """The adapter's stem stops before the activation (its features go below SiLU's minimum -0.28 and
    hardswish's -0.375) and ``rest`` applies it, so a correction is activated like the stem's output:
    rest(feat + d) is the original network with d added before the activation."""
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    clf = afd_ext.attach(copy.deepcopy(model))
    assert clf.adapter.act == "identity"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feat, _ = clf.stem_features(x)
        assert feat.min() < -0.5, f"{name}: the stem output looks activated (min {feat.min():.3f})"
        assert torch.equal(clf.adapter.rest(feat), model(clf.normalize(x * 255)))


def test_deployed_lite0_adds_at_most_ten_top_level_operator_calls():
    """The deployed fused AFD (the shipped Lite0 checkpoint, gate included) adds at most 10 top-level
    operator calls to Lite0's own forward, none of them glue (cat, upsample, max-pool, PReLU). On the
    input's own grid: grid='detect' adds the detector's small ops (the next test)."""
    import collections
    m = afd_ext.create_model("efficientnet_lite0").deploy()
    m.afd.grid = "input"
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)

    def calls(use_afd):
        with torch.no_grad(), torch.profiler.profile() as prof:
            m(x, use_afd=use_afd)
        return [e.name for e in prof.events() if e.cpu_parent is None], [e.name for e in prof.events()]
    direct, _ = calls(False)
    with_afd, everything = calls(True)
    extra = collections.Counter(with_afd) - collections.Counter(direct)
    assert sum(extra.values()) <= 10, extra
    assert all(name.startswith("afd::") for name in extra), extra
    glue = {"aten::cat", "aten::upsample_nearest2d", "aten::max_pool2d", "aten::max_pool2d_with_indices",
            "aten::prelu", "aten::_prelu_kernel"}
    assert not glue & set(everything)


def test_grid_detect_adds_only_the_detector_on_inputs_read_on_their_own_grid():
    """The shipped default reads each input's grid (grid='detect'): on inputs it leaves on their own
    grid it adds the detector's small aten ops (edge profiles, one DFT as matrix products, the peak)
    and no afd op, no glue, exactly one host sync (the nonzero that picks the rectified images)."""
    import collections
    from helpers import make_photo
    m = afd_ext.create_model("efficientnet_lite0").deploy()
    assert m.afd.grid == "detect"
    # crops compressed on their own grid (uniform noise would not do: its periodogram's largest peak
    # passes the strength threshold about half the time)
    x = torch.stack([afd_ext.data.to_tensor(afd_ext.data.degrade(make_photo(300, 400, seed=s), [10], "crop"))
                     for s in range(2)]).contiguous(memory_format=torch.channels_last)
    assert not afd_ext.block_grid.detect_block_grid(x).shifted.any()

    def calls(grid):
        m.afd.grid = grid
        with torch.no_grad(), torch.profiler.profile() as prof:
            out = m(x)
        return [e.name for e in prof.events() if e.cpu_parent is None], out
    plain, out_plain = calls("input")
    detect, out_detect = calls("detect")
    assert torch.equal(out_plain, out_detect)
    extra = collections.Counter(detect) - collections.Counter(plain)
    assert extra and not any(name.startswith("afd::") for name in extra), extra
    assert not {"aten::cat", "aten::upsample_nearest2d", "aten::grid_sampler_2d", "aten::prelu"} & set(extra)
    assert extra["aten::nonzero"] == 1
