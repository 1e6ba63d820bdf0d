"""Grouped, stratified train/val/test split of UTKFace written as a manifest CSV.

Manifest columns: file, age, gender, ethnicity, split, dup_group, note — one row per file in the folder,
sorted by file name; split is train, val, test or excluded; labels are -1 where unknown or invalid
(malformed names, codes out of range — the note says which); dup_group is the id of the duplicate group
(exact and near copies, see audit.py) or -1 for files without copies.

Policy (the defects are documented in shared/data/README.md):

- malformed names (labels unknown), labels out of range and unreadable images -> excluded, with the reason;
- duplicate groups are built with union-find over byte-identical copies AND near-duplicates (same
  photograph re-encoded / resized / recoloured / watermarked). A group never straddles two splits;
- a group whose files carry different labels -> every file excluded ("conflicting labels ..."),
  because which label is true is unknown;
- a group with consistent labels: of each set of byte-identical copies only the first name (sorted)
  is kept, the others are excluded with "duplicate of <file>"; near-duplicate variants (different
  bytes) are all kept, in the same split, noted "near-duplicate group";
- the kept groups are assigned to splits stratified by UTK7 age bin x gender x ethnicity. Strata with
  fewer than ceil(1 / min(val, test)) files are pooled: first ethnicity is dropped, then gender, then
  the age bin. Inside a stratum the groups are shuffled (seeded) and cut by systematic sampling with a
  random start, so each stratum gets its val/test share up to one group.

Same seed and same folder -> byte-identical manifest. `load_manifest()` returns it with the sha256 of
its bytes, the value stored in ModelCard.split_hash.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agekit.data.audit import (
    DEFAULT_RULE,
    AuditReport,
    NearDuplicateRule,
    audit_folder,
    connected_groups,
    label_conflict,
)
from agekit.data.utkface import (
    FaceRecord,
    LabelOutOfRange,
    MalformedName,
    parse_filename,
)
from agekit.labels import UTK7

SPLITS: tuple[str, ...] = ("train", "val", "test")
EXCLUDED = "excluded"
MANIFEST_COLUMNS: tuple[str, ...] = ("file", "age", "gender", "ethnicity", "split", "dup_group", "note")
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "manifests" / "utkface_split.csv"


class ManifestError(ValueError):
    """A manifest file that is missing or does not have the expected columns and values."""


@dataclass(frozen=True)
class SplitManifest:
    """A loaded split manifest: the table, where it came from and the sha256 hex of its bytes."""

    frame: pd.DataFrame
    path: Path
    hash: str

    def rows(self, split: str) -> pd.DataFrame:
        """Rows of one split ('train', 'val', 'test', 'excluded') in manifest (file-name) order."""
        if split not in (*SPLITS, EXCLUDED):
            raise ValueError(f"unknown split {split!r}; choose from {[*SPLITS, EXCLUDED]}")
        return self.frame[self.frame["split"] == split]

    def files(self, split: str) -> list[str]:
        """File names of one split in manifest order."""
        return self.rows(split)["file"].tolist()

    def counts(self) -> dict[str, int]:
        """Number of files per split, excluded included."""
        counts = self.frame["split"].value_counts()
        return {s: int(counts.get(s, 0)) for s in (*SPLITS, EXCLUDED)}


def check_fractions(val: float, test: float) -> None:
    """Raise ValueError unless val and test are fractions in [0, 1) that leave a training set (val + test < 1)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be fractions in [0, 1) with val + test < 1")


def stratum_keys(labels: Sequence[tuple[int, int, int]], sizes: Sequence[int], min_files: int) -> list[tuple]:
    """Stratum key per unit: (level, key) with key = (age bin, gender, ethnicity) truncated by pooling level.

    labels: (age, gender, ethnicity) per unit; sizes: files per unit. A stratum with fewer than `min_files` files
    is pooled into the coarser one (bin x gender, then bin, then everything) so val and test can get a share.
    """
    full = [(int(UTK7.bin_of(age)), gender, ethnicity) for age, gender, ethnicity in labels]
    keys: list[tuple] = [()] * len(full)
    pending = list(range(len(full)))
    for level in range(4):  # 0: bin x gender x ethnicity, 1: bin x gender, 2: bin, 3: everything
        totals: dict[tuple, int] = {}
        for i in pending:
            totals[full[i][: 3 - level]] = totals.get(full[i][: 3 - level], 0) + sizes[i]
        still = []
        for i in pending:
            key = full[i][: 3 - level]
            if totals[key] >= min_files or level == 3:
                keys[i] = (level, key)
            else:
                still.append(i)
        pending = still
    return keys


