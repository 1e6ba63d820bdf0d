"""All-Age-Faces (AAF): a second source of real faces — loosely cropped photos with real ages and gender.

The folder (as laid out in shared/data, path from a flag or AGEKIT_AAF) holds ``images/NNNNNAaa.jpg`` (file
number NNNNN, age aa in years) and ``labels.csv`` (``file, age, gender`` with gender ``female`` / ``male``).
AAF has no ethnicity label: its faces carry ``ETHNICITY_UNKNOWN`` and the ethnicity loss and metrics skip them.
Gender is mapped by name onto agekit's codes (GENDER_NAMES: male 0, female 1; AAF's own codes are the opposite).

Split policy (`split_aaf`; the file number is the only identifier and one person may appear several times):
- the files are ordered by gender, then age, then number, so neighbouring numbers are the same kind of face and
  plausibly the same person; files are grouped in blocks of BLOCK_SIZE consecutive numbers and a block never
  straddles two splits;
- byte-identical copies and near-duplicates (the UTKFace audit's rule: pHash ≤ 8 bits and thumbnail r ≥ 0.96)
  join their blocks into one unit; a unit whose files carry different labels is excluded whole;
- units are assigned to train/val/test stratified by UTK7 age bin × gender, with `split.allocate_splits`.

Faces reach the pack through the app's own face path (`aligned_face`: load_image → FaceDetector.detect with
assume_cropped, largest face, the 200 px UTKFace-framed crop), so training sees what serving sees.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agekit.data.audit import (
    DEFAULT_RULE,
    NearDuplicateRule,
    connected_groups,
    exact_duplicate_groups,
    near_duplicate_candidates,
    scan_folder,
    select_near_pairs,
)
from agekit.data.dataset import FaceTensors, load_pack
from agekit.data.split import EXCLUDED, MANIFEST_COLUMNS, allocate_splits, check_fractions, load_manifest, stratum_keys
from agekit.data.utkface import resize_face
from agekit.labels import ETHNICITY_UNKNOWN, GENDER_NAMES, NUM_AGES

ENV_VAR = "AGEKIT_AAF"
IMAGES_DIR = "images"
LABELS_FILE = "labels.csv"
BLOCK_SIZE = 10  # consecutive file numbers kept in one split
DEFAULT_AAF_MANIFEST = Path(__file__).resolve().parent / "manifests" / "aaf_split.csv"
PACK_ENV_VAR = "AGEKIT_AAF_PACK"
DEFAULT_AAF_PACK = Path("packs/aaf_128.safetensors")  # python -m agekit.data aaf-pack
_NAME = re.compile(r"^(?P<number>\d{5})A(?P<age>\d{2})\.jpg$")


class AAFError(ValueError):
    """An AAF folder that is missing, or whose labels disagree with its file names."""


@dataclass(frozen=True)
class AAFRecord:
    """One AAF file: number, age (years) and gender code (GENDER_NAMES order)."""

    file: str
    number: int
    age: int
    gender: int


def resolve_aaf_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The AAF folder from `path` or $AGEKIT_AAF; raises AAFError naming what is missing."""
    value = path if path is not None else os.environ.get(ENV_VAR)
    if not value:
        raise AAFError(f"no All-Age-Faces folder given: pass --aaf PATH or set {ENV_VAR}")
    root = Path(value).expanduser()
    for needed in (root / LABELS_FILE, root / IMAGES_DIR):
        if not needed.exists():
            raise AAFError(f"{str(root)!r} is not an All-Age-Faces folder: {needed.name} is missing")
    return root


def parse_aaf_name(name: str) -> tuple[int, int]:
    """'00012A02.jpg' → (file number 12, age 2 years); raises AAFError for any other shape."""
    match = _NAME.match(name)
    if match is None:
        raise AAFError(f"{name!r} is not an All-Age-Faces file name (NNNNNAaa.jpg)")
    return int(match["number"]), int(match["age"])


def read_labels(root: Path) -> list[AAFRecord]:
    """labels.csv as records, sorted by file; checks that every row's age equals its file name's and that
    gender is 'female' or 'male'. Raises AAFError naming the first offending row."""
    frame = pd.read_csv(root / LABELS_FILE, dtype={"file": str, "gender": str}, keep_default_na=False)
    missing = {"file", "age", "gender"} - set(frame.columns)
    if missing:
        raise AAFError(f"{LABELS_FILE} lacks columns {sorted(missing)}; expected file, age, gender")
    records = []
    for row in frame.itertuples(index=False):
        number, name_age = parse_aaf_name(row.file)
        if int(row.age) != name_age:
            raise AAFError(f"{row.file}: labels.csv says age {row.age} but the file name says {name_age}")
        if row.gender not in GENDER_NAMES:
            raise AAFError(f"{row.file}: gender {row.gender!r} is not one of {list(GENDER_NAMES)}")
        if not 0 <= name_age < NUM_AGES:
            raise AAFError(f"{row.file}: age {name_age} is outside 0..{NUM_AGES - 1}")
        records.append(AAFRecord(row.file, number, name_age, GENDER_NAMES.index(row.gender)))
    if len({r.file for r in records}) != len(records):
        raise AAFError(f"{LABELS_FILE} lists a file more than once")
    return sorted(records, key=lambda r: r.file)


