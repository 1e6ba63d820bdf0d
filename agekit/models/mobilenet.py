"""MobileNetV1 at width 0.25 (Howard et al. 2017), laid out so RetinaFace / ImageNet weights load by name.

Module names follow the public Pytorch_Retinaface layout (see shared/weights/layout.txt):
stage1/stage2/stage3 are Sequentials of `conv_bn` (conv3x3 → BN → LeakyReLU) and `conv_dw`
(depthwise 3x3 → BN → LeakyReLU → pointwise 1x1 → BN → LeakyReLU) blocks. Feature = global average of stage3.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from agekit.models.registry import Backbone, PretrainedWeightsError, register_backbone
from agekit.models.weights import (
    WeightsReport,
    checkpoint_backbone_state,
    load_backbone_weights,
    read_state_dict,
    strip_prefix,
)

LEAKY_SLOPE = 0.1  # the slope the published weights were trained with (checked against their BN statistics)


def conv_bn(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    """Full 3x3 conv → BN → LeakyReLU (keys .0 conv, .1 bn)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def conv_dw(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    """Depthwise-separable block (keys .0 dw conv, .1 bn, .3 pw conv, .4 bn)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, in_chans, 3, stride, 1, groups=in_chans, bias=False),
        nn.BatchNorm2d(in_chans),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        nn.Conv2d(in_chans, out_chans, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class MobileNetV1025(nn.Module):
    """MobileNetV1 width 0.25: (B,3,S,S) → (B,256); output stride 32 (S=96 → 3x3 stage3 map). ~0.2 M params."""

    feature_dim = 256

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(in_chans, 8, 2),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu", a=LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.pool(x).flatten(1)


def mobilenet_state_from_file(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Backbone tensors of either published file, keyed like MobileNetV1025, plus the file keys left out.

    ImageNet tar: {"state_dict": {"module.stage1...", "module.fc.*"}} → strip "module.", leave out fc.
    RetinaFace .pth: {"body.stage1...", "fpn.*", "ssh*.*", "*Head.*"} → keep body.* with "body." stripped.
    An agekit checkpoint's model.safetensors of a shared mobilenetv1_025 backbone: its backbone, heads left out.
    """
    if Path(path).suffix == ".safetensors":
        state = read_state_dict(path)
        return checkpoint_backbone_state(state, source=str(path)), sorted(k for k in state if k.startswith("heads."))
    state = strip_prefix(read_state_dict(path), "module.")
    if any(k.startswith("body.") for k in state):
        left_out = sorted(k for k in state if not k.startswith("body."))
        state = {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}
    else:
        left_out = []
    left_out += sorted(k for k in state if k.startswith("fc."))
    return {k: v for k, v in state.items() if not k.startswith("fc.")}, left_out


def load_mobilenet_weights(model: MobileNetV1025, path: str | Path) -> WeightsReport:
    """Strictly load one of the published MobileNetV1-0.25 files into `model` (errors name bad keys)."""
    state, left_out = mobilenet_state_from_file(path)
    report = load_backbone_weights(model, state, source=Path(path).name)
    report.ignored = left_out
    return report


@register_backbone("mobilenetv1_025")
def build_mobilenetv1_025(pretrained: bool = False, pretrained_weights: str | None = None,
                          in_chans: int = 3) -> Backbone:
    """MobileNetV1-0.25; pretrained needs a local file (ImageNet tar or RetinaFace .pth), there is no hub copy."""
    model = MobileNetV1025(in_chans=in_chans)
    if pretrained:
        if pretrained_weights is None:
            raise PretrainedWeightsError(
                "mobilenetv1_025 has no download source: pass --pretrained-weights FILE, e.g. "
                ".weights/retinaface_mobilenet0.25_widerface.pth or .weights/mobilenetv1_0.25_imagenet.tar"
            )
        load_mobilenet_weights(model, pretrained_weights)
    return Backbone(model, MobileNetV1025.feature_dim, gradcam_layer=model.stage3)
