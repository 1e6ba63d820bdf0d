"""evaluation.run end to end: every step on a tiny synthetic split with tiny checkpoints and a detector that finds
every other face; --check; re-running steps in any order; and, when UTKFace is here, --check of a shipped model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import utkface_folder
from PIL import Image

from agekit.artifacts import (
    LEADERBOARD_COLUMNS,
    REPO_ROOT,
    TEST_SECTION,
    read_metrics,
    section_of,
    val_age_mae,
    wild_headline,
    write_section,
)
from agekit.card import ModelCard
from agekit.data import load_manifest, write_manifest
from agekit.data.aaf import PACK_ENV_VAR as AAF_PACK_ENV
from agekit.data.split import MANIFEST_COLUMNS
from agekit.faces import UTK_LANDMARKS, FaceDetector
from agekit.training_log import LOG_FILE, write_log
from agekit.ui import testset
from agekit.ui.model_info import committed_metrics, ranking_mae
from evaluation import flip_ablation, run, wild
from evaluation.run import CHECK_TOLERANCE, STEPS, WILD_TOLERANCE, differences

BROKEN = "33_1_2_20170104000000099.jpg.chip.jpg"  # a test file whose bytes are not a JPEG
WRITING_STEPS = [step.name for step in STEPS if step.writes]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 test JPEGs (plus one unreadable), 6 val and 10 train, 64 px with valid UTKFace names, and their manifest."""
    root = tmp_path_factory.mktemp("utkface")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        age, gender, ethnicity = int(rng.integers(1, 90)), i % 2, i % 5
        name = f"{age}_{gender}_{ethnicity}_20170104000000{i:03d}.jpg.chip.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / name, quality=90)
        rows.append([name, age, gender, ethnicity, "test" if i < 8 else ("val" if i < 14 else "train"), -1, ""])
    (root / BROKEN).write_bytes(b"this is not a jpeg")
    rows.append([BROKEN, 33, 1, 2, "test", -1, ""])
    manifest = root.parent / "split.csv"
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("file"), manifest)
    return root, manifest


