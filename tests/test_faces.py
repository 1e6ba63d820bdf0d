"""Image loading (every mode, broken uploads), UTKFace crop geometry, landmark alignment and MTCNN face detection."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agekit.faces import (
    ALIGN_FACES,
    NO_FACE_MESSAGE,
    UTK_CENTRE_DX,
    UTK_CENTRE_DY,
    UTK_LANDMARKS,
    UTK_SIDE_PER_BOX_WIDTH,
    WORK_SIDE,
    FaceCrop,
    FaceDetector,
    ImageError,
    NoFaceFound,
    alignment_matrix,
    apply_transform,
    crop_face,
    decode_factor,
    decode_scale,
    draw_boxes,
    face_fills_frame,
    frame_face,
    load_image,
    similarity_transform,
    square_within,
    utk_crop_box,
    warp_face,
)

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "nasa_astronaut_eileen_collins.jpg"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def rgb_at(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(image)[xy[1], xy[0]])


# ---------------------------------------------------------------- load_image: modes

def test_rgba_transparent_pixels_become_white_and_opaque_keep_colour() -> None:
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    out = load_image(rgba)
    assert out.mode == "RGB" and out.size == (40, 40)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (1, 0)) == (0, 0, 255)


def test_half_transparent_la_blends_with_white() -> None:
    out = load_image(Image.new("LA", (40, 40), (0, 128)))
    assert all(abs(v - 127) <= 1 for v in rgb_at(out))


def test_palette_with_transparency_composited_on_white() -> None:
    p = Image.new("P", (40, 40), 0)
    p.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    p.putpixel((5, 5), 1)
    p.info["transparency"] = 0
    out = load_image(encode(p, "PNG"))  # through a real PNG tRNS chunk
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (5, 5)) == (200, 100, 50)


@pytest.mark.parametrize("mode,value,expected", [
    ("L", 77, 77),
    ("1", 1, 255),
    ("I;16", 65535, 255),
    ("I;16", 32896, 128),  # 16-bit mid grey → 8-bit mid grey, not clipped to white
    ("I", 65535, 255),
    ("I", 200, 200),  # 8-bit values stored in a 32-bit image stay as they are
    ("F", 0.5, 128),  # float in [0, 1]
    ("F", 200.0, 200),
])
def test_grey_and_high_bit_depth_modes_scale_to_8_bit(mode: str, value: float, expected: int) -> None:
    image = Image.new(mode, (40, 40), value)
    if mode in ("I", "I;16", "F"):
        image.putpixel((0, 0), 0)  # a dark pixel, so the scaling cannot be a min-max stretch of a flat image
    out = load_image(image)
    assert out.mode == "RGB"
    assert rgb_at(out, (1, 1)) == (expected,) * 3


def test_16_bit_png_file_scales_to_8_bit() -> None:
    grey16 = Image.fromarray(np.full((40, 40), 65535 // 4, dtype=np.uint16))
    out = load_image(encode(grey16, "PNG"))
    assert abs(rgb_at(out)[0] - 64) <= 1


def test_cmyk_converts_to_rgb() -> None:
    out = load_image(Image.new("CMYK", (40, 40), (0, 255, 255, 0)))
    assert rgb_at(out) == (255, 0, 0)


@pytest.mark.parametrize("array,expected", [
    (np.full((40, 50, 3), 9, np.uint8), (9, 9, 9)),
    (np.full((40, 50), 9, np.uint8), (9, 9, 9)),
    (np.full((40, 50, 1), 9, np.uint8), (9, 9, 9)),
    (np.full((40, 50, 3), 1.0, np.float32), (255, 255, 255)),
    (np.full((40, 50, 3), 65535, np.uint16), (255, 255, 255)),
    (np.zeros((40, 50, 4), np.uint8), (255, 255, 255)),  # fully transparent → white
])
def test_numpy_arrays(array: np.ndarray, expected: tuple[int, int, int]) -> None:
    out = load_image(array)
    assert out.mode == "RGB" and out.size == (50, 40)
    assert rgb_at(out) == expected


def test_array_of_wrong_shape_is_refused() -> None:
    with pytest.raises(ImageError, match="HxW"):
        load_image(np.zeros((40, 40, 2), np.uint8))


# ---------------------------------------------------------------- load_image: files

def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 40), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 30, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (40, 60)
    assert rgb_at(out, (20, 5))[0] > 200  # the red half is now on top
    assert rgb_at(out, (20, 55))[0] < 50


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = load_image(data)
    assert rgb_at(out) == (255, 0, 0)


def test_animated_webp_gives_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    _, g, b = rgb_at(load_image(data))
    assert g > 200 and b < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_random_bytes_are_not_an_image() -> None:
    with pytest.raises(ImageError, match="not an image format"):
        load_image(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())


def test_zero_bytes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(str(tmp_path / "nope.png"))


def png_header(width: int, height: int) -> bytes:
    """A PNG (signature, IHDR claiming width x height RGB 8-bit, IEND) with no pixel data: 45 bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (8000, 6000)])
