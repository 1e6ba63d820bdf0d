"""Tests for agekit.data on a tiny synthetic UTKFace folder (never the real data)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from agekit.data import (
    DEFAULT_MANIFEST,
    DataRootError,
    FaceRecord,
    FaceTensors,
    LabelOutOfRange,
    MalformedName,
    ManifestError,
    PackError,
    assign_splits,
    audit_folder,
    load_folder,
    load_manifest,
    load_pack,
    parse_filename,
    read_face,
    resolve_data_root,
    write_audit,
    write_manifest,
    write_pack,
)
from agekit.data.__main__ import main
from agekit.data.image_hash import dhash, hamming_distance, near_pairs, phash
from agekit.data.pack import decode_image, encode_image, measure_codecs, read_pack
from agekit.data.split import SPLITS, manifest_bytes, split_report
from agekit.data.test_faces import (
    TEST_FACES_NOTICE,
    TEST_FACES_PACK,
    TEST_FACES_SIZE,
    checksum_path,
    file_sha256,
    load_test_faces,
    write_test_faces,
)
from agekit.labels import UTK7

REPO = Path(__file__).resolve().parents[1]


def smooth_face(seed: int, size: int = 200) -> Image.Image:
    """A random smooth RGB picture (an 8x8 colour grid upscaled): distinct seeds give unrelated images."""
    grid = np.random.default_rng(seed).integers(40, 216, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(grid, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def name(age: int, gender: int, race: int, stamp: int) -> str:
    return f"{age}_{gender}_{race}_20170101{stamp:09d}.jpg.chip.jpg"


# Planted folder: 12 clean faces, then one of each defect.
CLEAN = [name(a, g, r, i) for i, (a, g, r) in enumerate(
    [(1, 0, 0), (5, 1, 1), (10, 0, 2), (20, 1, 3), (25, 0, 4), (30, 1, 0),
     (35, 0, 1), (45, 1, 2), (50, 0, 3), (70, 1, 4), (80, 0, 0), (26, 1, 1)])]
EXACT_OK = name(1, 0, 0, 100)  # same bytes as CLEAN[0], same labels
EXACT_CONFLICT = name(9, 1, 1, 101)  # same bytes as CLEAN[1], age 9 instead of 5
NEAR_OK = name(10, 0, 2, 102)  # CLEAN[2] re-encoded at quality 60
NEAR_CONFLICT = name(20, 0, 3, 103)  # CLEAN[3] resized to 120 px, gender 0 instead of 1
MALFORMED = "39_1_20170116174525125.jpg.chip.jpg"  # race field missing, like the real set
AGE_BAD = name(130, 0, 0, 104)
GENDER_BAD = name(30, 2, 0, 105)
NONSTANDARD = "25_0_1_20170116232725357jpg.chip.jpg"  # missing dot, labels still readable
TRUNCATED = name(40, 1, 0, 106)
NOT_IMAGE = "notes.txt"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("UTKFace")
    for i, file in enumerate(CLEAN):
        (root / file).write_bytes(jpeg_bytes(smooth_face(i)))
    shutil.copyfile(root / CLEAN[0], root / EXACT_OK)
    shutil.copyfile(root / CLEAN[1], root / EXACT_CONFLICT)
    (root / NEAR_OK).write_bytes(jpeg_bytes(smooth_face(2), quality=60))
    (root / NEAR_CONFLICT).write_bytes(jpeg_bytes(smooth_face(3).resize((120, 120), Image.Resampling.LANCZOS)))
    for seed, file in enumerate((MALFORMED, AGE_BAD, GENDER_BAD, NONSTANDARD), start=50):
        (root / file).write_bytes(jpeg_bytes(smooth_face(seed)))
    whole = jpeg_bytes(smooth_face(60))
    (root / TRUNCATED).write_bytes(whole[: len(whole) // 2])
    (root / NOT_IMAGE).write_text("not a picture\n")
    (root / ".DS_Store").write_bytes(b"\0\0")  # hidden files are ignored
    return root


@pytest.fixture(scope="module")
def audit(folder: Path):
    return audit_folder(folder, progress=False)


@pytest.fixture(scope="module")
def manifest_path(audit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "split.csv"
    write_manifest(split_report(audit, seed=0, val=0.25, test=0.25), path)
    return path


# ---------------------------------------------------------------- parsing and the folder

def test_parse_good_names() -> None:
    assert parse_filename("26_1_2_20170116174525125.jpg.chip.jpg") == FaceRecord(
        "26_1_2_20170116174525125.jpg.chip.jpg", 26, 1, 2)
    record = parse_filename(Path("/some/where/116_0_4_20170101.jpg.chip.jpg"))
    assert (record.file, record.labels) == ("116_0_4_20170101.jpg.chip.jpg", (116, 0, 4))
    assert parse_filename("0_0_0_x.jpg").labels == (0, 0, 0)
    assert parse_filename(NONSTANDARD).labels == (25, 0, 1)


@pytest.mark.parametrize("bad", ["39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
                                 "notes.txt", "a_1_0_x.jpg", "-3_0_0_x.jpg", "30_1_x_2017.jpg", ""])
def test_parse_malformed_names(bad: str) -> None:
    with pytest.raises(MalformedName, match="not named age_gender_race"):
        parse_filename(bad)


def test_malformed_name_says_race_is_missing() -> None:
    with pytest.raises(MalformedName, match="race field is missing"):
        parse_filename(MALFORMED)


@pytest.mark.parametrize(("bad", "field", "message"), [
    ("117_0_0_x.jpg", "age", "age 117 is outside 0..116"),
    ("30_2_0_x.jpg", "gender", "gender code 2"),
    ("30_0_5_x.jpg", "ethnicity", "race code 5"),
])
def test_parse_labels_out_of_range(bad: str, field: str, message: str) -> None:
    with pytest.raises(LabelOutOfRange, match=message) as info:
        parse_filename(bad)
    assert info.value.field == field
    assert isinstance(info.value, MalformedName)


def test_resolve_data_root(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_root(str(folder)) == folder
    monkeypatch.setenv("AGEKIT_UTKFACE", str(folder))
    assert resolve_data_root(None) == folder
    monkeypatch.delenv("AGEKIT_UTKFACE")
    with pytest.raises(DataRootError, match="no UTKFace folder given.*AGEKIT_UTKFACE"):
        resolve_data_root(None)
    with pytest.raises(DataRootError, match="does not exist"):
        resolve_data_root(tmp_path / "missing")
    (tmp_path / "UTKFace.tar.gz").write_bytes(b"x")
    with pytest.raises(DataRootError, match="not a folder.*unpack it first"):
        resolve_data_root(tmp_path / "UTKFace.tar.gz")
    with pytest.raises(DataRootError, match="no UTKFace images"):
        resolve_data_root(tmp_path)
    (tmp_path / "UTKFace").mkdir()
    with pytest.raises(DataRootError, match="did you mean .*UTKFace"):
        resolve_data_root(tmp_path)


# ---------------------------------------------------------------- perceptual hashes

def test_hashes_survive_reencoding_and_resizing() -> None:
    face = smooth_face(7)
    reencoded = Image.open(io.BytesIO(jpeg_bytes(face, quality=40)))
    resized = face.resize((90, 90), Image.Resampling.LANCZOS)
    other = smooth_face(8)
    for hash_fn in (phash, dhash):
        assert hamming_distance(hash_fn(face), hash_fn(reencoded)) <= 4
        assert hamming_distance(hash_fn(face), hash_fn(resized)) <= 4
        assert hamming_distance(hash_fn(face), hash_fn(other)) >= 12


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[200] = hashes[3] ^ np.uint64(1 << 40)  # 1 bit apart
    found = near_pairs(hashes, max_distance=20, chunk=64)
    expected = [(i, j) for i in range(300) for j in range(i + 1, 300)
                if (int(hashes[i]) ^ int(hashes[j])).bit_count() <= 20]
    assert [tuple(p) for p in found.tolist()] == expected
    assert {(3, 10), (3, 200), (10, 200)} <= set(map(tuple, near_pairs(hashes, 4).tolist()))
    assert hamming_distance(0, 2**64 - 1) == 64


# ---------------------------------------------------------------- audit

def test_audit_finds_exactly_the_planted_defects(audit) -> None:
    found = {(f.file, f.kind) for f in audit.findings}
    assert found == {
        (MALFORMED, "malformed_name"), (NOT_IMAGE, "malformed_name"), (NOT_IMAGE, "unreadable"),
        (TRUNCATED, "unreadable"), (AGE_BAD, "age_out_of_range"), (GENDER_BAD, "gender_out_of_range"),
        (NONSTANDARD, "nonstandard_name"),
        (CLEAN[0], "exact_duplicate"), (EXACT_OK, "exact_duplicate"),
        (CLEAN[1], "exact_duplicate_conflicting_labels"), (EXACT_CONFLICT, "exact_duplicate_conflicting_labels"),
        (CLEAN[2], "near_duplicate"), (NEAR_OK, "near_duplicate"),
        (CLEAN[3], "near_duplicate_conflicting_labels"), (NEAR_CONFLICT, "near_duplicate_conflicting_labels"),
        (NEAR_CONFLICT, "unexpected_format"),
    }
    details = {(f.file, f.kind): f.detail for f in audit.findings}
    assert "truncated" in details[(TRUNCATED, "unreadable")]
    assert "age 5 vs 9" in details[(CLEAN[1], "exact_duplicate_conflicting_labels")]
    assert "gender 0 vs 1" in details[(NEAR_CONFLICT, "near_duplicate_conflicting_labels")]


def test_audit_summary_numbers(audit) -> None:
    s = audit.summary
    assert s["files_read"] == 22  # the hidden file is not read
    assert s["images_decoded"] == 20
    assert (s["malformed_names"], s["unreadable_images"]) == (2, 2)
    assert s["labels_out_of_range"] == {"age": 1, "gender": 1, "ethnicity": 0}
    assert s["exact_duplicates"]["groups"] == 2 and s["exact_duplicates"]["extra_copies"] == 2
    assert s["exact_duplicates"]["groups_with_conflicting_labels"] == 1
    assert s["near_duplicates"]["groups_beyond_exact"] == 2
    assert s["near_duplicates"]["groups_with_conflicting_labels"] == 1
    # 18 files with valid labels: 12 clean + 4 planted copies + nonstandard + truncated (name is fine)
    assert sum(s["class_counts"]["gender"].values()) == 18
    assert sum(s["class_counts"]["age_bin_utk7"].values()) == 18
    assert s["class_counts"]["age_bin_utk7"]["0-2"] == 2  # CLEAN[0] and its copy


def test_write_audit(audit, tmp_path: Path) -> None:
    csv_path, json_path = write_audit(audit, tmp_path / "out")
    rows = pd.read_csv(csv_path, keep_default_na=False)
    assert list(rows.columns) == ["file", "kind", "detail"] and len(rows) == len(audit.findings)
    assert json.loads(json_path.read_text())["files_read"] == 22


# ---------------------------------------------------------------- split policy on the planted folder

def test_split_policy_on_planted_folder(manifest_path: Path) -> None:
    frame = load_manifest(manifest_path).frame.set_index("file")
    assert len(frame) == 22
    excluded = frame[frame["split"] == "excluded"]
    assert set(excluded.index) == {MALFORMED, NOT_IMAGE, TRUNCATED, AGE_BAD, GENDER_BAD, EXACT_OK,
                                   CLEAN[1], EXACT_CONFLICT, CLEAN[3], NEAR_CONFLICT}
    assert frame.loc[EXACT_OK, "note"] == f"duplicate of {CLEAN[0]}"
    assert frame.loc[CLEAN[0], "split"] in SPLITS
    assert frame.loc[CLEAN[1], "note"].startswith("conflicting labels")
    assert frame.loc[TRUNCATED, "note"].startswith("unreadable image")
    assert frame.loc[MALFORMED, "age"] == -1 and frame.loc[MALFORMED, "note"] == "malformed name (labels unknown)"
    assert frame.loc[AGE_BAD, "age"] == -1 and "age 130 is outside 0..116" in frame.loc[AGE_BAD, "note"]
    assert frame.loc[CLEAN[2], "split"] == frame.loc[NEAR_OK, "split"] != "excluded"
    assert frame.loc[CLEAN[2], "dup_group"] == frame.loc[NEAR_OK, "dup_group"] >= 0
    assert frame.loc[CLEAN[5], "dup_group"] == -1


# ---------------------------------------------------------------- split invariants on metadata only

def synthetic_names(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.gamma(3.0, 11.0, n).astype(int), 0, 116)
    return [name(int(a), int(rng.integers(2)), int(rng.choice(5, p=[.45, .2, .15, .15, .05])), i)
            for i, a in enumerate(ages)]


def planted_groups(files: list[str]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Exact groups and near pairs over `files`, some sharing files so union-find has to merge them."""
    exact = [files[i:i + 2] for i in range(0, 120, 4)] + [files[200:203]]
    near = [(files[i], files[i + 1]) for i in range(300, 360, 3)] + [(files[1], files[400]), (files[400], files[401])]
    return exact, near


