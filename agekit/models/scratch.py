"""Face CNNs trained from scratch: `facecnn` (ours, small and fast) and `agecnn` (a published UTKFace baseline).

Training speed (forward + backward + step, batch 128, images/s; `python -m bench.train_speed ARCH --size 64`)
on this project's 2-core CPU machine, 1 thread while other jobs shared the cores (a free 2-core machine with
2 threads is roughly 2x faster):
  facecnn  widths (16, 32, 64, 128), 64x64 RGB:   0.30 M params, ~140 images/s (bundle of 3: ~47)
           widths (24, 48, 96, 192):              0.68 M params,  ~77 images/s (bundle of 3: ~23)
  agecnn   widths (64, 128, 256, 512), 64x64 gray: 1.63 M params,  ~70 images/s (bundle of 3: ~22)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agekit.models.registry import Backbone, PretrainedWeightsError, register_backbone


def conv_bn_relu(in_chans: int, out_chans: int) -> nn.Sequential:
    """3x3 conv (same padding) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


def _no_pretrained(name: str, pretrained: bool, pretrained_weights: str | None) -> None:
    if pretrained or pretrained_weights:
        raise PretrainedWeightsError(f"{name} is trained from scratch; it has no pretrained weights")


class FaceCNN(nn.Module):
    """VGG-style face CNN: per width one block of `convs_per_block` conv-BN-ReLU layers, then 2x2 max-pool
    (except after the last block), then global average pooling → (B, widths[-1]).

    At 64 px the four blocks see 64, 32, 16 and 8 px maps; the 8x8 map of the last block is what Grad-CAM shows.
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
                 convs_per_block: int = 2) -> None:
        super().__init__()
        blocks, chans = [], in_chans
        for i, width in enumerate(widths):
            layers = [conv_bn_relu(chans if j == 0 else width, width) for j in range(convs_per_block)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            chans = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = chans
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x)).flatten(1)


@register_backbone("facecnn")
def build_facecnn(pretrained: bool = False, pretrained_weights: str | None = None, in_chans: int = 3,
                  widths: Sequence[int] = (16, 32, 64, 128), convs_per_block: int = 2) -> Backbone:
    _no_pretrained("facecnn", pretrained, pretrained_weights)
    model = FaceCNN(in_chans, tuple(widths), convs_per_block)
    return Backbone(model, model.feature_dim, gradcam_layer=model.blocks[-1])


class AgeCNN(nn.Module):
    """The UTKFace baseline recipe: grayscale input, 4 blocks of conv3x3-BN-ReLU-maxpool2 with 64, 128, 256,
    512 channels, global average pooling, a 132-unit fully connected layer with ReLU and dropout.

    Output (B, 132). Training recipe (training/configs/agecnn_baseline.yaml): NAdam lr 1e-4, weight decay 0.1,
    class-balancing weighted sampler. Global pooling (rather than flattening) keeps it input-size agnostic.
    """

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = (64, 128, 256, 512), hidden: int = 132,
                 dropout: float = 0.5) -> None:
        super().__init__()
        blocks, chans = [], in_chans
        for width in widths:
            blocks.append(nn.Sequential(conv_bn_relu(chans, width), nn.MaxPool2d(2)))
            chans = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(chans, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(x)).flatten(1))


@register_backbone("agecnn")
def build_agecnn(pretrained: bool = False, pretrained_weights: str | None = None, in_chans: int = 1,
                 widths: Sequence[int] = (64, 128, 256, 512), hidden: int = 132, dropout: float = 0.5) -> Backbone:
    _no_pretrained("agecnn", pretrained, pretrained_weights)
    model = AgeCNN(in_chans, tuple(widths), hidden, dropout)
    # Grad-CAM on the last conv-BN-ReLU, before its pooling halves the map.
    return Backbone(model, model.feature_dim, gradcam_layer=model.blocks[-1][0])
