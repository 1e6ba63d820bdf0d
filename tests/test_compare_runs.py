"""evaluation.compare_runs: per-source val scores of training runs, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from agekit.labels import NUM_OUTPUTS
from evaluation.compare_runs import SourceScores, comparison_table, main, source_scores


def one_hot(values: list[int], classes: int) -> np.ndarray:
    probs = np.zeros((len(values), classes))
    probs[np.arange(len(values)), values] = 1.0
    return probs


def test_scores_match_a_hand_computed_example() -> None:
    truth = {"age": np.array([5, 10, 40, 60]), "gender": np.array([0, 1, 1, 0]), "ethnicity": np.array([2, -1, 0, 4])}
    age = one_hot([7, 10, 30, 61], NUM_OUTPUTS["age"])
    age[0] = 0.0
    age[0, [6, 8]] = 0.5  # expected age 7 from a two-peaked distribution
    probs = {"age": age, "gender": one_hot([0, 1, 0, 0], 2), "ethnicity": one_hot([2, 3, 1, 4], 5)}
    scores = source_scores(truth, probs)
    assert scores.age_mae == pytest.approx((2 + 0 + 10 + 1) / 4)
    assert scores.child_mae == pytest.approx((2 + 0) / 2)  # ages 0-12 only
    assert scores.gender_acc == pytest.approx(3 / 4)
    assert scores.ethnicity_acc == pytest.approx(2 / 3)  # the unlabelled face (-1) is left out


def test_a_source_without_a_label_or_without_children_says_so() -> None:
    truth = {"age": np.array([30, 50]), "gender": np.array([1, 1])}  # AAF: no ethnicity label
    probs = {"age": one_hot([30, 52], NUM_OUTPUTS["age"]), "gender": one_hot([1, 0], 2),
             "ethnicity": one_hot([0, 0], 5)}
    scores = source_scores(truth, probs)
    assert scores == SourceScores(1.0, None, 0.5, None)


def test_the_table_ends_each_run_with_its_mean_over_sources() -> None:
    table = comparison_table({"a": {"clean": SourceScores(4.0, 3.0, 0.9, 0.8),
                                    "aaf": SourceScores(5.0, None, 0.95, None)}})
    rows = table.splitlines()
    assert rows[2] == "| a | clean | 4.00 | 3.00 | 90.0% | 80.0% |"
    assert rows[3] == "| a | aaf | 5.00 | – | 95.0% | – |"
    assert rows[4] == "| a | **mean of the sources (ranking)** | **4.500** | | | |"


def test_a_folder_without_weights_is_a_clear_error(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "no model.safetensors in" in capsys.readouterr().err
