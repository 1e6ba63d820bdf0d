"""A UTKFace chip re-rendered as a photo would present it: the project's proxy for faces in real uploads.

`render_wild(chip, seed, index)` places the face at a random size, tilt and position in a larger frame over a
synthetic background (no other face), then applies exposure, blur and JPEG compression, and returns the JPEG
bytes (what an upload is) with the parameters drawn (`WildParams`). Everything is drawn from a generator seeded
by (seed, index), so the same face index and seed give byte-identical output on any machine with the same Pillow.
The ranges are module constants; `python -m evaluation.wild` runs every test/val face through it and then
through the app's own path (load_image → FaceDetector → crop → models).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agekit.faces import UTK_CENTRE_DX, UTK_CENTRE_DY, UTK_SIDE_PER_BOX_WIDTH, to_rgb

RENDER_VERSION = 1  # bump when the rendering changes: cached wild crops (runs/wild/) are keyed by it
FACE_WIDTH_PX = (40.0, 400.0)  # face (MTCNN box) width in the frame, px; drawn log-uniformly
FRAME_PER_FACE = (2.0, 5.0)  # frame's long side / face width
FRAME_ASPECT = (0.75, 1.0)  # frame's short side / long side; portrait or landscape with equal odds
ROTATION_DEG = 25.0  # in-plane tilt, drawn uniformly in ±ROTATION_DEG
EXPOSURE_EV = (-1.0, 1.0)  # exposure change in stops, applied in linear light
BLUR_SIGMA_PX = (0.0, 1.5)  # Gaussian blur of the whole frame, px
JPEG_QUALITY = (30, 95)  # inclusive
BACKGROUNDS = ("noise", "gradient", "shapes")
SURROUND = 0.25  # the chip is extended by this fraction of its side on each side before it fades out
FACE_MASK_FEATHER = 0.06  # softness of the pasted face's elliptical edge, fraction of the chip side
BACKGROUND_SCALE = 0.25  # backgrounds are drawn at this fraction of the frame size (smooth anyway; 10x faster)


@dataclass(frozen=True)
class WildParams:
    """What was drawn for one rendered face; pixel values in the frame's pixels."""

    seed: int
    index: int
    frame_size: tuple[int, int]  # (width, height), px
    face_width: float  # px: the face box width the placement aims at (chip side / UTK_SIDE_PER_BOX_WIDTH)
    face_centre: tuple[float, float]  # (x, y), px: where the face box's centre lands after the tilt
    rotation_deg: float  # counter-clockwise tilt of the face
    background: str  # one of BACKGROUNDS
    exposure_ev: float
    blur_sigma: float  # px
    jpeg_quality: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WildRender:
    """One rendered face: the encoded photo and how it was made."""

    jpeg: bytes
    params: WildParams


def draw_params(seed: int, index: int) -> tuple[WildParams, np.random.Generator]:
    """The parameters for face `index` under `seed`, and the generator (for the background) that drew them."""
    rng = np.random.default_rng([seed, index])
    face_width = float(np.exp(rng.uniform(*np.log(FACE_WIDTH_PX))))
    long_side = face_width * rng.uniform(*FRAME_PER_FACE)
    short_side = long_side * rng.uniform(*FRAME_ASPECT)
    size = (round(long_side), round(short_side)) if rng.random() < 0.5 else (round(short_side), round(long_side))
    margin = 0.75 * face_width  # the face box (and most of the tilted chip) stays inside the frame
    centre = (float(rng.uniform(margin, size[0] - margin)), float(rng.uniform(margin, size[1] - margin)))
    params = WildParams(
        seed=seed, index=index, frame_size=size, face_width=face_width, face_centre=centre,
        rotation_deg=float(rng.uniform(-ROTATION_DEG, ROTATION_DEG)),
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        exposure_ev=float(rng.uniform(*EXPOSURE_EV)), blur_sigma=float(rng.uniform(*BLUR_SIGMA_PX)),
        jpeg_quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
    )
    return params, rng