def assign_aaf_splits(records: Sequence[AAFRecord], exact_groups: Sequence[Sequence[str]] = (),
                      near_pairs: Sequence[Sequence[str]] = (), unreadable: dict[str, str] | None = None,
                      seed: int = 0, val: float = 0.1, test: float = 0.1) -> pd.DataFrame:
    """The manifest table (split.MANIFEST_COLUMNS, ethnicity ETHNICITY_UNKNOWN) under the module's policy.
    Needs no image access: tested on metadata alone."""
    check_fractions(val, test)
    unreadable = dict(unreadable or {})
    by_file = {r.file: r for r in records}
    files = sorted(by_file)
    blocks: dict[int, list[str]] = {}
    for record in records:
        blocks.setdefault(record.number // BLOCK_SIZE, []).append(record.file)
    links = [*blocks.values(), *exact_groups, *near_pairs]
    rows = {f: {"file": f, "age": by_file[f].age, "gender": by_file[f].gender, "ethnicity": ETHNICITY_UNKNOWN,
                "split": EXCLUDED, "dup_group": -1, "note": ""} for f in files}
    dropped = dict(unreadable)
    for number, copies in enumerate(connected_groups(files, [*exact_groups, *near_pairs])):
        labels = {(by_file[f].age, by_file[f].gender) for f in copies}
        for file in copies:
            rows[file]["dup_group"] = number
            if len(labels) > 1:  # which label is true is unknown
                dropped.setdefault(file, f"conflicting labels in duplicate group {number}")
    for file, reason in dropped.items():
        rows[file]["note"] = reason if reason.startswith("conflicting") else f"unreadable image: {reason}"
    units = [kept for unit in connected_groups(files, links) if (kept := [f for f in unit if f not in dropped])]
    labels = [(by_file[u[0]].age, by_file[u[0]].gender, ETHNICITY_UNKNOWN) for u in units]
    sizes = [len(u) for u in units]
    min_files = int(np.ceil(1 / min(f for f in (val, test) if f > 0))) if val or test else 1
    for unit, split in zip(units, allocate_splits(sizes, stratum_keys(labels, sizes, min_files), val, test,
                                                  np.random.default_rng(seed))):
        for file in unit:
            rows[file]["split"] = split
    return pd.DataFrame([rows[f] for f in files], columns=list(MANIFEST_COLUMNS))


def split_aaf(root: Path, seed: int = 0, val: float = 0.1, test: float = 0.1, rule: NearDuplicateRule = DEFAULT_RULE,
              workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Read every AAF image (hash, decode, thumbnail), find copies and split: the manifest table."""
    records = read_labels(root)
    scans = scan_folder(root / IMAGES_DIR, [r.file for r in records], workers=workers, progress=progress)
    near = select_near_pairs(near_duplicate_candidates(scans, rule.max_hash_distance), rule)
    unreadable = {s.file: s.error for s in scans if s.error is not None}
    return assign_aaf_splits(records, exact_duplicate_groups(scans), [(p.a, p.b) for p in near], unreadable,
                             seed=seed, val=val, test=test)


class AlignedFaceReader:
    """Reads a photo the way the app reads an upload: the largest face's UTKFace-framed 200 px crop, resized to
    `size` (Lanczos, as UTKFace chips are packed). A `write_pack` reader, safe in a thread pool: one MTCNN per
    thread, created on first use. Raises NoFaceFound when the app would find no face either."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, path: Path, size: int) -> np.ndarray:
        from agekit.faces import FaceDetector, load_image  # heavy (MTCNN); only when packing

        if not hasattr(self._local, "detector"):
            self._local.detector = FaceDetector()
        face = self._local.detector.detect(load_image(path), assume_cropped=True)[0]
        return np.asarray(resize_face(face.image, size) if size != face.image.width else face.image, np.uint8)



def aaf_pack_path(pack: str | os.PathLike[str] | None = None) -> Path:
    """Where the AAF pack is: `pack`, else $AGEKIT_AAF_PACK, else DEFAULT_AAF_PACK (it may not exist)."""
    return Path(pack or os.environ.get(PACK_ENV_VAR) or DEFAULT_AAF_PACK)


def load_aaf_faces(split: str, pack: str | os.PathLike[str] | None = None) -> FaceTensors:
    """One split of the AAF pack (`aaf_pack_path`): faces as the app crops them, checked against the shipped AAF
    manifest. Raises AAFError saying how to build a missing pack."""
    path = aaf_pack_path(pack)
    if not path.is_file():
        raise AAFError(f"All-Age-Faces pack {str(path)!r} not found; build it with: python -m agekit.data aaf-pack "
                       f"AAF_PATH --out {path} (or set {PACK_ENV_VAR})")
    return load_pack(path, split, expected_manifest_hash=load_manifest(DEFAULT_AAF_MANIFEST).hash)
