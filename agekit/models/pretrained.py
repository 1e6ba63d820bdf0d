"""Pretrained backbones: any timm model ("timm/<name>"), facenet-pytorch's InceptionResnetV1 and MTCNN O-Net.

Hubs may be unreachable: every builder takes `pretrained_weights=FILE` (a local state dict), and a failed
download raises PretrainedWeightsError telling the user to pass --pretrained-weights FILE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from agekit.models.registry import (
    Backbone,
    PretrainedWeightsError,
    UnknownArchitecture,
    register_backbone,
)
from agekit.models.weights import load_backbone_weights, read_state_dict, strip_prefix

OFFLINE_HINT = "(no network?) — download the file elsewhere and pass --pretrained-weights FILE"


def _require_rgb(architecture: str, in_chans: int) -> None:
    if in_chans != 3:
        raise ValueError(f"{architecture} takes RGB input only (in_chans 3), not in_chans {in_chans}")


# ---------------------------------------------------------------- timm
def _last_feature_module(model: nn.Module) -> nn.Module:
    """The module producing timm's last feature map (feature_info), else the model's last Conv2d."""
    feature_info = getattr(model, "feature_info", None)
    if feature_info:
        return model.get_submodule(feature_info[-1]["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layer for Grad-CAM")
    return convs[-1]


@register_backbone("timm/", prefix=True)
def build_timm(name: str, pretrained: bool = False, pretrained_weights: str | None = None, in_chans: int = 3,
               **kwargs: Any) -> Backbone:
    """`timm.create_model(name, num_classes=0)` (pooled features); a local file goes through
    pretrained_cfg_overlay=dict(file=FILE), so timm adapts it exactly as it would a hub download."""
    import timm

    if not timm.is_model(name):
        raise UnknownArchitecture(f"timm has no model {name!r}; see timm.list_models() for valid names")
    overlay = None
    if pretrained_weights is not None:
        if not Path(pretrained_weights).is_file():
            raise PretrainedWeightsError(f"pretrained weights file {pretrained_weights} not found")
        overlay = {"file": str(pretrained_weights)}
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans,
                                  pretrained_cfg_overlay=overlay, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        where = pretrained_weights or "the timm / Hugging Face hub"
        hint = "does the file hold this model's state dict?" if pretrained_weights else OFFLINE_HINT
        raise PretrainedWeightsError(f"could not load timm weights for {name!r} from {where} {hint}: {err}") from err
    return Backbone(model, model.num_features, gradcam_layer=_last_feature_module(model))


# ---------------------------------------------------------------- facenet-pytorch InceptionResnetV1
class FacenetEmbedding(nn.Module):
    """InceptionResnetV1 up to its 512-d batch-normalised embedding, without the final L2 normalisation
    (unit-norm features would make the heads' logits tiny). Expects ~160 px faces normalised (x-127.5)/128."""

    feature_dim = 512

    def __init__(self, dropout: float = 0.6) -> None:
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.net = InceptionResnetV1(pretrained=None, classify=False, dropout_prob=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        for layer in (net.conv2d_1a, net.conv2d_2a, net.conv2d_2b, net.maxpool_3a, net.conv2d_3b, net.conv2d_4a,
                      net.conv2d_4b, net.repeat_1, net.mixed_6a, net.repeat_2, net.mixed_7a, net.repeat_3,
                      net.block8, net.avgpool_1a, net.dropout):
            x = layer(x)
        return net.last_bn(net.last_linear(x.flatten(1)))


def _download_facenet_state(source: str) -> dict[str, torch.Tensor]:
    """facenet-pytorch's own download of its 'vggface2' / 'casia-webface' weights (cached in TORCH_HOME)."""
    from facenet_pytorch import InceptionResnetV1

    try:
        return InceptionResnetV1(pretrained=source, classify=False).state_dict()
    except ValueError as err:
        raise PretrainedWeightsError(f"unknown facenet weights {source!r}; use 'vggface2' or 'casia-webface'") from err
    except Exception as err:  # URLError, HTTPError, socket timeouts: the hub is unreachable
        raise PretrainedWeightsError(
            f"could not download facenet-pytorch '{source}' weights {OFFLINE_HINT} "
            f"(facenet-pytorch's GitHub release file, e.g. 20180402-114759-vggface2.pt): {err}"
        ) from err


@register_backbone("inception_resnet_v1")
def build_inception_resnet_v1(pretrained: bool = False, pretrained_weights: str | None = None,
                              source: str = "vggface2", dropout: float = 0.6, in_chans: int = 3) -> Backbone:
    """facenet-pytorch InceptionResnetV1 (face-recognition features, 512-d). pretrained: `source` dataset
    from facenet-pytorch's hub, or `pretrained_weights` = a local state dict (its 'logits.*' are ignored)."""
    _require_rgb("inception_resnet_v1", in_chans)
    model = FacenetEmbedding(dropout)
    if pretrained:
        if pretrained_weights is not None:
            state, name = strip_prefix(read_state_dict(pretrained_weights), "net."), Path(pretrained_weights).name
        else:
            state, name = _download_facenet_state(source), f"facenet-pytorch {source}"
        load_backbone_weights(model.net, state, source=name, ignore_prefixes=("logits.",))
    return Backbone(model, FacenetEmbedding.feature_dim, gradcam_layer=model.net.block8)


# ---------------------------------------------------------------- facenet-pytorch MTCNN O-Net
ONET_INPUT_SIZE = 48


def shipped_onet_weights() -> Path:
    """Path of the O-Net weights inside the installed facenet-pytorch wheel (available offline)."""
    import facenet_pytorch

    return Path(facenet_pytorch.__file__).parent / "data" / "onet.pt"


class ONetTrunk(nn.Module):
    """MTCNN O-Net without its output layers: 48x48 face (B,3,48,48) → 256-d face feature (dense5 + PReLU).

    Layer names match facenet-pytorch's ONet, so its shipped onet.pt loads by name. Inputs are normalised
    (x-127.5)/128 like MTCNN's, i.e. mean 0.5 / std 0.5 on [0,1] pixels.
    """

    feature_dim = 256

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)  # (B,128,3,3) at 48 px
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (ONET_INPUT_SIZE, ONET_INPUT_SIZE):
            raise ValueError(f"mtcnn_onet needs {ONET_INPUT_SIZE}x{ONET_INPUT_SIZE} inputs (input_size: 48), "
                             f"got {tuple(x.shape[-2:])}")
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # the (W,H,C) flattening order dense5 was trained with
        return self.prelu5(self.dense5(x))


@register_backbone("mtcnn_onet")
def build_mtcnn_onet(pretrained: bool = False, pretrained_weights: str | None = None, in_chans: int = 3
                     ) -> Backbone:
    """O-Net trunk; pretrained=True loads facenet-pytorch's shipped onet.pt (offline), dropping its
    face/box/landmark output layers (dense6_*)."""
    _require_rgb("mtcnn_onet", in_chans)
    model = ONetTrunk()
    if pretrained:
        path = Path(pretrained_weights) if pretrained_weights else shipped_onet_weights()
        load_backbone_weights(model, read_state_dict(path), source=path.name, ignore_prefixes=("dense6_",))
    return Backbone(model, ONetTrunk.feature_dim, gradcam_layer=model.prelu4)
