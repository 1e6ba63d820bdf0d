"""Measure how UTKFace frames its faces, as MTCNN sees them: the box framing and the landmark template that
`agekit.faces.align` uses (UTK_SIDE_PER_BOX_WIDTH, UTK_CENTRE_DX/DY, UTK_LANDMARKS). Not used at run time.

    python -m tools.face_framing measure-framing /path/to/UTKFace --n 200
    python -m tools.face_framing measure-landmarks /path/to/UTKFace --n 400
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from agekit.faces import (
    UTK_SIZE,
    FaceDetector,
    NoFaceFound,
    apply_transform,
    load_image,
    similarity_transform,
    template_spread,
)


def detect_on_canvas(files: list[Path], detector: FaceDetector, face_px: int = 100, canvas_px: int = 400,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN's box and landmarks on UTKFace chips, in the chip's own 200x200 pixels.

    Each chip is shrunk to `face_px` and pasted in the middle of a `canvas_px` blurred-noise background, so
    MTCNN sees the face at a typical detection-time size with surroundings (on the bare 200x200 chip its box
    overshoots the frame). Returns (M,4) boxes and (M,5,2) landmarks of the M chips where a face was found (the
    detection nearest the canvas centre).
    """
    rng = np.random.default_rng(seed)
    boxes, landmarks = [], []
    scale = face_px / UTK_SIZE
    offset = (canvas_px - face_px) // 2
    for file in files:
        face = load_image(file).resize((face_px, face_px), Image.Resampling.BILINEAR)
        noise = rng.integers(60, 200, (canvas_px, canvas_px, 3), dtype=np.uint8)
        canvas = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3))
        canvas.paste(face, (offset, offset))
        found, _, points = detector.find_faces(canvas)
        if len(found) == 0:
            continue
        centres = (found[:, :2] + found[:, 2:]) / 2
        nearest = np.argmin(((centres - canvas_px / 2) ** 2).sum(1))
        boxes.append((found[nearest] - offset) / scale)
        landmarks.append((points[nearest] - offset) / scale)
    if not boxes:
        raise NoFaceFound("no face found in any of the measured images")
    return np.array(boxes), np.array(landmarks)


def measure_utk_framing(files: list[Path], detector: FaceDetector, seed: int = 0) -> dict[str, Any]:
    """Measure where MTCNN's box falls in UTKFace's 200x200 frame, to reproduce the framing on new photos.

    Returns medians of side/box-width and the centre offset in box widths (boxes from `detect_on_canvas`).
    """
    boxes, _ = detect_on_canvas(files, detector, seed=seed)
    x1, y1, x2, y2 = boxes.T
    w = x2 - x1
    ratios = UTK_SIZE / w
    return {"images": len(files), "detected": len(boxes),
            "side_per_box_width": float(np.median(ratios)),
            "side_per_box_width_iqr": [float(v) for v in np.percentile(ratios, [25, 75])],
            "centre_dx": float(np.median((UTK_SIZE / 2 - (x1 + x2) / 2) / w)),
            "centre_dy": float(np.median((UTK_SIZE / 2 - (y1 + y2) / 2) / w)),
            "box_width_px": float(np.median(w)), "box_height_px": float(np.median(y2 - y1))}


def measure_utk_landmarks(files: list[Path], detector: FaceDetector, seed: int = 0) -> dict[str, Any]:
    """Measure the UTKFace landmark template: coordinate-wise medians of MTCNN's five landmarks on the chips,
    in chip px (landmarks from `detect_on_canvas`), and how well each chip's landmarks fit that template (RMS
    residual after the best similarity, as a fraction of the template's spread — see MAX_ALIGN_RESIDUAL)."""
    _, landmarks = detect_on_canvas(files, detector, seed=seed)
    template = np.median(landmarks, axis=0)
    residuals = [np.sqrt(((apply_transform(similarity_transform(points, template), points) - template) ** 2)
                         .sum(1).mean()) / template_spread(template) for points in landmarks]
    return {"images": len(files), "detected": len(landmarks),
            "template": [[round(float(v), 2) for v in point] for point in template],
            "landmark_iqr_px": [[round(float(v), 2) for v in point]
                                for point in np.subtract(*np.percentile(landmarks, [75, 25], axis=0))],
            "residual_median": float(np.median(residuals)),
            "residual_p99": float(np.percentile(residuals, 99)), "residual_max": float(np.max(residuals))}


MEASUREMENTS = {"measure-framing": measure_utk_framing, "measure-landmarks": measure_utk_landmarks}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.face_framing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"measure-framing": "measure the UTKFace framing constants UTK_SIDE_PER_BOX_WIDTH, UTK_CENTRE_DX/DY",
             "measure-landmarks": "measure the UTKFace landmark template UTK_LANDMARKS and the fit residuals"}
    for command, text in helps.items():
        measure = sub.add_parser(command, help=text)
        measure.add_argument("data", type=Path, help="folder of UTKFace aligned & cropped JPEGs")
        measure.add_argument("--n", type=int, default=200, help="number of randomly chosen images")
        measure.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images in {args.data}")
    sample = random.Random(args.seed).sample(files, min(args.n, len(files)))
    result = MEASUREMENTS[args.command](sample, FaceDetector(), seed=args.seed)
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
