"""Hostile uploads: every input to agekit.faces.load_image gives an RGB image or an ImageError — nothing else.

Random bytes (seeded), truncated JPEG/PNG/GIF/WebP/TIFF/BMP at several cut points, empty files, headers
claiming gigantic dimensions (decompression bombs), every PIL mode in every format PIL can write it as, odd
numpy arrays; then a few of the same through the app's predict endpoint, whose error must be the user-facing
message, not "Unexpected error".
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agekit.faces import MIN_SIDE, ImageError, load_image

SIZE = (64, 48)  # px (w, h): above MIN_SIDE so a decoded image must come back whole
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
MAGIC = {"JPEG": b"\xff\xd8\xff\xe0", "PNG": b"\x89PNG\r\n\x1a\n", "GIF": b"GIF89a", "WEBP": b"RIFF\0\0\0\0WEBPVP8 ",
         "TIFF": b"II*\x00", "BMP": b"BM", "none": b""}
MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16B", "I;16L", "F", "LA", "PA",
         "RGBX", "RGBa", "La")
# Modes a photo really comes in: these must decode (not merely fail cleanly) wherever PIL can write them.
COMMON_MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LA", "RGBX")

def base_image() -> Image.Image:
    """A seeded 64x48 RGB image with a gradient and noise (not flat, so encoders do real work)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1) + rng.integers(0, 40, (SIZE[1], SIZE[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Pillow deprecates saving some modes as PNG
        image.save(buffer, fmt)
    return buffer.getvalue()


def in_mode(mode: str) -> Image.Image | None:
    """The base image converted to `mode` (a blank image if PIL cannot convert to it), or None."""
    try:
        return base_image().convert(mode)
    except ValueError:
        try:
            return Image.new(mode, SIZE)
        except ValueError:
            return None


def assert_rgb_or_image_error(source: object, expected_size: tuple[int, int] | None = None) -> Image.Image | None:
    """load_image(source) must return an RGB image (of `expected_size` if given) or raise ImageError with a
    message; any other exception fails the test with its traceback."""
    try:
        image = load_image(source)
    except ImageError as err:
        assert str(err).strip(), f"ImageError without a message for {describe(source)}"
        return None
    assert isinstance(image, Image.Image) and image.mode == "RGB", f"{describe(source)} → {image!r}"
    assert min(image.size) >= MIN_SIDE
    if expected_size is not None:
        assert image.size == expected_size
    np.asarray(image)  # the pixels really are there
    return image


def describe(source: object) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"{len(source)} bytes starting {bytes(source[:16])!r}"
    return repr(source)[:120]


# ---------------------------------------------------------------- random bytes

def random_payloads(count: int = 50, seed: int = 1234) -> list[bytes]:
    """Seeded random byte strings of 1..4096 bytes, most behind a real format's magic number."""
    rng = np.random.default_rng(seed)
    magics = list(MAGIC.values())
    payloads = []
    for i in range(count):
        body = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        payloads.append(magics[i % len(magics)] + body)
    return payloads


@pytest.mark.parametrize("index", range(50))
def test_random_bytes_are_refused_with_a_message(index: int) -> None:
    payload = random_payloads()[index]
    assert assert_rgb_or_image_error(payload) is None, "random bytes decoded as an image"


def test_random_bytes_from_a_file_path(tmp_path: Path) -> None:
    for i, payload in enumerate(random_payloads(10, seed=99)):
        path = tmp_path / f"upload_{i}.jpg"
        path.write_bytes(payload)
        assert assert_rgb_or_image_error(path) is None
        assert assert_rgb_or_image_error(str(path)) is None


# ---------------------------------------------------------------- truncated files

@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_give_an_image_or_a_clear_error(fmt: str) -> None:
    data = encode(base_image(), fmt)
    cuts = sorted({1, 4, 8, 16, 30, 64, len(data) // 4, len(data) // 2, 3 * len(data) // 4, len(data) - 16,
                   len(data) - 2, len(data) - 1})
    for cut in (c for c in cuts if 0 < c < len(data)):
        assert_rgb_or_image_error(data[:cut])
    assert_rgb_or_image_error(data, expected_size=SIZE)  # the whole file decodes


def test_truncated_jpeg_body_is_refused_not_grey_filled() -> None:
    data = encode(base_image().resize((256, 256)), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def tiff_with_broken_second_frame() -> bytes:
    """A valid one-frame grayscale TIFF whose next-IFD pointer leads to an IFD without width/height.

    Found by mutation fuzzing: PIL raises TypeError("Missing dimensions") from `image.n_frames`.
    """
    data = bytearray(encode(Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.uint8)), "TIFF"))
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first : first + 2])[0]
    pointer = first + 2 + 12 * entries
    second = len(data) + len(data) % 2  # IFDs start on a word boundary
    data += b"\0" * (second - len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHII", 262, 3, 1, 1) + struct.pack("<I", 0)  # only PhotometricInterp.
    data[pointer : pointer + 4] = struct.pack("<I", second)
    return bytes(data)


def test_tiff_with_a_broken_second_frame() -> None:
    assert_rgb_or_image_error(tiff_with_broken_second_frame())


# ---------------------------------------------------------------- empty inputs

def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for source in (b"", bytearray(), empty, str(empty)):
        with pytest.raises(ImageError, match="empty"):
            load_image(source)


def test_missing_file_and_wrong_types() -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image("/nonexistent/photo.jpg")
    for source in (None, 42, 3.5, ["a.jpg"], {"path": "a.jpg"}):
        with pytest.raises(ImageError):
            load_image(source)  # type: ignore[arg-type]


# ---------------------------------------------------------------- decompression bombs

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose (valid-CRC) IHDR claims width x height RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * 16))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def huge_jpeg(width: int = 65_000, height: int = 65_000) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to claim width x height."""
    data = bytearray(encode(base_image(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def huge_gif(width: int = 65_535, height: int = 65_535) -> bytes:
    data = bytearray(encode(base_image(), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen size
    return bytes(data)


def huge_bmp(width: int = 60_000, height: int = 60_000) -> bytes:
    data = bytearray(encode(base_image(), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


@pytest.mark.parametrize("make", [huge_png, huge_jpeg, huge_gif, huge_bmp], ids=["png", "jpeg", "gif", "bmp"])
def test_huge_dimension_headers_are_refused_before_decoding(make: Callable[[], bytes], tmp_path: Path) -> None:
    data = make()
    with pytest.raises(ImageError, match="too large"):
        load_image(data)
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_huge_webp_header_is_refused() -> None:
    data = bytearray(encode(base_image(), "WEBP"))
    chunk = data.index(b"VP8")
    kind = bytes(data[chunk : chunk + 4])
    if kind == b"VP8 ":  # lossy: 14-bit width/height after the 3-byte start code at chunk+8+3
        data[chunk + 14 : chunk + 18] = struct.pack("<HH", 16383, 16383)
    elif kind == b"VP8L":  # lossless: 14-bit (w-1, h-1) packed after the 0x2f signature
        bits = (16383 - 1) | ((16383 - 1) << 14)
        data[chunk + 9 : chunk + 13] = struct.pack("<I", bits)
    assert_rgb_or_image_error(bytes(data))  # 268 megapixels: refused, or at worst a clean corrupt-file error


def test_huge_pil_image_and_array_are_refused() -> None:
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("L", (8000, 6000)))  # 48 megapixels, already in memory
    with pytest.raises(ImageError, match="too large"):
        load_image(np.zeros((7000, 7000), np.uint8))


# ---------------------------------------------------------------- every PIL mode x format

def mode_format_cases() -> list[tuple[str, str]]:
    cases = []
    for mode in MODES:
        image = in_mode(mode)
        if image is None:
            continue
        for fmt in FORMATS:
            try:
                encode(image, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # PIL cannot write this mode in this format
            cases.append((mode, fmt))
    return cases


def pil_reads(data: bytes) -> bool:
    """Whether PIL itself decodes the file (it cannot read back e.g. its own YCbCr TIFFs)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


