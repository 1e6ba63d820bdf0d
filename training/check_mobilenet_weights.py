"""Check that published MobileNetV1-0.25 weight files load into agekit's mobilenetv1_025, and which
activation / input preprocessing their BatchNorm statistics agree with.

    python -m training.check_mobilenet_weights .weights/mobilenetv1_0.25_imagenet.tar \
        .weights/retinaface_mobilenet0.25_widerface.pth [--faces /path/to/UTKFace --n 256]

Loading is strict: every backbone key must be in the file with the same shape (errors name the keys).
With --faces, real face crops go through each candidate preprocessing with the loaded weights (eval mode);
for every BatchNorm layer the batch mean/variance of its input is compared with the running statistics stored
in the file. The right preprocessing and activation give the smallest mismatch: |z| is the mean shift in
running-std units, |log var ratio| the mean absolute log ratio of variances (0 = identical).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from agekit.models.mobilenet import MobileNetV1025, load_mobilenet_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _per_channel(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values).view(1, 3, 1, 1)


# candidate preprocessings of RGB pixels in 0..255
PREPROCESSING: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "RGB, ImageNet mean/std on [0,1]": lambda x: (x / 255 - _per_channel(IMAGENET_MEAN)) / _per_channel(IMAGENET_STD),
    "BGR, ImageNet mean/std on [0,1]": lambda x: ((x / 255 - _per_channel(IMAGENET_MEAN))
                                                   / _per_channel(IMAGENET_STD)).flip(1),
    "RGB, 0..255 minus (123,117,104)": lambda x: x - _per_channel((123.0, 117.0, 104.0)),
    "BGR, 0..255 minus (104,117,123)": lambda x: x.flip(1) - _per_channel((104.0, 117.0, 123.0)),
    "RGB, [0,1]": lambda x: x / 255,
    "RGB, [-1,1]": lambda x: x / 127.5 - 1,
}


def load_faces(folder: Path, n: int, size: int = 128) -> torch.Tensor:
    """n random JPEGs from `folder` as a float (n,3,size,size) RGB tensor in 0..255."""
    files = sorted(folder.glob("*.jpg"))
    random.Random(0).shuffle(files)
    arrays = [np.array(Image.open(f).convert("RGB").resize((size, size))) for f in files[:n]]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


def batchnorm_mismatch(model: MobileNetV1025, x: torch.Tensor) -> tuple[float, float, float, float]:
    """(first BN |z|, first BN |log var ratio|, mean over later BNs |z|, same for |log var ratio|)."""
    stats: list[tuple[float, float]] = []

    def hook(module: nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        batch = inputs[0]
        mean, var = batch.mean((0, 2, 3)), batch.var((0, 2, 3))
        z = ((mean - module.running_mean) / module.running_var.sqrt()).abs().mean().item()
        log_ratio = (var.clamp_min(1e-8).log() - module.running_var.clamp_min(1e-8).log()).abs().mean().item()
        stats.append((z, log_ratio))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    later = np.array(stats[1:])
    return stats[0][0], stats[0][1], float(later[:, 0].mean()), float(later[:, 1].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--faces", type=Path, help="a folder of face JPEGs (e.g. UTKFace) for the BN check")
    parser.add_argument("--n", type=int, default=256, help="number of faces for the BN check")
    args = parser.parse_args()
    faces = load_faces(args.faces, args.n) if args.faces else None
    for path in args.files:
        model = MobileNetV1025()
        report = load_mobilenet_weights(model, path)
        prefixes = sorted({k.split(".")[0] for k in report.ignored})
        print(f"\n{path.name}: strict load OK — {len(report.loaded)}/{len(model.state_dict())} backbone tensors "
              f"matched (stage1: {sum(k.startswith('stage1.') for k in report.loaded)}, "
              f"stage2: {sum(k.startswith('stage2.') for k in report.loaded)}, "
              f"stage3: {sum(k.startswith('stage3.') for k in report.loaded)}); "
              f"{len(report.ignored)} non-backbone file keys left out: {prefixes}")
        if faces is None:
            continue
        print(f"  BN statistics vs {len(faces)} faces    first BN |z| |log var|   later BNs |z| |log var|")
        for slope in (0.1, 0.0):
            for module in model.modules():
                if isinstance(module, nn.LeakyReLU):
                    module.negative_slope = slope
            activation = "LeakyReLU(0.1)" if slope else "ReLU"
            for name, preprocess in PREPROCESSING.items():
                z0, v0, z, v = batchnorm_mismatch(model, preprocess(faces))
                print(f"  {activation:14s} {name:34s} {z0:6.2f} {v0:6.2f}      {z:6.2f} {v:6.2f}")


if __name__ == "__main__":
    main()
