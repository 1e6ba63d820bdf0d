"""How much do dlib's frozen face features know, at 150 px (its training size) vs 112 px? A linear probe.

    python -m tools.dlib_probe --pack packs/utkface_150.safetensors [--weights FILE] [--train 2000] [--val 800]

Features: the pretrained dlib_resnet29's 256 pooled features (no fine-tuning) of a seeded sample of train faces
and the first val faces, at each input size; probes: ridge regression for age (years) and logistic regression for
gender, fitted on the train sample, scored on val. This is the check behind multitask_dlib's 150 px input.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV

from agekit.data.dataset import load_pack
from agekit.data.transforms import resize_uint8
from agekit.models.dlib_resnet import DLIB_MEAN, DLIB_SCALE, DlibResNet29, load_dlib_weights, packaged_weights


def features(model: DlibResNet29, images: torch.Tensor, size: int, batch: int = 100) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        x = resize_uint8(images[start:start + batch], size).float()
        x = (x - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / DLIB_SCALE
        with torch.no_grad():
            out.append(model(x.contiguous(memory_format=torch.channels_last)))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", required=True)
    parser.add_argument("--weights", default=None, help="dlib .dat (default: the face_recognition_models package)")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=800)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 112])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = DlibResNet29()
    load_dlib_weights(model, args.weights or packaged_weights())
    model.eval()
    train, val = load_pack(args.pack, "train"), load_pack(args.pack, "val")
    ti = np.random.default_rng(0).choice(len(train), args.train, replace=False)
    vi = np.arange(min(args.val, len(val)))
    for size in args.sizes:
        ft, fv = features(model, train.images[ti], size), features(model, val.images[vi], size)
        age = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(ft, train.age.numpy()[ti])
        mae = float(np.abs(age.predict(fv) - val.age.numpy()[vi]).mean())
        gender = LogisticRegression(max_iter=2000).fit(ft, train.gender.numpy()[ti])
        accuracy = gender.score(fv, val.gender.numpy()[vi])
        print(f"{size} px: linear-probe val age MAE {mae:.2f} years, gender accuracy {accuracy:.1%} "
              f"({len(ti)} train / {len(vi)} val faces, frozen features)")


if __name__ == "__main__":
    main()