@pytest.fixture(autouse=True)
def no_aaf_pack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The pipeline fits intervals and the consensus on AAF val too when its pack exists; not in these tests."""
    monkeypatch.setenv(AAF_PACK_ENV, str(tmp_path / "no_aaf_pack.safetensors"))


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


def make_checkpoints(root: Path, split_hash: str, save_tiny) -> Path:
    """A multitask tiny CNN and a gender-only one under root/checkpoints, each with a two-epoch training log."""
    folder = root / "checkpoints"
    save_tiny(folder / "tiny_multi", family="multitask", input_size=24, split_hash=split_hash)
    save_tiny(folder / "tiny_gender", tasks=("gender",), input_size=24, split_hash=split_hash, seed=1)
    for name in ("tiny_multi", "tiny_gender"):
        write_log(folder / name / LOG_FILE, [{"epoch": 1, "seconds": 60.0, "images_per_s": 9.0},
                                             {"epoch": 2, "seconds": 60.0, "images_per_s": 11.0}])
    return folder


def evaluate(dataset, checkpoints: Path, detector, *extra: str) -> int:
    """evaluation.run on the tiny split, without the detection cache (the fake detector is cheap)."""
    data, manifest = dataset
    return run.main(["--checkpoints", str(checkpoints), "--data", str(data), "--manifest", str(manifest),
                     "--threads", "1", "--latency-runs", "2", "--batch-size", "4", "--no-cache", *extra], detector)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def evaluated(dataset, tmp_path, save_tiny, half_blind_detector) -> Path:
    """Both tiny models through every step."""
    checkpoints = make_checkpoints(tmp_path, load_manifest(dataset[1]).hash, save_tiny)
    assert evaluate(dataset, checkpoints, half_blind_detector) == 0
    return checkpoints


def test_every_step_writes_its_artifacts(capsys, dataset, evaluated) -> None:
    out = capsys.readouterr().out
    assert [line[3:] for line in out.splitlines() if line.startswith("== ") and ":" not in line] == \
        [step.name for step in STEPS]  # in pipeline order
    checkpoints = evaluated
    files = load_manifest(dataset[1])
    report = read_metrics(checkpoints / "tiny_multi")

    data = report["data"]  # clean test
    assert (data["n_test_files"], data["n_evaluated"], data["n_skipped"]) == (9, 8, 1)
    assert data["skipped"][0]["file"] == BROKEN and data["hash_match"] is True
    assert report["model"]["params"] > 0 and report["model"]["flops"] > 0 and len(report["model"]["config_sha256"]) == 64
    assert report["metrics"]["n"] == 8 and report["speed"]["latency_ms"] > 0
    predictions = pd.read_csv(checkpoints / "tiny_multi" / "eval" / "predictions.csv")
    assert list(predictions["file"]) == [f for f in files.files("test") if f != BROKEN]

    section = report["wild"]  # test faces in photos: odd faces missed and counted, never dropped
    test_files = [f for f in files.files("test") if f != BROKEN]
    assert (section["n_faces"], section["n_detected"], section["detection_rate"]) == (8, 4, 0.5)
    assert section["missed"] == test_files[1::2] and section["aligned_share"] == 1.0
    wild_rows = pd.read_csv(checkpoints / "tiny_multi" / "eval" / "predictions_wild.csv")
    assert list(wild_rows["file"]) == test_files[0::2]

    val = report["val"]  # the app's ranking, from the val split
    assert val["detection_rate"] == 0.5 and ranking_mae(report) == (val["clean"]["age_mae"] + val["wild"]["age_mae"]) / 2

    card = ModelCard.load(checkpoints / "tiny_multi")  # the bin decision, chosen on val
    assert len(card.age_bin_log_offsets) in (0, 7)
    assert "tau 0.0" in out and "`tiny_multi`" in out

    # the 80 % age interval, calibrated on val: 6 clean faces; the 3 rendered ones are too few for their own q
    interval = card.interval()
    assert interval is not None and interval.calibrated_on == (("utkface_clean", 6),)
    assert card.interval("utkface_rendered").q == interval.q == card.interval("utkface_clean").q
    table = pd.read_csv(checkpoints / "tiny_multi" / "eval" / "predictions.csv")
    assert ((table["age_lo"] <= table["pred_age"]) & (table["pred_age"] <= table["age_hi"])).all()
    assert report["metrics"]["interval"]["n"] == 8 and report["wild"]["metrics"]["interval"]["n"] == 4

    consensus = ModelCard.load(checkpoints / "consensus")  # of the one network with every task, chosen on val
    assert consensus.architecture_kwargs == {"members": ["tiny_multi"],
                                             "weights": {task: [1.0] for task in ("age", "gender", "ethnicity")}}
    assert read_metrics(checkpoints / "consensus")["metrics"]["headline"] == report["metrics"]["headline"]

    board = pd.read_csv(checkpoints / "leaderboard.csv").set_index("name")
    assert list(board.reset_index().columns) == list(LEADERBOARD_COLUMNS)
    assert set(board.index) == {"tiny_multi", "tiny_gender", "consensus"}
    assert board.loc["tiny_multi", "wild_mae"] == pytest.approx(wild_headline(report)["age_mae"])
    assert np.isnan(board.loc["tiny_gender", "mae"])  # no age head

    text = (checkpoints / "tiny_multi" / "README.md").read_text()  # the model card, from metrics.json
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "other" and meta["datasets"] == ["UTKFace"] and "age-estimation" in meta["tags"]
    metrics = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["age MAE (years)"] == round(report["metrics"]["headline"]["age_mae"], 4)
    assert f"| age MAE (years) | {report['metrics']['headline']['age_mae']:.2f} |" in text
    assert "## Fairness slices (test split)" in text and "| gender: male |" in text

    shown = testset.headline_markdown(testset.read_model_eval(checkpoints, "tiny_multi"))  # the Test-set tab
    assert "detection 50.0%" in shown
    assert "95% percentile-bootstrap intervals" in out and "| `tiny_multi` |" in out  # significance, report


def test_check_passes_on_what_was_written_and_writes_nothing(dataset, evaluated, half_blind_detector, tmp_path,
                                                             capsys) -> None:
    before = snapshot(evaluated)
    capsys.readouterr()
    assert evaluate(dataset, evaluated, half_blind_detector, "--check") == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "metrics.json" in out and "README.md" in out
    assert snapshot(evaluated) == before


def test_check_names_every_field_that_differs(dataset, evaluated, half_blind_detector, tmp_path, capsys) -> None:
    folder = evaluated / "tiny_multi"
    report = read_metrics(folder)
    test = section_of(report, TEST_SECTION)
    test["metrics"]["headline"]["age_mae"] += 0.01  # years: far beyond the tolerance
    write_section(folder, TEST_SECTION, test)
    card = (folder / "README.md").read_text()
    (folder / "README.md").write_text(card.replace("## Limits", "## Limitations"))
    predictions = pd.read_csv(folder / "eval" / "predictions.csv")
    predictions.loc[2, "gender_p1"] += 0.5
    predictions.to_csv(folder / "eval" / "predictions.csv", index=False)
    before = snapshot(evaluated)
    capsys.readouterr()

    assert evaluate(dataset, evaluated, half_blind_detector, "--check",
                    "--models", "tiny_multi") == 1
    err = capsys.readouterr().err
    assert "check FAILED: 3 differences (numbers compared within 0.0001 of their size, 0.02 for faces in photos)" in err
    assert re.search(r"tiny_multi/eval/metrics.json test\.metrics\.headline\.age_mae: committed [\d.]+, "
                     r"recomputed [\d.]+", err)
    assert f"tiny_multi/eval/predictions.csv [{predictions.loc[2, 'file']}].gender_p1" in err
    assert "tiny_multi/README.md line" in err and "## Limitations" in err
    assert snapshot(evaluated) == before


def test_rerunning_any_step_alone_keeps_the_ranking_on_val(dataset, evaluated, half_blind_detector, tmp_path) -> None:
    folder = evaluated / "tiny_multi"
    ranking = ranking_mae(committed_metrics(folder))
    test_mae = read_metrics(folder)["metrics"]["headline"]["age_mae"]
    assert ranking is not None and ranking != test_mae
    for step in [*reversed(WRITING_STEPS), "val_ranking", "test", "bin_decision", "wild_test"]:
        assert evaluate(dataset, evaluated, half_blind_detector,
                        "--steps", step) == 0
        report = committed_metrics(folder)
        assert ranking_mae(report) == pytest.approx(ranking) == val_age_mae(report), step
        assert {"wild", "val", "metrics"} <= set(report), step


def test_a_model_without_val_is_not_ranked(dataset, evaluated, half_blind_detector, tmp_path) -> None:
    folder = evaluated / "tiny_multi"
    report = read_metrics(folder)
    del report["val"]
    (folder / "eval" / "metrics.json").write_text(json.dumps(report))
    assert ranking_mae(committed_metrics(folder)) is None  # not the test MAE


def test_refusals_name_what_to_change(dataset, tmp_path, save_tiny, half_blind_detector, capsys) -> None:
    checkpoints = make_checkpoints(tmp_path, "0" * 64, save_tiny)
    assert evaluate(dataset, checkpoints, half_blind_detector, "--steps", "test") == 2
    err = capsys.readouterr().err
    assert "0" * 64 in err and load_manifest(dataset[1]).hash in err
    assert not (checkpoints / "tiny_multi" / "eval").exists()

    good = make_checkpoints(tmp_path / "good", load_manifest(dataset[1]).hash, save_tiny)
    assert evaluate(dataset, good, half_blind_detector, "--models", "nope") == 2
    assert "nope" in (err := capsys.readouterr().err) and "tiny_multi" in err
    assert evaluate(dataset, good, half_blind_detector, "--steps", "tset") == 2
    assert "unknown steps ['tset']" in capsys.readouterr().err
    assert evaluate(dataset, good, half_blind_detector, "--sample", "4") == 2
    assert "--sample only goes with --check" in capsys.readouterr().err
    assert run.main(["--checkpoints", str(good), "--data", str(tmp_path / "no_such_folder"), "--manifest",
                     str(dataset[1]), "--steps", "test"]) == 2
    assert "no_such_folder" in capsys.readouterr().err


def test_differences_tolerance_and_timings() -> None:
    committed = {"a": 1.0, "speed": {"latency_ms": 3.0}, "b": [1, "x"], "c": None, "age": 80.0}
    recomputed = {"a": 1.0 + CHECK_TOLERANCE / 2, "speed": {}, "b": [1, "x"], "c": None, "age": 80.0 + 40 * CHECK_TOLERANCE}
    assert differences(committed, recomputed, "m") == []  # relative: 80 years may move by 8e-3
    assert differences(committed, {**committed, "b": [1, "y"], "c": 0.0, "a": 1.0 + 2 * CHECK_TOLERANCE}, "m") == [
        f"m.a: committed 1.0, recomputed {1.0 + 2 * CHECK_TOLERANCE!r}", "m.b[1]: committed 'x', recomputed 'y'",
        "m.c: committed None, recomputed 0.0"]
    assert differences({"a": 1}, {}, "m") == ["m.a: not recomputed"]
    # faces in rendered photos: the detector's rounding moves a few crops, so their numbers get WILD_TOLERANCE
    photos = {"clean": {"age_mae": 5.0}, "wild": {"age_mae": 5.0}}
    moved = {"clean": {"age_mae": 5.0 + 1e-2}, "wild": {"age_mae": 5.0 + 1e-2}}
    assert differences(photos, moved, "m") == ["m.clean.age_mae: committed 5.0, recomputed 5.01"]
    assert differences({"n": 4.0}, {"n": 4.0 + 8 * WILD_TOLERANCE}, "m", wild=True) == [
        f"m.n: committed 4.0, recomputed {4.0 + 8 * WILD_TOLERANCE!r}"]


def test_nearest_face_ignores_detections_away_from_the_placement() -> None:
    boxes = np.array([[0, 0, 20, 20], [90, 90, 110, 110]], np.float32)
    assert wild.nearest_face(boxes, (101.0, 99.0), 40.0) == 1
    assert wild.nearest_face(boxes, (150.0, 150.0), 40.0) is None  # 57 px > half the face width
    assert wild.nearest_face(np.zeros((0, 4)), (1.0, 1.0), 40.0) is None


def test_flip_ablation_reports_validation_differences(dataset, tmp_path, capsys, save_tiny) -> None:
    data, manifest = dataset
    checkpoints = make_checkpoints(tmp_path, load_manifest(manifest).hash, save_tiny)
    args = ["--checkpoints", str(checkpoints), "--data", str(data), "--manifest", str(manifest), "--threads", "1",
            "--decode-size", "32"]
    assert flip_ablation.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("val split, 6 faces: plain value, then flip − plain")
    rows = {line.split(" | ")[0]: line.rstrip(" |").split(" | ")[1:] for line in out.splitlines()
            if line.startswith("| `")}
    assert set(rows) == {"| `tiny_multi`", "| `tiny_gender`"}
    assert re.fullmatch(r"\d+\.\d\d: [+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]( ✔)?", rows["| `tiny_multi`"][0])
    with pytest.raises(SystemExit):  # the test split is not for choosing how to predict
        flip_ablation.main([*args, "--split", "test"])
    assert "invalid choice: 'test'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(utkface_folder() is None, reason="needs the UTKFace folder (AGEKIT_UTKFACE or ../shared/data)")
def test_shipped_model_reproduces_its_committed_predictions(capsys) -> None:
    """CI's check of the committed evaluation: pretrained_onet on the first faces of each split, the real
    detector, compared with the committed prediction rows; no file changes."""
    before = snapshot(REPO_ROOT / "checkpoints")
    code = run.main(["--checkpoints", str(REPO_ROOT / "checkpoints"), "--data", str(utkface_folder()),
                     "--check", "--models", "pretrained_onet", "--sample", "32", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "check passed" in captured.out and "predictions_wild.csv" in captured.out
    assert snapshot(REPO_ROOT / "checkpoints") == before
