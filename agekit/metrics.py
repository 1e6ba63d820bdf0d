"""Evaluation metrics over a predictions table: MAE, CS@5, confusion matrices, per-class, per-group, calibration.

Only glue: every number comes from scikit-learn, numpy or pandas. The predictions table
(`predictions_frame`) is the one input; `compute_metrics` turns it into a JSON-ready dict that
evaluation writes to metrics.json and `agekit.plots` draws.

Predictions table columns (columns of tasks a model lacks are absent):
  file, age, gender, ethnicity                 ground truth (years, class codes)
  pred_age, age_abs_error                      expected age of the predicted distribution and |error|, years
  pred_age_bin, true_age_bin, age_bin_p0..K-1  age-bin class (argmax of summed bin probabilities) and truth
  pred_gender, gender_p0, gender_p1            argmax class and probabilities
  pred_ethnicity, ethnicity_p0..ethnicity_p4
  age_lo, age_hi                               the model's calibrated age interval, years (when it has one)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    median_absolute_error,
    precision_recall_fscore_support,
)

from agekit.intervals import AgeInterval, interval_metrics
from agekit.labels import AGE_MAX, AGE_MIN, CLASS_NAMES, NUM_OUTPUTS, TASKS, AgeBins

CS_YEARS = 5  # cumulative score threshold: share of faces with |age error| <= 5 years
ECE_BINS = 15  # equal-width confidence bins for expected calibration error


@dataclass(frozen=True)
class ClassificationColumns:
    """Where one classification task lives in the predictions table."""

    task: str  # "age_bin", "gender" or "ethnicity"
    truth: str  # column of true class indices
    pred: str  # column of predicted class indices
    prob_prefix: str  # probability columns are f"{prob_prefix}{i}"


CLASSIFICATION_TASKS: tuple[ClassificationColumns, ...] = (
    ClassificationColumns("age_bin", "true_age_bin", "pred_age_bin", "age_bin_p"),
    ClassificationColumns("gender", "gender", "pred_gender", "gender_p"),
    ClassificationColumns("ethnicity", "ethnicity", "pred_ethnicity", "ethnicity_p"),
)
FAIRNESS_ATTRIBUTES: tuple[str, ...] = ("gender", "ethnicity")


def _check_probabilities(task: str, probs: np.ndarray, n_rows: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    expected = (n_rows, NUM_OUTPUTS[task])
    if probs.shape != expected:
        raise ValueError(f"{task} outputs have shape {probs.shape}, expected {expected}")
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{task} outputs are not probabilities (rows must be >= 0 and sum to 1): "
                         "apply softmax to the logits first")
    return probs


def predictions_frame(files: Sequence[str], truth: Mapping[str, Sequence[int] | np.ndarray],
                      outputs: Mapping[str, np.ndarray], age_bins: AgeBins,
                      interval: AgeInterval | None = None) -> pd.DataFrame:
    """Build the predictions table from ground truth and a model's per-task probabilities.

    files: one name per face. truth: task -> true values (age in years, class codes), any subset
    of TASKS. outputs: task -> (N, NUM_OUTPUTS[task]) probabilities (softmax), only tasks the model has.
    interval: the model's calibrated age interval (card.interval()): adds age_lo, age_hi (years).
    """
    n = len(files)
    unknown = sorted(set(truth) - set(TASKS)) + sorted(set(outputs) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {list(TASKS)}")
    missing_truth = sorted(set(outputs) - set(truth))
    if missing_truth:
        raise ValueError(f"no ground truth for predicted tasks {missing_truth}")
    columns: dict[str, Any] = {"file": list(files)}
    for task in TASKS:
        if task in truth:
            values = np.asarray(truth[task], dtype=np.int64)
            if values.shape != (n,):
                raise ValueError(f"truth for {task} has shape {values.shape}, expected ({n},)")
            columns[task] = values
    if "age" in outputs:
        age_probs = _check_probabilities("age", outputs["age"], n)
        pred_age = age_probs @ np.arange(AGE_MIN, AGE_MAX + 1, dtype=np.float64)  # expected age, years
        bin_probs = age_bins.bin_probabilities(age_probs)
        columns["pred_age"] = pred_age
        columns["age_abs_error"] = np.abs(pred_age - columns["age"])
        columns["pred_age_bin"] = bin_probs.argmax(axis=1)
        columns["true_age_bin"] = np.asarray(age_bins.bin_of(columns["age"]), dtype=np.int64).reshape(n)
        for i in range(len(age_bins)):
            columns[f"age_bin_p{i}"] = bin_probs[:, i].astype(np.float64)
        if interval is not None:
            columns["age_lo"], columns["age_hi"] = interval.bounds(age_probs)
    for task in ("gender", "ethnicity"):
        if task in outputs:
            probs = _check_probabilities(task, outputs[task], n)
            columns[f"pred_{task}"] = probs.argmax(axis=1)
            for i in range(NUM_OUTPUTS[task]):
                columns[f"{task}_p{i}"] = probs[:, i]
    return pd.DataFrame(columns)


def probability_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Probability columns f"{prefix}0", f"{prefix}1", ... present in the table, in class order."""
    columns, i = [], 0
    while f"{prefix}{i}" in frame.columns:
        columns.append(f"{prefix}{i}")
        i += 1
    return columns