@pytest.mark.parametrize(("mode", "fmt"), mode_format_cases())
def test_every_mode_and_format_decodes_to_rgb(mode: str, fmt: str) -> None:
    data = encode(in_mode(mode), fmt)
    image = assert_rgb_or_image_error(data, expected_size=SIZE)
    if mode in COMMON_MODES and pil_reads(data):
        assert image is not None, f"a {mode} {fmt} file was refused"


@pytest.mark.parametrize("mode", [m
                                  for m in MODES if in_mode(m) is not None])
def test_every_mode_as_a_pil_image_object(mode: str) -> None:
    image = assert_rgb_or_image_error(in_mode(mode), expected_size=SIZE)
    if mode in COMMON_MODES:
        assert image is not None, f"a {mode} PIL image was refused"


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", SIZE, (255, 0, 0, 0))
    for source in (rgba, encode(rgba, "PNG"), encode(rgba, "WEBP")):
        assert load_image(source).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_and_float_images_keep_their_contrast() -> None:
    ramp = np.tile(np.linspace(0, 65535, SIZE[0]).astype(np.uint16), (SIZE[1], 1))
    rgb = np.asarray(load_image(encode(Image.fromarray(ramp), "PNG")))
    assert rgb[:, 0].max() < 5 and rgb[:, -1].min() > 250
    floats = np.tile(np.linspace(0.0, 1.0, SIZE[0], dtype=np.float32), (SIZE[1], 1))
    rgb = np.asarray(load_image(encode(Image.fromarray(floats, "F"), "TIFF")))
    assert rgb[:, 0].max() < 5 and rgb[:, -1].min() > 250


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", SIZE, colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, _, blue = load_image(buffer.getvalue()).getpixel((5, 5))
    assert red > 200 and blue < 50