def test_huge_dimensions_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(ImageError, match="too large.*megapixels"):
        load_image(png_header(width, height))


def big_jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    """A width x height greyscale JPEG, cheap to make (flat grey, the top eighth black), with an EXIF orientation."""
    image = Image.new("L", (width, height), 200)
    image.paste(0, (0, 0, width, height // 8))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80, exif=exif)
    return buffer.getvalue()


def test_decode_scale_keeps_the_longer_side_at_least_the_working_size() -> None:
    assert decode_scale((4032, 3024)) == 1 and decode_scale((2 * WORK_SIDE - 1, 10)) == 1
    assert decode_scale((8064, 6048)) == 2 and decode_scale((6048, 8064)) == 2
    assert decode_scale((12000, 8400)) == 4 and decode_scale((20000, 9000)) == 8


def test_100_megapixel_jpeg_is_decoded_reduced(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    path.write_bytes(big_jpeg(12000, 8400))  # 100.8 megapixels
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (3000, 2100)  # 1/4 scale: same aspect ratio, >= WORK_SIDE
    assert WORK_SIDE <= max(image.size) < 2 * WORK_SIDE
    assert image.getpixel((1500, 100)) == (0, 0, 0) and image.getpixel((1500, 2000)) == (200, 200, 200)
    assert decode_factor(image) == 4.0  # coordinates x 4 = the file's pixels
    assert decode_factor(load_image(big_jpeg(640, 480))) == 1.0  # decoded at full size


def test_exif_rotated_big_jpeg_comes_out_upright() -> None:
    image = load_image(big_jpeg(8064, 6048, orientation=6))  # 48 MP, stored landscape, "rotate 90° clockwise"
    assert image.size == (3024, 4032) and decode_factor(image) == 2.0  # portrait, at 1/2 scale
    # the stored top band (black) is on the right once upright
    assert image.getpixel((3020, 2000)) == (0, 0, 0) and image.getpixel((100, 2000)) == (200, 200, 200)


def test_jpeg_header_beyond_the_jpeg_limit_and_big_png_are_refused() -> None:
    data = bytearray(big_jpeg(64, 64))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 15000, 20000)  # claims 300 megapixels
    with pytest.raises(ImageError, match="too large"):
        load_image(bytes(data))
    with pytest.raises(ImageError, match=r"too large \(8064x6048 px = 49 megapixels\); resize it below 40 "
                                         r"megapixels \(or save it as JPEG: JPEGs are read up to 200 megapixels\)"):
        load_image(png_header(8064, 6048))


def test_size_limit_holds_even_if_pillows_own_guard_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match=r"too large \(8000x6000 px = 48 megapixels\)"):
        load_image(png_header(8000, 6000))


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageError, match="too small .20x50 px"):
        load_image(Image.new("RGB", (20, 50)))


# ---------------------------------------------------------------- crop geometry

