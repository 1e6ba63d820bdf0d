"""evaluation.report: the README's model table is built from the leaderboard, cards and training logs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agekit.card import ModelCard
from evaluation.report import init_label, results_table, wild_table


def test_results_table_reads_every_artifact(tmp_path: Path) -> None:
    card = ModelCard(name="m1", family="multitask", architecture="mobilenetv1_025", tasks=("age", "gender"),
                     shared_backbone=True, input_size=112)
    (tmp_path / "m1").mkdir()
    card.save(tmp_path / "m1")
    pd.DataFrame({"epoch": [1, 2], "seconds": [60.0, 120.0], "images_per_s": [100.0, 300.0]}).to_csv(
        tmp_path / "m1" / "training_log.csv", index=False)
    pd.DataFrame([{"name": "m1", "family": "multitask", "architecture": "mobilenetv1_025", "params": 244940,
                   "input_size": 112, "init_source": "w.pth sha256:abc", "mae": 5.516, "cs5": 0.5862,
                   "age_bin_macro_f1": 0.6054, "gender_accuracy": 0.921, "ethnicity_accuracy": 0.819,
                   "ethnicity_macro_f1": 0.707}]).to_csv(tmp_path / "leaderboard.csv", index=False)

    rows = results_table(tmp_path).splitlines()

    assert len(rows) == 3
    assert rows[2] == ("| `m1` | multitask | mobilenetv1_025 (one shared net) | 0.24 M | 112 px | UTKFace | w.pth | 5.52 "
                       "| 58.6% | 60.5% | 92.1% | 81.9% | – | – | 2 | 3 min |")
    # a second source and its All-Age-Faces test columns
    card.train_config = {"sources": [{"pack": "utkface_128.safetensors"}, {"pack": "aaf_128.safetensors"}]}
    card.save(tmp_path / "m1")
    board = pd.read_csv(tmp_path / "leaderboard.csv").assign(aaf_mae=6.123, aaf_gender_accuracy=0.9312)
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert results_table(tmp_path).splitlines()[2] == (
        "| `m1` | multitask | mobilenetv1_025 (one shared net) | 0.24 M | 112 px | UTKFace + AAF | w.pth | 5.52 "
        "| 58.6% | 60.5% | 92.1% | 81.9% | 6.12 | 93.1% | 2 | 3 min |")


def test_init_label_drops_the_hash() -> None:
    assert init_label("retinaface.pth sha256:38ec") == "retinaface.pth"
    assert init_label("random") == "random"


def test_wild_table_shows_clean_and_wild_side_by_side(tmp_path: Path) -> None:
    pd.DataFrame([
        {"name": "m1", "mae": 4.871, "age_bin_macro_f1": 0.6939, "gender_accuracy": 0.9273,
         "ethnicity_accuracy": 0.8425, "wild_detection_rate": 0.9856, "wild_mae": 5.634,
         "wild_age_bin_macro_f1": 0.6512, "wild_gender_accuracy": 0.9011, "wild_ethnicity_accuracy": 0.8012},
        {"name": "m2", "mae": 5.1, "age_bin_macro_f1": 0.6, "gender_accuracy": 0.9, "ethnicity_accuracy": 0.8},
    ]).to_csv(tmp_path / "leaderboard.csv", index=False)

    rows = wild_table(tmp_path).splitlines()

    assert rows[2] == "| `m1` | 98.6% | 4.87 → 5.63 | 69.4% → 65.1% | 92.7% → 90.1% | 84.2% → 80.1% |"
    assert rows[3] == "| `m2` | – | 5.10 → – | 60.0% → – | 90.0% → – | 80.0% → – |"  # not evaluated wild yet
