"""Many photos at once into one table of rows (agekit.photo_results): the app's batch tab, its "predict_batch" API
endpoint and the command

    python -m agekit.predict PHOTOS_OR_ZIPS... --out results.csv [--checkpoints checkpoints]

A photo that cannot be used (not an image, no face) gets one row saying why; the others go on.
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agekit.faces import MAX_FILE_BYTES, FaceDetector, load_image
from agekit.photo_results import analyse_photo, error_row, result_rows, write_csv
from agekit.predict import ModelZoo

MAX_BATCH_PHOTOS = 20  # photos per batch in the app and its API (files, or images inside zips)
MAX_BATCH_PIXELS = 400_000_000  # decoded pixels per batch in the app (each photo is also capped by load_image)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PhotoInput:
    """One photo of a batch: its name for the table and where its bytes are."""

    name: str
    data: Path | bytes


def zip_photos(path: Path, max_photos: int | None) -> list[PhotoInput]:
    """The images inside a zip file (by suffix; folders and macOS metadata skipped), each read only after its
    declared size is checked against MAX_FILE_BYTES."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path.name} is not a readable zip file ({err}); upload the photos themselves") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
                   and m.filename.lower().endswith(IMAGE_SUFFIXES)]
        if max_photos is not None and len(members) > max_photos:
            raise ValueError(f"{path.name} holds {len(members)} photos; a batch takes at most {max_photos}")
        photos = []
        for member in members:
            if member.file_size > MAX_FILE_BYTES:
                raise ValueError(f"{member.filename} in {path.name} is {member.file_size / 2**20:.0f} MB; photos of at "
                                 f"most {MAX_FILE_BYTES // 2**20} MB are analysed")
            photos.append(PhotoInput(f"{path.name}/{member.filename}", archive.read(member)))
    return photos


def batch_inputs(paths: Sequence[str | Path], max_photos: int | None = MAX_BATCH_PHOTOS) -> list[PhotoInput]:
    """The photos of a batch from image files and zip files of images, in the order given; ValueError when there
    are none or more than `max_photos` (None: no limit)."""
    photos: list[PhotoInput] = []
    for path in map(Path, paths):
        photos += zip_photos(path, max_photos) if path.suffix.lower() == ".zip" else [PhotoInput(path.name, path)]
        if max_photos is not None and len(photos) > max_photos:
            raise ValueError(f"a batch takes at most {max_photos} photos (files, or images inside zip files); "
                             f"split the photos into several batches")
    if not photos:
        raise ValueError("no photos: choose image files or a zip file of images")
    return photos


def analyse_batch(photos: Sequence[PhotoInput], detector: FaceDetector, zoo: ModelZoo, models: list[str],
                  progress: Callable[[int, str], None] | None = None,
                  max_pixels: int | None = MAX_BATCH_PIXELS) -> list[dict[str, Any]]:
    """Every photo's result rows (result_rows, models in `models` order), or one error_row for a photo that could
    not be analysed; `progress(i, name)` is called before photo i. Photos beyond `max_pixels` decoded pixels in
    all (None: no limit) are skipped with a row saying so."""
    rows: list[dict[str, Any]] = []
    pixels = 0
    for index, photo in enumerate(photos):
        if progress is not None:
            progress(index, photo.name)
        try:
            image = load_image(photo.data)
            pixels += image.width * image.height
            if max_pixels is not None and pixels > max_pixels:
                rows.append(error_row(photo.name, f"skipped: the batch passed {max_pixels / 1e6:.0f} megapixels; "
                                                  "analyse the rest in another batch"))
                continue
            rows += result_rows(analyse_photo(image, detector, zoo, source=photo.name), models)
        except ValueError as err:  # the photo's own problem (ImageError, NoFaceFound): the message says what to do
            rows.append(error_row(photo.name, str(err)))
    return rows


def main(argv: list[str] | None = None) -> None:
    """`python -m agekit.predict PHOTOS... --out results.csv`: every face × model of every photo into one CSV."""
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="python -m agekit.predict",
                                     description="predict age, gender and ethnicity of every face in photos")
    parser.add_argument("photos", nargs="+", type=Path, help="image files and zip files of images")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write (one row per face × model)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoints")
    args = parser.parse_args(argv)
    try:
        photos = batch_inputs(args.photos, max_photos=None)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    zoo = ModelZoo.load(args.checkpoints)
    if not zoo.models:
        parser.error(f"no usable checkpoints in {args.checkpoints}: {zoo.failures or 'the folder has none'}")
    bar = tqdm(total=len(photos), unit="photo")

    def advance(index: int, name: str) -> None:
        bar.n = index
        bar.set_postfix_str(name, refresh=True)

    rows = analyse_batch(photos, FaceDetector(), zoo, list(zoo.models), progress=advance, max_pixels=None)
    bar.n = len(photos)
    bar.close()
    write_csv(rows, args.out)
    failed = sum(1 for row in rows if "error" in row)
    print(f"wrote {args.out}: {len(rows) - failed} face × model rows from {len(photos) - failed} photos"
          + (f"; {failed} photos gave no result (see the error column)" if failed else ""))