def allocate_splits(sizes: Sequence[int], keys: Sequence[tuple], val: float, test: float,
                    rng: np.random.Generator) -> list[str]:
    """Split name per unit ("train", "val" or "test"): shuffle each stratum (keys, as from stratum_keys), then
    systematic sampling with a random start, so each stratum gives val and test their fractions of its files."""
    out = ["train"] * len(sizes)
    by_key: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    for key in sorted(by_key):
        members = [by_key[key][j] for j in rng.permutation(len(by_key[key]))]
        member_sizes = np.array([sizes[i] for i in members], dtype=np.float64)
        total = member_sizes.sum()
        start = np.cumsum(member_sizes) - member_sizes + rng.random()  # in files
        for i, position in zip(members, start):
            if position < total * test:
                out[i] = "test"
            elif position < total * (test + val):
                out[i] = "val"
    return out


def assign_splits(files: Sequence[str], exact_groups: Iterable[Sequence[str]] = (),
                  near_pairs: Iterable[Sequence[str]] = (), unreadable: Mapping[str, str] | None = None,
                  seed: int = 0, val: float = 0.1, test: float = 0.1) -> pd.DataFrame:
    """The manifest table for `files` (names only, labels parsed from them) under the module's policy.

    exact_groups: sets of byte-identical files; near_pairs: pairs (or groups) of near-duplicate files;
    unreadable: file -> reason for images that could not be decoded. Needs no image access, so it can be
    tested on metadata alone. Returns a DataFrame with MANIFEST_COLUMNS sorted by file.
    """
    check_fractions(val, test)
    files = sorted(set(files))
    exact_groups = [sorted(g) for g in exact_groups if len(g) > 1]
    unreadable = dict(unreadable or {})
    records: dict[str, FaceRecord] = {}
    rows: dict[str, dict] = {}
    for file in files:
        row = {"file": file, "age": -1, "gender": -1, "ethnicity": -1, "split": EXCLUDED, "dup_group": -1, "note": ""}
        try:
            record = parse_filename(file)
            row.update(age=record.age, gender=record.gender, ethnicity=record.ethnicity)
            if file in unreadable:
                row["note"] = f"unreadable image: {unreadable[file]}"
            else:
                records[file] = record
        except LabelOutOfRange as err:
            row["note"] = f"label out of range: {str(err).split(': ', 1)[-1]}"
        except MalformedName:
            row["note"] = "malformed name (labels unknown)"
        rows[file] = row

    groups = connected_groups(files, [*exact_groups, *near_pairs])
    first_copy: dict[str, str] = {}  # file -> the copy kept among its byte-identical copies
    for copies in exact_groups:
        usable = [f for f in copies if f in records]
        for file in copies:
            first_copy[file] = usable[0] if usable else copies[0]
    units: list[list[str]] = []
    grouped: set[str] = set()
    for number, group in enumerate(groups):
        grouped.update(group)
        for file in group:
            rows[file]["dup_group"] = number
        eligible = [f for f in group if f in records]
        conflict = label_conflict(eligible, records)
        if conflict:
            for file in eligible:
                rows[file]["note"] = f"conflicting labels in duplicate group {number}: {conflict}"
            continue
        kept = []
        for file in eligible:
            if first_copy.get(file, file) != file:
                rows[file]["note"] = f"duplicate of {first_copy[file]}"
            else:
                kept.append(file)
        n_images = len({first_copy.get(f, f) for f in eligible})  # distinct pictures among usable files
        for file in kept:
            rows[file]["note"] = (f"near-duplicate group {number}, kept in one split" if n_images > 1
                                  else "kept copy; byte-identical copies excluded")
        if kept:
            units.append(kept)
    units += [[f] for f in records if f not in grouped]

    units.sort(key=lambda u: u[0])
    sizes = [len(u) for u in units]
    labels = [records[u[0]].labels for u in units]
    positive = [f for f in (val, test) if f > 0]
    min_files = math.ceil(1 / min(positive)) if positive else 1
    keys = stratum_keys(labels, sizes, min_files)
    for unit, split in zip(units, allocate_splits(sizes, keys, val, test, np.random.default_rng(seed))):
        for file in unit:
            rows[file]["split"] = split
    return pd.DataFrame([rows[f] for f in files], columns=list(MANIFEST_COLUMNS))


