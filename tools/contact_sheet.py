"""A grid of images with a caption under each, as one small PIL image (the walkthrough's face galleries).

    sheet = contact_sheet([[(face_a, "age 24"), (face_b, "age 31")]])   # one row, two captioned faces
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL_PX = 112  # side of each image in the sheet
PAD_PX = 4  # white margin around each cell
FONT_PX = 11
LINE_PX = FONT_PX + 3

Cell = tuple[np.ndarray | Image.Image, str]  # (H,W,3) uint8 RGB array or PIL image, caption ("\n" breaks lines)


def contact_sheet(rows: Sequence[Sequence[Cell]], cell: int = CELL_PX) -> Image.Image:
    """rows of (image, caption) → one RGB image: each image resized to cell x cell, its caption lines below it
    (left-aligned, not wrapped), white background; shorter rows leave white space on the right."""
    if not rows or not any(rows):
        raise ValueError("contact_sheet needs at least one (image, caption) cell")
    n_cols = max(len(row) for row in rows)
    n_lines = max((caption.count("\n") + 1 for row in rows for _, caption in row), default=0)
    cell_w, cell_h = cell + 2 * PAD_PX, cell + 2 * PAD_PX + n_lines * LINE_PX
    sheet = Image.new("RGB", (n_cols * cell_w, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_PX)
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
            x, y = c * cell_w + PAD_PX, r * cell_h + PAD_PX
            sheet.paste(picture.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
            for i, line in enumerate(caption.split("\n")):
                draw.text((x, y + cell + 2 + i * LINE_PX), line, fill="black", font=font)
    return sheet
