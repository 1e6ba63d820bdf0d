"""agekit.metrics on hand-computed cases."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from agekit.labels import DECADES, NUM_AGES, UTK7
from agekit.metrics import (
    calibration,
    classification_metrics,
    compute_metrics,
    labelled_accuracy,
    predictions_frame,
)


def one_hot(indices: list[int], n: int) -> np.ndarray:
    probs = np.zeros((len(indices), n))
    probs[np.arange(len(indices)), indices] = 1.0
    return probs


def soft(indices: list[int], n: int, confidence: float) -> np.ndarray:
    """Probability `confidence` on the given class, the rest spread evenly."""
    probs = np.full((len(indices), n), (1 - confidence) / (n - 1))
    probs[np.arange(len(indices)), indices] = confidence
    return probs


@pytest.fixture
def small_frame() -> pd.DataFrame:
    # ages 10,20,30,40 predicted (one-hot) as 12,20,37,40 → errors 2,0,7,0
    truth = {"age": [10, 20, 30, 40], "gender": [0, 0, 1, 1], "ethnicity": [0, 1, 0, 1]}
    outputs = {
        "age": one_hot([12, 20, 37, 40], NUM_AGES),
        "gender": soft([0, 1, 1, 1], 2, 0.75),  # one gender error (face 1)
        "ethnicity": soft([0, 1, 0, 0], 5, 0.6),  # one ethnicity error (face 3)
    }
    return predictions_frame(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], truth, outputs, UTK7)


def test_predictions_frame_columns_follow_the_contract(small_frame: pd.DataFrame) -> None:
    expected = (["file", "age", "gender", "ethnicity", "pred_age", "age_abs_error", "pred_age_bin", "true_age_bin"]
                + [f"age_bin_p{i}" for i in range(7)] + ["pred_gender", "gender_p0", "gender_p1", "pred_ethnicity"]
                + [f"ethnicity_p{i}" for i in range(5)])
    assert list(small_frame.columns) == expected
    np.testing.assert_allclose(small_frame["pred_age"], [12, 20, 37, 40])
    np.testing.assert_allclose(small_frame["age_abs_error"], [2, 0, 7, 0])
    # UTK7: 10,12 → 7-14 (2); 20,30 → 15-30 (3); 37,40 → 31-40 (4)
    assert small_frame["true_age_bin"].tolist() == [2, 3, 3, 4]
    assert small_frame["pred_age_bin"].tolist() == [2, 3, 4, 4]
    assert small_frame["pred_gender"].tolist() == [0, 1, 1, 1]


def test_expected_age_and_bin_probabilities_from_a_spread_distribution() -> None:
    probs = np.zeros((1, NUM_AGES))
    probs[0, [2, 40]] = [0.25, 0.75]  # bins 0-2 and 31-40
    frame = predictions_frame(["x.jpg"], {"age": [30]}, {"age": probs}, UTK7)
    assert frame["pred_age"].iloc[0] == pytest.approx(0.25 * 2 + 0.75 * 40)
    assert frame[[f"age_bin_p{i}" for i in range(7)]].iloc[0].tolist() == pytest.approx([0.25, 0, 0, 0, 0.75, 0, 0])
    assert frame["pred_age_bin"].iloc[0] == 4
    assert "pred_gender" not in frame.columns and "gender" not in frame.columns


def test_missing_task_columns_are_absent() -> None:
    frame = predictions_frame(["x.jpg", "y.jpg"], {"age": [1, 2], "gender": [0, 1], "ethnicity": [0, 0]},
                              {"gender": one_hot([0, 1], 2)}, UTK7)
    assert "pred_age" not in frame.columns and "age_bin_p0" not in frame.columns
    metrics = compute_metrics(frame, UTK7)
    assert metrics["tasks"] == ["gender"]
    assert "age" not in metrics and "age_bin" not in metrics and "ethnicity" not in metrics
    assert metrics["headline"] == {"gender_accuracy": 1.0, "gender_macro_f1": 1.0}


def test_logits_instead_of_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="softmax"):
        predictions_frame(["x.jpg"], {"gender": [0]}, {"gender": np.array([[2.0, -1.0]])}, UTK7)
    with pytest.raises(ValueError, match="ground truth"):
        predictions_frame(["x.jpg"], {}, {"gender": np.array([[1.0, 0.0]])}, UTK7)


def test_age_metrics_by_hand(small_frame: pd.DataFrame) -> None:
    age = compute_metrics(small_frame, UTK7)["age"]
    assert age["mae"] == pytest.approx(9 / 4)
    assert age["median_ae"] == pytest.approx(1.0)
    assert age["cs5"] == pytest.approx(3 / 4)
    by_bin = {row["bin"]: (row["count"], row["mae"]) for row in age["mae_by_bin"]}
    assert by_bin == {"0-2": (0, None), "3-6": (0, None), "7-14": (1, 2.0), "15-30": (2, 3.5),
                      "31-40": (1, 0.0), "41-65": (0, None), "66-116": (0, None)}
    assert age["mae_by_age"] == [{"age": 10, "count": 1, "mae": 2.0}, {"age": 20, "count": 1, "mae": 0.0},
                                 {"age": 30, "count": 1, "mae": 7.0}, {"age": 40, "count": 1, "mae": 0.0}]


def test_class_never_predicted_and_class_absent_from_truth() -> None:
    # class 2 is in the truth but never predicted; class 4 is predicted but absent from the truth;
    # class 3 occurs nowhere.
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 0, 4, 4])
    names = ["c0", "c1", "c2", "c3", "c4"]
    result = classification_metrics(y_true, y_pred, one_hot(list(y_pred), 5), names)
    assert result["accuracy"] == pytest.approx(0.5)
    # macro over classes seen in truth or predictions {0,1,2,4}: (0.8 + 2/3 + 0 + 0) / 4
    assert result["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 4)
    table = {row["class"]: row for row in result["per_class"]}
    assert table["c0"] == {"class": "c0", "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                           "support": 2, "predicted": 3}
    assert table["c1"] == {"class": "c1", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                           "support": 2, "predicted": 1}
    assert table["c2"] == {"class": "c2", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    assert table["c3"] == {"class": "c3", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    assert table["c4"] == {"class": "c4", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 2}
    assert result["confusion"] == {"labels": names, "matrix": [
        [2, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]}


def test_ece_on_a_tiny_hand_computed_example() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55, 0.3])
    correct = np.array([True, False, True, True, False])
    result = calibration(confidence, correct)
    # bin (14/15,1]: acc .5 conf .95; bin (8/15,9/15]: acc 1 conf .55; bin (4/15,5/15]: acc 0 conf .3
    assert result["ece"] == pytest.approx(2 / 5 * 0.45 + 2 / 5 * 0.45 + 1 / 5 * 0.3)
    assert result["n_bins"] == 15 and len(result["bins"]) == 15
    filled = {i: b for i, b in enumerate(result["bins"]) if b["count"]}
    assert sorted(filled) == [4, 8, 14]
    assert filled[14]["accuracy"] == 0.5 and filled[14]["confidence"] == pytest.approx(0.95)
    assert filled[8] == {"lower": pytest.approx(8 / 15), "upper": pytest.approx(9 / 15), "count": 2,
                         "confidence": pytest.approx(0.55), "accuracy": 1.0}
    assert result["bins"][0] == {"lower": 0.0, "upper": pytest.approx(1 / 15), "count": 0,
                                 "confidence": None, "accuracy": None}


def test_ece_perfectly_calibrated_and_edges() -> None:
    assert calibration(np.array([1.0, 1.0]), np.array([True, True]))["ece"] == 0.0
    assert calibration(np.array([1.0]), np.array([True]))["bins"][-1]["count"] == 1


def test_classification_blocks_and_calibration_in_compute_metrics(small_frame: pd.DataFrame) -> None:
    metrics = compute_metrics(small_frame, UTK7)
    assert metrics["n"] == 4 and metrics["tasks"] == ["age", "gender", "ethnicity"]
    gender = metrics["gender"]
    assert gender["accuracy"] == 0.75
    assert gender["confusion"] == {"labels": ["male", "female"], "matrix": [[1, 1], [0, 2]]}
    # all gender confidences are 0.75, 3 of 4 right → perfectly calibrated
    assert gender["calibration"]["ece"] == pytest.approx(0.0)
    eth = metrics["ethnicity"]
    assert eth["accuracy"] == 0.75
    # confidence 0.6 everywhere, accuracy 0.75 → ECE 0.15
    assert eth["calibration"]["ece"] == pytest.approx(0.15)
    assert [row["support"] for row in eth["per_class"]] == [2, 2, 0, 0, 0]
    assert len(eth["confusion"]["matrix"]) == 5 and all(len(r) == 5 for r in eth["confusion"]["matrix"])
    age_bin = metrics["age_bin"]
    assert age_bin["classes"] == list(UTK7.names) and age_bin["accuracy"] == 0.75
    assert age_bin["calibration"]["ece"] == pytest.approx(0.25)  # one-hot (confidence 1), 3 of 4 right
    assert metrics["headline"] == pytest.approx({
        "age_mae": 2.25, "age_median_ae": 1.0, "age_cs5": 0.75, "age_bin_accuracy": 0.75,
        "age_bin_macro_f1": age_bin["macro_f1"], "gender_accuracy": 0.75, "gender_macro_f1": gender["macro_f1"],
        "ethnicity_accuracy": 0.75, "ethnicity_macro_f1": eth["macro_f1"]})
    json.dumps(metrics, allow_nan=False)  # JSON-serialisable, no NaN


def test_fairness_slices(small_frame: pd.DataFrame) -> None:
    fairness = compute_metrics(small_frame, UTK7)["fairness"]
    male, female = fairness["gender"]["groups"]
    assert (male["group"], male["count"], male["age_mae"], male["gender_accuracy"]) == ("male", 2, 1.0, 0.5)
    assert (female["group"], female["count"], female["age_mae"], female["gender_accuracy"]) == ("female", 2, 3.5, 1.0)
    assert fairness["gender"]["gaps"]["age_mae"] == pytest.approx(2.5)
    groups = {g["group"]: g for g in fairness["ethnicity"]["groups"]}
    assert groups["White"]["count"] == 2 and groups["White"]["age_mae"] == pytest.approx(4.5)
    assert groups["Asian"] == {"group": "Asian", "count": 0, **dict.fromkeys(fairness["gender"]["gaps"])}


def test_metrics_survive_a_csv_round_trip(small_frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    small_frame.to_csv(buffer, index=False)
    buffer.seek(0)
    assert compute_metrics(pd.read_csv(buffer), UTK7) == compute_metrics(small_frame, UTK7)


def test_empty_and_mismatched_inputs_are_refused(small_frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(small_frame.iloc[:0], UTK7)
    with pytest.raises(ValueError, match="age bins"):
        compute_metrics(small_frame, DECADES)


def test_labelled_accuracy_leaves_unlabelled_faces_out() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert labelled_accuracy(probs, np.array([0, 1, 1, -1])) == pytest.approx(2 / 3)
    assert labelled_accuracy(probs, np.array([-1, -1, -1, -1])) is None