# ---------------------------------------------------------------- numpy arrays

@pytest.mark.parametrize("array", [
    np.zeros((48, 64), np.uint8), np.zeros((48, 64, 1), np.uint8), np.zeros((48, 64, 3), np.uint8),
    np.zeros((48, 64, 4), np.uint8), np.ones((48, 64, 3), bool), np.full((48, 64, 3), 0.5, np.float32),
    np.full((48, 64), 40000, np.uint16), np.full((48, 64, 3), np.nan, np.float64),
    np.full((48, 64, 3), np.inf, np.float32), np.arange(48 * 64 * 3, dtype=np.int64).reshape(48, 64, 3) - 5000,
    np.zeros((48, 64, 2), np.uint8), np.zeros((48, 64, 5), np.uint8), np.zeros((2, 48, 64, 3), np.uint8),
    np.zeros((64,), np.uint8), np.zeros((0, 64, 3), np.uint8), np.zeros((10, 10, 3), np.uint8),
    np.zeros((48, 64, 3), np.complex64),
], ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_numpy_arrays_give_rgb_or_a_clear_error(array: np.ndarray) -> None:
    assert_rgb_or_image_error(array)


# ---------------------------------------------------------------- through the app's predict endpoint

@pytest.fixture(scope="module")
def app_context(tmp_path_factory: pytest.TempPathFactory, save_tiny):
    """An AppContext with one tiny random model and the real face detector."""
    from agekit.ui import AppContext

    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny(root / "tiny")
    return AppContext.create(root, examples_dir=None)


def hostile_uploads() -> dict[str, bytes]:
    """One input of each hostile kind, as the bytes of an uploaded file."""
    jpeg = encode(base_image(), "JPEG")
    return {"random": random_payloads(1)[0], "empty": b"", "truncated jpeg": jpeg[: len(jpeg) // 2],
            "truncated png": encode(base_image(), "PNG")[:40], "png bomb": huge_png(), "jpeg bomb": huge_jpeg(),
            "tiny": encode(Image.new("RGB", (8, 8)), "PNG"), "text": b"hello, this is not an image\n" * 10,
            "broken tiff frame": tiff_with_broken_second_frame()}


@pytest.mark.parametrize("kind", list(hostile_uploads()))
def test_predict_endpoint_shows_the_user_message(kind: str, app_context, tmp_path: Path) -> None:
    import gradio as gr

    from agekit.ui.api import predict_endpoint

    path = tmp_path / "upload.jpg"
    path.write_bytes(hostile_uploads()[kind])
    with pytest.raises(gr.Error) as caught:
        predict_endpoint(app_context, {"path": str(path)})
    message = str(caught.value.message)
    assert message.strip() and not message.startswith("Unexpected error"), message


@pytest.mark.parametrize("mode", ["1", "P", "CMYK", "I;16", "F", "LA"])
def test_predict_endpoint_accepts_unusual_modes(mode: str, app_context, tmp_path: Path) -> None:
    from agekit.ui.api import predict_endpoint

    fmt = "TIFF" if mode in ("CMYK", "F") else "PNG"
    path = tmp_path / f"upload.{fmt.lower()}"
    square = in_mode(mode).crop((0, 0, SIZE[1], SIZE[1]))  # small and square: used whole when no face is found
    path.write_bytes(encode(square, fmt))
    result = predict_endpoint(app_context, {"path": str(path)})
    assert result["faces"] and "tiny" in result["faces"][0]["predictions"]
