"""Input quality flags: a face's size, whole-image fallback, in-plane rotation and blur, on hand-built faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from agekit.face_quality import BLUR_SHARPNESS, ROTATION_DEG, TINY_FACE_PX, quality_flags, roll_degrees, sharpness
from agekit.faces import UTK_LANDMARKS, FaceCrop

RNG = np.random.default_rng(0)
SHARP = Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8))  # noise: every edge as sharp as it gets


def rotated_landmarks(degrees: float) -> np.ndarray:
    """UTKFace's landmark template turned by `degrees` (clockwise in the image) about its centre."""
    theta = math.radians(degrees)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = UTK_LANDMARKS.mean(axis=0)
    return (UTK_LANDMARKS - centre) @ rotation.T + centre


def face(box: tuple[float, float, float, float], crop: Image.Image = SHARP, landmarks: np.ndarray | None = None
         ) -> FaceCrop:
    return FaceCrop(crop, box, 0.99, (0, 0, 200, 200), 1, landmarks=landmarks)


@pytest.mark.parametrize("degrees", [0.0, 20.0, -40.0, 90.0])
def test_roll_is_the_eye_lines_angle(degrees: float) -> None:
    assert roll_degrees(rotated_landmarks(degrees)) == pytest.approx(degrees, abs=0.5)
    assert roll_degrees(None) is None


def test_sharpness_falls_with_blur() -> None:
    blurred = SHARP.filter(ImageFilter.GaussianBlur(2))
    assert sharpness(SHARP) > 100 * BLUR_SHARPNESS > sharpness(blurred) * 100
    assert sharpness(Image.new("RGB", (200, 200), (90, 90, 90))) == 0.0


def test_a_good_face_has_no_flags() -> None:
    assert quality_flags(face((100.0, 100.0, 220.0, 260.0), landmarks=rotated_landmarks(5)), (640, 480)) == []


def test_each_problem_gets_its_flag_and_a_message_saying_what_to_do() -> None:
    tiny = quality_flags(face((10.0, 10.0, 10.0 + TINY_FACE_PX - 8, 50.0)), (640, 480))
    assert [f.code for f in tiny] == ["tiny"] and "32 px wide" in tiny[0].message
    # a reduced-decoded photo: the box is in working px, the flag in the uploaded photo's px
    assert quality_flags(face((10.0, 10.0, 30.0, 40.0)), (640, 480), pixel_scale=4.0) == []
    whole = quality_flags(face((0.0, 0.0, 200.0, 200.0)), (200, 200))
    assert [f.code for f in whole] == ["whole_image"] and "rotate the photo" in whole[0].message
    tilted = quality_flags(face((100.0, 100.0, 220.0, 260.0), landmarks=rotated_landmarks(ROTATION_DEG + 10)),
                           (640, 480))
    assert [f.code for f in tilted] == ["rotated"] and "rotate the photo" in tilted[0].message
    blurred = quality_flags(face((100.0, 100.0, 220.0, 260.0), crop=SHARP.filter(ImageFilter.GaussianBlur(3))),
                            (640, 480))
    assert [f.code for f in blurred] == ["blurred"]