def test_split_invariants_and_proportions() -> None:
    files = synthetic_names(600)
    exact, near = planted_groups(files)
    frame = assign_splits(files, exact, near, seed=3, val=0.1, test=0.1)
    assert sorted(frame["file"]) == sorted(files) and frame["file"].is_unique  # every file exactly once
    assert set(frame["split"]) <= {*SPLITS, "excluded"}
    for group in [*exact, *near, [files[0], files[1], files[400], files[401]]]:
        kept = frame[frame["file"].isin(group) & (frame["split"] != "excluded")]
        assert kept["split"].nunique() <= 1, f"group {group} straddles splits"
        assert frame[frame["file"].isin(group)]["dup_group"].nunique() == 1
    kept = frame[frame["split"] != "excluded"]
    share = kept["split"].value_counts(normalize=True)
    assert abs(share["val"] - 0.1) <= 0.02 and abs(share["test"] - 0.1) <= 0.02
    bins = UTK7.bin_of(kept["age"].to_numpy())
    for b in np.unique(bins):  # stratification: each populous age bin gets its test share too
        part = kept[bins == b]
        if len(part) >= 60:
            assert abs((part["split"] == "test").mean() - 0.1) <= 0.04


def test_split_is_seeded_and_deterministic() -> None:
    files = synthetic_names(600)
    exact, near = planted_groups(files)
    first = manifest_bytes(assign_splits(files, exact, near, seed=0))
    again = manifest_bytes(assign_splits(list(reversed(files)), exact, near, seed=0))
    other = manifest_bytes(assign_splits(files, exact, near, seed=1))
    assert first == again
    assert first != other


