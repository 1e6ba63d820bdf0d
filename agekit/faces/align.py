"""Framing a face like UTKFace's 200x200 chips: the box crop in UTKFace's measured framing, or the landmark
alignment (a similarity onto UTKFace's landmark template, eyes level) that the app, the API and the evaluations use.

The framing constants and the landmark template were measured with `python -m tools.face_framing` (the numbers
are next to the UTK_* constants below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

UTK_SIZE = 200  # side of UTKFace's aligned & cropped images, px

# UTKFace framing relative to the MTCNN box of the face (measured on 200 UTKFace crops pasted, at 100 px, on a
# textured 400x400 background — `python -m tools.face_framing measure-framing DATA --n 200`): the crop side is
# UTK_SIDE_PER_BOX_WIDTH x box width, and its centre is the box centre shifted by (DX, DY) x box width.
# The box width is used as the scale because it is the most context-independent box measure (box height and
# vertical centre move by ~5% depending on what surrounds the face; width by <2%).
UTK_SIDE_PER_BOX_WIDTH = 1.190
UTK_CENTRE_DX = 0.017
UTK_CENTRE_DY = 0.074
# A square-ish photo whose face's UTKFace crop would span at least this fraction of it is used whole.
FACE_FILLS_FRAME = 0.85

# UTKFace landmark template: where MTCNN puts the five landmarks (x, y) on UTKFace's 200x200 chips — left eye,
# right eye, nose, left and right mouth corner as seen in the image. Coordinate-wise medians over 400 chips (seed
# 0; all 400 detected; interquartile ranges 4-9 px), each shrunk to 100 px on a 400x400 blurred-noise canvas like
# the framing measurement:
#     python -m tools.face_framing measure-landmarks /work/shared/data/UTKFace --n 400
UTK_LANDMARKS = np.array([[60.54, 59.15], [139.37, 59.26], [99.47, 105.29], [64.40, 139.89], [134.77, 139.85]])
# Landmarks that fit the template worse than this (RMS residual after the best similarity, as a fraction of the
# template's RMS spread) are not aligned: profile faces and bad landmarks. On the 400 UTKFace chips (same command)
# the residual's median is 0.10, 99th percentile 0.23, maximum 0.28: every pose seen in training is aligned.
MAX_ALIGN_RESIDUAL = 0.30
# Aligned crop side / box-crop side outside [1/x, x]: the landmarks disagree with the box; box-crop instead.
MAX_ALIGN_SIDE_RATIO = 1.5
# Whether the app, the API and the evaluations align faces (FaceDetector's default): chosen on the validation
# split (docs/experiments.md, "Wild-photo evaluation").
ALIGN_FACES = True

Box = tuple[float, float, float, float]  # (x1, y1, x2, y2) in pixels


def utk_crop_box(box: Box, img_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The square region (x1, y1, x2, y2), px, framing the face in `box` the way UTKFace's crops do.

    `img_size` is (width, height) of the image `box` lives in; the region may extend past its borders (the
    crop is then padded black, as UTKFace's own crops are). Raises ValueError for an empty box or one
    outside the image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = img_size
    face_width = x2 - x1
    if face_width <= 0 or y2 <= y1:
        raise ValueError(f"face box {box} is empty")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    side = max(1, round(UTK_SIDE_PER_BOX_WIDTH * face_width))
    cx = (x1 + x2) / 2 + UTK_CENTRE_DX * face_width
    cy = (y1 + y2) / 2 + UTK_CENTRE_DY * face_width
    left, top = math.floor(cx - side / 2 + 0.5), math.floor(cy - side / 2 + 0.5)
    return left, top, left + side, top + side


def crop_face(image: Image.Image, box: Box, size: int = UTK_SIZE) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """(size x size RGB crop in UTKFace framing, the region it was cut from); out-of-image parts are black."""
    region = utk_crop_box(box, image.size)
    crop = image.crop(region)  # PIL fills pixels outside the image with 0 (black)
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return crop, region


def square_within(image: Image.Image, centre: tuple[float, float],
                  size: int = UTK_SIZE) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The largest square inside the image, as close to `centre` (px) as fits, resized to size x size."""
    side = min(image.size)
    left = min(max(0, round(centre[0] - side / 2)), image.width - side)
    top = min(max(0, round(centre[1] - side / 2)), image.height - side)
    region = (left, top, left + side, top + side)
    crop = image.crop(region)
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return crop, region


# ---------------------------------------------------------------- landmark alignment

