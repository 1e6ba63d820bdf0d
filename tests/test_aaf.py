"""Tests for the All-Age-Faces source (agekit.data.aaf), masked ethnicity and combining sources, on synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agekit.data import FaceTensors, load_manifest, load_pack, write_pack
from agekit.data.__main__ import main
from agekit.data.aaf import (
    BLOCK_SIZE,
    DEFAULT_AAF_MANIFEST,
    AAFError,
    AAFRecord,
    assign_aaf_splits,
    load_aaf_faces,
    parse_aaf_name,
    read_labels,
    resolve_aaf_root,
)
from agekit.data.dataset import concat_faces
from agekit.data.split import EXCLUDED, SPLITS
from agekit.engine import class_weight_tensors, stratum_weights
from agekit.labels import ETHNICITY_UNKNOWN, GENDER_NAMES
from agekit.losses import MultiTaskLoss


def write_aaf(root: Path, rows: list[tuple[str, int, str]], images: bool = True) -> Path:
    """A tiny AAF-shaped folder: labels.csv + images/ with a distinct picture per file."""
    (root / "images").mkdir(parents=True)
    (root / "labels.csv").write_text("file,age,gender\n" + "".join(f"{f},{a},{g}\n" for f, a, g in rows))
    rng = np.random.default_rng(0)
    for file, _, _ in rows if images else []:
        grid = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(grid).resize((120, 150), Image.Resampling.BICUBIC).save(root / "images" / file, quality=95)
    return root


def test_file_name_parses_number_and_age() -> None:
    assert parse_aaf_name("00012A02.jpg") == (12, 2)
    assert parse_aaf_name("13321A80.jpg") == (13321, 80)
    with pytest.raises(AAFError, match="not an All-Age-Faces file name"):
        parse_aaf_name("1_0_2_x.jpg.chip.jpg")


def test_labels_map_gender_by_name_onto_utkface_codes(tmp_path: Path) -> None:
    root = write_aaf(tmp_path / "aaf", [("00001A20.jpg", 20, "female"), ("00002A31.jpg", 31, "male")], images=False)
    records = read_labels(root)
    assert [(r.file, r.number, r.age, r.gender) for r in records] == [
        ("00001A20.jpg", 1, 20, GENDER_NAMES.index("female")), ("00002A31.jpg", 2, 31, GENDER_NAMES.index("male"))]
    assert GENDER_NAMES.index("female") == 1  # AAF's own code for female is 0: mapped by name, not by code


def test_labels_that_disagree_with_the_file_name_are_refused(tmp_path: Path) -> None:
    root = write_aaf(tmp_path / "a", [("00001A20.jpg", 21, "female")], images=False)
    with pytest.raises(AAFError, match="labels.csv says age 21 but the file name says 20"):
        read_labels(root)
    root = write_aaf(tmp_path / "b", [("00001A20.jpg", 20, "0")], images=False)
    with pytest.raises(AAFError, match="gender '0' is not one of"):
        read_labels(root)


def test_missing_folder_names_flag_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGEKIT_AAF", raising=False)
    with pytest.raises(AAFError, match="--aaf PATH or set AGEKIT_AAF"):
        resolve_aaf_root(None)
    with pytest.raises(AAFError, match="labels.csv is missing"):
        resolve_aaf_root(tmp_path)


def records_of(n: int) -> list[AAFRecord]:
    """n files, numbered 0..n-1, ages and genders sorted like AAF's numbering (gender, then age)."""
    return [AAFRecord(f"{i:05d}A{10 + (i * 60) // n:02d}.jpg", i, 10 + (i * 60) // n, int(i >= n // 2))
            for i in range(n)]


def test_split_keeps_number_blocks_and_copy_groups_together() -> None:
    records = records_of(3000)
    name = [r.file for r in records]
    records[2990] = AAFRecord(name[2990], 2990, records[20].age, records[20].gender)  # same labels as file 20
    near = [(name[3], name[2250]), (name[20], name[2990])]  # the first pair's labels differ, the second's agree
    exact = [[name[100], name[1500]]]  # byte-identical copies with different labels
    frame = assign_aaf_splits(records, exact, near, seed=0)
    split = dict(zip(frame["file"], frame["split"]))
    assert {split[name[i]] for i in (3, 2250, 100, 1500)} == {EXCLUDED}
    assert frame.set_index("file").loc[name[3], "note"].startswith("conflicting labels")
    assert split[name[20]] == split[name[2990]] != EXCLUDED
    assert split[name[21]] == split[name[20]]  # its block follows it
    kept = frame[frame["split"] != EXCLUDED]
    blocks = kept.assign(block=kept["file"].str[:5].astype(int) // BLOCK_SIZE).groupby("block")["split"].nunique()
    assert (blocks == 1).all()  # no block of consecutive numbers straddles two splits
    assert (frame["ethnicity"] == ETHNICITY_UNKNOWN).all()
    shares = kept["split"].value_counts(normalize=True)
    assert set(shares.index) == set(SPLITS) and abs(shares["val"] - 0.1) < 0.03 and abs(shares["test"] - 0.1) < 0.03
    assert frame.equals(assign_aaf_splits(records, exact, near, seed=0))  # deterministic


def test_shipped_manifest_agrees_with_the_labels_when_the_data_is_here() -> None:
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "AAF"
    manifest = load_manifest(DEFAULT_AAF_MANIFEST)
    if not root.is_dir():
        pytest.skip("All-Age-Faces folder not present")
    records = {r.file: r for r in read_labels(root)}
    frame = manifest.frame
    assert sorted(frame["file"]) == sorted(records)
    assert all(records[f].age == a and records[f].gender == g for f, a, g in zip(frame["file"], frame["age"],
                                                                                  frame["gender"]))
    assert (frame["ethnicity"] == ETHNICITY_UNKNOWN).all()


def test_unknown_ethnicity_is_left_out_of_loss_and_weights() -> None:
    torch.manual_seed(0)
    logits = {"gender": torch.randn(4, 2), "ethnicity": torch.randn(4, 5, requires_grad=True)}
    known = torch.tensor([2, 0, ETHNICITY_UNKNOWN, ETHNICITY_UNKNOWN])
    loss = MultiTaskLoss(tasks=("ethnicity",))
    expected = torch.nn.functional.cross_entropy(logits["ethnicity"][:2], known[:2])
    assert torch.allclose(loss.task_loss("ethnicity", logits["ethnicity"], known), expected)
    none_known = loss.task_loss("ethnicity", logits["ethnicity"], torch.full((4,), ETHNICITY_UNKNOWN))
    assert none_known.item() == 0.0
    none_known.backward()  # still part of the graph: a batch of AAF faces only does not break training
    labels = torch.tensor([2, 2, 0, ETHNICITY_UNKNOWN, ETHNICITY_UNKNOWN, ETHNICITY_UNKNOWN])
    weights = class_weight_tensors({"ethnicity": labels}, ("ethnicity",))["ethnicity"]
    assert weights[2] * 2 == weights[0]  # counted from the three known faces only: 2 vs 1
    sampling = stratum_weights({"age": torch.tensor([30, 30, 30, 30]), "ethnicity": known}, "age_bin_ethnicity",
                               "utk7")
    assert torch.allclose(sampling, torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64))


def faces(n: int, size: int, ethnicity: int, hash_: str) -> FaceTensors:
    return FaceTensors(torch.zeros(n, 3, size, size, dtype=torch.uint8), torch.arange(n), torch.zeros(n, dtype=torch.long),
                       torch.full((n,), ethnicity), [f"{hash_}{i}" for i in range(n)], hash_)


def test_sources_combine_in_order_keeping_the_primary_manifest() -> None:
    combined = concat_faces([faces(3, 8, 1, "utk"), faces(2, 8, ETHNICITY_UNKNOWN, "aaf")])
    assert combined.files == ["utk0", "utk1", "utk2", "aaf0", "aaf1"]
    assert combined.ethnicity.tolist() == [1, 1, 1, -1, -1] and combined.manifest_hash == "utk"
    with pytest.raises(ValueError, match="build the packs at one --size"):
        concat_faces([faces(1, 8, 1, "a"), faces(1, 16, 1, "b")])


def test_aaf_split_and_pack_commands_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(f"{i:05d}A{20 + i:02d}.jpg", 20 + i, "female" if i % 2 else "male") for i in range(30)]
    root = write_aaf(tmp_path / "aaf", rows)
    manifest = tmp_path / "aaf_split.csv"
    assert main(["aaf-split", str(root), "--out", str(manifest), "--quiet"]) == 0
    frame = load_manifest(manifest).frame
    assert len(frame) == 30 and set(frame["split"]) <= {*SPLITS}
    # pack with a stand-in for the face path (the real one runs MTCNN; tested in test_faces): centre crop
    def centre(path: Path, size: int) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").crop((0, 15, 120, 135)).resize((size, size)))
    out = tmp_path / "aaf.safetensors"
    write_pack(root / "images", load_manifest(manifest), out, size=32, reader=centre, progress=False)
    train = load_pack(out, "train")
    expected = frame[frame["split"] == "train"]
    assert train.files == expected["file"].tolist() and train.age.tolist() == expected["age"].tolist()
    assert (train.ethnicity == ETHNICITY_UNKNOWN).all()
    assert main(["aaf-split", str(tmp_path / "nowhere")]) == 2