def test_split_excludes_conflicting_groups_and_extra_copies() -> None:
    a, b, c = name(30, 0, 0, 1), name(31, 0, 0, 2), name(30, 0, 0, 3)
    d, e = name(40, 1, 2, 4), name(40, 1, 2, 5)
    frame = assign_splits([a, b, c, d, e], exact_groups=[[a, c], [d, e]], near_pairs=[(a, b)]).set_index("file")
    assert (frame.loc[[a, b, c], "split"] == "excluded").all()  # a~b near-dup with ages 30 vs 31
    assert frame.loc[b, "note"] == "conflicting labels in duplicate group 0: age 30 vs 31"
    assert frame.loc[d, "split"] in SPLITS and frame.loc[e, "note"] == f"duplicate of {d}"


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        assign_splits(synthetic_names(10), val=0.6, test=0.5)


def test_manifest_round_trip_and_hash(tmp_path: Path) -> None:
    frame = assign_splits(synthetic_names(50), seed=0)
    digest = write_manifest(frame, tmp_path / "m.csv")
    loaded = load_manifest(tmp_path / "m.csv")
    assert loaded.hash == digest == hashlib.sha256((tmp_path / "m.csv").read_bytes()).hexdigest()
    pd.testing.assert_frame_equal(loaded.frame, frame)
    assert sum(loaded.counts().values()) == 50
    assert loaded.files("test") == frame[frame["split"] == "test"]["file"].tolist()


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read split manifest.*python -m agekit.data split"):
        load_manifest(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("file,age\nx.jpg,3\n")
    with pytest.raises(ManifestError, match="lacks manifest columns"):
        load_manifest(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("file,age,gender,ethnicity,split,dup_group,note\nx.jpg,3,0,0,holdout,-1,\n")
    with pytest.raises(ManifestError, match="unknown split values"):
        load_manifest(tmp_path / "bad2.csv")


def test_shipped_manifest_is_consistent() -> None:
    manifest = load_manifest()
    assert manifest.path == DEFAULT_MANIFEST
    assert manifest.hash == hashlib.sha256(DEFAULT_MANIFEST.read_bytes()).hexdigest()
    frame = manifest.frame
    kept = frame[frame["split"] != "excluded"]
    assert (kept[["age", "gender", "ethnicity"]] >= 0).all().all()
    grouped = kept[kept["dup_group"] >= 0]
    assert (grouped.groupby("dup_group")["split"].nunique() == 1).all()
    assert (REPO / "agekit/data/manifests/utkface_audit.json").is_file()


# ---------------------------------------------------------------- pack and tensors

def test_codec_round_trip() -> None:
    pixels = np.asarray(smooth_face(3, 64))
    for codec in ("webp", "jpeg"):
        decoded = decode_image(encode_image(pixels, codec, 90))
        assert decoded.shape == (64, 64, 3) and np.abs(decoded.astype(int) - pixels).mean() < 3
    with pytest.raises(ValueError, match="unknown codec"):
        encode_image(pixels, "gif", 90)


def test_pack_round_trip_matches_folder(folder: Path, manifest_path: Path, tmp_path: Path) -> None:
    manifest = load_manifest(manifest_path)
    summary = write_pack(folder, manifest, tmp_path / "p.safetensors", size=64, quality=90, progress=False)
    assert summary.images == len(manifest.frame) - manifest.counts()["excluded"] and not summary.skipped
    assert not (tmp_path / "p.safetensors.partial").exists()
    raw = (tmp_path / "p.safetensors").read_bytes()
    assert b"pickle" not in raw and b"__reduce__" not in raw
    for split in SPLITS:
        packed = load_pack(tmp_path / "p.safetensors", split, expected_manifest_hash=manifest.hash)
        direct = load_folder(folder, manifest, split, size=64)
        assert packed.files == direct.files == manifest.files(split)
        for task in ("age", "gender", "ethnicity"):
            assert torch.equal(packed.targets[task], direct.targets[task])
        assert packed.images.shape == (len(packed), 3, 64, 64) and packed.images.dtype == torch.uint8
        if len(packed):
            assert (packed.images.float() - direct.images.float()).abs().mean() < 3.0
        assert packed.manifest_hash == direct.manifest_hash == manifest.hash
    assert len(load_pack(tmp_path / "p.safetensors")) == summary.images


def test_unreadable_files_are_listed_not_dropped(folder: Path, manifest_path: Path, tmp_path: Path) -> None:
    frame = load_manifest(manifest_path).frame.copy()
    frame.loc[frame["file"] == TRUNCATED, "split"] = "test"  # force the broken file into a split
    write_manifest(frame, tmp_path / "m.csv")
    manifest = load_manifest(tmp_path / "m.csv")
    direct = load_folder(folder, manifest, "test", size=32)
    assert [f for f, _ in direct.skipped] == [TRUNCATED] and TRUNCATED not in direct.files
    summary = write_pack(folder, manifest, tmp_path / "p.safetensors", size=32, progress=False)
    assert [f for f, _ in summary.skipped] == [TRUNCATED]
    packed = load_pack(tmp_path / "p.safetensors", "test")
    assert [f for f, _ in packed.skipped] == [TRUNCATED] and packed.files == direct.files


def test_pack_errors(tmp_path: Path, manifest_path: Path, folder: Path) -> None:
    with pytest.raises(PackError, match="not found.*python -m agekit.data pack"):
        read_pack(tmp_path / "none.safetensors")
    save_file({"x": np.zeros(3, np.uint8)}, str(tmp_path / "other.safetensors"), metadata={"a": "b"})
    with pytest.raises(PackError, match="not an agekit face pack"):
        read_pack(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00junk!")
    with pytest.raises(PackError, match="not a readable safetensors pack"):
        read_pack(tmp_path / "junk.safetensors")
    manifest = load_manifest(manifest_path)
    write_pack(folder, manifest, tmp_path / "p.safetensors", size=32, splits=["val"], progress=False)
    with pytest.raises(PackError, match="was built from manifest"):
        load_pack(tmp_path / "p.safetensors", "val", expected_manifest_hash="0" * 64)
    assert len(load_pack(tmp_path / "p.safetensors", "train")) == 0
    with pytest.raises(ValueError, match="unknown splits"):
        write_pack(folder, manifest, tmp_path / "q.safetensors", splits=["excluded"], progress=False)


def test_measure_codecs(folder: Path) -> None:
    table = measure_codecs(folder, CLEAN[:3], sizes=(64,), settings=(("jpeg", 90), ("webp", 90)), progress=False)
    assert list(table["codec"]) == ["jpeg", "webp"] and (table["psnr_db"] > 30).all()
    assert (table["mean_bytes"] > 0).all()


def test_face_tensors_targets_and_subset() -> None:
    n = 5
    faces = FaceTensors(torch.arange(n * 3 * 4 * 4, dtype=torch.int32).reshape(n, 3, 4, 4).to(torch.uint8),
                        torch.tensor([1, 20, 30, 40, 50]), torch.tensor([0, 1, 0, 1, 0]),
                        torch.tensor([0, 1, 2, 3, 4]), [f"f{i}" for i in range(n)], "abc", [("bad", "why")])
    assert len(faces) == 5 and set(faces.targets) == {"age", "gender", "ethnicity"}
    picked = faces.subset([3, 1])
    assert picked.files == ["f3", "f1"] and picked.age.tolist() == [40, 20]
    assert torch.equal(picked.images[0], faces.images[3]) and picked.skipped == [("bad", "why")]
    assert faces.subset(faces.gender == 1).files == ["f1", "f3"]
    assert faces.subset(slice(0, 2)).files == ["f0", "f1"]
    assert faces.subset(np.array([4])).manifest_hash == "abc"
    with pytest.raises(ValueError, match="rows but there are"):
        FaceTensors(faces.images, faces.age[:2], faces.gender, faces.ethnicity, faces.files, "abc")
    with pytest.raises(ValueError, match="uint8"):
        FaceTensors(faces.images.float(), faces.age, faces.gender, faces.ethnicity, faces.files, "abc")


# ---------------------------------------------------------------- the test-face pack shipped in the repository

def test_shipped_test_faces_are_the_manifest_test_split() -> None:
    faces = load_test_faces()  # checks the recorded sha256, the manifest hash and that every row is a test face
    test_rows = load_manifest().rows("test")
    assert len(faces) == len(test_rows) == 2216 and not faces.pack.skipped
    assert faces.pack.files == test_rows["file"].tolist()
    for task in ("age", "gender", "ethnicity"):
        assert getattr(faces.pack, task).tolist() == test_rows[task].tolist()
    assert faces.pack.size == TEST_FACES_SIZE and faces.pack.codec == "webp"
    first, last = test_rows["file"].iloc[0], test_rows["file"].iloc[-1]
    assert faces.image(first).shape == faces.image(last).shape == (TEST_FACES_SIZE, TEST_FACES_SIZE, 3)
    assert checksum_path(TEST_FACES_PACK).read_text() == f"{file_sha256(TEST_FACES_PACK)}  {TEST_FACES_PACK.name}\n"
    assert TEST_FACES_PACK.stat().st_size <= 6_000_000


def test_shipped_test_faces_carry_the_utkface_licence_notice() -> None:
    assert TEST_FACES_NOTICE.parent == TEST_FACES_PACK.parent
    notice = TEST_FACES_NOTICE.read_text()
    for must in ("non-commercial research purposes only", "copyright belongs to the original owners",
                 "removal", "python -m agekit.data test-faces"):
        assert must in notice
    assert "non-commercial research" in (REPO / "README.md").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(TEST_FACES_PACK)], cwd=REPO, check=False)
    assert ignored.returncode == 1  # not ignored by .gitignore (0 would mean ignored)


def test_test_face_pack_round_trip_and_tamper_checks(folder: Path, manifest_path: Path, tmp_path: Path) -> None:
    manifest = load_manifest(manifest_path)
    pack = tmp_path / "faces" / "test.safetensors"
    summary = write_test_faces(folder, manifest, pack, size=48, progress=False)
    faces = load_test_faces(pack, manifest)
    assert summary.images == len(faces) == len(manifest.files("test")) > 0
    file = manifest.files("test")[0]
    assert file in faces and "nope.jpg" not in faces
    assert np.abs(faces.image(file).astype(int) - read_face(folder / file, 48)).mean() < 6  # WebP loss only
    with pytest.raises(PackError, match="built from split manifest"):
        load_test_faces(pack)  # the shipped manifest is another one
    raw = bytearray(pack.read_bytes())
    raw[-1] ^= 0xFF
    pack.write_bytes(bytes(raw))
    with pytest.raises(PackError, match="does not match its recorded sha256.*python -m agekit.data test-faces"):
        load_test_faces(pack, manifest)
    checksum_path(pack).unlink()
    with pytest.raises(PackError, match="test.safetensors.sha256 is missing"):
        load_test_faces(pack, manifest)


# ---------------------------------------------------------------- command line

def test_cli_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["audit", str(tmp_path / "missing")], ["split", str(tmp_path)],
                 ["pack", str(tmp_path / "missing")], ["info", str(tmp_path / "none.safetensors")],
                 ["test-faces", str(tmp_path / "missing"), "--out", str(tmp_path / "t.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_subprocess_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agekit.data", "audit", str(tmp_path / "nope")], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_cli_audit_split_pack(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(folder), "--out", str(tmp_path / "audit"), "--quiet"]) == 0
    assert "exact duplicates" in capsys.readouterr().out
    assert (tmp_path / "audit" / "utkface_audit.json").is_file()
    manifest = tmp_path / "split.csv"
    assert main(["split", str(folder), "--out", str(manifest), "--quiet", "--val", "0.2", "--test", "0.2"]) == 0
    assert "sha256" in capsys.readouterr().out
    pack = tmp_path / "p.safetensors"
    assert main(["pack", str(folder), "--manifest", str(manifest), "--out", str(pack), "--size", "32",
                 "--quiet"]) == 0
    assert main(["info", str(pack), "--decode"]) == 0
    assert "decode train" in capsys.readouterr().out


def test_cli_pack_of_chosen_splits(folder: Path, manifest_path: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # a train+val pack (what training.gpu_zoo carries to the GPU machine) holds no test face
    pack = tmp_path / "trainval.safetensors"
    assert main(["pack", str(folder), "--manifest", str(manifest_path), "--out", str(pack), "--size", "32",
                 "--splits", "train, val", "--quiet"]) == 0
    manifest = load_manifest(manifest_path)
    stored = read_pack(pack)
    assert sorted(stored.files + [file for file, _ in stored.skipped]) == sorted(
        manifest.files("train") + manifest.files("val"))
    assert manifest.files("test") and not set(manifest.files("test")) & set(stored.files)
    assert set(stored.split.tolist()) == {0, 1} and len(load_pack(pack, "test")) == 0
    capsys.readouterr()
    assert main(["pack", str(folder), "--manifest", str(manifest_path), "--out", str(tmp_path / "x.safetensors"),
                 "--splits", "train,tset", "--quiet"]) == 2
    assert "error: unknown splits ['tset']; choose from ['train', 'val', 'test']" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
