"""evaluation.wild end to end on a tiny synthetic split, tiny checkpoints and a detector that finds every other face."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agekit.data import load_manifest, write_manifest
from agekit.data.split import MANIFEST_COLUMNS
from agekit.eval_artifacts import WILD_PREDICTIONS_FILE, wild_headline
from agekit.faces import UTK_LANDMARKS, FaceDetector
from agekit.ui import testset
from agekit.ui.model_info import ranking_mae
from evaluation import evaluate, wild
from evaluation.evaluate import LEADERBOARD_COLUMNS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 test and 4 val JPEGs (64 px, valid UTKFace names) and their manifest."""
    root = tmp_path_factory.mktemp("utkface")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        age, gender, ethnicity = int(rng.integers(1, 90)), i % 2, i % 5
        name = f"{age}_{gender}_{ethnicity}_20170104000000{i:03d}.jpg.chip.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / name, quality=90)
        rows.append([name, age, gender, ethnicity, "test" if i < 8 else "val", -1, ""])
    manifest = root.parent / "split.csv"
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("file"), manifest)
    return root, manifest


@pytest.fixture()
def half_blind_detector(monkeypatch: pytest.MonkeyPatch) -> FaceDetector:
    """A FaceDetector whose MTCNN step is replaced: for every even-numbered rendered face it reports one face at
    the rendered placement (template landmarks scaled to it) plus a decoy in the corner; odd faces are missed."""
    rendered: list = []
    real_render = wild.render_wild

    def recording_render(chip, seed, index):
        result = real_render(chip, seed, index)
        rendered.append(result.params)
        return result

    def find_faces(image):
        p = rendered[-1]
        if p.index % 2:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        (x, y), w = p.face_centre, p.face_width
        box = [x - w / 2, y - w / 2, x + w / 2, y + w / 2]
        landmarks = (UTK_LANDMARKS - 100.0) / 168.0 * w + (x, y)
        decoy = [0, 0, 30, 30]
        return (np.array([box, decoy], np.float32), np.array([0.99, 0.95], np.float32),
                np.stack([landmarks, landmarks * 0.1]).astype(np.float32))

    monkeypatch.setattr(wild, "render_wild", recording_render)
    detector = FaceDetector()
    monkeypatch.setattr(detector, "find_faces", find_faces)
    return detector


def checkpoints_with_clean_eval(tmp_path: Path, dataset: tuple[Path, Path], save_tiny) -> Path:
    folder = tmp_path / "checkpoints"
    split_hash = load_manifest(dataset[1]).hash
    save_tiny(folder / "tiny_multi", family="multitask", input_size=24, split_hash=split_hash)
    save_tiny(folder / "tiny_gender", tasks=("gender",), input_size=24, split_hash=split_hash, seed=1)
    assert evaluate.main(["--checkpoints", str(folder), "--data", str(dataset[0]), "--manifest", str(dataset[1]),
                          "--threads", "1", "--latency-runs", "1", "--decode-size", "64"]) == 0
    return folder


def run_wild(dataset, checkpoints: Path, detector: FaceDetector, cache: Path, *extra: str) -> int:
    argv = ["--checkpoints", str(checkpoints), "--data", str(dataset[0]), "--manifest", str(dataset[1]),
            "--threads", "1", "--decode-size", "64", *extra]
    options = wild.parse_args(argv)
    options.cache_dir = cache
    table = wild.evaluate_wild(options, detector)
    print(wild.format_table(table))
    return len(table)


