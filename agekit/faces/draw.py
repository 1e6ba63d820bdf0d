"""Numbered, coloured face boxes drawn on a photo (the Compare tab's annotated preview)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from agekit.faces.align import Box, FaceCrop
from agekit.faces.decode import to_rgb

BOX_COLOURS = ("#f97316", "#22c55e", "#3b82f6", "#e11d48", "#a855f7", "#eab308", "#14b8a6", "#f43f5e")


def draw_boxes(image: Image.Image, faces: list[FaceCrop] | list[Box]) -> Image.Image:
    """A copy of `image` with each face box outlined and numbered 1, 2, ... in list order."""
    out = to_rgb(image).copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 30)))
    for number, face in enumerate(faces, start=1):
        x1, y1, x2, y2 = face.box if isinstance(face, FaceCrop) else face
        colour = BOX_COLOURS[(number - 1) % len(BOX_COLOURS)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        label = str(number)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx, ty = x1, max(0.0, y1 - (bottom - top) - 2 * line)  # above the box, or inside at the top edge
        draw.rectangle((tx, ty, tx + right - left + 2 * line, ty + bottom + 2 * line), fill=colour)
        draw.text((tx + line, ty + line), label, fill="white", font=font)
    return out
