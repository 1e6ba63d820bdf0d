"""Image loading and face detection, cropping every face with the same framing as UTKFace's 200x200 crops.

`load_image` turns whatever a user uploads into an RGB PIL image (or an `ImageError` saying what to do);
`FaceDetector.detect` finds faces with MTCNN (facenet-pytorch, weights ship in the wheel) and returns
`FaceCrop`s whose 200x200 images are framed like the training data: rotated and scaled so MTCNN's five landmarks
fall on UTKFace's landmark template (eyes level, like the training chips), or cut around the face box in
UTKFace's framing when alignment is off (ALIGN_FACES) or the landmarks are unusable.

The framing constants and the landmark template were measured with
    python -m agekit.faces measure-framing /work/shared/data/UTKFace --n 200
    python -m agekit.faces measure-landmarks /work/shared/data/UTKFace --n 400
(see `measure_utk_framing`, `measure_utk_landmarks`; the numbers are next to the UTK_* constants below).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (
    Image,
    ImageDraw,
    ImageFilter,
    ImageFont,
    ImageOps,
    UnidentifiedImageError,
)

MAX_PIXELS = 40_000_000  # larger images decoded at full size are refused: seconds and ~120 MB+ of RAM each
# JPEGs are decoded reduced (libjpeg's DCT scaling, PIL's `draft`) to their working size, so a 100-MP phone photo
# costs what a 6-MP one does; the cap only bounds the header a JPEG may claim (a 200-MP one decodes at 1/4).
MAX_JPEG_PIXELS = 200_000_000
DECODE_SCALE_INFO = "agekit_decode_scale"  # key in a reduced-decoded image's PIL info: file px per image px
REDUCIBLE_FORMATS = ("JPEG", "MPO")  # PIL formats whose `draft` decodes at 1/2, 1/4 or 1/8 scale
# Working size: a JPEG whose longer side is at least twice this is decoded at the largest of 1/2, 1/4, 1/8 scale
# that keeps its longer side >= WORK_SIDE px. Detection runs at 640 px; crops are cut from the working image, so
# a face spanning a tenth of the photo's width still gets a full-resolution 200 px crop.
WORK_SIDE = 2048
MIN_SIDE = 32  # px; smaller images cannot hold a face the models can read
MAX_FILE_BYTES = 64 * 1024 * 1024  # larger files are refused before reading them
UTK_SIZE = 200  # side of UTKFace's aligned & cropped images, px

# PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; load_image turns both into ImageError. The real
# guard is ours, per format (MAX_PIXELS, MAX_JPEG_PIXELS), checked on the header before anything is decoded.
Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS

# UTKFace framing relative to the MTCNN box of the face (measured on 200 UTKFace crops pasted, at 100 px, on a
# textured 400x400 background — `python -m agekit.faces measure-framing DATA --n 200`): the crop side is
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
#     python -m agekit.faces measure-landmarks /work/shared/data/UTKFace --n 400
UTK_LANDMARKS = np.array([[60.54, 59.15], [139.37, 59.26], [99.47, 105.29], [64.40, 139.89], [134.77, 139.85]])
# Landmarks that fit the template worse than this (RMS residual after the best similarity, as a fraction of the
# template's RMS spread) are not aligned: profile faces and bad landmarks. On the 400 UTKFace chips (same command)
# the residual's median is 0.10, 99th percentile 0.23, maximum 0.28: every pose seen in training is aligned.
MAX_ALIGN_RESIDUAL = 0.30
# Aligned crop side / box-crop side outside [1/x, x]: the landmarks disagree with the box; box-crop instead.
MAX_ALIGN_SIDE_RATIO = 1.5
# Whether the app, the API and the evaluations align faces (FaceDetector's default): chosen on the validation
# split by `python -m evaluation.wild --split val` with and without --no-align (README, "Wild-photo evaluation").
ALIGN_FACES = True


class ImageError(ValueError):
    """The upload cannot be used as an image; the message tells the user what to do."""


class NoFaceFound(ValueError):
    """The detector found no face in the image."""


NO_FACE_MESSAGE = "no face found — try a photo where the face is at least 40 px wide and faces the camera"


# ---------------------------------------------------------------- loading

def load_image(source: str | Path | bytes | bytearray | Image.Image | np.ndarray) -> Image.Image:
    """Any upload (path, encoded bytes, PIL image, HxW / HxWxC array) → RGB PIL image, upright.

    Applies the EXIF orientation, keeps the first frame of animations, composites transparency on white and
    scales 16-bit / 32-bit / float pixels to 8 bits. JPEGs of 2 x WORK_SIDE px or more on their longer side are
    decoded at 1/2, 1/4 or 1/8 scale (see `decode_scale`), so pixel coordinates refer to that reduced image; its
    `info[DECODE_SCALE_INFO]` then says how many of the file's pixels one of its pixels spans (`decode_factor`).
    Raises ImageError with a user-facing message for empty, corrupt, truncated, huge or tiny images.
    """
    if isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, Image.Image):
        image = source
        _check_pixels(*image.size)
    else:
        image = _open_encoded(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # first frame of an animated GIF / WebP / APNG / MPO
            file_width = image.width
            if image.format in REDUCIBLE_FORMATS and decode_scale(image.size) > 1:
                scale = decode_scale(image.size)
                image.draft(image.mode, (max(1, image.width // scale), max(1, image.height // scale)))
            image.load()
            factor = file_width / image.width
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _too_large(err) from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError) as err:
        # TypeError: PIL's n_frames on a TIFF whose second frame lacks its dimensions
        raise ImageError(f"the image file is truncated or corrupt ({err}); re-save or re-upload it") from None
    image = _exif_upright(image)
    rgb = to_rgb(image)
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"the image is too small ({rgb.width}x{rgb.height} px); upload a photo at least "
                         f"{MIN_SIDE} px on each side")
    if factor != 1.0:
        rgb.info[DECODE_SCALE_INFO] = factor
    return rgb


def decode_factor(image: Image.Image) -> float:
    """How many pixels of the original file one pixel of a `load_image` result spans (1.0 unless decoded reduced):
    multiply its pixel coordinates by this to get the file's."""
    return float(image.info.get(DECODE_SCALE_INFO, 1.0))


