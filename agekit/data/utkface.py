"""UTKFace on disk: labels parsed from file names, locating the folder, reading one face image.

UTKFace stores the labels in the name: ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` with age in
years 0..116, gender 0 = male / 1 = female, race 0..4 = White, Black, Asian, Indian, Others (called
"ethnicity" everywhere in agekit). The folder is given by a command-line flag or the environment
variable AGEKIT_UTKFACE, never hard-coded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from agekit.labels import AGE_MAX, AGE_MIN, ETHNICITY_NAMES, GENDER_NAMES

ENV_VAR = "AGEKIT_UTKFACE"
STANDARD_SUFFIX = ".jpg.chip.jpg"
IMAGE_SUFFIXES = (".jpg", ".jpeg")  # what counts as a UTKFace image file when checking a folder
# age_gender_race_rest, where rest is the capture date/time plus the suffix
_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<race>\d+)_(?P<rest>.+)$")


class MalformedName(ValueError):
    """A file name that does not follow age_gender_race_datetime.jpg.chip.jpg (labels unknown)."""


class LabelOutOfRange(MalformedName):
    """A well-formed name whose age, gender or race code lies outside the documented range."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field  # "age", "gender" or "ethnicity"


class DataRootError(ValueError):
    """The UTKFace folder is missing, not a folder, or holds no UTKFace images."""


@dataclass(frozen=True)
class FaceRecord:
    """One labelled UTKFace image: file name (no folder), age in years, gender and ethnicity codes."""

    file: str
    age: int
    gender: int
    ethnicity: int

    @property
    def labels(self) -> tuple[int, int, int]:
        """(age, gender, ethnicity) — equal tuples mean equal labels."""
        return (self.age, self.gender, self.ethnicity)


def parse_filename(name: str | os.PathLike[str]) -> FaceRecord:
    """Labels of a UTKFace file from its name (a bare name or a path).

    Raises MalformedName when a field is missing or not an integer, and its subclass LabelOutOfRange
    when age is outside 0..116, gender not 0/1 or race not 0..4.
    """
    file = Path(name).name
    match = _NAME.match(file)
    if match is None:
        fields = file.split("_")
        hint = " (the race field is missing)" if len(fields) == 3 and fields[0].isdigit() else ""
        raise MalformedName(f"{file!r} is not named age_gender_race_datetime{STANDARD_SUFFIX}{hint}")
    age, gender, race = (int(match[key]) for key in ("age", "gender", "race"))
    if not AGE_MIN <= age <= AGE_MAX:
        raise LabelOutOfRange(f"{file!r}: age {age} is outside {AGE_MIN}..{AGE_MAX} years", "age")
    if not 0 <= gender < len(GENDER_NAMES):
        raise LabelOutOfRange(f"{file!r}: gender code {gender} is not 0 (male) or 1 (female)", "gender")
    if not 0 <= race < len(ETHNICITY_NAMES):
        raise LabelOutOfRange(f"{file!r}: race code {race} is outside 0..{len(ETHNICITY_NAMES) - 1}", "ethnicity")
    return FaceRecord(file, age, gender, race)


def has_standard_suffix(name: str) -> bool:
    """True when the name ends in '.jpg.chip.jpg' like every regular UTKFace file."""
    return name.endswith(STANDARD_SUFFIX)


def list_files(root: Path) -> list[str]:
    """Sorted names of the regular, non-hidden files directly inside `root` (UTKFace is one flat folder)."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_file() and not entry.name.startswith("."))


def resolve_data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The UTKFace folder: `path` if given, else the AGEKIT_UTKFACE environment variable.

    Raises DataRootError with a message saying what to do when neither is set, the path does not exist,
    is not a folder, or contains no .jpg files.
    """
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR)
        if not path:
            raise DataRootError(
                f"no UTKFace folder given: pass its path (e.g. data/UTKFace) or set {ENV_VAR}=/path/to/UTKFace"
            )
    root = Path(path).expanduser()
    if not root.exists():
        raise DataRootError(f"UTKFace folder {str(root)!r} does not exist — check the path or {ENV_VAR}")
    if not root.is_dir():
        hint = " — unpack it first (tar xzf UTKFace.tar.gz)" if root.name.endswith((".tar.gz", ".tgz", ".zip")) else ""
        raise DataRootError(f"{str(root)!r} is not a folder{hint}; pass the folder that holds the UTKFace .jpg files")
    if not any(name.lower().endswith(IMAGE_SUFFIXES) for name in list_files(root)):
        nested = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("utkface")]
        hint = f" — did you mean {str(root / nested[0])!r}?" if nested else ""
        raise DataRootError(
            f"no UTKFace images (*.jpg named age_gender_race_datetime{STANDARD_SUFFIX}) in {str(root)!r}{hint}"
        )
    return root


def resize_face(image: Image.Image, size: int) -> Image.Image:
    """RGB copy of `image` resized to size x size pixels with a Lanczos filter (antialiased downscale)."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.LANCZOS)


def read_face(path: str | os.PathLike[str], size: int | None = None) -> np.ndarray:
    """Fully decode one face image into an (H, W, 3) uint8 RGB array, resized to size x size if given.

    Raises OSError (or another PIL error) for unreadable or truncated files.
    """
    with Image.open(path) as image:
        image.load()
        rgb = resize_face(image, size) if size else image.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)