def test_utk_crop_box_follows_measured_framing() -> None:
    x1, y1, x2, y2 = utk_crop_box((100, 100, 200, 220), (1000, 1000))
    side = x2 - x1
    assert side == y2 - y1 == round(UTK_SIDE_PER_BOX_WIDTH * 100)
    assert abs((x1 + x2) / 2 - (150 + UTK_CENTRE_DX * 100)) <= 0.5
    assert abs((y1 + y2) / 2 - (160 + UTK_CENTRE_DY * 100)) <= 0.5


def test_utk_crop_box_scales_and_translates_with_the_face() -> None:
    small = np.array(utk_crop_box((10, 20, 60, 80), (5000, 5000)), float)
    big = np.array(utk_crop_box((100, 200, 600, 800), (5000, 5000)), float)
    moved = np.array(utk_crop_box((110, 220, 160, 280), (5000, 5000)), float)
    assert np.allclose(big, small * 10, atol=10)
    assert np.allclose(moved, small + [100, 200, 100, 200], atol=1)


def test_utk_crop_box_may_overhang_but_rejects_bad_boxes() -> None:
    x1, y1, _, _ = utk_crop_box((0, 0, 50, 60), (100, 100))
    assert x1 < 0 or y1 < 0
    with pytest.raises(ValueError, match="empty"):
        utk_crop_box((10, 10, 10, 40), (100, 100))
    with pytest.raises(ValueError, match="outside"):
        utk_crop_box((200, 10, 240, 40), (100, 100))


def test_crop_face_pads_outside_pixels_black() -> None:
    white = Image.new("RGB", (100, 100), (255, 255, 255))
    crop, region = crop_face(white, (0, 0, 50, 60))
    assert crop.size == (200, 200)
    assert region[0] < 0
    assert rgb_at(crop, (0, 100)) == (0, 0, 0)  # left edge came from outside the image
    assert rgb_at(crop, (199, 199)) == (255, 255, 255)


# ---------------------------------------------------------------- detection

@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_no_face_in_a_synthetic_image(detector: FaceDetector) -> None:
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    with pytest.raises(NoFaceFound) as err:
        detector.detect(load_image(ramp))
    assert str(err.value) == NO_FACE_MESSAGE


def test_assume_cropped_uses_a_small_square_image_whole(detector: FaceDetector) -> None:
    flat = Image.new("RGB", (120, 110), (128, 128, 128))
    [face] = detector.detect(flat, assume_cropped=True)
    assert face.image.size == (200, 200) and face.box == (0.0, 0.0, 120.0, 110.0) and face.faces_found == 1
    assert face.crop_box == (5, 0, 115, 110)  # the centred square, not a stretched rectangle
    with pytest.raises(NoFaceFound):
        detector.detect(Image.new("RGB", (600, 300)), assume_cropped=True)  # not a face-crop shape


def test_finds_the_one_face_on_the_astronaut_photo(detector: FaceDetector) -> None:
    image = load_image(ASTRONAUT)
    [face] = detector.detect(image)
    x1, y1, x2, y2 = face.box
    assert 160 < (x1 + x2) / 2 < 290 and 60 < (y1 + y2) / 2 < 180  # her face, not the suit or the shuttle
    assert face.score > 0.99 and face.faces_found == 1
    assert face.image.size == (200, 200) and face.image.mode == "RGB"
    assert face.aligned == ALIGN_FACES and face.landmarks.shape == (5, 2)
    [boxed] = FaceDetector(align=False).detect(image)
    assert boxed.crop_box == utk_crop_box(boxed.box, image.size) and not boxed.aligned