def _open_encoded(source: str | Path | bytes | bytearray) -> Image.Image:
    """Open (lazily: header only) a file path or encoded bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the uploaded data"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MB; upload an image file under "
                             f"{MAX_FILE_BYTES // 2**20} MB")
        data = path.read_bytes()
        name = path.name
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}; pass a file path, bytes, a PIL "
                         "image or a numpy array")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes); upload the image again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _too_large(err) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format I can read; upload a JPEG, PNG, WebP, GIF, BMP or "
                         "TIFF file (iPhone HEIC photos: export them as JPEG first)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{name} looks like an image but its header is corrupt ({err}); re-save it as "
                         "JPEG or PNG") from None
    # our own limits, whatever another module set Image.MAX_IMAGE_PIXELS to
    _check_pixels(*image.size, limit=MAX_JPEG_PIXELS if image.format in REDUCIBLE_FORMATS else MAX_PIXELS)
    return image


def decode_scale(size: tuple[int, int]) -> int:
    """The JPEG decode reduction (1, 2, 4 or 8) for an image of `size` (w, h) px: the largest that keeps the
    longer side at least WORK_SIDE px."""
    longest = max(size)
    return next((s for s in (8, 4, 2) if longest // s >= WORK_SIDE), 1)


def _check_pixels(width: int, height: int, limit: int = MAX_PIXELS) -> None:
    if width * height > limit:
        hint = f" (or save it as JPEG: JPEGs are read up to {MAX_JPEG_PIXELS // 1_000_000} megapixels)" \
            if limit < MAX_JPEG_PIXELS else ""
        raise ImageError(f"the image is too large ({width}x{height} px = {width * height / 1e6:.0f} megapixels); "
                         f"resize it below {limit // 1_000_000} megapixels{hint} and try again")


def _too_large(err: Exception) -> ImageError:
    """ImageError for PIL's decompression-bomb error/warning, whose text holds the pixel count."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else f"over {MAX_PIXELS // 1_000_000} megapixels"
    return ImageError(f"the image is too large ({size}); resize it below {MAX_PIXELS // 1_000_000} megapixels "
                      f"(JPEG: {MAX_JPEG_PIXELS // 1_000_000}) and try again")


