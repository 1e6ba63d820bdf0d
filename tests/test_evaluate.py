"""evaluation.evaluate end to end on a tiny synthetic UTKFace-like folder and tiny checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agekit.data import load_manifest, write_manifest
from agekit.data.split import MANIFEST_COLUMNS
from evaluation import flip_ablation
from evaluation.evaluate import (
    LEADERBOARD_COLUMNS,
    main,
    read_leaderboard,
    read_metrics,
    write_leaderboard,
)

BROKEN = "33_1_2_20170104000000099.jpg.chip.jpg"  # a test file whose bytes are not a JPEG


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """30 small JPEGs with valid UTKFace names (12 in test, one of them unreadable) and their manifest."""
    root = tmp_path_factory.mktemp("utkface")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        age, gender, ethnicity = int(rng.integers(1, 90)), i % 2, i % 5
        name = f"{age}_{gender}_{ethnicity}_20170104000000{i:03d}.jpg.chip.jpg"
        pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, quality=90)
        split = "test" if i < 11 else ("val" if i < 15 else "train")
        rows.append([name, age, gender, ethnicity, split, -1, ""])
    (root / BROKEN).write_bytes(b"this is not a jpeg")
    rows.append([BROKEN, 33, 1, 2, "test", -1, ""])
    manifest = root.parent / "split.csv"
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("file"), manifest)
    return root, manifest


def make_checkpoints(root: Path, split_hash: str, save_tiny) -> Path:
    """A multitask tiny CNN and a gender-only one under root/checkpoints."""
    folder = root / "checkpoints"
    save_tiny(folder / "tiny_multi", family="multitask", input_size=24, split_hash=split_hash)
    save_tiny(folder / "tiny_gender", tasks=("gender",), input_size=24, split_hash=split_hash, seed=1)
    return folder


def run(dataset: tuple[Path, Path], checkpoints: Path, *extra: str) -> int:
    data, manifest = dataset
    return main(["--checkpoints", str(checkpoints), "--data", str(data), "--manifest", str(manifest),
                 "--threads", "1", "--latency-runs", "2", "--decode-size", "32", "--batch-size", "4", *extra])


def test_evaluate_writes_artifacts_and_is_reproducible(dataset, tmp_path, capsys, save_tiny) -> None:
    checkpoints = make_checkpoints(tmp_path, load_manifest(dataset[1]).hash, save_tiny)
    assert run(dataset, checkpoints) == 0
    out = capsys.readouterr().out
    assert "total wall time" in out and "tiny_multi" in out

    eval_dir = checkpoints / "tiny_multi" / "eval"
    predictions = pd.read_csv(eval_dir / "predictions.csv")
    assert len(predictions) == 11  # 12 test files, one unreadable
    assert BROKEN not in set(predictions["file"])
    assert {"pred_age", "age_abs_error", "age_bin_p6", "gender_p1", "ethnicity_p4"} <= set(predictions.columns)
    report = json.loads((eval_dir / "metrics.json").read_text())
    data = report["data"]
    assert (data["n_test_files"], data["n_evaluated"], data["n_skipped"]) == (12, 11, 1)
    assert data["skipped"][0]["file"] == BROKEN and data["skipped"][0]["reason"]
    assert data["hash_match"] is True and data["manifest_hash"] == load_manifest(dataset[1]).hash
    model = report["model"]
    assert model["params"] > 0 and model["flops"] > 0 and len(model["config_sha256"]) == 64
    assert report["metrics"]["n"] == 11 and report["metrics"]["age"]["mae"] >= 0
    assert report["speed"]["latency_ms"] > 0 and report["speed"]["threads"] == 1

    gender_only = pd.read_csv(checkpoints / "tiny_gender" / "eval" / "predictions.csv")
    assert "pred_age" not in gender_only.columns and "pred_gender" in gender_only.columns

    board = pd.read_csv(checkpoints / "leaderboard.csv")
    assert list(board.columns) == list(LEADERBOARD_COLUMNS)
    assert sorted(board["name"]) == ["tiny_gender", "tiny_multi"]
    assert board.set_index("name").loc["tiny_gender", "mae"] != board.set_index("name").loc["tiny_gender", "mae"]

    first_csv = (eval_dir / "predictions.csv").read_bytes()
    assert run(dataset, checkpoints, "--models", "tiny_multi") == 0
    again = json.loads((eval_dir / "metrics.json").read_text())
    assert (eval_dir / "predictions.csv").read_bytes() == first_csv
    assert {k: v for k, v in again.items() if k != "speed"} == {k: v for k, v in report.items() if k != "speed"}
    assert len(pd.read_csv(checkpoints / "leaderboard.csv")) == 2  # rebuilt from both models' metrics.json


def test_split_hash_mismatch_is_refused_unless_allowed(dataset, tmp_path, capsys, save_tiny) -> None:
    checkpoints = make_checkpoints(tmp_path, "0" * 64, save_tiny)
    manifest_hash = load_manifest(dataset[1]).hash
    assert run(dataset, checkpoints) == 2
    err = capsys.readouterr().err
    assert "0" * 64 in err and manifest_hash in err and "--allow-hash-mismatch" in err
    assert not (checkpoints / "tiny_multi" / "eval").exists()

    assert run(dataset, checkpoints, "--models", "tiny_gender", "--allow-hash-mismatch") == 0
    report = json.loads((checkpoints / "tiny_gender" / "eval" / "metrics.json").read_text())
    assert report["data"]["hash_match"] is False and report["data"]["checkpoint_split_hash"] == "0" * 64


def test_missing_data_folder_and_unknown_model(dataset, tmp_path, capsys, save_tiny) -> None:
    checkpoints = make_checkpoints(tmp_path, load_manifest(dataset[1]).hash, save_tiny)
    missing = tmp_path / "no_such_folder"
    assert main(["--checkpoints", str(checkpoints), "--data", str(missing), "--manifest", str(dataset[1])]) == 2
    err = capsys.readouterr().err
    assert "no_such_folder" in err and "does not exist" in err

    assert run(dataset, checkpoints, "--models", "nope") == 2
    err = capsys.readouterr().err
    assert "nope" in err and "tiny_multi" in err


def test_leaderboard_skips_damaged_metrics_and_readers(tmp_path, capsys) -> None:
    assert list(read_leaderboard(tmp_path).columns) == list(LEADERBOARD_COLUMNS)  # not evaluated yet: empty
    with pytest.raises(FileNotFoundError, match="evaluation.evaluate"):
        read_metrics(tmp_path / "model_a")
    (tmp_path / "broken" / "eval").mkdir(parents=True)
    (tmp_path / "broken" / "eval" / "metrics.json").write_text("{not json")
    board = write_leaderboard(tmp_path)
    assert len(board) == 0 and (tmp_path / "leaderboard.csv").is_file()
    assert "broken" in capsys.readouterr().err


def test_flip_averaging_is_recorded_and_can_be_switched_off(dataset, tmp_path, capsys, save_tiny) -> None:
    checkpoints = make_checkpoints(tmp_path, load_manifest(dataset[1]).hash, save_tiny)
    predictions = checkpoints / "tiny_multi" / "eval" / "predictions.csv"
    assert run(dataset, checkpoints, "--models", "tiny_multi") == 0
    flipped = pd.read_csv(predictions)
    assert read_metrics(checkpoints / "tiny_multi")["inference"] == {"flip_average": True}
    assert run(dataset, checkpoints, "--models", "tiny_multi", "--no-flip") == 0
    plain = pd.read_csv(predictions)
    assert read_metrics(checkpoints / "tiny_multi")["inference"] == {"flip_average": False}
    assert list(plain["file"]) == list(flipped["file"]) and not np.allclose(plain["pred_age"], flipped["pred_age"])


def test_flip_ablation_reports_validation_differences(dataset, tmp_path, capsys, save_tiny) -> None:
    data, manifest = dataset
    checkpoints = make_checkpoints(tmp_path, load_manifest(manifest).hash, save_tiny)
    args = ["--checkpoints", str(checkpoints), "--data", str(data), "--manifest", str(manifest), "--threads", "1",
            "--decode-size", "32"]
    assert flip_ablation.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("val split, 4 faces: plain value, then flip − plain")
    rows = {line.split(" | ")[0]: line.rstrip(" |").split(" | ")[1:] for line in out.splitlines()
            if line.startswith("| `")}
    assert set(rows) == {"| `tiny_multi`", "| `tiny_gender`"}
    rate = r"\d+\.\d%: [+-]\d+\.\d pt \[[+-]\d+\.\d, [+-]\d+\.\d\]( ✔)?"
    assert rows["| `tiny_gender`"][:3] == ["–", "–", "–"] and re.fullmatch(rate, rows["| `tiny_gender`"][3])
    assert re.fullmatch(r"\d+\.\d\d: [+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]( ✔)?", rows["| `tiny_multi`"][0])
    with pytest.raises(SystemExit):  # the test split is not for choosing how to predict
        flip_ablation.main([*args, "--split", "test"])
    assert "invalid choice: 'test'" in capsys.readouterr().err