def render_wild(chip: Image.Image, seed: int, index: int) -> WildRender:
    """Render a face chip (UTKFace framing, any size) as a JPEG photo; deterministic in (seed, index)."""
    params, rng = draw_params(seed, index)
    frame = background(params.background, params.frame_size, rng)
    face, mask = tilted_face(to_rgb(chip), params)
    # the chip's centre, so that the tilted face box centre lands on params.face_centre
    offset = np.array([-UTK_CENTRE_DX, -UTK_CENTRE_DY]) * params.face_width  # box centre - chip centre
    angle = math.radians(params.rotation_deg)
    turned = np.array([offset[0] * math.cos(angle) + offset[1] * math.sin(angle),
                       -offset[0] * math.sin(angle) + offset[1] * math.cos(angle)])  # PIL rotates CCW, y down
    chip_centre = np.array(params.face_centre) - turned
    frame.paste(face, (round(chip_centre[0] - face.width / 2), round(chip_centre[1] - face.height / 2)), mask)
    frame = expose(frame, params.exposure_ev)
    if params.blur_sigma > 0:
        frame = frame.filter(ImageFilter.GaussianBlur(params.blur_sigma))
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=params.jpeg_quality)
    return WildRender(out.getvalue(), params)


def tilted_face(chip: Image.Image, params: WildParams) -> tuple[Image.Image, Image.Image]:
    """The chip scaled to the drawn face width and tilted, with a mask (L) for pasting it.

    The chip is tight around the face, so its square edge would frame the face like a sticker: it is first
    extended by SURROUND of its side with its own edge pixels, blurred, and the mask fades that ring into the
    background (the chip itself stays whole and sharp).
    """
    side = chip.width
    pad = round(SURROUND * side)
    ring = Image.fromarray(np.pad(np.asarray(chip), ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    face = ring.filter(ImageFilter.GaussianBlur(0.05 * side))
    face.paste(chip, (pad, pad))
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, face.width - 1, face.height - 1), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(FACE_MASK_FEATHER * side))
    face = face.rotate(params.rotation_deg, Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(params.rotation_deg, Image.Resampling.BICUBIC, expand=True)
    scale = params.face_width * UTK_SIDE_PER_BOX_WIDTH / side
    size = (max(1, round(face.width * scale)), max(1, round(face.height * scale)))
    return (face.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0),
            mask.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


def background(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A synthetic RGB background of `size` (width, height): blurred colour noise, a two-colour gradient or
    blurred random shapes — textures that hold no face. Drawn at BACKGROUND_SCALE of the size, then enlarged."""
    width, height = max(2, round(size[0] * BACKGROUND_SCALE)), max(2, round(size[1] * BACKGROUND_SCALE))
    if kind == "noise":
        coarse = rng.integers(0, 256, (max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        image = image.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) / 80)))
    elif kind == "gradient":
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        t = xs / (width - 1) * math.cos(angle) + ys / (height - 1) * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
        image = Image.fromarray(np.clip(start + t[..., None] * (end - start), 0, 255).astype(np.uint8))
    elif kind == "shapes":
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(6, 16))):
            x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
            y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * height)
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        image = image.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) / 150)))
    else:
        raise ValueError(f"unknown background {kind!r}; choose one of {list(BACKGROUNDS)}")
    return image.resize(size, Image.Resampling.BICUBIC)


def expose(image: Image.Image, ev: float) -> Image.Image:
    """Scale the light by 2**ev stops in (approximately) linear light, clipping what saturates."""
    if ev == 0:
        return image
    gain = 2.0 ** ev
    lut = [min(255, round(255 * min(1.0, (v / 255) ** 2.2 * gain) ** (1 / 2.2))) for v in range(256)]
    return image.point(lut * 3)


__all__ = ["BACKGROUNDS", "BLUR_SIGMA_PX", "EXPOSURE_EV", "FACE_WIDTH_PX", "FRAME_ASPECT", "FRAME_PER_FACE",
           "JPEG_QUALITY", "ROTATION_DEG", "WildParams", "WildRender", "background", "draw_params", "expose",
           "render_wild", "tilted_face"]
