"""agekit.wild: the seeded wild-photo renderer is deterministic, stays in its ranges and puts the face where it says."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agekit.faces import UTK_CENTRE_DX, UTK_CENTRE_DY, UTK_SIDE_PER_BOX_WIDTH
from agekit.wild import (
    BACKGROUNDS,
    BLUR_SIGMA_PX,
    EXPOSURE_EV,
    FACE_WIDTH_PX,
    JPEG_QUALITY,
    ROTATION_DEG,
    background,
    expose,
    render_wild,
)


def marked_chip(side: int = 200) -> Image.Image:
    """A grey chip with a red disc where the face box centre of a UTKFace chip is."""
    chip = Image.new("RGB", (side, side), (128, 128, 128))
    width = side / UTK_SIDE_PER_BOX_WIDTH
    x, y = side / 2 - UTK_CENTRE_DX * width, side / 2 - UTK_CENTRE_DY * width
    r = side / 8
    ImageDraw.Draw(chip).ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 0))
    return chip


def test_same_seed_and_index_give_byte_identical_photos() -> None:
    chip = marked_chip()
    for index in (0, 7):
        first, again = render_wild(chip, 3, index), render_wild(chip, 3, index)
        assert first.jpeg == again.jpeg and first.params == again.params
    assert render_wild(chip, 3, 0).jpeg != render_wild(chip, 4, 0).jpeg  # another seed
    assert render_wild(chip, 3, 0).jpeg != render_wild(chip, 3, 1).jpeg  # another face


def test_parameters_stay_in_their_ranges_and_the_photo_matches_them() -> None:
    chip = marked_chip()
    seen = set()
    for index in range(40):
        render = render_wild(chip, 0, index)
        p = render.params
        photo = Image.open(io.BytesIO(render.jpeg))
        assert photo.format == "JPEG" and photo.size == p.frame_size
        assert FACE_WIDTH_PX[0] <= p.face_width <= FACE_WIDTH_PX[1]
        assert abs(p.rotation_deg) <= ROTATION_DEG and p.background in BACKGROUNDS
        assert EXPOSURE_EV[0] <= p.exposure_ev <= EXPOSURE_EV[1] and BLUR_SIGMA_PX[0] <= p.blur_sigma <= BLUR_SIGMA_PX[1]
        assert JPEG_QUALITY[0] <= p.jpeg_quality <= JPEG_QUALITY[1]
        assert min(p.frame_size) >= 1.5 * p.face_width  # the face sits inside a larger frame
        x, y = p.face_centre
        assert 0.75 * p.face_width <= x <= p.frame_size[0] - 0.75 * p.face_width
        # the face box centre is where the params say: the chip's red disc is there, whatever the tilt
        red, green, _ = np.asarray(photo.convert("RGB"))[round(y), round(x)].astype(int)
        assert red > green + 60, (index, p)
        seen.add(p.background)
    assert seen == set(BACKGROUNDS)


def test_backgrounds_have_the_frame_size_and_unknown_kinds_are_refused() -> None:
    rng = np.random.default_rng(0)
    for kind in BACKGROUNDS:
        assert background(kind, (123, 77), rng).size == (123, 77)
    with pytest.raises(ValueError, match="unknown background 'faces'"):
        background("faces", (10, 10), rng)


def test_exposure_scales_light_in_stops() -> None:
    grey = Image.new("RGB", (4, 4), (100, 100, 100))
    assert expose(grey, 0.0) is grey
    brighter, darker = (np.asarray(expose(grey, ev))[0, 0, 0] for ev in (1.0, -1.0))
    # 2x / 0.5x the light in linear terms (gamma 2.2): 100 → 255·(2·(100/255)^2.2)^(1/2.2)
    assert brighter == round(255 * (2 * (100 / 255) ** 2.2) ** (1 / 2.2)) and darker < 100 < brighter
    assert np.asarray(expose(Image.new("RGB", (1, 1), (250, 250, 250)), 1.0)).max() == 255  # clipped