def test_test_split_writes_wild_sections_and_leaderboard_columns(dataset, tmp_path, save_tiny, half_blind_detector,
                                                                capsys) -> None:
    checkpoints = checkpoints_with_clean_eval(tmp_path, dataset, save_tiny)
    assert run_wild(dataset, checkpoints, half_blind_detector, tmp_path / "cache") == 2
    test_files = load_manifest(dataset[1]).files("test")
    report = json.loads((checkpoints / "tiny_multi" / "eval" / "metrics.json").read_text())
    section = report["wild"]
    assert (section["n_faces"], section["n_detected"], section["detection_rate"]) == (8, 4, 0.5)
    assert section["missed"] == test_files[1::2]  # the odd faces: missed detections are counted, not dropped
    assert section["aligned_share"] == 1.0 and section["align"] is True and section["split"] == "test"
    assert section["metrics"]["n"] == 4 and section["clean_same_faces"]["age_mae"] >= 0
    assert report["metrics"]["n"] == 8  # the clean evaluation is untouched
    wild_rows = pd.read_csv(checkpoints / "tiny_multi" / "eval" / WILD_PREDICTIONS_FILE)
    assert list(wild_rows["file"]) == test_files[0::2]
    gender_only = json.loads((checkpoints / "tiny_gender" / "eval" / "metrics.json").read_text())["wild"]
    assert gender_only["metrics"]["tasks"] == ["gender"]

    board = pd.read_csv(checkpoints / "leaderboard.csv").set_index("name")
    assert list(board.reset_index().columns) == list(LEADERBOARD_COLUMNS)
    headline = wild_headline(report)
    assert board.loc["tiny_multi", "wild_detection_rate"] == 0.5
    assert board.loc["tiny_multi", "wild_mae"] == pytest.approx(headline["age_mae"])
    assert np.isnan(board.loc["tiny_gender", "wild_mae"])  # no age head
    assert "50.0%" in capsys.readouterr().out
    shown = testset.headline_markdown(testset.read_model_eval(checkpoints, "tiny_multi"))  # the Test-set tab
    clean = report["metrics"]["headline"]
    assert (f"aligned crops): detection 50.0% · age MAE {clean['age_mae']:.2f} → {headline['age_mae']:.2f} · "
            f"age-bin macro-F1 {clean['age_bin_macro_f1']:.1%} → {headline['age_bin_macro_f1']:.1%}") in shown
    assert testset.wild_markdown({"metrics": {"headline": clean}}) == ""  # not evaluated wild: nothing shown

    # --no-align reads the same detections from the cache and box-crops them: same faces, other crops
    run_wild(dataset, checkpoints, half_blind_detector, tmp_path / "cache", "--no-align")
    boxed = json.loads((checkpoints / "tiny_multi" / "eval" / "metrics.json").read_text())["wild"]
    assert boxed["align"] is False and boxed["aligned_share"] == 0.0 and boxed["missed"] == section["missed"]
    assert boxed["detect_s"] == 0.0  # read from the cache


def test_val_split_writes_only_the_val_section(dataset, tmp_path, save_tiny, half_blind_detector) -> None:
    checkpoints = checkpoints_with_clean_eval(tmp_path, dataset, save_tiny)
    before = json.loads((checkpoints / "tiny_multi" / "eval" / "metrics.json").read_text())
    run_wild(dataset, checkpoints, half_blind_detector, tmp_path / "cache", "--split", "val")
    after = json.loads((checkpoints / "tiny_multi" / "eval" / "metrics.json").read_text())
    assert {k: v for k, v in after.items() if k != "val"} == before  # test metrics untouched, no wild section
    table = pd.read_csv(tmp_path / "cache" / "val_align.csv").set_index("model")
    assert list(table["detection"]) == [0.5, 0.5] and set(table.index) == {"tiny_multi", "tiny_gender"}
    val = after["val"]
    assert val["detection_rate"] == 0.5
    assert val["clean"]["age_mae"] == pytest.approx(table.loc["tiny_multi", "clean_age_mae"])
    assert val["wild"]["age_mae"] == pytest.approx(table.loc["tiny_multi", "wild_age_mae"])
    assert ranking_mae(after) == pytest.approx((val["clean"]["age_mae"] + val["wild"]["age_mae"]) / 2)


def test_wild_before_clean_evaluation_is_a_clear_error(dataset, tmp_path, save_tiny, half_blind_detector) -> None:
    folder = tmp_path / "checkpoints"
    save_tiny(folder / "tiny_multi", input_size=24, split_hash=load_manifest(dataset[1]).hash)
    with pytest.raises(ValueError, match="run `python -m evaluation.evaluate` before the wild evaluation"):
        run_wild(dataset, folder, half_blind_detector, tmp_path / "cache")


def test_nearest_face_ignores_detections_away_from_the_placement() -> None:
    boxes = np.array([[0, 0, 20, 20], [90, 90, 110, 110]], np.float32)
    assert wild.nearest_face(boxes, (101.0, 99.0), 40.0) == 1
    assert wild.nearest_face(boxes, (150.0, 150.0), 40.0) is None  # 57 px > half the face width
    assert wild.nearest_face(np.zeros((0, 4)), (1.0, 1.0), 40.0) is None
