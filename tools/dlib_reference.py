"""Regenerate the dlib reference descriptors the dlib_resnet29 port is tested against (needs dlib, not a
requirement of agekit):

    pip install --target /tmp/dlibpkg dlib-bin==20.0.1.post1 face_recognition_models==0.3.0
    PYTHONPATH=/tmp/dlibpkg python -m tools.dlib_reference --weights PATH/dlib_face_recognition_resnet_model_v1.dat

Chips: the three UTKFace test-split example faces resized to 150x150 plus one synthetic pattern (seeded), written
to tests/fixtures/dlib_chips/*.png; descriptors: dlib's `compute_face_descriptor` on each chip (taken as an
already aligned 150x150 face), written to tests/fixtures/dlib_chips/reference.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "dlib_chips"
EXAMPLES = ("utkface_test_4_1_2.jpg", "utkface_test_25_0_1.jpg", "utkface_test_60_1_0.jpg")
SIZE = 150


def make_chips() -> dict[str, np.ndarray]:
    chips = {}
    for name in EXAMPLES:
        image = Image.open(ROOT / "examples" / name).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
        chips[Path(name).stem] = np.asarray(image)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pattern = np.stack([xx * 255 / SIZE, yy * 255 / SIZE, 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0)], -1)
    chips["synthetic_pattern"] = np.clip(pattern + rng.normal(0, 20, pattern.shape), 0, 255).astype(np.uint8)
    return chips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="dlib_face_recognition_resnet_model_v1.dat")
    args = parser.parse_args()
    import dlib

    net = dlib.face_recognition_model_v1(args.weights)
    OUT.mkdir(parents=True, exist_ok=True)
    reference = {"dlib_version": dlib.__version__, "descriptors": {}}
    for name, chip in make_chips().items():
        Image.fromarray(chip).save(OUT / f"{name}.png")
        reference["descriptors"][name] = [float(v) for v in net.compute_face_descriptor(chip)]
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {len(reference['descriptors'])} chips and reference.json to {OUT} (dlib {dlib.__version__})")


if __name__ == "__main__":
    main()