def test_a_photo_that_is_already_a_face_crop_is_used_whole(detector: FaceDetector) -> None:
    astronaut = load_image(ASTRONAUT)
    [face] = detector.detect(astronaut)
    tight = astronaut.crop(face.crop_box).resize((240, 240))  # her face framed like UTKFace, as a photo
    [again] = detector.detect(tight)
    assert again.crop_box == (0, 0, 240, 240) and again.faces_found == 1
    assert np.array_equal(np.asarray(again.image), np.asarray(tight.resize((200, 200), Image.Resampling.BICUBIC)))
    utk_example = load_image(ASTRONAUT.parent / "utkface_test_60_1_0.jpg")
    [utk_face] = detector.detect(utk_example)
    assert utk_face.crop_box == (0, 0, 200, 200)
    assert np.array_equal(np.asarray(utk_face.image), np.asarray(utk_example))


def test_square_within_stays_inside_the_image() -> None:
    image = Image.new("RGB", (300, 200))
    assert square_within(image, (150, 100))[1] == (50, 0, 250, 200)
    assert square_within(image, (10, 10))[1] == (0, 0, 200, 200)
    assert square_within(image, (290, 150))[1] == (100, 0, 300, 200)


def test_face_fills_frame_only_for_square_images_mostly_face() -> None:
    assert face_fills_frame((20, 10, 180, 190), (200, 200))
    assert not face_fills_frame((80, 80, 120, 130), (200, 200))  # a small face in a larger scene
    assert not face_fills_frame((20, 10, 180, 190), (400, 200))  # wide image: crop a square from it


def test_several_faces_sorted_by_size_and_capped() -> None:
    astronaut = load_image(ASTRONAUT)
    canvas = Image.new("RGB", (1100, 512), (90, 90, 90))
    for left, side in ((0, 512), (520, 340), (870, 220)):
        canvas.paste(astronaut.resize((side, side)), (left, 0))
    faces = FaceDetector(max_side=1100, max_faces=2).detect(canvas)
    assert len(faces) == 2 and all(f.faces_found == 3 for f in faces)
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] < 512 < faces[1].box[0] < 860  # the biggest tile first, then the middle one


def test_draw_boxes_outlines_each_face() -> None:
    image = Image.new("RGB", (300, 200), (0, 0, 0))
    crop = FaceCrop(Image.new("RGB", (200, 200)), (50.0, 60.0, 150.0, 180.0), 0.99, (0, 0, 1, 1), 1)
    for faces in ([crop], [crop.box]):
        out = draw_boxes(image, faces)
        assert out.size == image.size and rgb_at(image, (50, 120)) == (0, 0, 0)
        assert rgb_at(out, (50, 120)) != (0, 0, 0)  # left edge of the box is drawn
        assert rgb_at(out, (100, 120)) == (0, 0, 0)  # inside stays untouched


# ---------------------------------------------------------------- landmark alignment

