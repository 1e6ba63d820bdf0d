"""Everything between an uploaded file and an RGB PIL image: `load_image` decodes any format, mode and EXIF
orientation, refuses what cannot be used (too large, too small, not an image) with an `ImageError` that says what
to do, and decodes big JPEGs reduced (`decode_factor` says by how much).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

# PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; load_image turns both into ImageError. The real
# guard is ours, per format (MAX_PIXELS, MAX_JPEG_PIXELS), checked on the header before anything is decoded.
Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS


class ImageError(ValueError):
    """The upload cannot be used as an image; the message tells the user what to do."""


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
