"""agekit.artifacts: one writer and one reader per evaluation file, sections kept apart, atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from agekit.artifacts import (
    AAF_TEST_SECTION,
    AAF_VAL_SECTION,
    LEADERBOARD_COLUMNS,
    REPO_ROOT,
    TEST_KEYS,
    TEST_SECTION,
    VAL_SECTION,
    WILD_SECTION,
    ArtifactError,
    file_sha256,
    has_section,
    leaderboard_frame,
    metrics_path,
    read_leaderboard,
    read_metrics,
    read_model_card,
    read_predictions,
    repo_relative,
    section_of,
    val_age_mae,
    wild_headline,
    write_atomic,
    write_leaderboard,
    write_predictions,
    write_section,
)


def clean_section(name: str = "m", mae: float = 5.0) -> dict:
    """A test section as evaluation.evaluate.test_section builds it (only the keys the leaderboard reads)."""
    return {"format_version": 1,
            "model": {"name": name, "family": "scratch", "architecture": "facecnn", "params": 10, "flops": 20,
                      "input_size": 32, "init_source": "random"},
            "data": {"manifest_hash": "ab" * 32, "manifest": "agekit/data/manifests/utkface_split.csv"},
            "inference": {"flip_average": True},
            "metrics": {"n": 3, "headline": {"age_mae": mae, "gender_accuracy": 0.9}},
            "speed": {"latency_ms": 1.5}}


VAL = {"clean": {"age_mae": 4.0}, "wild": {"age_mae": 6.0}, "detection_rate": 0.99}
WILD = {"detection_rate": 0.5, "metrics": {"headline": {"age_mae": 7.0}}}


def test_sections_are_written_in_any_order_and_keep_each_other(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_section(folder, VAL_SECTION, VAL)  # before any test evaluation: the file is created
    assert read_metrics(folder) == {"val": VAL} and not has_section(folder, TEST_SECTION)
    write_section(folder, TEST_SECTION, clean_section())
    write_section(folder, WILD_SECTION, WILD)
    write_section(folder, TEST_SECTION, clean_section(mae=5.5))  # re-running the test step keeps val and wild
    report = read_metrics(folder)
    assert section_of(report, VAL_SECTION) == VAL and section_of(report, WILD_SECTION) == WILD
    assert section_of(report, TEST_SECTION) == clean_section(mae=5.5)
    assert list(report)[:len(TEST_KEYS)] == list(TEST_KEYS)  # the committed files' layout
    assert val_age_mae(report) == 5.0 and wild_headline(report) == {"age_mae": 7.0, "detection_rate": 0.5}
    assert [p.name for p in metrics_path(folder).parent.iterdir()] == ["metrics.json"]  # no temporary left behind
    with pytest.raises(ValueError, match="unknown metrics.json section 'bogus'"):
        write_section(folder, "bogus", {})
    with pytest.raises(ValueError, match="a test section holds"):
        write_section(folder, TEST_SECTION, {"metrics": {}, "extra": 1})


def test_val_age_mae_is_none_without_a_val_section_never_the_test_mae() -> None:
    assert val_age_mae(clean_section(mae=4.2)) is None
    assert val_age_mae({**clean_section(), "val": {"clean": {"age_mae": 4.0}, "wild": None}}) is None


def test_readers_raise_naming_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"model m has no evaluation .*metrics.json is missing.*"
                                            r"python -m evaluation.run --models m"):
        read_metrics(tmp_path / "m")
    metrics_path(tmp_path / "m").parent.mkdir(parents=True)
    metrics_path(tmp_path / "m").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not readable JSON"):
        read_metrics(tmp_path / "m")
    assert not has_section(tmp_path / "m")
    with pytest.raises(ArtifactError, match="no leaderboard yet"):
        read_leaderboard(tmp_path)
    with pytest.raises(ArtifactError, match="has no wild-photo predictions"):
        read_predictions(tmp_path, "m", WILD_SECTION)
    with pytest.raises(ArtifactError, match="has no model card"):
        read_model_card(tmp_path / "m")


def test_tables_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"file": ["a.jpg", "b.jpg"], "pred_age": [30.25, 41.0]})
    write_predictions(tmp_path, "m", frame, WILD_SECTION)
    pd.testing.assert_frame_equal(read_predictions(tmp_path, "m", WILD_SECTION), frame)
    board = leaderboard_frame([clean_section("b", 6.0), {"val": VAL}, clean_section("a", 5.0)])
    assert list(board.columns) == list(LEADERBOARD_COLUMNS) and list(board["name"]) == ["a", "b"]
    write_leaderboard(tmp_path, board)
    assert list(read_leaderboard(tmp_path)["mae"]) == [5.0, 6.0]


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "x.json", "old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]  # fails inside the write
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_file_sha256_and_repo_relative_paths(tmp_path: Path) -> None:
    data = b"x" * (3 << 20)  # several 1 MiB chunks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    manifest = REPO_ROOT / "agekit" / "data" / "manifests" / "utkface_split.csv"
    assert repo_relative(manifest) == "agekit/data/manifests/utkface_split.csv"
    assert repo_relative(tmp_path / "f") == str((tmp_path / "f").resolve())  # outside the repository: absolute


def test_committed_metrics_record_the_manifest_relative_to_the_repository() -> None:
    for path in sorted((REPO_ROOT / "checkpoints").glob("*/eval/metrics.json")):
        assert json.loads(path.read_text())["data"]["manifest"] == "agekit/data/manifests/utkface_split.csv", path


def test_all_age_faces_sections_join_the_ranking_and_the_leaderboard(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_section(folder, TEST_SECTION, clean_section())
    write_section(folder, VAL_SECTION, VAL)
    assert val_age_mae(read_metrics(folder)) == 5.0  # (4 + 6) / 2 before AAF
    write_section(folder, AAF_VAL_SECTION, {"n": 10, "age_mae": 8.0, "gender_accuracy": 0.9})
    write_section(folder, AAF_TEST_SECTION, {"data": {"split": "test"},
                                             "metrics": {"headline": {"age_mae": 7.5, "gender_accuracy": 0.95}}})
    report = read_metrics(folder)
    assert val_age_mae(report) == 6.0  # (4 + 6 + 8) / 3: real photos are a third ranking source
    row = leaderboard_frame([report]).iloc[0]
    assert row["aaf_mae"] == 7.5 and row["aaf_gender_accuracy"] == 0.95 and pd.isna(row["aaf_age_bin_macro_f1"])
    assert section_of(report, TEST_SECTION) == clean_section()  # the other sections are kept