def rotation(degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """2x3 matrix of PIL's `rotate(degrees)` (counter-clockwise on screen, y down) about `centre`, px."""
    a = np.radians(degrees)
    r = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return np.hstack([r, (np.asarray(centre) - r @ np.asarray(centre))[:, None]])


def synthetic_face(size: int = 400) -> tuple[Image.Image, np.ndarray]:
    """A drawn face (skin oval, dark eyes, nose, mouth corners) centred in a size x size textured image, and its
    five landmarks: the UTKFace template scaled 1.2x about the image centre."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(90, 160, (size // 8, size // 8, 3), dtype=np.uint8)).resize((size, size))
    landmarks = (UTK_LANDMARKS - 100.0) * 1.2 + size / 2
    draw = ImageDraw.Draw(image)
    c = size / 2
    draw.ellipse((c - 105, c - 150, c + 105, c + 110), fill=(222, 180, 150))
    for (x, y), radius, colour in zip(landmarks, (9, 9, 6, 5, 5), ((30, 20, 20),) * 2 + ((160, 90, 80),) * 3):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    draw.line([tuple(landmarks[3]), tuple(landmarks[4])], fill=(150, 60, 60), width=5)
    return image, landmarks


def test_similarity_estimate_is_exact_on_a_known_similarity() -> None:
    points = np.random.default_rng(1).uniform(0, 300, (5, 2))
    known = 1.7 * rotation(33.0, (0.0, 0.0))
    known[:, 2] = (12.5, -40.0)
    estimate = similarity_transform(points, apply_transform(known, points))
    assert np.allclose(estimate, known, atol=1e-9)
    mirrored = points * (-1.0, 1.0)  # no similarity maps a face onto its mirror image: the best fit is not exact
    assert not np.allclose(apply_transform(similarity_transform(points, mirrored), points), mirrored, atol=1.0)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), points)


def test_aligned_landmarks_land_on_the_template_at_any_crop_size() -> None:
    _, landmarks = synthetic_face()
    for size in (200, 112):
        matrix = alignment_matrix(landmarks, (100.0, 70.0, 300.0, 330.0), size)
        assert np.allclose(apply_transform(matrix, landmarks), UTK_LANDMARKS * size / 200, atol=1e-6)


def test_a_face_rotated_20_degrees_gives_the_upright_aligned_crop() -> None:
    # Tolerance: mean absolute difference <= 2 grey levels (of 255) between the two aligned crops (measured 0.5):
    # the rotated photo is interpolated twice (PIL's rotate, then the warp). The box crop differs by 16.
    image, landmarks = synthetic_face()
    box = (100.0, 70.0, 300.0, 330.0)
    upright = frame_face(image, box, landmarks, align=True)
    tilted_image = image.rotate(20, Image.Resampling.BICUBIC)
    tilted = frame_face(tilted_image, box, apply_transform(rotation(20, (200, 200)), landmarks), align=True)
    assert upright.aligned and tilted.aligned
    difference = np.abs(np.asarray(upright.image, float) - np.asarray(tilted.image, float)).mean()
    assert difference <= 2.0
    unaligned = np.abs(np.asarray(upright.image, float) - np.asarray(crop_face(tilted_image, box)[0], float)).mean()
    assert unaligned > 10 * difference


def test_a_large_face_is_shrunk_without_aliasing_to_the_same_crop() -> None:
    image, landmarks = synthetic_face()
    big = image.resize((1600, 1600), Image.Resampling.BICUBIC)  # the face 4x larger: warp_face box-averages first
    small_crop, _ = warp_face(image, alignment_matrix(landmarks, (100, 70, 300, 330)))
    big_crop, region = warp_face(big, alignment_matrix(landmarks * 4, (400, 280, 1200, 1320)))
    assert np.abs(np.asarray(small_crop, float) - np.asarray(big_crop, float)).mean() <= 2.0  # measured 0.45
    assert region[0] < 400 and region[2] > 1200  # the region bounds the face


@pytest.mark.parametrize("kind", ["missing", "not finite", "one point", "mouth above eyes", "20x too small"])
def test_unusable_landmarks_fall_back_to_the_box_crop(kind: str) -> None:
    image, good = synthetic_face()
    landmarks = {"missing": None, "not finite": np.full((5, 2), np.nan), "one point": np.full((5, 2), 200.0),
                 "mouth above eyes": good[[3, 4, 2, 0, 1]], "20x too small": (good - 200) / 20 + 200}[kind]
    box = (100.0, 70.0, 300.0, 330.0)
    assert alignment_matrix(landmarks, box) is None
    face = frame_face(image, box, landmarks, align=True)
    crop, region = crop_face(image, box)
    assert not face.aligned and face.crop_box == region
    assert np.array_equal(np.asarray(face.image), np.asarray(crop))


def test_mtcnn_landmarks_align_a_tilted_photo() -> None:
    # Measured: mean absolute difference 7.3 grey levels aligned vs 48 for the box crops of the two photos.
    astronaut = load_image(ASTRONAUT)
    tilted = astronaut.rotate(20, Image.Resampling.BICUBIC, expand=True)
    crops = {}
    for align in (True, False):
        detector = FaceDetector(align=align)
        crops[align] = [np.asarray(detector.detect(image)[0].image, float) for image in (astronaut, tilted)]
    aligned, boxed = (np.abs(a - b).mean() for a, b in (crops[True], crops[False]))
    assert aligned <= 12.0 and boxed >= 3 * aligned
