"""dlib's face-recognition ResNet ("dlib_resnet29") in PyTorch, with its CC0 weights read from dlib's own file.

The network (dlib's dnn_face_recognition_ResNet_model_v1): a 7x7 stride-2 conv (32 filters, no padding),
affine, ReLU and a 3x3 stride-2 max-pool, then 14 residual blocks (3x32, 4x64, 3x128, 4x256 filters; the first
block of each wider group downsamples), global average pooling to 256 features and a 256→128 fc without bias
(the face descriptor). dlib folded batch norm into per-channel affine layers (y = gamma*x + beta); they are kept
as trainable affine layers here. Downsampling blocks use a stride-2 conv with padding 0 and a 2x2 average-pooled
shortcut; when the two added tensors differ in size, the smaller is zero-padded at the high end (dlib's add_prev).

As a backbone it gives the 256 pooled features; `descriptor()` adds the fc to reproduce dlib's 128-d output.
Input: RGB, (pixel - mean) / 256 with dlib's mean, i.e. ModelCard mean = DLIB_MEAN / 255, std = 256 / 255.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agekit.models.dlib_format import DlibFormatError, DlibLayer, read_dlib_net
from agekit.models.registry import Backbone, PretrainedWeightsError, register_backbone
from agekit.models.weights import checkpoint_backbone_state, load_backbone_weights, read_state_dict

DLIB_MEAN = (122.782, 117.001, 104.298)  # RGB pixel means subtracted by dlib's input layer (0..255)
DLIB_SCALE = 256.0  # dlib divides the centred pixel by 256
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE = "face_recognition_models"  # PyPI package (CC0 models) that ships WEIGHTS_FILE in its models/ folder
# (filters, downsamples) per residual block, input → output: dlib's alevel4 … alevel0.
BLOCKS = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),) + ((128, False),) * 2 \
    + ((256, True),) + ((256, False),) * 2 + ((256, True),)
FEATURE_DIM = 256
DESCRIPTOR_DIM = 128


class Affine(nn.Module):
    """Per-channel y = weight * x + bias (dlib's affine layer: batch norm folded into a fixed scale and shift)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b, zero-padding the smaller of each (channels, rows, columns) at the high end, as dlib's add_prev."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """conv3x3 → affine → relu → conv3x3 → affine, plus the shortcut (2x2 average pool when downsampling), relu."""

    def __init__(self, in_chans: int, filters: int, downsample: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_chans, filters, 3, stride=stride, padding=padding)
        self.affine1 = Affine(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride=1, padding=1)
        self.affine2 = Affine(filters)
        self.shortcut = nn.AvgPool2d(2, 2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_padded(y, self.shortcut(x)))


class DlibResNet29(nn.Module):
    """dlib's face-recognition ResNet; forward gives the 256 globally pooled features (B, 256)."""

    feature_dim = FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=0), Affine(32), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=0))
        blocks, chans = [], 32
        for filters, downsample in BLOCKS:
            blocks.append(ResidualBlock(chans, filters, downsample))
            chans = filters
        # Grouped as dlib's levels so Grad-CAM can take a level's output (level 2: 8x8 at 150 px, 6x6 at 112 px).
        self.levels = nn.ModuleList([nn.Sequential(*blocks[0:3]), nn.Sequential(*blocks[3:7]),
                                     nn.Sequential(*blocks[7:10]), nn.Sequential(*blocks[10:13]),
                                     nn.Sequential(*blocks[13:14])])
        self.fc = nn.Linear(FEATURE_DIM, DESCRIPTOR_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for level in self.levels:
            x = level(x)
        return x.mean(dim=(2, 3))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor (not L2-normalised), for a (B,3,150,150) input normalised as dlib's."""
        return self.fc(self(x))

    def dlib_layer_plan(self) -> list[tuple[str, nn.Module | None]]:
        """The (kind, module) sequence dlib stores, input → output; parameter-free layers carry None."""
        stem_conv, stem_affine = self.stem[0], self.stem[1]
        plan: list[tuple[str, nn.Module | None]] = [("con", stem_conv), ("affine", stem_affine), ("relu", None),
                                                    ("max_pool", self.stem[3])]
        for level in self.levels:
            for block in level:
                plan += [("con", block.conv1), ("affine", block.affine1), ("relu", None),
                         ("con", block.conv2), ("affine", block.affine2)]
                if isinstance(block.shortcut, nn.AvgPool2d):
                    plan.append(("avg_pool", block.shortcut))
                plan += [("add_prev", None), ("relu", None)]
        plan += [("avg_pool", None), ("fc", self.fc)]  # global average pool (dlib's 0x0 window), then the fc
        return plan


def _check_layer(index: int, layer: DlibLayer, kind: str, module: nn.Module | None) -> None:
    """Raise DlibFormatError unless the stored layer has the kind and hyper-parameters `module` needs."""
    if layer.kind != kind:
        raise DlibFormatError(f"layer {index}: the file has {layer.kind!r} where dlib_resnet29 has {kind!r} "
                              "(a different dlib network?)")
    expected: dict[str, int] = {}
    if isinstance(module, nn.Conv2d):
        expected = {"num_filters": module.out_channels, "nr": module.kernel_size[0], "nc": module.kernel_size[1],
                    "stride_y": module.stride[0], "stride_x": module.stride[1],
                    "padding_y": module.padding[0], "padding_x": module.padding[1]}
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = module.kernel_size, module.stride, module.padding
        expected = {"nr": k, "nc": k, "stride_y": s, "stride_x": s, "padding_y": p, "padding_x": p}
    elif kind == "avg_pool":  # global: dlib writes a 0x0 window
        expected = {"nr": 0, "nc": 0}
    elif isinstance(module, nn.Linear):
        expected = {"num_outputs": module.out_features, "num_inputs": module.in_features, "bias_mode": 1}
    elif kind == "affine":
        expected = {"mode": 0}  # per-channel (conv mode)
    wrong = {k: (layer.hyper.get(k), v) for k, v in expected.items() if layer.hyper.get(k) != v}
    if wrong:
        raise DlibFormatError(f"layer {index} ({kind}): file vs expected {wrong}")


def dlib_state_dict(model: DlibResNet29, path: str | Path) -> dict[str, torch.Tensor]:
    """The file's parameters as a state dict for `model`, after checking every layer's type and shape."""
    net = read_dlib_net(path)
    plan = model.dlib_layer_plan()
    if len(net.layers) != len(plan):
        raise DlibFormatError(f"{Path(path).name}: {len(net.layers)} layers, dlib_resnet29 has {len(plan)}")
    names = {module: name for name, module in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for index, (layer, (kind, module)) in enumerate(zip(net.layers, plan)):
        _check_layer(index, layer, kind, module)
        if module is None or not layer.arrays:
            continue
        prefix = names[module]
        if kind == "con":
            weight, bias = layer.arrays["weight"], layer.arrays["bias"].reshape(-1)
        elif kind == "affine":
            weight, bias = layer.arrays["gamma"].reshape(-1), layer.arrays["beta"].reshape(-1)
        else:  # fc: dlib stores (inputs, outputs)
            weight, bias = layer.arrays["weight"].reshape(FEATURE_DIM, DESCRIPTOR_DIM).T, None
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        if bias is not None:
            state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    expected = model.state_dict()
    for key, tensor in state.items():
        if expected[key].shape != tensor.shape:
            raise DlibFormatError(f"{key}: file shape {tuple(tensor.shape)} vs model {tuple(expected[key].shape)}")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise DlibFormatError(f"{Path(path).name}: no values for {missing}")
    return state


def packaged_weights() -> Path | None:
    """WEIGHTS_FILE inside the installed face_recognition_models package, if installed (found without importing
    it: the package imports the removed pkg_resources)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    return path if path.is_file() else None


def load_dlib_weights(model: DlibResNet29, path: str | Path) -> None:
    """Load dlib's face-recognition weights from `path` into `model`; clear PretrainedWeightsError otherwise.
    A .safetensors file is either this module's own state dict (e.g. a float16 copy of dlib's weights) or an agekit
    checkpoint's model.safetensors of a dlib_resnet29 model (its shared backbone is taken, the task heads are
    ignored; a file without usable backbone tensors or with wrong shapes raises WeightsMismatchError, a
    ValueError, naming the file). Anything else is read as dlib's .dat format."""
    if Path(path).suffix == ".safetensors":
        state = checkpoint_backbone_state(read_state_dict(path), source=str(path))
        load_backbone_weights(model, state, source=str(path))
        return
    try:
        model.load_state_dict(dlib_state_dict(model, path))
    except FileNotFoundError as err:
        raise PretrainedWeightsError(f"{err}; pass --pretrained-weights FILE or pip install {PACKAGE}") from None
    except DlibFormatError as err:
        raise PretrainedWeightsError(f"could not read {Path(path).name} as dlib's face-recognition ResNet: "
                                     f"{err}") from None


@register_backbone("dlib_resnet29")
def build_dlib_resnet29(pretrained: bool = False, pretrained_weights: str | None = None,
                        in_chans: int = 3) -> Backbone:
    """dlib's face-recognition ResNet; pretrained weights from `pretrained_weights` (a dlib .dat file, a state dict
    .safetensors or an agekit dlib_resnet29 checkpoint's model.safetensors, see load_dlib_weights) or, without one,
    from the installed face_recognition_models package."""
    if in_chans != 3:
        raise ValueError(f"dlib_resnet29 takes RGB input only (in_chans 3), not in_chans {in_chans}")
    model = DlibResNet29()
    if pretrained:
        path = pretrained_weights or packaged_weights()
        if path is None:
            raise PretrainedWeightsError(f"dlib_resnet29: no weights — pip install {PACKAGE}==0.3.0 (CC0) or pass "
                                         f"--pretrained-weights path/to/{WEIGHTS_FILE}")
        load_dlib_weights(model, path)
    return Backbone(model, FEATURE_DIM, gradcam_layer=model.levels[2])