def test_missing_aaf_pack_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(AAFError, match="build it with: python -m agekit.data aaf-pack"):
        load_aaf_faces("val", tmp_path / "none.safetensors")


def test_rebuilt_pack_with_other_crops_is_a_new_face_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are cached by face-set key, and AAF's numbers record which crops they came from: a pack rebuilt by
    another version of the face path (same files, same manifest, other pixels) must not reuse either."""
    from evaluation import model_outputs

    built = faces(4, 8, ETHNICITY_UNKNOWN, "aaf")
    rebuilt = faces(4, 8, ETHNICITY_UNKNOWN, "aaf")
    rebuilt.images[2, 0, 3, 3] = 1  # one pixel of one face
    assert built.images_digest() == faces(4, 8, ETHNICITY_UNKNOWN, "aaf").images_digest()
    assert built.images_digest() != rebuilt.images_digest()
    sets = []
    for pack in (built, rebuilt):
        monkeypatch.setattr(model_outputs, "load_aaf_faces", lambda split, pack=pack: pack)
        [face_set] = model_outputs.aaf_face_sets("test")
        sets.append(face_set)
    assert sets[0].files == sets[1].files and sets[0].key != sets[1].key
    assert [s.provenance["faces_sha256"] for s in sets] == [built.images_digest(), rebuilt.images_digest()]