def _number(value: float) -> float | None:
    """A JSON-safe float: NaN (e.g. MAE of an empty group) becomes None."""
    value = float(value)
    return None if math.isnan(value) else value


def cumulative_score(abs_error: np.ndarray, years: float = CS_YEARS) -> float:
    """Share of faces (0..1) whose absolute age error is at most `years`."""
    return float(np.mean(np.asarray(abs_error) <= years))


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error and reliability-diagram data for top-1 predictions.

    confidence: (N,) probability of the predicted class; correct: (N,) bool. Bins are equal-width
    on [0, 1], right-inclusive ((0, 1/15], ..., (14/15, 1]). ECE = sum over bins of
    count/N * |accuracy - mean confidence|. Empty bins report None for confidence and accuracy.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        mean_conf = float(confidence[members].mean()) if count else None
        accuracy = float(correct[members].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(accuracy - mean_conf)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
                     "confidence": mean_conf, "accuracy": accuracy})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def labelled_accuracy(probs: np.ndarray, truth: np.ndarray) -> float | None:
    """Share of labelled faces (truth >= 0; -1 is "no label", e.g. AAF's ethnicity) whose most probable class is
    the true one; None when no face is labelled."""
    known = np.asarray(truth) >= 0
    if not known.any():
        return None
    return float(np.mean(np.asarray(probs)[known].argmax(axis=1) == np.asarray(truth)[known]))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                           class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix, per-class table and calibration for one task.

    Confusion rows are true classes, columns predicted, over all classes (absent ones give zero
    rows/columns). Per-class precision/recall/F1 use zero_division=0: a class never predicted has
    precision 0; a class absent from the truth has recall 0 and support 0. Macro-F1 averages over the
    classes that occur in the truth or the predictions (scikit-learn's default), so a class absent
    from both does not count, while a wrongly predicted absent class does (its F1 is 0).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    predicted = np.bincount(y_pred, minlength=len(labels))
    per_class = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
                  "support": int(s), "predicted": int(c)}
                 for name, p, r, f, s, c in zip(class_names, precision, recall, f1, support, predicted)]
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    confidence = np.asarray(probs).max(axis=1)
    return {
        "classes": list(class_names),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "confusion": {"labels": list(class_names), "matrix": matrix.astype(int).tolist()},
        "per_class": per_class,
        "calibration": calibration(confidence, y_pred == y_true),
    }


def age_metrics(frame: pd.DataFrame, age_bins: AgeBins) -> dict[str, Any]:
    """MAE, median AE, CS@5 (years / share), MAE per true age bin and per true age."""
    true_age, pred_age = frame["age"].to_numpy(), frame["pred_age"].to_numpy()
    errors = frame["age_abs_error"]
    by_bin = errors.groupby(frame["true_age_bin"]).agg(["mean", "count"])
    mae_by_bin = [{"bin": name, "count": int(by_bin["count"].get(i, 0)),
                   "mae": _number(by_bin["mean"].get(i, float("nan")))}
                  for i, name in enumerate(age_bins.names)]
    by_age = errors.groupby(frame["age"]).agg(["mean", "count"]).sort_index()
    mae_by_age = [{"age": int(age), "count": int(row["count"]), "mae": float(row["mean"])}
                  for age, row in by_age.iterrows()]
    return {
        "mae": float(mean_absolute_error(true_age, pred_age)),
        "median_ae": float(median_absolute_error(true_age, pred_age)),
        f"cs{CS_YEARS}": cumulative_score(errors.to_numpy()),
        "mae_by_bin": mae_by_bin,
        "mae_by_age": mae_by_age,
    }


