"""Benchmark photos composed from the committed examples/ images (no dataset needed).

The public-domain astronaut portrait (512x512) is upscaled and pasted on a textured canvas, giving a
one-face photo at phone-camera size; the 640 px photo is the same scene at the detector's working size;
`group_photo` puts five faces on a 1920x1280 photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from bench.server import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
ASTRONAUT = EXAMPLES / "nasa_astronaut_eileen_collins.jpg"
GROUP = EXAMPLES / "multi_face_composite.jpg"
FACE_CROPS = tuple(sorted(EXAMPLES.glob("utkface_test_*.jpg")))  # 200x200 UTKFace-framed faces
LARGE_SIZE = (1920, 1280)  # px, a 2.5-megapixel landscape photo
SMALL_SIZE = (640, 427)  # px, the same photo with its long side at FaceDetector's default max_side


def textured_canvas(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB background (blurred coloured noise), so the detector works on real texture."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (size[1] // 64 + 2, size[0] // 64 + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(8))


def portrait_photo(size: tuple[int, int] = LARGE_SIZE, source: Path = ASTRONAUT, seed: int = 0) -> Image.Image:
    """`source` scaled to 80% of the canvas height and pasted left of centre on a textured canvas of `size`."""
    canvas = textured_canvas(size, seed)
    portrait = Image.open(source).convert("RGB")
    side = round(0.8 * size[1])
    portrait = portrait.resize((side, side * portrait.height // portrait.width), Image.Resampling.BICUBIC)
    canvas.paste(portrait, (size[0] // 3 - side // 2 + size[0] // 8, (size[1] - portrait.height) // 2))
    return canvas


def group_photo(size: tuple[int, int] = LARGE_SIZE) -> Image.Image:
    """Five faces on a photo of `size`: the multi-face example (4 faces) scaled to the full width at the top, and a
    mirrored UTKFace example face (220 px) in the free bottom-right corner."""
    canvas = textured_canvas(size, seed=3)
    with Image.open(GROUP) as group:
        top = group.convert("RGB").resize((size[0], size[0] * group.height // group.width), Image.Resampling.BICUBIC)
    canvas.paste(top, (0, 0))
    face = ImageOps.mirror(Image.open(FACE_CROPS[1]).convert("RGB")).resize((220, 220), Image.Resampling.BICUBIC)
    canvas.paste(face, (size[0] - 270, size[1] - 240))
    return canvas


def write_benchmark_photos(folder: str | Path) -> dict[str, Path]:
    """JPEGs (quality 90) of the large and small portrait photos in `folder`: {label: path}.

    Labels: "photo 1920x1280", "photo 640x427"; plus the committed "astronaut 512x512" and, when present,
    "group 960x540" (the multi-face example).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    large = portrait_photo(LARGE_SIZE)
    photos: dict[str, Path] = {}
    for size, image in ((LARGE_SIZE, large), (SMALL_SIZE, large.resize(SMALL_SIZE, Image.Resampling.LANCZOS))):
        path = folder / f"portrait_{size[0]}x{size[1]}.jpg"
        image.save(path, quality=90)
        photos[f"photo {size[0]}x{size[1]}"] = path
    photos["astronaut 512x512"] = ASTRONAUT
    if GROUP.is_file():
        with Image.open(GROUP) as group:
            photos[f"group {group.width}x{group.height}"] = GROUP
    return photos