def _exif_upright(image: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a malformed EXIF block leaves the image as it is."""
    try:
        return ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):  # broken EXIF is common
        return image


def _array_to_image(array: np.ndarray) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, other ints, bool or float in [0, 1]) → PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    _check_pixels(array.shape[1], array.shape[0])
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    return Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else
                           ("RGB" if array.shape[2] == 3 else "RGBA"))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map high-bit-depth or float pixels to 0..255 by the range their type implies.

    bool → {0, 255}; float within [0, 1] → x 255; values already within 0..255 → unchanged; up to 65535
    (16-bit) → / 257; anything else (e.g. HDR floats) → min-max stretch.
    """
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=hi, neginf=lo)
    if values.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        scaled = scaled * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        scaled = scaled / 257.0
    else:
        scaled = (scaled - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB: transparency composited on white, 16/32-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "La":  # premultiplied alpha: PIL converts it only to LA
        image, mode = image.convert("LA"), "LA"
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, HSV, RGBX, ...
    except (ValueError, OSError) as err:
        raise ImageError(f"the image's colour mode {mode} is not supported ({err}); re-save it as RGB JPEG "
                         "or PNG") from None


# ---------------------------------------------------------------- cropping geometry

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


# ---------------------------------------------------------------- detection

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


class FaceDetector:
    """MTCNN face detector (CPU, created once) that returns faces cropped in UTKFace framing.

    max_side: photos are shrunk so their longer side is at most this (px) before detection — detection time
        grows with pixel count, the crops are still cut from the full-resolution image.
    max_faces: at most this many faces (the largest) are returned.
    min_face_px: smallest face width searched for, px in the shrunk detection image.
    min_score: detections with a lower MTCNN probability are dropped (false positives are mostly < 0.9).
    align: rotate and scale each face so its five landmarks fall on UTKFace's template (eyes level, as in the
        training chips); faces whose landmarks are unusable get the box crop. Default: ALIGN_FACES.
    """

    def __init__(self, max_side: int = 640, max_faces: int = 8, min_face_px: int = 20, min_score: float = 0.9,
                 align: bool | None = None) -> None:
        # heavy import, only when a detector is wanted
        from facenet_pytorch import MTCNN

        from agekit import mtcnn_pools

        self.max_side, self.max_faces, self.min_face_px, self.min_score = max_side, max_faces, min_face_px, min_score
        self.align = ALIGN_FACES if align is None else align
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_px, device="cpu").eval()
        mtcnn_pools.replace_max_pools(self.mtcnn)  # bit-identical and faster on the CPU

    def find_faces(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All faces in an RGB image, largest first: (N,4) boxes (x1, y1, x2, y2), (N,) probabilities and (N,5,2)
        landmarks (x, y: left eye, right eye, nose, left and right mouth corner, as seen in the image), all in
        the image's pixels."""
        scale = min(1.0, self.max_side / max(image.size))
        small = image
        if scale < 1.0:
            small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
        boxes, probs, points = self.mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, probs = np.asarray(boxes, np.float32), np.asarray(probs, np.float32)
        points = np.asarray(points, np.float32).reshape(len(boxes), 5, 2)
        keep = probs >= self.min_score
        boxes, probs, points = boxes[keep] / scale, probs[keep], points[keep] / scale
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        return boxes[order], probs[order], points[order]

    def detect(self, image: Image.Image, assume_cropped: bool = False) -> list[FaceCrop]:
        """Faces in an RGB image, largest first, at most max_faces, each cropped like UTKFace.

        A square-ish photo that is already a face crop (one face filling it, see `face_fills_frame`) is used
        whole (its largest square, nearest the face), not re-cropped.

        assume_cropped: when nothing is detected but the image looks like a face crop already (roughly square,
        at most 400 px), use the whole image instead of raising. Raises NoFaceFound otherwise.
        """
        image = to_rgb(image)
        return self.crops(image, *self.find_faces(image), assume_cropped=assume_cropped)

    def crops(self, image: Image.Image, boxes: np.ndarray, probs: np.ndarray, points: np.ndarray,
              assume_cropped: bool = False, align: bool | None = None) -> list[FaceCrop]:
        """`detect`'s second half: the FaceCrops of an RGB image's faces as `find_faces` returned them.
        align: None = the detector's setting (the wild evaluation crops one detection both ways)."""
        if len(boxes) == 0:
            if assume_cropped and looks_like_face_crop(image.size):
                crop, region = square_within(image, (image.width / 2, image.height / 2))
                return [FaceCrop(crop, (0.0, 0.0, float(image.width), float(image.height)), 1.0, region, 1)]
            raise NoFaceFound(NO_FACE_MESSAGE)
        if len(boxes) == 1 and face_fills_frame(boxes[0], image.size):
            # Already a face crop (e.g. a UTKFace image): MTCNN's box overshoots on faces that touch the border
            # (on UTKFace crops the implied crop is 1.0-1.4x the frame and off-centre by up to 50 px), so the
            # photo's own framing is closer to the training data than a re-crop padded with black.
            box_t = tuple(float(v) for v in boxes[0])
            x1, y1, x2, y2 = utk_crop_box(box_t, image.size)
            crop, region = square_within(image, ((x1 + x2) / 2, (y1 + y2) / 2))
            return [FaceCrop(crop, box_t, float(probs[0]), region, 1, landmarks=points[0])]
        align = self.align if align is None else align
        return [frame_face(image, tuple(float(v) for v in box), landmarks, align, float(prob), len(boxes))
                for box, prob, landmarks in zip(boxes[: self.max_faces], probs[: self.max_faces],
                                                points[: self.max_faces])]


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


# ---------------------------------------------------------------- drawing

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


# ---------------------------------------------------------------- framing measurement (not used at run time)

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
    parser = argparse.ArgumentParser(prog="python -m agekit.faces", description=__doc__.split("\n")[0])
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
