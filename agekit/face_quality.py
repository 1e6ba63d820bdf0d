"""Warnings about a detected face that the models will read badly: too small, the whole image used as the face,
strongly rotated in the image plane, or heavily blurred.

The thresholds were measured on the example photos and their rotated, blurred and downscaled variants:
    python -m agekit.face_quality examples/
(the README's app section has the table).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from agekit.faces import FaceCrop

TINY_FACE_PX = 40  # face box narrower than this (px of the uploaded photo): too few pixels for an age
# Eye line tilted more than this from horizontal: rotate the photo. Upright example faces measure |roll| <= 4°,
# rotated by 20° 15-24°, by 30° 23-34°, by 45° 32-49° (MTCNN's landmarks of faces turned 90° are unreliable: 17° and
# 37° on the two it found; the other 90° faces were not detected and get the whole-image flag).
ROTATION_DEG = 25.0
# Variance of the Laplacian of the 200 px face crop (grey levels 0-255) below this: heavily blurred. The example
# faces measure 36-174; blurred with a Gaussian of radius 2 px 3-8; downscaled to 1/4 (faces 21-52 px) 5-20.
BLUR_SHARPNESS = 25.0


@dataclass(frozen=True)
class QualityFlag:
    """One reason to distrust a face's predictions, with what to do about it."""

    code: str  # "tiny", "whole_image", "rotated", "blurred"
    message: str


def roll_degrees(landmarks: np.ndarray | None) -> float | None:
    """In-plane rotation of a face, degrees: the angle of the line from the left to the right eye (MTCNN's
    landmarks 0 and 1, as seen in the image) from horizontal; 0 = upright, ±90 = sideways. None without landmarks."""
    if landmarks is None:
        return None
    (lx, ly), (rx, ry) = np.asarray(landmarks, dtype=float)[:2]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def sharpness(crop: Image.Image) -> float:
    """Variance of the Laplacian of a face crop's grey levels (0-255): low = blurred. Compare crops of one size."""
    grey = np.asarray(crop.convert("L"), dtype=np.float32)
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var())


def quality_flags(face: FaceCrop, image_size: tuple[int, int], pixel_scale: float = 1.0) -> list[QualityFlag]:
    """Every problem with one detected face. image_size: (w, h) of the image the face was found in;
    pixel_scale: uploaded-photo px per image px (agekit.faces.decode_factor)."""
    flags = []
    if face.box == (0.0, 0.0, float(image_size[0]), float(image_size[1])):
        flags.append(QualityFlag("whole_image", "no face was detected, so the whole image was used as the face; "
                                 "if the face is sideways or upside down, rotate the photo"))
    width = (face.box[2] - face.box[0]) * pixel_scale
    if width < TINY_FACE_PX:
        flags.append(QualityFlag("tiny", f"the face is only {width:.0f} px wide (under {TINY_FACE_PX} px): "
                                 "use a larger or closer photo"))
    roll = roll_degrees(face.landmarks)
    if roll is not None and abs(roll) > ROTATION_DEG:
        flags.append(QualityFlag("rotated", f"the face is tilted {abs(roll):.0f}° in the photo: rotate the photo "
                                 "so the face is upright"))
    if sharpness(face.image) < BLUR_SHARPNESS:
        flags.append(QualityFlag("blurred", "the face is heavily blurred: use a sharper photo"))
    return flags


# ---------------------------------------------------------------- measurement of the thresholds

VARIANTS = ("original", "rotated 90°", "rotated 45°", "rotated 30°", "rotated 20°", "blurred r=2", "blurred r=3", "downscaled to 1/4",
            "downscaled to 1/8")


def variant(image: Image.Image, name: str) -> Image.Image:
    """One of VARIANTS of a photo."""
    if name.startswith("rotated"):
        return image.rotate(-float(name.split()[1].rstrip("°")), expand=True, fillcolor=(128, 128, 128))
    if name.startswith("blurred"):
        return image.filter(ImageFilter.GaussianBlur(float(name.split("=")[1])))
    if name.startswith("downscaled"):
        factor = int(name.split("/")[1])
        return image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.Resampling.BOX)
    return image


def main(argv: list[str] | None = None) -> None:
    """Print, for each example photo and variant, every face's width, roll, sharpness and flags."""
    from agekit.faces import FaceDetector, load_image

    parser = argparse.ArgumentParser(description="measure the face-quality signals on photos and their variants")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    detector = FaceDetector()
    print("photo | variant | face px | roll ° | sharpness | flags")
    for path in sorted(args.folder.glob("*.jpg")):
        photo = load_image(path)
        for name in VARIANTS:
            image = variant(photo, name)
            try:
                faces = detector.detect(image, assume_cropped=True)
            except ValueError as err:
                print(f"{path.name} | {name} | - | - | - | {err}")
                continue
            for face in faces:
                roll = roll_degrees(face.landmarks)
                flags = ",".join(f.code for f in quality_flags(face, image.size)) or "-"
                print(f"{path.name} | {name} | {face.box[2] - face.box[0]:.0f} | "
                      f"{'-' if roll is None else f'{roll:.0f}'} | {sharpness(face.image):.0f} | {flags}")


if __name__ == "__main__":
    main()
