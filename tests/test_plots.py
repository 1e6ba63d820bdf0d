"""agekit.plots: each figure built from a small artifact, checked on its data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agekit.metrics import calibration
from agekit.plots import (
    confusion_matrix_figure,
    fairness_figure,
    leaderboard_figure,
    mae_by_age_figure,
    normalise_rows,
    per_class_figure,
    reliability_figure,
    training_curves_figure,
)

CONFUSION = {"labels": ["male", "female", "other"], "matrix": [[3, 1, 0], [2, 2, 0], [0, 0, 0]]}


def test_confusion_counts_heatmap() -> None:
    fig = confusion_matrix_figure(CONFUSION)
    heatmap = fig.data[0]
    assert np.asarray(heatmap.z).tolist() == CONFUSION["matrix"]
    assert list(heatmap.x) == ["male", "female", "other"] and list(heatmap.y) == ["male", "female", "other"]
    assert heatmap.text[0][0] == "3" and heatmap.texttemplate == "%{text}"
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "true"


def test_confusion_row_normalised_rows_sum_to_one() -> None:
    fig = confusion_matrix_figure(CONFUSION, normalize=True)
    z = np.asarray(fig.data[0].z)
    np.testing.assert_allclose(z.sum(axis=1), [1.0, 1.0, 0.0])  # empty true class stays 0
    np.testing.assert_allclose(z[0], [0.75, 0.25, 0.0])
    assert fig.data[0].text[1][0] == "50%<br>(2)"
    assert fig.data[0].zmax == 1


def test_normalise_rows_and_shape_check() -> None:
    np.testing.assert_allclose(normalise_rows([[1, 3], [0, 0]]), [[0.25, 0.75], [0.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix_figure({"labels": ["a"], "matrix": [[1, 2]]})


def test_per_class_bars() -> None:
    per_class = [
        {"class": "White", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2, "predicted": 4},
        {"class": "Black", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0},
    ]
    fig = per_class_figure(per_class)
    assert [trace.name for trace in fig.data] == ["precision", "recall", "f1"]
    assert list(fig.data[0].x) == ["White", "Black"]
    assert list(fig.data[1].y) == [1.0, 0.0] and list(fig.data[2].customdata) == [2, 0]
    assert fig.layout.barmode == "group"


def test_mae_by_age_curve_with_counts() -> None:
    rows = [{"age": 10, "count": 3, "mae": 2.0}, {"age": 20, "count": 5, "mae": 4.5}]
    fig = mae_by_age_figure({"cnn": rows, "resnet": [{**r, "mae": r["mae"] / 2} for r in rows]})
    counts, cnn, resnet = fig.data
    assert counts.type == "bar" and list(counts.x) == [10, 20] and list(counts.y) == [3, 5] and counts.yaxis == "y2"
    assert cnn.name == "cnn" and list(cnn.y) == [2.0, 4.5] and list(resnet.y) == [1.0, 2.25]
    assert fig.layout.xaxis.title.text == "true age (years)"
    with pytest.raises(ValueError, match="no MAE-by-age"):
        mae_by_age_figure({})


def test_reliability_diagram_from_calibration_block() -> None:
    block = calibration(np.array([0.95, 0.95, 0.55]), np.array([True, False, True]))
    fig = reliability_figure(block)
    bars, confidence, diagonal = fig.data
    np.testing.assert_allclose(bars.x, [(8 / 15 + 9 / 15) / 2, (14 / 15 + 1) / 2])
    np.testing.assert_allclose(bars.y, [1.0, 0.5])
    np.testing.assert_allclose(confidence.y, [0.55, 0.95])
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert f"ECE {block['ece']:.3f}" in fig.layout.title.text


def test_fairness_bars_per_model() -> None:
    groups = [{"group": "male", "count": 2, "age_mae": 1.0}, {"group": "female", "count": 0, "age_mae": None}]
    fig = fairness_figure({"cnn": groups, "vit": [{**groups[0], "age_mae": 3.0}, groups[1]]}, metric="age_mae")
    assert [t.name for t in fig.data] == ["cnn", "vit"]
    assert list(fig.data[0].x) == ["male", "female"] and list(fig.data[0].y) == [1.0, None]
    assert list(fig.data[1].y) == [3.0, None]
    assert fig.layout.yaxis.title.text == "age MAE (years)"


LEADERBOARD = pd.DataFrame({
    "name": ["a", "b", "c"], "family": ["scratch", "pretrained", "multitask"],
    "mae": [6.0, 4.5, None], "gender_accuracy": [0.8, 0.9, 0.85],
})


def test_leaderboard_bars_sorted_best_first_one_legend_entry_per_family() -> None:
    fig = leaderboard_figure(LEADERBOARD, "mae")
    assert list(fig.layout.yaxis.categoryarray) == ["b", "a"]  # lower MAE first, NaN dropped
    assert [(bar.name, list(bar.y), list(bar.x)) for bar in fig.data] == [("pretrained", ["b"], [4.5]),
                                                                          ("scratch", ["a"], [6.0])]
    assert fig.data[0].marker.color == "#ff7f0e" and fig.layout.legend.title.text == "family"
    fig = leaderboard_figure(LEADERBOARD, "gender_accuracy")
    assert list(fig.layout.yaxis.categoryarray) == ["b", "c", "a"]  # higher accuracy first
    with pytest.raises(ValueError, match="no column"):
        leaderboard_figure(LEADERBOARD, "bogus")


def test_training_curves_one_line_per_model_and_best_epoch_starred() -> None:
    logs = {
        "a": pd.DataFrame({"epoch": [1, 2, 3], "val_age_mae": [9.0, 6.5, 7.0], "val_gender_acc": [0.8, 0.9, 0.85]}),
        "b": pd.DataFrame({"epoch": [1, 2], "val_age_mae": [8.0, 7.5]}),
        "c": pd.DataFrame({"epoch": [1], "train_loss": [3.0]}),  # no such column: left out
    }
    fig = training_curves_figure(logs, "val_age_mae", families={"a": "scratch", "b": "multitask"})
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    stars = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in lines] == ["a", "b"]
    assert list(lines[0].x) == [1, 2, 3] and list(lines[0].y) == [9.0, 6.5, 7.0]
    assert lines[0].line.dash == "dot" and lines[1].line.dash == "dash"
    assert (list(stars[0].x), list(stars[0].y)) == ([2], [6.5])  # lowest MAE
    assert (list(stars[1].x), list(stars[1].y)) == ([2], [7.5])
    # the legend hangs below the plot, under the "epoch" axis title, not over it
    assert fig.layout.legend.yanchor == "top" and fig.layout.legend.y < -0.15 and fig.layout.margin.b >= 100
    accuracy = training_curves_figure(logs, "val_gender_acc")
    assert list(accuracy.data[1].x) == [2]  # highest accuracy is best
    assert accuracy.layout.yaxis.title.text == "validation gender accuracy"
    with pytest.raises(ValueError, match="no training log has a 'bogus' column"):
        training_curves_figure(logs, "bogus")
