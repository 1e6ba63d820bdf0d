"""tools.contact_sheet (the walkthrough notebook's figure helper): captioned image grids, checked pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tools.contact_sheet import LINE_PX, PAD_PX, contact_sheet


def solid(rgb: tuple[int, int, int], size: int = 50) -> np.ndarray:
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_cells_are_placed_row_by_row_with_caption_space() -> None:
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 160, 0)
    sheet = contact_sheet([[(solid(red), "red\nsecond line"), (Image.fromarray(solid(blue)), "blue")],
                           [(solid(green), "green")]], cell=40)
    cell_w, cell_h = 40 + 2 * PAD_PX, 40 + 2 * PAD_PX + 2 * LINE_PX  # two caption lines at most
    assert sheet.size == (2 * cell_w, 2 * cell_h) and sheet.mode == "RGB"
    centre = PAD_PX + 20
    assert sheet.getpixel((centre, centre)) == red
    assert sheet.getpixel((cell_w + centre, centre)) == blue
    assert sheet.getpixel((centre, cell_h + centre)) == green
    assert sheet.getpixel((cell_w + centre, cell_h + centre)) == (255, 255, 255)  # the short row's empty cell
    caption = np.asarray(sheet.crop((PAD_PX, PAD_PX + 41, cell_w - PAD_PX, cell_h - PAD_PX)))
    assert (caption < 128).any()  # some dark caption text under the red cell


def test_empty_sheet_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([[]])
