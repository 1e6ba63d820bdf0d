"""Duplicates across splits (agekit.data.leakage), conflicting copies from the audit, and load_files, on a tiny
synthetic UTKFace folder (never the real data)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agekit.data import audit_folder, load_files, random_file_split, straddling_groups
from agekit.data.audit import conflicting_copies

A, A_COPY = "5_1_1_20170101000000001.jpg.chip.jpg", "9_0_1_20170101000000002.jpg.chip.jpg"  # same bytes
B, B_NEAR = "20_1_3_20170101000000003.jpg.chip.jpg", "20_0_3_20170101000000004.jpg.chip.jpg"  # re-encoded
C = "70_0_4_20170101000000005.jpg.chip.jpg"
MALFORMED = "39_1_20170116174525125.jpg.chip.jpg"


def picture(seed: int) -> Image.Image:
    grid = np.random.default_rng(seed).integers(40, 216, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(grid, "RGB").resize((200, 200), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("UTKFace")
    (root / A).write_bytes(jpeg(picture(1)))
    shutil.copyfile(root / A, root / A_COPY)
    (root / B).write_bytes(jpeg(picture(2)))
    (root / B_NEAR).write_bytes(jpeg(picture(2), quality=60))
    (root / C).write_bytes(jpeg(picture(3)))
    (root / MALFORMED).write_bytes(jpeg(picture(4)))
    return root


def test_conflicting_copies_names_both_kinds(folder: Path) -> None:
    report = audit_folder(folder, progress=False, sweep=False)
    pairs = conflicting_copies(report)
    assert [(p.kind, p.a, p.b) for p in pairs] == [("byte-identical", A, A_COPY), ("near-duplicate", B_NEAR, B)]
    assert pairs[0].conflict == "age 5 vs 9; gender 0 vs 1" and pairs[0].age_gap == 4
    assert pairs[1].conflict == "gender 0 vs 1" and pairs[1].age_gap == 0


def test_straddling_groups_ignores_excluded_and_unassigned_files() -> None:
    groups = [["a", "b"], ["c", "d", "e"], ["f", "g"]]
    assignment = {"a": "train", "b": "test", "c": "val", "d": "val", "e": "excluded", "f": "test"}
    assert straddling_groups(assignment, groups) == [["a", "b"]]
    assert straddling_groups({**assignment, "e": "train"}, groups) == [["a", "b"], ["c", "d", "e"]]


def test_random_file_split_reports_what_leaks() -> None:
    files = [f"f{i:03d}" for i in range(200)]
    groups = [[files[i], files[i + 1]] for i in range(0, 40, 2)]  # 20 pairs of copies
    split = random_file_split(files, groups, test=0.3, seed=0)
    assert sorted(split.train + split.test) == files and not set(split.train) & set(split.test)
    assert 0.2 < len(split.test) / len(files) < 0.4
    partner = {a: b for a, b in groups} | {b: a for a, b in groups}
    assert split.leaked_test == [f for f in split.test if f in partner and partner[f] in split.train]
    assert split.train_twins == [f for f in split.train if f in partner and partner[f] in split.test]
    assert split.leaked_test  # with 20 pairs and 30 % test, some pair straddles (seeded)
    assert set(split.grouped_train()) == set(split.train) - set(split.train_twins)
    assert random_file_split(files, groups, test=0.3, seed=0) == split
    assert random_file_split(files, groups, test=0.3, seed=1) != split
    with pytest.raises(ValueError, match="fraction"):
        random_file_split(files, groups, test=1.0)


def test_load_files_parses_labels_and_lists_what_it_skips(folder: Path) -> None:
    faces = load_files(folder, [C, A_COPY, MALFORMED], size=32)
    assert faces.files == [C, A_COPY] and faces.images.shape == (2, 3, 32, 32)
    assert faces.age.tolist() == [70, 9] and faces.gender.tolist() == [0, 0] and faces.ethnicity.tolist() == [4, 1]
    assert faces.manifest_hash == ""
    assert [f for f, _ in faces.skipped] == [MALFORMED] and "race field is missing" in faces.skipped[0][1]
    missing = load_files(folder, ["1_0_0_20170101000000099.jpg.chip.jpg"], size=32)
    assert len(missing) == 0 and "No such file" in missing.skipped[0][1]