def headline_metrics(frame: pd.DataFrame) -> dict[str, float | None]:
    """The few numbers the app shows for a model (or a group of faces), for the tasks present."""
    headline: dict[str, float | None] = {}
    if "pred_age" in frame.columns:
        headline["age_mae"] = float(frame["age_abs_error"].mean())
        headline["age_median_ae"] = float(frame["age_abs_error"].median())
        headline[f"age_cs{CS_YEARS}"] = cumulative_score(frame["age_abs_error"].to_numpy())
    for columns in CLASSIFICATION_TASKS:
        if columns.pred in frame.columns:
            y_true, y_pred = frame[columns.truth], frame[columns.pred]
            headline[f"{columns.task}_accuracy"] = float(accuracy_score(y_true, y_pred))
            headline[f"{columns.task}_macro_f1"] = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    return headline


def fairness_slices(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline metrics per true gender and per true ethnicity group, plus the largest gap per metric.

    Returns {attribute: {"groups": [{"group", "count", <headline metrics or None>}], "gaps": {metric: max-min}}}.
    Groups with no faces are listed with count 0 and None metrics.
    """
    slices: dict[str, Any] = {}
    keys = list(headline_metrics(frame))
    for attribute in FAIRNESS_ATTRIBUTES:
        if attribute not in frame.columns:
            continue
        groups = []
        for code, name in enumerate(CLASS_NAMES[attribute]):
            members = frame[frame[attribute] == code]
            values = headline_metrics(members) if len(members) else dict.fromkeys(keys)
            groups.append({"group": name, "count": len(members), **values})
        gaps = {}
        for key in keys:
            present = [g[key] for g in groups if g[key] is not None]
            gaps[key] = float(max(present) - min(present)) if present else None
        slices[attribute] = {"groups": groups, "gaps": gaps}
    return slices


def compute_metrics(frame: pd.DataFrame, age_bins: AgeBins) -> dict[str, Any]:
    """Every metric for one model's predictions table, as a JSON-serialisable dict.

    Keys: "n" (faces), "tasks" (tasks with predictions), "headline" (flat summary), "age" (see
    `age_metrics`), one `classification_metrics` block per classification task present
    ("age_bin", "gender", "ethnicity"), "fairness" (see `fairness_slices`), and "interval" (coverage and mean
    width of age_lo..age_hi, see `agekit.intervals.interval_metrics`) when the table has an age interval.
    """
    if len(frame) == 0:
        raise ValueError("the predictions table is empty: no test faces were evaluated")
    if "age_bin_p0" in frame.columns and len(probability_columns(frame, "age_bin_p")) != len(age_bins):
        raise ValueError(f"predictions have {len(probability_columns(frame, 'age_bin_p'))} age-bin columns but "
                         f"age bins {age_bins.spec!r} have {len(age_bins)}: evaluate with the model's own age bins")
    tasks = [t for t in TASKS if (f"pred_{t}" in frame.columns)]
    result: dict[str, Any] = {"n": len(frame), "tasks": tasks, "age_bins": age_bins.spec,
                              "headline": headline_metrics(frame)}
    if "age" in tasks:
        result["age"] = age_metrics(frame, age_bins)
    for columns in CLASSIFICATION_TASKS:
        if columns.pred not in frame.columns:
            continue
        names = age_bins.names if columns.task == "age_bin" else CLASS_NAMES[columns.task]
        probs = frame[probability_columns(frame, columns.prob_prefix)].to_numpy()
        result[columns.task] = classification_metrics(
            frame[columns.truth].to_numpy(), frame[columns.pred].to_numpy(), probs, names)
    result["fairness"] = fairness_slices(frame)
    if "age_lo" in frame.columns:
        result["interval"] = interval_metrics(frame, age_bins)
    return result


__all__ = [
    "CLASSIFICATION_TASKS", "CS_YEARS", "ECE_BINS", "age_metrics", "calibration",
    "classification_metrics", "compute_metrics", "cumulative_score", "fairness_slices",
    "headline_metrics", "labelled_accuracy", "predictions_frame", "probability_columns",
]