def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking the (N,2) points
    `source` onto `target` (Umeyama 1991). Returns the 2x3 matrix M with target ≈ M @ [x, y, 1]."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need two matching (N,2) point arrays with N >= 2, got {source.shape} and {target.shape}")
    mean_s, mean_t = source.mean(0), target.mean(0)
    centred_s, centred_t = source - mean_s, target - mean_t
    variance_s = (centred_s ** 2).sum(1).mean()
    if not variance_s > 0:
        raise ValueError("the source points all coincide; no transform is defined")
    u, singular, vt = np.linalg.svd(centred_t.T @ centred_s / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # forbid a mirror image
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / variance_s
    return np.hstack([scale * rotation, (mean_t - scale * rotation @ mean_s)[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,2) points mapped by a 2x3 affine matrix."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def alignment_matrix(landmarks: np.ndarray | None, box: Box, size: int = UTK_SIZE) -> np.ndarray | None:
    """The similarity taking a face's five landmarks (original-image px) onto the UTKFace template of a
    size x size crop, or None when the landmarks are unusable (missing, non-finite, coincident, a poor fit to
    the template — e.g. a profile face — or a scale at odds with the face box); the caller then box-crops."""
    if landmarks is None:
        return None
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all() or points.std(0).sum() < 1.0:
        return None
    template = UTK_LANDMARKS * (size / UTK_SIZE)
    matrix = similarity_transform(points, template)
    residual = np.sqrt(((apply_transform(matrix, points) - template) ** 2).sum(1).mean())
    if residual > MAX_ALIGN_RESIDUAL * template_spread(template):
        return None
    # side of the crop in image px, aligned vs box framing: MTCNN's landmarks and box disagree this much
    # only when one of them is wrong
    side_ratio = size / np.hypot(*matrix[:, 0]) / (UTK_SIDE_PER_BOX_WIDTH * (box[2] - box[0]))
    return matrix if 1 / MAX_ALIGN_SIDE_RATIO <= side_ratio <= MAX_ALIGN_SIDE_RATIO else None


def template_spread(points: np.ndarray) -> float:
    """Root-mean-square distance of (N,2) points from their centroid, px."""
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def warp_face(image: Image.Image, matrix: np.ndarray,
              size: int = UTK_SIZE) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """(size x size crop through the similarity `matrix` (image px → crop px), bounding box of the image region it
    shows). Bicubic from the original pixels; a face much larger than the crop is first box-averaged by an integer
    factor so the warp does not alias; parts outside the image are black, as in `crop_face`."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]  # crop px → image px
    corners = apply_transform(inverse, [(0, 0), (size, 0), (size, size), (0, size)])
    left, top = np.floor(corners.min(0)).astype(int)
    right, bottom = np.ceil(corners.max(0)).astype(int)
    region = (int(left), int(top), int(right), int(bottom))
    source = image.crop(region)  # black outside the image
    factor = max(1, int(np.hypot(*inverse[:, 0])))  # image px per crop px, rounded down
    if factor > 1:
        source = source.reduce(factor)
    # crop px → px of the (reduced) region; PIL's affine data maps output coordinates to input coordinates
    local = inverse.copy()
    local[:, 2] -= (left, top)
    local /= factor
    crop = source.transform((size, size), Image.Transform.AFFINE, tuple(local.ravel()), Image.Resampling.BICUBIC)
    return crop, region


@dataclass
class FaceCrop:
    """One detected face: its 200x200 crop framed like UTKFace, where it was found, and detector confidence."""

    image: Image.Image  # RGB, UTK_SIZE x UTK_SIZE
    box: Box  # detected face box (x1, y1, x2, y2) in original-image pixels
    score: float  # MTCNN face probability (1.0 and box = whole image for an assumed crop)
    crop_box: tuple[int, int, int, int]  # square region of the original image the crop shows (may overhang)
    faces_found: int  # faces detected in the whole image, before capping at max_faces ("showing 8 of 13")
    landmarks: np.ndarray | None = None  # (5,2) MTCNN landmarks, original-image px (None for an assumed crop)
    aligned: bool = False  # True: warped onto the UTKFace landmark template; crop_box then bounds the tilted square

    @property
    def area(self) -> float:
        """Area of the face box, px²."""
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def frame_face(image: Image.Image, box: Box, landmarks: np.ndarray | None, align: bool, score: float = 1.0,
               faces_found: int = 1, size: int = UTK_SIZE) -> FaceCrop:
    """One face as a FaceCrop: aligned to the UTKFace landmark template when `align` and its landmarks are
    usable (see `alignment_matrix`), otherwise the box crop in UTKFace framing."""
    matrix = alignment_matrix(landmarks, box, size) if align and landmarks is not None else None
    if matrix is None:
        crop, region = crop_face(image, box, size)
        return FaceCrop(crop, box, score, region, faces_found, landmarks=landmarks)
    crop, region = warp_face(image, matrix, size)
    return FaceCrop(crop, box, score, region, faces_found, landmarks=landmarks, aligned=True)


def looks_like_face_crop(size: tuple[int, int]) -> bool:
    """Whether an image of `size` (w, h) px could be a tight face crop like UTKFace's (square-ish, small)."""
    width, height = size
    return max(width, height) <= 400 and 0.8 <= width / height <= 1.25


def face_fills_frame(box: Box, img_size: tuple[int, int]) -> bool:
    """Whether a square-ish image is already framed like UTKFace around this face: the UTKFace crop of the
    box would be at least FACE_FILLS_FRAME of the image's shorter side."""
    width, height = img_size
    x1, _, x2, _ = utk_crop_box(box, img_size)
    return 0.8 <= width / height <= 1.25 and x2 - x1 >= FACE_FILLS_FRAME * min(width, height)