def split_report(report: AuditReport, seed: int = 0, val: float = 0.1, test: float = 0.1) -> pd.DataFrame:
    """assign_splits fed with what an audit found (names, exact copies, near-duplicates, unreadable files)."""
    return assign_splits(report.files, report.exact_groups, [(p.a, p.b) for p in report.near_pairs],
                         report.unreadable, seed=seed, val=val, test=test)


def split_folder(root: Path, seed: int = 0, val: float = 0.1, test: float = 0.1,
                 rule: NearDuplicateRule = DEFAULT_RULE, workers: int = 2,
                 progress: bool = True) -> tuple[pd.DataFrame, AuditReport]:
    """Audit `root` (a resolved UTKFace folder) and split it; returns the manifest table and the audit."""
    check_fractions(val, test)
    report = audit_folder(root, rule=rule, workers=workers, progress=progress, sweep=False)
    return split_report(report, seed=seed, val=val, test=test), report


def manifest_bytes(frame: pd.DataFrame) -> bytes:
    """The exact CSV bytes of a manifest table (UTF-8, '\\n' line ends, minimal quoting)."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"manifest table lacks columns {missing}")
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    writer = csv.writer(_Sink(), lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in frame[list(MANIFEST_COLUMNS)].itertuples(index=False):
        writer.writerow([row.file, int(row.age), int(row.gender), int(row.ethnicity), row.split,
                         int(row.dup_group), row.note])
    return "".join(lines).encode("utf-8")


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Write the manifest CSV to `path` (folders created); returns the sha256 hex of the bytes written."""
    data = manifest_bytes(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_manifest(path: str | os.PathLike[str] | None = None) -> SplitManifest:
    """Read a split manifest (default: the one shipped with agekit) and hash its bytes.

    Raises ManifestError when the file is missing or malformed.
    """
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(
            f"cannot read split manifest {str(path)!r} ({err.strerror or err}); "
            "create one with: python -m agekit.data split PATH --out FILE"
        ) from None
    try:
        frame = pd.read_csv(path, dtype={"file": str, "split": str, "note": str}, keep_default_na=False,
                            na_filter=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise ManifestError(f"{str(path)!r} is not a readable manifest CSV: {err}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{str(path)!r} lacks manifest columns {missing}; expected {list(MANIFEST_COLUMNS)}")
    for column in ("age", "gender", "ethnicity", "dup_group"):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise ManifestError(f"{str(path)!r}: column {column!r} must hold integers")
        frame[column] = frame[column].astype(np.int64)
    bad = sorted(set(frame["split"]) - {*SPLITS, EXCLUDED})
    if bad:
        raise ManifestError(f"{str(path)!r}: unknown split values {bad}; expected {[*SPLITS, EXCLUDED]}")
    if frame["file"].duplicated().any():
        raise ManifestError(f"{str(path)!r}: file names repeat; each file must appear once")
    return SplitManifest(frame[list(MANIFEST_COLUMNS)], path, hashlib.sha256(data).hexdigest())


def describe_split(frame: pd.DataFrame) -> str:
    """Text table: files per split, share of the kept files, UTK7 bins per split, exclusion reasons."""
    kept = frame[frame["split"] != EXCLUDED]
    lines = [f"{'split':<9}{'files':>7}{'share':>8}   " + " ".join(f"{n:>6}" for n in UTK7.names)]
    for split in SPLITS:
        part = kept[kept["split"] == split]
        bins = np.bincount(UTK7.bin_of(part["age"].to_numpy()), minlength=len(UTK7)) if len(part) else [0] * len(UTK7)
        share = len(part) / max(len(kept), 1)
        lines.append(f"{split:<9}{len(part):>7,}{share:>8.1%}   " + " ".join(f"{b:>6,}" for b in bins))
    excluded = frame[frame["split"] == EXCLUDED]
    lines.append(f"{EXCLUDED:<9}{len(excluded):>7,}")
    reasons = excluded["note"].map(exclusion_reason)
    for reason, count in reasons.value_counts().sort_index().items():
        lines.append(f"    {count:>6,}  {reason}")
    return "\n".join(lines)


def exclusion_reason(note: str) -> str:
    """The category of an excluded row's note, without file names or group numbers."""
    if note.startswith("conflicting labels"):
        return "conflicting labels in a duplicate group"
    if note.startswith("duplicate of"):
        return "extra byte-identical copy"
    return note.split(":")[0]
